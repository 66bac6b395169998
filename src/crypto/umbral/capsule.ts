/**
 * Umbral's KEM (capsules) and DEM, byte-compatible with rust-umbral 0.10 (capsule.rs, dem.rs,
 * pre.rs). A capsule (E, V, s) proves its own well-formedness: s·G = V + h·E with
 * h = H("CAPSULE_POINTS", E, V); the DEM key is HKDF-SHA256 of the compressed shared point, and the
 * ciphertext is nonce(24) || XChaCha20-Poly1305(plaintext, ad = E || V || s).
 */
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { AEAD_NONCE_BYTES, aeadOpen, aeadSeal } from '../aead.ts';
import { concatBytes, equalBytes } from '../bytes.ts';
import { curveBackend, randomNonZeroScalar } from '../curve/backend.ts';
import { decodePoint } from '../curve/point.ts';
import { checkSecretScalar, decodeScalar, encodeScalar, hashToScalar } from '../curve/scalar.ts';
import { CryptoError } from '../errors.ts';
import { type RandomBytes, systemRandom } from '../random.ts';
import { decodePublicKey, type PublicKey, type SecretKey } from './keys.ts';
import { encodeMsgpack, MsgpackReader } from './msgpack.ts';

export interface Capsule {
  readonly e: Uint8Array;
  readonly v: Uint8Array;
  /** s, 32 bytes. */
  readonly s: Uint8Array;
}

export function hashCapsulePoints(e: Uint8Array, v: Uint8Array): bigint {
  return hashToScalar('CAPSULE_POINTS', [e, v]);
}

/** The 98-byte E || V || s used as the DEM's associated data. */
export function capsuleBytesSimple(capsule: Capsule): Uint8Array {
  return concatBytes(capsule.e, capsule.v, capsule.s);
}

export function encodeCapsule(capsule: Capsule): Uint8Array {
  return encodeMsgpack([capsule.e, capsule.v, capsule.s]);
}

/** Decodes a capsule and checks its proof of well-formedness. */
export function decodeCapsule(bytes: Uint8Array): Capsule {
  const r = new MsgpackReader(bytes, 'capsule');
  r.array(3, 'capsule');
  const e = decodePoint(r.bin(33, 'E'), 'capsule E');
  const v = decodePoint(r.bin(33, 'V'), 'capsule V');
  const s = r.bin(32, 's');
  r.end();
  decodeScalar(s, 'capsule s', { nonZero: true });
  const capsule = { e, v, s };
  if (!verifyCapsule(capsule)) {
    throw new CryptoError('CAPSULE_INVALID', 'capsule self-verification failed (s·G ≠ V + h·E)');
  }
  return capsule;
}

export function verifyCapsule(capsule: Capsule): boolean {
  const backend = curveBackend();
  const h = encodeScalar(hashCapsulePoints(capsule.e, capsule.v));
  const rhs = backend.add([capsule.v, backend.mul(capsule.e, h)]);
  return rhs !== null && equalBytes(backend.mulBase(capsule.s), rhs);
}

/** Makes a capsule for `pk` and the 33-byte key seed (the compressed shared point). */
export function encapsulate(
  pk: PublicKey,
  random: RandomBytes,
): { capsule: Capsule; keySeed: Uint8Array } {
  const backend = curveBackend();
  for (;;) {
    const r = randomNonZeroScalar(random);
    const u = randomNonZeroScalar(random);
    const e = backend.mulBase(r);
    const v = backend.mulBase(u);
    const h = encodeScalar(hashCapsulePoints(e, v));
    const s = backend.scalarAdd(u, backend.scalarMul(r, h));
    const rPlusU = backend.scalarAdd(r, u);
    // Either sum is zero with probability 2^-256; draw again rather than emit a degenerate capsule.
    if (s === null || rPlusU === null) continue;
    return { capsule: { e, v, s }, keySeed: backend.mul(pk, rPlusU) };
  }
}

export function openOriginal(sk: SecretKey, capsule: Capsule): Uint8Array {
  const backend = curveBackend();
  const sum = backend.add([capsule.e, capsule.v]);
  if (sum === null) throw new CryptoError('CAPSULE_INVALID', 'capsule E + V is the identity');
  return backend.mul(sum, checkSecretScalar(sk, 'secret key'));
}

function demKey(keySeed: Uint8Array): Uint8Array {
  return hkdf(sha256, keySeed, undefined, undefined, 32);
}

export function demEncrypt(
  keySeed: Uint8Array,
  plaintext: Uint8Array,
  ad: Uint8Array,
  random: RandomBytes,
): Uint8Array {
  const key = demKey(keySeed);
  const nonce = random(AEAD_NONCE_BYTES);
  const sealed = aeadSeal(key, nonce, plaintext, ad);
  key.fill(0);
  return concatBytes(nonce, sealed);
}

export function demDecrypt(
  keySeed: Uint8Array,
  ciphertext: Uint8Array,
  ad: Uint8Array,
): Uint8Array {
  if (!(ciphertext instanceof Uint8Array) || ciphertext.length < AEAD_NONCE_BYTES + 16) {
    throw new CryptoError('DECRYPTION_FAILED', 'ciphertext is too short to hold nonce and tag');
  }
  const key = demKey(keySeed);
  try {
    return aeadOpen(
      key,
      ciphertext.subarray(0, AEAD_NONCE_BYTES),
      ciphertext.subarray(AEAD_NONCE_BYTES),
      ad,
    );
  } finally {
    key.fill(0);
  }
}

/** Encrypts to a public key: returns the capsule and nonce || ciphertext || tag. */
export function encrypt(
  pk: PublicKey,
  plaintext: Uint8Array,
  random: RandomBytes = systemRandom,
): { capsule: Capsule; ciphertext: Uint8Array } {
  const { capsule, keySeed } = encapsulate(decodePublicKey(pk), random);
  const ciphertext = demEncrypt(keySeed, plaintext, capsuleBytesSimple(capsule), random);
  keySeed.fill(0);
  return { capsule, ciphertext };
}

/**
 * Encrypts several plaintexts to one public key under ONE capsule: one KEM (two base-point and one
 * variable-point multiplication) for all of them, and a fresh random 24-byte XChaCha20 nonce per
 * plaintext, so a key is never used twice with one nonce (2^-96 per pair of plaintexts). Each
 * (capsule, ciphertexts[k]) pair is exactly what `encrypt` makes, and decrypts, re-encrypts and
 * verifies the same way, here and in rust-umbral.
 *
 * Whoever can open the capsule (its owner, or the holder of a cfrag of it) can open every
 * ciphertext made with it: use it only for plaintexts that are always disclosed together.
 */
export function encryptMany(
  pk: PublicKey,
  plaintexts: readonly Uint8Array[],
  random: RandomBytes = systemRandom,
): { capsule: Capsule; ciphertexts: Uint8Array[] } {
  const { capsule, keySeed } = encapsulate(decodePublicKey(pk), random);
  try {
    const ad = capsuleBytesSimple(capsule);
    return { capsule, ciphertexts: plaintexts.map((p) => demEncrypt(keySeed, p, ad, random)) };
  } finally {
    keySeed.fill(0);
  }
}

/** Decrypts with the key the capsule was made for. */
export function decryptOriginal(
  sk: SecretKey,
  capsule: Capsule,
  ciphertext: Uint8Array,
): Uint8Array {
  const keySeed = openOriginal(sk, capsule);
  try {
    return demDecrypt(keySeed, ciphertext, capsuleBytesSimple(capsule));
  } finally {
    keySeed.fill(0);
  }
}
