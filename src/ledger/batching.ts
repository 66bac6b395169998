/**
 * Fair tx batches (paper 5.1, Algorithm 2; DESIGN section 4): a batch takes each institution's
 * pending txs in proportion to its reputation, so a leader cannot starve the others (the paper's
 * inhibition attack: a leader that leaves out other institutions' txs to keep their reputation
 * from growing, since R2 grows with the records they get pinned).
 *
 * We did not find the text of Algorithm 2; this is OUR READING of it:
 * 1. Every institution with pending txs gets a share of the capacity in proportion to R.
 * 2. An institution with fewer pending txs than its share gets exactly what it has pending, and
 *    what it leaves unused is shared again among the others in proportion to R ("water-filling"),
 *    until nobody's share exceeds its pending count.
 * 3. The remaining shares are made integers by largest remainder (Hamilton's method): each gets the
 *    floor of its share, and the units left over go to the largest fractional parts, ties to the
 *    lower institution index. Everything iterates in index order, so the result is deterministic.
 * The quotas then sum to min(capacity, total pending), never exceed anyone's pending count, and
 * everyone not capped by its own pending count is within one tx of its exact proportional share.
 */
import { OK, reject, type Verdict } from './errors.ts';
import type { InstitutionReputation } from './reputation.ts';
import type { InstitutionIndex } from './types.ts';

export type Counts = ReadonlyMap<InstitutionIndex, number>;

const WEIGHT_SCALE = 2 ** 40;

function checkCount(name: string, v: number): void {
  if (!(Number.isSafeInteger(v) && v >= 0)) {
    throw new RangeError(`${name}: expected a non-negative safe integer, got ${v}`);
  }
}

function reputationMap(
  reputations: readonly InstitutionReputation[],
): Map<InstitutionIndex, number> {
  const m = new Map<InstitutionIndex, number>();
  for (const { index, reputation } of reputations) {
    if (!(Number.isFinite(reputation) && reputation >= 0)) {
      throw new RangeError(`reputation of ${index}: expected a finite number >= 0`);
    }
    if (m.has(index)) throw new RangeError(`reputations: institution ${index} appears twice`);
    m.set(index, reputation);
  }
  return m;
}

/**
 * Each institution's quota of a batch of `capacity` txs. With `pending`, only institutions with
 * pending txs take part and nobody gets more than it has pending; without it, the whole capacity
 * is apportioned by reputation. Institutions with R = 0 (H = 0) get nothing. Every institution in
 * `reputations` appears in the result (0 where it gets nothing).
 */
export function batchQuotas(
  reputations: readonly InstitutionReputation[],
  capacity: number,
  pending?: Counts,
): Map<InstitutionIndex, number> {
  checkCount('capacity', capacity);
  const rep = reputationMap(reputations);
  const indices = [...rep.keys()].sort((x, y) => x - y);
  const quota = new Map<InstitutionIndex, number>(indices.map((i) => [i, 0]));
  // Exact arithmetic: reputations as integers (R · 2^40, so nodes agree bit for bit and ties
  // below 2^-40 are ties), shares as the rationals w_i · left / W compared by cross-multiplying.
  const w = new Map(indices.map((i) => [i, BigInt(Math.round(rep.get(i)! * WEIGHT_SCALE))]));
  const cap = new Map<InstitutionIndex, bigint | null>();
  for (const i of indices) {
    const p = pending ? (pending.get(i) ?? 0) : null;
    if (p !== null) checkCount(`pending of ${i}`, p);
    cap.set(i, p === null ? null : BigInt(p));
  }
  const capped = (i: InstitutionIndex, units: bigint) => {
    const c = cap.get(i)!;
    return c !== null && c <= units;
  };

  // Water-filling: settle everyone whose proportional share would reach its pending count.
  let open = indices.filter((i) => w.get(i)! > 0n && cap.get(i) !== 0n);
  let left = BigInt(capacity);
  let weight = 0n;
  for (;;) {
    weight = open.reduce((s, i) => s + w.get(i)!, 0n);
    if (open.length === 0 || left === 0n) return quota;
    // i's share is w_i · left / W; it is settled when pending_i <= share, i.e. pending_i · W <= w_i · left.
    const settled = open.filter((i) => {
      const c = cap.get(i)!;
      return c !== null && c * weight <= w.get(i)! * left;
    });
    if (settled.length === 0) break;
    for (const i of settled) {
      const c = cap.get(i)!;
      quota.set(i, Number(c));
      left -= c!;
    }
    open = open.filter((i) => !settled.includes(i));
  }

  // Largest remainder among the rest. None is capped by its pending count (pending > share), so a
  // floor plus one unit still fits; the units left over number fewer than the institutions.
  const shares = open.map((i) => {
    const num = w.get(i)! * left;
    return { i, floor: num / weight, rem: num % weight };
  });
  let spare = left;
  for (const s of shares) {
    quota.set(s.i, Number(s.floor));
    spare -= s.floor;
  }
  shares.sort((x, y) => (x.rem === y.rem ? x.i - y.i : x.rem > y.rem ? -1 : 1));
  for (const s of shares) {
    if (spare === 0n) break;
    if (capped(s.i, s.floor)) continue; // cannot happen in exact arithmetic; kept as a guard
    quota.set(s.i, Number(s.floor) + 1);
    spare--;
  }
  return quota;
}

export interface BatchEntry<T> {
  readonly institution: InstitutionIndex;
  readonly item: T;
}

