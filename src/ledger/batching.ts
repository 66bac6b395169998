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
 *
 * A validator cannot see what the leader had pending, so it judges a proposal against the plain
 * proportional shares, a lower bound of the quotas whatever was pending (checkBatchFairness).
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
 * Each institution's plain proportional share of `capacity`: floor(w_i · capacity / W), with the
 * weights of batchQuotas (R · 2^40) and W the weight of every institution in `reputations`.
 *
 * It is a lower bound on the quota batchQuotas gives an institution that has more than this
 * pending, whatever the others have pending: water-filling settles an institution only at a
 * pending count no larger than its share, so the capacity per unit of weight left for the rest
 * never falls below where it started, capacity / W_open >= capacity / W (W_open counts only the
 * institutions with pending txs); an institution never settled gets at least the floor of its
 * share of that.
 */
export function proportionalShares(
  reputations: readonly InstitutionReputation[],
  capacity: number,
): Map<InstitutionIndex, number> {
  checkCount('capacity', capacity);
  const rep = reputationMap(reputations);
  const indices = [...rep.keys()].sort((x, y) => x - y);
  const w = new Map(indices.map((i) => [i, BigInt(Math.round(rep.get(i)! * WEIGHT_SCALE))]));
  const total = indices.reduce((s, i) => s + w.get(i)!, 0n);
  return new Map(
    indices.map((i) => [i, total === 0n ? 0 : Number((w.get(i)! * BigInt(capacity)) / total)]),
  );
}

/**
 * A validator's fairness check of a proposed batch (the reason to prevote nil: UNFAIR_BATCH).
 *
 * `batchCounts`: the units (txs) the batch gives each institution. `waiting`: for each institution
 * of which this validator holds items the batch left out, the size of the largest of them. Pass
 * only items held for longer than the gossip delay bound (the grace period), so that the leader
 * had them too; the largest stands for the leader's next item of that institution, which is one
 * of them when the leader had them (bundles of one institution may be found to fit in a different
 * order at different replicas, so the validator's first is not necessarily the leader's next).
 *
 * An honest leader (selectBatch over everything it has pending, a superset of what the validator
 * held) leaves an institution i with reputation > 0 waiting only when its next item
 * - did not fit in i's quota: got_i + size > quota_i >= share_i, the plain proportional share
 *   (proportionalShares: a lower bound on the quota whatever the leader had pending, given that i
 *   had more than its quota pending), and
 * - did not fit in the room the batch had left when i was offered it, so not in the room left
 *   at the end either: total + size > capacity.
 * So a batch is unfair when an institution waits with an item that fits in what is left of its
 * share, or in the room left in the batch. One item of slack is thus excused per institution:
 * items are indivisible.
 *
 * Why not water-filled quotas over the validator's own pending counts (held, or what the batch
 * gave when more): those understate the leader's, most of all at saturation, where the validator
 * has held for the grace period only part of what the leader holds (the leader's own bundles are
 * seconds old elsewhere). An institution the validator holds little of then looks capped at what
 * the batch gave it, which is whole bundles below its quota, and the water-filling shares the
 * difference out to the others: their quotas at the validator exceed the leader's by more than a
 * bundle, and an honest batch is refused (test/ledger/fairness-saturation.test.ts has the
 * numbers). A slack of one bundle of the over-served institutions does not cover that, since the
 * shortfalls of several capped institutions add up; counting only items older than the
 * over-served institutions' would not address the inflated quotas either, and would excuse
 * starving an institution whose bundles are younger. The plain share is the tightest bound that
 * holds whatever the leader had pending. What it gives up: room that an institution with little
 * pending leaves is shared out by an honest leader in proportion to reputation, but a validator
 * cannot tell whether that room was there, so a leader may give it to anyone. Every institution
 * still gets its reputation-proportional share of a full batch, less one item, whenever it has
 * that much waiting, and all of its waiting items whenever the batch has room for them.
 */
export function checkBatchFairness(
  batchCounts: Counts,
  waiting: Counts,
  reputations: readonly InstitutionReputation[],
  capacity: number,
): Verdict {
  checkCount('capacity', capacity);
  let total = 0;
  for (const [i, n] of batchCounts) {
    checkCount(`batch count of ${i}`, n);
    total += n;
  }
  for (const [i, size] of waiting) {
    if (!(Number.isSafeInteger(size) && size >= 1)) {
      throw new RangeError(`waiting item of ${i}: expected a size >= 1, got ${size}`);
    }
  }
  if (total > capacity) {
    return reject('UNFAIR_BATCH', `batch of ${total} txs exceeds capacity ${capacity}`, {
      total,
      capacity,
    });
  }
  const rep = reputationMap(reputations);
  const shares = proportionalShares(reputations, capacity);
  const got = (i: InstitutionIndex) => batchCounts.get(i) ?? 0;
  const share = (i: InstitutionIndex) => shares.get(i) ?? 0;
  const under = [...waiting]
    .filter(
      ([i, size]) =>
        got(i) + size <= share(i) || ((rep.get(i) ?? 0) > 0 && total + size <= capacity),
    )
    .map(([i]) => i)
    .sort((x, y) => x - y);
  if (under.length === 0) return OK;
  const i = under[0]!;
  const room = total + waiting.get(i)! <= capacity;
  return reject(
    'UNFAIR_BATCH',
    room
      ? `batch leaves out a waiting item of institution ${i} although it has room for it`
      : `batch gives institution ${i} ${got(i)} txs, below its proportional share ${share(i)}`,
    {
      underServed: under,
      overServed: [...batchCounts.keys()].filter((j) => got(j) > share(j)).sort((x, y) => x - y),
      shares: Object.fromEntries(shares),
      batchFull: total === capacity,
    },
  );
}
