/**
 * npm run demo [-- --patients 3] [--bundle <file name prefix> ...] [--dir <dir>] [--keep] [--admitted]
 *
 * Four institutions on loopback, each one process running the whole sidecar (src/main.ts with
 * --node-config: node, sidecar store, embedded queue, FHIR API) on one generated network
 * (src/node/localnet.ts: genesis, keys, peers; keyblocks mined and pinned by the four):
 *
 *   1. a Synthea patient (../shared/data/synthea) registers at hospital-0 (A) from their own key
 *      file (the CLI's library: src/cli/patient.ts), and allows hospital-1 (B) to upload for them
 *      (src/cli/share.ts allowUpload: A adds B's leaf);
 *   2. the patient's bundle is split between A and B: groups of resources that reference each
 *      other (an encounter with its observations, claims, ...) go whole to one of them, earlier
 *      encounters to A, later ones to B; the Patient and context (Organization, ...) go to both.
 *      Each half is posted as a FHIR transaction to its hospital, and the demo waits until every
 *      record is pinned as A, B and C see it (a holder serves what its node has pinned, and C
 *      verifies against its own);
 *   3. the patient grants hospital-2 (C): the Consent and kfrag go to A and B (grantAccess);
 *   4. C finds the patient by identifier and birth date (`Patient?identifier=...&birthdate=...`)
 *      and reads `Patient/{id}/$everything` page by page: every record of A and B, verified
 *      against C's own pinned chain and decrypted, with a Provenance each;
 *   5. hospital-3 (D), which has no grant, asks too and gets nothing but the holders' refusals.
 * It prints what was verified (records per holder, warnings) and the timings, and exits 0 only if
 * C served exactly the records A and B took, each with its Provenance, and no warning.
 *
 * With --admitted, C is no genesis member: the genesis has A, B and D, and C joins the running
 * network first (spchain init --index, spchain member approve by the three, member submit at A),
 * then starts its sidecar from its admission and takes part as above.
 *
 * `runDemo` is the same as a function (the test suite runs it with the smallest bundle).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Bundle, BundleEntry, OperationOutcome, Provenance } from '@medplum/fhirtypes';
import { initInstitution } from '../src/cli/init.ts';
import { approveAdmissionFile, submitAdmissionFile } from '../src/cli/member.ts';
import { describe, fetchJson, registerPatient } from '../src/cli/patient.ts';
import { allowUpload, grantAccess, openPatientKeys, readGenesis } from '../src/cli/share.ts';
import { loadMappingFile } from '../src/fhir/mapping-file.ts';
import { INSTITUTION_SYSTEM } from '../src/fhir/provenance.ts';
import type { Genesis, Member } from '../src/ledger/types.ts';
import type { FhirMapping } from '../src/mapping/mapping.ts';
import { allReferences } from '../src/mapping/stored.ts';
import { createLocalnet, findFreePorts, type Localnet } from '../src/node/localnet.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const MAIN = join(ROOT, 'src/main.ts');
const SYNTHEA = new URL('../../shared/data/synthea/', import.meta.url).pathname;
const SSN = 'http://hl7.org/fhir/sid/us-ssn';
/** Which member index plays which part: A and B hold, C is granted, D is not. */
interface Roles {
  readonly A: number;
  readonly B: number;
  readonly C: number;
  readonly D: number;
}
const GENESIS_ROLES: Roles = { A: 0, B: 1, C: 2, D: 3 };
/** With --admitted, C joins the running network as member 3 (the genesis has 0, 1 and 2). */
const ADMITTED_ROLES: Roles = { A: 0, B: 1, C: 3, D: 2 };
const INSTITUTIONS = 4;
const START_TIMEOUT_MS = 120_000;
const PIN_TIMEOUT_MS = 120_000;

