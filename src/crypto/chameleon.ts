/**
 * The key-exposure-free chameleon hash of Ateniese and de Medeiros ("On the Key Exposure Problem in
 * Chameleon Hashes", SCN 2004) on secp256k1, for redactable patient blocks.
 *
 * Keys: trapdoor x in [1, n-1], public hash key Y = x·G.
 *   He(Y, ctx, m, r) = SHA-512(u32be(13) || "SPCHAIN-CH-v1" || Y || u32be(|ctx|) || ctx
 *                              || u32be(|m|) || m || r) mod n
 *   F(P)             = (33-byte compressed P, big-endian) mod n
 *   digest           h = r - F(s·G + e·Y) mod n,  e = He(Y, ctx, m, r),  opening (r, s)
 *
 * A collision for m' picks a fresh nonce k, sets r' = h + F(k·G) and s' = k - e'·x with
 * e' = He(Y, ctx, m', r'); then s'·G + e'·Y = k·G, so r' - F(k·G) = h. Unlike the plain
 * g^m·h^r hash (where m1 + r1·x = m2 + r2·x gives x away), two openings of one digest relate only
 * through the unknown nonces: each (r', s') is a Schnorr signature by x on (ctx, m', h) with
 * commitment k·G, so publishing collisions reveals no more than publishing signatures does.
 * That is also why the nonce must never repeat: it is hedged (HMAC of the trapdoor, the digest, the
 * message and fresh randomness), so it differs per message even when the RNG fails.
 *
 * Scalars travel as 32-byte big-endian arrays, all in [1, n-1]; secret ones (x, k) only go through
 * the curve backend's constant-time operations. ctx binds a digest to its place (patient block id,
 * institution), so it cannot be moved to another context.
 */
import { hmac } from '@noble/hashes/hmac.js';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import { bytesToBigInt, concatBytes, expectBytes, u32be, utf8 } from './bytes.ts';
import { curveBackend, randomNonZeroScalar } from './curve/backend.ts';
import { decodePoint } from './curve/point.ts';
import {
  CURVE_ORDER,
  checkSecretScalar,
  decodeScalar,
  encodeScalar,
  isScalarInRange,
  mod,
} from './curve/scalar.ts';
import { CryptoError } from './errors.ts';
import { type RandomBytes, systemRandom } from './random.ts';

export const CHAMELEON_DIGEST_BYTES = 32;
export const CHAMELEON_OPENING_BYTES = 64;

export interface ChameleonKeyPair {
  /** x: 32-byte secret scalar in [1, n-1]; whoever holds it can open a digest to any message. */
  readonly trapdoor: Uint8Array;
  /** Y = x·G: 33-byte compressed point, public. */
  readonly hashKey: Uint8Array;
}

/** The randomness that opens a digest to one message: r and s, 32 bytes each, in [1, n-1]. */
export interface ChameleonOpening {
  readonly r: Uint8Array;
  readonly s: Uint8Array;
}

export interface ChameleonHashResult {
  /** h, 32 bytes in [1, n-1]. */
  readonly digest: Uint8Array;
  readonly opening: ChameleonOpening;
}

const TAG = utf8('SPCHAIN-CH-v1');
const TAG_PREFIX = concatBytes(u32be(TAG.length), TAG);
const NONCE_TAG = utf8('SPCHAIN-CH-v1/nonce');
const NONCE_PREFIX = concatBytes(u32be(NONCE_TAG.length), NONCE_TAG);

function challenge(y: Uint8Array, ctx: Uint8Array, m: Uint8Array, r: Uint8Array): bigint {
  const data = concatBytes(TAG_PREFIX, y, u32be(ctx.length), ctx, u32be(m.length), m, r);
  return mod(bytesToBigInt(sha512(data)));
}

function pointToScalar(p: Uint8Array): bigint {
  return mod(bytesToBigInt(p));
}

/** r - F(s·G + e·Y) mod n for public s, or null when s·G + e·Y is the identity. */
function digestOf(
  y: Uint8Array,
  ctx: Uint8Array,
  m: Uint8Array,
  r: Uint8Array,
  s: Uint8Array,
): bigint | null {
  const backend = curveBackend();
  const e = challenge(y, ctx, m, r);
  // s and e are public (s is published in the opening), so variable-time arithmetic is safe.
  // e = 0 has probability 2^-256, but the backends refuse a zero multiplier, so handle it.
  const p = e === 0n ? backend.mulBase(s) : backend.mulBaseAddPublic(s, y, encodeScalar(e));
  return p === null ? null : mod(bytesToBigInt(r) - pointToScalar(p));
}

export function generateChameleonKey(random: RandomBytes = systemRandom): ChameleonKeyPair {
  const trapdoor = randomNonZeroScalar(random);
  return { trapdoor, hashKey: curveBackend().mulBase(trapdoor) };
}

export function chameleonHashKeyOf(trapdoor: Uint8Array): Uint8Array {
  return curveBackend().mulBase(checkSecretScalar(trapdoor, 'chameleon trapdoor'));
}

