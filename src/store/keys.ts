/**
 * The store's key layout (one sublevel per kind; integers big-endian so keys sort by height and
 * (i, j)):
 *   kb  be48(height)                                  -> encodeKeyblock (register txs included)
 *   kh  keyblockHash                                  -> varint height
 *   ce  u8(kind: 0 keyblock, 1 batch) be48(height)    -> encodeCertificate
 *   ba  be48(height)                                  -> encodeBatch
 *   bp  be48(height)                                  -> the batch's proof index (proof-index.ts):
 *                                                        its commitment, the Merkle roots of its
 *                                                        32-tx chunks and each tx's byte span in
 *                                                        the encoded batch
 *   mb  be48(i) u32be(j)                              -> encodeMicroblock
 *   id  idHash                                        -> varint i, varint j
 *   tx  txHash                                        -> u8 0, varint batch height, varint index
 *                                                        (medical, label, leaf), or
 *                                                        u8 1, varint i, varint j (register)
 *   rc  be48(i) u32be(j) u16be(institution) txHash    -> (empty): medical txs, for label targets
 *                                                        (a prefix scan lists one institution's
 *                                                        records of one patient)
 *   me  'keyblock' | 'batch'                          -> varint height, hash (the pinned tips)
 * The values are sealed (values.ts).
 */
import { concatBytes, fromHex, toHex } from '../crypto/bytes.ts';
import { HASH_BYTES } from '../ledger/hash.ts';
import type { BlockRef, Bytes, Certificate, InstitutionIndex } from '../ledger/types.ts';
import { StoreError } from './errors.ts';

/** Sublevel names; short, since every key carries its sublevel's prefix `!name!`. */
export const SPACES = {
  keyblock: 'kb',
  keyblockHash: 'kh',
  certificate: 'ce',
  batch: 'ba',
  batchProof: 'bp',
  microblock: 'mb',
  idHash: 'id',
  tx: 'tx',
  record: 'rc',
  meta: 'me',
} as const;

export type SpaceKind = keyof typeof SPACES;

const MAX_BE48 = 2 ** 48 - 1;
const KIND_CODE = { keyblock: 0, batch: 1 } as const;

/** `n` as `size` big-endian bytes; out of range is INVALID_ARGUMENT naming `what`. */
export function be(n: number, size: number, what: string): Bytes {
  const max = size === 6 ? MAX_BE48 : 2 ** (8 * size) - 1;
  if (!Number.isSafeInteger(n) || n < 0 || n > max) {
    throw new StoreError('INVALID_ARGUMENT', `${what} must be an integer in [0, ${max}], got ${n}`);
  }
  const out = new Uint8Array(size);
  let v = n;
  for (let k = size - 1; k >= 0; k--) {
    out[k] = v % 256;
    v = Math.floor(v / 256);
  }
  return out;
}

function hash32(bytes: Bytes, what: string): Bytes {
  if (!(bytes instanceof Uint8Array) || bytes.length !== HASH_BYTES) {
    throw new StoreError('INVALID_ARGUMENT', `${what} must be ${HASH_BYTES} bytes`);
  }
  return bytes;
}

/** A hash given as hex (the validation ports' form), as key bytes. */
export function hexHash(hex: string, what: string): Bytes {
  if (typeof hex !== 'string' || hex.length !== 2 * HASH_BYTES) {
    throw new StoreError('INVALID_ARGUMENT', `${what} must be ${2 * HASH_BYTES} hex characters`);
  }
  try {
    return fromHex(hex, what);
  } catch (err) {
    throw new StoreError('INVALID_ARGUMENT', `${what} is not hex`, {}, err);
  }
}

/** The key of each kind of entry (exported for tooling and tests that inspect the database). */
export const storeKeys = {
  keyblock: (height: number) => be(height, 6, 'keyblock height'),
  keyblockHash: (hash: Bytes) => hash32(hash, 'keyblock hash'),
  certificate: (kind: Certificate['kind'], height: number) =>
    concatBytes(Uint8Array.of(KIND_CODE[kind]), be(height, 6, 'certificate height')),
  batch: (height: number) => be(height, 6, 'batch height'),
  batchProof: (height: number) => be(height, 6, 'batch height'),
  microblock: (ref: BlockRef) => concatBytes(be(ref.i, 6, 'block i'), be(ref.j, 4, 'block j')),
  idHash: (idHash: Bytes) => hash32(idHash, 'idHash'),
  tx: (hash: Bytes) => hash32(hash, 'tx hash'),
  record: (ref: BlockRef, institution: InstitutionIndex, hash: Bytes) =>
    concatBytes(
      storeKeys.microblock(ref),
      be(institution, 2, 'institution'),
      hash32(hash, 'tx hash'),
    ),
  meta: (which: 'keyblock' | 'batch') => new TextEncoder().encode(which),
};

/** A key as people read it in errors: a height, i/j, a tip name or the first bytes of a hash. */
export function describeKey(kind: SpaceKind, key: Bytes): string {
  const n = (from: number, size: number) => {
    let v = 0;
    for (let k = from; k < from + size; k++) v = v * 256 + (key[k] ?? 0);
    return v;
  };
  switch (kind) {
    case 'keyblock':
    case 'batch':
    case 'batchProof':
      return `height ${n(0, 6)}`;
    case 'certificate':
      return `${key[0] === 0 ? 'keyblock' : 'batch'} height ${n(1, 6)}`;
    case 'microblock':
      return `${n(0, 6)}/${n(6, 4)}`;
    case 'meta':
      return new TextDecoder().decode(key);
    default:
      return toHex(key.subarray(0, 8));
  }
}
