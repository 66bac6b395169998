/**
 * SHA-256 on the fastest implementation at hand. In Node it is the native one (`crypto.hash`,
 * about 5 µs for 4 KiB where @noble/hashes takes about 45, and 27 µs for 30 KiB where noble
 * takes 230: the ciphertext pointers, content hashes and ledger hashes of every record go through
 * here); elsewhere (the portal's browser bundle) it is @noble/hashes. Node's module is reached
 * through `process.getBuiltinModule`, as the curve backend reaches its addon, so a browser bundle
 * carries no Node-only code; and the native function is trusted only after it agrees with noble on
 * a known input. Both give the same bytes (test/crypto/sha256.test.ts).
 */
import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js';
import { concatBytes } from './bytes.ts';

type OneShot = (data: Uint8Array) => Uint8Array;

function loadNative(): OneShot | null {
  try {
    const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } })
      .process;
    const crypto = proc?.getBuiltinModule?.('node:crypto') as
      | { hash?: (algorithm: string, data: Uint8Array, encoding: 'buffer') => Uint8Array }
      | undefined;
    const hash = crypto?.hash;
    if (typeof hash !== 'function') return null;
    // A copy: Node's small Buffers share a pool, and a caller may keep or change what it gets.
    const native: OneShot = (data) => new Uint8Array(hash('sha256', data, 'buffer'));
    const probe = new TextEncoder().encode('spchain sha256 self-test');
    const a = native(probe);
    const b = nobleSha256(probe);
    return a.length === 32 && a.every((v, k) => v === b[k]) ? native : null;
  } catch {
    return null;
  }
}

const native = loadNative();
const oneShot: OneShot = native ?? ((data) => nobleSha256(data));

/** Whether the native implementation is in use (tests and the crypto benchmark). */
export const nativeSha256 = native !== null;

/** SHA-256 of `data`. */
export function sha256(data: Uint8Array): Uint8Array {
  return oneShot(data);
}

/** SHA-256 of the concatenation of `parts`. */
export function sha256Parts(parts: readonly Uint8Array[]): Uint8Array {
  return oneShot(parts.length === 1 ? parts[0]! : concatBytes(...parts));
}
