/**
 * Node processes for the localnet tests: spawns `node src/node/main.ts --config ...` per
 * institution, reads the JSON event lines each prints, and keeps what the tests check: every
 * (height, hash) each node pinned, across restarts, and any height at which two nodes disagree.
 * Also the shared setup of a test network (openTestNet) and what the tests read back from a
 * stopped node's store.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { TxBatch } from '../../src/ledger/types.ts';
import { createLocalnet, type Localnet, type LocalnetOpts } from '../../src/node/localnet.ts';
import { LedgerStore } from '../../src/store/ledger-store.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const MAIN = `${ROOT}src/node/main.ts`;

export interface NodeLine {
  readonly t: number;
  readonly node: number;
  readonly event: string;
  readonly [key: string]: unknown;
}

export class NodeProc {
  readonly index: number;
  readonly configPath: string;
  child: ChildProcess | null = null;
  /** Latest pinned height reported by the current run (or at its start). */
  height = -1;
  started: NodeLine | null = null;
  /** height -> hash, from every run. */
  readonly hashes = new Map<number, string>();
  /** Pinned events of the current run that came from consensus (not sync). */
  consensusPins = 0;
  readonly lines: NodeLine[] = [];
  readonly stderr: string[] = [];
  /** Added to the process's environment (SPCHAIN_TEST_FAULTS=1 for a config with faults). */
  env: Readonly<Record<string, string>> = {};
  private exit: Promise<void> = Promise.resolve();

  constructor(index: number, configPath: string) {
    this.index = index;
    this.configPath = configPath;
  }

  get running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  start(onLine: (p: NodeProc, line: NodeLine) => void): void {
    if (this.running) throw new Error(`node ${this.index} is already running`);
    this.height = -1;
    this.started = null;
    this.consensusPins = 0;
    const child = spawn(process.execPath, [MAIN, '--config', this.configPath], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...this.env },
    });
    this.child = child;
    // 'close', not 'exit': it comes once the pipes are drained, so every line the process wrote
    // has been read when stop() resolves.
    this.exit = new Promise((resolve) => child.once('close', () => resolve()));
    createInterface({ input: child.stdout! }).on('line', (text) => {
      let line: NodeLine;
      try {
        line = JSON.parse(text) as NodeLine;
      } catch {
        this.stderr.push(`stdout: ${text}`);
        return;
      }
      if (this.lines.length > 5000) this.lines.splice(0, 1000);
      this.lines.push(line);
      if (line.event === 'started') {
        this.started = line;
        this.height = line.height as number;
      } else if (line.event === 'pinned') {
        this.height = Math.max(this.height, line.height as number);
        if (line.via === 'consensus') this.consensusPins++;
      }
      onLine(this, line);
    });
    createInterface({ input: child.stderr! }).on('line', (text) => {
      if (this.stderr.length > 200) this.stderr.shift();
      this.stderr.push(text);
    });
  }

  /** Sends `signal` and resolves once the process has exited (SIGKILL after `graceMs`). */
  async stop(signal: NodeJS.Signals, graceMs = 15_000): Promise<void> {
    const child = this.child;
    if (child === null || !this.running) return;
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await this.exit;
    clearTimeout(timer);
  }

  killNow(): void {
    if (this.running) this.child!.kill('SIGKILL');
  }

  /** Sends `signal` to the running process and returns (SIGUSR2: the partition switch). */
  signal(signal: NodeJS.Signals): void {
    if (!this.running) throw new Error(`node ${this.index} is not running`);
    this.child!.kill(signal);
  }

  /** The lines kept of one event (optionally since time `t`). */
  events(event: string, since = 0): NodeLine[] {
    return this.lines.filter((l) => l.event === event && l.t >= since);
  }

  /** The members this node last reported connected (null before its first `peers` event). */
  connected(): number[] | null {
    const last = this.lines.findLast((l) => l.event === 'peers');
    return last === undefined ? null : (last.connected as number[]);
  }
}

export class Cluster {
  readonly nodes: NodeProc[];
  /** height -> the first hash any node reported for it. */
  readonly chain = new Map<number, string>();
  readonly conflicts: string[] = [];
  readonly fatal: string[] = [];
  /** Misbehaviour any node proved: none in an honest network. */
  readonly misbehaviour: string[] = [];
  readonly warnings: string[] = [];

  private readonly listeners = new Set<(p: NodeProc, line: NodeLine) => void>();

  constructor(configPaths: readonly string[]) {
    this.nodes = configPaths.map((p, i) => new NodeProc(i, p));
  }

