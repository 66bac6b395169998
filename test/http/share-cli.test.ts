/**
 * The patient's commands as a process (src/cli/main.ts), against the HTTP APIs of four
 * institutions listening on loopback (share-net.ts; hospital-0, the patient's home, with its SMART
 * authorisation server): `patient allow-upload` gives hospital-1 a leaf through the home
 * institution; `patient grant` signs the Consent and kfrag from the key file and delivers them to
 * the holders, refusing to send anything when a holder is the grantee itself; the grantee then
 * reads the records; `patient revoke` stops it. Then the patient's views: `patient records`
 * decrypts the records held at both holders (or writes them to files), `patient audit` and
 * `patient institutions`; `patient grant --link` and `patient link` make share links that verify
 * and open once at the grantee; `patient approve` signs a SMART app's pending request, whose code
 * then buys a token, and `--decline` refuses one.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Bundle, OperationOutcome } from '@medplum/fhirtypes';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parseShareLink, verifyShareLink } from '../../src/authz/share-link.ts';
import { toHex } from '../../src/crypto/bytes.ts';
import { sealKeyFileAsync } from '../../src/crypto/keyfile.ts';
import { signingPublicKey } from '../../src/crypto/sign.ts';
import { generateSecretKey, publicKeyOf } from '../../src/crypto/umbral/index.ts';
import { formatGenesisFile } from '../../src/node/genesis-file.ts';
import { ClientRegistry, parseClients } from '../../src/smart/clients.ts';
import { newSigningKey, TokenService } from '../../src/smart/tokens.ts';
import type { TestPatient } from '../sidecar/ledger.ts';
import { AUTH, closeSharedParts, SSN, sharedParts, smallTransaction } from './harness.ts';
import { call, getBundle, openShareApiNet, type ShareApiNet } from './share-net.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const PASSPHRASE = 'a test passphrase';
// A synthetic test identity (not a real person).
const IDENTITY = { system: SSN, value: '999-77-0001', birthDate: '1985-06-15' };

let s: ShareApiNet;
let P: TestPatient;
let dir: string;
let urls: string[];
let common: string[];
/** The FHIR base of hospital-0 (its SMART server's audience), once it listens. */
let fhirBase0 = 'http://127.0.0.1:9/fhir';
/** The records each holder took (`Type/id`), from the EHR's transaction answers. */
const posted: Record<number, string[]> = { 0: [], 1: [] };
const APP = { id: 'cli-app', name: 'CLI test app', redirect: 'http://127.0.0.1:7777/callback' };

/** A `patient` command of the CLI as a process. */
function cli(args: string[]): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, [join(ROOT, 'src/cli/main.ts'), 'patient', ...args], {
    cwd: dir,
    env: { ...process.env, SPCHAIN_PATIENT_PASSPHRASE: PASSPHRASE },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    out += d.toString();
  });
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, out })));
}

beforeAll(async () => {
  const smart = {
    clients: new ClientRegistry(
      parseClients(
        {
          clients: [
            {
              clientId: APP.id,
              name: APP.name,
              kind: 'public',
              redirectUris: [APP.redirect],
              scope: 'launch/patient patient/*.rs',
            },
          ],
        },
        'test clients',
      ),
    ),
    key: await newSigningKey(),
  };
  s = await openShareApiNet('share-cli', [IDENTITY], 4, (inst) =>
    inst.index === 0
      ? {
          smart: {
            clients: smart.clients,
            tokens: new TokenService({
              fhirBase: () => fhirBase0,
              key: smart.key,
              db: inst.core.store.db,
            }),
          },
        }
      : {},
  );
  P = s.patients[0]!;
  urls = [];
  for (const api of s.apis) {
    await api.app.listen({ host: '127.0.0.1', port: 0 });
    const a = api.app.server.address();
    urls.push(`http://127.0.0.1:${typeof a === 'object' && a !== null ? a.port : 0}`);
  }
  fhirBase0 = `${urls[0]}/fhir`;
  dir = await mkdtemp(join(tmpdir(), 'spchain-share-cli-'));
  const f = s.net.fixture;
  const credits = new Map(f.genesis.members.map((m) => [m.index, 1_000_000_000]));
  await writeFile(
    join(dir, 'genesis.json'),
    formatGenesisFile({
      genesis: f.genesis,
      credits,
      keyblock: f.keyblock,
      certificate: f.keyblockCertificate,
    }),
  );
  await writeFile(
    join(dir, 'patient.key.json'),
    await sealKeyFileAsync({
      kind: 'patient',
      publicKeys: { pre: P.preKey, signing: signingPublicKey(P.signingSecret) },
      secretKeys: { pre: P.preSecret, signing: P.signingSecret },
      passphrase: PASSPHRASE,
      kdf: { N: 2 ** 10, r: 8, p: 1 },
    }),
  );
  common = [
    '--key-file',
    'patient.key.json',
    '--genesis',
    'genesis.json',
    '--id-hash',
    toHex(P.idHash),
  ];
}, 120_000);

