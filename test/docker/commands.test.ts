/**
 * The commands the containers run, run here without Docker (these machines have no engine): the
 * compose file's `init` command with its environment makes the network folder in a temp dir and
 * leaves it as it is on a second run; then `sidecar-0`'s command with its environment (the image's
 * ENV, then the service's) starts institution 0's sidecar on that folder, answers on its health
 * URL, passes the containers' health check command, leaves the shared folder unchanged (it is
 * mounted read-only there) and stops with exit 0 on SIGTERM; a wrong passphrase stops it at start.
 *
 * Container paths and hosts are mapped to the test's: /network and /var/lib/spchain to temp dirs,
 * `sidecar-<i>:4001` to free loopback ports, 0.0.0.0 to 127.0.0.1, the `redis` host to the Redis
 * on 127.0.0.1:6379 (required, as for the other queue suites; the same database index), port 8080
 * to a free port, and `${SPCHAIN_PASSPHRASE_<i>:?...}` to a docker/.env's values.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parseGenesisFile } from '../../src/node/genesis-file.ts';
import { openInstitutionKeys } from '../../src/node/keys.ts';
import { findFreePorts } from '../../src/node/localnet.ts';
import {
  imageEnv,
  ROOT,
  readCompose,
  readDockerfile,
  type Service,
  SIDECARS,
} from './compose-files.ts';

const compose = readCompose();
const image = imageEnv(readDockerfile());
const dotEnv: Record<string, string> = Object.fromEntries(
  SIDECARS.map((_, i) => [`SPCHAIN_PASSPHRASE_${i}`, `docker test passphrase ${i}`]),
);

let dir: string;
let httpPort: number;
let p2pPorts: number[];
const children: ChildProcess[] = [];
const redis = new Redis('redis://127.0.0.1:6379/0', { lazyConnect: true, maxRetriesPerRequest: 1 });
let queueKeysBefore = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'spchain-docker-'));
  const ports = await findFreePorts(1 + SIDECARS.length);
  httpPort = ports[0]!;
  p2pPorts = ports.slice(1);
  await redis.connect();
  queueKeysBefore = (await redis.keys('spchain:*')).length;
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  // The queue keys this run made in Redis database 0, unless some were there before it.
  if (queueKeysBefore === 0) {
    const keys = await redis.keys('spchain:*');
    if (keys.length > 0) await redis.del(...keys);
  }
  redis.disconnect();
  await rm(dir, { recursive: true, force: true });
});

/** One value of a container's environment, as this test's machine sees it. */
function mapValue(value: string): string {
  let v = value.replace(/\$\{(\w+):\?[^}]*\}/g, (_, name: string) => {
    const given = dotEnv[name];
    if (given === undefined) throw new Error(`${name} is not in the test's docker/.env`);
    return given;
  });
  if (v.startsWith('/network')) v = join(dir, 'network') + v.slice('/network'.length);
  if (v.startsWith('/var/lib/spchain'))
    v = join(dir, 'data-0') + v.slice('/var/lib/spchain'.length);
  if (v === '0.0.0.0') v = '127.0.0.1';
  if (v === '8080') v = String(httpPort);
  v = v.replace(/sidecar-(\d+):4001/g, (_, i: string) => `127.0.0.1:${p2pPorts[Number(i)]}`);
  v = v.replace('redis://redis:6379/', 'redis://127.0.0.1:6379/');
  return v.replaceAll('localhost:8080', `127.0.0.1:${httpPort}`);
}

/** A container's environment: the image's ENV, then the service's, mapped; nothing inherited. */
function containerEnv(service: Service): Record<string, string> {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: dir };
  for (const [k, v] of Object.entries({ ...image, ...service.environment })) env[k] = mapValue(v);
  return env;
}

interface Run {
  readonly child: ChildProcess;
  readonly output: () => string;
  readonly exit: Promise<number | null>;
}

