/**
 * The one small interface behind which secp256k1 arithmetic lives.
 *
 * Points are 33-byte compressed SEC1 encodings, always valid and never the identity; scalars are
 * 32-byte big-endian integers in [1, n-1]. Two implementations:
 * - `native`: libsecp256k1 through the `secp256k1` N-API addon (about 35 µs per multiplication
 *   here). Its pubkey_tweak_mul and pubkey_create use constant-time ladders, and its seckey tweaks
 *   are constant-time scalar arithmetic, so secret scalars are safe on this path.
 * - `noble`: @noble/curves, pure JS, always available (browsers, or when the addon cannot load).
 *   `Point.multiply` is noble's constant-time ladder; scalar arithmetic is JS bigint, which is the
 *   best JavaScript can offer.
 * One operation is variable time on purpose, and named so: mulBaseAddPublic, for the chameleon
 * check (public scalars only), the hottest arithmetic of a validating node.
 */
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { bytesToBigInt } from '../bytes.ts';
import { CryptoError } from '../errors.ts';
import type { RandomBytes } from '../random.ts';
import { CURVE_ORDER, encodeScalar, invertPublic, isScalarInRange, mod } from './scalar.ts';

export interface CurveBackend {
  readonly name: 'native' | 'noble';
  /** k·G in constant time. */
  mulBase(k: Uint8Array): Uint8Array;
  /** k·P in constant time. */
  mul(p: Uint8Array, k: Uint8Array): Uint8Array;
  /** The sum of the points, or null when it is the identity. */
  add(points: readonly Uint8Array[]): Uint8Array | null;
  /**
   * s·G + e·P, or null when it is the identity, in VARIABLE time: for public scalars only (a
   * chameleon check's opening and challenge), never a secret.
   */
  mulBaseAddPublic(s: Uint8Array, p: Uint8Array, e: Uint8Array): Uint8Array | null;
  /** Whether the bytes are a valid compressed point (on the curve, not the identity). */
  isPoint(p: Uint8Array): boolean;
  /** (a + b) mod n in constant time; null when the result is zero. */
  scalarAdd(a: Uint8Array, b: Uint8Array): Uint8Array | null;
  /** (a · b) mod n in constant time. */
  scalarMul(a: Uint8Array, b: Uint8Array): Uint8Array;
  /**
   * ECDSA over a 32-byte digest: RFC 6979 nonce hedged with 32 bytes of fresh entropy, low-S,
   * 64-byte r || s.
   */
  ecdsaSign(digest: Uint8Array, sk: Uint8Array, entropy: Uint8Array): Uint8Array;
  /** ECDSA verification of a 64-byte low-S signature over a 32-byte digest. */
  ecdsaVerify(signature: Uint8Array, digest: Uint8Array, pk: Uint8Array): boolean;
}

const Point = secp256k1.Point;

export const nobleBackend: CurveBackend = {
  name: 'noble',
  mulBase: (k) => Point.BASE.multiply(bytesToBigInt(k)).toBytes(true),
  mul: (p, k) => Point.fromBytes(p).multiply(bytesToBigInt(k)).toBytes(true),
  add(points) {
    let acc = Point.ZERO;
    for (const p of points) acc = acc.add(Point.fromBytes(p));
    return acc.is0() ? null : acc.toBytes(true);
  },
  mulBaseAddPublic(s, p, e) {
    const q = Point.BASE.mulAddUnsafe(bytesToBigInt(s), Point.fromBytes(p), bytesToBigInt(e));
    return q.is0() ? null : q.toBytes(true);
  },
  isPoint(p) {
    if (p.length !== 33) return false;
    try {
      return !Point.fromBytes(p).is0();
    } catch {
      return false;
    }
  },
  scalarAdd(a, b) {
    const r = mod(bytesToBigInt(a) + bytesToBigInt(b));
    return r === 0n ? null : encodeScalar(r);
  },
  scalarMul: (a, b) => encodeScalar(mod(bytesToBigInt(a) * bytesToBigInt(b))),
  ecdsaSign: (digest, sk, entropy) =>
    secp256k1.sign(digest, sk, { prehash: false, lowS: true, extraEntropy: entropy }),
  ecdsaVerify(signature, digest, pk) {
    try {
      return secp256k1.verify(signature, digest, pk, { prehash: false, lowS: true });
    } catch {
      return false;
    }
  },
};

/** The subset of the `secp256k1` addon's API used here (it mutates its first argument in place). */
interface Secp256k1Addon {
  publicKeyCreate(sk: Uint8Array, compressed?: boolean): Uint8Array;
  publicKeyTweakMul(pk: Uint8Array, tweak: Uint8Array, compressed?: boolean): Uint8Array;
  publicKeyCombine(pks: Uint8Array[], compressed?: boolean): Uint8Array;
  publicKeyVerify(pk: Uint8Array): boolean;
  privateKeyTweakAdd(sk: Uint8Array, tweak: Uint8Array): Uint8Array;
  privateKeyTweakMul(sk: Uint8Array, tweak: Uint8Array): Uint8Array;
  ecdsaSign(
    digest: Uint8Array,
    sk: Uint8Array,
    opts: { data: Uint8Array },
  ): { signature: Uint8Array; recid: number };
  ecdsaVerify(signature: Uint8Array, digest: Uint8Array, pk: Uint8Array): boolean;
  ecdsaRecover(
    signature: Uint8Array,
    recid: number,
    digest: Uint8Array,
    compressed?: boolean,
  ): Uint8Array;
}

