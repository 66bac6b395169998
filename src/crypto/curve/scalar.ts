/**
 * Scalars of secp256k1 (integers mod the group order n).
 *
 * Public scalars (hash outputs, challenges, proof responses) use bigint arithmetic here.
 * Secret scalars (sk, rk, tk, nonces) never go through these functions: they stay 32-byte arrays
 * and are combined by the curve backend's constant-time operations (see backend.ts).
 */

import { bigIntToBytes, bytesToBigInt, concatBytes, expectBytes, u32be, utf8 } from '../bytes.ts';
import { CryptoError } from '../errors.ts';
import { sha256 } from '../sha256.ts';

export const CURVE_ORDER = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
export const SCALAR_BYTES = 32;

export function mod(a: bigint): bigint {
  const r = a % CURVE_ORDER;
  return r >= 0n ? r : r + CURVE_ORDER;
}

/** Modular inverse by the extended Euclidean algorithm: variable time, public values only. */
export function invertPublic(a: bigint): bigint {
  let [oldR, r] = [mod(a), CURVE_ORDER];
  if (oldR === 0n) throw new CryptoError('ZERO_SCALAR', 'cannot invert zero');
  let [oldS, s] = [1n, 0n];
  while (r !== 0n) {
    const q = oldR / r;
    [oldR, r] = [r, oldR - q * r];
    [oldS, s] = [s, oldS - q * s];
  }
  return mod(oldS);
}

export function encodeScalar(k: bigint): Uint8Array {
  return bigIntToBytes(mod(k), SCALAR_BYTES);
}

export interface DecodeScalarOpts {
  /** Reject zero (keys, nonces and hash-derived scalars are never zero). */
  nonZero?: boolean;
}

/** Decodes a 32-byte big-endian scalar, rejecting values >= n (and zero if asked). */
export function decodeScalar(bytes: Uint8Array, what: string, opts: DecodeScalarOpts = {}): bigint {
  expectBytes(bytes, what, SCALAR_BYTES);
  const k = bytesToBigInt(bytes);
  if (k >= CURVE_ORDER) {
    throw new CryptoError('SCALAR_OUT_OF_RANGE', `${what} is not below the curve order`, { what });
  }
  if (opts.nonZero && k === 0n) {
    throw new CryptoError('ZERO_SCALAR', `${what} must not be zero`, { what });
  }
  return k;
}

const ORDER_BYTES = bigIntToBytes(CURVE_ORDER, SCALAR_BYTES);

/**
 * Whether 32 bytes encode a scalar in [1, n-1], in time independent of the value: a
 * borrow-propagating subtraction of n over all bytes (a borrow out means the value is below n).
 */
export function isScalarInRange(bytes: Uint8Array): boolean {
  if (bytes.length !== SCALAR_BYTES) return false;
  let borrow = 0;
  let nonZero = 0;
  for (let i = SCALAR_BYTES - 1; i >= 0; i--) {
    const d = bytes[i]! - ORDER_BYTES[i]! - borrow;
    borrow = (d >>> 31) & 1;
    nonZero |= bytes[i]!;
  }
  return (borrow & (nonZero === 0 ? 0 : 1)) === 1;
}

/** Checks a secret scalar's encoding without turning it into a bigint. */
export function checkSecretScalar(bytes: Uint8Array, what: string): Uint8Array {
  expectBytes(bytes, what, SCALAR_BYTES);
  if (!isScalarInRange(bytes)) {
    throw new CryptoError('SCALAR_OUT_OF_RANGE', `${what} must be in [1, n-1]`, { what });
  }
  return bytes;
}

/**
 * Reduces a 32-byte digest to a non-zero scalar as k256's `NonZeroScalar::reduce_bytes` does:
 * (w mod (n - 1)) + 1. This is what rust-umbral's hash-to-scalar uses.
 */
export function digestToNonZeroScalar(digest: Uint8Array): bigint {
  return (bytesToBigInt(digest) % (CURVE_ORDER - 1n)) + 1n;
}

/**
 * rust-umbral's ScalarDigest: SHA-256(u32be(len(dst)) || dst || parts...) reduced to a non-zero
 * scalar. Points are passed as their 33-byte compressed encodings.
 */
export function hashToScalar(dst: string, parts: readonly Uint8Array[]): bigint {
  const tag = utf8(dst);
  return digestToNonZeroScalar(sha256(concatBytes(u32be(tag.length), tag, ...parts)));
}