export interface DemoOpts {
  /** Patients (Synthea bundles, from the smallest up); default 1. */
  readonly patients?: number;
  /** Bundle file names to use instead (in the Synthea folder). */
  readonly bundles?: readonly string[];
  /** Where the network lives; default a temporary directory, removed afterwards. */
  readonly dir?: string;
  readonly keep?: boolean;
  /**
   * C is not in the genesis: it is admitted to the running network first (spchain init --index,
   * member approve by A, B and D, member submit at A), then granted like any member.
   */
  readonly admitted?: boolean;
  readonly log?: (line: string) => void;
}

export interface DemoPatientResult {
  readonly name: string;
  readonly entries: number;
  /** Records each holder took (by institution name). */
  readonly posted: Record<string, number>;
  /** Records C served, by the institution its Provenance names. */
  readonly served: Record<string, number>;
  readonly provenance: number;
  readonly warnings: number;
  /** The warnings' texts (each names the record and the holder). */
  readonly warningTexts: readonly string[];
  readonly pages: number;
  /** How long C took to read every page (the first fetches, verifies and decrypts). */
  readonly readMs: number;
  /** D's answer: the holders' refusal reasons. */
  readonly refusedToD: readonly string[];
  readonly sharedToD: number;
  readonly ok: boolean;
}

export interface DemoResult {
  readonly ok: boolean;
  readonly patients: readonly DemoPatientResult[];
  /** Milliseconds per step. */
  readonly timings: Record<string, number>;
}

interface Sidecar {
  readonly index: number;
  readonly name: string;
  readonly url: string;
  readonly token: string;
  readonly child: ChildProcess;
  readonly output: string[];
}

interface DemoPatient {
  readonly file: string;
  readonly bundle: Bundle;
  readonly identifier: string;
  readonly birthDate: string;
  readonly halves: readonly [Bundle, Bundle];
}

// ---------------------------------------------------------------------------------------------
// Splitting a patient's bundle between two hospitals

/**
 * Splits a transaction Bundle between two institutions: the Patient and the context resources
 * (the mapping's context types) go to both; every other resource goes with the resources it
 * references or is referenced by (connected groups by urn:uuid reference: an encounter, its
 * observations, its claim and the claim's explanation of benefit), the groups in the order of
 * their first entry, the first ones to the first half until it holds half of them.
 */
export function splitBundle(
  bundle: Bundle,
  mapping: Pick<FhirMapping, 'contextTypes'>,
): [Bundle, Bundle] {
  const entries = bundle.entry ?? [];
  const both = (e: BundleEntry) =>
    e.resource?.resourceType === 'Patient' ||
    mapping.contextTypes.has(e.resource?.resourceType ?? '');
  const at = new Map(entries.map((e, i) => [e.fullUrl, i]));
  const parent = entries.map((_, i) => i);
  const find = (i: number): number => {
    while (parent[i] !== i) {
      parent[i] = parent[parent[i]!]!;
      i = parent[i]!;
    }
    return i;
  };
  entries.forEach((e, i) => {
    if (both(e)) return;
    for (const ref of allReferences(e.resource)) {
      const j = at.get(ref);
      if (j === undefined || both(entries[j]!)) continue;
      parent[find(i)] = find(j);
    }
  });
  const groups = new Map<number, number[]>();
  entries.forEach((e, i) => {
    if (both(e)) return;
    const root = find(i);
    groups.set(root, [...(groups.get(root) ?? []), i]);
  });
  const total = [...groups.values()].reduce((n, g) => n + g.length, 0);
  const first = new Set<number>();
  for (const g of [...groups.values()].sort((x, y) => x[0]! - y[0]!)) {
    if (first.size >= total / 2) break;
    for (const i of g) first.add(i);
  }
  const half = (inFirst: boolean): Bundle => ({
    resourceType: 'Bundle',
    type: 'transaction',
    entry: entries.filter((e, i) => both(e) || first.has(i) === inFirst),
  });
  return [half(true), half(false)];
}

