/** The queue contract against the embedded LevelDB queue, each test on a fresh database. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedQueue } from '../../src/queue/index.ts';
import { openDb } from '../../src/store/db.ts';
import { describeQueueContract } from './contract.ts';

describeQueueContract({
  name: 'EmbeddedQueue (LevelDB)',
  async storage() {
    const dir = await mkdtemp(join(tmpdir(), 'spchain-queue-'));
    const db = await openDb(dir);
    return {
      open: (opts) => EmbeddedQueue.open(db, opts),
      async dispose() {
        await db.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  },
});
