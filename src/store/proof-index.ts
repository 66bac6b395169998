/**
 * Record proofs in O(log n) of the batch: the tx tree is cut into aligned chunks of 32 leaves,
 * which are subtrees of the RFC 6962 tree (merkle.ts). A proof reads the batch's bytes and its
 * proof index, hashes only the 32 raw txs of its chunk (txHashOfEncoding), and joins the path
 * inside the chunk to the path over the stored chunk roots; the tx itself is decoded from its span.
 * About 4 bytes per record on disk instead of decoding and rehashing the whole batch (1,000 txs:
 * ~15 ms) for every proof.
 */
import { equalBytes } from '../crypto/bytes.ts';
import {
  type MerkleProof,
  MerkleTree,
  merkleLeafHash,
  merkleRootOfLeafHashes,
} from '../crypto/merkle.ts';
import {
  type BatchCommitment,
  batchTxSpans,
  readCommitment,
  type TxInclusion,
  writeCommitment,
} from '../ledger/batch.ts';
import { decode, encode } from '../ledger/codec.ts';
import { HASH_BYTES } from '../ledger/hash.ts';
import { decodeTx, txHashOfEncoding } from '../ledger/tx.ts';
import type { BatchTx, Bytes, TxBatch } from '../ledger/types.ts';
import { corrupt, decodeAs } from './values.ts';

/** Leaves per chunk: a power of two, so an aligned chunk is a subtree of the batch's tx tree. */
export const PROOF_CHUNK = 32;

export interface TxSpan {
  readonly start: number;
  readonly length: number;
}

export interface BatchProofIndex {
  readonly commitment: BatchCommitment;
  /** Root of each aligned chunk of PROOF_CHUNK leaf hashes (the last one may be shorter). */
  readonly chunkRoots: readonly Bytes[];
  /** Where each tx's canonical encoding lies in the encoded batch, in tx order. */
  readonly spans: readonly TxSpan[];
}

/**
 * The path of leaf `index` in a tree of `size` leaves, from the leaf hashes of its chunk and the
 * roots of all chunks: the path inside the chunk, then the path of the chunk among the chunks.
 * Equal to MerkleTree.fromLeafHashes(all).proof(index): an aligned block of 2^k leaves is a node
 * of the tree, and the last (shorter) chunk is carried up exactly as its own tree's root is.
 * Also returns the chunk's root and the whole tree's root, for the caller to check.
 */
export function chunkedProof(
  chunkLeafHashes: readonly Bytes[],
  chunkRoots: readonly Bytes[],
  index: number,
  size: number,
): { proof: MerkleProof; chunkRoot: Bytes; root: Bytes } {
  const chunk = Math.floor(index / PROOF_CHUNK);
  const inner = MerkleTree.fromLeafHashes(chunkLeafHashes);
  const outer = MerkleTree.fromLeafHashes(chunkRoots);
  const siblings = [
    ...inner.proof(index - chunk * PROOF_CHUNK).siblings,
    ...outer.proof(chunk).siblings,
  ];
  return { proof: { index, size, siblings }, chunkRoot: inner.root, root: outer.root };
}

/** The proof index of `batch`, whose tx hashes (in order) are `hashes` and commitment `commitment`. */
export function buildProofIndex(
  batch: TxBatch,
  hashes: readonly Bytes[],
  commitment: BatchCommitment,
): BatchProofIndex {
  const spans = batchTxSpans(batch).map(({ offset, length }) => ({ start: offset, length }));
  const leaves = hashes.map(merkleLeafHash);
  const chunkRoots: Bytes[] = [];
  for (let at = 0; at < leaves.length; at += PROOF_CHUNK) {
    chunkRoots.push(merkleRootOfLeafHashes(leaves.slice(at, at + PROOF_CHUNK)));
  }
  if (leaves.length > 0 && !equalBytes(merkleRootOfLeafHashes(chunkRoots), commitment.txRoot)) {
    throw new Error('chunk roots do not rebuild the batch tx root');
  }
  return { commitment, chunkRoots, spans };
}

export function encodeProofIndex(x: BatchProofIndex): Bytes {
  const c = x.commitment;
  let end = 0;
  return encode((w) => {
    writeCommitment(w, c);
    w.list(x.chunkRoots, (lw, root) => lw.fixed(root, HASH_BYTES, 'chunk root')).list(
      x.spans,
      (lw, span) => {
        lw.varint(span.start - end).varint(span.length);
        end = span.start + span.length;
      },
    );
  });
}

export function decodeProofIndex(bytes: Bytes): BatchProofIndex {
  return decode(bytes, 'batch proof index', (r) => {
    const commitment = readCommitment(r);
    const chunks = Math.ceil(commitment.txCount / PROOF_CHUNK);
    const chunkRoots = r.list('chunk roots', chunks, (rr) => rr.fixed(HASH_BYTES, 'chunk root'));
    let end = 0;
    const spans = r.list('spans', commitment.txCount, (rr) => {
      const start = end + rr.varint('span gap');
      const length = rr.varint('span length');
      end = start + length;
      return { start, length };
    });
    if (chunkRoots.length !== chunks || spans.length !== commitment.txCount) {
      r.fail('spans', `do not match txCount ${commitment.txCount}`);
    }
    return { commitment, chunkRoots, spans };
  });
}

/** Where a proven tx was read from: its hash and position, and the keys of the entries involved. */
export interface StoredTxAt {
  readonly hash: Bytes;
  readonly height: number;
  readonly index: number;
  readonly keys: { readonly tx: Bytes; readonly batch: Bytes; readonly batchProof: Bytes };
}

/**
 * Tx `at.index` of the stored batch `encoded` with its inclusion proof, hashing only its chunk.
 * Checks the index against the batch, the tx against its hash and the chunk against the tx root;
 * any mismatch is CORRUPT naming the entry at fault.
 */
export function proveStoredTx(
  encoded: Bytes,
  { commitment, chunkRoots, spans }: BatchProofIndex,
  at: StoredTxAt,
): { tx: BatchTx; inclusion: TxInclusion } {
  const { hash, height, index, keys } = at;
  if (commitment.height !== height) {
    throw corrupt('batchProof', keys.batchProof, `holds the index of batch ${commitment.height}`);
  }
  if (index >= commitment.txCount) {
    throw corrupt('tx', keys.tx, `points to tx ${index} of batch ${height}, which has fewer`);
  }
  const from = index - (index % PROOF_CHUNK);
  const raw = spans.slice(from, from + PROOF_CHUNK).map((span) => {
    if (span.start + span.length > encoded.length) {
      throw corrupt('batchProof', keys.batchProof, 'has a tx span outside the batch');
    }
    return encoded.subarray(span.start, span.start + span.length);
  });
  const hashes = raw.map(txHashOfEncoding);
  if (!equalBytes(hashes[index - from]!, hash)) {
    throw corrupt('tx', keys.tx, `points to tx ${index} of batch ${height}, which is another tx`);
  }
  const joined = chunkedProof(hashes.map(merkleLeafHash), chunkRoots, index, commitment.txCount);
  if (
    !equalBytes(joined.chunkRoot, chunkRoots[from / PROOF_CHUNK]!) ||
    !equalBytes(joined.root, commitment.txRoot)
  ) {
    throw corrupt('batchProof', keys.batchProof, 'does not rebuild the batch tx root');
  }
  const tx = decodeAs('batch', keys.batch, raw[index - from]!, decodeTx);
  if (tx.type === 'register') throw corrupt('batch', keys.batch, 'holds a register tx');
  return { tx, inclusion: { commitment, proof: joined.proof } };
}
