/**
 * s·G + e·P for public scalars (the chameleon check's one multiplication), which the native backend
 * computes through ECDSA public-key recovery: it must agree bit for bit with the long way
 * (mulBase, mul, add) and with noble's double multiplication, also where the result is the
 * identity. And the byte/bigint conversions it leans on must round-trip.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { bigIntToBytes, bytesToBigInt, toHex } from '../../src/crypto/bytes.ts';
import { nobleBackend } from '../../src/crypto/curve/backend.ts';
import { CURVE_ORDER, encodeScalar, mod } from '../../src/crypto/curve/scalar.ts';
import { nativeBackend } from '../helpers/backends.ts';

const scalarValue = fc.bigInt({ min: 1n, max: CURVE_ORDER - 1n });
const scalar = scalarValue.map((k) => encodeScalar(k));

describe('mulBaseAddPublic', () => {
  it('equals mulBase(s) + mul(P, e) in both backends', () => {
    fc.assert(
      fc.property(scalar, scalar, scalar, (s, e, k) => {
        const p = nativeBackend.mulBase(k);
        const long = nativeBackend.add([nativeBackend.mulBase(s), nativeBackend.mul(p, e)]);
        expect(long).not.toBeNull();
        expect(nativeBackend.mulBaseAddPublic(s, p, e)).toEqual(long);
        expect(nobleBackend.mulBaseAddPublic(s, p, e)).toEqual(long);
      }),
      { numRuns: 60 },
    );
  });

  it('is null where s·G + e·P is the identity (s = -e·k for P = k·G)', () => {
    fc.assert(
      fc.property(scalarValue, scalarValue, (e, k) => {
        const p = nativeBackend.mulBase(encodeScalar(k));
        const s = encodeScalar(mod(-e * k));
        expect(nativeBackend.mulBaseAddPublic(s, p, encodeScalar(e))).toBeNull();
        expect(nobleBackend.mulBaseAddPublic(s, p, encodeScalar(e))).toBeNull();
      }),
      { numRuns: 10 },
    );
  });

  it('covers points of both y parities', () => {
    const parities = new Set<number>();
    for (let k = 1n; parities.size < 2; k++) {
      const p = nativeBackend.mulBase(encodeScalar(k));
      parities.add(p[0]!);
      const s = encodeScalar(k + 7n);
      const e = encodeScalar(k + 11n);
      const long = nativeBackend.add([nativeBackend.mulBase(s), nativeBackend.mul(p, e)]);
      expect(nativeBackend.mulBaseAddPublic(s, p, e)).toEqual(long);
    }
    expect([...parities].sort()).toEqual([2, 3]);
  });
});

describe('bytes and bigints', () => {
  it('round-trip at every length, leading zeros included', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 40 }), (bytes) => {
        const n = bytesToBigInt(bytes);
        let expected = 0n;
        for (const b of bytes) expected = expected * 256n + BigInt(b);
        expect(n).toBe(expected);
        expect(toHex(bigIntToBytes(n, bytes.length))).toBe(toHex(bytes));
      }),
    );
    expect(bytesToBigInt(new Uint8Array(0))).toBe(0n);
    expect(() => bigIntToBytes(256n, 1)).toThrow(/does not fit/);
    expect(() => bigIntToBytes(-1n, 4)).toThrow(/does not fit/);
  });
});
