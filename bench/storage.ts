/**
 * npm run bench:storage — ledger bytes per medical record, against the paper (119 MB for 250,000
 * records, about 476 bytes each) and our goal (a third: 159 bytes).
 *
 * Builds a real chain: 5,000 patients registered in 10 mined and pinned keyblocks (500 each, very
 * easy PoW target), and after each keyblock 5 batches of 1,000 medical txs for its patients (10
 * records per patient by its home institution, real chameleon openings from makeRecordTx, signed
 * bundles), every batch validated with validateBatch over LedgerStore.loadBatchContext, and every
 * keyblock and batch pinned with a certificate of 4 precommit signatures ('spchain/vote') over its
 * hash. Everything is persisted in LevelDB (LedgerStore). Reported every 10,000 records:
 *   (a) pinned bytes: encoded batches + their certificates + keyblocks (with their register txs) +
 *       their certificates, divided by records;
 *   (b) LevelDB's size on disk after a full compaction (every file in the directory: data, log,
 *       manifest), divided by records; it also holds the patient blocks and every index.
 * Patients arrive over time (one keyblock of registrations per 5,000 records), so both totals grow
 * linearly and the per-record figures stay flat. Not a test: no thresholds.
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toHex } from '../src/crypto/bytes.ts';
import { makeRecordTx, makeRegisterTx } from '../src/ledger/author.ts';
import { batchHash, encodeBatch, validateBatch } from '../src/ledger/batch.ts';
import { encodeCertificate, makeCertificate, signVote } from '../src/ledger/certificate.ts';
import { encodeKeyblock, keyblockHash } from '../src/ledger/keyblock.ts';
import {
  addKeyblock,
  createKeyblockTree,
  mineKeyblock,
  pinKeyblock,
} from '../src/ledger/keyblock-tree.ts';
import { createMicroblock, type Microblock, nextRunning } from '../src/ledger/microblock.ts';
import { encodeTx, signBundle } from '../src/ledger/tx.ts';
import type { BatchTx, Bytes, Certificate, MedicalTx, TxBatch } from '../src/ledger/types.ts';
import { LedgerStore } from '../src/store/ledger-store.ts';
import { makeNetwork, makePatient } from '../test/helpers/ledger-fixtures.ts';
import { printTable, writeResults } from './lib/measure.ts';

const PATIENTS = 5_000;
const RECORDS_PER_PATIENT = 10;
const KEYBLOCKS = 10;
const BATCH_TXS = 1_000;
const CHECKPOINT = 10_000;
const PAPER_BYTES_PER_RECORD = 119e6 / 250_000;
const GOAL_BYTES_PER_RECORD = 159;

const t0 = performance.now();
const { genesis, institutions, random } = makeNetwork(4, 'storage', {
  initialTarget: 2n ** 255n,
  maxBatchTxs: BATCH_TXS,
});
const members = (i: number) => genesis.members[i];
/** The consensus group the batches' (empty) evidence would be judged under. */
const group = genesis.members.map((m) => ({
  member: m.index,
  signingKey: m.signingKey,
  reputation: 1,
}));
const dir = mkdtempSync(join(tmpdir(), 'spchain-bench-storage-'));
const store = await LedgerStore.open(dir);

