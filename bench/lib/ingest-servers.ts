/**
 * The servers of `npm run bench:ingest`, each a small adapter `start(dataDir, patients)` that runs
 * the server in a child process of its own (no shared event loop with the load generator or the
 * other servers) and returns where to post, with which headers, and how to stop it:
 *
 * - medplum  `@medplum/fhir-router` over MemoryRepository behind fastify (ingest-baselines.ts);
 * - medplum-validated  the same, validating each bundle with @medplum/core first (a reference);
 * - plain    fastify + LevelDB, no encryption (ingest-baselines.ts);
 * - spchain  our sidecar as `npm start` runs it (src/main.ts: embedded one-institution network,
 *            embedded queue, default mapping, FHIR validation), logging at `warn`; the bundles'
 *            patients are registered first as the CLI does it (src/cli/patient.ts: keys sealed in
 *            a key file, register tx signed by the patient, posted to /spchain/patients), and the
 *            adapter waits until every patient block is pinned.
 *
 * Every child and data directory is registered for `cleanupServers` (on exit, Ctrl-C, errors).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { dataPaths, registerPatient } from '../../src/cli/patient.ts';
import type { PatientIdentity } from '../../src/ledger/idhash.ts';
import { sleep } from './procs.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const SERVE = new URL('./ingest-serve.ts', import.meta.url).pathname;
const SIDECAR_MAIN = `${ROOT}src/main.ts`;
const START_TIMEOUT_MS = 120_000;
const REGISTER_TIMEOUT_MS = 180_000;

export type ServerName = 'medplum' | 'medplum-validated' | 'plain' | 'spchain';

export interface RunningServer {
  /** Where transaction Bundles are posted (the FHIR base). */
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  /** The server process, for its CPU time. */
  readonly pid: number;
  stop(): Promise<void>;
}

export interface IngestServer {
  readonly name: ServerName;
  readonly description: string;
  /**
   * Starts the server with its data under `dataDir`, ready to take these patients' bundles;
   * `nodeArgs` go to its node process (e.g. `--cpu-prof`).
   */
  start(
    dataDir: string,
    patients: readonly PatientIdentity[],
    nodeArgs?: readonly string[],
  ): Promise<RunningServer>;
}

const live = new Set<ChildProcess>();

/** Kills every server process still running (synchronous: for exit handlers). */
export function cleanupServers(): void {
  for (const c of live) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  live.clear();
}

interface Child {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Resolves with the first match of `pattern` on stdout; rejects if the process exits first. */
  waitFor(pattern: RegExp, what: string): Promise<RegExpExecArray>;
  stop(): Promise<void>;
}

