/**
 * The node's pinned chain with keyblocks (src/node/chain.ts) and sync (sync-items.ts), on real
 * LevelDB stores and real certificates: a chain that pins keyblocks and batches across chunk
 * boundaries is served page by page to a fresh node, which checks every item and ends with the
 * same chain; items out of pinning order, short or misdirected certificates are refused; and a
 * restart rebuilds the keyblock tree and the registrations from the store.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toHex } from '../../src/crypto/bytes.ts';
import { encodeCertificate } from '../../src/ledger/certificate.ts';
import { decodeKeyblock, encodeKeyblock, keyblockHash } from '../../src/ledger/keyblock.ts';
import { mineKeyblock, pinnedNode } from '../../src/ledger/keyblock-tree.ts';
import { batchValueHash, proposeBatch } from '../../src/ledger/replica.ts';
import type { Keyblock, RegisterTx } from '../../src/ledger/types.ts';
import { Chain } from '../../src/node/chain.ts';
import type { GenesisFile } from '../../src/node/genesis-file.ts';
import type { InstitutionKeys } from '../../src/node/keys.ts';
import { createLocalnet } from '../../src/node/localnet.ts';
import { decodeSyncItem, encodeSyncItem, type SyncItem } from '../../src/node/sync-items.ts';
import { certify, localnetConfigs, newPatientRegister } from './keyblock-helpers.ts';

let dir: string;
let file: GenesisFile;
let keys: InstitutionKeys[];
let source: Chain;
/** What the source pinned, in order. */
const history: { kind: 'keyblock' | 'batch'; height: number; item: SyncItem }[] = [];
let patient: RegisterTx;

const open = (name: string) =>
  Chain.open({ dataDir: join(dir, name), genesisFile: file, now: Date.now() });

function mineOn(chain: Chain, miner: number, registers: RegisterTx[] = []): Keyblock {
  const tree = chain.tree;
  const k = keys[miner]!;
  const kb = mineKeyblock(tree, {
    parentId: tree.head,
    miner: { index: miner, signingKey: k.signingKey, signingSecret: k.signingSecret },
    registers,
    time: Date.now(),
    attempts: 10_000_000,
  });
  if (kb === null) throw new Error('no nonce found');
  return kb;
}

async function pinKeyblock(miner: number, registers: RegisterTx[] = []): Promise<void> {
  const kb = mineOn(source, miner, registers);
  expect(source.addKeyblock(kb, Date.now()).ok).toBe(true);
  expect(source.keyblockReady()).toBe(true);
  const value = encodeKeyblock(kb);
  const cert = certify(file.genesis, keys, 'keyblock', kb.height, keyblockHash(kb));
  const pinned = await source.commitKeyblock(value, cert, Date.now());
  expect(pinned?.keyblock.height).toBe(kb.height);
  const item = { kind: 'keyblock' as const, value, certificate: encodeCertificate(cert) };
  history.push({ kind: 'keyblock', height: kb.height, item });
}

async function pinBatch(proposer: number): Promise<void> {
  const height = source.replica.chain.height + 1;
  const value = proposeBatch(source.replica, height, proposer);
  const cert = certify(file.genesis, keys, 'batch', height, batchValueHash(value));
  expect((await source.commit(value, cert))?.batch.height).toBe(height);
  const item = { kind: 'batch' as const, value, certificate: encodeCertificate(cert) };
  history.push({ kind: 'batch', height, item });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'spchain-chain-sync-'));
  const net = await createLocalnet({
    institutions: 4,
    dir,
    patientsPerInstitution: 1,
    kdf: { N: 2 ** 10, r: 8, p: 1 },
    ports: [1, 2, 3, 4],
    params: { chunkSize: 2 },
    mining: null,
    load: null,
  });
  const configs = await localnetConfigs(net);
  file = configs[0]!.genesisFile;
  keys = configs.map((c) => c.keys);
  patient = newPatientRegister(file.genesis, keys[1]!, 'chain-sync-patient');

  // Chunks of 2 keyblocks: kb 1-2 chunk 0, 3-4 chunk 1, 5 chunk 2. A keyblock that starts a new
  // group's reign (4 after 3, 6 after 5) waits for a batch anchored in its parent's chunk.
  source = await open('source');
  await pinBatch(0); // batch 1 on kb 1
  await pinKeyblock(2, [patient]); // kb 2
  await pinKeyblock(1); // kb 3: chunk 1 starts
  expect(source.keyblockReady()).toBe(false);
  const kb4 = mineOn(source, 3);
  expect(source.addKeyblock(kb4, Date.now()).ok).toBe(true);
  expect(source.keyblockReady()).toBe(false); // a candidate, but kb 4's group is not final
  await pinBatch(1); // batch 2 on kb 3
  expect(source.keyblockReady()).toBe(true);
  const value = encodeKeyblock(kb4);
  const cert = certify(file.genesis, keys, 'keyblock', 4, keyblockHash(kb4));
  await source.commitKeyblock(value, cert, Date.now());
  history.push({
    kind: 'keyblock',
    height: 4,
    item: { kind: 'keyblock', value, certificate: encodeCertificate(cert) },
  });
  await pinBatch(2); // batch 3 on kb 4
  await pinKeyblock(0); // kb 5: chunk 2 starts
  await pinBatch(3); // batch 4 on kb 5
}, 120_000);

