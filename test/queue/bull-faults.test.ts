/**
 * Faults around the BullMQ queue: the producer process SIGKILLed mid-stream (on the machine's
 * Redis, own prefix), and Redis itself going away and coming back (a redis-server this test starts
 * on a free port, with appendonly + appendfsync always in a temp dir; the machine's own server is
 * never stopped).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BullQueue, isQueueError, type QueueError } from '../../src/queue/index.ts';
import { takeAll } from './contract.ts';
import { checkAfterCrash, runAndKill } from './crash.ts';
import { groupJobs } from './crash-groups.ts';
import {
  deleteKeys,
  freePort,
  OwnRedis,
  REDIS_URL,
  requireRedis,
  uniquePrefix,
} from './redis-helpers.ts';

beforeAll(() => requireRedis());

it('keeps every acknowledged group whole when the producer is SIGKILLed', async () => {
  const prefix = uniquePrefix();
  try {
    const seed = randomBytes(8).toString('hex');
    const run = await runAndKill(['bullmq', REDIS_URL, seed, prefix], 40);
    const q = await BullQueue.open(REDIS_URL, { prefix, stalledIntervalMs: 300 });
    try {
      await checkAfterCrash(q, seed, run);
    } finally {
      await q.close();
    }
  } finally {
    await deleteKeys(prefix);
  }
}, 120_000);

let redis: OwnRedis;
beforeAll(async () => {
  redis = new OwnRedis(await freePort(), await mkdtemp(join(tmpdir(), 'spchain-redis-')));
  await redis.start();
});
afterAll(async () => {
  await redis?.kill();
  if (redis) await rm(redis.dir, { recursive: true, force: true });
});

it('fails fast and retryably while Redis is gone, and loses no acknowledged job', async () => {
  const seed = randomBytes(8).toString('hex');
  const q = await BullQueue.open(redis.url, {
    prefix: 'outage',
    leaseMs: 1000,
    stalledIntervalMs: 300,
    commandTimeoutMs: 3000,
  });
  try {
    expect(q.persistence).toEqual({ appendonly: 'yes', appendfsync: 'always' });
    const acked: number[] = [];
    let g = 0;
    for (; g < 10; g++) {
      await q.enqueue(groupJobs(seed, g));
      acked.push(g);
    }
    const leased = await q.take(5); // held across the outage, never acked

    // A stream of enqueues while Redis is SIGKILLed under it.
    let stop = false;
    const errors: QueueError[] = [];
    const stream = (async () => {
      while (!stop) {
        try {
          await q.enqueue(groupJobs(seed, g));
          acked.push(g);
        } catch (err) {
          if (!isQueueError(err)) throw err;
          errors.push(err);
          g++; // an unacknowledged group may or may not be there: never reused
          if (errors.length >= 3) return;
          continue;
        }
        g++;
      }
    })();
    await new Promise((r) => setTimeout(r, 150));
    await redis.kill();
    await stream;
    stop = true;
    for (const err of errors) {
      expect(err.code).toBe('UNAVAILABLE');
      expect(err.retryable).toBe(true);
      expect(err.retryAfterMs).toBeGreaterThan(0);
      expect(err.message).toContain(`127.0.0.1:${redis.port}`);
    }
    const down = await q.stats().catch((err: unknown) => err);
    expect(isQueueError(down, 'UNAVAILABLE'), 'stats fail while Redis is down').toBe(true);
    const lastAcked = acked.at(-1)!;

    await redis.start();
    // The producer reconnects on its own; an EHR would retry after Retry-After: so does this.
    let resumed = false;
    const until = Date.now() + 30_000;
    while (!resumed && Date.now() < until) {
      try {
        await q.enqueue(groupJobs(seed, g));
        acked.push(g);
        resumed = true;
      } catch (err) {
        if (!isQueueError(err, 'UNAVAILABLE')) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    expect(resumed, 'enqueue works again once Redis is back').toBe(true);

    const stats = await q.stats();
    const expected = acked.reduce((n, k) => n + groupJobs(seed, k).length, 0);
    expect(stats.waiting + stats.active).toBeGreaterThanOrEqual(expected);
    // Processing resumes: everything there is delivered (the leased jobs once their lease ran out
    // after the restart) and acked; every acknowledged group is among it, whole.
    const total = stats.waiting + stats.active;
    const got = new Set(
      (await takeAll(q, total, { ack: true, deadlineMs: 30_000 })).map((d) => d.id),
    );
    expect(got.size).toBe(total);
    for (const d of leased) expect(got.has(d.id), 'a job leased before the outage').toBe(true);
    for (const k of acked) {
      for (const j of groupJobs(seed, k)) expect(got.has(j.id), `acked group ${k}`).toBe(true);
    }
    for (let k = 0; k <= g; k++) {
      const have = groupJobs(seed, k).filter((j) => got.has(j.id)).length;
      expect([0, groupJobs(seed, k).length], `group ${k} whole or absent`).toContain(have);
    }
    expect(lastAcked).toBeGreaterThanOrEqual(9);
    expect(await q.stats()).toEqual({ waiting: 0, active: 0, delayed: 0, failed: 0 });
  } finally {
    await q.close();
  }
}, 120_000);
