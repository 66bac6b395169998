import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  batchQuotas,
  checkBatchFairness,
  proportionalShares,
  selectBatch,
} from '../../src/ledger/batching.ts';
import { isLedgerError } from '../../src/ledger/errors.ts';
import type { InstitutionReputation } from '../../src/ledger/reputation.ts';

const reps = (...rs: number[]): InstitutionReputation[] =>
  rs.map((reputation, index) => ({ index, reputation }));
const counts = (...cs: number[]) => new Map(cs.map((c, i) => [i, c]));
const list = (m: Map<number, number>) => [...m.values()];

describe('batchQuotas', () => {
  it('apportions capacity by reputation', () => {
    expect(list(batchQuotas(reps(0.5, 0.3, 0.2), 10))).toEqual([5, 3, 2]);
    // Equal shares 3.33...: the spare unit goes to the lowest index.
    expect(list(batchQuotas(reps(0.7, 0.7, 0.7), 10))).toEqual([4, 3, 3]);
    // 0.6 · 7 = 4.2, 0.4 · 7 = 2.8: floors 4 and 2, the spare unit to the larger remainder.
    expect(list(batchQuotas(reps(0.6, 0.4), 7))).toEqual([4, 3]);
  });

  it('redistributes what an institution with few pending txs leaves unused', () => {
    // 0 needs 1 of its 5; the other 9 split 0.3 : 0.2 = 5.4 : 3.6 → 5 + 4.
    expect(list(batchQuotas(reps(0.5, 0.3, 0.2), 10, counts(1, 100, 100)))).toEqual([1, 5, 4]);
    // Cascading: 1 then needs only 2; 2 takes the rest.
    expect(list(batchQuotas(reps(0.5, 0.3, 0.2), 10, counts(1, 2, 100)))).toEqual([1, 2, 7]);
    // Fewer pending than capacity: everyone gets everything.
    expect(list(batchQuotas(reps(0.5, 0.3, 0.2), 10, counts(2, 3, 1)))).toEqual([2, 3, 1]);
  });

  it('gives nothing to R = 0 (H = 0) or to institutions with nothing pending', () => {
    expect(list(batchQuotas(reps(0, 0.5, 0.5), 10, counts(50, 50, 0)))).toEqual([0, 10, 0]);
    expect(list(batchQuotas(reps(0, 0), 10))).toEqual([0, 0]);
    expect(list(batchQuotas(reps(0.5, 0.5), 0))).toEqual([0, 0]);
  });

  it('names bad arguments', () => {
    expect(() => batchQuotas(reps(0.5), -1)).toThrow(/capacity/);
    expect(() => batchQuotas(reps(0.5), 10, counts(1.5))).toThrow(/pending of 0/);
    expect(() => batchQuotas(reps(Number.NaN), 10)).toThrow(/reputation of 0/);
  });

  // Reputations k/1024 so that the test's integer arithmetic is exact.
  const scenario = fc
    .array(fc.record({ w: fc.nat(1024), pending: fc.nat(60) }), { minLength: 1, maxLength: 12 })
    .chain((xs) => fc.tuple(fc.constant(xs), fc.nat(300)));

  it('property: sums to min(capacity, pending), never exceeds pending, proportional within rounding', () => {
    fc.assert(
      fc.property(scenario, ([xs, capacity]) => {
        const q = list(
          batchQuotas(
            xs.map((x, index) => ({ index, reputation: x.w / 1024 })),
            capacity,
            counts(...xs.map((x) => x.pending)),
          ),
        );
        const open = xs.map((x, i) => ({ ...x, i })).filter((x) => x.w > 0 && x.pending > 0);
        const totalPending = open.reduce((s, x) => s + x.pending, 0);
        expect(q.reduce((s, v) => s + v, 0)).toBe(Math.min(capacity, totalPending));
        q.forEach((v, i) => {
          expect(v).toBeLessThanOrEqual(xs[i]!.pending);
          if (xs[i]!.w === 0) expect(v).toBe(0);
        });
        const W = open.reduce((s, x) => s + x.w, 0);
        for (const x of open) {
          // Never less than its plain proportional share unless it has fewer pending txs.
          expect(q[x.i]).toBeGreaterThanOrEqual(
            Math.min(x.pending, Math.floor((x.w * capacity) / W)),
          );
          // Anyone still short of its pending count is within one unit, in proportion, of anyone:
          // (q_i + 1) / w_i > (q_j - 1) / w_j.
          if (q[x.i]! < x.pending) {
            for (const y of open) expect((q[x.i]! + 1) * y.w).toBeGreaterThan((q[y.i]! - 1) * x.w);
          }
        }
      }),
    );
  });

  it('property: deterministic whatever the order of the reputations', () => {
    fc.assert(
      fc.property(scenario, ([xs, capacity]) => {
        const r = xs.map((x, index) => ({ index, reputation: x.w / 1024 }));
        const p = counts(...xs.map((x) => x.pending));
        expect(batchQuotas([...r].reverse(), capacity, p)).toEqual(batchQuotas(r, capacity, p));
      }),
    );
  });
});

