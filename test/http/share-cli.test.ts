/**
 * The patient's sharing commands as a process (src/cli/main.ts), against the HTTP APIs of four
 * institutions listening on loopback (share-net.ts): `patient allow-upload` gives hospital-1 a
 * leaf through the home institution; `patient grant` signs the Consent and kfrag from the key
 * file and delivers them to the holders, refusing to send anything when a holder is the grantee
 * itself; the grantee then reads the records; `patient revoke` stops it.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Bundle, OperationOutcome } from '@medplum/fhirtypes';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { toHex } from '../../src/crypto/bytes.ts';
import { sealKeyFileAsync } from '../../src/crypto/keyfile.ts';
import { signingPublicKey } from '../../src/crypto/sign.ts';
import { formatGenesisFile } from '../../src/node/genesis-file.ts';
import type { TestPatient } from '../sidecar/ledger.ts';
import { closeSharedParts, SSN, smallTransaction } from './harness.ts';
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
  s = await openShareApiNet('share-cli', [IDENTITY], 4);
  P = s.patients[0]!;
  urls = [];
  for (const api of s.apis) {
    await api.app.listen({ host: '127.0.0.1', port: 0 });
    const a = api.app.server.address();
    urls.push(`http://127.0.0.1:${typeof a === 'object' && a !== null ? a.port : 0}`);
  }
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
  }
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