/** Runs a container's command (`node ...`) with Node 24 in the repository (the image's /app). */
function run(command: readonly string[], env: Record<string, string>): Run {
  expect(command[0]).toBe('node');
  const child = spawn(process.execPath, command.slice(1), {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => out, exit };
}

/** Every file under `root` with a digest of its contents, to show a folder was left unchanged. */
async function snapshot(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const files = await readdir(root, { recursive: true, withFileTypes: true });
  for (const f of files.filter((e) => e.isFile())) {
    const path = join(f.parentPath, f.name);
    out[path.slice(root.length)] = createHash('sha256')
      .update(await readFile(path))
      .digest('hex');
  }
  return out;
}

/** GETs `url` until it answers (any status), within a generous bound; not a timing check. */
async function firstAnswer(url: string, until: number, running: Run): Promise<number> {
  while (Date.now() < until) {
    if (running.child.exitCode !== null) {
      throw new Error(`the sidecar exited with ${running.child.exitCode}:\n${running.output()}`);
    }
    try {
      const res = await fetch(url);
      await res.body?.cancel();
      return res.status;
    } catch {
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  throw new Error(`no answer from ${url}:\n${running.output()}`);
}

it('init makes the network folder the sidecars expect, then leaves it as it is', async () => {
  const init = compose.services.init!;
  const env = containerEnv(init);
  const first = run(init.command!, env);
  expect(await first.exit, first.output()).toBe(0);
  expect(first.output()).toMatch(/"event":"made"/);
  for (const p of Object.values(dotEnv)) expect(first.output()).not.toContain(p);

  const net = join(dir, 'network');
  const genesisText = await readFile(join(net, 'genesis.json'), 'utf8');
  const genesis = parseGenesisFile(genesisText, 'genesis.json').genesis;
  expect(genesis.members).toHaveLength(4);
  const peers = JSON.parse(await readFile(join(net, 'peers.json'), 'utf8')) as {
    multiaddr: string;
  }[];
  expect(peers.map((p) => p.multiaddr)).toEqual(p2pPorts.map((p) => `/ip4/127.0.0.1/tcp/${p}`));
  const institution = async (i: number) => {
    const inst = join(net, `inst-${i}`);
    expect((await readdir(inst)).sort()).toEqual(['config.json', 'institution.key.json']);
    const config = JSON.parse(await readFile(join(inst, 'config.json'), 'utf8'));
    expect(config.passphraseEnv).toBe('SPCHAIN_PASSPHRASE');
    expect(config.dataDir).toBe(join(dir, 'data-0', 'node'));
    expect(config.listen).toBe(`/ip4/127.0.0.1/tcp/${p2pPorts[i]}`);
    // Sealed under the institution's passphrase from docker/.env (scrypt runs off the loop).
    const keyFile = await readFile(join(inst, 'institution.key.json'), 'utf8');
    const passphrase = dotEnv[`SPCHAIN_PASSPHRASE_${i}`]!;
    return (await openInstitutionKeys(keyFile, passphrase, genesis, i, 'k')).index;
  };
  expect(await Promise.all([0, 1, 2, 3].map(institution))).toEqual([0, 1, 2, 3]);

  const before = await snapshot(net);
  const again = run(init.command!, env);
  expect(await again.exit, again.output()).toBe(0);
  expect(again.output()).toMatch(/"event":"exists"/);
  expect(await snapshot(net)).toEqual(before);
}, 120_000);

it('sidecar-0 starts on it, is healthy, leaves the shared folder alone and stops cleanly', async () => {
  const service = compose.services['sidecar-0']!;
  const env = containerEnv(service);
  expect(env.SPCHAIN_NODE_CONFIG).toBe(join(dir, 'network', 'inst-0', 'config.json'));
  expect(env.REDIS_URL).toBe('redis://127.0.0.1:6379/0');
  const shared = await snapshot(join(dir, 'network'));

  const sidecar = run(service.command!, env);
  const until = Date.now() + 150_000;
  const base = `http://127.0.0.1:${httpPort}`;
  // The image's HEALTHCHECK and the compose healthcheck ask /health/live (src/http/health.ts).
  expect(await firstAnswer(`${base}/health/live`, until, sidecar)).toBe(200);
  const meta = await fetch(`${base}/fhir/metadata`);
  expect(meta.status).toBe(200);
  expect(((await meta.json()) as { fhirVersion: string }).fhirVersion).toBe('4.0.1');

  // The containers' health check command, in the sidecar's environment.
  const check = service.healthcheck!.test!;
  expect(check[0]).toBe('CMD');
  const hc = run(check.slice(1), env);
  expect(await hc.exit, hc.output()).toBe(0);
  const hcMeta = run([...check.slice(1), '/fhir/metadata'], env);
  expect(await hcMeta.exit, hcMeta.output()).toBe(0);

  sidecar.child.kill('SIGTERM');
  expect(await sidecar.exit, sidecar.output()).toBe(0);
  for (const p of Object.values(dotEnv)) expect(sidecar.output()).not.toContain(p);
  expect(await snapshot(join(dir, 'network'))).toEqual(shared);
  // Its state went to its own data volume.
  expect((await readdir(join(dir, 'data-0'))).sort()).toEqual(['node', 'sidecar']);

  // Stopped, the health check fails.
  const down = run(check.slice(1), env);
  expect(await down.exit).toBe(1);
}, 180_000);

it('sidecar-0 with a wrong passphrase stops at start, naming the key file, not the passphrase', async () => {
  const service = compose.services['sidecar-0']!;
  const env = { ...containerEnv(service), SPCHAIN_PASSPHRASE: 'not the passphrase 0' };
  const sidecar = run(service.command!, env);
  expect(await sidecar.exit, sidecar.output()).toBe(1);
  expect(sidecar.output()).toMatch(/keyFile/);
  expect(sidecar.output()).not.toContain('not the passphrase 0');
}, 120_000);
