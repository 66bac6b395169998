/**
 * Reputation as a replica keeps it (reputation.ts; DESIGN section 4): each member's contributions
 * per chunk, counted from pinned keyblocks and batches, and the misbehaviour this replica has
 * proven.
 *
 * Two views, on purpose:
 * - `pinnedReputations` and `consensusGroupOf` use pinned data only, so every replica that pinned
 *   the same chain computes the same numbers: consensus, Algorithm 2's quotas and the fairness
 *   check read these.
 * - `reputations` and `integrityOf` are this replica's own judgement: H = 0 as soon as it holds a
 *   proof. That proof is not pinned (TxBatch has no evidence field yet), and replicas that learn
 *   of it at different times would disagree on when it takes effect, so it does not move the
 *   group. Pinning evidence would let H = 0 take effect at the next chunk boundary everywhere.
 */
import type { ConsensusGroup } from './certificate.ts';
import type { ChainState } from './replica-mempool.ts';
import {
  chunkOfHeight,
  computeReputation,
  consensusGroup,
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
  readonly chain: Pick<ChainState, 'genesis' | 'members' | 'keyblockHeight'>;
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

/**
 * Chunks completed: those before the chunk of the latest pinned keyblock (a chunk stays open
 * while batches anchored to its keyblocks can still be pinned).
 */
export function completedChunks(state: ReputationState): number {
  const k = state.chain.keyblockHeight;
  return k === 0 ? 0 : chunkOfHeight(k, state.chain.genesis.params.chunkSize);
}

/** R of every member from pinned data alone, as every replica computes it. */
export function pinnedReputations(state: ReputationState): InstitutionReputation[] {
  return reputationsAt(state.histories, completedChunks(state), state.chain.genesis.params);
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
  return state.histories.map((h) => ({
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
  const reps = pinnedReputations(state);
  const rOf = new Map(reps.map((x) => [x.index, x.reputation]));
  return consensusGroup(reps, state.chain.genesis.params.groupSize).map((member) => ({
    member,
    signingKey: state.chain.members(member)!.signingKey,
    reputation: rOf.get(member)!,
  }));
}
