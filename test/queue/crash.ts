/**
 * Runs crash-child.ts until it has acknowledged `minAcked` groups, SIGKILLs it in the middle of
 * its stream, and checks what a restarted queue holds: every acknowledged group whole, every
 * group whole or absent, and the jobs the dead process had leased delivered again.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import type { TxQueue } from '../../src/queue/index.ts';
import { groupJobs } from './crash-groups.ts';

const CHILD = fileURLToPath(new URL('./crash-child.ts', import.meta.url));

export interface KilledRun {
  readonly acked: number;
  readonly taken: readonly string[];
}

export async function runAndKill(args: string[], minAcked: number): Promise<KilledRun> {
  const child = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let acked = -1;
  let taken: string[] = [];
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => {
    stderr += b.toString();
  });
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) =>
    child.on('exit', (code, signal) => resolve(signal ?? code)),
  );
  let buffered = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (b: Buffer) => {
      buffered += b.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        if (line.startsWith('acked ')) acked = Number(line.slice(6));
        if (line.startsWith('taken ')) taken = line.slice(6).split(' ').filter(Boolean);
        if (acked >= minAcked && taken.length > 0) {
          // Kill while the stream goes on: an enqueue is in flight now.
          child.kill('SIGKILL');
          resolve();
        }
      }
    });
    exited.then((how) => reject(new Error(`crash child exited early (${how}): ${stderr}`)));
  });
  expect(await exited).toBe('SIGKILL');
  // Lines read after the kill signal was sent may still name later acknowledged groups.
  for (const line of buffered.split('\n'))
    if (line.startsWith('acked ')) acked = Number(line.slice(6));
  return { acked, taken };
}

/** Drains `q` (leasing, not acking) and checks its content against the killed run. */
export async function checkAfterCrash(q: TxQueue, seed: string, run: KilledRun): Promise<void> {
  const present = new Set<string>();
  // Leases of the dead process end on restart (embedded) or after their leaseMs (Redis).
  const end = Date.now() + 30_000;
  for (;;) {
    const got = await q.take(1000, { waitMs: 200 });
    for (const d of got) present.add(d.id);
    if (got.length === 0 && (run.taken.every((id) => present.has(id)) || Date.now() > end)) break;
  }
  for (const id of run.taken)
    expect(present.has(id), `leased job ${id} delivered again`).toBe(true);
  let total = 0;
  let partial = 0;
  // Groups past the last acknowledged one: at most the one in flight may be there.
  for (let g = 0; g <= run.acked + 3; g++) {
    const ids = groupJobs(seed, g).map((j) => j.id);
    const have = ids.filter((id) => present.has(id)).length;
    if (g <= run.acked) expect(have, `acknowledged group ${g} is whole`).toBe(ids.length);
    if (have !== 0 && have !== ids.length) partial++;
    total += have;
  }
  expect(partial, 'no group is partly there').toBe(0);
  expect(present.size, 'nothing beyond the groups written').toBe(total);
}
