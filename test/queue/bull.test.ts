/**
 * The queue contract against BullMQ on the real Redis at 127.0.0.1:6379 (required: fails, never
 * skips, when it is not there), each test under its own key prefix, deleted afterwards.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { BullQueue, openTxQueue, redactRedisUrl } from '../../src/queue/index.ts';
import { describeQueueContract, expectQueueError, jobs } from './contract.ts';
import { deleteKeys, REDIS_URL, requireRedis, uniquePrefix } from './redis-helpers.ts';

beforeAll(() => requireRedis());

describeQueueContract({
  name: 'BullQueue (Redis)',
  async storage() {
    const prefix = uniquePrefix();
    return {
      open: (opts) => BullQueue.open(REDIS_URL, { ...opts, prefix, stalledIntervalMs: 300 }),
      async dispose() {
        await deleteKeys(prefix);
      },
    };
  },
});

describe('BullQueue specifics', () => {
  it('is chosen by REDIS_URL, and reports the server persistence', async () => {
    const prefix = uniquePrefix();
    const q = await openTxQueue({ redisUrl: REDIS_URL, bull: { prefix } });
    try {
      expect(q.kind).toBe('bullmq');
      const persistence = (q as BullQueue).persistence;
      expect(persistence?.appendonly).toMatch(/^(yes|no)$/);
      await q.enqueue(jobs(3));
      expect((await q.stats()).waiting).toBe(3);
    } finally {
      await q.close();
      expect(await deleteKeys(prefix)).toBeGreaterThan(0);
    }
  });

  it('refuses a malformed REDIS_URL and fails fast on an unreachable one', async () => {
    await expectQueueError(() => BullQueue.open('http://127.0.0.1:6379'), 'CONFIG');
    await expectQueueError(() => BullQueue.open('not a url'), 'CONFIG');
    // port 1 on loopback: connection refused
    const err = await expectQueueError(
      () => BullQueue.open('redis://user:secret@127.0.0.1:1', { connectTimeoutMs: 3000 }),
      'UNAVAILABLE',
    );
    expect(err.message).toContain('redis://***:***@127.0.0.1:1');
    expect(err.message).not.toContain('secret');
    expect(redactRedisUrl('redis://:pw@h:1/0')).toBe('redis://:***@h:1/0');
  });
});
