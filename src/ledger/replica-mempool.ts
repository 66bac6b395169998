/**
 * A replica's mempool: the signed bundles it has received, held per institution in arrival order
 * (FIFO), each tagged with the time it arrived, and bounded per institution and in total (a full
 * mempool refuses the newest bundle, so memory stays bounded whatever peers send).
 *
 * Each held bundle is judged against the pinned state as soon as it can be:
 * - it FITS when it extends the pinned state plus the bundles already found to fit (its leaf
 *   sequences continue, its label targets exist, ...): it joins its institution's eligible list,
 *   which proposals and the fairness check draw on, and its effects join the overlay;
 * - it WAITS when it depends on something not held yet (an earlier seq, an unpinned patient,
 *   the leaf tx granting its writer);
 * - it is STALE when it carries a tx that is pinned or conflicts with one (a replay): dropped;
 * - it is BLAMED when it fails for a reason only its signer can be blamed for: a record tx whose
 *   chameleon opening is wrong although its seq is next in line. Only the writing institution
 *   writes its leaf, so the running hash the opening must open to is fixed by the institution's
 *   own earlier txs: a wrong opening there is a forgery, not a race. (A leaf tx's root opening
 *   can go stale when the home adds two leaves at once, so it is never blamed.)
 */
import { toHex } from '../crypto/bytes.ts';
import { merkleRoot } from '../crypto/merkle.ts';
import { type BatchTxContext, refKey, validateBatchTxs } from './batch.ts';
import { LedgerError, type LedgerErrorCode, reject, type Verdict } from './errors.ts';
import {
  applyBatchTx,
  type MemberLookup,
  type Microblock,
  type RecordLookup,
} from './microblock.ts';
import {
  EMPTY_OVERLAY,
  extendOverlay,
  type LedgerReads,
  type LedgerWrite,
  type Overlay,
  overlayReads,
  recordKey,
} from './replica-view.ts';
import { txHash } from './tx.ts';
import type { Bundle, Bytes, Genesis, InstitutionIndex } from './types.ts';

/** The pinned chain as the mempool sees it. */
export interface ChainState {
  readonly genesis: Genesis;
  readonly members: MemberLookup;
  /** Height and hash of the latest pinned batch (0 and ZERO_HASH before the first). */
  readonly height: number;
  readonly hash: Bytes;
  /** Height of the latest pinned keyblock (bundles may address its patients and older ones). */
  readonly keyblockHeight: number;
  readonly ledger: LedgerReads;
}

export interface MempoolLimits {
  readonly maxBundlesPerInstitution: number;
  readonly maxBundlesTotal: number;
}

export interface MempoolEntry {
  /** `institution:merkle root of the tx hashes`: what the bundle signature covers. */
  readonly id: string;
  readonly bundle: Bundle;
  readonly arrivedAt: number;
  /** Hex hashes of its txs, in order. */
  readonly txIds: readonly string[];
}

export interface Mempool {
  /** Every held bundle, per institution in arrival order. */
  readonly queues: ReadonlyMap<InstitutionIndex, readonly MempoolEntry[]>;
  readonly size: number;
  readonly ids: ReadonlySet<string>;
  /** The bundles that fit, per institution in the order they were found to fit. */
  readonly eligible: ReadonlyMap<InstitutionIndex, readonly MempoolEntry[]>;
  readonly eligibleIds: ReadonlySet<string>;
  /** What the eligible bundles do to the pinned state. */
  readonly overlay: Overlay;
}

/** A bundle that proves its signer misbehaved: its tx `index` fails with `code`. */
export interface Blame {
  readonly institution: InstitutionIndex;
  readonly code: LedgerErrorCode;
  readonly bundle: Bundle;
  readonly index: number;
}

export const EMPTY_MEMPOOL: Mempool = {
  queues: new Map(),
  size: 0,
  ids: new Set(),
  eligible: new Map(),
  eligibleIds: new Set(),
  overlay: EMPTY_OVERLAY,
};

export function makeEntry(bundle: Bundle, arrivedAt: number): MempoolEntry {
  const hashes = bundle.txs.map(txHash);
  return {
    id: `${bundle.institution}:${toHex(merkleRoot(hashes))}`,
    bundle,
    arrivedAt,
    txIds: hashes.map(toHex),
  };
}

/** validateBatchTxs' context: the next height on the pinned chain, read through `overlay`. */
export function batchContext(chain: ChainState, overlay: Overlay = EMPTY_OVERLAY): BatchTxContext {
  return {
    genesis: chain.genesis,
    members: chain.members,
    prevHash: chain.hash,
    height: chain.height + 1,
    pinnedKeyblockHeight: chain.keyblockHeight,
    ...overlayReads(chain.ledger, overlay),
  };
}