function certify(kind: Certificate['kind'], height: number, value: Bytes): Certificate {
  const subject = { kind, height, round: 0, value };
  return makeCertificate(
    subject,
    institutions.map((inst) => ({
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

function dirBytes(path: string): number {
  let total = 0;
  for (const name of readdirSync(path)) total += statSync(join(path, name)).size;
  return total;
}

const pinned = { keyblocks: 0, keyblockCerts: 0, registerTxs: 0, batches: 0, batchCerts: 0 };
const pinnedTotal = () =>
  pinned.keyblocks + pinned.keyblockCerts + pinned.batches + pinned.batchCerts;
let medicalTxBytes = 0;
let records = 0;
const growth: Record<string, number>[] = [];
const timing = { authorMs: 0, validateMs: 0, storeMs: 0, compactMs: 0 };
let tree = createKeyblockTree(genesis);
const perKeyblock = PATIENTS / KEYBLOCKS;

for (let k = 0; k < KEYBLOCKS; k++) {
  // Register this keyblock's patients, mine, pin, persist.
  let t = performance.now();
  const homes = Array.from({ length: perKeyblock }, (_, n) => institutions[n % 4]!);
  const registers = homes.map((home) =>
    makeRegisterTx({
      chainId: genesis.chainId,
      idHash: random(32),
      home,
      patient: makePatient(random),
      fee: 1,
      random,
    }),
  );
  const parent = tree.nodes.get(tree.head)!;
  const miner = institutions[k % 4]!;
  const kb = mineKeyblock(tree, {
    parentId: tree.head,
    miner: {
      index: miner.index,
      signingKey: miner.member.signingKey,
      signingSecret: miner.signingSecret,
    },
    registers,
    time: parent.time + genesis.params.keyblockIntervalMs,
    attempts: 1_000,
    random,
  });
  if (!kb) throw new Error('no nonce found');
  timing.authorMs += performance.now() - t;
  t = performance.now();
  const known = await Promise.all(registers.map((tx) => store.isRegistered(toHex(tx.idHash))));
  if (known.some(Boolean)) throw new Error('patient registered twice');
  const added = addKeyblock(tree, kb, kb.time, () => false);
  if (!added.verdict.ok) throw added.verdict.error;
  const pin = pinKeyblock(added.tree, toHex(keyblockHash(kb)));
  if (!pin.verdict.ok) throw pin.verdict.error;
  tree = pin.tree;
  const blocks = kb.registers.map((tx, j) => {
    const made = createMicroblock(tx, { i: kb.height, j }, members);
    if (!made.ok) throw new Error(`register ${j} does not open`);
    return made.block;
  });
  timing.validateMs += performance.now() - t;
  t = performance.now();
  const kbCert = certify('keyblock', kb.height, keyblockHash(kb));
  await store.putPinnedKeyblock(kb, kbCert, blocks);
  timing.storeMs += performance.now() - t;
  pinned.keyblocks += encodeKeyblock(kb).length;
  pinned.registerTxs += kb.registers.reduce((n, tx) => n + encodeTx(tx).length, 0);
  pinned.keyblockCerts += encodeCertificate(kbCert).length;

  // Records: RECORDS_PER_PATIENT rounds over this keyblock's patients, by their home institutions.
  t = performance.now();
  const state = new Map<number, Microblock>(blocks.map((mb) => [mb.header.j, mb]));
  const txs: MedicalTx[] = [];
  for (let round = 0; round < RECORDS_PER_PATIENT; round++) {
    for (const [j, block] of state) {
      const home = institutions[block.header.home]!;
      const tx = makeRecordTx(block, home, { type: 'medical', pointer: random(32) }, 1, random);
      if (tx.type !== 'medical') throw new Error('unreachable');
      const leaf = block.leaves[0]!;
      state.set(j, {
        ...block,
        leaves: [{ ...leaf, seq: tx.seq, running: nextRunning(leaf.running, tx) }],
      });
      txs.push(tx);
    }
  }
  timing.authorMs += performance.now() - t;

  for (let from = 0; from < txs.length; from += BATCH_TXS) {
    t = performance.now();
    const chunk = txs.slice(from, from + BATCH_TXS);
    const byInstitution = new Map<number, BatchTx[]>();
    for (const tx of chunk) {
      const list = byInstitution.get(tx.institution) ?? [];
      list.push(tx);
      byInstitution.set(tx.institution, list);
    }
    const tip = store.tip();
    const batch: TxBatch = {
      height: (tip.batch?.height ?? 0) + 1,
      prev: tip.batch?.hash ?? new Uint8Array(32),
      keyblockHeight: tip.keyblock!.height,
      proposer: (tip.batch?.height ?? 0) % 4,
      bundles: [...byInstitution].map(([index, list]) =>
        signBundle(genesis.chainId, index, list, institutions[index]!.signingSecret, random),
      ),
      evidence: [],
    };
    timing.authorMs += performance.now() - t;
    t = performance.now();
    const { verdict, effects } = validateBatch(batch, {
      genesis,
      members,
      group,
      hasPinnedEvidence: () => false,
      ...(await store.loadBatchContext(batch)),
    });
    if (!verdict.ok) throw verdict.error;
    timing.validateMs += performance.now() - t;
    t = performance.now();
    const cert = certify('batch', batch.height, batchHash(batch));
    await store.putPinnedBatch(batch, cert, effects.microblocks.values());
    timing.storeMs += performance.now() - t;
    pinned.batches += encodeBatch(batch).length;
    pinned.batchCerts += encodeCertificate(cert).length;
    medicalTxBytes += chunk.reduce((n, tx) => n + encodeTx(tx).length, 0);
    records += chunk.length;

    if (records % CHECKPOINT === 0) {
      t = performance.now();
      const compacted = await store.compact();
      timing.compactMs += performance.now() - t;
      const disk = dirBytes(dir);
      growth.push({
        records,
        patients: (k + 1) * perKeyblock,
        pinned_bytes: pinnedTotal(),
        pinned_bytes_per_record: pinnedTotal() / records,
        on_disk_bytes: disk,
        on_disk_bytes_per_record: disk / records,
        compacted: compacted ? 1 : 0,
      });
      console.error(
        `  ${records} records pinned (${((performance.now() - t0) / 1000).toFixed(0)} s)`,
      );
    }
  }
}

// Where the on-disk bytes go, by sublevel (LevelDB's own estimate, after compaction).
const bySpace: Record<string, number> = (await store.approximateSizes()) ?? {};
await store.close();
rmSync(dir, { recursive: true, force: true });

const last = growth.at(-1)!;
const step = growth.map((g, n) => ({
  records: g.records!,
  patients: g.patients!,
  'pinned MB': g.pinned_bytes! / 1e6,
  'pinned B/rec': g.pinned_bytes_per_record!,
  'pinned B/rec (marginal)':
    n === 0
      ? g.pinned_bytes_per_record!
      : (g.pinned_bytes! - growth[n - 1]!.pinned_bytes!) / (g.records! - growth[n - 1]!.records!),
  'disk MB': g.on_disk_bytes! / 1e6,
  'disk B/rec': g.on_disk_bytes_per_record!,
  'disk B/rec (marginal)':
    n === 0
      ? g.on_disk_bytes_per_record!
      : (g.on_disk_bytes! - growth[n - 1]!.on_disk_bytes!) / (g.records! - growth[n - 1]!.records!),
}));
console.log('\nLedger growth (pinned data and LevelDB on disk, after compaction):\n');
printTable(step);

const breakdown = {
  medical_txs: medicalTxBytes / records,
  batch_overhead: (pinned.batches - medicalTxBytes) / records,
  batch_certificates: pinned.batchCerts / records,
  register_txs: pinned.registerTxs / records,
  keyblock_headers: (pinned.keyblocks - pinned.registerTxs) / records,
  keyblock_certificates: pinned.keyblockCerts / records,
};
console.log('\nPinned bytes per record, by part:\n');
printTable(Object.entries(breakdown).map(([part, bytes]) => ({ part, 'B/rec': bytes })));
if (Object.keys(bySpace).length > 0) {
  console.log('\nOn-disk bytes per record, by sublevel (LevelDB approximateSize):\n');
  printTable(
    Object.entries(bySpace).map(([space, bytes]) => ({ space, 'B/rec': bytes / records })),
  );
}
const bytesPerRecord = last.pinned_bytes_per_record!;
console.log(
  `\n${records} records, ${PATIENTS} patients: ${bytesPerRecord.toFixed(1)} B/record pinned ` +
    `(paper ${PAPER_BYTES_PER_RECORD.toFixed(0)}, goal <= ${GOAL_BYTES_PER_RECORD}), ` +
    `${last.on_disk_bytes_per_record!.toFixed(1)} B/record on disk with indexes ` +
    `(${((performance.now() - t0) / 1000).toFixed(0)} s)`,
);

writeResults('bench/results/storage.json', {
  bench: 'storage',
  date: new Date().toISOString(),
  node: process.version,
  setup: {
    patients: PATIENTS,
    records,
    records_per_patient: RECORDS_PER_PATIENT,
    keyblocks: KEYBLOCKS,
    batch_txs: BATCH_TXS,
    certificate_signatures: institutions.length,
    medical_txs_only: true,
  },
  bytes_per_record: bytesPerRecord,
  on_disk_bytes_per_record: last.on_disk_bytes_per_record,
  paper_bytes_per_record: PAPER_BYTES_PER_RECORD,
  goal_bytes_per_record: GOAL_BYTES_PER_RECORD,
  pinned_breakdown_bytes_per_record: breakdown,
  on_disk_by_sublevel_bytes_per_record: Object.fromEntries(
    Object.entries(bySpace).map(([k, v]) => [k, v / records]),
  ),
  growth,
  timing_ms: Object.fromEntries(Object.entries(timing).map(([k, v]) => [k, Math.round(v)])),
});