afterAll(async () => {
  await source?.close();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

describe('keyblocks in the pinned chain', () => {
  it('pins keyblocks with their patients, rewards and chunk counts', () => {
    const c = source.replica.chain;
    expect(c.keyblockHeight).toBe(5);
    expect(c.height).toBe(4);
    expect(c.anchor).toBe(5);
    expect(source.isRegistered(toHex(patient.idHash))).toBe(true);
    expect(source.patientsOf(1)).toContainEqual({ i: 2, j: 0 });
    // Miners 2, 1, 3, 0 each earned a keyblock reward.
    const reward = file.genesis.params.keyblockReward;
    expect(c.accounts.get(3)).toBeGreaterThanOrEqual(1_000_000_000 + reward);
    // Chunk 1 (keyblocks 3 and 4) counts one keyblock each for miners 1 and 3.
    expect(source.replica.histories[1]!.chunks[1]?.keyblocks).toBe(1);
    expect(source.replica.histories[3]!.chunks[1]?.keyblocks).toBe(1);
  });

  it('serves a fresh node every pinned item in pinning order, and it ends with the same chain', async () => {
    const fresh = await open('fresh');
    try {
      const received: string[] = [];
      for (let page = 0; page < 20; page++) {
        const c = fresh.replica.chain;
        const got = await source.readSyncPage({
          fromHeight: c.height + 1,
          fromKeyblock: c.keyblockHeight + 1,
          maxItems: 3,
          maxBytes: 1 << 20,
        });
        for (const bytes of got.items) {
          const item = decodeSyncItem(bytes, 1 << 20);
          const applied = await fresh.applyCertified(item, Date.now());
          expect(applied.verdict).toEqual({ ok: true });
          const pinned = applied.batch?.batch.height ?? applied.keyblock?.keyblock.height;
          received.push(`${item.kind} ${pinned}`);
        }
        if (got.nextHeight === null) break;
      }
      expect(received).toEqual(history.map((h) => `${h.kind} ${h.height}`));
      const a = source.replica.chain;
      const b = fresh.replica.chain;
      expect([b.height, b.keyblockHeight, toHex(b.hash)]).toEqual([
        a.height,
        a.keyblockHeight,
        toHex(a.hash),
      ]);
      expect(pinnedNode(fresh.tree).id).toBe(pinnedNode(source.tree).id);
      expect(fresh.isRegistered(toHex(patient.idHash))).toBe(true);
      expect(fresh.batchGroup()).toEqual(source.batchGroup());
      expect(fresh.replica.histories).toEqual(source.replica.histories);
    } finally {
      await fresh.close();
    }
  });

  it('refuses items out of pinning order and certificates that do not pin them', async () => {
    const fresh = await open('refusing');
    try {
      const at = (kind: string, height: number) =>
        history.find((h) => h.kind === kind && h.height === height)!.item;
      const code = async (item: SyncItem) => {
        const v = (await fresh.applyCertified(item, Date.now())).verdict;
        return v.ok ? 'ok' : v.error.code;
      };
      expect(await code(at('keyblock', 3))).toBe('WRONG_HEIGHT'); // kb 2 first
      const kb2 = at('keyblock', 2);
      const kb2Value = decodeKeyblock(kb2.value);
      const short = certify(file.genesis, keys, 'keyblock', 2, keyblockHash(kb2Value), [0, 1]);
      expect(await code({ ...kb2, certificate: encodeCertificate(short) })).toBe(
        'QUORUM_SHORT_MEMBERS',
      );
      const other = certify(file.genesis, keys, 'keyblock', 2, new Uint8Array(32).fill(7));
      expect(await code({ ...kb2, certificate: encodeCertificate(other) })).toBe('INVALID_VALUE');
      expect(await code(at('batch', 1))).toBe('ok');
      expect(await code(kb2)).toBe('ok');
      expect(await code(at('keyblock', 3))).toBe('ok');
      // Batch 2 is anchored to keyblock 3 (pinned); keyblock 4 before it: its group is not final.
      expect(await code(at('keyblock', 4))).toBe('WRONG_HEIGHT');
      expect(await code(at('batch', 3))).toBe('WRONG_HEIGHT'); // anchored to the unpinned kb 4
      expect(await code(at('batch', 2))).toBe('ok');
      expect(await code(at('keyblock', 4))).toBe('ok');
      // A repeat of a pinned item is nothing new.
      expect(await code(at('keyblock', 2))).toBe('ok');
      expect(fresh.replica.chain.keyblockHeight).toBe(4);
    } finally {
      await fresh.close();
    }
  });

  it('rebuilds the keyblock tree and the registrations from the store on restart', async () => {
    const before = source.replica;
    const pinnedId = pinnedNode(source.tree).id;
    await source.close();
    source = await open('source');
    expect(pinnedNode(source.tree).id).toBe(pinnedId);
    expect(source.replica.chain.keyblockHeight).toBe(before.chain.keyblockHeight);
    expect(toHex(source.replica.chain.hash)).toBe(toHex(before.chain.hash));
    expect(source.replica.histories).toEqual(before.histories);
    expect(source.isRegistered(toHex(patient.idHash))).toBe(true);
    // Mining resumes on the pinned tip: the next keyblock is valid there.
    const next = mineOn(source, 2);
    expect(next.height).toBe(6);
    expect(source.addKeyblock(next, Date.now())).toEqual({ ok: true });
    // The same patient cannot be registered again.
    const again = mineOn(source, 2, [patient]);
    const v = source.addKeyblock(again, Date.now());
    expect(v.ok ? 'ok' : v.error.code).toBe('DUPLICATE_PATIENT');
  });

  it('encodes sync items canonically', () => {
    for (const h of history) {
      expect(decodeSyncItem(encodeSyncItem(h.item), 1 << 20)).toEqual(h.item);
    }
    expect(() => decodeSyncItem(new Uint8Array([9, 0, 0]), 16)).toThrow(/kind/);
  });
});
