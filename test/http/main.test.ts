/**
 * `npm start`'s composition, as a process: src/main.ts on a fresh data directory makes its
 * one-institution network, starts the node, queue, core and API, and prints its URLs; a patient
 * registered with the CLI gets a pinned block; their Synthea bundle posted with the printed token
 * is accepted and anchored; SIGTERM stops it cleanly; a second start reuses the same network.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Bundle } from '@medplum/fhirtypes';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { syntheaBundles } from './harness.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
let dir: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'spchain-main-'));
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

interface Started {
  readonly child: ChildProcess;
  readonly base: string;
  readonly output: () => string;
}

/** Spawns a Node process in the test's directory, collecting what it prints. */
function spawnNode(
  args: string[],
  env: Record<string, string>,
): { child: ChildProcess; out: () => string } {
  const child = spawn(process.execPath, args, {
    cwd: dir,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  const collect = (d: Buffer) => {
    out += d.toString();
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  return { child, out: () => out };
}

/** Starts src/main.ts and waits for its banner (a generous bound, not a timing check). */
function start(): Promise<Started> {
  const { child, out } = spawnNode(
    [join(ROOT, 'src/main.ts'), '--data-dir', join(dir, 'data'), '--port', '0'],
    { REDIS_URL: '', SPCHAIN_LOG_LEVEL: 'warn' },
  );
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no banner after 90 s:\n${out()}`)), 90_000);
    const check = () => {
      const m = /FHIR base\s+(\S+)/.exec(out());
      if (m) {
        clearTimeout(timer);
        resolve({ child, base: m[1]!, output: out });
      }
    };
    child.stdout!.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`main exited with ${code} before its banner:\n${out()}`));
    });
  });
}

function stop(s: Started): Promise<number | null> {
  return new Promise((resolve) => {
    s.child.once('exit', (code) => resolve(code));
    s.child.kill('SIGTERM');
  });
}

function cli(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; out: string }> {
  const { child, out } = spawnNode([join(ROOT, 'src/cli/main.ts'), ...args], env);
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, out: out() })));
}

it('starts with embedded defaults, registers a patient, takes their bundle, stops, restarts', async () => {
  const first = await start();
  const meta = await fetch(`${first.base}/metadata`);
  expect(meta.status).toBe(200);
  expect(((await meta.json()) as { fhirVersion: string }).fhirVersion).toBe('4.0.1');
  const chain = /network (\S+)\)/.exec(first.output())![1];

  const synthea = syntheaBundles()[0]!;
  const root = first.base.replace(/\/fhir$/, '');
  const reg = await cli(
    [
      'patient',
      'register',
      '--sidecar',
      root,
      '--data-dir',
      join(dir, 'data'),
      '--identifier',
      `${synthea.identity.system}|${synthea.identity.value}`,
      '--birth-date',
      synthea.identity.birthDate,
      '--key-file',
      join(dir, 'patient.key.json'),
      '--wait',
      '120',
    ],
    { SPCHAIN_PATIENT_PASSPHRASE: 'a test passphrase' },
  );
  expect(reg.out).toMatch(/registered: patient block \(\d+, \d+\) is pinned/);
  expect(reg.code).toBe(0);
  expect(reg.out).not.toContain(synthea.identity.value);
  const keyFile = JSON.parse(await readFile(join(dir, 'patient.key.json'), 'utf8'));
  expect(keyFile.kind).toBe('patient');

  const token = (await readFile(join(dir, 'data', 'ehr-token'), 'utf8')).trim();
  const posted = await fetch(first.base, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/fhir+json' },
    body: synthea.text,
  });
  expect(posted.status).toBe(200);
  const response = (await posted.json()) as Bundle;
  expect(response.entry).toHaveLength(synthea.bundle.entry!.length);
  const obs = response.entry!.find((e) => e.response?.location?.startsWith('Observation/'))!;
  const ref = obs.response!.location!.split('/_history')[0];
  let state: string | undefined;
  const end = Date.now() + 120_000;
  while (state !== 'pinned' && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 500));
    const h = (await (
      await fetch(`${first.base}/${ref}/_history`, {
        headers: { authorization: `Bearer ${token}` },
      })
    ).json()) as Bundle;
    state = h.entry?.[0]?.extension?.[0]?.extension?.find((e) => e.url === 'state')?.valueCode;
  }
  expect(state).toBe('pinned');

  expect(await stop(first)).toBe(0);
  expect(first.output()).toMatch(/"event":"stopped"/);

  const second = await start();
  expect(second.output()).toContain(`network ${chain})`);
  const again = await fetch(`${second.base}/${ref}`, {
    headers: { authorization: `Bearer ${token}` },
  });
  expect(again.status).toBe(200);
  expect(await stop(second)).toBe(0);
}, 400_000);