/** What pinning these bundles writes (`txIds` are all their tx hashes, in order). */
export function bundlesWrite(
  bundles: readonly Bundle[],
  txIds: readonly string[],
  microblocks: ReadonlyMap<string, Microblock>,
): LedgerWrite {
  const records: string[] = [];
  let k = 0;
  for (const b of bundles) {
    for (const tx of b.txs) {
      if (tx.type === 'medical') records.push(recordKey(txIds[k]!, tx.block, tx.institution));
      k++;
    }
  }
  return { microblocks, txHashes: txIds, records };
}

/** Validates one bundle on top of the pinned state and `overlay`; on success, the new overlay. */
export function fitBundle(
  chain: ChainState,
  overlay: Overlay,
  entry: MempoolEntry,
): { verdict: Verdict; overlay: Overlay } {
  const probe = {
    height: chain.height + 1,
    prev: chain.hash,
    keyblockHeight: chain.keyblockHeight,
    proposer: entry.bundle.institution,
    bundles: [entry.bundle],
  };
  const { verdict, effects } = validateBatchTxs(probe, batchContext(chain, overlay));
  if (!verdict.ok) return { verdict, overlay };
  const write = bundlesWrite([entry.bundle], entry.txIds, effects.microblocks);
  return { verdict, overlay: extendOverlay(overlay, write) };
}

type Failed = Extract<Verdict, { ok: false }>;
type Judgement =
  | { readonly kind: 'fits'; readonly overlay: Overlay }
  | { readonly kind: 'waits'; readonly verdict: Failed }
  | { readonly kind: 'stale'; readonly verdict: Failed }
  | { readonly kind: 'blamed'; readonly verdict: Failed; readonly index: number };

/**
 * The index of the bundle's first failing tx when it is a record tx with a wrong opening (see the
 * header), else -1.
 */
function failsOnRecordOpening(chain: ChainState, overlay: Overlay, bundle: Bundle): number {
  const reads = overlayReads(chain.ledger, overlay);
  const changed = new Map<string, Microblock>();
  const own = new Set<string>();
  const isRecordOf: RecordLookup = (t, ref, i) =>
    own.has(recordKey(t, ref, i)) || reads.isRecordOf(t, ref, i);
  for (const [index, tx] of bundle.txs.entries()) {
    const key = refKey(tx.block);
    const block = changed.get(key) ?? reads.microblocks.get(tx.block);
    if (block === undefined) return -1;
    const out = applyBatchTx(block, tx, chain.genesis.chainId, chain.members, isRecordOf);
    if (!out.ok) {
      const v = out.verdict;
      const forged = tx.type !== 'leaf' && !v.ok && v.error.code === 'BAD_CHAMELEON_OPENING';
      return forged ? index : -1;
    }
    changed.set(key, out.block);
    if (tx.type === 'medical') own.add(recordKey(toHex(txHash(tx)), tx.block, tx.institution));
  }
  return -1;
}

function judge(chain: ChainState, overlay: Overlay, entry: MempoolEntry): Judgement {
  if (entry.txIds.some((id) => chain.ledger.isPinnedTx(id))) {
    const error = new LedgerError('REPLAYED_TX', 'bundle carries a pinned tx');
    return { kind: 'stale', verdict: { ok: false, error } };
  }
  const fit = fitBundle(chain, overlay, entry);
  if (fit.verdict.ok) return { kind: 'fits', overlay: fit.overlay };
  const code = fit.verdict.error.code;
  if (code === 'REPLAYED_TX') return { kind: 'stale', verdict: fit.verdict };
  if (code === 'BAD_CHAMELEON_OPENING') {
    const index = failsOnRecordOpening(chain, overlay, entry.bundle);
    if (index >= 0) return { kind: 'blamed', verdict: fit.verdict, index };
  }
  return { kind: 'waits', verdict: fit.verdict };
}

/**
 * Re-judges the waiting bundles (of `only`, or of everyone) until none more fits: a bundle that
 * arrived before its predecessor fits once the predecessor does. Drops stale and blamed ones.
 */
