/**
 * A producer process for the queue crash tests, killed by its parent with SIGKILL. It enqueues an
 * endless stream of groups (group g: `groupIds(seed, g)`), printing `acked g` once each enqueue
 * resolved; after the fifth group it leases some jobs and prints `taken id...` (never acked).
 * Usage: node crash-child.ts <embedded|bullmq> <LevelDB dir | redis url> <seed> [prefix]
 */

import { openTxQueue, type TxQueue } from '../../src/queue/index.ts';
import { openDb } from '../../src/store/db.ts';
import { groupJobs } from './crash-groups.ts';

const [kind, where, seed, prefix] = process.argv.slice(2);
if (!kind || !where || !seed)
  throw new Error('usage: crash-child.ts <kind> <where> <seed> [prefix]');

let q: TxQueue;
if (kind === 'embedded') {
  q = await openTxQueue({ db: await openDb(where) });
} else {
  q = await openTxQueue({
    redisUrl: where,
    bull: { prefix: prefix ?? 'spchain-crash', leaseMs: 1000, stalledIntervalMs: 300 },
  });
}
process.stdout.write('ready\n');
for (let g = 0; ; g++) {
  await q.enqueue(groupJobs(seed, g));
  process.stdout.write(`acked ${g}\n`);
  if (g === 4) {
    const taken = await q.take(7);
    process.stdout.write(`taken ${taken.map((d) => d.id).join(' ')}\n`);
  }
}
