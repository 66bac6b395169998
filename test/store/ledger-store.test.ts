/**
 * The LevelDB ledger store against a real LevelDB in a temp directory: a small chain made with the
 * ledger's own authoring and validation code (keyblocks mined and pinned through the keyblock
 * tree, batches validated with validateBatch over loadBatchContext), persisted, then read back.
 */
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Level } from 'level';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toHex } from '../../src/crypto/bytes.ts';
import { MerkleTree } from '../../src/crypto/merkle.ts';
import { makeLeafTx, makeRecordTx, makeRegisterTx } from '../../src/ledger/author.ts';
import {
  batchHash,
  encodeBatch,
  refKey,
  txInclusion,
  validateBatch,
  verifyTxInclusion,
} from '../../src/ledger/batch.ts';
import { makeCertificate, signVote } from '../../src/ledger/certificate.ts';
import { evidenceRoot } from '../../src/ledger/evidence.ts';
import { keyblockHash } from '../../src/ledger/keyblock.ts';
import {
  addKeyblock,
  createKeyblockTree,
  type KeyblockTree,
  mineKeyblock,
  pinKeyblock,
} from '../../src/ledger/keyblock-tree.ts';
import {
  addLeaf,
  appendRecord,
  createMicroblock,
  type Microblock,
} from '../../src/ledger/microblock.ts';
import { signBundle, txHash } from '../../src/ledger/tx.ts';
import type {
  BatchTx,
  Bytes,
  Certificate,
  Evidence,
  Keyblock,
  MedicalTx,
  RegisterTx,
  TxBatch,
} from '../../src/ledger/types.ts';
import {
  chunkedProof,
  encodeStoredMicroblock,
  isStoreError,
  LedgerStore,
  PROOF_CHUNK,
  SPACES,
  type SpaceKind,
  sealValue,
  storeKeys,
} from '../../src/store/ledger-store.ts';
import { makeNetwork, makePatient } from '../helpers/ledger-fixtures.ts';

const { genesis, institutions, random } = makeNetwork(4, 'store', { initialTarget: 2n ** 255n });
const members = (i: number) => genesis.members[i];
/** The consensus group batch evidence is judged under. */
const group = genesis.members.map((m) => ({
  member: m.index,
  signingKey: m.signingKey,
  reputation: 1,
}));
const [a, b, c] = institutions as [
  (typeof institutions)[0],
  (typeof institutions)[0],
  (typeof institutions)[0],
];
const pointer = () => random(32);

/** 3 of 4 members precommit `value`: a quorum certificate as the BFT layer would make it. */
function certify(kind: Certificate['kind'], height: number, value: Bytes): Certificate {
  const subject = { kind, height, round: 0, value };
  return makeCertificate(
    subject,
    institutions.slice(0, 3).map((inst) => ({
      member: inst.index,
      signature: signVote(
        inst.signingSecret,
        genesis.chainId,
        { ...subject, type: 'precommit' },
        random,
      ),
    })),
  );
}

interface Patient {
  keys: ReturnType<typeof makePatient>;
  tx: RegisterTx;
}

// In-memory mirror of the chain: what the store must give back.
const patients: Patient[] = [];
const memory = new Map<string, Microblock>();
const keyblocks: Keyblock[] = [];
const batches: TxBatch[] = [];
const certificates = new Map<string, Certificate>();
let tree: KeyblockTree = createKeyblockTree(genesis);

let dir: string;
let store: LedgerStore;

async function openStore(path = join(dir, 'ledger')): Promise<LedgerStore> {
  try {
    return await LedgerStore.open(path);
  } catch (err) {
    throw new Error(`LevelDB could not open in ${path}: ${(err as Error).message}`);
  }
}

function registerPatients(homes: (typeof a)[]): RegisterTx[] {
  return homes.map((home) => {
    const keys = makePatient(random);
    const tx = makeRegisterTx({
      chainId: genesis.chainId,
      idHash: random(32),
      home,
      patient: keys,
      fee: 1,
      random,
    });
    patients.push({ keys, tx });
    return tx;
  });
}

