/**
 * The pinned patient blocks and indexes a replica reads (DESIGN section 4), behind a small port:
 * the same synchronous lookups validateBatch asks for (a LevelDB-backed node prefetches them, see
 * src/store/batch-context.ts), plus `pin`, which returns the view after a pinned write.
 *
 * `memoryLedgerView` is the in-memory implementation (the node keeps its pinned state in memory
 * and its store in LevelDB). It is persistent: `pin` never changes what the view it is called on
 * reads. Patient blocks stack in layers (flattened every MAX_LAYERS pins); pinned tx hashes and
 * label targets live in one index per lineage of views, stamped with the pin that added them, so
 * a lookup costs one map read however long the chain (an older replica value keeps reading the
 * older state).
 *
 * `Overlay` is the same data for the unpinned bundles a mempool holds (what they would do), read
 * through `overlayReads` on top of a view, and persistent in the same way.
 */
import { type MicroblockView, refKey } from './batch.ts';
import type { Microblock, RecordLookup } from './microblock.ts';
import type { BlockRef, InstitutionIndex } from './types.ts';

/** What validateBatch reads from the pinned chain. */
export interface LedgerReads {
  readonly microblocks: MicroblockView;
  /** Whether a tx hash (hex) is pinned. */
  isPinnedTx(hashHex: string): boolean;
  /** Whether a pinned medical tx (hex hash) belongs to this patient block and institution. */
  readonly isRecordOf: RecordLookup;
}

/** What one pinned batch (or keyblock) adds: new patient-block states and index entries. */
export interface LedgerWrite {
  /** New states of the patient blocks it created or changed, by refKey. */
  readonly microblocks: ReadonlyMap<string, Microblock>;
  /** Hashes (hex) of every tx it pinned. */
  readonly txHashes: Iterable<string>;
  /** recordKey of every medical tx it pinned (label targets). */
  readonly records: Iterable<string>;
}

export interface LedgerView extends LedgerReads {
  /** The view after `write`; this view is unchanged. */
  pin(write: LedgerWrite): LedgerView;
}

/** The label-target index key of a medical tx: its hash, patient block and institution. */
export function recordKey(txHashHex: string, ref: BlockRef, institution: InstitutionIndex): string {
  return `${txHashHex}|${refKey(ref)}|${institution}`;
}

interface Layer {
  readonly blocks: ReadonlyMap<string, Microblock>;
  readonly parent: Layer | null;
  readonly depth: number;
}

/** Block reads walk at most this many layers; the next pin flattens them into one. */
const MAX_LAYERS = 16;

function layerOf(microblocks: ReadonlyMap<string, Microblock>, parent: Layer | null): Layer {
  return {
    blocks: new Map(microblocks),
    parent,
    depth: parent === null ? 1 : parent.depth + 1,
  };
}

function flatten(top: Layer): Layer {
  const stack: Layer[] = [];
  for (let l: Layer | null = top; l !== null; l = l.parent) stack.push(l);
  const blocks = new Map<string, Microblock>();
  for (let k = stack.length - 1; k >= 0; k--) {
    for (const [key, b] of stack[k]!.blocks) blocks.set(key, b);
  }
  return { blocks, parent: null, depth: 1 };
}

/**
 * A set of keys shared by the views of one lineage: each key carries the version (pin count) at
 * which it was added, and a view sees the keys added up to its own version, so a lookup is one map
 * read however many batches were pinned. Pinning on the newest view of a lineage adds to the map;
 * pinning on an older one (a branch) copies what that view sees first.
 */
interface KeyIndex {
  readonly added: Map<string, number>;
  version: number;
}

const seenAt = (added: number | undefined, version: number) =>
  added !== undefined && added <= version;

function addKeys(index: KeyIndex, version: number, keys: Iterable<string>): KeyIndex {
  let out = index;
  if (index.version !== version) {
    const added = new Map<string, number>();
    for (const [k, at] of index.added) if (at <= version) added.set(k, at);
    out = { added, version };
  }
  out.version = version + 1;
  for (const k of keys) if (!out.added.has(k)) out.added.set(k, out.version);
  return out;
}

