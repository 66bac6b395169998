import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { concatBytes, toHex, utf8 } from '../../src/crypto/bytes.ts';
import { nativeSha256, sha256, sha256Parts } from '../../src/crypto/sha256.ts';

describe('sha256', () => {
  it('is the native implementation in Node, and gives the FIPS 180-2 vectors', () => {
    expect(nativeSha256).toBe(true);
    expect(toHex(sha256(utf8('abc')))).toBe(
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
    expect(toHex(sha256(new Uint8Array(0)))).toBe(
      'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    );
  });

  it('agrees with @noble/hashes on any input, whole or in parts', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 5000 }), { maxLength: 5 }), (parts) => {
        const whole = concatBytes(...parts);
        expect(sha256(whole)).toEqual(nobleSha256(whole));
        expect(sha256Parts(parts)).toEqual(nobleSha256(whole));
      }),
    );
  });

  it('returns a plain Uint8Array of its own, not a view of a shared buffer', () => {
    const a = sha256(utf8('one'));
    const b = sha256(utf8('two'));
    expect(Object.getPrototypeOf(a)).toBe(Uint8Array.prototype);
    expect(a.byteOffset).toBe(0);
    expect(a.buffer.byteLength).toBe(32);
    a.fill(0);
    expect(toHex(b)).toBe(toHex(nobleSha256(utf8('two'))));
  });
});
