/**
 * `clients add` and `clients list` (src/cli/clients.ts) as a process: SMART clients registered in
 * a data directory's smart-clients.json, which the sidecar reads at start (readClientsFile). A bad
 * client file fails with exit 1 naming the field, and leaves the file as it was.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { readClientsFile } from '../../src/smart/clients.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;

let dir: string;
let data: string;

function cli(args: string[]): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, [MAIN, ...args], {
    cwd: dir,
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

/** Writes `client` as a client file and runs `clients add` with it. */
async function add(name: string, client: unknown, ...more: string[]) {
  const file = join(dir, `${name}.json`);
  await writeFile(file, typeof client === 'string' ? client : JSON.stringify(client));
  return cli(['clients', 'add', '--data-dir', data, '--client-file', file, ...more]);
}

const APP = {
  clientId: 'chart-app',
  name: 'Chart app',
  kind: 'public',
  redirectUris: ['http://127.0.0.1:7777/callback'],
  scope: 'launch/patient patient/*.rs',
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'spchain-clients-cli-'));
  data = join(dir, 'data');
  await mkdir(data);
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

it('adds a public app and a backend service, lists them, and the sidecar can read the file', async () => {
  const app = await add('app', APP);
  expect(app.code, app.out).toBe(0);
  expect(app.out).toContain('registered public client chart-app');
  expect(app.out).toContain('reads this file at start');

  const pair = await generateKeyPair('ES384', { extractable: true });
  const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'ehr-1' };
  const backend = await add('ehr', {
    clientId: 'ehr-backend',
    name: 'The EHR',
    kind: 'backend',
    scope: 'system/*.cruds',
    jwks: { keys: [jwk] },
    institution: 0,
  });
  expect(backend.code, backend.out).toBe(0);

  const listed = await cli(['clients', 'list', '--data-dir', data]);
  expect(listed.code, listed.out).toBe(0);
  expect(listed.out).toContain('2 SMART client(s)');
  expect(listed.out).toContain('public client chart-app ("Chart app")');
  expect(listed.out).toContain('redirect http://127.0.0.1:7777/callback');
  expect(listed.out).toContain('backend client ehr-backend ("The EHR")');
  expect(listed.out).toContain('1 public key(s), for institution 0');

  const path = join(data, 'smart-clients.json');
  expect((await stat(path)).mode & 0o777).toBe(0o600);
  const clients = await readClientsFile(path);
  expect(clients.map((c) => c.clientId)).toEqual(['chart-app', 'ehr-backend']);
  expect(clients[1]!.jwks!.keys[0]!.kid).toBe('ehr-1');

  // Once only, unless replaced.
  const again = await add('app2', { ...APP, name: 'Chart app 2' });
  expect(again.code).toBe(1);
  expect(again.out).toContain('is registered already (use --replace)');
  const replaced = await add('app2', { ...APP, name: 'Chart app 2' }, '--replace');
  expect(replaced.code, replaced.out).toBe(0);
  expect((await readClientsFile(path)).find((c) => c.clientId === 'chart-app')!.name).toBe(
    'Chart app 2',
  );
});

it('refuses a bad client file with exit 1 naming the field, and writes nothing', async () => {
  const path = join(data, 'smart-clients.json');
  const before = await readFile(path, 'utf8');
  const pair = await generateKeyPair('ES256', { extractable: true });
  const privateJwk = await exportJWK(pair.privateKey);
  const cases: [string, unknown, string][] = [
    ['no-scope', { ...APP, clientId: 'x1', scope: undefined }, 'client.scope'],
    [
      'bad-redirect',
      { ...APP, clientId: 'x2', redirectUris: ['http://example.org/cb'] },
      'client.redirectUris[0]',
    ],
    ['bad-kind', { ...APP, clientId: 'x3', kind: 'robot' }, 'client.kind'],
    ['bad-id', { ...APP, clientId: 'a b' }, 'client.clientId'],
    ['no-keys', { clientId: 'x4', kind: 'backend', scope: 'system/*.rs' }, 'client.jwks'],
    [
      'private-key',
      { clientId: 'x5', kind: 'backend', scope: 'system/*.rs', jwks: { keys: [privateJwk] } },
      'client.jwks.keys[0]',
    ],
    ['app-institution', { ...APP, clientId: 'x6', institution: 1 }, 'client.institution'],
    ['not-json', '{ "clientId": ', 'is not JSON'],
  ];
  const runs = await Promise.all(cases.map(([name, client]) => add(name, client)));
  for (const [n, [name, , field]] of cases.entries()) {
    const r = runs[n]!;
    expect(r.code, `${name}: ${r.out}`).toBe(1);
    expect(r.out, name).toContain(field);
    expect(r.out, name).toContain(`${name}.json`);
  }
  expect(await readFile(path, 'utf8')).toBe(before);
});

it('says what is wrong with its arguments (exit 2) and with the data directory (exit 1)', async () => {
  const none = await cli(['clients', 'add', '--data-dir', data]);
  expect(none.code).toBe(2);
  expect(none.out).toContain('--client-file is required');
  const wrong = await cli(['clients', 'list', '--data-dir', data, '--replace']);
  expect(wrong.code).toBe(2);
  expect(wrong.out).toContain('--replace is not an option of clients list');
  const unknown = await cli(['clients', 'remove']);
  expect(unknown.code).toBe(2);
  const missing = await cli(['clients', 'list', '--data-dir', join(dir, 'nowhere')]);
  expect(missing.code).toBe(1);
  expect(missing.out).toContain('no data directory');
});
