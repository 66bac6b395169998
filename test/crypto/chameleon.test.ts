/**
 * The key-exposure-free chameleon hash: round trips on both backends, an independent bigint/noble
 * reference of the spec, tampering, the key-exposure attack on the plain scheme (and its failure
 * on ours), nonce hedging under a broken RNG, and input validation.
 */
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { sha512 } from '@noble/hashes/sha2.js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bigIntToBytes, bytesToBigInt, concatBytes, u32be, utf8 } from '../../src/crypto/bytes.ts';
import {
  type ChameleonOpening,
  chameleonCollision,
  chameleonHash,
  chameleonHashKeyOf,
  decodeOpening,
  encodeOpening,
  generateChameleonKey,
  verifyChameleon,
} from '../../src/crypto/chameleon.ts';
import { invertPublic, mod, CURVE_ORDER as n } from '../../src/crypto/curve/scalar.ts';
import { type CryptoErrorCode, isCryptoError } from '../../src/crypto/errors.ts';
import { deterministicRandom, type RandomBytes } from '../../src/crypto/random.ts';
import { backends, nativeBackend, useCurveBackend } from '../helpers/backends.ts';

const Point = secp256k1.Point;
type P = InstanceType<typeof Point>;
const big = bytesToBigInt;
const ctxA = utf8('patient-block:42|institution:st-mary');
const zeros: RandomBytes = (length) => new Uint8Array(length);

// Independent reference of DESIGN §3 with noble points and bigint, to pin the encoding and algebra.
function refChallenge(y: Uint8Array, ctx: Uint8Array, m: Uint8Array, r: Uint8Array): bigint {
  const tag = utf8('SPCHAIN-CH-v1');
  const data = [u32be(tag.length), tag, y, u32be(ctx.length), ctx, u32be(m.length), m, r];
  return mod(big(sha512(concatBytes(...data))));
}
/** s·G + e·Y: for a collision opening this is the nonce commitment k·G. */
function refCommitment(y: Uint8Array, ctx: Uint8Array, m: Uint8Array, o: ChameleonOpening): P {
  const e = refChallenge(y, ctx, m, o.r);
  return Point.BASE.multiply(big(o.s)).add(Point.fromBytes(y).multiply(e));
}
function refDigest(y: Uint8Array, ctx: Uint8Array, m: Uint8Array, o: ChameleonOpening): bigint {
  return mod(big(o.r) - big(refCommitment(y, ctx, m, o).toBytes(true)));
}
/** The naive solve x = (s1 - s2)/(e2 - e1): right exactly when both openings share the nonce. */
function nonceReuseSolve(y: Uint8Array, ctx: Uint8Array, a: Opened, b: Opened): bigint {
  const e1 = refChallenge(y, ctx, a.m, a.o.r);
  const e2 = refChallenge(y, ctx, b.m, b.o.r);
  return mod((big(a.o.s) - big(b.o.s)) * invertPublic(e2 - e1));
}
type Opened = { m: Uint8Array; o: ChameleonOpening };

function expectCryptoError(f: () => unknown, code: CryptoErrorCode, pattern: RegExp): void {
  let caught: unknown;
  try {
    f();
  } catch (err) {
    caught = err;
  }
  expect(isCryptoError(caught, code), `expected ${code}, got ${String(caught)}`).toBe(true);
  expect((caught as Error).message).toMatch(pattern);
}

function flipBit(bytes: Uint8Array, index: number, bit: number): Uint8Array {
  if (bytes.length === 0) return Uint8Array.of(1 << bit);
  const out = Uint8Array.from(bytes);
  out[index % out.length]! ^= 1 << bit;
  return out;
}