function loadPatients(mapping: FhirMapping, o: DemoOpts): DemoPatient[] {
  let files: string[];
  try {
    files = readdirSync(SYNTHEA).filter((f) => f.endsWith('.json'));
  } catch {
    throw new Error(`the Synthea bundles are missing: expected them in ${SYNTHEA}`);
  }
  const sized = files
    .map((f) => ({ f, text: readFileSync(join(SYNTHEA, f), 'utf8') }))
    .sort((x, y) => x.text.length - y.text.length);
  const chosen =
    o.bundles !== undefined
      ? o.bundles.map((name) => {
          const hit = sized.find((s) => s.f === name || s.f.startsWith(name));
          if (hit === undefined) throw new Error(`no Synthea bundle ${name} in ${SYNTHEA}`);
          return hit;
        })
      : sized.slice(0, o.patients ?? 1);
  return chosen.map(({ f, text }) => {
    const bundle = JSON.parse(text) as Bundle;
    const patient = bundle.entry?.find((e) => e.resource?.resourceType === 'Patient')?.resource as
      | { identifier?: { system?: string; value?: string }[]; birthDate?: string }
      | undefined;
    const ssn = patient?.identifier?.find((i) => i.system === SSN)?.value;
    if (!ssn || !patient?.birthDate) throw new Error(`${f}: the Patient has no SSN or birth date`);
    return {
      file: f,
      bundle,
      identifier: `${SSN}|${ssn}`,
      birthDate: patient.birthDate,
      halves: splitBundle(bundle, mapping),
    };
  });
}

// ---------------------------------------------------------------------------------------------
// Processes and HTTP

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A FHIR JSON request to a sidecar (with its EHR token when given). */
function http(
  url: string,
  init: RequestInit & { token?: string } = {},
): Promise<{ status: number; body: unknown }> {
  const { token, ...rest } = init;
  return fetchJson(url, {
    ...rest,
    headers: {
      accept: 'application/fhir+json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(init.body ? { 'content-type': 'application/fhir+json' } : {}),
    },
  });
}

async function startSidecar(
  dir: string,
  index: number,
  port: number,
  log: (line: string) => void,
): Promise<Sidecar> {
  const token = randomBytes(24).toString('hex');
  const instDir = join(dir, `inst-${index}`);
  const child = spawn(
    process.execPath,
    [
      MAIN,
      '--data-dir',
      instDir,
      '--node-config',
      join(instDir, 'config.json'),
      '--port',
      String(port),
    ],
    {
      cwd: ROOT,
      env: { ...process.env, SPCHAIN_EHR_TOKEN: token, SPCHAIN_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const output: string[] = [];
  const keep = (line: string) => {
    output.push(line);
    if (output.length > 200) output.shift();
  };
  let buffered = '';
  child.stdout!.on('data', (d: Buffer) => {
    buffered += d.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) {
      keep(line);
      if (/"event":"(fatal|misbehaviour)"/.test(line)) log(`  [hospital-${index}] ${line}`);
    }
  });
  child.stderr!.on('data', (d: Buffer) => {
    for (const line of d.toString().split('\n')) if (line) keep(line);
  });
  const url = `http://127.0.0.1:${port}`;
  const sidecar: Sidecar = { index, name: `hospital-${index}`, url, token, child, output };
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null) {
      throw new Error(
        `hospital-${index} exited (${child.exitCode}):\n${output.slice(-20).join('\n')}`,
      );
    }
    const up = await http(`${url}/fhir/metadata`).catch(() => undefined);
    if (up?.status === 200) return sidecar;
    if (Date.now() > deadline) throw new Error(`hospital-${index} did not start in time`);
    await sleep(250);
  }
}

