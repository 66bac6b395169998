/**
 * SHA-256 Merkle trees in the Certificate Transparency shape (RFC 6962 §2.1, RFC 9162 §2.1):
 * leaf = SHA-256(0x00 || data), node = SHA-256(0x01 || left || right), and a tree of n > 1 leaves
 * splits at the largest power of two below n. The prefixes keep an inner node from passing as a
 * leaf (the second-preimage trick); the split rule leaves no duplicated-last-leaf ambiguity.
 *
 * Building the tree level by level, an odd node out is carried up unchanged; that gives the same
 * tree as the recursive RFC 6962 definition, in O(n) hashing, and every proof after it in O(log n).
 */

import { equalBytes, expectBytes, u32be } from './bytes.ts';
import { CryptoError } from './errors.ts';
import { sha256, sha256Parts } from './sha256.ts';

export const MERKLE_HASH_BYTES = 32;
/** Proofs carry the size as a u32, so no tree may be larger. */
export const MAX_MERKLE_SIZE = 0xffffffff;
/** Root of the empty tree: SHA-256 of the empty string. */
const EMPTY_MERKLE_ROOT: Uint8Array = sha256(new Uint8Array(0));

const LEAF_PREFIX = Uint8Array.of(0x00);
const NODE_PREFIX = Uint8Array.of(0x01);
const PROOF_HEADER_BYTES = 9;

/** Inclusion proof of leaf `index` in a tree of `size` leaves; siblings run from the leaf up. */
export interface MerkleProof {
  index: number;
  size: number;
  siblings: Uint8Array[];
}

export function merkleLeafHash(data: Uint8Array): Uint8Array {
  return sha256Parts([LEAF_PREFIX, data]);
}

export function merkleNodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256Parts([NODE_PREFIX, left, right]);
}

function nextLevel(level: readonly Uint8Array[]): Uint8Array[] {
  const next: Uint8Array[] = new Array(Math.ceil(level.length / 2));
  for (let i = 0; i + 1 < level.length; i += 2)
    next[i / 2] = merkleNodeHash(level[i]!, level[i + 1]!);
  if (level.length % 2 === 1) next[next.length - 1] = level[level.length - 1]!;
  return next;
}

function checkSize(n: number): void {
  if (n > MAX_MERKLE_SIZE) {
    throw new CryptoError(
      'INVALID_ARGUMENT',
      `a Merkle tree holds at most 2^32 - 1 leaves, got ${n}`,
    );
  }
}

function checkIndex(index: number, size: number): void {
  if (!Number.isInteger(index) || index < 0 || index >= size) {
    throw new CryptoError('INVALID_ARGUMENT', `leaf index ${index} is outside a tree of ${size}`, {
      index,
      size,
    });
  }
}

function hashLeaves(leaves: readonly Uint8Array[]): Uint8Array[] {
  checkSize(leaves.length);
  return leaves.map((leaf, i) => merkleLeafHash(expectBytes(leaf, `Merkle leaf ${i}`)));
}

/** The root over raw leaf data (each leaf hashed with the 0x00 prefix). */
export function merkleRoot(leaves: readonly Uint8Array[]): Uint8Array {
  return merkleRootOfLeafHashes(hashLeaves(leaves));
}

/** The root over leaves that are already leaf hashes (from `merkleLeafHash`). */
export function merkleRootOfLeafHashes(leafHashes: readonly Uint8Array[]): Uint8Array {
  checkSize(leafHashes.length);
  if (leafHashes.length === 0) return EMPTY_MERKLE_ROOT.slice();
  let level = leafHashes.map((h, i) => expectBytes(h, `leaf hash ${i}`, MERKLE_HASH_BYTES));
  while (level.length > 1) level = nextLevel(level);
  return level[0]!.slice();
}

/** A built tree: O(n) hashing once, then the root and any proof without hashing. */
export class MerkleTree {
  readonly #levels: Uint8Array[][];

  private constructor(leafHashes: Uint8Array[]) {
    this.#levels = [leafHashes];
    for (let level = leafHashes; level.length > 1; ) {
      level = nextLevel(level);
      this.#levels.push(level);
    }
  }

  static fromLeaves(leaves: readonly Uint8Array[]): MerkleTree {
    return new MerkleTree(hashLeaves(leaves));
  }

  static fromLeafHashes(leafHashes: readonly Uint8Array[]): MerkleTree {
    checkSize(leafHashes.length);
    return new MerkleTree(
      leafHashes.map((h, i) => expectBytes(h, `leaf hash ${i}`, MERKLE_HASH_BYTES).slice()),
    );
  }

  get size(): number {
    return this.#levels[0]!.length;
  }

  get root(): Uint8Array {
    const top = this.#levels[this.#levels.length - 1]!;
    return top.length === 0 ? EMPTY_MERKLE_ROOT.slice() : top[0]!.slice();
  }

  leafHash(index: number): Uint8Array {
    checkIndex(index, this.size);
    return this.#levels[0]![index]!.slice();
  }

  proof(index: number): MerkleProof {
    checkIndex(index, this.size);
    const siblings: Uint8Array[] = [];
    let i = index;
    for (let l = 0; l + 1 < this.#levels.length; l++) {
      const sibling = this.#levels[l]![i ^ 1];
      if (sibling) siblings.push(sibling.slice());
      i = Math.floor(i / 2);
    }
    return { index, size: this.size, siblings };
  }
}

