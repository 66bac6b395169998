/**
 * npm run bench:retrieval — time to find a patient block by (i, j) and by idHash, and one record
 * with its proof (getRecordProof + verifyTxInclusion), at 1k, 10k and 100k patients (3 records
 * each) in LevelDB. The point (paper Table 4, DESIGN section 4): flat in chain size.
 *
 * The databases are built fast, through the store but WITHOUT ledger validation, the same way at
 * every size: register txs are copies of one real register tx with a fresh idHash each (so their
 * patient signatures and root openings no longer verify), keyblocks are not mined (no PoW, dummy
 * miner signature), record txs carry a random (well-formed, not colliding) chameleon opening, and
 * bundle and certificate signatures are random bytes. Everything the store keeps is there, in its
 * real encodings and with every index entry: keyblocks, microblocks (with their running hashes),
 * batches of 1,000 txs, certificates, and the idHash, tx and label-target indexes.
 * Medians over 1,000 random lookups each, awaited one at a time, in microseconds.
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { equalBytes } from '../src/crypto/bytes.ts';
import { makeRegisterTx } from '../src/ledger/author.ts';
import { batchHash, verifyTxInclusion } from '../src/ledger/batch.ts';
import { keyblockHash, keyblockTxRoot } from '../src/ledger/keyblock.ts';
import { type Microblock, microblockFromRegister, nextRunning } from '../src/ledger/microblock.ts';
import { txHash } from '../src/ledger/tx.ts';
import type {
  BatchTx,
  Bytes,
  Certificate,
  Keyblock,
  MedicalTx,
  TxBatch,
} from '../src/ledger/types.ts';
import { LedgerStore } from '../src/store/ledger-store.ts';
import { makeNetwork, makePatient } from '../test/helpers/ledger-fixtures.ts';
import { median, printTable, writeResults } from './lib/measure.ts';

const SIZES = process.argv.includes('--quick') ? [1_000, 10_000] : [1_000, 10_000, 100_000];
const RECORDS_PER_PATIENT = 3;
const REGISTERS_PER_KEYBLOCK = 1_000;
const BATCH_TXS = 1_000;
const LOOKUPS = 1_000;

const { genesis, institutions, random } = makeNetwork(4, 'retrieval');
const template = makeRegisterTx({
  chainId: genesis.chainId,
  idHash: random(32),
  home: institutions[0]!,
  patient: makePatient(random),
  fee: 1,
  random,
});

/** A well-formed scalar (below the group order: top bit clear, non-zero). */
function scalar(): Bytes {
  const s = random(32);
  s[0]! &= 0x7f;
  s[31]! |= 1;
  return s;
}

function fakeCertificate(kind: Certificate['kind'], height: number, value: Bytes): Certificate {
  return {
    kind,
    height,
    round: 0,
    value,
    signatures: institutions.map((inst) => ({ member: inst.index, signature: random(64) })),
  };
}

function dirBytes(path: string): number {
  let total = 0;
  for (const name of readdirSync(path)) total += statSync(join(path, name)).size;
  return total;
}

const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;

async function time(f: () => Promise<unknown>): Promise<number[]> {
  for (let n = 0; n < 20; n++) await f();
  const out: number[] = [];
  for (let n = 0; n < LOOKUPS; n++) {
    const t = performance.now();
    await f();
    out.push((performance.now() - t) * 1000);
  }
  return out;
}

const p95 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.95)]!;

