/**
 * The pinned patient blocks and indexes a replica reads (DESIGN section 4), behind a small port:
 * the same synchronous lookups validateBatch asks for (a LevelDB-backed node prefetches them, see
 * src/store/batch-context.ts), plus `pin`, which returns the view after a pinned write.
 *
 * `memoryLedgerView` is the in-memory implementation for simulations and tests. It is persistent:
 * `pin` never changes the view it is called on, it stacks a layer of the write on top (flattened
 * every MAX_LAYERS pins), so an older replica value keeps reading the older state.
 *
 * `Overlay` is the same data for a few unpinned bundles (the mempool's view of "what the bundles
 * I hold would do"), read through `overlayReads` on top of a view.
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
  readonly txs: ReadonlySet<string>;
  readonly records: ReadonlySet<string>;
  readonly parent: Layer | null;
  readonly depth: number;
}

/** Reads walk at most this many layers; the next pin flattens them into one. */
const MAX_LAYERS = 16;

function layerOf(write: LedgerWrite, parent: Layer | null): Layer {
  return {
    blocks: new Map(write.microblocks),
    txs: new Set(write.txHashes),
    records: new Set(write.records),
    parent,
    depth: parent === null ? 1 : parent.depth + 1,
  };
}

function flatten(top: Layer): Layer {
  const stack: Layer[] = [];
  for (let l: Layer | null = top; l !== null; l = l.parent) stack.push(l);
  const blocks = new Map<string, Microblock>();
  const txs = new Set<string>();
  const records = new Set<string>();
  for (let k = stack.length - 1; k >= 0; k--) {
    const l = stack[k]!;
    for (const [key, b] of l.blocks) blocks.set(key, b);
    for (const t of l.txs) txs.add(t);
    for (const r of l.records) records.add(r);
  }
  return { blocks, txs, records, parent: null, depth: 1 };
}

function viewOf(top: Layer): LedgerView {
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
    isPinnedTx(hashHex) {
      for (let l: Layer | null = top; l !== null; l = l.parent) if (l.txs.has(hashHex)) return true;
      return false;
    },
    isRecordOf(targetHex, ref, institution) {
      const key = recordKey(targetHex, ref, institution);
      for (let l: Layer | null = top; l !== null; l = l.parent) if (l.records.has(key)) return true;
      return false;
    },
    pin(write) {
      const next = layerOf(write, top);
      return viewOf(next.depth > MAX_LAYERS ? flatten(next) : next);
    },
  };
}

/** An in-memory, persistent ledger view holding `blocks` (e.g. the patients of pinned keyblocks). */
export function memoryLedgerView(blocks: Iterable<Microblock> = []): LedgerView {
  const microblocks = new Map<string, Microblock>();
  for (const b of blocks) microblocks.set(refKey(b.header), b);
  return viewOf(layerOf({ microblocks, txHashes: [], records: [] }, null));
}

/** The effects of some unpinned bundles, read on top of the pinned view. */
export interface Overlay {
  readonly blocks: ReadonlyMap<string, Microblock>;
  readonly txs: ReadonlySet<string>;
  readonly records: ReadonlySet<string>;
}

export const EMPTY_OVERLAY: Overlay = { blocks: new Map(), txs: new Set(), records: new Set() };

/** The overlay with one more write on top (copies: overlays stay small). */
export function extendOverlay(overlay: Overlay, write: LedgerWrite): Overlay {
  const blocks = new Map(overlay.blocks);
  for (const [key, b] of write.microblocks) blocks.set(key, b);
  return {
    blocks,
    txs: new Set([...overlay.txs, ...write.txHashes]),
    records: new Set([...overlay.records, ...write.records]),
  };
}

/** Reads of `base` with `overlay` on top. */
export function overlayReads(base: LedgerReads, overlay: Overlay): LedgerReads {
  if (overlay === EMPTY_OVERLAY) return base;
  return {
    microblocks: { get: (ref) => overlay.blocks.get(refKey(ref)) ?? base.microblocks.get(ref) },
    isPinnedTx: (h) => overlay.txs.has(h) || base.isPinnedTx(h),
    isRecordOf: (t, ref, i) =>
      overlay.records.has(recordKey(t, ref, i)) || base.isRecordOf(t, ref, i),
  };
}