describe('selectBatch', () => {
  it('takes each institution FIFO up to its quota', () => {
    const pending = new Map([
      [0, ['a1', 'a2', 'a3', 'a4', 'a5', 'a6']],
      [1, ['b1', 'b2', 'b3', 'b4', 'b5', 'b6']],
      [2, ['c1']],
    ]);
    const b = selectBatch(pending, reps(0.5, 0.3, 0.2), 8);
    // Quotas: 2 has 1; 7 left split 0.5 : 0.3 = 4.375 : 2.625 → 4 + 3.
    expect(b.entries.map((e) => e.item)).toEqual(['a1', 'a2', 'a3', 'a4', 'b1', 'b2', 'b3', 'c1']);
    expect(list(b.counts)).toEqual([4, 3, 1]);
    expect(b.size).toBe(8);
  });

  it('never skips an item; room an item did not fit in goes to the next that fits, by rank', () => {
    const pending = new Map([
      [0, [{ n: 3 }, { n: 3 }]],
      [1, [{ n: 2 }, { n: 1 }]],
    ]);
    // Units pending 6 and 3; quotas of 6: 0.5 : 0.5 → 3 + 3. Institution 0 takes 3 (its next
    // item of 3 does not fit); institution 1 takes 2 + 1.
    const b = selectBatch(pending, reps(0.5, 0.5), 6, (x) => x.n);
    expect(list(b.counts)).toEqual([3, 3]);
    // Capacity 7: quotas 4 + 3 (spare unit to the lower index); 0 fits only 3, and the unit left
    // is offered in rank order but no next item has size 1.
    const c = selectBatch(pending, reps(0.5, 0.5), 7, (x) => x.n);
    expect(list(c.counts)).toEqual([3, 3]);
    expect(c.size).toBe(6);
  });

  it('property: a FIFO prefix per institution, within capacity and the unit counts reported', () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.integer({ min: 1, max: 4 }), { maxLength: 10 }), {
          minLength: 1,
          maxLength: 6,
        }),
        fc.array(fc.nat(1024), { minLength: 6, maxLength: 6 }),
        fc.nat(40),
        (lists, ws, capacity) => {
          const pending = new Map(lists.map((l, i) => [i, l.map((n, k) => ({ n, k }))]));
          const b = selectBatch(
            pending,
            lists.map((_, index) => ({ index, reputation: ws[index]! / 1024 })),
            capacity,
            (x) => x.n,
          );
          expect(b.size).toBeLessThanOrEqual(capacity);
          for (const [i, items] of pending) {
            const mine = b.entries.filter((e) => e.institution === i).map((e) => e.item);
            expect(mine).toEqual(items.slice(0, mine.length));
            expect(b.counts.get(i)).toBe(mine.reduce((s, x) => s + x.n, 0));
          }
        },
      ),
    );
  });
});

describe('proportionalShares', () => {
  it('floors each reputation-proportional share of the capacity', () => {
    expect(list(proportionalShares(reps(0.5, 0.25, 0.25), 12))).toEqual([6, 3, 3]);
    // 0.625 · 7 = 4.375, 0.375 · 7 = 2.625: no largest remainder here, unlike batchQuotas (4, 3).
    expect(list(proportionalShares(reps(0.625, 0.375), 7))).toEqual([4, 2]);
    // The weights are R · 2^40 rounded, as in batchQuotas: 0.9 of 1.8 comes out a hair below a
    // half, so its share of 12 is 5 (batchQuotas gives it the spare unit: 6, 4, 2).
    expect(list(proportionalShares(reps(0.9, 0.6, 0.3), 12))).toEqual([5, 4, 2]);
    expect(list(proportionalShares(reps(0, 0), 10))).toEqual([0, 0]);
    expect(() => proportionalShares(reps(0.5), -1)).toThrow(/capacity/);
  });

  it('property: a lower bound on the quota of anyone with more pending, whatever the others have', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ w: fc.nat(1024), pending: fc.nat(60) }), {
          minLength: 1,
          maxLength: 12,
        }),
        fc.nat(300),
        (xs, capacity) => {
          const rs = xs.map((x, index) => ({ index, reputation: x.w / 1024 }));
          const q = batchQuotas(rs, capacity, counts(...xs.map((x) => x.pending)));
          const s = proportionalShares(rs, capacity);
          xs.forEach((x, i) => {
            expect(q.get(i)!).toBeGreaterThanOrEqual(Math.min(x.pending, s.get(i)!));
          });
        },
      ),
    );
  });
});