async function build(patients: number, dir: string) {
  const store = await LedgerStore.open(dir);
  const blocks: Microblock[] = [];
  let prev: Bytes = new Uint8Array(32);
  for (let i = 1; (i - 1) * REGISTERS_PER_KEYBLOCK < patients; i++) {
    const count = Math.min(REGISTERS_PER_KEYBLOCK, patients - (i - 1) * REGISTERS_PER_KEYBLOCK);
    const registers = Array.from({ length: count }, () => ({ ...template, idHash: random(32) }));
    const header = {
      height: i,
      prev,
      i2Link: new Uint8Array(32),
      txRoot: keyblockTxRoot(registers),
      miner: 0,
      time: genesis.time + i * 1000,
      target: genesis.params.initialTarget,
      nonce: 0,
    };
    const kb: Keyblock = { ...header, registers, admits: [], signature: random(64) };
    const made = registers.map((tx, j) => microblockFromRegister(tx, { i, j }));
    prev = keyblockHash(kb);
    await store.putPinnedKeyblock(kb, fakeCertificate('keyblock', i, prev), made);
    blocks.push(...made);
  }
  const recordHashes: Bytes[] = [];
  let pending: MedicalTx[] = [];
  const changed = new Map<number, Microblock>();
  const flush = async () => {
    const tip = store.tip();
    const height = (tip.batch?.height ?? 0) + 1;
    const batch: TxBatch = {
      height,
      prev: tip.batch?.hash ?? new Uint8Array(32),
      keyblockHeight: tip.keyblock!.height,
      proposer: 0,
      bundles: [{ institution: 0, txs: pending as BatchTx[], signature: random(64) }],
      evidence: [],
    };
    await store.putPinnedBatch(
      batch,
      fakeCertificate('batch', height, batchHash(batch)),
      changed.values(),
    );
    for (const tx of pending) recordHashes.push(txHash(tx));
    pending = [];
    changed.clear();
  };
  for (let round = 0; round < RECORDS_PER_PATIENT; round++) {
    for (const [n, block] of blocks.entries()) {
      const leaf = block.leaves[0]!;
      const tx: MedicalTx = {
        type: 'medical',
        block: { i: block.header.i, j: block.header.j },
        institution: leaf.institution,
        seq: leaf.seq + 1,
        pointer: random(32),
        opening: { r: scalar(), s: scalar() },
        fee: 1,
      };
      const next = {
        ...block,
        leaves: [{ ...leaf, seq: tx.seq, running: nextRunning(leaf.running, tx) }],
      };
      blocks[n] = next;
      changed.set(n, next);
      pending.push(tx);
      if (pending.length === BATCH_TXS) await flush();
    }
  }
  if (pending.length > 0) await flush();
  await store.compact();
  return { store, blocks, recordHashes };
}

const rows: Record<string, number>[] = [];
for (const patients of SIZES) {
  const dir = mkdtempSync(join(tmpdir(), 'spchain-bench-retrieval-'));
  const t0 = performance.now();
  const { store, blocks, recordHashes } = await build(patients, dir);
  const buildS = (performance.now() - t0) / 1000;
  const byRef = await time(async () => {
    const mb = pick(blocks);
    const got = await store.getMicroblock(mb.header);
    if (!got || got.leaves[0]!.seq !== RECORDS_PER_PATIENT) throw new Error('wrong block');
  });
  const byId = await time(async () => {
    const mb = pick(blocks);
    const got = await store.getMicroblockByIdHash(mb.header.idHash);
    if (!got || !equalBytes(got.hash, mb.hash)) throw new Error('wrong block');
  });
  let siblings = 0;
  const proof = await time(async () => {
    const h = pick(recordHashes);
    const p = await store.getRecordProof(h);
    const certified = p && verifyTxInclusion(h, p.inclusion);
    if (!certified || !equalBytes(certified, p.certificate.value)) throw new Error('bad proof');
    siblings = Math.max(siblings, p.inclusion.proof.siblings.length);
  });
  const tip = store.tip();
  rows.push({
    patients,
    records: recordHashes.length,
    keyblocks: tip.keyblock!.height,
    batches: tip.batch!.height,
    disk_mb: dirBytes(dir) / 1e6,
    build_s: buildS,
    by_ref_us: median(byRef),
    by_ref_p95_us: p95(byRef),
    by_idhash_us: median(byId),
    by_idhash_p95_us: p95(byId),
    record_proof_us: median(proof),
    record_proof_p95_us: p95(proof),
    proof_siblings: siblings,
  });
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  console.error(`  ${patients} patients done (${buildS.toFixed(0)} s to build)`);
}

console.log(
  '\nRetrieval from LevelDB, medians of 1,000 random lookups (µs; p95 beside), by chain size:\n',
);
printTable(
  rows.map((r) => ({
    patients: r.patients!,
    records: r.records!,
    'disk MB': r.disk_mb!,
    'by (i, j)': r.by_ref_us!,
    'p95 (i, j)': r.by_ref_p95_us!,
    'by idHash': r.by_idhash_us!,
    'p95 idHash': r.by_idhash_p95_us!,
    'record + proof': r.record_proof_us!,
    'p95 proof': r.record_proof_p95_us!,
    'proof siblings': r.proof_siblings!,
  })),
);

writeResults('bench/results/retrieval.json', {
  bench: 'retrieval',
  date: new Date().toISOString(),
  node: process.version,
  setup: {
    records_per_patient: RECORDS_PER_PATIENT,
    registers_per_keyblock: REGISTERS_PER_KEYBLOCK,
    batch_txs: BATCH_TXS,
    lookups: LOOKUPS,
    validated: false,
    note: 'built through LedgerStore without ledger validation (see bench/retrieval.ts)',
  },
  unit: 'microseconds (median and p95 per lookup)',
  rows,
});
