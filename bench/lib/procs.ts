/**
 * Node processes for the chain benchmark: spawns `node src/node/main.ts --config ...` per
 * institution, keeps every JSON event line with the time it was read, and reads each process's CPU
 * time from /proc/<pid>/stat. Every process and temp directory made here is registered so that
 * `cleanupNow` (called on exit, Ctrl-C and errors) kills and removes them.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { createInterface } from 'node:readline';

const ROOT = new URL('../..', import.meta.url).pathname;
const MAIN = `${ROOT}src/node/main.ts`;
/** USER_HZ: clock ticks per second in /proc (100 on Linux x86). */
const TICKS = 100;

export interface EventLine {
  readonly t: number;
  readonly node: number;
  readonly event: string;
  readonly [key: string]: unknown;
}

const liveChildren = new Set<ChildProcess>();
const liveDirs = new Set<string>();

export function registerDir(dir: string): void {
  liveDirs.add(dir);
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  liveDirs.delete(dir);
}

/** Kills every node process still running and removes every temp dir (synchronous: for exit). */
export function cleanupNow(): void {
  for (const c of liveChildren) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  liveChildren.clear();
  for (const d of liveDirs) rmSync(d, { recursive: true, force: true });
  liveDirs.clear();
}

/** CPU seconds (user + system) of `pid` so far, or null once it is gone. */
export function cpuSeconds(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / TICKS; // utime, stime (fields 14 and 15)
  } catch {
    return null;
  }
}

/** Whole-machine CPU ticks from /proc/stat: busy and total, over all cores. */
export function machineTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0); // idle + iowait
  return { busy: total - idle, total };
}

export class NodeProc {
  readonly index: number;
  readonly child: ChildProcess;
  readonly lines: EventLine[] = [];
  readonly stderr: string[] = [];
  started = false;
  height = 0;
  private readonly exited: Promise<void>;

  constructor(index: number, configPath: string, nodeArgs: readonly string[] = []) {
    this.index = index;
    const child = spawn(process.execPath, [...nodeArgs, MAIN, '--config', configPath], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    liveChildren.add(child);
    this.exited = new Promise((resolve) =>
      child.once('exit', () => {
        liveChildren.delete(child);
        resolve();
      }),
    );
    createInterface({ input: child.stdout! }).on('line', (text) => {
      let line: EventLine;
      try {
        line = JSON.parse(text) as EventLine;
      } catch {
        this.stderr.push(`stdout: ${text}`);
        return;
      }
      this.lines.push(line);
      if (line.event === 'started') this.started = true;
      if (line.event === 'pinned') this.height = Math.max(this.height, line.height as number);
    });
    createInterface({ input: child.stderr! }).on('line', (text) => {
      if (this.stderr.length > 100) this.stderr.shift();
      this.stderr.push(text);
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** The last stats line at or before `t` (node clock), if any. */
  statsAt(t: number): EventLine | undefined {
    let found: EventLine | undefined;
    for (const l of this.lines) {
      if (l.event !== 'stats') continue;
      if (l.t > t) break;
      found = l;
    }
    return found;
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `cond` every 100 ms; throws naming `what` after `timeoutMs`. */
export async function waitFor(cond: () => boolean, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(100);
  }
}
