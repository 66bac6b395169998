/**
 * chameleonCollisionWithKey: the collision with the published hash key given. Same opening as
 * chameleonCollision for the same randomness (the hedged nonce does not depend on how Y was
 * obtained), valid under the key, and refused when the key is not the trapdoor's.
 */
import { describe, expect, it } from 'vitest';
import { utf8 } from '../../src/crypto/bytes.ts';
import {
  chameleonCollision,
  chameleonCollisionWithKey,
  chameleonHash,
  generateChameleonKey,
  verifyChameleon,
} from '../../src/crypto/chameleon.ts';
import { isCryptoError } from '../../src/crypto/errors.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';

describe('chameleonCollisionWithKey', () => {
  const random = deterministicRandom('chameleon-with-key');
  const key = generateChameleonKey(random);
  const other = generateChameleonKey(random);
  const ctx = utf8('leaf context');
  const { digest } = chameleonHash(key.hashKey, ctx, utf8('first'), random);

  it('opens the digest to the new message, as chameleonCollision does', () => {
    for (const m of ['second', 'third', '']) {
      const msg = utf8(m);
      const seed = `collide ${m}`;
      const keyed = chameleonCollisionWithKey(
        key.trapdoor,
        key.hashKey,
        ctx,
        digest,
        msg,
        deterministicRandom(seed),
      );
      expect(verifyChameleon(key.hashKey, ctx, msg, digest, keyed)).toBe(true);
      expect(verifyChameleon(key.hashKey, ctx, utf8(`${m}!`), digest, keyed)).toBe(false);
      expect(chameleonCollision(key.trapdoor, ctx, digest, msg, deterministicRandom(seed))).toEqual(
        keyed,
      );
    }
  });

  it("refuses a hash key that is not the trapdoor's, returning no opening", () => {
    let err: unknown;
    try {
      chameleonCollisionWithKey(key.trapdoor, other.hashKey, ctx, digest, utf8('x'), random);
    } catch (e) {
      err = e;
    }
    expect(isCryptoError(err, 'CHAMELEON_INVALID')).toBe(true);
    expect(() =>
      chameleonCollisionWithKey(key.trapdoor, new Uint8Array(33), ctx, digest, utf8('x'), random),
    ).toThrow(/chameleon hash key/);
  });
});
