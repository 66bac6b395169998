/**
 * The store's values. Every value but the empty `rc` ones is sealed: payload || u32be(CRC-32 of
 * (sublevel, key, payload)). A read checks the seal, decodes the payload with the ledger's canonical
 * decoders and checks it against its key (height, (i, j), hash), so corrupt bytes, or a value under
 * the wrong key, give a StoreError CORRUPT naming the kind and key, never a wrong answer.
 *
 * Items are stored in the ledger's own encodings (encodeKeyblock, encodeBatch, encodeMicroblock,
 * ...); the index entries and tips, in the small codec encodings below.
 */
import { crc32 } from 'node:zlib';
import { concatBytes, equalBytes, u32be } from '../crypto/bytes.ts';
import { decode, encode, type Reader } from '../ledger/codec.ts';
import { HASH_BYTES } from '../ledger/hash.ts';
import type { BlockRef, Bytes } from '../ledger/types.ts';
import { isStoreError, StoreError } from './errors.ts';
import { describeKey, SPACES, type SpaceKind } from './keys.ts';

export interface PinnedTip {
  readonly height: number;
  readonly hash: Bytes;
}

/** The latest pinned keyblock and batch, or null before the first. */
export interface StoreTip {
  readonly keyblock: PinnedTip | null;
  readonly batch: PinnedTip | null;
}

export type TxLocation =
  | { readonly kind: 'batch'; readonly height: number; readonly index: number }
  | { readonly kind: 'register'; readonly ref: BlockRef };

// ---------------------------------------------------------------------------------------------
// The seal

const CHECKSUM_BYTES = 4;

function checksum(space: string, key: Bytes, payload: Bytes): Bytes {
  return u32be(crc32(payload, crc32(key, crc32(space))));
}

/** payload || CRC-32(sublevel name, key, payload): binds the value to its key. */
export function sealValue(kind: SpaceKind, key: Bytes, payload: Bytes): Bytes {
  return sealIn(SPACES[kind], key, payload);
}

/** The seal for a value in any sublevel named `space` (other stores on the same format). */
export function sealIn(space: string, key: Bytes, payload: Bytes): Bytes {
  return concatBytes(payload, checksum(space, key, payload));
}

/** The payload of a value sealed in `space` under `key`, or the reason the seal does not hold. */
export function openSeal(
  space: string,
  key: Bytes,
  stored: Bytes,
): { ok: true; payload: Bytes } | { ok: false; problem: string } {
  if (stored.length < CHECKSUM_BYTES) {
    return { ok: false, problem: 'value is shorter than its seal' };
  }
  const view = new Uint8Array(stored.buffer, stored.byteOffset, stored.byteLength);
  const payload = view.subarray(0, view.length - CHECKSUM_BYTES);
  if (!equalBytes(view.subarray(view.length - CHECKSUM_BYTES), checksum(space, key, payload))) {
    return { ok: false, problem: 'checksum mismatch' };
  }
  return { ok: true, payload };
}

/** Checks the seal and decodes the payload; any failure is CORRUPT naming the kind and key. */
export function unseal<T>(kind: SpaceKind, key: Bytes, stored: Bytes, f: (payload: Bytes) => T): T {
  const opened = openSeal(SPACES[kind], key, stored);
  if (!opened.ok) throw corrupt(kind, key, opened.problem);
  return decodeAs(kind, key, opened.payload, f);
}

/** Decodes (part of) a stored value; a decoder's error becomes CORRUPT naming the kind and key. */
export function decodeAs<T>(
  kind: SpaceKind,
  key: Bytes,
  payload: Bytes,
  f: (payload: Bytes) => T,
): T {
  try {
    return f(payload);
  } catch (err) {
    if (isStoreError(err)) throw err;
    throw corrupt(kind, key, (err as Error).message, err);
  }
}

const LABELS: Record<SpaceKind, string> = {
  keyblock: 'keyblock',
  keyblockHash: 'keyblock-hash index entry',
  certificate: 'certificate',
  batch: 'batch',
  batchProof: 'batch proof index',
  microblock: 'microblock',
  idHash: 'idHash index entry',
  tx: 'tx index entry',
  record: 'record index entry',
  meta: 'meta entry',
};

/** StoreError CORRUPT: `problem` with the entry of `kind` under `key`. */
export function corrupt(kind: SpaceKind, key: Bytes, problem: string, cause?: unknown): StoreError {
  const where = describeKey(kind, key);
  return new StoreError(
    'CORRUPT',
    `corrupt ${LABELS[kind]} (${where}): ${problem}`,
    { kind, key: where },
    cause,
  );
}

// ---------------------------------------------------------------------------------------------
// Index entries and tips

const readRef = (r: Reader): BlockRef => ({ i: r.varint('i'), j: r.varint('j') });

export const encodeRef = (ref: BlockRef): Bytes => encode((w) => w.varint(ref.i).varint(ref.j));
export const decodeRef = (bytes: Bytes): BlockRef => decode(bytes, 'block ref', readRef);

export const encodeHeight = (h: number): Bytes => encode((w) => w.varint(h));
export const decodeHeight = (bytes: Bytes): number =>
  decode(bytes, 'height', (r) => r.varint('height'));

export const encodeTip = (t: PinnedTip): Bytes =>
  encode((w) => w.varint(t.height).fixed(t.hash, HASH_BYTES, 'hash'));
export const decodeTip = (bytes: Bytes): PinnedTip =>
  decode(bytes, 'tip', (r) => ({ height: r.varint('height'), hash: r.fixed(HASH_BYTES, 'hash') }));

export function encodeLocation(loc: TxLocation): Bytes {
  return encode((w) =>
    loc.kind === 'batch'
      ? w.u8(0).varint(loc.height).varint(loc.index)
      : w.u8(1).varint(loc.ref.i).varint(loc.ref.j),
  );
}

export function decodeLocation(bytes: Bytes): TxLocation {
  return decode(bytes, 'tx location', (r): TxLocation => {
    const tag = r.u8('kind');
    if (tag === 0) return { kind: 'batch', height: r.varint('height'), index: r.varint('index') };
    if (tag === 1) return { kind: 'register', ref: readRef(r) };
    return r.fail('kind', `is ${tag}, not 0 (batch) or 1 (register)`);
  });
}
