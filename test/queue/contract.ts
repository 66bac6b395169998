/**
 * The one contract both queues keep (src/queue/types.ts), as a suite that takes a harness: each
 * test gets fresh storage, and `open` may be called again on it (a restarted consumer).
 */
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type Delivery,
  isQueueError,
  type QueueErrorCode,
  type QueueOpts,
  type TxJob,
  type TxQueue,
} from '../../src/queue/index.ts';

export interface QueueStorage {
  /** Opens a queue on this test's storage (again: as a restarted process would). */
  open(opts: Partial<QueueOpts>): Promise<TxQueue>;
  /** Drops the storage. */
  dispose(): Promise<void>;
}

export interface QueueHarness {
  readonly name: string;
  storage(): Promise<QueueStorage>;
}

export function job(n: number, meta?: TxJob['meta']): TxJob {
  const tx = new Uint8Array(120 + (n % 50));
  tx.set(randomBytes(tx.length));
  return { id: randomBytes(32).toString('hex'), tx, ...(meta ? { meta } : {}) };
}

export function jobs(count: number, from = 0): TxJob[] {
  return Array.from({ length: count }, (_, k) => job(from + k, { n: from + k }));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Takes until `count` distinct jobs came or `deadlineMs` passed. With `ack`, each delivery is acked
 * at once (so that no lease runs out while waiting for the rest).
 */
export async function takeAll(
  q: TxQueue,
  count: number,
  opts: { ack?: boolean; deadlineMs?: number } = {},
): Promise<Delivery[]> {
  const out = new Map<string, Delivery>();
  const end = Date.now() + (opts.deadlineMs ?? 20_000);
  while (out.size < count && Date.now() < end) {
    const got = await q.take(Math.min(1000, count - out.size), { waitMs: 200 });
    if (opts.ack && got.length > 0) await q.ack(got.map((d) => d.id));
    for (const d of got) if (!out.has(d.id)) out.set(d.id, d);
  }
  return [...out.values()];
}

export async function expectQueueError(
  p: Promise<unknown> | (() => unknown),
  code: QueueErrorCode,
) {
  let err: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    err = e;
  }
  expect(isQueueError(err), `expected a QueueError ${code}, got ${String(err)}`).toBe(true);
  expect((err as { code: string }).code).toBe(code);
  return err as Error;
}

const LEASE = 1000;

