/**
 * `npm start`: one SPChain sidecar with embedded defaults (src/http/sidecar.ts): a one-institution
 * network made under the data directory on first start and reused after, the embedded node, the
 * embedded queue unless REDIS_URL is set, the FHIR API. Prints its URLs, how to register a patient
 * and how to post a bundle; stops cleanly on SIGINT or SIGTERM (exit 0), exits 1 when it cannot
 * start (the message names what is wrong) or when the node fails.
 *
 *   node src/main.ts [--data-dir ./data] [--host 127.0.0.1] [--port 8080]
 *                    [--node-config <network>/inst-<i>/config.json]
 *
 * --node-config (or SPCHAIN_NODE_CONFIG) joins an existing network (src/node/localnet.ts makes
 * one) as the institution that config names, instead of the one-institution network.
 *
 * Environment: SPCHAIN_DATA_DIR, SPCHAIN_HOST, SPCHAIN_PORT (the flags win), REDIS_URL,
 * SPCHAIN_EHR_TOKEN (interim static bearer token; default: <data>/ehr-token), SPCHAIN_MAPPING
 * (a mapping file), SPCHAIN_BASE_URL (the FHIR base clients see), SPCHAIN_BODY_LIMIT (bytes),
 * SPCHAIN_LOG_LEVEL (info, warn, silent), SPCHAIN_DIRECTORY (JSON: member index -> the public base
 * URL of that institution's sidecar, for the patient portal).
 *
 * Logs are JSON lines on stdout (requests, node warnings and keyblocks), without patient data.
 */
import { isAbsolute, join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { parseDirectory } from './http/patient-routes.ts';
import { defaultSidecarOpts, type RunningSidecar, startSidecar } from './http/sidecar.ts';
import type { NodeEvent } from './node/events.ts';

const env = process.env;

function intOf(text: string | undefined, name: string, fallback: number): number {
  if (text === undefined || text === '') return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer`);
  return n;
}

function logLine(o: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ time: Date.now(), ...o })}\n`);
}

/** Node events worth a line: problems, keyblocks and registrations; not the per-second stats. */
function onNodeEvent(e: NodeEvent): void {
  const worth =
    e.event === 'started' ||
    e.event === 'stopped' ||
    e.event === 'warn' ||
    e.event === 'fatal' ||
    (e.event === 'keyblock' && e.registers > 0);
  if (worth) logLine({ source: 'node', ...e });
}

/** A path as typed from here: relative below the working directory, absolute elsewhere. */
function shown(path: string): string {
  const r = relative(process.cwd(), resolve(path));
  return r === '' ? '.' : r.startsWith('..') || isAbsolute(r) ? resolve(path) : r;
}

function banner(s: RunningSidecar, dataDir: string): string {
  const data = shown(dataDir);
  const token = s.tokenFile
    ? `"Authorization: Bearer $(cat ${shown(s.tokenFile)})"`
    : '"Authorization: Bearer $SPCHAIN_EHR_TOKEN"';
  return [
    '',
    `SPChain sidecar of ${s.institution.name} (institution ${s.institution.index}, network ${s.chainId})`,
    `  FHIR base   ${s.fhirBase}`,
    `  metadata    ${s.fhirBase}/metadata`,
    `  queue       ${s.queueKind}`,
    `  data        ${data}`,
    `  EHR token   ${s.tokenFile ? shown(s.tokenFile) : 'from SPCHAIN_EHR_TOKEN'} (static bearer token; SMART Backend Services also work)`,
    `  SMART       ${s.fhirBase}/.well-known/smart-configuration (clients: ${shown(join(dataDir, 'smart-clients.json'))})`,
    `  portal      ${s.url}/portal/`,
    '',
    'Register a patient first (their keys go to a key file that only the patient keeps):',
    `  SPCHAIN_PATIENT_PASSPHRASE='choose one' npm run cli -- patient register --sidecar ${s.url} --data-dir ${data} \\`,
    `    --identifier 'http://hl7.org/fhir/sid/us-ssn|999-82-1755' --birth-date 1990-01-01 --key-file patient.key.json`,
    '',
    'Then post a FHIR transaction Bundle of theirs:',
    `  curl -sS -X POST ${s.fhirBase} -H ${token} \\`,
    `    -H 'Content-Type: application/fhir+json' --data-binary @bundle.json`,
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'data-dir': { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      'node-config': { type: 'string' },
    },
    strict: true,
  });
  const dataDir = values['data-dir'] ?? env.SPCHAIN_DATA_DIR ?? defaultSidecarOpts.dataDir;
  const port = intOf(values.port ?? env.SPCHAIN_PORT, 'port', defaultSidecarOpts.port);
  let stopping = false;
  const nodeConfig = values['node-config'] ?? env.SPCHAIN_NODE_CONFIG;
  const sidecar = await startSidecar({
    dataDir,
    ...(nodeConfig ? { nodeConfig } : {}),
    host: values.host ?? env.SPCHAIN_HOST ?? defaultSidecarOpts.host,
    port,
    ...(env.REDIS_URL ? { redisUrl: env.REDIS_URL } : {}),
    ...(env.SPCHAIN_EHR_TOKEN ? { ehrToken: env.SPCHAIN_EHR_TOKEN } : {}),
    ...(env.SPCHAIN_MAPPING ? { mappingFile: env.SPCHAIN_MAPPING } : {}),
    ...(env.SPCHAIN_BASE_URL ? { baseUrl: env.SPCHAIN_BASE_URL } : {}),
    ...(env.SPCHAIN_BODY_LIMIT
      ? { bodyLimit: intOf(env.SPCHAIN_BODY_LIMIT, 'SPCHAIN_BODY_LIMIT', 0) }
      : {}),
    ...(env.SPCHAIN_LOG_LEVEL ? { logLevel: env.SPCHAIN_LOG_LEVEL } : {}),
    ...(env.SPCHAIN_DIRECTORY ? { directory: parseDirectory(env.SPCHAIN_DIRECTORY) } : {}),
    env,
    onNodeEvent,
    onWarn: (code, message) => logLine({ source: 'sidecar', event: 'warn', code, message }),
    onFatal: (err) => {
      logLine({ source: 'node', event: 'fatal', message: (err as Error).message });
      if (!stopping) process.exit(1);
    },
  });
  process.stdout.write(`${banner(sidecar, dataDir)}\n`);
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logLine({ source: 'sidecar', event: 'stopping', signal });
    sidecar.close().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`stop failed: ${(err as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

main().catch((err: unknown) => {
  const e = err as Error & { code?: string };
  process.stderr.write(`spchain sidecar: ${e.code ? `${e.code}: ` : ''}${e.message}\n`);
  process.exit(1);
});
