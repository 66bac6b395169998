/** Domain-separated SHA-256 for ledger objects: H(tag, data) = SHA-256(u8(len tag) || tag || data). */
import { sha256Parts } from '../crypto/sha256.ts';

export const HASH_BYTES = 32;

const encoder = new TextEncoder();
const prefixes = new Map<string, Uint8Array>();

function prefix(tag: string): Uint8Array {
  let p = prefixes.get(tag);
  if (!p) {
    const t = encoder.encode(`spchain/${tag}`);
    p = new Uint8Array(t.length + 1);
    p[0] = t.length;
    p.set(t, 1);
    prefixes.set(tag, p);
  }
  return p;
}

export function ledgerHash(tag: string, ...parts: readonly Uint8Array[]): Uint8Array {
  return sha256Parts([prefix(tag), ...parts]);
}