describe('checkBatchFairness', () => {
  const r = reps(0.9, 0.6, 0.3);
  /** Single txs: an institution waits (with an item of 1) when it has more pending than it got. */
  const waitingOf = (batch: Map<number, number>, pending: Map<number, number>) =>
    new Map([...pending].filter(([i, n]) => n > (batch.get(i) ?? 0)).map(([i]) => [i, 1]));
  const check = (batch: Map<number, number>, pending: Map<number, number>, capacity = 12) =>
    checkBatchFairness(batch, waitingOf(batch, pending), r, capacity);

  it('accepts the fair batch and rejects one that starves an institution', () => {
    const pending = counts(20, 20, 20);
    const fair = batchQuotas(r, 12, pending); // 6, 4, 2
    expect(list(fair)).toEqual([6, 4, 2]);
    expect(check(fair, pending)).toEqual({ ok: true });
    const v = check(counts(8, 4, 0), pending);
    expect(v.ok).toBe(false);
    if (!v.ok) {
      expect(isLedgerError(v.error, 'UNFAIR_BATCH')).toBe(true);
      expect(v.error.detail).toMatchObject({ underServed: [2], overServed: [0], batchFull: true });
    }
  });

  it('does not blame a leader for txs the validator does not know of', () => {
    // The validator has not seen 2's txs: the leader may serve 2 or, not knowing of them either,
    // give its room to the others.
    expect(check(counts(6, 4, 2), counts(20, 20, 0))).toEqual({ ok: true });
    expect(check(counts(7, 5, 0), counts(20, 20, 0))).toEqual({ ok: true });
    // Room nobody else wanted may be filled by anyone.
    expect(check(counts(10, 2, 0), counts(20, 2, 0))).toEqual({ ok: true });
  });

  it('rejects a batch over capacity, and one that is not full while someone waits', () => {
    expect(check(counts(13), counts(20)).ok).toBe(false);
    const v = check(counts(3, 3, 0), counts(3, 3, 5));
    expect(v.ok).toBe(false);
    if (!v.ok) expect(v.error.detail).toMatchObject({ underServed: [2], batchFull: false });
  });

  it('excuses an item that fits neither in its share nor in the room left', () => {
    // 2's share is 2 and it got 0: an item of 3 does not fit in it, nor in a full batch.
    expect(checkBatchFairness(counts(8, 4, 0), new Map([[2, 3]]), r, 12)).toEqual({ ok: true });
    // With room for it (a batch of 11), the same item had to go in.
    expect(checkBatchFairness(counts(7, 4, 0), new Map([[2, 3]]), r, 14).ok).toBe(false);
    // An item of 2 fits in its share.
    expect(checkBatchFairness(counts(8, 4, 0), new Map([[2, 2]]), r, 12).ok).toBe(false);
    // 1 got 3, one below its share 4, and waits with an item of 2: excused; with an item of 1, not.
    expect(checkBatchFairness(counts(6, 3, 3), new Map([[1, 2]]), r, 12)).toEqual({ ok: true });
    expect(checkBatchFairness(counts(6, 3, 3), new Map([[1, 1]]), r, 12).ok).toBe(false);
  });

  it('names bad arguments', () => {
    expect(() => checkBatchFairness(counts(1), new Map([[0, 0]]), r, 12)).toThrow(
      /waiting item of 0/,
    );
    expect(() => checkBatchFairness(counts(-1), new Map(), r, 12)).toThrow(/batch count of 0/);
  });

  const world = fc.record({
    ws: fc.array(fc.integer({ min: 1, max: 1024 }), { minLength: 2, maxLength: 8 }),
    pending: fc.array(fc.nat(40), { minLength: 8, maxLength: 8 }),
    leader: fc.nat(7),
    capacity: fc.integer({ min: 1, max: 100 }),
  });

  it("property: the quotas of the validator's own view always pass", () => {
    fc.assert(
      fc.property(world, ({ ws, pending, capacity }) => {
        const rs = ws.map((w, index) => ({ index, reputation: w / 1024 }));
        const p = counts(...pending.slice(0, ws.length));
        const q = batchQuotas(rs, capacity, p);
        expect(checkBatchFairness(q, waitingOf(q, p), rs, capacity).ok).toBe(true);
      }),
    );
  });

  it('property: a leader that includes only its own txs fails whenever others are owed a share', () => {
    fc.assert(
      fc.property(world, ({ ws, pending, leader, capacity }) => {
        const rs = ws.map((w, index) => ({ index, reputation: w / 1024 }));
        const l = leader % ws.length;
        const p = counts(...pending.slice(0, ws.length));
        const own = new Map([[l, Math.min(p.get(l)!, capacity)]]);
        const othersPending = [...p].some(([i, n]) => i !== l && n > 0);
        const shares = proportionalShares(rs, capacity);
        const othersOwed = [...p].some(([i, n]) => i !== l && n > 0 && shares.get(i)! > 0);
        const v = checkBatchFairness(own, waitingOf(own, p), rs, capacity);
        // Others pending and the batch not full: always unfair. Full: unfair iff another one
        // pending had a share.
        if (othersPending && own.get(l)! < capacity) expect(v.ok).toBe(false);
        if (othersOwed) expect(v.ok).toBe(false);
        if (!othersPending) expect(v.ok).toBe(true);
      }),
    );
  });
});
