/** Points of secp256k1 as 33-byte compressed SEC1 encodings, validated once at the boundary. */
import { secp256k1, secp256k1_hasher } from '@noble/curves/secp256k1.js';
import { expectBytes, utf8 } from '../bytes.ts';
import { CryptoError } from '../errors.ts';
import { curveBackend } from './backend.ts';

export const POINT_BYTES = 33;

/** Decodes a compressed point, rejecting bad lengths, bad prefixes, off-curve x and the identity. */
export function decodePoint(bytes: Uint8Array, what: string): Uint8Array {
  expectBytes(bytes, what, POINT_BYTES);
  const prefix = bytes[0];
  if (prefix === 0x00) {
    throw new CryptoError('IDENTITY_POINT', `${what} is the identity point`, { what });
  }
  if (prefix !== 0x02 && prefix !== 0x03) {
    throw new CryptoError('INVALID_POINT', `${what} is not a compressed point (prefix ${prefix})`, {
      what,
    });
  }
  if (!curveBackend().isPoint(bytes)) {
    throw new CryptoError('INVALID_POINT', `${what} is not a point on secp256k1`, { what });
  }
  return Uint8Array.from(bytes);
}

export const GENERATOR: Uint8Array = secp256k1.Point.BASE.toBytes(true);

/**
 * Umbral's second generator U = hash_to_curve("POINT_U") with the RFC 9380 suite
 * secp256k1_XMD:SHA-256_SSWU_RO_ and DST "PARAMETERS" (rust-umbral params.rs), so that log_G(U)
 * is unknown.
 */
export const UMBRAL_U: Uint8Array = secp256k1_hasher
  .hashToCurve(utf8('POINT_U'), { DST: 'PARAMETERS' })
  .toBytes(true);
