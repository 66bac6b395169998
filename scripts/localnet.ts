/**
 * npm run localnet -- --institutions 4 --dir ./data/localnet [--patients 4] [--tx-rate 10] [--reset]
 *                     [--keyblock-ms 3000] [--chunk 10] [--no-mining] [--events]
 *
 * Makes a local network's files (src/node/localnet.ts: keys, patients registered in keyblock 1,
 * genesis with a keyblock about every --keyblock-ms and --chunk keyblocks per reputation chunk,
 * peers with bindings, one config per institution) unless <dir> already holds one, then starts one
 * node process per institution on 127.0.0.1 (`node src/node/main.ts --config ...`) and prints
 * their pinned batch and keyblock heights, throughput and peers once a second, each new chunk's
 * group and reputations, and every warning (with --events: every node's JSON event lines as they
 * come, for scripts and benchmarks). A second run on the same <dir> restarts the same network with
 * its chains (--reset starts afresh). Ctrl-C stops them all.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { createLocalnet } from '../src/node/localnet.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const MAIN = join(ROOT, 'src/node/main.ts');

const { values } = parseArgs({
  options: {
    institutions: { type: 'string', default: '4' },
    dir: { type: 'string', default: './data/localnet' },
    patients: { type: 'string', default: '4' },
    'tx-rate': { type: 'string', default: '10' },
    'keyblock-ms': { type: 'string', default: '3000' },
    chunk: { type: 'string', default: '10' },
    'no-mining': { type: 'boolean', default: false },
    reset: { type: 'boolean', default: false },
    events: { type: 'boolean', default: false },
  },
  strict: true,
});

function positive(name: string, value: string, max: number): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1 || n > max) {
    console.error(`--${name} must be an integer from 1 to ${max}, got ${value}`);
    process.exit(2);
  }
  return n;
}

/** Messages for people: stderr with --events, so that stdout carries only the event lines. */
const info = (message: string) => (values.events ? console.error(message) : console.log(message));

const institutions = positive('institutions', values.institutions, 64);
const patients = positive('patients', values.patients, 1000);
const txRate = positive('tx-rate', values['tx-rate'], 100_000);
const keyblockMs = positive('keyblock-ms', values['keyblock-ms'], 86_400_000);
const chunkSize = positive('chunk', values.chunk, 1_000_000);
const dir = resolve(values.dir);

if (values.reset) rmSync(dir, { recursive: true, force: true });
let configs: string[];
if (existsSync(join(dir, 'genesis.json'))) {
  configs = readdirSync(dir)
    .filter((d) => /^inst-\d+$/.test(d))
    .sort((a, b) => Number(a.slice(5)) - Number(b.slice(5)))
    .map((d) => join(dir, d, 'config.json'));
  if (configs.length !== institutions) {
    console.error(
      `${dir} holds a network of ${configs.length} institutions; use --reset to make a new one`,
    );
    process.exit(2);
  }
  info(`restarting the network in ${dir}`);
} else {
  info(`making a network of ${institutions} institutions in ${dir} ...`);
  const net = await createLocalnet({
    institutions,
    dir,
    patientsPerInstitution: patients,
    load: { txPerSecond: txRate },
    params: { keyblockIntervalMs: keyblockMs, chunkSize },
    ...(values['no-mining'] ? { mining: null } : {}),
  });
  configs = [...net.configPaths];
  info(`chain ${net.chainId}: genesis ${net.genesisPath}, peers ${net.peersPath}`);
}

interface Status {
  height: number;
  keyblock: number;
  tps: number;
  peers: number;
  alive: boolean;
}
const status: Status[] = configs.map(() => ({
  height: 0,
  keyblock: 0,
  tps: 0,
  peers: 0,
  alive: true,
}));
const children: ChildProcess[] = [];

configs.forEach((config, i) => {
  const child = spawn(process.execPath, [MAIN, '--config', config], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  createInterface({ input: child.stdout! }).on('line', (line) => {
    if (values.events) console.log(line);
    let e: Record<string, unknown>;
    try {
      e = JSON.parse(line) as Record<string, unknown>;
    } catch {
      if (!values.events) console.log(`[${i}] ${line}`);
      return;
    }
    const s = status[i]!;
    if (e.event === 'pinned') s.height = Math.max(s.height, e.height as number);
    else if (e.event === 'keyblock') s.keyblock = Math.max(s.keyblock, e.height as number);
    else if (e.event === 'stats') {
      s.tps = e.tps as number;
      s.peers = (e.peers as number[]).length;
    } else if (values.events) {
      return;
    } else if (e.event === 'started') {
      s.height = e.height as number;
      s.keyblock = e.keyblockHeight as number;
      console.log(`[${i}] started at height ${s.height}, peer ${e.peerId}`);
    } else if (e.event === 'chunk' && i === 0) {
      console.log(
        `chunk ${e.completed} closed: group ${JSON.stringify(e.group)}, R ${JSON.stringify(e.reputations)}`,
      );
    } else if (['warn', 'fatal', 'synced', 'misbehaviour', 'stopped'].includes(e.event as string)) {
      console.log(`[${i}] ${line}`);
    }
  });
  createInterface({ input: child.stderr! }).on('line', (line) => console.error(`[${i}] ${line}`));
  child.on('exit', (code, signal) => {
    status[i]!.alive = false;
    if (!stopping) info(`[${i}] exited (${signal ?? code})`);
    if (status.every((s) => !s.alive)) process.exit(0);
  });
});

const ticker = setInterval(() => {
  if (values.events) return;
  const cell = (s: Status) => (s.alive ? String(s.height).padStart(6) : '  down');
  const kb = (s: Status) => (s.alive ? String(s.keyblock).padStart(4) : 'down');
  console.log(
    `heights ${status.map(cell).join(' ')} | keyblocks ${status.map(kb).join(' ')} | tps ${status.map((s) => s.tps.toFixed(0).padStart(5)).join(' ')} | peers ${status.map((s) => s.peers).join(' ')}`,
  );
}, 1000);

let stopping = false;
function stopAll(): void {
  if (stopping) return;
  stopping = true;
  clearInterval(ticker);
  info('stopping ...');
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  setTimeout(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    process.exit(0);
  }, 10_000).unref();
}
process.on('SIGINT', stopAll);
process.on('SIGTERM', stopAll);
// A reader that went away (`| head`) stops the network rather than orphaning it.
process.stdout.on('error', stopAll);
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
});