afterAll(async () => {
  await s?.close();
  await closeSharedParts();
  if (dir) await rm(dir, { recursive: true, force: true });
});

it('allow-upload, grant, read, revoke: from the key file, through the holders', async () => {
  // hospital-1 may upload once its leaf is pinned.
  const asked = await cli([
    'allow-upload',
    ...common,
    '--institution',
    'hospital-1',
    '--home',
    urls[0]!,
    '--wait',
    '0',
  ]);
  expect(asked.out).toContain('submitted');
  expect(asked.code).toBe(0);
  await s.net.anchorAll();
  const done = await cli([
    'allow-upload',
    ...common,
    '--institution',
    '1',
    '--home',
    urls[0]!,
    '--wait',
    '5',
  ]);
  expect(done.out).toContain('hospital-1 may now upload');
  expect(done.code).toBe(0);

  // Records at both holders.
  for (const [at, tag] of [
    [0, 'a'],
    [1, 'b'],
  ] as const) {
    const r = await call(s, at, 'POST', '/fhir', smallTransaction(IDENTITY, 2, tag));
    expect(r.status).toBe(200);
    const { mapping } = await sharedParts();
    for (const e of (r.json as unknown as Bundle).entry ?? []) {
      const ref = e.response!.location!.split('/_history')[0]!;
      if (mapping.records.has(ref.split('/')[0]!)) posted[at]!.push(ref);
    }
  }
  expect(posted[0]!.length).toBeGreaterThanOrEqual(2);
  expect(posted[1]!.length).toBeGreaterThanOrEqual(2);
  expect(await s.net.anchorAll()).toBe(4);

  // A grant that would reach the grantee is not sent anywhere.
  const until = new Date(s.net.now + 2 * 86_400_000).toISOString().slice(0, 10);
  const toGrantee = await cli([
    'grant',
    ...common,
    '--institution',
    'hospital-3',
    '--until',
    until,
    '--holder',
    urls[0]!,
    '--holder',
    urls[3]!,
  ]);
  expect(toGrantee.code).toBe(1);
  expect(toGrantee.out).toContain('the grantee itself');
  const pid = toHex(P.idHash);
  const none = await getBundle(s, 3, `/fhir/Patient/${pid}/$everything`);
  expect(none.entry!.filter((e) => e.search?.mode === 'match')).toHaveLength(1);

  const granted = await cli([
    'grant',
    ...common,
    '--institution',
    'hospital-3',
    '--until',
    until,
    '--from',
    new Date(s.net.now - 3_600_000).toISOString(),
    '--holder',
    urls[0]!,
    '--holder',
    urls[1]!,
  ]);
  expect(granted.code, granted.out).toBe(0);
  const consentId = /consent id: (\S+)/.exec(granted.out)?.[1];
  expect(consentId).toBeDefined();
  expect(granted.out).toContain('kept by hospital-0');
  expect(granted.out).toContain('kept by hospital-1');

  const read = await getBundle(s, 3, `/fhir/Patient/${pid}/$everything`);
  const obs = read.entry!.filter((e) => e.resource?.resourceType === 'Observation');
  expect(obs).toHaveLength(4);
  expect(read.entry!.filter((e) => e.resource?.resourceType === 'Provenance')).toHaveLength(4);

  // The patient sees the grant each holder keeps: the Consent, its grantee and its state.
  const consents = await cli(['consents', ...common, '--sidecar', urls[0]!, '--sidecar', urls[1]!]);
  expect(consents.code, consents.out).toBe(0);
  expect(consents.out).toMatch(new RegExp(`  ${consentId}  active  institution 3  `));
  expect(consents.out.match(/1 consent\(s\)/g)).toHaveLength(2);

  const revoked = await cli([
    'revoke',
    ...common,
    '--consent-id',
    consentId!,
    '--holder',
    urls[0]!,
    '--holder',
    urls[1]!,
  ]);
  expect(revoked.code, revoked.out).toBe(0);
  expect(revoked.out).toContain(`consent ${consentId} revoked at hospital-1`);
  const after: Bundle = await getBundle(s, 3, `/fhir/Patient/${pid}/$everything`);
  expect(after.entry!.filter((e) => e.resource?.resourceType === 'Observation')).toEqual([]);
  const texts = after
    .entry!.filter((e) => e.resource?.resourceType === 'OperationOutcome')
    .flatMap((e) => (e.resource as OperationOutcome).issue ?? [])
    .map((i) => i.details?.text ?? '');
  expect(texts.filter((t) => t.includes('REVOKED'))).toHaveLength(2);
}, 120_000);