function startChild(args: string[], env: NodeJS.ProcessEnv, cwd: string): Child {
  const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => {
    out = (out + d.toString()).slice(-20_000);
  });
  child.stderr!.on('data', (d: Buffer) => {
    err = (err + d.toString()).slice(-4_000);
  });
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      live.delete(child);
      resolve();
    }),
  );
  const running = () => child.exitCode === null && child.signalCode === null;
  return {
    child,
    pid: child.pid!,
    waitFor: (pattern, what) =>
      new Promise((resolve, reject) => {
        const deadline = Date.now() + START_TIMEOUT_MS;
        const poll = () => {
          const m = pattern.exec(out);
          if (m) return resolve(m);
          if (!running())
            return reject(new Error(`${what} exited before it was ready:\n${err || out}`));
          if (Date.now() > deadline) {
            return reject(
              new Error(`${what} not ready after ${START_TIMEOUT_MS} ms:\n${err || out}`),
            );
          }
          setTimeout(poll, 50);
        };
        poll();
      }),
    async stop() {
      if (!running()) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

function baseline(
  name: 'medplum' | 'medplum-validated' | 'plain',
  description: string,
): IngestServer {
  return {
    name,
    description,
    async start(dataDir, _patients, nodeArgs = []) {
      mkdirSync(dataDir, { recursive: true });
      const c = startChild([...nodeArgs, SERVE, name, dataDir], process.env, ROOT);
      const m = await c.waitFor(/^listening (http:\/\/\S+)$/m, `the ${name} server`);
      return { url: `${m[1]}/fhir`, headers: {}, pid: c.pid, stop: () => c.stop() };
    },
  };
}

export const medplumServer = baseline(
  'medplum',
  '@medplum/fhir-router FhirRouter.handleRequest over MemoryRepository (no validation), fastify POST /fhir',
);

export const medplumValidatedServer = baseline(
  'medplum-validated',
  'reference, not a goal: the medplum server with @medplum/core validateResource of each bundle first (on its event loop)',
);

export const plainServer = baseline(
  'plain',
  'fastify + LevelDB, no encryption or validation: ids, urn:uuid rewrite, one fsynced batch',
);

export const spchainServer: IngestServer = {
  name: 'spchain',
  description:
    'SPChain sidecar (src/main.ts): validation, mapping, PRE encryption, LevelDB vault, queued txs, embedded one-institution node',
  async start(dataDir, patients, nodeArgs = []) {
    mkdirSync(dataDir, { recursive: true });
    const data = join(dataDir, 'sidecar');
    const env: NodeJS.ProcessEnv = { ...process.env, REDIS_URL: '', SPCHAIN_LOG_LEVEL: 'warn' };
    for (const k of [
      'SPCHAIN_EHR_TOKEN',
      'SPCHAIN_MAPPING',
      'SPCHAIN_BASE_URL',
      'SPCHAIN_BODY_LIMIT',
    ]) {
      delete env[k];
    }
    const c = startChild(
      [...nodeArgs, SIDECAR_MAIN, '--data-dir', data, '--host', '127.0.0.1', '--port', '0'],
      env,
      dataDir,
    );
    const banner = await c.waitFor(/institution (\d+),[\s\S]*?FHIR base\s+(\S+)/, 'the sidecar');
    const home = Number(banner[1]);
    const fhirBase = banner[2]!;
    const root = fhirBase.replace(/\/fhir$/, '');
    const paths = dataPaths(data);
    const token = (await readFile(paths.token, 'utf8')).trim();
    try {
      await registerAll(patients, { dataDir, root, token, genesisFile: paths.genesis, home });
    } catch (err) {
      await c.stop();
      throw err;
    }
    return {
      url: fhirBase,
      headers: { authorization: `Bearer ${token}` },
      pid: c.pid,
      stop: () => c.stop(),
    };
  },
};

export const allServers: readonly IngestServer[] = [
  medplumServer,
  medplumValidatedServer,
  plainServer,
  spchainServer,
];

/**
 * Registers each patient as `npm run cli -- patient register` does (key files in `dataDir`, a
 * cheaper scrypt cost for these throwaway key files), then waits until every block is pinned.
 */
async function registerAll(
  patients: readonly PatientIdentity[],
  o: { dataDir: string; root: string; token: string; genesisFile: string; home: number },
): Promise<void> {
  const unique = [
    ...new Map(patients.map((p) => [`${p.system}|${p.value}|${p.birthDate}`, p])).values(),
  ];
  const idHashes: string[] = [];
  for (const [i, p] of unique.entries()) {
    const r = await registerPatient({
      identifier: `${p.system}|${p.value}`,
      birthDate: p.birthDate,
      keyFile: join(o.dataDir, `patient-${i}.key.json`),
      passphrase: 'bench-ingest throwaway patient key file',
      sidecar: o.root,
      token: o.token,
      genesisFile: o.genesisFile,
      home: o.home,
      waitSeconds: 0,
      kdf: { N: 2 ** 14, r: 8, p: 1 },
      print: () => {},
    });
    idHashes.push(r.idHash);
  }
  const deadline = Date.now() + REGISTER_TIMEOUT_MS;
  const pending = new Set(idHashes);
  while (pending.size > 0) {
    for (const h of [...pending]) {
      const res = await fetch(`${o.root}/spchain/patients/${h}`, {
        headers: { authorization: `Bearer ${o.token}` },
      });
      const body = (await res.json()) as { registered?: boolean };
      if (res.status === 200 && body.registered) pending.delete(h);
    }
    if (pending.size === 0) break;
    if (Date.now() > deadline) {
      throw new Error(
        `${pending.size} of ${idHashes.length} patients not pinned after ${REGISTER_TIMEOUT_MS} ms`,
      );
    }
    await sleep(500);
  }
}