function settle(
  chain: ChainState,
  pool: Mempool,
  only?: InstitutionIndex,
): { pool: Mempool; blamed: Blame[] } {
  let overlay = pool.overlay;
  const eligible = new Map(pool.eligible);
  const eligibleIds = new Set(pool.eligibleIds);
  const dropped = new Set<string>();
  const blamed: Blame[] = [];
  const institutions = (only === undefined ? [...pool.queues.keys()] : [only]).sort(
    (x, y) => x - y,
  );
  for (let progress = true; progress; ) {
    progress = false;
    for (const i of institutions) {
      for (const e of pool.queues.get(i) ?? []) {
        if (eligibleIds.has(e.id) || dropped.has(e.id)) continue;
        const j = judge(chain, overlay, e);
        if (j.kind === 'fits') {
          overlay = j.overlay;
          eligible.set(i, [...(eligible.get(i) ?? []), e]);
          eligibleIds.add(e.id);
          progress = true;
        } else if (j.kind !== 'waits') {
          dropped.add(e.id);
          if (j.kind === 'blamed') {
            const { index } = j;
            blamed.push({ institution: i, code: j.verdict.error.code, bundle: e.bundle, index });
          }
        }
      }
    }
  }
  if (dropped.size === 0 && eligibleIds.size === pool.eligibleIds.size) return { pool, blamed };
  const queues = new Map<InstitutionIndex, readonly MempoolEntry[]>();
  const ids = new Set<string>();
  for (const [i, q] of pool.queues) {
    const kept = q.filter((e) => !dropped.has(e.id));
    for (const e of kept) ids.add(e.id);
    if (kept.length > 0) queues.set(i, kept);
  }
  return {
    pool: { queues, size: ids.size, ids, eligible, eligibleIds, overlay },
    blamed,
  };
}

/**
 * Adds a received bundle whose signature and stateless rules the caller has checked. Refuses a
 * bundle already held, a stale one, and any bundle once its institution's queue or the whole pool
 * is full (the newest is dropped); reports a blamed one. When the bundle fits, its institution's
 * waiting bundles are retried (seq chains are per institution); bundles that wait on another
 * institution (a newcomer's records on the home's leaf tx) are retried when the pinned state moves.
 */
export function admitBundle(
  chain: ChainState,
  pool: Mempool,
  entry: MempoolEntry,
  limits: MempoolLimits,
): { pool: Mempool; verdict: Verdict; blamed: Blame[] } {
  const i = entry.bundle.institution;
  if (pool.ids.has(entry.id)) {
    return { pool, verdict: reject('REPLAYED_TX', 'bundle already held'), blamed: [] };
  }
  const queue = pool.queues.get(i) ?? [];
  if (queue.length >= limits.maxBundlesPerInstitution || pool.size >= limits.maxBundlesTotal) {
    const verdict = reject('TOO_LARGE', `mempool full: bundle of institution ${i} dropped`, {
      institution: i,
      held: queue.length,
      total: pool.size,
    });
    return { pool, verdict, blamed: [] };
  }
  const j = judge(chain, pool.overlay, entry);
  if (j.kind === 'stale') return { pool, verdict: j.verdict, blamed: [] };
  if (j.kind === 'blamed') {
    const code = j.verdict.error.code;
    const blame = { institution: i, code, bundle: entry.bundle, index: j.index };
    return { pool, verdict: j.verdict, blamed: [blame] };
  }
  const queues = new Map(pool.queues).set(i, [...queue, entry]);
  const ids = new Set(pool.ids).add(entry.id);
  let next: Mempool = { ...pool, queues, ids, size: pool.size + 1 };
  if (j.kind === 'waits') return { pool: next, verdict: { ok: true }, blamed: [] };
  next = {
    ...next,
    eligible: new Map(pool.eligible).set(i, [...(pool.eligible.get(i) ?? []), entry]),
    eligibleIds: new Set(pool.eligibleIds).add(entry.id),
    overlay: j.overlay,
  };
  const settled = settle(chain, next, i);
  return { pool: settled.pool, verdict: { ok: true }, blamed: settled.blamed };
}

/**
 * The mempool after the pinned state moved (a batch or keyblock was pinned): drops the bundles
 * that carry pinned txs and judges everything else afresh against the new state.
 */
export function rebuildMempool(
  chain: ChainState,
  pool: Mempool,
): { pool: Mempool; blamed: Blame[] } {
  const queues = new Map<InstitutionIndex, readonly MempoolEntry[]>();
  const ids = new Set<string>();
  for (const [i, q] of pool.queues) {
    const kept = q.filter((e) => !e.txIds.some((id) => chain.ledger.isPinnedTx(id)));
    for (const e of kept) ids.add(e.id);
    if (kept.length > 0) queues.set(i, kept);
  }
  const fresh: Mempool = { ...EMPTY_MEMPOOL, queues, ids, size: ids.size };
  return settle(chain, fresh);
}

/**
 * Each institution's eligible bundles that this replica has held for at least `graceMs`: the
 * longest such prefix of its eligible list (a later bundle depends on the earlier ones).
 */
export function heldBundles(
  pool: Mempool,
  now: number,
  graceMs: number,
): Map<InstitutionIndex, MempoolEntry[]> {
  const out = new Map<InstitutionIndex, MempoolEntry[]>();
  for (const [i, list] of pool.eligible) {
    const held: MempoolEntry[] = [];
    for (const e of list) {
      if (now - e.arrivedAt < graceMs) break;
      held.push(e);
    }
    if (held.length > 0) out.set(i, held);
  }
  return out;
}