describe.each(backends)('chameleon hash round trip ($name backend)', (backend) => {
  beforeAll(() => useCurveBackend(backend));
  afterAll(() => useCurveBackend(nativeBackend));

  const key = generateChameleonKey(deterministicRandom(`key-${backend.name}`));
  const m1 = utf8('{"resourceType":"Observation","value":42}');
  const m2 = utf8('{"resourceType":"Observation","value":"[redacted]"}');

  it('hashes, verifies and matches the independent reference', () => {
    expect(key.hashKey).toEqual(Point.BASE.multiply(big(key.trapdoor)).toBytes(true));
    expect(chameleonHashKeyOf(key.trapdoor)).toEqual(key.hashKey);
    const { digest, opening } = chameleonHash(key.hashKey, ctxA, m1);
    expect(digest).toHaveLength(32);
    expect(big(digest)).toBe(refDigest(key.hashKey, ctxA, m1, opening));
    expect(verifyChameleon(key.hashKey, ctxA, m1, digest, opening)).toBe(true);
    expect(decodeOpening(encodeOpening(opening))).toEqual(opening);
  });

  it('a collision opens the same digest to a new message, and only to it', () => {
    const { digest, opening } = chameleonHash(key.hashKey, ctxA, m1);
    const opening2 = chameleonCollision(key.trapdoor, ctxA, digest, m2);
    expect(verifyChameleon(key.hashKey, ctxA, m2, digest, opening2)).toBe(true);
    expect(big(digest)).toBe(refDigest(key.hashKey, ctxA, m2, opening2));
    expect(verifyChameleon(key.hashKey, ctxA, m1, digest, opening2)).toBe(false);
    expect(verifyChameleon(key.hashKey, ctxA, m2, digest, opening)).toBe(false);
  });

  it('a chain of collisions all verify against the one digest', () => {
    const { digest, opening } = chameleonHash(key.hashKey, ctxA, m1);
    const chain: Opened[] = [{ m: m1, o: opening }];
    for (let i = 0; i < 5; i++) {
      const m = utf8(`version ${i}`);
      chain.push({ m, o: chameleonCollision(key.trapdoor, ctxA, digest, m) });
    }
    for (const { m, o } of chain)
      expect(verifyChameleon(key.hashKey, ctxA, m, digest, o)).toBe(true);
    expect(new Set(chain.map(({ o }) => big(o.r))).size).toBe(chain.length);
  });

  it('property: hash and collide over random contexts and messages', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 48 }), fc.uint8Array(), fc.uint8Array(), (c, a, b) => {
        const { digest, opening } = chameleonHash(key.hashKey, c, a);
        expect(verifyChameleon(key.hashKey, c, a, digest, opening)).toBe(true);
        const o = chameleonCollision(key.trapdoor, c, digest, b);
        expect(verifyChameleon(key.hashKey, c, b, digest, o)).toBe(true);
      }),
      { numRuns: 30 },
    );
  });
});