function viewOf(top: Layer, txs: KeyIndex, records: KeyIndex, version: number): LedgerView {
  return {
    microblocks: {
      get(ref) {
        const key = refKey(ref);
        for (let l: Layer | null = top; l !== null; l = l.parent) {
          const b = l.blocks.get(key);
          if (b !== undefined) return b;
        }
        return undefined;
      },
    },
    isPinnedTx: (hashHex) => seenAt(txs.added.get(hashHex), version),
    isRecordOf: (targetHex, ref, institution) =>
      seenAt(records.added.get(recordKey(targetHex, ref, institution)), version),
    pin(write) {
      const next = layerOf(write.microblocks, top);
      return viewOf(
        next.depth > MAX_LAYERS ? flatten(next) : next,
        addKeys(txs, version, write.txHashes),
        addKeys(records, version, write.records),
        version + 1,
      );
    },
  };
}

/** An in-memory, persistent ledger view holding `blocks` (e.g. the patients of pinned keyblocks). */
export function memoryLedgerView(blocks: Iterable<Microblock> = []): LedgerView {
  const microblocks = new Map<string, Microblock>();
  for (const b of blocks) microblocks.set(refKey(b.header), b);
  const empty = (): KeyIndex => ({ added: new Map(), version: 0 });
  return viewOf(layerOf(microblocks, null), empty(), empty(), 0);
}

/**
 * Where the overlays of one lineage keep their entries: each entry carries the version (number of
 * writes) at which it was added, so every overlay of the lineage reads the same store and sees only
 * what was written up to its own version. Mutated only by extendOverlay, and only to add entries
 * above every version an overlay holds.
 */
interface OverlayStore {
  /** Per refKey, the block's states in version order. */
  readonly blocks: Map<string, { readonly version: number; readonly block: Microblock }[]>;
  readonly txs: Map<string, number>;
  readonly records: Map<string, number>;
  /** The highest version written. */
  version: number;
}

/**
 * The effects of some unpinned bundles, read on top of the pinned view. Persistent: extending an
 * overlay never changes what it (or any other overlay) reads. Extending the newest overlay of its
 * lineage costs only the write; extending an older one copies what it sees first.
 */
export interface Overlay {
  readonly store: OverlayStore | null;
  readonly version: number;
}

export const EMPTY_OVERLAY: Overlay = { store: null, version: 0 };

function blockAt(store: OverlayStore, key: string, version: number): Microblock | undefined {
  const states = store.blocks.get(key);
  if (states === undefined) return undefined;
  for (let k = states.length - 1; k >= 0; k--) {
    const s = states[k]!;
    if (s.version <= version) return s.block;
  }
  return undefined;
}

/** A store holding what `overlay` sees, at its version (a fork of its lineage). */
function forkStore(overlay: Overlay): OverlayStore {
  const { store, version } = overlay;
  const fork: OverlayStore = { blocks: new Map(), txs: new Map(), records: new Map(), version };
  if (store === null) return fork;
  for (const key of store.blocks.keys()) {
    const block = blockAt(store, key, version);
    if (block !== undefined) fork.blocks.set(key, [{ version, block }]);
  }
  for (const [t, v] of store.txs) if (v <= version) fork.txs.set(t, v);
  for (const [r, v] of store.records) if (v <= version) fork.records.set(r, v);
  return fork;
}

/** The overlay with one more write on top. */
export function extendOverlay(overlay: Overlay, write: LedgerWrite): Overlay {
  const store =
    overlay.store !== null && overlay.store.version === overlay.version
      ? overlay.store
      : forkStore(overlay);
  const version = store.version + 1;
  store.version = version;
  for (const [key, block] of write.microblocks) {
    const states = store.blocks.get(key);
    if (states === undefined) store.blocks.set(key, [{ version, block }]);
    else states.push({ version, block });
  }
  for (const t of write.txHashes) if (!store.txs.has(t)) store.txs.set(t, version);
  for (const r of write.records) if (!store.records.has(r)) store.records.set(r, version);
  return { store, version };
}

/** Reads of `base` with `overlay` on top. */
export function overlayReads(base: LedgerReads, overlay: Overlay): LedgerReads {
  const { store, version } = overlay;
  if (store === null) return base;
  return {
    microblocks: {
      get: (ref) => blockAt(store, refKey(ref), version) ?? base.microblocks.get(ref),
    },
    isPinnedTx: (h) => seenAt(store.txs.get(h), version) || base.isPinnedTx(h),
    isRecordOf: (t, ref, i) =>
      seenAt(store.records.get(recordKey(t, ref, i)), version) || base.isRecordOf(t, ref, i),
  };
}