export interface SelectedBatch<T> {
  /** Selected items: by institution index, each institution's in its FIFO order. */
  readonly entries: readonly BatchEntry<T>[];
  /** Units (txs) taken from each institution that had pending items. */
  readonly counts: Map<InstitutionIndex, number>;
  /** Units taken in all. */
  readonly size: number;
}

/**
 * Selects a batch: quotas by `batchQuotas` over each institution's pending units, then each
 * institution's items are taken in FIFO order while they fit its quota (an item is never skipped
 * for a later one). An item carries `sizeOf(item)` units (1 by default: one tx; a bundle would be
 * its tx count). Units left unused because an item did not fit are offered, in rank order
 * (reputation, then index), to the next FIFO item of each institution that fits in what is left.
 */
export function selectBatch<T>(
  pendingByInstitution: ReadonlyMap<InstitutionIndex, readonly T[]>,
  reputations: readonly InstitutionReputation[],
  capacity: number,
  sizeOf: (item: T) => number = () => 1,
): SelectedBatch<T> {
  checkCount('capacity', capacity);
  const size = (institution: InstitutionIndex, item: T) => {
    const s = sizeOf(item);
    if (!(Number.isSafeInteger(s) && s >= 1)) {
      throw new RangeError(`size of an item of ${institution}: expected an integer >= 1, got ${s}`);
    }
    return s;
  };
  const pendingUnits = new Map<InstitutionIndex, number>();
  for (const [i, items] of pendingByInstitution) {
    pendingUnits.set(
      i,
      items.reduce((s, item) => s + size(i, item), 0),
    );
  }
  const quotas = batchQuotas(reputations, capacity, pendingUnits);
  const taken = new Map<InstitutionIndex, number>(); // items taken, per institution
  const counts = new Map<InstitutionIndex, number>();
  let used = 0;
  const takeWhileFits = (i: InstitutionIndex, budget: number) => {
    const items = pendingByInstitution.get(i) ?? [];
    let n = taken.get(i) ?? 0;
    let spent = 0;
    while (n < items.length && spent + size(i, items[n]!) <= budget) spent += size(i, items[n++]!);
    taken.set(i, n);
    counts.set(i, (counts.get(i) ?? 0) + spent);
    used += spent;
    return spent;
  };
  const institutions = [...pendingByInstitution.keys()].sort((x, y) => x - y);
  for (const i of institutions) takeWhileFits(i, quotas.get(i) ?? 0);

  const rep = reputationMap(reputations);
  const ranked = institutions
    .filter((i) => (rep.get(i) ?? 0) > 0)
    .sort((x, y) => rep.get(y)! - rep.get(x)! || x - y);
  for (const i of ranked) takeWhileFits(i, capacity - used);

  const entries: BatchEntry<T>[] = [];
  for (const i of institutions) {
    const items = pendingByInstitution.get(i)!;
    for (let k = 0; k < (taken.get(i) ?? 0); k++) entries.push({ institution: i, item: items[k]! });
  }
  return { entries, counts, size: used };
}

/**
 * A validator's fairness check of a proposed batch (the reason to prevote nil: UNFAIR_BATCH).
 *
 * `localPendingCounts` are the txs this validator itself knows to be pending, per institution.
 * Pass only txs known for longer than the gossip delay bound, so that an honest leader that had
 * not yet received them is not punished. The batch shows the leader had at least `batchCounts[i]`
 * of i's txs, so fair quotas are computed over max(local, batch) pending per institution.
 *
 * An institution is under-served when it got fewer than its fair quota. That is unfair when the
 * batch was not full (there was room) or someone else got more than its quota (its room was given
 * away); a full batch in which nobody exceeds its quota under-serves nobody, so in practice any
 * under-served institution fails the check. Taking more than the quota while nobody is
 * under-served (e.g. a leader filling room nobody else wanted) is fine.
 */
export function checkBatchFairness(
  batchCounts: Counts,
  localPendingCounts: Counts,
  reputations: readonly InstitutionReputation[],
  capacity: number,
): Verdict {
  checkCount('capacity', capacity);
  let total = 0;
  const pending = new Map<InstitutionIndex, number>();
  for (const [i, n] of localPendingCounts) {
    checkCount(`local pending of ${i}`, n);
    pending.set(i, n);
  }
  for (const [i, n] of batchCounts) {
    checkCount(`batch count of ${i}`, n);
    total += n;
    pending.set(i, Math.max(n, pending.get(i) ?? 0));
  }
  if (total > capacity) {
    return reject('UNFAIR_BATCH', `batch of ${total} txs exceeds capacity ${capacity}`, {
      total,
      capacity,
    });
  }
  const quotas = batchQuotas(reputations, capacity, pending);
  const got = (i: InstitutionIndex) => batchCounts.get(i) ?? 0;
  const over = [...batchCounts.keys()].filter((i) => got(i) > (quotas.get(i) ?? 0));
  const under = [...quotas]
    .filter(([i, q]) => (localPendingCounts.get(i) ?? 0) > got(i) && got(i) < q)
    .map(([i]) => i);
  if (under.length > 0 && (total < capacity || over.length > 0)) {
    const i = under[0]!;
    return reject(
      'UNFAIR_BATCH',
      `batch gives institution ${i} ${got(i)} txs, below its fair quota ${quotas.get(i)}`,
      {
        underServed: under,
        overServed: over,
        quotas: Object.fromEntries(quotas),
        batchFull: total === capacity,
      },
    );
  }
  return OK;
}
