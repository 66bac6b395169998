/**
 * Batches as a replica proposes and judges them (DESIGN section 4): Algorithm 2 over the
 * mempool's eligible bundles, the structural check of a proposed or certified batch against the
 * pinned chain, the fairness check, and id(v) for batch consensus.
 */
import { toHex } from '../crypto/bytes.ts';
import { type BatchEffects, batchHash, decodeBatch, validateBatch } from './batch.ts';
import { batchQuotas, checkBatchFairness, selectBatch } from './batching.ts';
import {
  type Equivocation,
  sameContent,
  verifyEquivocation,
  verifyMessage,
} from './bft-messages.ts';
import type { ConsensusGroup } from './certificate.ts';
import { isLedgerError, OK, reject, type Verdict } from './errors.ts';
import { type Accounts, batchCharges, checkCharges } from './fees.ts';
import {
  batchContext,
  type ChainState,
  fitBundle,
  type Mempool,
  type MempoolEntry,
  makeEntry,
} from './replica-mempool.ts';
import { EMPTY_OVERLAY, type LedgerView } from './replica-view.ts';
import type { InstitutionReputation } from './reputation.ts';
import { txHash } from './tx.ts';
import type { Bundle, Bytes, InstitutionIndex, TxBatch } from './types.ts';

/** The pinned chain a replica holds; replaced as a whole whenever a batch or keyblock is pinned. */
export interface PinnedChain extends ChainState {
  readonly ledger: LedgerView;
  /** Keyblock height the latest pinned batch is anchored to: anchors never go back. */
  readonly anchor: number;
  readonly accounts: Accounts;
}

/**
 * The batch to propose at `height` on top of `chain`: Algorithm 2 (selectBatch) over each
 * institution's eligible bundles by reputation, capped by params.maxBatchTxs, then checked bundle
 * by bundle in batch order (a bundle that no longer fits, or whose institution cannot pay its
 * fees, is left out with the rest of its institution's). Possibly empty, which is valid.
 */
export function assembleBatch(
  chain: PinnedChain,
  mempool: Mempool,
  reputations: readonly InstitutionReputation[],
  height: number,
  proposer: InstitutionIndex,
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
  return { height, prev: chain.hash, keyblockHeight: chain.keyblockHeight, proposer, bundles };
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
 * Results by batch bytes and pinned chain: a proposal is checked when it arrives and again when it
 * is decided. Pure memoisation; callers must not mutate bytes once they have passed them in.
 */
const checked = new WeakMap<Bytes, WeakMap<PinnedChain, CheckedBatch>>();

function uncheckedBatch(chain: PinnedChain, bytes: Bytes): CheckedBatch {
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
  if (batch.keyblockHeight < chain.anchor) {
    return fail(reject('WRONG_HEIGHT', `batch anchored below keyblock ${chain.anchor}`), batch);
  }
  const { verdict, effects } = validateBatch(batch, batchContext(chain));
  if (!verdict.ok) return fail(verdict, batch);
  const charges = checkCharges(chain.accounts, batchCharges(batch), chain.genesis.params);
  if (!charges.ok) return fail(charges, batch);
  const txIds = batch.bundles.flatMap((b) => b.txs.map((tx) => toHex(txHash(tx))));
  return { verdict: OK, batch, effects, txIds };
}

/**
 * Everything but fairness: the bytes decode, the batch extends the pinned tip (anchored no lower
 * than the previous batch), validateBatch accepts it, and every payer covers its fees.
 */
export function checkBatch(chain: PinnedChain, bytes: Bytes): CheckedBatch {
  let byChain = checked.get(bytes);
  if (byChain === undefined) {
    byChain = new WeakMap();
    checked.set(bytes, byChain);
  }
  let out = byChain.get(chain);
  if (out === undefined) {
    out = uncheckedBatch(chain, bytes);
    byChain.set(chain, out);
  }
  return out;
}

/**
 * Algorithm 2's fairness check of a valid batch (batching.ts checkBatchFairness) against `held`,
 * the eligible bundles the validator had held for the grace period. Bundles are indivisible, so
 * an under-served institution is excused when its next held bundle fits neither in what is left of
 * its quota nor in the room left in the batch.
 */
export function checkFairness(
  batch: TxBatch,
  held: ReadonlyMap<InstitutionIndex, readonly MempoolEntry[]>,
  reputations: readonly InstitutionReputation[],
  capacity: number,
): Verdict {
  const local = new Map<InstitutionIndex, number>();
  for (const [i, es] of held)
    local.set(
      i,
      es.reduce((s, e) => s + e.bundle.txs.length, 0),
    );
  const got = new Map<InstitutionIndex, number>();
  const inBatch = new Set<string>();
  let total = 0;
  for (const b of batch.bundles) {
    got.set(b.institution, (got.get(b.institution) ?? 0) + b.txs.length);
    inBatch.add(makeEntry(b, 0).id);
    total += b.txs.length;
  }
  const verdict = checkBatchFairness(got, local, reputations, capacity);
  if (verdict.ok) return verdict;
  const under = verdict.error.detail.underServed;
  if (!Array.isArray(under)) return verdict;
  const pending = new Map(local);
  for (const [i, n] of got) pending.set(i, Math.max(n, pending.get(i) ?? 0));
  const quotas = batchQuotas(reputations, capacity, pending);
  for (const i of under as InstitutionIndex[]) {
    const next = held.get(i)?.find((e) => !inBatch.has(e.id));
    if (next === undefined) continue;
    const size = next.bundle.txs.length;
    const roomInQuota = (got.get(i) ?? 0) + size <= (quotas.get(i) ?? 0);
    if (roomInQuota || total + size <= capacity) return verdict;
  }
  return OK;
}

const valueHashes = new WeakMap<Bytes, Bytes>();

/** id(v) for batch consensus (BftContext.hashValue): the batch commitment. Throws if undecodable. */
export function batchValueHash(bytes: Bytes): Bytes {
  let hash = valueHashes.get(bytes);
  if (hash === undefined) {
    hash = batchHash(decodeBatch(bytes));
    valueHashes.set(bytes, hash);
  }
  return hash;
}

/**
 * verifyEquivocation for batch consensus: proposals sign batchValueHash (the default there is
 * H('value', v)), so two conflicting proposals are checked with it here.
 */
export function verifyBatchEquivocation(
  e: Equivocation,
  group: ConsensusGroup,
  chainId: string,
): Verdict {
  const { first: a, second: b } = e;
  if (a.type !== 'proposal' && b.type !== 'proposal') return verifyEquivocation(e, group, chainId);
  if (a.type !== 'proposal' || b.type !== 'proposal') {
    return reject('MALFORMED', 'evidence pairs a proposal with a vote');
  }
  if (a.member !== e.member || b.member !== e.member) {
    return reject('MALFORMED', 'evidence messages are not both from the accused member');
  }
  if (a.kind !== b.kind || a.height !== b.height || a.round !== b.round || sameContent(a, b)) {
    return reject('MALFORMED', 'evidence proposals do not conflict in one height and round');
  }
  for (const m of [a, b]) {
    const v = verifyMessage(m, group, chainId, batchValueHash);
    if (!v.ok) return v;
  }
  return OK;
}
