/**
 * The ciphertext vault (DESIGN section 5, "store"): the encrypted records this institution holds,
 * content-addressed in one LevelDB sublevel.
 *
 *   vt  SHA-256(ciphertext)  ->  sealed( u8 format, bytes capsule, bytes ciphertext )
 *
 * The key is the record tx's `pointer`, so a record found through the ledger is one get away, and
 * a stored envelope is checked against its address on every read. The capsule is kept as the
 * caller encoded it (Umbral's encodeCapsule); the vault does not interpret it. Values are sealed
 * like the ledger store's (values.ts: payload || CRC-32 of sublevel, key and payload).
 *
 * Writes are staged into the caller's atomic batch (`stage`), never written alone: a ciphertext
 * lands together with the record index and the tx that points to it, or not at all.
 */

import { equalBytes, toHex } from '../crypto/bytes.ts';
import { sha256 } from '../crypto/sha256.ts';
import { decode, encode } from '../ledger/codec.ts';
import type { Bytes } from '../ledger/types.ts';
import { type Db, openSublevel, type Sublevel, type WriteOp } from './db.ts';
import { StoreError } from './errors.ts';
import { openSeal, sealIn } from './values.ts';

export const VAULT_SPACE = 'vt';
/** The envelope format this code writes (and the only one it reads). */
export const VAULT_FORMAT = 1;
export const POINTER_BYTES = 32;
/** Bounds on decoding (an encoded Umbral capsule is 104 bytes). */
const MAX_CAPSULE_BYTES = 1024;
const MAX_CIPHERTEXT_BYTES = 256 * 1024 * 1024;

/** One encrypted record: the Umbral capsule (encoded) and nonce || ciphertext || tag. */
export interface VaultEnvelope {
  readonly capsule: Bytes;
  readonly ciphertext: Bytes;
}

/** The address of a ciphertext: SHA-256 of its bytes (the record tx's pointer). */
export function pointerOf(ciphertext: Bytes): Bytes {
  return sha256(ciphertext);
}

function checkPointer(pointer: Bytes): Bytes {
  if (!(pointer instanceof Uint8Array) || pointer.length !== POINTER_BYTES) {
    throw new StoreError('INVALID_ARGUMENT', `vault pointer must be ${POINTER_BYTES} bytes`);
  }
  return pointer;
}

function corruptEntry(pointer: Bytes, problem: string, cause?: unknown): StoreError {
  const where = toHex(pointer.subarray(0, 8));
  return new StoreError(
    'CORRUPT',
    `corrupt vault entry (${where}): ${problem}`,
    { kind: 'vault', key: where },
    cause,
  );
}

export class Vault {
  private readonly space: Sublevel;

  constructor(db: Db) {
    this.space = openSublevel(db, VAULT_SPACE);
  }

  /**
   * Adds the put of `envelope` to `ops` (the caller's atomic batch) and returns its pointer. Putting
   * the same ciphertext twice writes the same bytes under the same key.
   */
  stage(ops: WriteOp[], envelope: VaultEnvelope): Bytes {
    const { capsule, ciphertext } = envelope;
    if (!(capsule instanceof Uint8Array) || capsule.length === 0) {
      throw new StoreError('INVALID_ARGUMENT', 'vault envelope capsule must be non-empty bytes');
    }
    if (capsule.length > MAX_CAPSULE_BYTES) {
      throw new StoreError(
        'INVALID_ARGUMENT',
        `vault envelope capsule exceeds ${MAX_CAPSULE_BYTES} bytes`,
      );
    }
    if (!(ciphertext instanceof Uint8Array) || ciphertext.length === 0) {
      throw new StoreError('INVALID_ARGUMENT', 'vault envelope ciphertext must be non-empty bytes');
    }
    if (ciphertext.length > MAX_CIPHERTEXT_BYTES) {
      throw new StoreError(
        'INVALID_ARGUMENT',
        `vault envelope ciphertext exceeds ${MAX_CIPHERTEXT_BYTES} bytes`,
      );
    }
    const pointer = pointerOf(ciphertext);
    const payload = encode((w) => w.u8(VAULT_FORMAT).bytes(capsule).bytes(ciphertext));
    ops.push({
      type: 'put',
      sublevel: this.space,
      key: pointer,
      value: sealIn(VAULT_SPACE, pointer, payload),
    });
    return pointer;
  }

  /**
   * The envelope stored under `pointer`, or undefined. A value whose seal, format or address does
   * not hold is StoreError CORRUPT naming the pointer's first bytes, never a wrong answer.
   */
  async get(pointer: Bytes): Promise<VaultEnvelope | undefined> {
    const key = checkPointer(pointer);
    const stored = await this.space.get(key);
    if (stored === undefined) return undefined;
    const opened = openSeal(VAULT_SPACE, key, stored);
    if (!opened.ok) throw corruptEntry(key, opened.problem);
    let envelope: VaultEnvelope;
    try {
      envelope = decode(opened.payload, 'vault envelope', (r) => {
        const format = r.u8('format');
        if (format !== VAULT_FORMAT) r.fail('format', `is ${format}, not ${VAULT_FORMAT}`);
        return {
          capsule: r.bytes('capsule', MAX_CAPSULE_BYTES),
          ciphertext: r.bytes('ciphertext', MAX_CIPHERTEXT_BYTES),
        };
      });
    } catch (err) {
      throw corruptEntry(key, (err as Error).message, err);
    }
    if (!equalBytes(pointerOf(envelope.ciphertext), key)) {
      throw corruptEntry(key, 'the ciphertext does not hash to its pointer');
    }
    return envelope;
  }

  async has(pointer: Bytes): Promise<boolean> {
    return this.space.has(checkPointer(pointer));
  }

  async hasMany(pointers: readonly Bytes[]): Promise<boolean[]> {
    return this.space.hasMany(pointers.map(checkPointer));
  }
}