function mine(registers: RegisterTx[], t: KeyblockTree = tree): Keyblock {
  const parent = t.nodes.get(t.head)!;
  const kb = mineKeyblock(t, {
    parentId: t.head,
    miner: { index: a.index, signingKey: a.member.signingKey, signingSecret: a.signingSecret },
    registers,
    time: parent.time + 1000,
    attempts: 100_000,
    random,
  });
  if (!kb) throw new Error('no nonce found');
  return kb;
}

function blocksOf(kb: Keyblock): Microblock[] {
  return kb.registers.map((tx, j) => {
    const made = createMicroblock(tx, { i: kb.height, j }, members);
    if (!made.ok) throw made.verdict.ok ? new Error('?') : made.verdict.error;
    return made.block;
  });
}

/** Mines, validates (duplicates asked of the store, prefetched), pins and persists a keyblock. */
async function pinNextKeyblock(homes: (typeof a)[]): Promise<Keyblock> {
  const kb = mine(registerPatients(homes));
  const known = await Promise.all(kb.registers.map((tx) => store.isRegistered(toHex(tx.idHash))));
  const registered = new Set(kb.registers.filter((_, k) => known[k]).map((tx) => toHex(tx.idHash)));
  const added = addKeyblock(tree, kb, kb.time, (id) => registered.has(id));
  if (!added.verdict.ok) throw added.verdict.error;
  const pinned = pinKeyblock(added.tree, toHex(keyblockHash(kb)));
  if (!pinned.verdict.ok) throw pinned.verdict.error;
  tree = pinned.tree;
  const cert = certify('keyblock', kb.height, keyblockHash(kb));
  const blocks = blocksOf(kb);
  expect(await store.putPinnedKeyblock(kb, cert, blocks)).toBe('written');
  for (const mb of blocks) memory.set(refKey(mb.header), mb);
  keyblocks.push(kb);
  certificates.set(`keyblock/${kb.height}`, cert);
  return kb;
}

/** Tracks authoring state: the author's view of a block after its own txs. */
const authoring = new Map<string, Microblock>();
function current(p: number): Microblock {
  const key = refOf(p);
  return authoring.get(key) ?? memory.get(key)!;
}

function refOf(p: number): string {
  for (const [key, mb] of memory) {
    if (toHex(mb.header.idHash) === toHex(patients[p]!.tx.idHash)) return key;
  }
  throw new Error(`patient ${p} is not registered`);
}

function record(p: number, by: typeof a): MedicalTx {
  const block = current(p);
  const tx = makeRecordTx(block, by, { type: 'medical', pointer: pointer() }, 1, random);
  const next = appendRecord(block, tx, members, () => true);
  if (!next.ok) throw new Error('record failed');
  authoring.set(refOf(p), next.block);
  return tx as MedicalTx;
}

function label(p: number, by: typeof a, target: MedicalTx): BatchTx {
  const block = current(p);
  const tx = makeRecordTx(
    block,
    by,
    { type: 'label', pointer: pointer(), target: txHash(target) },
    1,
    random,
  );
  const next = appendRecord(block, tx, members, () => true);
  if (!next.ok) throw new Error('label failed');
  authoring.set(refOf(p), next.block);
  return tx;
}

function leaf(p: number, newcomer: typeof a): BatchTx {
  const block = current(p);
  const home = institutions[block.header.home]!;
  const tx = makeLeafTx({
    chainId: genesis.chainId,
    block,
    home,
    newcomer: { index: newcomer.index, chameleonKey: newcomer.chameleonKey },
    patientSigningSecret: patients[p]!.keys.signingSecret,
    fee: 1,
    random,
  });
  const next = addLeaf(block, tx, genesis.chainId, members);
  if (!next.ok) throw new Error('leaf failed');
  authoring.set(refOf(p), next.block);
  return tx;
}

