/** The native backend and the noble fallback must agree on every operation, bit for bit. */
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { aeadOpen, aeadSeal, usePureJsAead } from '../../src/crypto/aead.ts';
import { bytesToBigInt } from '../../src/crypto/bytes.ts';
import { invertSecret, nobleBackend } from '../../src/crypto/curve/backend.ts';
import { CURVE_ORDER, encodeScalar, isScalarInRange, mod } from '../../src/crypto/curve/scalar.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';
import { nativeBackend } from '../helpers/backends.ts';

const scalar = fc.bigInt({ min: 1n, max: CURVE_ORDER - 1n }).map((k) => encodeScalar(k));

describe('curve backends agree', () => {
  it('mulBase, mul and add', () => {
    fc.assert(
      fc.property(scalar, scalar, (a, b) => {
        const pa = nativeBackend.mulBase(a);
        expect(pa).toEqual(nobleBackend.mulBase(a));
        expect(nativeBackend.mul(pa, b)).toEqual(nobleBackend.mul(pa, b));
        const pb = nativeBackend.mulBase(b);
        expect(nativeBackend.add([pa, pb])).toEqual(nobleBackend.add([pa, pb]));
      }),
      { numRuns: 40 },
    );
  });

  it('P + (-P) is the identity (null) in both', () => {
    const k = encodeScalar(12345n);
    const p = nativeBackend.mulBase(k);
    const minusP = nativeBackend.mulBase(encodeScalar(CURVE_ORDER - 12345n));
    expect(nativeBackend.add([p, minusP])).toBeNull();
    expect(nobleBackend.add([p, minusP])).toBeNull();
  });

  it('scalar add and mul mod n, including a zero sum', () => {
    fc.assert(
      fc.property(scalar, scalar, (a, b) => {
        const expectedSum = mod(bytesToBigInt(a) + bytesToBigInt(b));
        const expectedProduct = encodeScalar(mod(bytesToBigInt(a) * bytesToBigInt(b)));
        for (const backend of [nativeBackend, nobleBackend]) {
          const sum = backend.scalarAdd(a, b);
          expect(sum === null ? 0n : bytesToBigInt(sum)).toBe(expectedSum);
          expect(backend.scalarMul(a, b)).toEqual(expectedProduct);
        }
      }),
      { numRuns: 60 },
    );
    const a = encodeScalar(5n);
    const minusA = encodeScalar(CURVE_ORDER - 5n);
    expect(nativeBackend.scalarAdd(a, minusA)).toBeNull();
    expect(nobleBackend.scalarAdd(a, minusA)).toBeNull();
  });

  it('blinded secret inversion gives a·a⁻¹ = 1', () => {
    const random = deterministicRandom('invert');
    fc.assert(
      fc.property(scalar, (a) => {
        const inv = invertSecret(a, random);
        return bytesToBigInt(nativeBackend.scalarMul(a, inv)) === 1n;
      }),
      { numRuns: 30 },
    );
  });

  it('scalar range check matches bigint comparison at the edges', () => {
    for (const k of [0n, 1n, CURVE_ORDER - 1n, CURVE_ORDER, CURVE_ORDER + 1n, 2n ** 256n - 1n]) {
      const bytes = new Uint8Array(32);
      let v = k;
      for (let i = 31; i >= 0; i--) {
        bytes[i] = Number(v & 0xffn);
        v >>= 8n;
      }
      expect(isScalarInRange(bytes)).toBe(k >= 1n && k < CURVE_ORDER);
    }
  });

  it('ECDSA signatures from either backend verify in the other', () => {
    const sk = encodeScalar(987654321n);
    const pk = nativeBackend.mulBase(sk);
    const digest = new Uint8Array(32).fill(7);
    const entropy = new Uint8Array(32).fill(1);
    const fromNative = nativeBackend.ecdsaSign(digest, sk, entropy);
    const fromNoble = nobleBackend.ecdsaSign(digest, sk, entropy);
    expect(nobleBackend.ecdsaVerify(fromNative, digest, pk)).toBe(true);
    expect(nativeBackend.ecdsaVerify(fromNoble, digest, pk)).toBe(true);
  });
});

describe('XChaCha20-Poly1305: the OpenSSL path equals @noble/ciphers', () => {
  afterAll(() => usePureJsAead(false));

  it('seals to the same bytes and opens each other', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: 24, maxLength: 24 }),
        fc.uint8Array({ maxLength: 3000 }),
        fc.uint8Array({ maxLength: 120 }),
        (key, nonce, plaintext, ad) => {
          usePureJsAead(false);
          const viaNode = aeadSeal(key, nonce, plaintext, ad);
          const reference = xchacha20poly1305(key, nonce, ad).encrypt(plaintext);
          expect(viaNode).toEqual(reference);
          expect(aeadOpen(key, nonce, reference, ad)).toEqual(plaintext);
          usePureJsAead(true);
          expect(aeadSeal(key, nonce, plaintext, ad)).toEqual(reference);
          expect(aeadOpen(key, nonce, viaNode, ad)).toEqual(plaintext);
        },
      ),
      { numRuns: 50 },
    );
  });

  it('rejects a wrong key, nonce, associated data or tag on both paths', () => {
    const key = new Uint8Array(32).fill(1);
    const nonce = new Uint8Array(24).fill(2);
    const sealed = aeadSeal(key, nonce, new Uint8Array([1, 2, 3]), new Uint8Array([9]));
    for (const pure of [false, true]) {
      usePureJsAead(pure);
      expect(() => aeadOpen(new Uint8Array(32), nonce, sealed, new Uint8Array([9]))).toThrow(
        /authentication failed/,
      );
      expect(() => aeadOpen(key, new Uint8Array(24), sealed, new Uint8Array([9]))).toThrow(
        /authentication failed/,
      );
      expect(() => aeadOpen(key, nonce, sealed, new Uint8Array([8]))).toThrow(/authentication/);
      expect(() => aeadOpen(key, nonce, sealed.subarray(0, 10), new Uint8Array([9]))).toThrow();
      expect(() => aeadOpen(key, nonce.subarray(1), sealed, new Uint8Array([9]))).toThrow(
        /24 bytes/,
      );
    }
  });
});
