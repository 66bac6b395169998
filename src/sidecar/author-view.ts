/**
 * The author view: the patient block as this institution writes on it, i.e. the pinned block with
 * this institution's leaf advanced past its own signed txs that are not pinned yet. A leaf's txs
 * form a chain (seq, running hash), and a tx that peers may hold must never be replaced by another
 * with the same seq (the next opening would be judged a forgery), so the view is persisted with
 * every ingest (AuthorState: seq and running hash of the last signed tx) and survives restarts.
 */
import { equalBytes } from '../crypto/bytes.ts';
import type { LeafState, Microblock } from '../ledger/microblock.ts';
import type { InstitutionIndex } from '../ledger/types.ts';
import type { AuthorState } from './entries.ts';

export interface AuthorBase {
  /** The block to make the next tx on. */
  readonly block: Microblock;
  /**
   * True when the pinned leaf is not where our own signed txs put it (it went past them, or took
   * another tx at our last seq): txs we signed and did not see pinned can then never be pinned.
   */
  readonly diverged: boolean;
}

export function ownLeaf(block: Microblock, self: InstitutionIndex): LeafState | undefined {
  return block.leaves.find((l) => l.institution === self);
}

/**
 * The block to author on: the pinned block when it is at or past our last signed tx (everything
 * we signed is pinned), else the pinned block with our leaf at our last signed tx. The caller has
 * checked that the pinned block has our leaf.
 */
export function authorBase(
  pinned: Microblock,
  self: InstitutionIndex,
  state: AuthorState | undefined,
): AuthorBase {
  const leaf = ownLeaf(pinned, self);
  if (leaf === undefined) throw new RangeError(`institution ${self} has no leaf in this block`);
  const sameBlock =
    state !== undefined && state.ref.i === pinned.header.i && state.ref.j === pinned.header.j;
  if (!sameBlock || leaf.seq > state.seq) {
    return { block: pinned, diverged: sameBlock && leaf.seq > state.seq };
  }
  if (leaf.seq === state.seq) {
    return { block: pinned, diverged: !equalBytes(leaf.running, state.running) };
  }
  const leaves = pinned.leaves.map((l) =>
    l.institution === self ? { ...l, seq: state.seq, running: state.running } : l,
  );
  return { block: { ...pinned, leaves }, diverged: false };
}

/** The state to persist after authoring on `block` (our leaf as it now stands). */
export function authorStateOf(block: Microblock, self: InstitutionIndex): AuthorState {
  const leaf = ownLeaf(block, self);
  if (leaf === undefined) throw new RangeError(`institution ${self} has no leaf in this block`);
  return { ref: { i: block.header.i, j: block.header.j }, seq: leaf.seq, running: leaf.running };
}
