/**
 * Reputation as a replica keeps it (reputation.ts; DESIGN section 4): each member's contributions
 * per chunk, counted from pinned keyblocks and batches, the chunk in which pinned evidence named
 * it (misbehaviourChunk), and the misbehaviour this replica has proven.
 *
 * Two views, on purpose:
 * - `pinnedReputations` and `consensusGroupOf` use pinned data only, so every replica that pinned
 *   the same chain computes the same numbers: consensus, Algorithm 2's quotas and the fairness
 *   check read these. Proven misbehaviour enters them once a batch pins its evidence: the
 *   culprit's misbehaviourChunk is the chunk of that batch's keyblock anchor, and H = 0 from the
 *   next chunk boundary on (reputation.ts integrityAt), the same everywhere.
 * - `reputations` and `integrityOf` are this replica's own judgement: H = 0 as soon as it holds a
 *   proof, pinned or not. Replicas learn of a proof at different times, so this view never moves
 *   the group.
 */
import type { ConsensusGroup } from './certificate.ts';
import type { MemberLookup } from './microblock.ts';
import type { ChainState } from './replica-mempool.ts';
import {
  chunkOfHeight,
  computeReputation,
  consensusGroup,
  countsAt,
  type InstitutionHistory,
  type InstitutionReputation,
  type Integrity,
  integrityAt,
  reputationsAt,
  summariseChunks,
} from './reputation.ts';
import type { InstitutionIndex } from './types.ts';

/** What the reputation views read of a replica. */
export interface ReputationState {
  readonly chain: Pick<ChainState, 'genesis' | 'members' | 'roster' | 'keyblockHeight'>;
  /** Each member's contributions per chunk, from pinned data, in genesis member order. */
  readonly histories: readonly InstitutionHistory[];
  /** Institutions this replica holds proof of misbehaviour against. */
  readonly misbehaviour: ReadonlyMap<InstitutionIndex, unknown>;
}

/** The histories with `counts` added to one field of chunk `chunk`. */
export function addToChunk(
  histories: readonly InstitutionHistory[],
  chunk: number,
  counts: ReadonlyMap<InstitutionIndex, number>,
  field: 'keyblocks' | 'records',
): InstitutionHistory[] {
  return histories.map((h) => {
    const n = counts.get(h.index) ?? 0;
    if (n === 0) return h;
    const chunks = h.chunks.slice();
    while (chunks.length <= chunk) chunks.push({ keyblocks: 0, records: 0 });
    chunks[chunk] = { ...chunks[chunk]!, [field]: chunks[chunk]![field] + n };
    return { ...h, chunks };
  });
}

/** The histories with `chunk` as the misbehaviour chunk of each of `culprits` (first one wins). */
export function markMisbehaviour(
  histories: readonly InstitutionHistory[],
  culprits: ReadonlySet<InstitutionIndex>,
  chunk: number,
): InstitutionHistory[] {
  return histories.map((h) =>
    culprits.has(h.index) && h.misbehaviourChunk === undefined
      ? { ...h, misbehaviourChunk: chunk }
      : h,
  );
}

/** Whether pinned evidence names the institution (its H is 0 from the next chunk boundary on). */
export function hasPinnedEvidence(state: ReputationState, institution: InstitutionIndex): boolean {
  return state.histories.some((h) => h.index === institution && h.misbehaviourChunk !== undefined);
}

/**
 * Chunks completed: those before the chunk of the latest pinned keyblock (a chunk stays open
 * while batches anchored to its keyblocks can still be pinned).
 */
export function completedChunks(state: ReputationState): number {
  return completedAt(state.chain, state.chain.keyblockHeight);
}

/** Chunks completed once keyblock `keyblockHeight` is pinned (0 before keyblock 1). */
function completedAt(chain: ReputationState['chain'], keyblockHeight: number): number {
  return keyblockHeight === 0 ? 0 : chunkOfHeight(keyblockHeight, chain.genesis.params.chunkSize);
}

/** R of every member from pinned data alone, as every replica computes it. */
export function pinnedReputations(state: ReputationState): InstitutionReputation[] {
  return reputationsAsOf(state, state.chain.keyblockHeight);
}

/**
 * pinnedReputations as of keyblock `keyblockHeight` (at most the latest pinned one): what a
 * proposer anchored there computed, whatever later keyblocks this replica has pinned since.
 */
export function reputationsAsOf(
  state: Pick<ReputationState, 'chain' | 'histories'>,
  keyblockHeight: number,
): InstitutionReputation[] {
  const completed = completedAt(state.chain, keyblockHeight);
  return reputationsAt(state.histories, completed, state.chain.genesis.params);
}

/**
 * The members that take part as of keyblock `keyblockHeight`: every member on the roster but those
 * admitted in a chunk not complete then (reputation.ts countsAt). The mempool and the proposer
 * judge bundles with those of the latest pinned keyblock (replica.ts pinKeyblock), validators a
 * batch with those of its anchor (replica-batch.ts pinnedBatchContext): the same set for the same
 * anchor, so a bundle naming a member too new to count (a leaf for it, its own records) waits
 * outside the batch instead of getting every honest batch refused.
 */
export function takingPartAsOf(
  state: Pick<ReputationState, 'chain' | 'histories'>,
  keyblockHeight: number,
): MemberLookup {
  const { chain, histories } = state;
  if (!histories.some((h) => h.joinedChunk !== undefined)) return chain.members;
  const completed = completedAt(chain, keyblockHeight);
  const pending = new Set(histories.filter((h) => !countsAt(h, completed)).map((h) => h.index));
  const byIndex = new Map(
    chain.roster.filter((m) => !pending.has(m.index)).map((m) => [m.index, m]),
  );
  return (i) => byIndex.get(i);
}

/** H as this replica sees it: 0 once it holds proof of the institution's misbehaviour. */
export function integrityOf(state: ReputationState, institution: InstitutionIndex): Integrity {
  if (state.misbehaviour.has(institution)) return 0;
  const h = state.histories.find((x) => x.index === institution);
  return h === undefined ? 1 : integrityAt(h, completedChunks(state));
}

/** R of every member as this replica sees it: pinned contributions, H from its own proofs. */
export function reputations(state: ReputationState): InstitutionReputation[] {
  const done = completedChunks(state);
  const params = state.chain.genesis.params;
  return state.histories
    .filter((h) => countsAt(h, done))
    .map((h) => ({
      index: h.index,
      reputation: computeReputation(
        summariseChunks(h.chunks, done),
        integrityOf(state, h.index),
        params,
      ).r,
    }));
}

/** The consensus group of the current chunk: the top params.groupSize members by pinned R. */
export function consensusGroupOf(state: ReputationState): ConsensusGroup {
  return consensusGroupAt(state, state.chain.keyblockHeight);
}

/**
 * The consensus group as of keyblock `keyblockHeight` (at most the latest pinned one): computed
 * from the chunks completed before that keyblock's chunk. A batch's evidence is judged under the
 * group as of the batch's own anchor, so its validity does not depend on how many keyblocks the
 * judging replica has pinned since.
 */
export function consensusGroupAt(state: ReputationState, keyblockHeight: number): ConsensusGroup {
  const params = state.chain.genesis.params;
  const reps = reputationsAsOf(state, keyblockHeight);
  const rOf = new Map(reps.map((x) => [x.index, x.reputation]));
  return consensusGroup(reps, params.groupSize).map((member) => ({
    member,
    signingKey: state.chain.members(member)!.signingKey,
    reputation: rOf.get(member)!,
  }));
}
