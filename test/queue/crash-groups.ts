/** The deterministic job groups the crash tests enqueue: both processes compute the same ids. */
import { createHash } from 'node:crypto';
import type { TxJob } from '../../src/queue/index.ts';

export function groupSize(g: number): number {
  return 1 + (g % 13);
}

export function groupJobs(seed: string, g: number): TxJob[] {
  return Array.from({ length: groupSize(g) }, (_, k) => {
    const id = createHash('sha256').update(`${seed}:${g}:${k}`).digest();
    const tx = new Uint8Array(160);
    for (let n = 0; n < tx.length; n++) tx[n] = id[n % 32]! ^ n;
    return { id: id.toString('hex'), tx, meta: { g, k } };
  });
}