describe('tampering never verifies', () => {
  const key = generateChameleonKey(deterministicRandom('tamper'));
  const other = generateChameleonKey(deterministicRandom('other'));

  it('property: a wrong message, context or hash key, or an altered r, s or digest', () => {
    const field = fc.constantFrom('m', 'ctx', 'hashKey', 'r', 's', 'digest');
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 32 }),
        fc.uint8Array({ maxLength: 64 }),
        fc.boolean(),
        field,
        fc.nat(),
        fc.integer({ min: 0, max: 7 }),
        (ctx, m, collide, which, index, bit) => {
          const hashed = chameleonHash(key.hashKey, ctx, m);
          const { digest } = hashed;
          const o = collide ? chameleonCollision(key.trapdoor, ctx, digest, m) : hashed.opening;
          const args: Record<typeof which, Uint8Array> = {
            hashKey: key.hashKey,
            ctx,
            m,
            digest,
            ...o,
          };
          expect(verifyChameleon(args.hashKey, ctx, m, digest, o)).toBe(true);
          if (which === 'hashKey') args.hashKey = other.hashKey;
          else args[which] = flipBit(args[which], index, bit);
          const { hashKey, r, s } = args;
          expect(verifyChameleon(hashKey, args.ctx, args.m, args.digest, { r, s })).toBe(false);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('length prefixes keep the context/message boundary', () => {
    const { digest, opening } = chameleonHash(key.hashKey, utf8('ab'), utf8('c'));
    expect(verifyChameleon(key.hashKey, utf8('ab'), utf8('c'), digest, opening)).toBe(true);
    expect(verifyChameleon(key.hashKey, utf8('a'), utf8('bc'), digest, opening)).toBe(false);
  });
});

describe('key exposure', () => {
  it('the plain hash mG + rY gives the trapdoor away from two openings of one digest', () => {
    const x = big(generateChameleonKey().trapdoor);
    const Y = Point.BASE.multiply(x);
    const [m1, r1, m2] = [0x1111n, mod(big(sha512(utf8('r1')))), 0x2222n];
    const digest = Point.BASE.multiply(m1).add(Y.multiply(r1));
    const r2 = mod(r1 + (m1 - m2) * invertPublic(x)); // the trapdoor holder's collision
    expect(Point.BASE.multiply(m2).add(Y.multiply(r2)).equals(digest)).toBe(true);
    // m1 + r1·x = m2 + r2·x, so anyone who sees both openings solves for x.
    expect(mod((m1 - m2) * invertPublic(r2 - r1))).toBe(x);
  });

  it('two (or three) openings of ours admit no such solve', () => {
    const key = generateChameleonKey();
    const x = big(key.trapdoor);
    const { digest, opening } = chameleonHash(key.hashKey, ctxA, utf8('original'));
    const opened: Opened[] = [{ m: utf8('original'), o: opening }];
    for (const text of ['redacted 1', 'redacted 2']) {
      const m = utf8(text);
      opened.push({ m, o: chameleonCollision(key.trapdoor, ctxA, digest, m) });
    }
    // Each opening carries its own commitment s·G + e·Y = k·G, all different...
    const commitments = opened.map(({ m, o }) => refCommitment(key.hashKey, ctxA, m, o).toHex());
    expect(new Set(commitments).size).toBe(3);
    for (const [a, b] of [
      [0, 1],
      [1, 2],
      [0, 2],
    ] as const) {
      const [oa, ob] = [opened[a]!.o, opened[b]!.o];
      // ...so neither the nonce-reuse solve nor the plain scheme's algebra on (r, s) finds x.
      const candidates = [
        nonceReuseSolve(key.hashKey, ctxA, opened[a]!, opened[b]!),
        mod((big(oa.r) - big(ob.r)) * invertPublic(big(ob.s) - big(oa.s))),
        mod((big(oa.s) - big(ob.s)) * invertPublic(big(ob.r) - big(oa.r))),
      ];
      for (const c of candidates) {
        expect(c).not.toBe(x);
        expect(Point.BASE.multiply(c).toBytes(true)).not.toEqual(key.hashKey);
      }
    }
  });

  it('the solve is sound: a collision with a repeated nonce would leak x', () => {
    // Hand-built openings with one k for two messages, to show the negative results above mean
    // something: with a shared nonce, (s1 - s2)/(e2 - e1) is exactly x.
    const key = generateChameleonKey();
    const x = big(key.trapdoor);
    const { digest } = chameleonHash(key.hashKey, ctxA, utf8('m0'));
    const k = mod(big(sha512(utf8('fixed nonce'))));
    const r = bigIntToBytes(mod(big(digest) + big(Point.BASE.multiply(k).toBytes(true))), 32);
    const forge = (m: Uint8Array): Opened => {
      const s = mod(k - refChallenge(key.hashKey, ctxA, m, r) * x);
      return { m, o: { r, s: bigIntToBytes(s, 32) } };
    };
    const [a, b] = [forge(utf8('m1')), forge(utf8('m2'))];
    expect(verifyChameleon(key.hashKey, ctxA, a.m, digest, a.o)).toBe(true);
    expect(verifyChameleon(key.hashKey, ctxA, b.m, digest, b.o)).toBe(true);
    expect(nonceReuseSolve(key.hashKey, ctxA, a, b)).toBe(x);
  });

  it('nonce reuse is impossible by construction, even with an RNG that returns only zeros', () => {
    const key = generateChameleonKey(deterministicRandom('broken-rng'));
    const x = big(key.trapdoor);
    const { digest } = chameleonHash(key.hashKey, ctxA, utf8('m0'), deterministicRandom('h'));
    const [a, b] = ['m1', 'm2'].map((t): Opened => {
      const m = utf8(t);
      return { m, o: chameleonCollision(key.trapdoor, ctxA, digest, m, zeros) };
    }) as [Opened, Opened];
    expect(verifyChameleon(key.hashKey, ctxA, a.m, digest, a.o)).toBe(true);
    expect(verifyChameleon(key.hashKey, ctxA, b.m, digest, b.o)).toBe(true);
    const ka = refCommitment(key.hashKey, ctxA, a.m, a.o);
    expect(ka.equals(refCommitment(key.hashKey, ctxA, b.m, b.o))).toBe(false);
    expect(nonceReuseSolve(key.hashKey, ctxA, a, b)).not.toBe(x);
    // The same message twice under the broken RNG repeats the whole opening (harmless: same e);
    // with a working RNG the openings differ.
    expect(chameleonCollision(key.trapdoor, ctxA, digest, a.m, zeros)).toEqual(a.o);
    expect(chameleonCollision(key.trapdoor, ctxA, digest, a.m).r).not.toEqual(a.o.r);
  });
});

describe('input validation', () => {
  const key = generateChameleonKey(deterministicRandom('validation'));
  const { digest, opening } = chameleonHash(key.hashKey, ctxA, utf8('m'));
  const N = bigIntToBytes(n, 32);
  const MAX = new Uint8Array(32).fill(0xff);
  const Z = new Uint8Array(32);

  it('decodeOpening rejects wrong lengths and zero or out-of-range scalars, naming the field', () => {
    const good = encodeOpening(opening);
    expect(good).toHaveLength(64);
    for (const len of [0, 63, 65]) {
      expectCryptoError(() => decodeOpening(new Uint8Array(len)), 'INVALID_LENGTH', /64 bytes/);
    }
    const cases: [Uint8Array, CryptoErrorCode, RegExp][] = [
      [concatBytes(Z, opening.s), 'ZERO_SCALAR', /opening r must not be zero/],
      [concatBytes(opening.r, Z), 'ZERO_SCALAR', /opening s must not be zero/],
      [concatBytes(N, opening.s), 'SCALAR_OUT_OF_RANGE', /opening r is not below/],
      [concatBytes(opening.r, MAX), 'SCALAR_OUT_OF_RANGE', /opening s is not below/],
    ];
    for (const [bytes, code, pattern] of cases) {
      expectCryptoError(() => decodeOpening(bytes), code, pattern);
      const o = { r: bytes.slice(0, 32), s: bytes.slice(32) };
      expectCryptoError(() => encodeOpening(o), code, pattern);
      expect(verifyChameleon(key.hashKey, ctxA, utf8('m'), digest, o)).toBe(false);
    }
  });

  it('rejects invalid hash keys in chameleonHash, and verifyChameleon says false', () => {
    let offCurve = 1n; // the smallest x with no point 02 || x on the curve
    for (; ; offCurve++) {
      try {
        Point.fromBytes(concatBytes(Uint8Array.of(2), bigIntToBytes(offCurve, 32)));
      } catch {
        break;
      }
    }
    const cases: [Uint8Array, CryptoErrorCode, RegExp][] = [
      [key.hashKey.slice(1), 'INVALID_LENGTH', /hash key must be 33 bytes/],
      [concatBytes(Uint8Array.of(4), key.hashKey.slice(1)), 'INVALID_POINT', /not a compressed/],
      [concatBytes(Uint8Array.of(2), bigIntToBytes(offCurve, 32)), 'INVALID_POINT', /not a point/],
      [new Uint8Array(33), 'IDENTITY_POINT', /hash key is the identity/],
    ];
    for (const [hashKey, code, pattern] of cases) {
      expectCryptoError(() => chameleonHash(hashKey, ctxA, utf8('m')), code, pattern);
      expect(verifyChameleon(hashKey, ctxA, utf8('m'), digest, opening)).toBe(false);
    }
  });

  it('rejects bad trapdoors, digests, contexts and messages, naming the argument', () => {
    const collide = (t: unknown, c: unknown, d: unknown, m: unknown) => () =>
      chameleonCollision(t as Uint8Array, c as Uint8Array, d as Uint8Array, m as Uint8Array);
    const m = utf8('m');
    expectCryptoError(collide(Z, ctxA, digest, m), 'SCALAR_OUT_OF_RANGE', /chameleon trapdoor/);
    expectCryptoError(collide(N, ctxA, digest, m), 'SCALAR_OUT_OF_RANGE', /chameleon trapdoor/);
    expectCryptoError(collide(Z.slice(1), ctxA, digest, m), 'INVALID_LENGTH', /trapdoor must be/);
    expectCryptoError(collide(key.trapdoor, ctxA, Z, m), 'ZERO_SCALAR', /chameleon digest/);
    expectCryptoError(collide(key.trapdoor, ctxA, N, m), 'SCALAR_OUT_OF_RANGE', /digest/);
    expectCryptoError(collide(key.trapdoor, 'ctx', digest, m), 'INVALID_ARGUMENT', /context/);
    expectCryptoError(collide(key.trapdoor, ctxA, digest, 'm'), 'INVALID_ARGUMENT', /new message/);
    expectCryptoError(
      () => chameleonHash(key.hashKey, ctxA, 'm' as unknown as Uint8Array),
      'INVALID_ARGUMENT',
      /message must be a Uint8Array/,
    );
  });

  it('verifyChameleon returns false, never throws, on malformed input', () => {
    const v = (d: unknown, o: unknown, c: unknown = ctxA, m: unknown = utf8('m')) =>
      verifyChameleon(key.hashKey, c as Uint8Array, m as Uint8Array, d as Uint8Array, o as never);
    expect(v(digest, opening)).toBe(true);
    for (const [d, o, c, m] of [
      [Z, opening],
      [N, opening],
      [digest.slice(1), opening],
      [digest, null],
      [digest, {}],
      [digest, { r: 'r', s: 's' }],
      [digest, opening, 'ctx'],
      [digest, opening, ctxA, null],
      [undefined, opening],
    ] as const) {
      expect(() => v(d, o, c, m)).not.toThrow();
      expect(v(d, o, c, m)).toBe(false);
    }
  });
});