/** Hashes a message under a public hash key; anyone can do this, only the trapdoor opens it anew. */
export function chameleonHash(
  hashKey: Uint8Array,
  ctx: Uint8Array,
  message: Uint8Array,
  random: RandomBytes = systemRandom,
): ChameleonHashResult {
  const y = decodePoint(hashKey, 'chameleon hash key');
  expectBytes(ctx, 'chameleon context');
  expectBytes(message, 'message');
  for (;;) {
    const r = randomNonZeroScalar(random);
    const s = randomNonZeroScalar(random);
    const h = digestOf(y, ctx, message, r, s);
    // Identity or h = 0: probability about 2^-255; draw again.
    if (h !== null && h !== 0n) return { digest: encodeScalar(h), opening: { r, s } };
  }
}

/** Whether (r, s) opens the digest to (ctx, message) under the hash key. Never throws. */
export function verifyChameleon(
  hashKey: Uint8Array,
  ctx: Uint8Array,
  message: Uint8Array,
  digest: Uint8Array,
  opening: ChameleonOpening,
): boolean {
  try {
    if (!(ctx instanceof Uint8Array) || !(message instanceof Uint8Array)) return false;
    if (typeof opening !== 'object' || opening === null) return false;
    const y = decodePoint(hashKey, 'chameleon hash key');
    const h = decodeScalar(digest, 'chameleon digest', { nonZero: true });
    const { r, s } = checkOpening(opening);
    return digestOf(y, ctx, message, r, s) === h;
  } catch {
    return false;
  }
}

/**
 * Opens an existing digest to a new message with the trapdoor: returns (r', s') such that
 * verifyChameleon(Y, ctx, newMessage, digest, (r', s')) holds. The result is checked before it is
 * returned, so a fault in the computation cannot publish a bad s' (which could leak x).
 */
export function chameleonCollision(
  trapdoor: Uint8Array,
  ctx: Uint8Array,
  digest: Uint8Array,
  newMessage: Uint8Array,
  random: RandomBytes = systemRandom,
): ChameleonOpening {
  const x = checkSecretScalar(trapdoor, 'chameleon trapdoor');
  return collide(x, curveBackend().mulBase(x), ctx, digest, newMessage, random);
}

/**
 * chameleonCollision with the hash key Y = x·G given (the institution's published key), which
 * saves a base-point multiplication per collision. The self-check runs against Y, so a key that is
 * not the trapdoor's fails it (CryptoError CHAMELEON_INVALID) and no opening is returned.
 */
export function chameleonCollisionWithKey(
  trapdoor: Uint8Array,
  hashKey: Uint8Array,
  ctx: Uint8Array,
  digest: Uint8Array,
  newMessage: Uint8Array,
  random: RandomBytes = systemRandom,
): ChameleonOpening {
  const x = checkSecretScalar(trapdoor, 'chameleon trapdoor');
  return collide(x, decodePoint(hashKey, 'chameleon hash key'), ctx, digest, newMessage, random);
}

function collide(
  x: Uint8Array,
  y: Uint8Array,
  ctx: Uint8Array,
  digest: Uint8Array,
  newMessage: Uint8Array,
  random: RandomBytes,
): ChameleonOpening {
  expectBytes(ctx, 'chameleon context');
  const h = decodeScalar(digest, 'chameleon digest', { nonZero: true });
  expectBytes(newMessage, 'new message');
  const backend = curveBackend();
  const nonceData = concatBytes(
    NONCE_PREFIX,
    digest,
    u32be(ctx.length),
    ctx,
    u32be(newMessage.length),
    newMessage,
    random(32),
  );
  for (let counter = 0; ; counter++) {
    // Hedged nonce: fresh-random normally, and still distinct per (x, h, ctx, m') if the RNG is
    // broken. The counter only moves on in the ~2^-128 cases where a candidate is unusable.
    const k = hmac(sha256, x, concatBytes(nonceData, u32be(counter)));
    if (!isScalarInRange(k)) continue;
    const r = mod(h + pointToScalar(backend.mulBase(k)));
    if (r === 0n) continue;
    const rBytes = encodeScalar(r);
    const e = challenge(y, ctx, newMessage, rBytes);
    if (e === 0n) continue;
    // s' = k - e'·x = k + (n - e')·x, all in constant time on the secret operands.
    const s = backend.scalarAdd(k, backend.scalarMul(x, encodeScalar(CURVE_ORDER - e)));
    if (s === null) continue;
    const opening = { r: rBytes, s };
    if (!verifyChameleon(y, ctx, newMessage, digest, opening)) {
      throw new CryptoError('CHAMELEON_INVALID', 'chameleon collision failed its own check', {});
    }
    return opening;
  }
}

function checkOpening(opening: ChameleonOpening, what = 'chameleon opening'): ChameleonOpening {
  decodeScalar(opening.r, `${what} r`, { nonZero: true });
  decodeScalar(opening.s, `${what} s`, { nonZero: true });
  return opening;
}

/** 64 bytes r || s. */
export function encodeOpening(opening: ChameleonOpening): Uint8Array {
  checkOpening(opening);
  return concatBytes(opening.r, opening.s);
}

export function decodeOpening(bytes: Uint8Array, what = 'chameleon opening'): ChameleonOpening {
  expectBytes(bytes, what, CHAMELEON_OPENING_BYTES);
  return checkOpening({ r: bytes.slice(0, 32), s: bytes.slice(32) }, what);
}
