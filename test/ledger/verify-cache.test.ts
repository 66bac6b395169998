import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  chameleonCollision,
  chameleonHash,
  generateChameleonKey,
  verifyChameleon,
} from '../../src/crypto/chameleon.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';
import type { Bundle } from '../../src/ledger/types.ts';
import {
  chameleonCheckKey,
  internBundle,
  rememberChameleonCheck,
  sameData,
  verifyChameleonCached,
} from '../../src/ledger/verify-cache.ts';

const random = deterministicRandom('verify-cache');
const key = generateChameleonKey(random);
const ctx = new Uint8Array([1, 2, 3]);
const m1 = new Uint8Array([9]);
const m2 = new Uint8Array([8]);
const h = chameleonHash(key.hashKey, ctx, m1, random);
const opening2 = chameleonCollision(key.trapdoor, ctx, h.digest, m2, random);

describe('memoised chameleon checks', () => {
  it('answers exactly as the uncached check, first time and every time after', () => {
    const cases = [
      [m1, h.opening],
      [m2, opening2],
      [m1, opening2],
      [m2, h.opening],
    ] as const;
    for (let round = 0; round < 3; round++) {
      for (const [m, o] of cases) {
        expect(verifyChameleonCached(key.hashKey, ctx, m, h.digest, o)).toBe(
          verifyChameleon(key.hashKey, ctx, m, h.digest, o),
        );
      }
    }
    expect(verifyChameleonCached(key.hashKey, ctx, m2, h.digest, opening2)).toBe(true);
    expect(verifyChameleonCached(key.hashKey, ctx, m1, h.digest, opening2)).toBe(false);
  });

  it('a remembered success never vouches for altered inputs', () => {
    expect(verifyChameleonCached(key.hashKey, ctx, m1, h.digest, h.opening)).toBe(true);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 31 }), fc.integer({ min: 1, max: 255 }), (i, x) => {
        const r = Uint8Array.from(h.opening.r);
        r[i] = r[i]! ^ x;
        const digest = Uint8Array.from(h.digest);
        digest[i] = digest[i]! ^ x;
        return (
          !verifyChameleonCached(key.hashKey, ctx, m1, h.digest, { r, s: h.opening.s }) &&
          !verifyChameleonCached(key.hashKey, ctx, m1, digest, h.opening)
        );
      }),
      { numRuns: 40 },
    );
  });

  it('malformed openings are answered false, not cached into a crash', () => {
    const bad = { r: new Uint8Array(3), s: new Uint8Array(3) };
    expect(verifyChameleonCached(key.hashKey, ctx, m1, h.digest, bad)).toBe(false);
    expect(verifyChameleonCached(key.hashKey, ctx, m1, h.digest, null as never)).toBe(false);
  });
});

describe('a check made in another thread', () => {
  it('is remembered under the key of exactly its inputs, and vouches for nothing else', () => {
    const m3 = new Uint8Array([7]);
    const opening3 = chameleonCollision(key.trapdoor, ctx, h.digest, m3, random);
    const checkedKey = chameleonCheckKey(key.hashKey, ctx, m3, h.digest, opening3);
    rememberChameleonCheck(checkedKey);
    expect(verifyChameleonCached(key.hashKey, ctx, m3, h.digest, { ...opening3 })).toBe(true);
    // Any other input gives another key, checked as usual.
    expect(verifyChameleonCached(key.hashKey, ctx, m1, h.digest, { ...opening3 })).toBe(false);
    expect(verifyChameleonCached(key.hashKey, ctx, m3, h.digest, { ...opening2 })).toBe(false);
    // The key is what the cache would use itself: a bogus opening remembered as checked would be
    // believed, which is why only a key of inputs that passed a check may be given.
    const bogus = { r: opening3.s, s: opening3.r };
    rememberChameleonCheck(chameleonCheckKey(key.hashKey, ctx, m3, h.digest, bogus));
    expect(verifyChameleonCached(key.hashKey, ctx, m3, h.digest, { ...bogus })).toBe(true);
    expect(() => rememberChameleonCheck('not hex')).toThrow(RangeError);
  });
});

describe('memoised chameleon checks on one opening object', () => {
  it('never vouch for other inputs, nor for the same object changed in place', () => {
    const opening = { r: Uint8Array.from(h.opening.r), s: Uint8Array.from(h.opening.s) };
    expect(verifyChameleonCached(key.hashKey, ctx, m1, h.digest, opening)).toBe(true);
    expect(verifyChameleonCached(key.hashKey, ctx, m2, h.digest, opening)).toBe(false);
    expect(verifyChameleonCached(key.hashKey, ctx, m1, h.digest, opening)).toBe(true);
    const other = generateChameleonKey(random);
    expect(verifyChameleonCached(other.hashKey, ctx, m1, h.digest, opening)).toBe(false);
    const message = Uint8Array.from(m1);
    expect(verifyChameleonCached(key.hashKey, ctx, message, h.digest, opening)).toBe(true);
    message[0] = message[0]! ^ 1;
    expect(verifyChameleonCached(key.hashKey, ctx, message, h.digest, opening)).toBe(false);
    opening.s[0] = opening.s[0]! ^ 1;
    expect(verifyChameleonCached(key.hashKey, ctx, m1, h.digest, opening)).toBe(false);
  });
});

describe('one object per bundle content', () => {
  const bundle = (fill: number): Bundle => ({
    institution: 1,
    txs: [
      {
        type: 'medical',
        block: { i: 1, j: 2 },
        institution: 1,
        seq: 3,
        pointer: new Uint8Array(32).fill(fill),
        opening: { r: new Uint8Array(32).fill(5), s: new Uint8Array(32).fill(6) },
        fee: 1,
      },
    ],
    signature: new Uint8Array(64).fill(9),
  });

  it('gives the first object for a copy that is the same data, and never for different data', () => {
    const first = internBundle(bundle(7));
    const copy = bundle(7);
    expect(copy).not.toBe(first);
    expect(internBundle(copy)).toBe(first);
    // Same signature and institution, other content: not replaced.
    const forged = bundle(8);
    expect(internBundle(forged)).toBe(forged);
    const extra = { ...bundle(7), txs: [...bundle(7).txs, ...bundle(7).txs] };
    expect(internBundle(extra)).toBe(extra);
  });

  it('sameData compares bytes, arrays and keys', () => {
    expect(sameData({ a: new Uint8Array([1, 2]) }, { a: new Uint8Array([1, 2]) })).toBe(true);
    expect(sameData({ a: new Uint8Array([1, 2]) }, { a: new Uint8Array([1, 3]) })).toBe(false);
    expect(sameData({ a: 1 }, { a: 1, b: undefined })).toBe(false);
    expect(sameData([1, 2], { 0: 1, 1: 2 })).toBe(false);
    expect(sameData({ a: [1, { b: 'x' }] }, { a: [1, { b: 'x' }] })).toBe(true);
    expect(sameData(new Uint8Array([1]), [1])).toBe(false);
  });
});
