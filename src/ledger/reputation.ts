/**
 * Reputation and the consensus group of CM = <PoW, BFT(R)> (paper 5.1; DESIGN section 4).
 *
 * Sources, and what we could and could not read:
 * - RepuCoin (Yu, Kozhaya, Decouchant, Esteves-Verissimo, IEEE Trans. Computers 2019; IACR ePrint
 *   2018/239). Its abstract defines a miner's power as "its 'reputation', as a function of its work
 *   integrated over the time of the entire blockchain, rather than through instantaneous computing
 *   power", and its authors summarise that reputation "grows based on the total amount of valid
 *   work a miner has contributed to the system over time and the regularity of that work"
 *   (finder.com.au, 2019). We did not find the text of its formula; R1 below is OUR READING of
 *   that sentence: x1 = K · L1, with K the valid keyblocks and L1 the chunks in which the
 *   institution mined at least one, so that both the amount and the regularity count and a fresh
 *   miner, however powerful, must wait for chunks to pass (x1 grows like t², not like power).
 * - SPChain (Zou, Lv, Zhao 2021; arXiv 2009.09957), Algorithm 1: we found the paper but not the
 *   algorithm's text. R2 follows DESIGN section 4: x2 = q1 · q2 · L, R2 = min(1, H · f(x2)).
 *   OUR READING of its inputs: q1 = valid keyblocks mined, q2 = valid record txs (medical and
 *   label) pinned, L = L2 = chunks in which the institution contributed a valid keyblock or a valid
 *   record tx.
 * - f(x) = (1 + (x - a) / (λ + |x - a|)) / 2 (DESIGN; paper a = 5000, λ = 20000).
 *
 * Note what the formula says at zero: f(0) = λ / (2(λ + a)) = 0.4 with the paper's values, not 0.
 * An institution with no history at all, and a pure miner with no records (q2 = 0, so x2 = 0),
 * therefore have R2 = 0.4, not 0; only H = 0 gives 0. We keep the formula as written: what ranks
 * is the order of f, which is strictly increasing, so any valid work ranks above none.
 *
 * Chunks: keyblock heights start at 1 (the genesis keyblock is height 0); chunk j (0-based) holds
 * heights j·c + 1 ... (j + 1)·c. The group that serves height h is computed from the chunks
 * completed before h, so it changes only at chunk boundaries and every node computes the same one.
 */
import type { ChainParams, InstitutionIndex } from './types.ts';

export type ReputationCurveParams = Pick<ChainParams, 'reputationA' | 'reputationLambda'>;
export type GroupParams = ReputationCurveParams & Pick<ChainParams, 'chunkSize' | 'groupSize'>;

/** Integrity H: 1, or 0 forever once misbehaviour is proven. */
export type Integrity = 0 | 1;

/** What one institution contributed in one completed chunk. */
export interface ChunkContribution {
  /** Valid keyblocks it mined in the chunk. */
  readonly keyblocks: number;
  /** Valid record txs (medical and label) of its own that were pinned in the chunk. */
  readonly records: number;
}

/** Running totals over completed chunks: everything R1 and R2 need, updated in O(1) per chunk. */
export interface Contribution {
  /** K = q1: valid keyblocks. */
  readonly keyblocks: number;
  /** q2: valid record txs. */
  readonly records: number;
  /** L1: chunks with at least one valid keyblock. */
  readonly miningChunks: number;
  /** L2: chunks with at least one valid keyblock or record tx. */
  readonly activeChunks: number;
}

export interface Reputation {
  readonly r1: number;
  readonly r2: number;
  /** R = (R1 + R2) / 2, in [0, 1]. */
  readonly r: number;
}

/** An institution's record as the ledger knows it. */
export interface InstitutionHistory {
  readonly index: InstitutionIndex;
  /** Entry j = chunk j since genesis (zeros where it did nothing); extra entries are ignored. */
  readonly chunks: readonly ChunkContribution[];
  /** Chunk in which proof of its misbehaviour was pinned; H = 0 at every later boundary. */
  readonly misbehaviourChunk?: number;
  /**
   * Chunk of the keyblock that admitted it (membership.ts); absent for genesis members. It counts
   * for reputation, quotas and the group only once that chunk is complete, so every replica in a
   * chunk judges with the same institutions whether or not it has pinned the admission yet.
   */
  readonly joinedChunk?: number;
}

/** Whether an institution counts once `completedChunks` chunks are complete. */
export function countsAt(h: InstitutionHistory, completedChunks: number): boolean {
  return h.joinedChunk === undefined || h.joinedChunk < completedChunks;
}

export interface InstitutionReputation {
  readonly index: InstitutionIndex;
  /** R in [0, 1]. */
  readonly reputation: number;
}

export const NO_CONTRIBUTION: Contribution = {
  keyblocks: 0,
  records: 0,
  miningChunks: 0,
  activeChunks: 0,
};

/**
 * f(x) = (1 + (x - a) / (λ + |x - a|)) / 2: a sigmoid-like curve with f(a) = 1/2, strictly
 * increasing, f → 1 as x → ∞, and f(0) = λ / (2(λ + a)) > 0. λ sets how slowly it saturates:
 * f(a + λ) = 3/4, f(a + 4λ) = 9/10.
 */
export function reputationCurve(x: number, params: ReputationCurveParams): number {
  const a = params.reputationA;
  const lambda = params.reputationLambda;
  if (!(Number.isFinite(x) && x >= 0))
    throw new RangeError(`x: expected a finite number >= 0, got ${x}`);
  if (!(Number.isFinite(a) && a >= 0)) throw new RangeError(`reputationA: expected >= 0, got ${a}`);
  if (!(Number.isFinite(lambda) && lambda > 0)) {
    throw new RangeError(`reputationLambda: expected > 0, got ${lambda}`);
  }
  const d = x - a;
  return (1 + d / (lambda + Math.abs(d))) / 2;
}

