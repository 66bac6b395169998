/**
 * Batches as a replica proposes and judges them (DESIGN section 4): Algorithm 2 over the
 * mempool's eligible bundles plus the evidence the proposer holds, the structural check of a
 * proposed or certified batch against the pinned state, the fairness check, and id(v) for batch
 * consensus.
 */
import { toHex } from '../crypto/bytes.ts';
import {
  type BatchContext,
  type BatchEffects,
  batchValueHash,
  decodeBatch,
  validateBatch,
} from './batch.ts';
import { checkBatchFairness, selectBatch } from './batching.ts';
import type { Equivocation } from './bft-messages.ts';
import type { ConsensusGroup } from './certificate.ts';
import { isLedgerError, OK, reject, type Verdict } from './errors.ts';
import {
  encodeEvidence,
  equivocationEvidence,
  evidenceCulprit,
  MAX_BATCH_EVIDENCE,
  MAX_BATCH_EVIDENCE_BYTES,
  verifyEquivocationEvidence,
  verifyEvidence,
} from './evidence.ts';
import { type Accounts, batchCharges, checkCharges } from './fees.ts';
import {
  batchContext,
  type ChainState,
  fitBundle,
  type Mempool,
  type MempoolEntry,
  makeEntry,
} from './replica-mempool.ts';
import { consensusGroupAt, hasPinnedEvidence, type ReputationState } from './replica-reputation.ts';
import { EMPTY_OVERLAY, type LedgerView } from './replica-view.ts';
import type { InstitutionReputation } from './reputation.ts';
import { txHashHex } from './tx.ts';
import type { Bundle, Bytes, Evidence, InstitutionIndex, TxBatch } from './types.ts';
import { internBundle } from './verify-cache.ts';

export { batchValueHash } from './batch.ts';

/** The pinned chain a replica holds; replaced as a whole whenever a batch or keyblock is pinned. */
export interface PinnedChain extends ChainState {
  readonly ledger: LedgerView;
  /** Keyblock height the latest pinned batch is anchored to: anchors never go back. */
  readonly anchor: number;
  readonly accounts: Accounts;
}

/** What a batch is judged against: the pinned chain and the reputation histories pinned with it. */
export interface PinnedState extends ReputationState {
  readonly chain: PinnedChain;
}

/**
 * validateBatch's context for the next height, for a batch anchored to keyblock `anchor`: the
 * pinned tip, the group as of the anchor, and the pinned evidence.
 */
export function pinnedBatchContext(state: PinnedState, anchor: number): BatchContext {
  return {
    ...batchContext(state.chain),
    group: consensusGroupAt(state, anchor),
    hasPinnedEvidence: (i) => hasPinnedEvidence(state, i),
  };
}

/**
 * The evidence a proposer pins: of the proofs it holds (`held`), those valid against the pinned
 * state (verifyEvidence: the culprit is not named yet, the proof checks), one per culprit in
 * culprit order, within MAX_BATCH_EVIDENCE items and MAX_BATCH_EVIDENCE_BYTES.
 */
export function selectEvidence(state: PinnedState, held: Iterable<Evidence>): Evidence[] {
  const ctx = { ...pinnedBatchContext(state, state.chain.keyblockHeight), batchValueHash };
  const byCulprit = new Map<InstitutionIndex, Evidence[]>();
  for (const e of held) {
    const i = evidenceCulprit(e);
    byCulprit.set(i, [...(byCulprit.get(i) ?? []), e]);
  }
  const out: Evidence[] = [];
  let bytes = 0;
  for (const i of [...byCulprit.keys()].sort((x, y) => x - y)) {
    if (out.length >= MAX_BATCH_EVIDENCE) break;
    for (const e of byCulprit.get(i)!) {
      const size = encodeEvidence(e).length;
      if (bytes + size > MAX_BATCH_EVIDENCE_BYTES || !verifyEvidence(e, ctx).ok) continue;
      out.push(e);
      bytes += size;
      break;
    }
  }
  return out;
}

/**
 * The batch to propose at `height` on top of `chain`: Algorithm 2 (selectBatch) over each
 * institution's eligible bundles by reputation, capped by params.maxBatchTxs, then checked bundle
 * by bundle in batch order (a bundle that no longer fits, or whose institution cannot pay its
 * fees, is left out with the rest of its institution's), and `evidence` (from selectEvidence).
 * Possibly empty, which is valid.
 */
export function assembleBatch(
  chain: PinnedChain,
  mempool: Mempool,
  reputations: readonly InstitutionReputation[],
  height: number,
  proposer: InstitutionIndex,
  evidence: readonly Evidence[] = [],
): TxBatch {
  const selected = selectBatch(
    mempool.eligible,
    reputations,
    chain.genesis.params.maxBatchTxs,
    (e) => e.bundle.txs.length,
  );
  let overlay = EMPTY_OVERLAY;
  const owed = new Map<InstitutionIndex, number>();
  const skipped = new Set<InstitutionIndex>();
  const bundles: Bundle[] = [];
  for (const { institution, item } of selected.entries) {
    if (skipped.has(institution)) continue;
    const due = item.bundle.txs.reduce((s, tx) => s + tx.fee, owed.get(institution) ?? 0);
    const fit =
      due <= (chain.accounts.get(institution) ?? 0) ? fitBundle(chain, overlay, item) : null;
    if (fit === null || !fit.verdict.ok) {
      skipped.add(institution);
      continue;
    }
    overlay = fit.overlay;
    owed.set(institution, due);
    bundles.push(item.bundle);
  }
  const { hash: prev, keyblockHeight } = chain;
  return { height, prev, keyblockHeight, proposer, bundles, evidence };
}