it('grants an institution its genesis file does not name, with the keys a holder lists', async () => {
  // The patient's genesis file predates hospital-3 (as for an institution admitted later): the
  // CLI takes hospital-3's keys from the holder's /spchain/institutions, which its node keeps.
  const f = s.net.fixture;
  const older = {
    genesis: { ...f.genesis, members: f.genesis.members.slice(0, 3) },
    credits: new Map([0, 1, 2].map((i) => [i, 1_000_000_000])),
    keyblock: f.keyblock,
    certificate: {
      ...f.keyblockCertificate,
      signatures: f.keyblockCertificate.signatures.slice(0, 3),
    },
  };
  await writeFile(join(dir, 'genesis-older.json'), formatGenesisFile(older));
  const withOlder = common.map((a) => (a === 'genesis.json' ? 'genesis-older.json' : a));
  const until = new Date(s.net.now + 2 * 86_400_000).toISOString().slice(0, 10);
  const args = (holders: string[]) => [
    'grant',
    ...withOlder,
    '--institution',
    '3',
    '--until',
    until,
    '--from',
    new Date(s.net.now - 3_600_000).toISOString(),
    ...holders.flatMap((h) => ['--holder', h]),
  ];
  // Without a holder to ask, hospital-3 is unknown.
  const unknown = await cli(args([]));
  expect(unknown.code).not.toBe(0);
  const granted = await cli(args([urls[0]!, urls[1]!]));
  expect(granted.code, granted.out).toBe(0);
  expect(granted.out).toContain(`hospital-3 (member 3) joined after the genesis file`);
  expect(granted.out).toContain('kept by hospital-0');
  expect(granted.out).toContain('kept by hospital-1');
  const read = await getBundle(s, 3, `/fhir/Patient/${toHex(P.idHash)}/$everything`);
  expect(read.entry!.filter((e) => e.resource?.resourceType === 'Observation')).toHaveLength(4);
}, 120_000);

it('says what is wrong with its arguments (exit 2) and with the key file (exit 1)', async () => {
  const noUntil = await cli(['grant', ...common, '--institution', '3', '--holder', urls[0]!]);
  expect(noUntil.code).toBe(2);
  expect(noUntil.out).toContain('--until is required');
  const wrongOption = await cli(['revoke', ...common, '--until', '2030-01-01']);
  expect(wrongOption.code).toBe(2);
  const badKey = await cli([
    'revoke',
    ...common.map((a) => (a === 'patient.key.json' ? 'none.json' : a)),
    '--consent-id',
    'x',
    '--holder',
    urls[0]!,
  ]);
  expect(badKey.code).toBe(1);
  expect(badKey.out).toContain('no key file');
});

/** Output must never carry the patient's identifier or birth date. */
function expectNoIdentity(out: string): void {
  expect(out).not.toContain(IDENTITY.value);
  expect(out).not.toContain(IDENTITY.birthDate);
}

