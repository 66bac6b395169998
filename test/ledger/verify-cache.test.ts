import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  chameleonCollision,
  chameleonHash,
  generateChameleonKey,
  verifyChameleon,
} from '../../src/crypto/chameleon.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';
import { verifyChameleonCached } from '../../src/ledger/verify-cache.ts';

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