/**
 * s·G + e·P by libsecp256k1's variable-time double multiplication, reached through ECDSA public-key
 * recovery: for a signature (r, σ) over digest z with R the point of x-coordinate r, recovery
 * returns r⁻¹·(σ·R − z·G). Taking R = P (r = x(P), the recovery id its y parity), σ = e·r and
 * z = −s·r gives e·P + s·G in one call, against three for mulBase, mul and add. Null when P's x is
 * not below n (probability about 2^-128) or the result is the identity: the caller then computes
 * it the long way.
 */
function recoverMulBaseAdd(
  addon: Secp256k1Addon,
  s: Uint8Array,
  p: Uint8Array,
  e: Uint8Array,
): Uint8Array | null {
  const r = bytesToBigInt(p.subarray(1));
  if (r === 0n || r >= CURVE_ORDER || (p[0] !== 2 && p[0] !== 3)) return null;
  const signature = new Uint8Array(64);
  signature.set(encodeScalar(r), 0);
  signature.set(encodeScalar(bytesToBigInt(e) * r), 32);
  try {
    return addon.ecdsaRecover(signature, p[0] - 2, encodeScalar(-bytesToBigInt(s) * r), true);
  } catch {
    return null;
  }
}

export function makeNativeBackend(addon: Secp256k1Addon): CurveBackend {
  return {
    name: 'native',
    mulBase: (k) => addon.publicKeyCreate(k, true),
    mul: (p, k) => addon.publicKeyTweakMul(p, k, true),
    add(points) {
      if (points.length === 1) return points[0]!;
      try {
        return addon.publicKeyCombine(points as Uint8Array[], true);
      } catch {
        return null; // libsecp256k1 refuses to return the point at infinity
      }
    },
    mulBaseAddPublic(s, p, e) {
      const quick = recoverMulBaseAdd(addon, s, p, e);
      if (quick !== null) return quick;
      try {
        return addon.publicKeyCombine(
          [addon.publicKeyCreate(s, true), addon.publicKeyTweakMul(p, e, true)],
          true,
        );
      } catch {
        return null; // the identity
      }
    },
    isPoint: (p) => p.length === 33 && addon.publicKeyVerify(p),
    scalarAdd(a, b) {
      try {
        return addon.privateKeyTweakAdd(Uint8Array.from(a), b);
      } catch {
        return null; // the sum is zero
      }
    },
    scalarMul: (a, b) => addon.privateKeyTweakMul(Uint8Array.from(a), b),
    ecdsaSign: (digest, sk, entropy) => addon.ecdsaSign(digest, sk, { data: entropy }).signature,
    ecdsaVerify(signature, digest, pk) {
      try {
        // libsecp256k1 rejects high-S signatures, as noble does with lowS and k256 does.
        return addon.ecdsaVerify(signature, digest, pk);
      } catch {
        return false; // r or s out of range
      }
    },
  };
}

/**
 * Loads the addon without a static import, so that bundles for the browser carry no Node-only
 * code: `process.getBuiltinModule` exists only in Node (>= 22.3).
 */
function loadNativeBackend(): CurveBackend | null {
  try {
    const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } })
      .process;
    const mod = proc?.getBuiltinModule?.('node:module') as
      | { createRequire(url: string): (id: string) => unknown }
      | undefined;
    if (!mod) return null;
    const addon = mod.createRequire(import.meta.url)('secp256k1/bindings') as Secp256k1Addon;
    const backend = makeNativeBackend(addon);
    // Self-test against noble before trusting it.
    const k = encodeScalar(0x1234567890abcdefn);
    const p = nobleBackend.mulBase(k);
    if (!equal(backend.mulBase(k), p) || !equal(backend.mul(p, k), nobleBackend.mul(p, k))) {
      return null;
    }
    const e = encodeScalar(0xfedcba0987654321n);
    const q = backend.mulBaseAddPublic(e, p, k);
    if (q === null || !equal(q, nobleBackend.mulBaseAddPublic(e, p, k)!)) return null;
    return backend;
  } catch {
    return null;
  }
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

let active: CurveBackend = loadNativeBackend() ?? nobleBackend;

/** The backend in use: native when the addon loaded, noble otherwise. */
export function curveBackend(): CurveBackend {
  return active;
}

/** Switches the backend (tests compare both; the browser bundle uses noble). */
export function useCurveBackend(backend: CurveBackend): void {
  active = backend;
}

/**
 * Inverts a secret scalar mod n without exposing it to variable-time code: the value is blinded by
 * a random factor b with constant-time multiplication, the blinded product is inverted (variable
 * time, but it reveals nothing about a), and the blind is multiplied back in.
 */
export function invertSecret(a: Uint8Array, random: RandomBytes): Uint8Array {
  const backend = curveBackend();
  const b = randomNonZeroScalar(random);
  const blinded = bytesToBigInt(backend.scalarMul(a, b));
  if (blinded === 0n) throw new CryptoError('ZERO_SCALAR', 'cannot invert zero');
  return backend.scalarMul(encodeScalar(invertPublic(blinded)), b);
}

/** A uniformly random scalar in [1, n-1] by rejection sampling. */
export function randomNonZeroScalar(random: RandomBytes): Uint8Array {
  for (;;) {
    const bytes = random(32);
    if (isScalarInRange(bytes)) return bytes;
  }
}