it('records: decrypts what each holder keeps, prints summaries or writes files (0600)', async () => {
  expect(posted[0]!.length + posted[1]!.length).toBeGreaterThan(0);
  const both = ['--sidecar', urls[0]!, '--sidecar', urls[1]!];
  const listed = await cli(['records', ...common, ...both]);
  expect(listed.code, listed.out).toBe(0);
  expectNoIdentity(listed.out);
  expect(listed.out).toContain(`hospital-0 (${urls[0]}): ${posted[0]!.length} record(s)`);
  expect(listed.out).toContain(`hospital-1 (${urls[1]}): ${posted[1]!.length} record(s)`);
  const lines = listed.out.split('\n').filter((l) => l.startsWith('  '));
  const refs = lines.map((l) => l.trim().split(' ')[0]!);
  expect(refs.sort()).toEqual([...posted[0]!, ...posted[1]!].sort());
  for (const line of lines.filter((l) => l.includes('Observation/'))) {
    expect(line).toMatch(/^ {2}Observation\/\S+ v\S+ medical pinned@\d+ \S/);
  }

  const out = join(dir, 'records');
  const written = await cli(['records', ...common, ...both, '--out', out]);
  expect(written.code, written.out).toBe(0);
  const files = (await readdir(out)).sort();
  expect(files).toHaveLength(posted[0]!.length + posted[1]!.length);
  const found: string[] = [];
  for (const f of files) {
    expect((await stat(join(out, f))).mode & 0o777).toBe(0o600);
    const r = JSON.parse(await readFile(join(out, f), 'utf8')) as {
      resourceType: string;
      id: string;
    };
    expect(f).toBe(`${f.split('-')[0]}-${r.resourceType}-${r.id}-v1.json`);
    found.push(`${r.resourceType}/${r.id}`);
  }
  expect(found.sort()).toEqual([...posted[0]!, ...posted[1]!].sort());

  // Another patient's key signs nothing that the sidecar takes for this patient.
  const other = await cli(['records', ...common.slice(0, -1), 'ab'.repeat(32), ...both]);
  expect(other.code).toBe(1);
  expect(other.out).toContain('refused: HTTP 404');
  // The right signing key but another PRE secret: the records come, and do not open.
  await writeFile(
    join(dir, 'wrong-pre.key.json'),
    await sealKeyFileAsync({
      kind: 'patient',
      publicKeys: {
        pre: publicKeyOf(generateSecretKey()),
        signing: signingPublicKey(P.signingSecret),
      },
      secretKeys: { pre: generateSecretKey(), signing: P.signingSecret },
      passphrase: PASSPHRASE,
      kdf: { N: 2 ** 10, r: 8, p: 1 },
    }),
  );
  const wrongPre = await cli([
    'records',
    ...common.map((a) => (a === 'patient.key.json' ? 'wrong-pre.key.json' : a)),
    '--sidecar',
    urls[0]!,
  ]);
  expect(wrongPre.code).toBe(1);
  expect(wrongPre.out.match(/does not decrypt with your key/g)).toHaveLength(posted[0]!.length);
});

