/**
 * npm run bench:queue — enqueue and consume throughput of the two tx queues, in batches of 50 jobs
 * of 200 bytes (a FHIR bundle's txs), written to bench/results/queue.json. Not a test: no thresholds.
 *
 * Configurations: the embedded LevelDB queue with fsync per enqueue (the default) and without;
 * BullMQ on the machine's Redis at 127.0.0.1:6379 (its persistence as configured, reported); and
 * BullMQ on a redis-server started here with appendonly yes + appendfsync always (the setting under
 * which an acknowledged enqueue survives a Redis crash). For each: one producer awaiting each
 * batch (latency p50/p99 per batch), 8 producers at once, then one consumer taking 50 and acking.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BullQueue, EmbeddedQueue, type TxJob, type TxQueue } from '../src/queue/index.ts';
import { openDb } from '../src/store/db.ts';
import { freePort, OwnRedis } from '../test/queue/redis-helpers.ts';
import { median, printTable, writeResults } from './lib/measure.ts';

const BATCH = 50;
const BATCHES = 200;
const PRODUCERS = 8;
const TX_BYTES = 200;

function batch(): TxJob[] {
  return Array.from({ length: BATCH }, () => ({
    id: randomBytes(32).toString('hex'),
    tx: new Uint8Array(randomBytes(TX_BYTES)),
    meta: { kind: 'medical' },
  }));
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

interface Row {
  readonly queue: string;
  readonly sequential_jobs_per_s: number;
  readonly batch_p50_ms: number;
  readonly batch_p99_ms: number;
  readonly concurrent_jobs_per_s: number;
  readonly consume_jobs_per_s: number;
}

async function measure(name: string, q: TxQueue): Promise<Row> {
  const work = Array.from({ length: BATCHES }, batch);
  for (let n = 0; n < 5; n++) await q.enqueue(batch()); // warm-up
  const latencies: number[] = [];
  let t0 = performance.now();
  for (const b of work) {
    const t = performance.now();
    await q.enqueue(b);
    latencies.push(performance.now() - t);
  }
  const sequential = (BATCH * BATCHES) / ((performance.now() - t0) / 1000);

  const more = Array.from({ length: BATCHES }, batch);
  t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: PRODUCERS }, async () => {
      while (next < more.length) await q.enqueue(more[next++]!);
    }),
  );
  const concurrent = (BATCH * BATCHES) / ((performance.now() - t0) / 1000);

  t0 = performance.now();
  let consumed = 0;
  for (;;) {
    const got = await q.take(BATCH);
    if (got.length === 0) break;
    await q.ack(got.map((d) => d.id));
    consumed += got.length;
  }
  const consume = consumed / ((performance.now() - t0) / 1000);
  return {
    queue: name,
    sequential_jobs_per_s: Math.round(sequential),
    batch_p50_ms: Number(median(latencies).toFixed(2)),
    batch_p99_ms: Number(percentile(latencies, 99).toFixed(2)),
    concurrent_jobs_per_s: Math.round(concurrent),
    consume_jobs_per_s: Math.round(consume),
  };
}

const rows: Row[] = [];
const notes: Record<string, unknown> = {};
const dir = mkdtempSync(join(tmpdir(), 'spchain-bench-queue-'));
try {
  for (const syncWrites of [true, false]) {
    const db = await openDb(join(dir, `level-${syncWrites}`));
    const q = await EmbeddedQueue.open(db, { syncWrites });
    rows.push(await measure(`embedded LevelDB (fsync ${syncWrites ? 'on' : 'off'})`, q));
    await q.close();
    await db.close();
  }

  const prefix = `spchain-bench-${randomBytes(4).toString('hex')}`;
  const local = await BullQueue.open('redis://127.0.0.1:6379', { prefix });
  notes.machine_redis_persistence = local.persistence;
  rows.push(
    await measure(
      `BullMQ, 127.0.0.1:6379 (appendonly ${local.persistence?.appendonly ?? '?'})`,
      local,
    ),
  );
  await local.obliterate();
  await local.close();

  const own = new OwnRedis(await freePort(), dir);
  await own.start();
  try {
    const q = await BullQueue.open(own.url, { prefix });
    notes.own_redis_persistence = q.persistence;
    rows.push(await measure('BullMQ, own redis (appendfsync always)', q));
    await q.close();
  } finally {
    await own.kill();
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

printTable(rows as unknown as Record<string, string | number | null>[]);
writeResults('bench/results/queue.json', {
  bench: 'queue',
  date: new Date().toISOString(),
  node: process.version,
  setup: { batch_jobs: BATCH, batches: BATCHES, producers: PRODUCERS, tx_bytes: TX_BYTES },
  ...notes,
  results: rows,
});