export function describeQueueContract(harness: QueueHarness): void {
  describe(`TxQueue contract: ${harness.name}`, () => {
    let storage: QueueStorage;
    const opened: TxQueue[] = [];
    const open = async (opts: Partial<QueueOpts> = {}) => {
      const q = await storage.open({ leaseMs: LEASE, backoffMs: 300, maxAttempts: 3, ...opts });
      opened.push(q);
      return q;
    };

    beforeEach(async () => {
      storage = await harness.storage();
    });
    afterEach(async () => {
      for (const q of opened.splice(0)) await q.close();
      await storage.dispose();
    });

    it('delivers what was enqueued, bytes and metadata intact, in enqueue order', async () => {
      const q = await open();
      const a = jobs(5, 0);
      const b = jobs(7, 5);
      expect(await q.enqueue(a)).toEqual({ added: a.map((j) => j.id), duplicates: [] });
      expect(await q.enqueue(b)).toEqual({ added: b.map((j) => j.id), duplicates: [] });
      expect(await q.stats()).toEqual({ waiting: 12, active: 0, delayed: 0, failed: 0 });
      const got = await takeAll(q, 12);
      expect(got.map((d) => d.id)).toEqual([...a, ...b].map((j) => j.id));
      got.forEach((d, n) => {
        const want = [...a, ...b][n]!;
        expect(Buffer.from(d.tx).equals(Buffer.from(want.tx))).toBe(true);
        expect(d.meta).toEqual({ n });
        expect(d.attemptsMade).toBe(0);
        expect(d.enqueuedAt).toBeGreaterThan(Date.now() - 60_000);
      });
      expect(await q.stats()).toEqual({ waiting: 0, active: 12, delayed: 0, failed: 0 });
      expect(await q.take(5)).toEqual([]);
      const half = got.slice(0, 6).map((d) => d.id);
      expect(await q.ack(half)).toEqual({ acked: half, notLeased: [] });
      expect(await q.stats()).toEqual({ waiting: 0, active: 6, delayed: 0, failed: 0 });
    });

    it('takes at most max jobs per call', async () => {
      const q = await open();
      await q.enqueue(jobs(10));
      expect((await q.take(3)).length).toBe(3);
      expect((await q.take(4)).length).toBe(4);
      expect((await q.take(10)).length).toBe(3);
    });

    it('keeps a group consecutive when groups are enqueued concurrently', async () => {
      const q = await open();
      const groups = Array.from({ length: 6 }, (_, g) => jobs(40, 100 * g));
      await Promise.all(groups.map((g) => q.enqueue(g)));
      const got = (await takeAll(q, 240)).map((d) => d.id);
      expect(got.length).toBe(240);
      const groupOf = new Map(groups.flatMap((g, n) => g.map((j) => [j.id, n] as const)));
      const runs = got
        .map((id) => groupOf.get(id))
        .filter((g, n, all) => n === 0 || g !== all[n - 1]);
      expect(runs.length).toBe(6);
      for (const g of runs) {
        const ids = groups[g!]!.map((j) => j.id);
        const at = got.indexOf(ids[0]!);
        expect(got.slice(at, at + ids.length)).toEqual(ids);
      }
    });

    it('treats a known id as a duplicate in every state, and writes nothing for it', async () => {
      const q = await open({ maxAttempts: 1 });
      const [w, a, d, f, fresh] = jobs(5);
      await q.enqueue([w!, a!, d!, f!]);
      const taken = await q.take(3); // w, a, d leased; f waiting
      expect(taken.map((t) => t.id)).toEqual([w!.id, a!.id, d!.id]);
      await q.ack([a!.id]); // a completed
      expect(await q.fail(d!.id, 'refused by the mempool')).toBe('failed'); // d failed
      const again = { ...w!, tx: new Uint8Array([1, 2, 3]) };
      const res = await q.enqueue([again, a!, d!, fresh!]);
      expect(res).toEqual({ added: [fresh!.id], duplicates: [w!.id, a!.id, d!.id] });
      // f and fresh at once, then w when its lease ends: with the bytes of its first enqueue
      const rest = await takeAll(q, 3, { ack: true });
      expect(rest.map((r) => r.id)).toEqual([f!.id, fresh!.id, w!.id]);
      expect(Buffer.from(rest[2]!.tx).equals(Buffer.from(w!.tx))).toBe(true);
      expect(await q.stats()).toMatchObject({ failed: 1 });
    });

    it('refuses a group with any bad job, and enqueues none of it', async () => {
      const q = await open();
      const good = jobs(4);
      const cases: [unknown, RegExp][] = [
        [[...good, { ...job(9), id: 'ABC' }], /jobs\[4\]\.id must be a tx hash/],
        [[...good, { ...job(9), id: good[1]!.id }], /jobs\[4\]\.id repeats jobs\[1\]\.id/],
        [[...good, { id: job(9).id, tx: 'not bytes' }], /jobs\[4\]\.tx must be a Uint8Array/],
        [[...good, { id: job(9).id, tx: new Uint8Array(0) }], /jobs\[4\]\.tx must hold 1 to/],
        [[...good, { id: job(9).id, tx: new Uint8Array(17_000) }], /jobs\[4\]\.tx must hold 1 to/],
        [[...good, job(9, { nested: {} } as never)], /jobs\[4\]\.meta\.nested must be a string/],
        [[...good, job(9, { n: Number.NaN })], /jobs\[4\]\.meta\.n must be a finite number/],
        [[], /at least one job/],
        ['nope', /must be an array/],
      ];
      for (const [input, message] of cases) {
        const err = await expectQueueError(() => q.enqueue(input as TxJob[]), 'INVALID_JOB');
        expect(err.message).toMatch(message);
      }
      const big = await open({ maxGroupJobs: 3 });
      const err = await expectQueueError(() => big.enqueue(good), 'INVALID_JOB');
      expect(err.message).toMatch(/holds 4 jobs, at most 3/);
      expect(await q.stats()).toEqual({ waiting: 0, active: 0, delayed: 0, failed: 0 });
      expect(await q.take(10)).toEqual([]);
      await expectQueueError(() => q.take(0), 'INVALID_ARGUMENT');
      await expectQueueError(() => q.ack(['x']), 'INVALID_ARGUMENT');
      await expectQueueError(() => q.fail('x', 'r'), 'INVALID_ARGUMENT');
    });

    it('delivers a job again when its lease expires, and refuses the stale ack', async () => {
      const q = await open();
      const [j] = jobs(1);
      await q.enqueue([j!]);
      const [first] = await q.take(1);
      expect(first!.id).toBe(j!.id);
      const again = await takeAll(q, 1); // waits out the lease
      expect(again.map((d) => d.id)).toEqual([j!.id]);
      expect(again[0]!.attemptsMade).toBe(0); // an expired lease is not a failed attempt
      expect(await q.ack([j!.id])).toEqual({ acked: [j!.id], notLeased: [] });
      expect(await q.ack([j!.id])).toEqual({ acked: [], notLeased: [j!.id] });
      expect(await q.stats()).toEqual({ waiting: 0, active: 0, delayed: 0, failed: 0 });
    });

    it('refuses an ack once the lease has expired', async () => {
      const q = await open();
      const [j] = jobs(1);
      await q.enqueue([j!]);
      await q.take(1);
      await sleep(LEASE + 300);
      expect(await q.ack([j!.id])).toEqual({ acked: [], notLeased: [j!.id] });
      expect((await takeAll(q, 1)).map((d) => d.id)).toEqual([j!.id]);
    });

    it('keeps a lease alive while the consumer extends it', async () => {
      const q = await open();
      const [j] = jobs(1);
      await q.enqueue([j!]);
      await q.take(1);
      const until = Date.now() + 3 * LEASE;
      while (Date.now() < until) {
        expect(await q.extend([j!.id])).toEqual({ acked: [j!.id], notLeased: [] });
        expect(await q.take(1, { waitMs: 250 })).toEqual([]);
      }
      expect(await q.ack([j!.id])).toEqual({ acked: [j!.id], notLeased: [] });
    });

    it('delivers again every job a closed consumer had not acked', async () => {
      const q1 = await open();
      const all = jobs(8);
      await q1.enqueue(all);
      const taken = await q1.take(5);
      await q1.ack([taken[0]!.id]);
      await q1.close();
      const q2 = await open();
      const got = await takeAll(q2, 7, { ack: true });
      expect(got.map((d) => d.id).sort()).toEqual(
        all
          .slice(1)
          .map((j) => j.id)
          .sort(),
      );
      expect(await q2.stats()).toEqual({ waiting: 0, active: 0, delayed: 0, failed: 0 });
    });

    it('retries a failed job after an exponential backoff, then keeps it as failed', async () => {
      const backoffMs = 400;
      const q = await open({ backoffMs, maxAttempts: 3 });
      const [j, other] = jobs(2);
      await q.enqueue([j!, other!]);
      const [d0] = await q.take(1);
      await q.ack([(await q.take(1))[0]!.id]); // `other` done
      const reasons = ['mempool full', 'peer refused', 'invalid signature'];
      let attempt = d0!;
      for (let n = 0; n < 3; n++) {
        expect(attempt.attemptsMade).toBe(n);
        const failedAt = Date.now();
        const outcome = await q.fail(attempt.id, reasons[n]!);
        if (n === 2) {
          expect(outcome).toBe('failed');
          break;
        }
        expect(outcome).toBe('retrying');
        expect(await q.stats()).toMatchObject({ delayed: 1, active: 0 });
        const [next] = await takeAll(q, 1);
        expect(next?.id).toBe(j!.id);
        // never before its backoff: 400 ms, then 800 ms (a little slack for clock rounding)
        expect(Date.now() - failedAt).toBeGreaterThanOrEqual(backoffMs * 2 ** n - 50);
        attempt = next!;
      }
      expect(await q.stats()).toEqual({ waiting: 0, active: 0, delayed: 0, failed: 1 });
      const failed = await q.failed();
      expect(failed).toHaveLength(1);
      expect(failed[0]).toMatchObject({ id: j!.id, reason: 'invalid signature', attemptsMade: 3 });
      expect(failed[0]!.failedAt).toBeGreaterThan(Date.now() - 60_000);
      expect(await q.take(5, { waitMs: 300 })).toEqual([]);
      expect(await q.fail(j!.id, 'again')).toBe('not-leased');
    });

    it('lists failed jobs oldest first, up to a limit', async () => {
      const q = await open({ maxAttempts: 1 });
      const all = jobs(3);
      await q.enqueue(all);
      for (const d of await q.take(3)) {
        expect(await q.fail(d.id, `reason ${d.meta.n}`)).toBe('failed');
        await sleep(5);
      }
      expect((await q.failed()).map((f) => f.reason)).toEqual(['reason 0', 'reason 1', 'reason 2']);
      expect((await q.failed(2)).map((f) => f.id)).toEqual(all.slice(0, 2).map((j) => j.id));
    });

    it('wakes a waiting take when a job arrives', async () => {
      const q = await open();
      const waiting = q.take(5, { waitMs: 15_000 });
      await sleep(200);
      const [j] = jobs(1);
      await q.enqueue([j!]);
      expect((await waiting).map((d) => d.id)).toEqual([j!.id]);
    });

    it('refuses calls once closed, and lets a waiting take return', async () => {
      const q = await open();
      const waiting = q.take(1, { waitMs: 30_000 });
      await sleep(100);
      await q.close();
      expect(await waiting).toEqual([]);
      await expectQueueError(() => q.enqueue(jobs(1)), 'CLOSED');
      await expectQueueError(() => q.take(1), 'CLOSED');
      await expectQueueError(() => q.stats(), 'CLOSED');
      await q.close(); // twice is fine
    });

    it('keeps jobs across a close and reopen', async () => {
      const q1 = await open();
      const all = jobs(20);
      await q1.enqueue(all.slice(0, 10));
      await q1.enqueue(all.slice(10));
      await q1.close();
      const q2 = await open();
      expect(await q2.stats()).toEqual({ waiting: 20, active: 0, delayed: 0, failed: 0 });
      expect((await takeAll(q2, 20)).map((d) => d.id)).toEqual(all.map((j) => j.id));
      expect(await q2.enqueue(all.slice(0, 2))).toEqual({
        added: [],
        duplicates: all.slice(0, 2).map((j) => j.id),
      });
    });
  });
}