async function stopSidecar(s: Sidecar): Promise<void> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return;
  const exited = new Promise((r) => s.child.once('exit', r));
  s.child.kill('SIGTERM');
  const timer = setTimeout(() => s.child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

/**
 * Admits institution `index` to the running network as its operators would: its keys and
 * admission request (spchain init, then init --index), the approval of every member (member
 * approve), submitted at `home`'s node (member submit); resolves once `home` lists it.
 */
async function admit(
  dir: string,
  net: Localnet,
  index: number,
  port: number,
  home: Sidecar,
): Promise<Member> {
  const at = join(dir, `inst-${index}`);
  const quiet = { env: {}, print: () => {} };
  await initInstitution({ dir: at, name: `hospital-${index}`, ...quiet });
  await initInstitution({
    dir: at,
    genesis: net.genesisPath,
    peers: net.peersPath,
    index,
    listen: `/ip4/127.0.0.1/tcp/${port}`,
    ...quiet,
  });
  const admission = join(at, 'admission.json');
  for (const config of net.configPaths) {
    await approveAdmissionFile({ admission, nodeConfig: config, ...quiet });
  }
  await submitAdmissionFile({ admission, nodeConfig: net.configPaths[home.index]!, ...quiet });
  const deadline = Date.now() + PIN_TIMEOUT_MS;
  for (;;) {
    const r = await http(`${home.url}/spchain/institutions`);
    const listed = (r.body as { institutions?: { index: number }[] }).institutions ?? [];
    if (listed.some((m) => m.index === index)) break;
    if (Date.now() > deadline) throw new Error(`hospital-${index} was not admitted in time`);
    await sleep(250);
  }
  const request = JSON.parse(readFileSync(admission, 'utf8')) as {
    member: { name: string; signingKey: string; chameleonKey: string; preKey: string };
  };
  const hex = (h: string) => Uint8Array.from(Buffer.from(h, 'hex'));
  return {
    index,
    name: request.member.name,
    signingKey: hex(request.member.signingKey),
    chameleonKey: hex(request.member.chameleonKey),
    preKey: hex(request.member.preKey),
  };
}

/** The pinned record count of each leaf of the patient's block, as `s` sees it. */
async function leafSeqs(s: Sidecar, idHash: string): Promise<Record<string, number>> {
  const r = await http(`${s.url}/spchain/patients/${idHash}`, { token: s.token });
  return ((r.body as { leafSeqs?: Record<string, number> }).leafSeqs ?? {}) as Record<
    string,
    number
  >;
}

/** Every page of a searchset, following next links. */
async function allPages(s: Sidecar, first: string): Promise<Bundle[]> {
  const pages: Bundle[] = [];
  let url: string | undefined = first;
  while (url !== undefined) {
    const r = await http(url, { token: s.token });
    if (r.status !== 200)
      throw new Error(`${s.name}: GET ${url.replace(s.url, '')}: ${describe(r)}`);
    const page = r.body as Bundle;
    pages.push(page);
    url = page.link?.find((l) => l.relation === 'next')?.url;
    if (pages.length > 10_000) throw new Error('too many pages');
  }
  return pages;
}

// ---------------------------------------------------------------------------------------------
// The demo

export async function runDemo(o: DemoOpts = {}): Promise<DemoResult> {
  const log = o.log ?? ((line: string) => console.log(line));
  const t0 = performance.now();
  const timings: Record<string, number> = {};
  let mark = t0;
  const step = (name: string) => {
    const now = performance.now();
    timings[name] = Math.round(now - mark);
    mark = now;
    return `${((now - t0) / 1000).toFixed(1).padStart(5)} s`;
  };
  const mapping = await loadMappingFile();
  const patients = loadPatients(mapping, o);
  const dir = o.dir ?? (await mkdtemp(join(tmpdir(), 'spchain-demo-')));
  const sidecars: Sidecar[] = [];
  const roles = o.admitted ? ADMITTED_ROLES : GENESIS_ROLES;
  const { A, B, C, D } = roles;
  const founders = o.admitted ? INSTITUTIONS - 1 : INSTITUTIONS;
  try {
    const ports = await findFreePorts(2 * INSTITUTIONS);
    const net = await createLocalnet({
      institutions: founders,
      dir,
      patientsPerInstitution: 0,
      load: null,
      ports: ports.slice(0, founders),
    });
    const genesis: Genesis = await readGenesis(net.genesisPath);
    log(
      `${step('network')}  network ${net.chainId}: ${founders} institutions, genesis and keys in ${dir}`,
    );
    sidecars.push(
      ...(await Promise.all(
        Array.from({ length: founders }, (_, i) =>
          startSidecar(dir, i, ports[INSTITUTIONS + i]!, log),
        ),
      )),
    );
    log(`${step('start')}  sidecars up: ${sidecars.map((s) => `${s.name} ${s.url}`).join(', ')}`);
    const members = [...genesis.members];
    if (o.admitted) {
      members.push(await admit(dir, net, C, ports[C]!, sidecars[A]!));
      log(
        `${step('admit')}  hospital-${C} admitted by ${founders} of ${founders} members (keyblock pinned as ${sidecars[A]!.name} sees it)`,
      );
      sidecars.push(await startSidecar(dir, C, ports[INSTITUTIONS + C]!, log));
      log(`${step('start-admitted')}  ${sidecars[C]!.name} up: ${sidecars[C]!.url}`);
    }
    const [a, b, c, d] = [sidecars[A]!, sidecars[B]!, sidecars[C]!, sidecars[D]!];
    const member = (i: number) => members.find((m) => m.index === i)!;

    // 1. Register at A, allow B.
    const passphrase = randomBytes(12).toString('hex');
    const ids = await Promise.all(
      patients.map(async (p, k) => {
        const keyFile = join(dir, `patient-${k}.key.json`);
        const reg = await registerPatient({
          identifier: p.identifier,
          birthDate: p.birthDate,
          keyFile,
          passphrase,
          sidecar: a.url,
          token: a.token,
          genesisFile: net.genesisPath,
          home: A,
          waitSeconds: PIN_TIMEOUT_MS / 1000,
          kdf: { N: 2 ** 14, r: 8, p: 1 },
          print: () => {},
        });
        if (reg.block === undefined) throw new Error(`${p.file}: registration not pinned in time`);
        return { idHash: reg.idHash, keyFile, block: reg.block };
      }),
    );
    log(
      `${step('register')}  ${patients.length} patient(s) registered at ${a.name}: ${ids.map((x) => `block (${x.block.i}, ${x.block.j})`).join(', ')}`,
    );
    const keys = await Promise.all(ids.map((x) => openPatientKeys(x.keyFile, passphrase)));
    await Promise.all(
      ids.map(async (x, k) => {
        const state = await allowUpload({
          genesis,
          keys: keys[k]!,
          idHash: Uint8Array.from(Buffer.from(x.idHash, 'hex')),
          institution: member(B),
          home: a.url,
          waitSeconds: PIN_TIMEOUT_MS / 1000,
          print: () => {},
        });
        if (state !== 'present') {
          throw new Error(`${patients[k]!.file}: ${b.name}'s leaf not pinned in time`);
        }
      }),
    );
    log(`${step('allow-upload')}  ${b.name} may upload for them (leaf tx by ${a.name}, pinned)`);

    // 2. Post the halves.
    const posted = await Promise.all(
      patients.map(async (p) => {
        const out: string[][] = [];
        for (const [n, s] of [a, b].entries()) {
          const r = await http(`${s.url}/fhir`, {
            method: 'POST',
            token: s.token,
            body: JSON.stringify(p.halves[n]),
          });
          if (r.status !== 200) throw new Error(`${s.name}: POST /fhir: ${describe(r)}`);
          const locations = ((r.body as Bundle).entry ?? []).map((e) => e.response?.location ?? '');
          out.push(
            locations
              .map((l) => l.split('/_history')[0]!)
              .filter((l) => mapping.records.has(l.split('/')[0]!)),
          );
        }
        return out as [string[], string[]];
      }),
    );
    const recordCount = posted.reduce((n, [x, y]) => n + x.length + y.length, 0);
    log(
      `${step('post')}  posted ${patients.map((p, k) => `${p.file.split('_').slice(0, 2).join(' ')} (${p.bundle.entry?.length} entries): ${a.name} ${posted[k]![0].length} records, ${b.name} ${posted[k]![1].length}`).join('; ')}`,
    );
    const deadline = Date.now() + PIN_TIMEOUT_MS;
    for (const [k, x] of ids.entries()) {
      // Each holder serves what its own node has pinned, and C verifies against its own.
      for (const s of [a, b, c]) {
        for (;;) {
          const seqs = await leafSeqs(s, x.idHash);
          if ((seqs[A] ?? 0) >= posted[k]![0].length && (seqs[B] ?? 0) >= posted[k]![1].length)
            break;
          if (Date.now() > deadline)
            throw new Error(`records not pinned in time (${s.name} sees ${JSON.stringify(seqs)})`);
          await sleep(250);
        }
      }
    }
    log(
      `${step('pin')}  all ${recordCount} records pinned (as ${a.name}, ${b.name} and ${c.name} see it)`,
    );

    // 3. The patient grants C.
    for (const [k, x] of ids.entries()) {
      const { deliveries } = await grantAccess({
        genesis,
        keys: keys[k]!,
        idHash: Uint8Array.from(Buffer.from(x.idHash, 'hex')),
        grantee: member(C),
        end: Date.now() + 24 * 3_600_000,
        holders: [a.url, b.url],
        print: () => {},
      });
      const refused = deliveries.filter((dl) => !dl.ok);
      if (refused.length > 0)
        throw new Error(`grant refused: ${refused.map((r) => r.detail).join('; ')}`);
    }
    log(
      `${step('grant')}  grant(s) for ${c.name} (signed Consent + kfrag) kept by ${a.name} and ${b.name}`,
    );

    // 4. C reads everything; 5. D (no grant) tries.
    const results: DemoPatientResult[] = [];
    for (const [k, p] of patients.entries()) {
      const found = await http(
        `${c.url}/fhir/Patient?identifier=${encodeURIComponent(p.identifier)}&birthdate=${p.birthDate}`,
        { token: c.token },
      );
      const hit = ((found.body as Bundle).entry ?? []).find(
        (e) => e.resource?.resourceType === 'Patient',
      );
      if (found.status !== 200 || hit?.resource?.id === undefined) {
        throw new Error(`${c.name} cannot find the patient: ${describe(found)}`);
      }
      const id = hit.resource.id;
      const t = performance.now();
      const pages = await allPages(c, `${c.url}/fhir/Patient/${id}/$everything?_count=100`);
      const readMs = Math.round(performance.now() - t);
      const result = { ...verify(p, pages, posted[k]!, members, roles), readMs };
      const dPages = await allPages(d, `${d.url}/fhir/Patient/${id}/$everything`);
      const dEntries = dPages.flatMap((pg) => pg.entry ?? []);
      const refusedToD = dEntries
        .filter((e) => e.resource?.resourceType === 'OperationOutcome')
        .flatMap((e) => (e.resource as OperationOutcome).issue ?? [])
        .filter((i) => i.details?.coding?.[0]?.code === 'DENIED')
        .map((i) => {
          const text = i.details?.text ?? '';
          return `${text.split(' ')[0]} ${/refused: ([A-Z_]+)/.exec(text)?.[1] ?? 'refused'}`;
        });
      const sharedToD = dEntries.filter(
        (e) => e.search?.mode === 'match' && e.resource?.resourceType !== 'Patient',
      ).length;
      results.push({
        ...result,
        refusedToD,
        sharedToD,
        ok: result.ok && sharedToD === 0 && refusedToD.length === 2,
      });
    }
    log(
      `${step('fetch')}  ${c.name} read $everything (found by identifier and birth date); ${d.name} asked without a grant`,
    );
    for (const r of results) {
      log(`  ${r.name}: ${r.entries} bundle entries`);
      log(
        `    posted   ${Object.entries(r.posted)
          .map(([h, n]) => `${h} ${n}`)
          .join(', ')}`,
      );
      log(
        `    verified ${Object.entries(r.served)
          .map(([h, n]) => `${h} ${n}`)
          .join(
            ', ',
          )} records served by ${c.name} in ${r.pages} page(s) and ${r.readMs} ms, ${r.provenance} Provenance, warnings ${r.warnings}`,
      );
      for (const w of r.warningTexts.slice(0, 10)) log(`    warning: ${w}`);
      log(`    ${d.name}: ${r.sharedToD} records; refused by ${r.refusedToD.join(', ')}`);
    }
    const ok = results.every((r) => r.ok);
    log(
      `timings (ms): ${Object.entries(timings)
        .map(([n, ms]) => `${n} ${ms}`)
        .join(', ')}; total ${Math.round(performance.now() - t0)}`,
    );
    log(ok ? 'demo: OK' : 'demo: FAILED (see above)');
    return { ok, patients: results, timings };
  } catch (err) {
    for (const s of sidecars) {
      log(`--- last output of ${s.name} ---\n${s.output.slice(-15).join('\n')}`);
    }
    throw err;
  } finally {
    await Promise.all(sidecars.map(stopSidecar));
    if (!o.keep && o.dir === undefined) await rm(dir, { recursive: true, force: true });
  }
}

/** What C served for one patient, against what A and B took. */
function verify(
  p: DemoPatient,
  pages: readonly Bundle[],
  posted: readonly [readonly string[], readonly string[]],
  members: readonly Member[],
  { A, B }: Roles,
): Omit<DemoPatientResult, 'refusedToD' | 'sharedToD' | 'readMs'> {
  const entries = pages.flatMap((pg) => pg.entry ?? []);
  const matches = entries.filter(
    (e) => e.search?.mode === 'match' && e.resource?.resourceType !== 'Patient',
  );
  const provenance = new Map<string, Provenance>();
  for (const e of entries) {
    if (e.resource?.resourceType === 'Provenance') provenance.set(e.resource.id!, e.resource);
  }
  const warningTexts = entries
    .filter((e) => e.resource?.resourceType === 'OperationOutcome')
    .flatMap((e) => (e.resource as OperationOutcome).issue ?? [])
    .filter((i) => i.severity !== 'information')
    .map((i) => i.details?.text ?? i.code);
  const warnings = new Set(warningTexts).size;
  const name = (i: number) => members.find((m) => m.index === i)?.name ?? String(i);
  const served: Record<string, number> = {};
  const targets = new Set<string>();
  for (const prov of provenance.values()) {
    const who = prov.agent?.[0]?.who?.identifier;
    const holder = who?.system === INSTITUTION_SYSTEM ? name(Number(who.value)) : 'unknown';
    for (const t of prov.target ?? []) {
      served[holder] = (served[holder] ?? 0) + 1;
      targets.add(t.reference!.split('/_history')[0]!);
    }
  }
  const want = new Set([...posted[0], ...posted[1]]);
  const got = new Set(matches.map((e) => `${e.resource!.resourceType}/${e.resource!.id}`));
  const same = want.size === got.size && [...want].every((x) => got.has(x) && targets.has(x));
  return {
    name: p.file.split('_').slice(0, 2).join(' '),
    entries: p.bundle.entry?.length ?? 0,
    posted: { [name(A)]: posted[0].length, [name(B)]: posted[1].length },
    served,
    provenance: provenance.size,
    warnings,
    warningTexts: [...new Set(warningTexts)],
    pages: pages.length,
    ok: same && warnings === 0 && matches.length === want.size,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      patients: { type: 'string', default: '3' },
      bundle: { type: 'string', multiple: true },
      dir: { type: 'string' },
      keep: { type: 'boolean', default: false },
      admitted: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const n = Number(values.patients);
  if (!Number.isInteger(n) || n < 1 || n > 100) {
    console.error('--patients must be an integer from 1 to 100');
    process.exit(2);
  }
  console.log(
    'SPChain demo: 4 institutions on loopback; patients whose records two of them hold, read by a third',
  );
  const result = await runDemo({
    patients: n,
    ...(values.bundle ? { bundles: values.bundle } : {}),
    ...(values.dir ? { dir: values.dir } : {}),
    keep: values.keep,
    admitted: values.admitted,
  });
  process.exit(result.ok ? 0 : 1);
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    console.error(`demo failed: ${(err as Error).message}`);
    process.exit(1);
  });
}
