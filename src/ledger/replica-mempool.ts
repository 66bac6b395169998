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
 *
 * After every pin the held bundles are judged afresh (rebuildMempool), which would cost a full
 * validation of the whole backlog per pin. A bundle's fit is therefore remembered (per bundle
 * object, see refit): what it read of each patient block and what it wrote. Judged again, a bundle
 * whose blocks hold the same leaf set and the same state of every leaf it changes, whose txs are
 * neither pinned nor held by the overlay, and whose label targets still resolve, fits with the same
 * writes on top of the blocks as they are now; anything else is validated in full. The result is
 * the same as judging every bundle in full (test/ledger/replica-mempool.test.ts compares the two).
 */
import { equalBytes, toHex } from '../crypto/bytes.ts';
import { merkleRoot } from '../crypto/merkle.ts';
import { type BatchTxContext, refKey, validateBatchTxs } from './batch.ts';
import { LedgerError, type LedgerErrorCode, OK, reject, type Verdict } from './errors.ts';
import {
  applyBatchTx,
  type LeafState,
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
import { txHash, txHashHex } from './tx.ts';
import type { BlockRef, Bundle, Bytes, Genesis, InstitutionIndex, Member } from './types.ts';
import { internBundle } from './verify-cache.ts';

/** The pinned chain as the mempool sees it. */
export interface ChainState {
  readonly genesis: Genesis;
  /** The members as of the pinned keyblock: genesis members, then those admitted (membership.ts). */
  readonly roster: readonly Member[];
  /**
   * Looks up the members of `roster` that take part now: one admitted in a chunk not complete yet
   * is on the roster but not here (replica.ts takingPart).
   */
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

/** Membership of bundle ids (the held ones, the eligible ones). */
export interface IdSet {
  has(id: string): boolean;
  readonly size: number;
}

export interface Mempool {
  /** Every held bundle, per institution in arrival order. */
  readonly queues: ReadonlyMap<InstitutionIndex, readonly MempoolEntry[]>;
  readonly size: number;
  readonly ids: IdSet;
  /** The bundles that fit, per institution in the order they were found to fit. */
  readonly eligible: ReadonlyMap<InstitutionIndex, readonly MempoolEntry[]>;
  readonly eligibleIds: IdSet;
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

// ---------------------------------------------------------------------------------------------
// Id sets: persistent like the overlay (replica-view.ts). Every set of one lineage reads one map
// of id -> the version it was added at, and sees the ids added up to its own version; adding to the
// newest set of its lineage costs O(1), adding to an older one copies what it sees first.

interface IdStore {
  readonly added: Map<string, number>;
  version: number;
}

interface VersionedIds extends IdSet {
  readonly store: IdStore | null;
  readonly version: number;
}

function versionedIds(store: IdStore | null, version: number, size: number): VersionedIds {
  return {
    store,
    version,
    size,
    has: (id) => {
      const at = store?.added.get(id);
      return at !== undefined && at <= version;
    },
  };
}

const EMPTY_IDS = versionedIds(null, 0, 0);

function idsOf(ids: Iterable<string>): VersionedIds {
  const added = new Map<string, number>();
  for (const id of ids) added.set(id, 1);
  return versionedIds({ added, version: 1 }, 1, added.size);
}

function withId(set: IdSet, id: string): IdSet {
  if (set.has(id)) return set;
  const v = set as VersionedIds;
  let store = v.store;
  if (store === null || store.version !== v.version) {
    const added = new Map<string, number>();
    for (const [k, at] of store?.added ?? []) if (at <= v.version) added.set(k, at);
    store = { added, version: v.version };
  }
  store.version = v.version + 1;
  store.added.set(id, store.version);
  return versionedIds(store, store.version, v.size + 1);
}

/**
 * The verdict on a bundle held already: one shared value, since peers send held bundles again
 * often (gossip, re-sends, proposals) and an error's stack trace costs more than the lookup.
 */
export const ALREADY_HELD: Verdict = reject('REPLAYED_TX', 'bundle already held');

export const EMPTY_MEMPOOL: Mempool = {
  queues: new Map(),
  size: 0,
  ids: EMPTY_IDS,
  eligible: new Map(),
  eligibleIds: EMPTY_IDS,
  overlay: EMPTY_OVERLAY,
};

const bundleIds = new WeakMap<Bundle, string>();

/** `institution:merkle root of the tx hashes` (memoised per bundle object). */
function bundleId(bundle: Bundle): string {
  let id = bundleIds.get(bundle);
  if (id === undefined) {
    id = `${bundle.institution}:${toHex(merkleRoot(bundle.txs.map(txHash)))}`;
    bundleIds.set(bundle, id);
  }
  return id;
}

/** The entry of a bundle arriving at `arrivedAt` (a copy of a bundle seen before is interned). */
export function makeEntry(bundle: Bundle, arrivedAt: number): MempoolEntry {
  const b = internBundle(bundle);
  return { id: bundleId(b), bundle: b, arrivedAt, txIds: b.txs.map(txHashHex) };
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

// ---------------------------------------------------------------------------------------------
// Fitting a bundle, and remembering how it fit

/** How a bundle changed one patient block: the block as it read it, and as it left it. */
interface BlockFit {
  readonly ref: BlockRef;
  readonly key: string;
  readonly input: Microblock;
  readonly output: Microblock;
}

/** The last fit of a bundle: under which genesis, its blocks in first-touch order, its records. */
interface FitMemo {
  readonly genesis: Genesis;
  readonly blocks: readonly BlockFit[];
  readonly records: readonly string[];
}

const fits = new WeakMap<Bundle, FitMemo>();

const sameLeaf = (a: LeafState, b: LeafState) =>
  a.institution === b.institution &&
  a.seq === b.seq &&
  equalBytes(a.digest, b.digest) &&
  equalBytes(a.running, b.running);

/**
 * The block a bundle that turned `input` into `output` makes of `current`, or null when that is
 * not known without validating. The bundle's txs read, of their block, the leaf set (institution
 * and digest of each leaf, in order: a leaf tx's root opening covers it, a record tx needs its
 * writer's leaf), the patient's keys, and the state (seq, running) of every leaf they append to;
 * they change those leaves (new objects) and append new ones. So when `current` is the same
 * patient block with the same leaf set and keys, and every leaf the bundle changed holds the state
 * the bundle read, the bundle fits `current` and leaves it as `current` with those leaves replaced
 * and the new ones appended: exactly what applyBatchTx would return.
 */
function patchBlock(current: Microblock, input: Microblock, output: Microblock): Microblock | null {
  const n = input.leaves.length;
  if (
    current.leaves.length !== n ||
    !equalBytes(current.hash, input.hash) ||
    !equalBytes(current.patientSigningKey, input.patientSigningKey) ||
    !equalBytes(current.patientPreKey, input.patientPreKey)
  ) {
    return null;
  }
  const leaves = current.leaves.slice();
  for (let k = 0; k < n; k++) {
    const c = current.leaves[k]!;
    const a = input.leaves[k]!;
    const o = output.leaves[k]!;
    if (c.institution !== a.institution || !equalBytes(c.digest, a.digest)) return null;
    if (o === a) continue; // untouched by the bundle
    if (!sameLeaf(c, a)) return null;
    leaves[k] = o;
  }
  for (let k = n; k < output.leaves.length; k++) leaves.push(output.leaves[k]!);
  return { ...current, leaves };
}

/**
 * fitBundle from the bundle's last fit, without validating again (see patchBlock): null unless
 * the last fit was under this genesis, none of its txs is pinned or in the overlay, every patient
 * it addresses is pinned, its label targets resolve (to a medical tx earlier in the bundle, or a
 * pinned or held one, as validateBatchTxs asks), and every block it touches patches. Then the
 * bundle fits with the same writes on top of the blocks as they are now.
 */
function refit(chain: ChainState, overlay: Overlay, entry: MempoolEntry): Overlay | null {
  const { bundle, txIds } = entry;
  const memo = fits.get(bundle);
  if (memo === undefined || memo.genesis !== chain.genesis) return null;
  const reads = overlayReads(chain.ledger, overlay);
  for (const id of txIds) if (reads.isPinnedTx(id)) return null;
  const own = new Set<string>();
  for (const [k, tx] of bundle.txs.entries()) {
    if (tx.block.i > chain.keyblockHeight) return null;
    if (tx.type === 'label') {
      const target = toHex(tx.target);
      const key = recordKey(target, tx.block, tx.institution);
      if (!own.has(key) && !reads.isRecordOf(target, tx.block, tx.institution)) return null;
    } else if (tx.type === 'medical') {
      own.add(recordKey(txIds[k]!, tx.block, tx.institution));
    }
  }
  const microblocks = new Map<string, Microblock>();
  const blocks: BlockFit[] = [];
  for (const f of memo.blocks) {
    const current = reads.microblocks.get(f.ref);
    if (current === undefined) return null;
    const output = current === f.input ? f.output : patchBlock(current, f.input, f.output);
    if (output === null) return null;
    microblocks.set(f.key, output);
    blocks.push({ ref: f.ref, key: f.key, input: current, output });
  }
  fits.set(bundle, { genesis: memo.genesis, blocks, records: memo.records });
  return extendOverlay(overlay, { microblocks, txHashes: txIds, records: memo.records });
}

/**
 * The last failed fit of a bundle: the blocks it read before failing (first reads, in order; a
 * block it did not find is undefined) and the pinned keyblock height it was judged at. Judged again
 * where every one of those reads gives the same object and the keyblock height is the same, the
 * bundle fails the same way: validateBatchTxs is deterministic, the bundle's own checks
 * (signature, fees, seq order inside it) do not depend on the state, and whatever else it read
 * before failing (whether its txs are pinned or held, whether a label's target is) can only change
 * with one of those blocks, since applying a tx, or its target, writes a new object for its block.
 * Failures on a replayed tx are not remembered: that check comes before the block is read.
 */
interface FailMemo {
  readonly genesis: Genesis;
  readonly keyblockHeight: number;
  readonly reads: readonly { readonly ref: BlockRef; readonly block: Microblock | undefined }[];
  readonly verdict: Verdict;
}

const failures = new WeakMap<Bundle, FailMemo>();

/** The verdict of the bundle's last failed fit when it still holds (see FailMemo), else null. */
function refail(chain: ChainState, overlay: Overlay, entry: MempoolEntry): Verdict | null {
  const memo = failures.get(entry.bundle);
  if (
    memo === undefined ||
    memo.genesis !== chain.genesis ||
    memo.keyblockHeight !== chain.keyblockHeight
  ) {
    return null;
  }
  const reads = overlayReads(chain.ledger, overlay);
  for (const r of memo.reads) if (reads.microblocks.get(r.ref) !== r.block) return null;
  return memo.verdict;
}

/** fitBundle by validateBatchTxs, remembering what the bundle read and wrote (or why it failed). */
function fitInFull(
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
  const base = batchContext(chain, overlay);
  const inputs = new Map<string, { ref: BlockRef; block: Microblock | undefined }>();
  const ctx: BatchTxContext = {
    ...base,
    microblocks: {
      get: (ref) => {
        const block = base.microblocks.get(ref);
        const key = refKey(ref);
        if (!inputs.has(key)) inputs.set(key, { ref, block });
        return block;
      },
    },
  };
  const { verdict, effects } = validateBatchTxs(probe, ctx);
  if (!verdict.ok) {
    if (verdict.error.code !== 'REPLAYED_TX') {
      const reads = [...inputs.values()];
      const { genesis, keyblockHeight } = chain;
      failures.set(entry.bundle, { genesis, keyblockHeight, reads, verdict });
    }
    return { verdict, overlay };
  }
  const write = bundlesWrite([entry.bundle], entry.txIds, effects.microblocks);
  const blocks: BlockFit[] = [];
  for (const [key, output] of effects.microblocks) {
    const input = inputs.get(key);
    if (input?.block === undefined) return { verdict, overlay: extendOverlay(overlay, write) };
    blocks.push({ ref: input.ref, key, input: input.block, output });
  }
  fits.set(entry.bundle, { genesis: chain.genesis, blocks, records: [...write.records] });
  return { verdict, overlay: extendOverlay(overlay, write) };
}

/**
 * Validates one bundle on top of the pinned state and `overlay`; on success, the new overlay.
 * A bundle judged before is judged from its last judgement when that decides it (refit, refail).
 */
export function fitBundle(
  chain: ChainState,
  overlay: Overlay,
  entry: MempoolEntry,
): { verdict: Verdict; overlay: Overlay } {
  const quick = refit(chain, overlay, entry);
  if (quick !== null) return { verdict: OK, overlay: quick };
  const failed = refail(chain, overlay, entry);
  if (failed !== null) return { verdict: failed, overlay };
  return fitInFull(chain, overlay, entry);
}

/** fitBundle without the memory of earlier fits (the reference the tests compare refit with). */
export function fitBundleInFull(
  chain: ChainState,
  overlay: Overlay,
  entry: MempoolEntry,
): { verdict: Verdict; overlay: Overlay } {
  return fitInFull(chain, overlay, entry);
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
    if (tx.type === 'medical') own.add(recordKey(txHashHex(tx), tx.block, tx.institution));
  }
  return -1;
}

type Fit = typeof fitBundle;

function judge(
  chain: ChainState,
  overlay: Overlay,
  entry: MempoolEntry,
  fitWith: Fit = fitBundle,
): Judgement {
  if (entry.txIds.some((id) => chain.ledger.isPinnedTx(id))) {
    const error = new LedgerError('REPLAYED_TX', 'bundle carries a pinned tx');
    return { kind: 'stale', verdict: { ok: false, error } };
  }
  const fitted = fitWith(chain, overlay, entry);
  if (fitted.verdict.ok) return { kind: 'fits', overlay: fitted.overlay };
  const code = fitted.verdict.error.code;
  if (code === 'REPLAYED_TX') return { kind: 'stale', verdict: fitted.verdict };
  if (code === 'BAD_CHAMELEON_OPENING') {
    const index = failsOnRecordOpening(chain, overlay, entry.bundle);
    if (index >= 0) return { kind: 'blamed', verdict: fitted.verdict, index };
  }
  return { kind: 'waits', verdict: fitted.verdict };
}

/**
 * Re-judges the waiting bundles (of `only`, or of everyone) until none more fits: a bundle that
 * arrived before its predecessor fits once the predecessor does. Drops stale and blamed ones.
 */
function settle(
  chain: ChainState,
  pool: Mempool,
  only?: InstitutionIndex,
  fitWith: Fit = fitBundle,
): { pool: Mempool; blamed: Blame[] } {
  let overlay = pool.overlay;
  /** Eligible lists that grew, copied once each. */
  const grown = new Map<InstitutionIndex, MempoolEntry[]>();
  let eligibleIds = pool.eligibleIds;
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
        const j = judge(chain, overlay, e, fitWith);
        if (j.kind === 'fits') {
          overlay = j.overlay;
          let list = grown.get(i);
          if (list === undefined) {
            list = [...(pool.eligible.get(i) ?? [])];
            grown.set(i, list);
          }
          list.push(e);
          eligibleIds = withId(eligibleIds, e.id);
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
  if (dropped.size === 0 && grown.size === 0) return { pool, blamed };
  const eligible = new Map(pool.eligible);
  for (const [i, list] of grown) eligible.set(i, list);
  if (dropped.size === 0) return { pool: { ...pool, eligible, eligibleIds, overlay }, blamed };
  const queues = new Map<InstitutionIndex, readonly MempoolEntry[]>();
  const kept: string[] = [];
  for (const [i, q] of pool.queues) {
    const left = q.filter((e) => !dropped.has(e.id));
    for (const e of left) kept.push(e.id);
    if (left.length > 0) queues.set(i, left);
  }
  const ids = idsOf(kept);
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
 * `inFull`: as rebuildMempool's.
 */
export function admitBundle(
  chain: ChainState,
  pool: Mempool,
  entry: MempoolEntry,
  limits: MempoolLimits,
  inFull = false,
): { pool: Mempool; verdict: Verdict; blamed: Blame[] } {
  const fitWith = inFull ? fitBundleInFull : fitBundle;
  const i = entry.bundle.institution;
  if (pool.ids.has(entry.id)) {
    return { pool, verdict: ALREADY_HELD, blamed: [] };
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
  const j = judge(chain, pool.overlay, entry, fitWith);
  if (j.kind === 'stale') return { pool, verdict: j.verdict, blamed: [] };
  if (j.kind === 'blamed') {
    const code = j.verdict.error.code;
    const blame = { institution: i, code, bundle: entry.bundle, index: j.index };
    return { pool, verdict: j.verdict, blamed: [blame] };
  }
  const queues = new Map(pool.queues).set(i, [...queue, entry]);
  const ids = withId(pool.ids, entry.id);
  let next: Mempool = { ...pool, queues, ids, size: pool.size + 1 };
  if (j.kind === 'waits') return { pool: next, verdict: { ok: true }, blamed: [] };
  const eligible = [...(pool.eligible.get(i) ?? []), entry];
  next = {
    ...next,
    eligible: new Map(pool.eligible).set(i, eligible),
    eligibleIds: withId(pool.eligibleIds, entry.id),
    overlay: j.overlay,
  };
  // Every held bundle of the institution fits: none waits for this one.
  if (eligible.length === queue.length + 1) return { pool: next, verdict: OK, blamed: [] };
  const settled = settle(chain, next, i, fitWith);
  return { pool: settled.pool, verdict: { ok: true }, blamed: settled.blamed };
}

/**
 * The mempool after the pinned state moved (a batch or keyblock was pinned): drops the bundles
 * that carry pinned txs and judges everything else afresh against the new state. `inFull` judges
 * every bundle by validateBatchTxs, without the memory of earlier fits (for tests: the result is
 * the same).
 */
export function rebuildMempool(
  chain: ChainState,
  pool: Mempool,
  inFull = false,
): { pool: Mempool; blamed: Blame[] } {
  const queues = new Map<InstitutionIndex, readonly MempoolEntry[]>();
  const kept: string[] = [];
  for (const [i, q] of pool.queues) {
    const left = q.filter((e) => !e.txIds.some((id) => chain.ledger.isPinnedTx(id)));
    for (const e of left) kept.push(e.id);
    if (left.length > 0) queues.set(i, left);
  }
  const ids = idsOf(kept);
  const fresh: Mempool = { ...EMPTY_MEMPOOL, queues, ids, size: ids.size };
  return settle(chain, fresh, undefined, inFull ? fitBundleInFull : fitBundle);
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
