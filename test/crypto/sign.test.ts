import { secp256k1 } from '@noble/curves/secp256k1.js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CURVE_ORDER, encodeScalar } from '../../src/crypto/curve/scalar.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';
import {
  decodeSignature,
  generateSigningKey,
  sign,
  signingDigest,
  signingPublicKey,
  verify,
} from '../../src/crypto/sign.ts';
import { backends, nativeBackend, useCurveBackend } from '../helpers/backends.ts';

const msg = new TextEncoder().encode('medical tx');

describe.each(backends)('signatures ($name backend)', (backend) => {
  beforeAll(() => useCurveBackend(backend));
  afterAll(() => useCurveBackend(nativeBackend));
  const key = generateSigningKey(deterministicRandom('signer'));

  it('signs and verifies; the public key is derived consistently', () => {
    expect(signingPublicKey(key.secretKey)).toEqual(key.publicKey);
    const sig = sign(key.secretKey, 'spchain/tx', msg);
    expect(sig.length).toBe(64);
    expect(verify(key.publicKey, 'spchain/tx', msg, sig)).toBe(true);
  });

  it('is an ordinary low-S ECDSA signature over the domain digest (noble agrees)', () => {
    const sig = sign(key.secretKey, 'spchain/tx', msg);
    const digest = signingDigest('spchain/tx', msg);
    expect(secp256k1.verify(sig, digest, key.publicKey, { prehash: false, lowS: true })).toBe(true);
  });

  it('rejects another domain, message, key, or any altered byte', () => {
    const sig = sign(key.secretKey, 'spchain/tx', msg);
    const other = generateSigningKey(deterministicRandom('other'));
    expect(verify(key.publicKey, 'spchain/vote', msg, sig)).toBe(false);
    expect(verify(other.publicKey, 'spchain/tx', msg, sig)).toBe(false);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 63 }), fc.integer({ min: 1, max: 255 }), (i, x) => {
        const bad = Uint8Array.from(sig);
        bad[i] = bad[i]! ^ x;
        return !verify(key.publicKey, 'spchain/tx', msg, bad);
      }),
      { numRuns: 60 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 64 }), (m) =>
        m.length === msg.length && m.every((b, i) => b === msg[i])
          ? true
          : !verify(key.publicKey, 'spchain/tx', m, sig),
      ),
      { numRuns: 60 },
    );
  });

  it('rejects the high-S twin of a valid signature (no malleability)', () => {
    const sig = sign(key.secretKey, 'spchain/tx', msg);
    const s = BigInt(`0x${Buffer.from(sig.subarray(32)).toString('hex')}`);
    const twin = Uint8Array.from(sig);
    twin.set(encodeScalar(CURVE_ORDER - s), 32);
    expect(verify(key.publicKey, 'spchain/tx', msg, twin)).toBe(false);
  });

  it('never throws on malformed input', () => {
    const sig = sign(key.secretKey, 'spchain/tx', msg);
    expect(verify(key.publicKey, 'spchain/tx', msg, sig.subarray(1))).toBe(false);
    expect(verify(new Uint8Array(33), 'spchain/tx', msg, sig)).toBe(false);
    expect(verify(key.publicKey, 'spchain/tx', msg, new Uint8Array(64))).toBe(false);
    expect(verify(key.publicKey, 'spchain/tx', msg, new Uint8Array(64).fill(0xff))).toBe(false);
  });
});

describe('decodeSignature', () => {
  it('rejects wrong lengths and out-of-range r or s, naming the field', () => {
    expect(() => decodeSignature(new Uint8Array(63))).toThrow(/64 bytes/);
    const zeroR = new Uint8Array(64);
    zeroR[63] = 1;
    expect(() => decodeSignature(zeroR)).toThrow(/signature r must not be zero/);
    const bigS = new Uint8Array(64);
    bigS[0] = 1;
    bigS.fill(0xff, 32);
    expect(() => decodeSignature(bigS)).toThrow(/signature s is not below the curve order/);
  });
});
