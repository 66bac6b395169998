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
import {
  consensusGroupAt,
  hasPinnedEvidence,
  type ReputationState,
  takingPartAsOf,
} from './replica-reputation.ts';
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
    // The members a batch anchored there may name, as its proposer judged them.
    members: takingPartAsOf(state, anchor),
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

/** The fees a bundle's institution pays for it. */
const feesOf = (bundle: Bundle) => bundle.txs.reduce((s, tx) => s + tx.fee, 0);

/**
 * The batch to propose at `height` on top of `chain`: Algorithm 2 (selectBatch) over each
 * institution's eligible bundles by reputation, capped by params.maxBatchTxs, checked bundle by
 * bundle in batch order, then Algorithm 2 again over what is left for the room that is left, until
 * nothing more goes in; and `evidence` (from selectEvidence). Possibly empty, which is valid.
 *
 * A bundle is left out, with the rest of its institution's for the round (its later bundles may
 * depend on it, and must not overtake it), when its institution cannot pay its fees on top of what
 * the batch already charges it, or when it does not fit on the batch so far. The first is for good
 * (the charge only grows); the second only until the batch grows, since the bundle may need one of
 * another institution's that comes later in the batch (a newcomer's record after the home's leaf
 * tx: Algorithm 2 lists institutions by index, the mempool found them to fit in arrival order). So
 * each institution's bundles are a prefix of its eligible list, as the mempool found them to fit.
 *
 * Why the later rounds: the room left-out bundles would have used must not stay empty while other
 * institutions' bundles wait beyond the first selection. A validator holding those (checkFairness)
 * refuses a batch with room for a waiting item of an institution with R > 0, so the honest batch
 * would be refused and the height go to a view change. The rounds agree with that check:
 * - the first round is selectBatch over everything eligible: an institution never left out took
 *   all that was selected of it, so its next bundle did not fit in its quota, which is no less than
 *   the plain share checkBatchFairness holds it to (proportionalShares); later rounds only add;
 * - the loop ends when Algorithm 2 over what is left selects nothing, or took everything it
 *   selected (its last pass offers the room left to every institution with R > 0, in rank order,
 *   and what does not fit then does not fit in less): then the next bundle of every institution
 *   with R > 0 is larger than the room left, or its institution cannot pay for it (checkFairness
 *   does not count it as waiting), or it does not fit on the whole batch.
 * The last case remains a disagreement: a validator cannot tell that a bundle needs one the batch
 * left out (a home's leaf tx beyond its quota) without replaying the batch's effects.
 *
 * Bounded: a round that adds nothing leaves out at least one more institution (the rounds after it
 * select among fewer), and a round that adds something takes at least one more of the finitely
 * many eligible bundles.
 */
export function assembleBatch(
  chain: PinnedChain,
  mempool: Mempool,
  reputations: readonly InstitutionReputation[],
  height: number,
  proposer: InstitutionIndex,
  evidence: readonly Evidence[] = [],
): TxBatch {
  const capacity = chain.genesis.params.maxBatchTxs;
  let overlay = EMPTY_OVERLAY;
  let size = 0;
  const owed = new Map<InstitutionIndex, number>();
  /** How many of each institution's eligible bundles the batch holds (a prefix of its list). */
  const taken = new Map<InstitutionIndex, number>();
  /** Institutions that cannot pay for their next bundle. */
  const unpaid = new Set<InstitutionIndex>();
  /** Institutions whose next bundle does not fit on the batch so far. */
  const blocked = new Set<InstitutionIndex>();
  const bundles: Bundle[] = [];
  for (;;) {
    const pending = new Map<InstitutionIndex, readonly MempoolEntry[]>();
    for (const [i, list] of mempool.eligible) {
      const n = taken.get(i) ?? 0;
      if (n < list.length && !unpaid.has(i) && !blocked.has(i)) pending.set(i, list.slice(n));
    }
    const selected = selectBatch(pending, reputations, capacity - size, (e) => e.bundle.txs.length);
    let grew = false;
    let stopped = false;
    for (const { institution, item } of selected.entries) {
      if (unpaid.has(institution) || blocked.has(institution)) continue;
      const due = (owed.get(institution) ?? 0) + feesOf(item.bundle);
      if (due > (chain.accounts.get(institution) ?? 0)) {
        unpaid.add(institution);
        stopped = true;
        continue;
      }
      const fit = fitBundle(chain, overlay, item);
      if (!fit.verdict.ok) {
        blocked.add(institution);
        stopped = true;
        continue;
      }
      overlay = fit.overlay;
      owed.set(institution, due);
      taken.set(institution, (taken.get(institution) ?? 0) + 1);
      size += item.bundle.txs.length;
      bundles.push(item.bundle);
      grew = true;
    }
    // Nothing left out this round: what Algorithm 2 did not select fits in no room that is left,
    // unless a blocked institution's bundle fits now.
    if (!stopped && !(grew && blocked.size > 0)) break;
    if (grew) blocked.clear();
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
 *
 * With `accounts` (the pinned balances, the same the proposer built on), an institution does not
 * wait when it cannot pay for the costliest of those bundles on top of what the batch charges it.
 * Eligibility does not look at balances, so every replica holds the bundles of an institution that
 * ran out of funds, and no batch can carry them (checkCharges): counted as waiting, they would get
 * every honest batch refused for as long as they are held. The costliest stands for the proposer's
 * next bundle of that institution, as the largest does for its size: an honest proposer that could
 * not pay for its next bundle (assembleBatch) is excused. What it gives up: a proposer may leave out
 * an institution that holds one bundle it cannot pay for, although it could pay for others.
 */
export function checkFairness(
  batch: TxBatch,
  held: ReadonlyMap<InstitutionIndex, readonly MempoolEntry[]>,
  reputations: readonly InstitutionReputation[],
  capacity: number,
  accounts?: Accounts,
): Verdict {
  const got = new Map<InstitutionIndex, number>();
  const charged = new Map<InstitutionIndex, number>();
  const inBatch = new Set<string>();
  for (const b of batch.bundles) {
    got.set(b.institution, (got.get(b.institution) ?? 0) + b.txs.length);
    charged.set(b.institution, (charged.get(b.institution) ?? 0) + feesOf(b));
    inBatch.add(makeEntry(b, 0).id);
  }
  const waiting = new Map<InstitutionIndex, number>();
  for (const [i, entries] of held) {
    let size = 0;
    let cost = 0;
    for (const e of entries) {
      // An empty bundle is refused on arrival (MALFORMED); were one held, it would need no room.
      if (inBatch.has(e.id) || e.bundle.txs.length === 0) continue;
      size = Math.max(size, e.bundle.txs.length);
      cost = Math.max(cost, feesOf(e.bundle));
    }
    if (size === 0) continue;
    if (accounts !== undefined && (charged.get(i) ?? 0) + cost > (accounts.get(i) ?? 0)) continue;
    waiting.set(i, size);
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