function makeBatch(bundles: [typeof a, BatchTx[]][]): TxBatch {
  const tip = store.tip();
  return {
    height: (tip.batch?.height ?? 0) + 1,
    prev: tip.batch?.hash ?? new Uint8Array(32),
    keyblockHeight: tip.keyblock!.height,
    proposer: a.index,
    bundles: bundles.map(([inst, txs]) =>
      signBundle(genesis.chainId, inst.index, txs, inst.signingSecret, random),
    ),
    evidence: [],
  };
}

/** Validates through the store's prefetched snapshot, then pins and persists. */
async function pinBatch(batch: TxBatch) {
  const { verdict, effects } = validateBatch(batch, {
    genesis,
    members,
    group,
    hasPinnedEvidence: () => false,
    ...(await store.loadBatchContext(batch)),
  });
  if (!verdict.ok) throw verdict.error;
  const cert = certify('batch', batch.height, batchHash(batch));
  expect(await store.putPinnedBatch(batch, cert, effects.microblocks.values())).toBe('written');
  for (const [key, mb] of effects.microblocks) memory.set(key, mb);
  authoring.clear();
  batches.push(batch);
  certificates.set(`batch/${batch.height}`, cert);
  return effects;
}

let firstRecord: MedicalTx;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'spchain-store-'));
  store = await openStore();
  await pinNextKeyblock([a, b, a, b]); // patients 0-3 in keyblock 1
  await pinNextKeyblock([c, a]); // patients 4-5 in keyblock 2
  firstRecord = record(0, a);
  await pinBatch(
    makeBatch([
      [a, [firstRecord, record(0, a), leaf(0, b), record(2, a)]],
      [b, [record(1, b)]],
      [c, [record(4, c)]],
    ]),
  );
  // A label whose target is pinned (the store answers isRecordOf), and b writing on its new leaf.
  await pinBatch(
    makeBatch([
      [a, [label(0, a, firstRecord), record(5, a)]],
      [b, [record(0, b), record(0, b)]],
    ]),
  );
});

