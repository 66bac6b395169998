/** SIGKILL of a process streaming enqueues into the embedded queue, then a restart on its LevelDB. */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { EmbeddedQueue } from '../../src/queue/index.ts';
import { openDb } from '../../src/store/db.ts';
import { checkAfterCrash, runAndKill } from './crash.ts';

it('keeps every acknowledged group, whole, and redelivers the leased jobs', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'spchain-queue-crash-'));
  try {
    for (let round = 0; round < 3; round++) {
      const seed = randomBytes(8).toString('hex');
      const run = await runAndKill(['embedded', dir, seed], 30 + 20 * round);
      expect(run.acked).toBeGreaterThanOrEqual(30);
      const db = await openDb(dir);
      try {
        const q = await EmbeddedQueue.open(db);
        await checkAfterCrash(q, seed, run);
        // Clear the round's jobs (all leased by the check) so the next round sees only its own.
        await q.close();
        const clean = await EmbeddedQueue.open(db);
        for (let got = await clean.take(1000); got.length > 0; got = await clean.take(1000)) {
          await clean.ack(got.map((d) => d.id));
        }
        expect(await clean.stats()).toEqual({ waiting: 0, active: 0, delayed: 0, failed: 0 });
        await clean.close();
      } finally {
        await db.close();
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}, 180_000);