/** A batch checked against a pinned chain: its verdict and, when valid, what it changes. */
export interface CheckedBatch {
  readonly verdict: Verdict;
  readonly batch: TxBatch | null;
  readonly effects: BatchEffects | null;
  /** Hex hashes of its txs, in batch order (empty unless valid). */
  readonly txIds: readonly string[];
}

/**
 * Results by batch and pinned state: a proposal is checked when it arrives and again when it is
 * decided (possibly as another copy of the same bytes, or the same value rebuilt from storage).
 * Pure memoisation, keyed by the batch's value hash (its commitment, which covers every tx, bundle
 * signature and evidence item: the same hash is the same batch) and by the state: the chain is
 * replaced on every pin and the histories with it whenever they change, so the pair identifies the
 * pinned state. Bounded: only the latest values are kept.
 */
const checked = new Map<
  string,
  WeakMap<PinnedChain, { histories: PinnedState['histories']; out: CheckedBatch }>
>();
const MAX_CHECKED_VALUES = 64;

/** The key of `bytes` in `checked`, or null when they do not decode. */
function checkedKey(bytes: Bytes): string | null {
  try {
    return toHex(batchValueHash(bytes));
  } catch (err) {
    if (isLedgerError(err)) return null;
    throw err;
  }
}

function uncheckedBatch(state: PinnedState, bytes: Bytes): CheckedBatch {
  const { chain } = state;
  const fail = (verdict: Verdict, batch: TxBatch | null): CheckedBatch => ({
    verdict,
    batch,
    effects: null,
    txIds: [],
  });
  let batch: TxBatch;
  try {
    batch = decodeBatch(bytes);
  } catch (err) {
    if (!isLedgerError(err)) throw err;
    return fail({ ok: false, error: err }, null);
  }
  // Bundles that are the same data as ones seen before (held, or in an earlier proposal) are
  // judged as those objects, whose hashes and signature checks are remembered (verify-cache.ts).
  batch = { ...batch, bundles: batch.bundles.map(internBundle) };
  if (batch.keyblockHeight < chain.anchor) {
    return fail(reject('WRONG_HEIGHT', `batch anchored below keyblock ${chain.anchor}`), batch);
  }
  if (batch.keyblockHeight > chain.keyblockHeight) {
    return fail(reject('WRONG_HEIGHT', 'batch is anchored to an unpinned keyblock'), batch);
  }
  const ctx = pinnedBatchContext(state, batch.keyblockHeight);
  const { verdict, effects } = validateBatch(batch, ctx);
  if (!verdict.ok) return fail(verdict, batch);
  const charges = checkCharges(chain.accounts, batchCharges(batch), chain.genesis.params);
  if (!charges.ok) return fail(charges, batch);
  const txIds = batch.bundles.flatMap((b) => b.txs.map(txHashHex));
  return { verdict: OK, batch, effects, txIds };
}

/**
 * Everything but fairness: the bytes decode, the batch extends the pinned tip (anchored no lower
 * than the previous batch, no higher than the latest pinned keyblock), validateBatch accepts it
 * (its txs, and its evidence under the group as of its anchor and the pinned evidence), and every
 * payer covers its fees.
 */
export function checkBatch(state: PinnedState, bytes: Bytes): CheckedBatch {
  const key = checkedKey(bytes);
  if (key === null) return uncheckedBatch(state, bytes);
  let byChain = checked.get(key);
  if (byChain === undefined) {
    byChain = new WeakMap();
    if (checked.size >= MAX_CHECKED_VALUES) checked.delete(checked.keys().next().value!);
    checked.set(key, byChain);
  }
  const hit = byChain.get(state.chain);
  if (hit !== undefined && hit.histories === state.histories) return hit.out;
  const out = uncheckedBatch(state, bytes);
  byChain.set(state.chain, { histories: state.histories, out });
  return out;
}

/**
 * Algorithm 2's fairness check of a valid batch (batching.ts checkBatchFairness) against `held`,
 * the eligible bundles the validator had held for the grace period: an institution waits when the
 * batch left out any of its held bundles, and the largest of those is the item it waits with
 * (bundles are indivisible; see checkBatchFairness for why the largest).
 */
export function checkFairness(
  batch: TxBatch,
  held: ReadonlyMap<InstitutionIndex, readonly MempoolEntry[]>,
  reputations: readonly InstitutionReputation[],
  capacity: number,
): Verdict {
  const got = new Map<InstitutionIndex, number>();
  const inBatch = new Set<string>();
  for (const b of batch.bundles) {
    got.set(b.institution, (got.get(b.institution) ?? 0) + b.txs.length);
    inBatch.add(makeEntry(b, 0).id);
  }
  const waiting = new Map<InstitutionIndex, number>();
  for (const [i, entries] of held) {
    for (const e of entries) {
      // An empty bundle is refused on arrival (MALFORMED); were one held, it would need no room.
      if (inBatch.has(e.id) || e.bundle.txs.length === 0) continue;
      waiting.set(i, Math.max(waiting.get(i) ?? 0, e.bundle.txs.length));
    }
  }
  return checkBatchFairness(got, waiting, reputations, capacity);
}

/**
 * Equivocation evidence as bft.ts reports it, checked for batch consensus: both messages are from
 * the accused member, conflict, and verify under `group`; proposals sign batchValueHash (the
 * default there is H('value', v)), keyblock proposals the keyblock hash (evidence.ts).
 */
export function verifyBatchEquivocation(
  e: Equivocation,
  group: ConsensusGroup,
  chainId: string,
): Verdict {
  if (e.first.member !== e.member || e.second.member !== e.member) {
    return reject('MALFORMED', 'evidence messages are not both from the accused member');
  }
  return verifyEquivocationEvidence(equivocationEvidence(e), group, chainId, batchValueHash);
}
