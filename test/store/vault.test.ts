/**
 * The ciphertext vault on a real LevelDB: content addressing (key = SHA-256 of the ciphertext),
 * staging into the caller's atomic batch, and reads that refuse damaged or misplaced entries.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256 } from '@noble/hashes/sha2.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { toHex, utf8 } from '../../src/crypto/bytes.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';
import {
  decodeCapsule,
  decryptOriginal,
  encodeCapsule,
  encrypt,
  generateSecretKey,
  publicKeyOf,
} from '../../src/crypto/umbral/index.ts';
import { encode } from '../../src/ledger/codec.ts';
import { type Db, openDb, openSublevel, type WriteOp } from '../../src/store/db.ts';
import { isStoreError } from '../../src/store/errors.ts';
import { sealIn } from '../../src/store/values.ts';
import { pointerOf, VAULT_SPACE, Vault, type VaultEnvelope } from '../../src/store/vault.ts';

const random = deterministicRandom('vault-test');
let dir: string;
let db: Db;
let vault: Vault;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'spchain-vault-'));
  db = await openDb(join(dir, 'db'));
  vault = new Vault(db);
});

afterEach(async () => {
  await db.close();
  rmSync(dir, { recursive: true, force: true });
});

function envelope(text: string): VaultEnvelope {
  const sk = generateSecretKey(random);
  const { capsule, ciphertext } = encrypt(publicKeyOf(sk), utf8(text), random);
  return { capsule: encodeCapsule(capsule), ciphertext };
}

async function put(...envelopes: VaultEnvelope[]): Promise<Uint8Array[]> {
  const ops: WriteOp[] = [];
  const pointers = envelopes.map((e) => vault.stage(ops, e));
  await db.batch(ops);
  return pointers;
}

async function expectCorrupt(p: Promise<unknown>, problem: RegExp) {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(isStoreError(err, 'CORRUPT'), String(err)).toBe(true);
  expect((err as Error).message).toMatch(problem);
}

describe('vault', () => {
  it('stores envelopes under SHA-256 of their ciphertext and reads them back', async () => {
    const sk = generateSecretKey(random);
    const sealed = encrypt(publicKeyOf(sk), utf8('{"resourceType":"Observation"}'), random);
    const e = { capsule: encodeCapsule(sealed.capsule), ciphertext: sealed.ciphertext };
    const [pointer] = await put(e);
    expect(toHex(pointer!)).toBe(toHex(sha256(sealed.ciphertext)));
    expect(toHex(pointerOf(sealed.ciphertext))).toBe(toHex(pointer!));
    const back = await vault.get(pointer!);
    expect(back).toEqual(e);
    const plain = decryptOriginal(sk, decodeCapsule(back!.capsule), back!.ciphertext);
    expect(new TextDecoder().decode(plain)).toBe('{"resourceType":"Observation"}');
    expect(await vault.has(pointer!)).toBe(true);
    expect(await vault.get(sha256(utf8('absent')))).toBeUndefined();
  });

  it('writes only as part of the caller batch, atomically with its other puts', async () => {
    const side = openSublevel(db, 'xx');
    const ops: WriteOp[] = [];
    const a = vault.stage(ops, envelope('a'));
    const b = vault.stage(ops, envelope('b'));
    ops.push({ type: 'put', sublevel: side, key: utf8('index'), value: a });
    expect(await vault.hasMany([a, b])).toEqual([false, false]);
    await db.batch(ops);
    expect(await vault.hasMany([a, b, sha256(utf8('c'))])).toEqual([true, true, false]);
    expect(toHex((await side.get(utf8('index')))!)).toBe(toHex(a));
  });

  it('is idempotent: the same ciphertext twice is one entry', async () => {
    const e = envelope('same');
    const [p1] = await put(e);
    const [p2] = await put(e);
    expect(toHex(p1!)).toBe(toHex(p2!));
    let n = 0;
    for await (const _ of openSublevel(db, VAULT_SPACE).keys()) n++;
    expect(n).toBe(1);
  });

  it('refuses damaged and misplaced entries (CORRUPT naming the pointer)', async () => {
    const space = openSublevel(db, VAULT_SPACE);
    const [p, q] = await put(envelope('one'), envelope('two'));
    const stored = (await space.get(p!))!;
    // A flipped bit anywhere breaks the seal.
    const flipped = stored.slice();
    flipped[10]! ^= 1;
    await space.put(p!, flipped);
    await expectCorrupt(vault.get(p!), new RegExp(`${toHex(p!.subarray(0, 8))}.*checksum`));
    // A sound entry under another key: the seal binds the key.
    await space.put(q!, stored);
    await expectCorrupt(vault.get(q!), /checksum/);
    // A correctly sealed entry whose ciphertext is not the one its key addresses.
    const other = envelope('three');
    const payload = encode((w) => w.u8(1).bytes(other.capsule).bytes(other.ciphertext));
    await space.put(p!, sealIn(VAULT_SPACE, p!, payload));
    await expectCorrupt(vault.get(p!), /does not hash to its pointer/);
    // An unknown format version.
    const v2 = encode((w) => w.u8(2).bytes(other.capsule).bytes(other.ciphertext));
    await space.put(p!, sealIn(VAULT_SPACE, p!, v2));
    await expectCorrupt(vault.get(p!), /format is 2/);
  });

  it('checks its arguments', async () => {
    const ops: WriteOp[] = [];
    const e = envelope('x');
    const bad: [unknown, RegExp][] = [
      [{ ...e, capsule: new Uint8Array(0) }, /capsule must be non-empty/],
      [{ ...e, ciphertext: new Uint8Array(0) }, /ciphertext must be non-empty/],
      [{ ...e, capsule: new Uint8Array(2000) }, /capsule exceeds/],
      [{ ...e, ciphertext: 'text' }, /ciphertext must be non-empty bytes/],
    ];
    for (const [arg, message] of bad) {
      expect(() => vault.stage(ops, arg as VaultEnvelope)).toThrow(message);
    }
    expect(ops).toEqual([]);
    await expect(vault.get(new Uint8Array(31))).rejects.toThrow(/pointer must be 32 bytes/);
    await expect(vault.has(new Uint8Array(33))).rejects.toThrow(/pointer must be 32 bytes/);
  });
});