afterAll(async () => {
  await store?.close().catch(() => undefined);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const allTxs = () => batches.flatMap((batch) => batch.bundles.flatMap((bd) => bd.txs));

/** Every read the store offers, over everything the chain holds (for the reopen comparison). */
async function readAll(s: LedgerStore) {
  const out: Record<string, unknown> = { tip: s.tip() };
  for (const kb of keyblocks) {
    out[`kb/${kb.height}`] = await s.getKeyblock(kb.height);
    out[`kbh/${kb.height}`] = await s.getKeyblockByHash(keyblockHash(kb));
    out[`ce/kb/${kb.height}`] = await s.getCertificate('keyblock', kb.height);
    for (const tx of kb.registers)
      out[`loc/${toHex(txHash(tx))}`] = await s.getTxLocation(txHash(tx));
  }
  for (const batch of batches) {
    out[`ba/${batch.height}`] = await s.getBatch(batch.height);
    out[`ce/ba/${batch.height}`] = await s.getCertificate('batch', batch.height);
  }
  for (const key of memory.keys()) {
    const [i, j] = key.split('/').map(Number) as [number, number];
    out[`mb/${key}`] = await s.getMicroblock({ i, j });
  }
  for (const p of patients) {
    out[`id/${toHex(p.tx.idHash)}`] = await s.getMicroblockByIdHash(p.tx.idHash);
    out[`reg/${toHex(p.tx.idHash)}`] = await s.isRegistered(toHex(p.tx.idHash));
  }
  for (const tx of allTxs()) {
    const h = txHash(tx);
    out[`proof/${toHex(h)}`] = await s.getRecordProof(h);
    out[`pinned/${toHex(h)}`] = await s.isPinnedTx(toHex(h));
    if (tx.type !== 'leaf') {
      out[`rec/${toHex(h)}`] = await s.isRecordOf(toHex(h), tx.block, tx.institution);
    }
  }
  return out;
}

describe('LedgerStore (LevelDB)', () => {
  it('pins keyblocks and batches and keeps the tips', () => {
    const tip = store.tip();
    expect(tip.keyblock?.height).toBe(2);
    expect(tip.keyblock?.hash).toEqual(keyblockHash(keyblocks[1]!));
    expect(tip.batch?.height).toBe(2);
    expect(tip.batch?.hash).toEqual(batchHash(batches[1]!));
  });

  it('finds a patient block by (i, j) and by idHash, equal to the one in memory', async () => {
    for (const [key, mb] of memory) {
      expect(await store.getMicroblock(mb.header)).toEqual(mb);
      expect(await store.getMicroblockByIdHash(mb.header.idHash)).toEqual(mb);
      expect(await store.isRegistered(toHex(mb.header.idHash))).toBe(true);
      expect(key).toBe(refKey(mb.header));
    }
    expect(memory.get('1/0')!.leaves.map((l) => [l.institution, l.seq])).toEqual([
      [a.index, 3],
      [b.index, 2],
    ]);
    expect(await store.getMicroblock({ i: 1, j: 4 })).toBeUndefined();
    expect(await store.getMicroblock({ i: 9, j: 0 })).toBeUndefined();
    expect(await store.getMicroblockByIdHash(random(32))).toBeUndefined();
    expect(await store.isRegistered(toHex(random(32)))).toBe(false);
    await expect(store.isRegistered('zz')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('serves every batch tx with a proof that verifies to the certified batch hash', async () => {
    for (const batch of batches) {
      const txs = batch.bundles.flatMap((bd) => bd.txs);
      for (const [index, tx] of txs.entries()) {
        const proof = await store.getRecordProof(txHash(tx));
        expect(proof).toBeDefined();
        expect(proof!.tx).toEqual(tx);
        expect({ height: proof!.height, index: proof!.index }).toEqual({
          height: batch.height,
          index,
        });
        expect(proof!.inclusion).toEqual(txInclusion(batch, index));
        const certified = verifyTxInclusion(txHash(proof!.tx), proof!.inclusion);
        expect(certified).toEqual(batchHash(batch));
        expect(proof!.certificate).toEqual(certificates.get(`batch/${batch.height}`));
        expect(proof!.certificate.value).toEqual(certified);
      }
    }
    expect(await store.getRecordProof(random(32))).toBeUndefined();
    // Register txs are located by (i, j), and proven through their keyblock, not a batch.
    const reg = patients[5]!.tx;
    expect(await store.getRecordProof(txHash(reg))).toBeUndefined();
    expect(await store.getTxLocation(txHash(reg))).toEqual({
      kind: 'register',
      ref: { i: 2, j: 1 },
    });
  });

  it('answers the validation ports: pinned txs and label targets', async () => {
    for (const tx of allTxs()) expect(await store.isPinnedTx(toHex(txHash(tx)))).toBe(true);
    for (const kb of keyblocks) {
      for (const tx of kb.registers) expect(await store.isPinnedTx(toHex(txHash(tx)))).toBe(true);
    }
    expect(await store.isPinnedTx(toHex(random(32)))).toBe(false);
    const target = toHex(txHash(firstRecord));
    expect(await store.isRecordOf(target, { i: 1, j: 0 }, a.index)).toBe(true);
    expect(await store.isRecordOf(target, { i: 1, j: 0 }, b.index)).toBe(false);
    expect(await store.isRecordOf(target, { i: 1, j: 1 }, a.index)).toBe(false);
    const labelTx = batches[1]!.bundles[0]!.txs[0]!;
    expect(labelTx.type).toBe('label');
    expect(await store.isRecordOf(toHex(txHash(labelTx)), { i: 1, j: 0 }, a.index)).toBe(false);
  });

  it('loadBatchContext gives synchronous ports over one snapshot', async () => {
    const next = makeBatch([[b, [record(3, b)]]]);
    authoring.clear();
    const snap = await store.loadBatchContext(next);
    expect(snap.height).toBe(3);
    expect(snap.prevHash).toEqual(batchHash(batches[1]!));
    expect(snap.pinnedKeyblockHeight).toBe(2);
    expect(snap.microblocks.get({ i: 1, j: 3 })).toEqual(memory.get('1/3'));
    expect(snap.isPinnedTx(toHex(txHash(next.bundles[0]!.txs[0]!)))).toBe(false);
    expect(() => snap.microblocks.get({ i: 1, j: 0 })).toThrow(/not prefetched/);
    expect(() => snap.isPinnedTx(toHex(random(32)))).toThrow(/not prefetched/);
    // A replay of a pinned tx is caught through the snapshot.
    const replay = makeBatch([[a, [firstRecord]]]);
    const v = validateBatch(replay, {
      genesis,
      members,
      group,
      hasPinnedEvidence: () => false,
      ...(await store.loadBatchContext(replay)),
    });
    expect(v.verdict.ok ? 'ok' : v.verdict.error.code).toBe('REPLAYED_TX');
  });

  it('refuses gaps, wrong parents, conflicts and duplicates, writing nothing', async () => {
    const before = await readAll(store);
    const kb2 = keyblocks[1]!;
    const cert = (kb: Keyblock) => certify('keyblock', kb.height, keyblockHash(kb));
    const gap = { ...kb2, height: 4 };
    await expect(store.putPinnedKeyblock(gap, cert(gap), [])).rejects.toMatchObject({
      code: 'NOT_CONSECUTIVE',
      message: expect.stringMatching(/keyblock 4 does not follow pinned keyblock 2/),
    });
    // Keyblock 3 re-registering patient 0 (mined on the real tree, so only the duplicate is wrong).
    const dupKb = mine([patients[0]!.tx]);
    await expect(
      store.putPinnedKeyblock(dupKb, cert(dupKb), blocksOf(dupKb)),
    ).rejects.toMatchObject({ code: 'DUPLICATE_PATIENT' });
    const orphan = { ...dupKb, prev: random(32) };
    await expect(
      store.putPinnedKeyblock(orphan, cert(orphan), blocksOf(orphan)),
    ).rejects.toMatchObject({ code: 'WRONG_PARENT' });
    const other = { ...keyblocks[0]!, nonce: keyblocks[0]!.nonce + 1 };
    await expect(store.putPinnedKeyblock(other, cert(other), [])).rejects.toMatchObject({
      code: 'CONFLICTS_WITH_PINNED',
    });

    const b3 = makeBatch([[b, [record(3, b)]]]);
    const changed = [...authoring.values()];
    authoring.clear();
    const cert3 = certify('batch', 3, batchHash(b3));
    await expect(
      store.putPinnedBatch({ ...b3, height: 4 }, certify('batch', 4, batchHash(b3)), changed),
    ).rejects.toMatchObject({ code: 'NOT_CONSECUTIVE' });
    await expect(
      store.putPinnedBatch({ ...b3, prev: random(32) }, cert3, changed),
    ).rejects.toMatchObject({ code: 'WRONG_PARENT' });
    await expect(
      store.putPinnedBatch(b3, certify('batch', 2, batchHash(b3)), changed),
    ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(
      store.putPinnedBatch(
        { ...batches[0]!, proposer: b.index },
        certify('batch', 1, random(32)),
        [],
      ),
    ).rejects.toMatchObject({ code: 'CONFLICTS_WITH_PINNED' });
    const replay = makeBatch([[a, [firstRecord]]]);
    await expect(
      store.putPinnedBatch(replay, certify('batch', 3, batchHash(replay)), [memory.get('1/0')!]),
    ).rejects.toMatchObject({ code: 'DUPLICATE_TX' });
    // Fails mid-way, while the ops are built (after the batch and its certificate): a changed
    // block whose digest cannot be encoded. The LevelDB batch is never written.
    const broken = changed.map((mb) => ({
      ...mb,
      leaves: mb.leaves.map((l) => ({ ...l, running: l.running.slice(1) })),
    }));
    await expect(store.putPinnedBatch(b3, cert3, broken)).rejects.toThrow(/leaf running/);

    expect(await readAll(store)).toEqual(before);
    expect(await store.getBatch(3)).toBeUndefined();
    expect(await store.getCertificate('batch', 3)).toBeUndefined();
    expect(await store.getKeyblock(3)).toBeUndefined();
    expect(await store.isPinnedTx(toHex(txHash(b3.bundles[0]!.txs[0]!)))).toBe(false);
    expect(await store.isRegistered(toHex(patients[0]!.tx.idHash))).toBe(true);

    // The same batch, correctly given, pins.
    expect(await store.putPinnedBatch(b3, cert3, changed)).toBe('written');
    for (const mb of changed) memory.set(refKey(mb.header), mb);
    batches.push(b3);
    certificates.set('batch/3', cert3);
    expect(store.tip().batch?.height).toBe(3);
  });

  it('is idempotent: re-pinning an item changes nothing', async () => {
    const before = await readAll(store);
    const kb1 = keyblocks[0]!;
    // Fresh blocks (as at registration) must not overwrite the blocks' later state.
    expect(await store.putPinnedKeyblock(kb1, certificates.get('keyblock/1')!, blocksOf(kb1))).toBe(
      'unchanged',
    );
    expect(await store.putPinnedBatch(batches[0]!, certificates.get('batch/1')!, [])).toBe(
      'unchanged',
    );
    const [x, y] = await Promise.all([
      store.putPinnedBatch(batches[2]!, certificates.get('batch/3')!, []),
      store.putPinnedBatch(batches[2]!, certificates.get('batch/3')!, []),
    ]);
    expect([x, y]).toEqual(['unchanged', 'unchanged']);
    expect(await readAll(store)).toEqual(before);
  });

  it('restores the same state after reopening', async () => {
    const before = await readAll(store);
    expect(Object.keys(before).length).toBeGreaterThan(60);
    await store.close();
    store = await openStore();
    expect(await readAll(store)).toEqual(before);
    // And carries on from the restored tip.
    const next = makeBatch([[c, [record(4, c)]]]);
    await pinBatch(next);
    expect(store.tip().batch?.height).toBe(4);
  });

  it('proves txs of a batch of several chunks from the chunk alone', async () => {
    const txs: BatchTx[] = [];
    for (let n = 0; n < 75; n++) txs.push(record(n % 3 === 0 ? 0 : 2, a));
    const big = makeBatch([[a, txs]]);
    await pinBatch(big);
    for (const [index, tx] of txs.entries()) {
      const proof = await store.getRecordProof(txHash(tx));
      expect(proof!.tx).toEqual(tx);
      expect(proof!.inclusion).toEqual(txInclusion(big, index));
      expect(verifyTxInclusion(txHash(tx), proof!.inclusion)).toEqual(batchHash(big));
    }
  });

  it('pins a batch that carries evidence: checked through the snapshot, stored, bound by its commitment', async () => {
    // c forges the opening of its next record for patient 4 (block 2/0, not in the batch's txs).
    const block = current(4);
    const honest = makeRecordTx(block, c, { type: 'medical', pointer: pointer() }, 1, random);
    const bundle = signBundle(
      genesis.chainId,
      c.index,
      [{ ...honest, pointer: pointer() }],
      c.signingSecret,
      random,
    );
    const evidence: Evidence[] = [
      { type: 'bundle', bundle, index: 0, reason: 'BAD_CHAMELEON_OPENING' },
    ];
    // The blamed tx's block is prefetched with the batch's own (or validation would throw): a
    // genuine opening blamed as forged is found out through the snapshot.
    const genuine = signBundle(genesis.chainId, c.index, [honest], c.signingSecret, random);
    const batch = { ...makeBatch([[a, [record(0, a)]]]), evidence };
    const lie = { ...batch, evidence: [{ ...evidence[0]!, bundle: genuine }] };
    const v = validateBatch(lie, {
      genesis,
      members,
      group,
      hasPinnedEvidence: () => false,
      ...(await store.loadBatchContext(lie)),
    });
    expect(v.verdict).toMatchObject({ ok: false, error: { code: 'INVALID_VALUE' } });
    await pinBatch(batch);
    expect(await store.getBatch(batch.height)).toEqual(batch);
    const tx = batch.bundles[0]!.txs[0]!;
    const proof = await store.getRecordProof(txHash(tx));
    expect(proof!.inclusion.commitment.evidenceRoot).toEqual(evidenceRoot(evidence));
    expect(verifyTxInclusion(txHash(tx), proof!.inclusion)).toEqual(batchHash(batch));
    expect(verifyTxInclusion(txHash(tx), proof!.inclusion)).toEqual(proof!.certificate.value);
    // The forged tx itself is not pinned.
    expect(await store.isPinnedTx(toHex(txHash(bundle.txs[0]!)))).toBe(false);
  });

  it('fails with a clear error when LevelDB cannot open', async () => {
    await expect(LedgerStore.open(join(dir, 'ledger'))).rejects.toMatchObject({
      code: 'OPEN_FAILED',
      message: expect.stringContaining(join(dir, 'ledger')),
    });
    const file = join(dir, 'not-a-dir');
    writeFileSync(file, 'x');
    await expect(LedgerStore.open(join(file, 'db'))).rejects.toMatchObject({
      code: 'OPEN_FAILED',
    });
  });

  describe('corrupt values give CORRUPT naming the kind and key', () => {
    let copy: string;
    let damaged: LedgerStore | undefined;

    /**
     * In a copy of the database, writes raw values under keys of the sublevels; `edit` gets a
     * reader of the stored payloads (unsealed) to build them from.
     */
    async function poke(
      edit: (
        payloadOf: (kind: SpaceKind, key: Bytes) => Promise<Bytes>,
      ) => Promise<[SpaceKind, Bytes, Bytes][]>,
    ) {
      const raw = new Level<Bytes, Bytes>(copy, { keyEncoding: 'view', valueEncoding: 'view' });
      await raw.open();
      const space = (kind: SpaceKind) =>
        raw.sublevel<Bytes, Bytes>(SPACES[kind], { keyEncoding: 'view', valueEncoding: 'view' });
      const entries = await edit(async (kind, key) => {
        const value = (await space(kind).get(key))!;
        return Uint8Array.from(value.subarray(0, value.length - 4));
      });
      for (const [kind, key, value] of entries) await space(kind).put(key, value);
      await raw.close();
    }

    beforeAll(async () => {
      await store.close();
      copy = join(dir, 'damaged');
      cpSync(join(dir, 'ledger'), copy, { recursive: true });
      store = await openStore();
      const mb10 = storeKeys.microblock({ i: 1, j: 0 });
      const mb11 = storeKeys.microblock({ i: 1, j: 1 });
      const idKey = storeKeys.idHash(patients[2]!.tx.idHash);
      const tx = txHash(batches[1]!.bundles[1]!.txs[0]!);
      const ba1 = storeKeys.batch(1);
      const bp2 = storeKeys.batchProof(2);
      const flipped = sealValue('microblock', mb10, encodeStoredMicroblock(memory.get('1/0')!));
      flipped[40]! ^= 1;
      await poke(async (payloadOf) => [
        ['microblock', mb10, flipped],
        // A well-sealed value that is not canonical: an over-long varint for i.
        ['microblock', mb11, sealValue('microblock', mb11, Uint8Array.of(0x81, 0x00, 0x00))],
        // An index entry (correctly sealed) that points at another patient's block.
        ['idHash', idKey, sealValue('idHash', idKey, Uint8Array.of(1, 3))],
        ['tx', tx, sealValue('tx', tx, Uint8Array.of(0, 3, 0))],
        ['batch', ba1, sealValue('batch', ba1, encodeBatch(batches[1]!))],
        // Batch 2's proof index swapped for batch 3's (re-sealed under batch 2's key).
        [
          'batchProof',
          bp2,
          sealValue('batchProof', bp2, await payloadOf('batchProof', storeKeys.batchProof(3))),
        ],
      ]);
      damaged = await LedgerStore.open(copy);
    });

    afterAll(async () => {
      await damaged?.close();
    });

    it('checksum mismatch', async () => {
      await expect(damaged!.getMicroblock({ i: 1, j: 0 })).rejects.toMatchObject({
        code: 'CORRUPT',
        message: 'corrupt microblock (1/0): checksum mismatch',
        detail: { kind: 'microblock', key: '1/0' },
      });
    });

    it('non-canonical payload, through the canonical decoder', async () => {
      await expect(damaged!.getMicroblock({ i: 1, j: 1 })).rejects.toMatchObject({
        code: 'CORRUPT',
        message: expect.stringMatching(/^corrupt microblock \(1\/1\): microblock: i .*minimal/),
      });
    });

    it('an index entry that points at the wrong item', async () => {
      await expect(damaged!.getMicroblockByIdHash(patients[2]!.tx.idHash)).rejects.toMatchObject({
        code: 'CORRUPT',
        message: expect.stringMatching(/^corrupt idHash index entry .*another patient's block/),
      });
      const tx = txHash(batches[1]!.bundles[1]!.txs[0]!);
      await expect(damaged!.getRecordProof(tx)).rejects.toMatchObject({
        code: 'CORRUPT',
        message: expect.stringMatching(
          /^corrupt tx index entry .*tx 0 of batch 3, which is another/,
        ),
      });
      await expect(
        damaged!.getRecordProof(txHash(batches[1]!.bundles[0]!.txs[1]!)),
      ).rejects.toMatchObject({
        code: 'CORRUPT',
        message: 'corrupt batch proof index (height 2): holds the index of batch 3',
      });
      await expect(damaged!.getBatch(1)).rejects.toMatchObject({
        code: 'CORRUPT',
        message: 'corrupt batch (height 1): holds batch 2',
      });
    });

    it('untouched entries still read correctly', async () => {
      expect(await damaged!.getMicroblock({ i: 1, j: 2 })).toEqual(memory.get('1/2'));
      const proof = await damaged!.getRecordProof(txHash(batches[2]!.bundles[0]!.txs[0]!));
      expect(verifyTxInclusion(txHash(proof!.tx), proof!.inclusion)).toEqual(
        batchHash(batches[2]!),
      );
    });

    it('a corrupt tip stops the store from opening', async () => {
      await damaged!.close();
      damaged = undefined;
      await poke(async () => [['meta', storeKeys.meta('batch'), Uint8Array.of(1, 2, 3, 4, 5)]]);
      await expect(LedgerStore.open(copy)).rejects.toMatchObject({
        code: 'CORRUPT',
        message: 'corrupt meta entry (batch): checksum mismatch',
      });
    });
  });

  it('joins a chunk path and a chunk-roots path into the whole tree path', () => {
    for (const size of [1, 2, 31, 32, 33, 63, 64, 65, 96, 97, 130]) {
      const leaves = Array.from({ length: size }, () => random(32));
      const tree = MerkleTree.fromLeafHashes(leaves);
      const roots: Bytes[] = [];
      for (let at = 0; at < size; at += PROOF_CHUNK) {
        roots.push(MerkleTree.fromLeafHashes(leaves.slice(at, at + PROOF_CHUNK)).root);
      }
      for (let index = 0; index < size; index++) {
        const from = index - (index % PROOF_CHUNK);
        const joined = chunkedProof(leaves.slice(from, from + PROOF_CHUNK), roots, index, size);
        expect(joined.proof).toEqual(tree.proof(index));
        expect(joined.root).toEqual(tree.root);
      }
    }
  });

  it('isStoreError narrows by code', async () => {
    const err = await store
      .putPinnedBatch({ ...batches[0]!, height: 9 }, certify('batch', 9, random(32)), [])
      .catch((e) => e);
    expect(isStoreError(err, 'NOT_CONSECUTIVE')).toBe(true);
    expect(isStoreError(err, 'CORRUPT')).toBe(false);
  });
});
