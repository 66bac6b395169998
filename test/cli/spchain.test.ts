/**
 * The `spchain` command line run for real through its launcher (bin/spchain, a process each time):
 * `--help` everywhere exits 0; bad usage exits 2 with a message; `init` turns a key file and a
 * network's genesis and peers files (made by createLocalnet) into an institution directory whose
 * config the node loads, and makes new keys for a genesis ceremony; `patient keygen` / `export`
 * handle a key file; against a sidecar started in this process with two registered Synthea
 * patients, `import` posts their bundles and prints a summary (exit 0), a malformed file makes it
 * exit 1 naming the file, and `status` answers the anchoring of an imported record and its tx;
 * `peers` lists the institution with its reputation.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataPaths, registerPatient } from '../../src/cli/patient.ts';
import { openKeyFileAsync, parseKeyFile } from '../../src/crypto/keyfile.ts';
import { type RunningSidecar, startSidecar } from '../../src/http/sidecar.ts';
import { readNodeConfig } from '../../src/node/config.ts';
import { createLocalnet } from '../../src/node/localnet.ts';
import { type SyntheaBundle, syntheaBundles, TOKEN } from '../http/harness.ts';

const BIN = new URL('../../bin/spchain', import.meta.url).pathname;
let dir: string;

interface Run {
  readonly code: number | null;
  readonly out: string;
  readonly err: string;
}

/** The launcher as a process (run by this Node, as a shell would through its #! line). */
function spchain(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: dir,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
  });
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, out, err })));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'spchain-cli-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('usage', () => {
  const commands = [
    [],
    ['init'],
    ['start'],
    ['peers'],
    ['status'],
    ['import'],
    ['clients'],
    ['clients', 'add'],
    ['clients', 'list'],
    ['patient'],
    ...[
      'keygen',
      'register',
      'allow-upload',
      'grant',
      'revoke',
      'records',
      'audit',
      'consents',
      'institutions',
      'link',
      'approve',
      'export',
    ].map((c) => ['patient', c]),
  ];

  it('answers --help on every command with exit 0', async () => {
    const runs = await Promise.all(commands.map((c) => spchain([...c, '--help'])));
    runs.forEach((r, i) => {
      expect(r.code, commands[i]!.join(' ')).toBe(0);
      expect(r.out).toContain(`Usage: spchain ${commands[i]!.join(' ')}`.trim());
    });
    expect(runs[0]!.out).toMatch(/import \[options\] <paths\.\.\.>/);
  });

  it('runs through its #! line too, and tells its version', async () => {
    const child = spawn(BIN, ['--version'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const code = await new Promise((resolve) => child.once('exit', resolve));
    const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8'));
    expect(code).toBe(0);
    expect(out.trim()).toBe(pkg.version);
  });

  it('exits 2 with a message on an unknown command, option, or a missing option', async () => {
    const unknown = await spchain(['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toContain("unknown command 'frobnicate'");
    const option = await spchain(['peers', '--bogus']);
    expect(option.code).toBe(2);
    expect(option.err).toContain("unknown option '--bogus'");
    const missing = await spchain(['init']);
    expect(missing.code).toBe(2);
    expect(missing.err).toContain("required option '--dir <dir>'");
    const legacy = await spchain(['patient', 'revoke', '--genesis', 'g.json']);
    expect(legacy.code).toBe(2);
    expect(legacy.err).toContain('--key-file is required');
    const badInt = await spchain(['import', 'x.json', '--concurrency', '0']);
    expect(badInt.code).toBe(2);
    expect(badInt.err).toContain('--concurrency must be an integer from 1 to 64');
    const target = await spchain(['status', 'not-a-tx', '--token', 't']);
    expect(target.code).toBe(2);
    expect(target.err).toContain('a tx hash (64 lowercase hex digits) or Type/id');
  });
});

describe('init', () => {
  let net: Awaited<ReturnType<typeof createLocalnet>>;
  beforeAll(async () => {
    net = await createLocalnet({
      institutions: 2,
      dir: join(dir, 'net'),
      patientsPerInstitution: 0,
      load: null,
      mining: null,
    });
  });

  it("makes a joinable institution from a member's key file and the genesis", async () => {
    const inst = join(dir, 'net', 'inst-1');
    const joined = join(dir, 'joined');
    const r = await spchain([
      'init',
      '--dir',
      joined,
      '--genesis',
      net.genesisPath,
      '--peers',
      net.peersPath,
      '--key-file',
      join(inst, 'institution.key.json'),
      '--passphrase-file',
      join(inst, 'passphrase'),
    ]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toContain(`institution 1 (hospital-1) of network ${net.chainId}`);
    const config = await readNodeConfig(join(joined, 'config.json'));
    expect(config.index).toBe(1);
    expect(config.genesisFile.genesis.chainId).toBe(net.chainId);
    expect(config.dataDir).toBe(join(joined, 'data'));
    for (const f of ['institution.key.json', 'passphrase']) {
      expect((await stat(join(joined, f))).mode & 0o077, f).toBe(0);
    }
    expect(parseKeyFile(await readFile(join(joined, 'institution.key.json'), 'utf8')).kind).toBe(
      'institution',
    );
    // A second init does not overwrite the config.
    const again = await spchain([
      'init',
      '--dir',
      joined,
      '--genesis',
      net.genesisPath,
      '--peers',
      net.peersPath,
    ]);
    expect(again.code).toBe(1);
    expect(again.err).toContain('config.json exists');
  });

  it('makes new keys for the genesis ceremony, which are not a member until then', async () => {
    const fresh = join(dir, 'fresh');
    const r = await spchain(['init', '--dir', fresh, '--name', 'hospital-new']);
    expect(r.code).toBe(0);
    const member = JSON.parse(await readFile(join(fresh, 'member.json'), 'utf8'));
    expect(member).toMatchObject({ kind: 'spchain-member', name: 'hospital-new' });
    expect(member.signingKey).toMatch(/^[0-9a-f]{66}$/);
    const sealed = await readFile(join(fresh, 'institution.key.json'), 'utf8');
    const passphrase = (await readFile(join(fresh, 'passphrase'), 'utf8')).trim();
    const opened = await openKeyFileAsync(sealed, passphrase);
    expect(opened.kind).toBe('institution');
    expect(Object.keys(opened.secretKeys).sort()).toEqual(['chameleon', 'peer', 'pre', 'signing']);
    expect((await stat(join(fresh, 'passphrase'))).mode & 0o077).toBe(0);
    const join1 = await spchain([
      'init',
      '--dir',
      fresh,
      '--genesis',
      net.genesisPath,
      '--peers',
      net.peersPath,
    ]);
    expect(join1.code).toBe(1);
    expect(join1.err).toContain(`not a member of network ${net.chainId}`);
  });
});

describe('patient keygen and export', () => {
  it('makes a sealed key file, exports its public keys, and re-seals it', async () => {
    const env = {
      SPCHAIN_PATIENT_PASSPHRASE: 'old passphrase',
      SPCHAIN_NEW_PATIENT_PASSPHRASE: 'new one',
    };
    const made = await spchain(['patient', 'keygen', '--key-file', 'p.key.json'], env);
    expect(made.code).toBe(0);
    expect(made.out).toContain('keys made and sealed in p.key.json');
    const again = await spchain(['patient', 'keygen', '--key-file', 'p.key.json'], env);
    expect(again.code).toBe(1);
    expect(again.err).toContain('exists');
    const pub = await spchain(['patient', 'export', '--key-file', 'p.key.json']);
    expect(pub.code).toBe(0);
    const keys = JSON.parse(pub.out).publicKeys;
    expect(made.out).toContain(keys.pre);
    const resealed = await spchain(
      ['patient', 'export', '--key-file', 'p.key.json', '--reseal', 'p2.key.json'],
      env,
    );
    expect(resealed.code).toBe(0);
    const c = await openKeyFileAsync(await readFile(join(dir, 'p2.key.json'), 'utf8'), 'new one');
    expect(c.kind).toBe('patient');
    await expect(
      openKeyFileAsync(await readFile(join(dir, 'p2.key.json'), 'utf8'), 'old passphrase'),
    ).rejects.toThrow();
  });
});

describe('against a sidecar', () => {
  let sidecar: RunningSidecar;
  let bundles: SyntheaBundle[];
  let files: string;
  const common = () => ['--sidecar', sidecar.url, '--token', TOKEN];

  beforeAll(async () => {
    const data = join(dir, 'sidecar');
    sidecar = await startSidecar({
      dataDir: data,
      host: '127.0.0.1',
      port: 0,
      ehrToken: TOKEN,
      logLevel: 'silent',
    });
    bundles = syntheaBundles().slice(0, 2);
    const idHashes: string[] = [];
    for (const [i, b] of bundles.entries()) {
      const r = await registerPatient({
        identifier: `${b.identity.system}|${b.identity.value}`,
        birthDate: b.identity.birthDate,
        keyFile: join(dir, `synthea-${i}.key.json`),
        passphrase: 'a test passphrase',
        sidecar: sidecar.url,
        token: TOKEN,
        genesisFile: dataPaths(data).genesis,
        home: sidecar.institution.index,
        waitSeconds: 0,
        kdf: { N: 2 ** 10, r: 8, p: 1 },
        print: () => {},
      });
      idHashes.push(r.idHash);
    }
    // Until both patient blocks are pinned (a bound, not a timing check).
    for (let tries = 0; tries < 240; tries++) {
      const states = await Promise.all(
        idHashes.map(async (h) => {
          const res = await fetch(`${sidecar.url}/spchain/patients/${h}`, {
            headers: { authorization: `Bearer ${TOKEN}` },
          });
          return ((await res.json()) as { registered?: boolean }).registered === true;
        }),
      );
      if (states.every(Boolean)) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    files = join(dir, 'bundles');
    await mkdir(files);
    for (const [i, b] of bundles.entries())
      await writeFile(join(files, `bundle-${i}.json`), b.text);
  }, 180_000);

  afterAll(async () => {
    await sidecar?.close();
  });

  let location = '';

  it('imports a directory of bundles and prints a summary (exit 0)', async () => {
    const results = join(dir, 'results.json');
    const r = await spchain([
      'import',
      files,
      ...common(),
      '--concurrency',
      '2',
      '--results',
      results,
    ]);
    expect(r.err).toContain('2/2 bundles, 0 failed');
    expect(r.code).toBe(0);
    const resources = bundles.reduce((n, b) => n + (b.bundle.entry?.length ?? 0), 0);
    expect(r.out).toContain(`imported 2 of 2 bundles, 0 failed: ${resources} resources in`);
    const outcomes = JSON.parse(await readFile(results, 'utf8'));
    expect(outcomes).toHaveLength(2);
    expect(outcomes.every((o: { ok: boolean }) => o.ok)).toBe(true);
    location = outcomes[0].locations.find((l: string) => l.startsWith('Condition/'));
    expect(location).toMatch(/^Condition\/[A-Za-z0-9.-]+\/_history\/1$/);
  }, 180_000);

  it('exits 1 when a file is malformed, naming the file', async () => {
    await writeFile(join(dir, 'broken.json'), '{"resourceType": "Bundle", ');
    const r = await spchain([
      'import',
      join(files, 'bundle-0.json'),
      join(dir, 'broken.json'),
      ...common(),
    ]);
    expect(r.code).toBe(1);
    expect(r.out).toContain('imported 1 of 2 bundles, 1 failed');
    expect(r.out).toContain(`${join(dir, 'broken.json')}: is not JSON`);
  }, 180_000);

  it('answers the anchoring of an imported record and of its tx', async () => {
    const record = location.split('/_history')[0]!;
    const r = await spchain(['status', record, ...common(), '--wait', '120']);
    expect(r.code).toBe(0);
    const m = /version 1: pinned in batch (\d+), tx ([0-9a-f]{64})/.exec(r.out);
    expect(m, r.out).not.toBeNull();
    const tx = await spchain(['status', m![2]!, ...common(), '--json']);
    expect(tx.code).toBe(0);
    expect(JSON.parse(tx.out)).toMatchObject({ tx: m![2], state: 'pinned', batch: Number(m![1]) });
    const unknown = await spchain(['status', '0'.repeat(64), ...common()]);
    expect(unknown.code).toBe(1);
    expect(unknown.out).toContain('unknown to this sidecar');
  }, 180_000);

  it('lists the institutions with reputation and group', async () => {
    const r = await spchain(['peers', '--sidecar', sidecar.url]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^\* 0 {2}hospital-0 {2}\d+\.\d{3}/m);
    expect(r.out).toContain('connected peers: none listed');
  });
});
