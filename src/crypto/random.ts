import { sha256 } from '@noble/hashes/sha2.js';
import { concatBytes, u32be } from './bytes.ts';

/**
 * The single source of randomness for the crypto core. Every function that needs randomness takes
 * a `RandomBytes` (default: the platform CSPRNG through WebCrypto, in Node and in browsers alike),
 * so tests and simulations can pass a seeded one.
 */
export type RandomBytes = (length: number) => Uint8Array;

const WEBCRYPTO_QUOTA = 65536;

export const systemRandom: RandomBytes = (length) => {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i += WEBCRYPTO_QUOTA) {
    globalThis.crypto.getRandomValues(out.subarray(i, Math.min(length, i + WEBCRYPTO_QUOTA)));
  }
  return out;
};

/**
 * A reproducible stream for tests and seeded simulations: SHA-256(seed || counter) blocks.
 * Never use it for real keys.
 */
export function deterministicRandom(seed: Uint8Array | string): RandomBytes {
  const seedBytes = typeof seed === 'string' ? new TextEncoder().encode(seed) : seed;
  let counter = 0;
  let buffer: Uint8Array = new Uint8Array(0);
  return (length) => {
    while (buffer.length < length) {
      const block = sha256(concatBytes(seedBytes, u32be(counter++)));
      buffer = concatBytes(buffer, block);
    }
    const out = buffer.slice(0, length);
    buffer = buffer.slice(length);
    return out;
  };
}
