/**
 * `npm start`: one SPChain sidecar with embedded defaults (src/http/sidecar.ts): a one-institution
 * network made under the data directory on first start and reused after, the embedded node, the
 * embedded queue unless REDIS_URL is set, the FHIR API. Prints its URLs, how to register a patient
 * and how to post a bundle; stops cleanly on SIGINT or SIGTERM (exit 0), exits 1 when it cannot
 * start (the message names what is wrong) or when the node fails.
 *
 *   node src/main.ts [--config sidecar.json] [--data-dir ./data] [--host 127.0.0.1] [--port 8080]
 *                    [--node-config <network>/inst-<i>/config.json] [...]   (--help lists all)
 *
 * --node-config (or SPCHAIN_NODE_CONFIG) joins an existing network (src/node/localnet.ts makes
 * one) as the institution that config names, instead of the one-institution network.
 *
 * Every option (src/config/schema.ts: the README's configuration table is made from it) comes from
 * its flag, else its environment variable (SPCHAIN_*, REDIS_URL), else the JSON configuration file
 * named by --config or SPCHAIN_CONFIG, else its default; a wrong value anywhere stops start-up
 * (exit 1) with a message naming the flag, variable or file key (src/config/load.ts).
 *
 * Logs are JSON lines on stdout (requests, node warnings and keyblocks), without patient data.
 */
import { readFile } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { helpText } from './config/docs.ts';
import { ConfigError } from './config/errors.ts';
import { configFilePath, loadConfig, wantsHelp } from './config/load.ts';
import type { SidecarConfig } from './config/schema.ts';
import type { RunningSidecar, SidecarOpts } from './http/sidecar.ts';
import type { NodeEvent } from './node/events.ts';

const env = process.env;

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

/** The configuration file named by --config or SPCHAIN_CONFIG, read (the only IO of loading). */
async function readConfigFile(path: string | undefined) {
  if (path === undefined) return undefined;
  const full = resolve(path);
  try {
    return { path: full, text: await readFile(full, 'utf8') };
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new ConfigError('BAD_CONFIG_FILE', 'config', full, `cannot be read (${why})`);
  }
}

/**
 * The sidecar's options from the loaded configuration (unset ones stay undefined: the sidecar's
 * defaults).
 */
function sidecarOptsOf(c: SidecarConfig): SidecarOpts {
  return {
    dataDir: c.dataDir,
    host: c.host,
    port: c.port,
    nodeConfig: c.nodeConfig,
    redisUrl: c.redisUrl,
    ehrToken: c.ehrToken,
    mappingFile: c.mappingFile,
    baseUrl: c.baseUrl,
    directory: c.directory,
    bodyLimit: c.bodyLimit,
    logLevel: c.logLevel,
    readyMinPeers: c.readyMinPeers,
    guessLimit: { max: c.guessLimitMax, windowMs: c.guessLimitWindowMs },
    metricsPublic: c.metricsPublic,
  };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (wantsHelp(argv)) {
    process.stdout.write(helpText());
    return;
  }
  const file = await readConfigFile(configFilePath({ env, argv }));
  const { options: config } = loadConfig({ env, argv, ...(file ? { file } : {}) });
  const dataDir = config.dataDir;
  // Loaded only now, so that --help and a wrong option answer at once.
  const { startSidecar } = await import('./http/sidecar.ts');
  let stopping = false;
  const sidecar = await startSidecar({
    ...sidecarOptsOf(config),
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