it('audit and institutions: who read or wrote what, and the network', async () => {
  const audit = await cli(['audit', ...common, '--sidecar', urls[0]!]);
  expect(audit.code, audit.out).toBe(0);
  expectNoIdentity(audit.out);
  expect(audit.out).toMatch(/hospital-0 \(.*\): \d+ event\(s\), newest first/);
  // The EHR's write, and the patient's own reads of the records above.
  expect(audit.out).toMatch(/ {2}\S+Z {2}ehr \(static-bearer\) {2}transaction {2}.*Observation\//);
  expect(audit.out).toMatch(/patient \(patient-request-signature\) {2}read {2}you/);

  const inst = await cli(['institutions', '--sidecar', urls[1]!]);
  expect(inst.code, inst.out).toBe(0);
  for (const k of [0, 2, 3]) expect(inst.out).toContain(`  ${k}  hospital-${k}  0.000  -  -`);
  expect(inst.out).toContain('* 1  hospital-1');
  const two = await cli(['institutions', '--sidecar', urls[0]!, '--sidecar', urls[1]!]);
  expect(two.code).toBe(2);
});

it('grant --link and link: share links that verify and open once at the grantee', async () => {
  const until = new Date(Date.now() + 30 * 86_400_000).toISOString().slice(0, 10);
  const qr = join(dir, 'link.svg');
  const granted = await cli([
    'grant',
    ...common,
    '--institution',
    'hospital-2',
    '--until',
    until,
    '--from',
    new Date(s.net.now - 3_600_000).toISOString(),
    '--holder',
    urls[0]!,
    '--holder',
    urls[1]!,
    '--link',
    '--qr',
    qr,
  ]);
  expect(granted.code, granted.out).toBe(0);
  expectNoIdentity(granted.out);
  const consentId = /consent id: (\S+)/.exec(granted.out)![1]!;
  const link = granted.out.split('\n').find((l) => l.startsWith(`${urls[0]}/portal/#share=`))!;
  expect(link).toBeDefined();
  const parsed = parseShareLink(link);
  if (!parsed.ok) throw new Error(parsed.message);
  expect(parsed.payload).toMatchObject({
    consent: consentId,
    grantee: 2,
    issuer: urls[0],
    idHash: toHex(P.idHash),
  });
  expect(parsed.payload.exp).toBeLessThanOrEqual(Date.now() + 7 * 86_400_000);
  const check = verifyShareLink(parsed.payload, {
    chainId: s.net.fixture.genesis.chainId,
    signingKey: signingPublicKey(P.signingSecret),
    now: Date.now(),
  });
  expect(check).toEqual({ ok: true });
  expect(await readFile(qr, 'utf8')).toMatch(/^<svg[^>]*>.*<\/svg>\s*$/s);

  const open = async (text: string) => {
    const res = await s.apis[2]!.app.inject({
      method: 'POST',
      url: '/spchain/share-links/open',
      headers: { ...AUTH, 'content-type': 'application/json' },
      payload: JSON.stringify({ link: text }),
    });
    return { status: res.statusCode, json: JSON.parse(res.body) as Record<string, unknown> };
  };
  const first = await open(link);
  expect(first.status, JSON.stringify(first.json)).toBe(200);
  expect(first.json).toMatchObject({ consent: consentId, patient: `Patient/${toHex(P.idHash)}` });
  expect((await open(link)).status).toBe(409);

  // A fresh link for the same grant (another nonce), from `patient link`.
  const again = await cli([
    'link',
    ...common,
    '--consent-id',
    consentId,
    '--institution',
    '2',
    '--issuer',
    `${urls[0]}/`,
  ]);
  expect(again.code, again.out).toBe(0);
  const second = again.out.split('\n').find((l) => l.includes('#share='))!;
  expect(second).not.toBe(link);
  expect((await open(second)).status).toBe(200);

  const badIssuer = await cli([
    'link',
    ...common,
    '--consent-id',
    consentId,
    '--institution',
    '2',
    '--issuer',
    'ftp://example.org',
  ]);
  expect(badIssuer.code).toBe(1);
  expect(badIssuer.out).toContain('--issuer must be');
  const noConsent = await cli(['link', ...common, '--institution', '2', '--issuer', urls[0]!]);
  expect(noConsent.code).toBe(2);
  expect(noConsent.out).toContain('--consent-id is required');
});

it('approve: signs a SMART app’s pending request; the code buys a token; --decline refuses', async () => {
  const pending = async () => {
    const verifier = randomBytes(32).toString('base64url');
    const q = new URLSearchParams({
      response_type: 'code',
      client_id: APP.id,
      redirect_uri: APP.redirect,
      scope: 'launch/patient patient/*.rs',
      state: 'st-cli',
      aud: fhirBase0,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
    });
    const res = await fetch(`${urls[0]}/smart/authorize?${q}`, {
      headers: { accept: 'application/json' },
    });
    expect(res.status).toBe(200);
    return { request: ((await res.json()) as { request: string }).request, verifier };
  };

  const a = await pending();
  const approved = await cli(['approve', ...common, '--request', a.request, '--sidecar', urls[0]!]);
  expect(approved.code, approved.out).toBe(0);
  expect(approved.out).toContain(`${APP.name} (client ${APP.id}) asks for access to ${fhirBase0}`);
  expect(approved.out).toContain('scopes: launch/patient patient/*.rs');
  const at = /the app continues at: (\S+)/.exec(approved.out)![1]!;
  const redirect = new URL(at);
  expect(`${redirect.origin}${redirect.pathname}`).toBe(APP.redirect);
  expect(redirect.searchParams.get('state')).toBe('st-cli');
  const token = await fetch(`${urls[0]}/smart/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code: redirect.searchParams.get('code')!,
      redirect_uri: APP.redirect,
      client_id: APP.id,
      code_verifier: a.verifier,
    }),
  });
  expect(token.status).toBe(200);
  const t = (await token.json()) as { access_token?: string; patient?: string };
  expect(t.access_token).toBeTruthy();
  expect(t.patient).toBe(toHex(P.idHash));
  // A request is decided once.
  const twice = await cli(['approve', ...common, '--request', a.request, '--sidecar', urls[0]!]);
  expect(twice.code).toBe(1);
  expect(twice.out).toContain('no such pending request');

  const b = await pending();
  const declined = await cli([
    'approve',
    '--request',
    b.request,
    '--sidecar',
    urls[0]!,
    '--decline',
  ]);
  expect(declined.code, declined.out).toBe(0);
  const back = new URL(/the app continues at: (\S+)/.exec(declined.out)![1]!);
  expect(back.searchParams.get('error')).toBe('access_denied');
  expect(back.searchParams.get('code')).toBeNull();

  const badId = await cli(['approve', ...common, '--request', '../x', '--sidecar', urls[0]!]);
  expect(badId.code).toBe(1);
  expect(badId.out).toContain('--request must be');
}, 60_000);
