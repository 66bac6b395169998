/**
 * Signatures for transactions, votes and blocks: ECDSA on secp256k1 over a domain-separated
 * SHA-256 digest, low-S, 64-byte r || s, hedged RFC 6979 nonces.
 *
 * Chosen by measured verify time on this 2-core machine (Node 24, one core, 200-byte messages):
 *                                            bench:crypto run   standalone probe
 *   libsecp256k1 ECDSA via the N-API addon        45 µs              64 µs
 *   node:crypto Ed25519 (OpenSSL, KeyObject)      65 µs             115 µs
 *   @noble/curves Ed25519                          -              1,716 µs
 *   @noble/curves secp256k1 Schnorr                -              1,842 µs
 * so libsecp256k1 ECDSA verifies 1.4-1.8x faster than the best Ed25519 we have, and it is the curve the
 * Umbral keys already use (one backend, one key type for patients and institutions). Batch
 * verification does not pay here: ECDSA has none, node:crypto has no batch Ed25519, and any pure-JS
 * batch verifier costs more than one native verify per signature. libsecp256k1 rejects high-S signatures, which removes ECDSA's
 * malleability (a tx hash cannot be changed by flipping s). Compact consensus certificates are one
 * signature per member over a batch root, not one per tx (ledger).
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { concatBytes, expectBytes, u32be, utf8 } from './bytes.ts';
import { curveBackend, randomNonZeroScalar } from './curve/backend.ts';
import { decodePoint } from './curve/point.ts';
import { checkSecretScalar } from './curve/scalar.ts';
import { CryptoError } from './errors.ts';
import { type RandomBytes, systemRandom } from './random.ts';
import { decodeSignature, SIGNATURE_BYTES } from './umbral/keys.ts';

export const SIGNATURE_SCHEME = 'ecdsa-secp256k1-sha256';
export { SIGNATURE_BYTES };

export interface SigningKeyPair {
  readonly secretKey: Uint8Array;
  readonly publicKey: Uint8Array;
}

export function generateSigningKey(random: RandomBytes = systemRandom): SigningKeyPair {
  const secretKey = randomNonZeroScalar(random);
  return { secretKey, publicKey: curveBackend().mulBase(secretKey) };
}

export function signingPublicKey(secretKey: Uint8Array): Uint8Array {
  return curveBackend().mulBase(checkSecretScalar(secretKey, 'signing key'));
}

/** SHA-256(u32be(len domain) || domain || message): a signature for one purpose is useless for another. */
export function signingDigest(domain: string, message: Uint8Array): Uint8Array {
  if (domain.length === 0) throw new CryptoError('INVALID_ARGUMENT', 'signing domain is empty');
  const tag = utf8(domain);
  return sha256(concatBytes(u32be(tag.length), tag, message));
}

export function sign(
  secretKey: Uint8Array,
  domain: string,
  message: Uint8Array,
  random: RandomBytes = systemRandom,
): Uint8Array {
  expectBytes(message, 'message');
  return curveBackend().ecdsaSign(
    signingDigest(domain, message),
    checkSecretScalar(secretKey, 'signing key'),
    random(32),
  );
}

/** False for any wrong or malformed signature or key; never throws on bad input. */
export function verify(
  publicKey: Uint8Array,
  domain: string,
  message: Uint8Array,
  signature: Uint8Array,
): boolean {
  if (!(publicKey instanceof Uint8Array) || !(signature instanceof Uint8Array)) return false;
  if (publicKey.length !== 33 || signature.length !== SIGNATURE_BYTES) return false;
  return curveBackend().ecdsaVerify(signature, signingDigest(domain, message), publicKey);
}

/** Validates a signing public key's encoding (33-byte compressed point). */
export function decodeSigningPublicKey(bytes: Uint8Array): Uint8Array {
  return decodePoint(bytes, 'signing public key');
}

export { decodeSignature };