/** An inclusion proof over raw leaf data; O(n) hashing. Build a `MerkleTree` for many proofs. */
export function merkleProof(leaves: readonly Uint8Array[], index: number): MerkleProof {
  checkIndex(index, leaves.length);
  return MerkleTree.fromLeaves(leaves).proof(index);
}

/** How many siblings the proof for `index` in a tree of `size` leaves has (0 to 32). */
export function merklePathLength(index: number, size: number): number {
  let length = 0;
  for (let fn = index, sn = size - 1; sn > 0; fn = Math.floor(fn / 2), sn = Math.floor(sn / 2)) {
    if (fn % 2 === 1 || fn < sn) length++;
  }
  return length;
}

/** What is wrong with a proof's shape, or null when it is well formed. */
function proofProblem(proof: unknown): string | null {
  if (typeof proof !== 'object' || proof === null) return 'Merkle proof must be an object';
  const { index, size, siblings } = proof as Partial<MerkleProof>;
  if (typeof size !== 'number' || !Number.isInteger(size) || size < 1 || size > MAX_MERKLE_SIZE) {
    return `Merkle proof tree size must be an integer from 1 to 2^32 - 1, got ${size}`;
  }
  if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= size) {
    return `Merkle proof index ${index} is outside a tree of size ${size}`;
  }
  if (!Array.isArray(siblings)) return 'Merkle proof siblings must be an array';
  const expected = merklePathLength(index, size);
  if (siblings.length !== expected) {
    return `Merkle proof for index ${index} of size ${size} needs ${expected} siblings, got ${siblings.length}`;
  }
  for (const [i, s] of siblings.entries()) {
    if (!(s instanceof Uint8Array) || s.length !== MERKLE_HASH_BYTES) {
      return `Merkle proof sibling ${i} must be ${MERKLE_HASH_BYTES} bytes`;
    }
  }
  return null;
}

function assertProof(proof: MerkleProof): void {
  const problem = proofProblem(proof);
  if (problem !== null) throw new CryptoError('MERKLE_INVALID', problem);
}

/** The root a proof leads to from a leaf hash; throws MERKLE_INVALID for a malformed proof. */
export function merkleRootFromProof(leafHash: Uint8Array, proof: MerkleProof): Uint8Array {
  expectBytes(leafHash, 'leaf hash', MERKLE_HASH_BYTES);
  assertProof(proof);
  let r = leafHash;
  let k = 0;
  for (
    let fn = proof.index, sn = proof.size - 1;
    sn > 0;
    fn = Math.floor(fn / 2), sn = Math.floor(sn / 2)
  ) {
    if (fn % 2 === 1) r = merkleNodeHash(proof.siblings[k++]!, r);
    else if (fn < sn) r = merkleNodeHash(r, proof.siblings[k++]!);
  }
  return r.slice();
}

/**
 * True only when `leafData` is leaf `proof.index` of the tree with this root; never throws.
 * A root names a tree only together with its size: check `proof.size` against the size you trust
 * the root to have (index 0 of 3 and of 4 leaves can share siblings and the computed root).
 */
export function verifyMerkleProof(
  root: Uint8Array,
  leafData: Uint8Array,
  proof: MerkleProof,
): boolean {
  try {
    if (!(root instanceof Uint8Array) || root.length !== MERKLE_HASH_BYTES) return false;
    if (!(leafData instanceof Uint8Array) || proofProblem(proof) !== null) return false;
    return equalBytes(merkleRootFromProof(merkleLeafHash(leafData), proof), root);
  } catch {
    return false;
  }
}

/** u32be index || u32be size || u8 sibling count || 32-byte siblings. */
export function encodeMerkleProof(proof: MerkleProof): Uint8Array {
  assertProof(proof);
  const out = new Uint8Array(PROOF_HEADER_BYTES + MERKLE_HASH_BYTES * proof.siblings.length);
  out.set(u32be(proof.index), 0);
  out.set(u32be(proof.size), 4);
  out[8] = proof.siblings.length;
  for (const [i, s] of proof.siblings.entries())
    out.set(s, PROOF_HEADER_BYTES + MERKLE_HASH_BYTES * i);
  return out;
}

export function decodeMerkleProof(bytes: Uint8Array): MerkleProof {
  expectBytes(bytes, 'encoded Merkle proof');
  if (bytes.length < PROOF_HEADER_BYTES) {
    throw new CryptoError(
      'MERKLE_INVALID',
      `encoded Merkle proof is ${bytes.length} bytes, shorter than its ${PROOF_HEADER_BYTES}-byte header`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const index = view.getUint32(0);
  const size = view.getUint32(4);
  const count = bytes[8]!;
  const expectedLength = PROOF_HEADER_BYTES + MERKLE_HASH_BYTES * count;
  if (bytes.length !== expectedLength) {
    throw new CryptoError(
      'MERKLE_INVALID',
      `encoded Merkle proof declares ${count} siblings (${expectedLength} bytes) but is ${bytes.length} bytes`,
    );
  }
  const siblings: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const at = PROOF_HEADER_BYTES + MERKLE_HASH_BYTES * i;
    siblings.push(bytes.slice(at, at + MERKLE_HASH_BYTES));
  }
  const proof = { index, size, siblings };
  assertProof(proof);
  return proof;
}