function checkCount(name: string, v: number): void {
  if (!(Number.isSafeInteger(v) && v >= 0)) {
    throw new RangeError(`${name}: expected a non-negative safe integer, got ${v}`);
  }
}

/** The running totals after one more completed chunk. */
export function addChunk(total: Contribution, chunk: ChunkContribution): Contribution {
  checkCount('chunk.keyblocks', chunk.keyblocks);
  checkCount('chunk.records', chunk.records);
  const mined = chunk.keyblocks > 0;
  return {
    keyblocks: total.keyblocks + chunk.keyblocks,
    records: total.records + chunk.records,
    miningChunks: total.miningChunks + (mined ? 1 : 0),
    activeChunks: total.activeChunks + (mined || chunk.records > 0 ? 1 : 0),
  };
}

/** Running totals over the first `completedChunks` chunks (all of them by default). */
export function summariseChunks(
  chunks: readonly ChunkContribution[],
  completedChunks: number = chunks.length,
): Contribution {
  let total = NO_CONTRIBUTION;
  const end = Math.min(completedChunks, chunks.length);
  for (let j = 0; j < end; j++) total = addChunk(total, chunks[j]!);
  return total;
}

/** R1 = H · f(K · L1): amount times regularity of valid keyblocks (our reading of RepuCoin). */
export function reputationR1(
  c: Contribution,
  integrity: Integrity,
  params: ReputationCurveParams,
): number {
  return integrity * reputationCurve(c.keyblocks * c.miningChunks, params);
}

/** R2 = min(1, H · f(q1 · q2 · L2)) (SPChain Algorithm 1, as DESIGN states it). */
export function reputationR2(
  c: Contribution,
  integrity: Integrity,
  params: ReputationCurveParams,
): number {
  return Math.min(1, integrity * reputationCurve(c.keyblocks * c.records * c.activeChunks, params));
}

/** R1, R2 and R = (R1 + R2) / 2. */
export function computeReputation(
  c: Contribution,
  integrity: Integrity,
  params: ReputationCurveParams,
): Reputation {
  if (integrity !== 0 && integrity !== 1) throw new RangeError(`integrity: expected 0 or 1`);
  const r1 = reputationR1(c, integrity, params);
  const r2 = reputationR2(c, integrity, params);
  return { r1, r2, r: (r1 + r2) / 2 };
}

/** H as of the boundary after `completedChunks` chunks. */
export function integrityAt(history: InstitutionHistory, completedChunks: number): Integrity {
  const m = history.misbehaviourChunk;
  return m !== undefined && m < completedChunks ? 0 : 1;
}

/** Everyone's R as of the boundary after `completedChunks` chunks, in input order. */
export function reputationsAt(
  histories: readonly InstitutionHistory[],
  completedChunks: number,
  params: ReputationCurveParams,
): InstitutionReputation[] {
  checkCount('completedChunks', completedChunks);
  return histories
    .filter((h) => countsAt(h, completedChunks))
    .map((h) => ({
      index: h.index,
      reputation: computeReputation(
        summariseChunks(h.chunks, completedChunks),
        integrityAt(h, completedChunks),
        params,
      ).r,
    }));
}

/** Higher reputation first; equal reputations by lower institution index (earlier member). */
export function compareByReputation(x: InstitutionReputation, y: InstitutionReputation): number {
  return y.reputation - x.reputation || x.index - y.index;
}

/**
 * The consensus group: the top-n institutions by R, in rank order, ties broken by the lower
 * institution index. Institutions with R = 0 (only H = 0 gives that, since f > 0) never sit in it,
 * so its size is min(n, institutions with R > 0).
 */
export function consensusGroup(
  reputations: readonly InstitutionReputation[],
  n: number,
): InstitutionIndex[] {
  if (!(Number.isSafeInteger(n) && n >= 1))
    throw new RangeError(`n: expected an integer >= 1, got ${n}`);
  const seen = new Set<InstitutionIndex>();
  for (const x of reputations) {
    if (!(Number.isFinite(x.reputation) && x.reputation >= 0 && x.reputation <= 1)) {
      throw new RangeError(`reputation of ${x.index}: expected a number in [0, 1]`);
    }
    if (seen.has(x.index))
      throw new RangeError(`reputations: institution ${x.index} appears twice`);
    seen.add(x.index);
  }
  return reputations
    .filter((x) => x.reputation > 0)
    .sort(compareByReputation)
    .slice(0, n)
    .map((x) => x.index);
}

/** Chunk (0-based) that holds keyblock height h >= 1. */
export function chunkOfHeight(height: number, chunkSize: number): number {
  if (!(Number.isSafeInteger(height) && height >= 1)) {
    throw new RangeError(`height: expected an integer >= 1, got ${height}`);
  }
  if (!(Number.isSafeInteger(chunkSize) && chunkSize >= 1)) {
    throw new RangeError(`chunkSize: expected an integer >= 1, got ${chunkSize}`);
  }
  return Math.floor((height - 1) / chunkSize);
}

/**
 * The consensus group that serves keyblock height h: computed from the reputation as of the last
 * completed chunk (the chunks before the one holding h), so it is the same for every height of a
 * chunk and nothing that happens inside the current chunk can change it.
 */
export function groupForHeight(
  height: number,
  histories: readonly InstitutionHistory[],
  params: GroupParams,
): InstitutionIndex[] {
  const completed = chunkOfHeight(height, params.chunkSize);
  return consensusGroup(reputationsAt(histories, completed, params), params.groupSize);
}