  /** Calls `f` on every line of every node as it arrives, until the returned function is called. */
  listen(f: (p: NodeProc, line: NodeLine) => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  private readonly onLine = (p: NodeProc, line: NodeLine) => {
    for (const f of this.listeners) f(p, line);
    if (line.event === 'fatal') this.fatal.push(`node ${p.index}: ${line.code}: ${line.message}`);
    if (line.event === 'misbehaviour')
      this.misbehaviour.push(`node ${p.index}: ${JSON.stringify(line)}`);
    if (line.event === 'warn') this.warnings.push(`node ${p.index}: ${line.code}: ${line.message}`);
    const pairs: [number, string][] = [];
    if (line.event === 'pinned') pairs.push([line.height as number, line.hash as string]);
    if (line.event === 'started' && (line.height as number) > 0) {
      pairs.push([line.height as number, line.hash as string]);
    }
    for (const [height, hash] of pairs) {
      const seen = p.hashes.get(height);
      if (seen !== undefined && seen !== hash) {
        this.conflicts.push(`node ${p.index} changed height ${height}: ${seen} -> ${hash}`);
      }
      p.hashes.set(height, hash);
      const agreed = this.chain.get(height);
      if (agreed === undefined) this.chain.set(height, hash);
      else if (agreed !== hash) {
        this.conflicts.push(`node ${p.index} pinned ${hash} at ${height}, others ${agreed}`);
      }
    }
  };

  start(i: number): void {
    this.nodes[i]!.start(this.onLine);
  }

  /** Adds (not starts) the node of another config, e.g. an institution admitted later. */
  add(configPath: string): NodeProc {
    const proc = new NodeProc(this.nodes.length, configPath);
    this.nodes.push(proc);
    return proc;
  }

  startAll(): void {
    for (let i = 0; i < this.nodes.length; i++) this.start(i);
  }

  async stopAll(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop(signal)));
  }

  killAll(): void {
    for (const n of this.nodes) n.killNow();
  }

  heights(): number[] {
    return this.nodes.map((n) => n.height);
  }

  /** The last lines of each node, for a failure message. */
  describe(): string {
    return this.nodes
      .map((n) => {
        const last = n.lines
          .filter((l) => l.event !== 'pinned')
          .slice(-6)
          .map((l) => JSON.stringify(l));
        return [
          `node ${n.index}: height ${n.height}, running ${n.running}`,
          ...last,
          ...n.stderr.slice(-5),
        ].join('\n  ');
      })
      .join('\n');
  }
}

/** Polls `cond` every 100 ms until it holds; fails naming `what` (and the cluster) after `timeoutMs`. */
export async function waitFor(
  cond: () => boolean,
  what: string,
  timeoutMs: number,
  cluster?: Cluster,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (cluster !== undefined && cluster.fatal.length > 0) {
      throw new Error(`a node failed while waiting for ${what}:\n${cluster.fatal.join('\n')}`);
    }
    if (cond()) return;
    if (Date.now() > deadline) {
      const state = cluster === undefined ? '' : `\n${cluster.describe()}`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${state}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A generated localnet in a temporary folder, with a Cluster of its (not yet started) nodes. */
export interface TestNet {
  readonly dir: string;
  readonly net: Localnet;
  readonly cluster: Cluster;
  /** Kills every node and removes the folder. */
  close(): Promise<void>;
}

export async function openTestNet(opts: Omit<LocalnetOpts, 'dir'>): Promise<TestNet> {
  const dir = mkdtempSync(join(tmpdir(), 'spchain-localnet-'));
  try {
    const net = await createLocalnet({ ...opts, dir });
    const cluster = new Cluster(net.configPaths);
    const killOnExit = () => cluster.killAll();
    process.once('exit', killOnExit);
    return {
      dir,
      net,
      cluster,
      async close() {
        if (process.env.SPCHAIN_TEST_VERBOSE) console.log(cluster.warnings.join('\n'));
        cluster.killAll();
        await Promise.all(cluster.nodes.map((n) => n.stop('SIGKILL', 1000)));
        process.removeListener('exit', killOnExit);
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** Rewrites a node's config file through `change` (e.g. to add a `faults` section). */
export async function patchConfig(
  path: string,
  change: (config: Record<string, unknown>) => void,
): Promise<void> {
  const config = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  change(config);
  await writeFile(path, `${JSON.stringify(config, null, 2)}\n`);
}

/** Every pinned batch in a stopped node's store, from height 1 up. */
export async function storedBatches(dataDir: string): Promise<TxBatch[]> {
  const store = await LedgerStore.open(join(dataDir, 'ledger'));
  try {
    const out: TxBatch[] = [];
    const tip = store.tip().batch?.height ?? 0;
    for (let h = 1; h <= tip; h++) {
      const batch = await store.getBatch(h);
      if (batch === undefined) throw new Error(`${dataDir}: batch ${h} is missing`);
      out.push(batch);
    }
    return out;
  } finally {
    await store.close();
  }
}
