/**
 * Umbral keys (secp256k1) and Umbral's ECDSA signatures: SHA-256 of the message, RFC 6979 nonces
 * hedged with fresh entropy, low-S, serialised as 64-byte r || s (rust-umbral keys.rs).
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { expectBytes } from '../bytes.ts';
import { curveBackend, randomNonZeroScalar } from '../curve/backend.ts';
import { decodePoint } from '../curve/point.ts';
import { checkSecretScalar, decodeScalar } from '../curve/scalar.ts';
import { CryptoError } from '../errors.ts';
import { type RandomBytes, systemRandom } from '../random.ts';

/** A secret key: 32-byte big-endian scalar in [1, n-1]. */
export type SecretKey = Uint8Array;
/** A public key: 33-byte compressed point. */
export type PublicKey = Uint8Array;

export const SIGNATURE_BYTES = 64;

export function generateSecretKey(random: RandomBytes = systemRandom): SecretKey {
  return randomNonZeroScalar(random);
}

export function decodeSecretKey(bytes: Uint8Array): SecretKey {
  return Uint8Array.from(checkSecretScalar(bytes, 'secret key'));
}

export function decodePublicKey(bytes: Uint8Array, what = 'public key'): PublicKey {
  return decodePoint(bytes, what);
}

export function publicKeyOf(sk: SecretKey): PublicKey {
  return curveBackend().mulBase(checkSecretScalar(sk, 'secret key'));
}

/** Checks the shape of a signature: 64 bytes, r and s in [1, n-1]. */
export function decodeSignature(bytes: Uint8Array, what = 'signature'): Uint8Array {
  expectBytes(bytes, what, SIGNATURE_BYTES);
  decodeScalar(bytes.subarray(0, 32), `${what} r`, { nonZero: true });
  decodeScalar(bytes.subarray(32), `${what} s`, { nonZero: true });
  return Uint8Array.from(bytes);
}

export function signUmbral(
  sk: SecretKey,
  message: Uint8Array,
  random: RandomBytes = systemRandom,
): Uint8Array {
  return curveBackend().ecdsaSign(
    sha256(message),
    checkSecretScalar(sk, 'signing key'),
    random(32),
  );
}

export function verifyUmbral(pk: PublicKey, message: Uint8Array, signature: Uint8Array): boolean {
  if (signature.length !== SIGNATURE_BYTES || pk.length !== 33) return false;
  return curveBackend().ecdsaVerify(signature, sha256(message), pk);
}

export function assertSignature(
  pk: PublicKey,
  message: Uint8Array,
  signature: Uint8Array,
  what: string,
): void {
  if (!verifyUmbral(pk, message, signature)) {
    throw new CryptoError('INVALID_SIGNATURE', `${what} does not verify`, { what });
  }
}
