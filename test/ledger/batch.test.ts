import { describe, expect, it } from 'vitest';
import { toHex } from '../../src/crypto/bytes.ts';
import { makeLeafTx, makeRecordTx, makeRegisterTx } from '../../src/ledger/author.ts';
import {
  type BatchContext,
  batchHash,
  batchTxHashes,
  batchTxSpans,
  decodeBatch,
  encodeBatch,
  refKey,
  txInclusion,
  validateBatch,
  verifyTxInclusion,
} from '../../src/ledger/batch.ts';
import { isLedgerError } from '../../src/ledger/errors.ts';
import { batchCharges } from '../../src/ledger/fees.ts';
import { createMicroblock, type Microblock, nextRunning } from '../../src/ledger/microblock.ts';
import { encodeTx, signBundle, txHash, txHashOfEncoding } from '../../src/ledger/tx.ts';
import type { BatchTx, TxBatch } from '../../src/ledger/types.ts';
import { makeNetwork, makePatient } from '../helpers/ledger-fixtures.ts';

const { genesis, institutions, random } = makeNetwork(3, 'batches');
const members = (i: number) => genesis.members[i];
const [a, b] = institutions as [(typeof institutions)[0], (typeof institutions)[0]];
const patients = Array.from({ length: 4 }, (_, j) => {
  const keys = makePatient(random);
  const tx = makeRegisterTx({
    chainId: genesis.chainId,
    idHash: random(32),
    home: j % 2 === 0 ? a : b,
    patient: keys,
    fee: 1,
    random,
  });
  const made = createMicroblock(tx, { i: 1, j }, members);
  if (!made.ok) throw new Error('register failed');
  return { keys, block: made.block };
});
const store = new Map<string, Microblock>(patients.map((p) => [refKey(p.block.header), p.block]));
const pointer = (n: number) => new Uint8Array(32).fill(n);

function ctx(overrides: Partial<BatchContext> = {}): BatchContext {
  return {
    genesis,
    members,
    prevHash: new Uint8Array(32),
    height: 1,
    pinnedKeyblockHeight: 1,
    microblocks: { get: (ref) => store.get(refKey(ref)) },
    isPinnedTx: () => false,
    isRecordOf: () => false,
    group: genesis.members.map((m) => ({
      member: m.index,
      signingKey: m.signingKey,
      reputation: 1,
    })),
    hasPinnedEvidence: () => false,
    ...overrides,
  };
}

function batchOf(bundles: TxBatch['bundles']): TxBatch {
  return {
    height: 1,
    prev: new Uint8Array(32),
    keyblockHeight: 1,
    proposer: 0,
    bundles,
    evidence: [],
  };
}

function code(batch: TxBatch, c = ctx()): string {
  const v = validateBatch(batch, c).verdict;
  return v.ok ? 'ok' : v.error.code;
}

/** Two records by the home institution of patient 0 (a) and one by b for patient 1. */
function sampleTxs() {
  const p0 = patients[0]!.block;
  const m1 = makeRecordTx(p0, a, { type: 'medical', pointer: pointer(1) }, 1, random);
  const p1 = patients[1]!.block;
  const n1 = makeRecordTx(p1, b, { type: 'medical', pointer: pointer(2) }, 2, random);
  return { m1, n1 };
}

describe('tx batches', () => {
  it('validates signed bundles from several institutions and reports the changed blocks', () => {
    const { m1, n1 } = sampleTxs();
    const batch = batchOf([
      signBundle(genesis.chainId, a.index, [m1], a.signingSecret, random),
      signBundle(genesis.chainId, b.index, [n1], b.signingSecret, random),
    ]);
    const { verdict, effects } = validateBatch(batch, ctx());
    expect(verdict.ok).toBe(true);
    expect(effects.microblocks.get('1/0')!.leaves[0]!.seq).toBe(1);
    expect(effects.microblocks.get('1/1')!.leaves[0]!.seq).toBe(1);
    expect(effects.recordsBy.get(a.index)).toBe(1);
    expect(batchCharges(batch)).toContainEqual({ payer: b.index, fee: 2 });
    expect(decodeBatch(encodeBatch(batch))).toEqual(batch);
    expect(batchHash(decodeBatch(encodeBatch(batch)))).toEqual(batchHash(batch));
  });

  it('applies several txs for one patient in order within one batch', () => {
    const p0 = patients[0]!.block;
    const txs: BatchTx[] = [];
    let block = p0;
    for (let n = 0; n < 5; n++) {
      const tx = makeRecordTx(block, a, { type: 'medical', pointer: pointer(n) }, 1, random);
      txs.push(tx);
      block = {
        ...block,
        leaves: [{ ...block.leaves[0]!, seq: tx.seq, running: nextRunningOf(block, tx) }],
      };
    }
    const batch = batchOf([signBundle(genesis.chainId, a.index, txs, a.signingSecret, random)]);
    expect(code(batch)).toBe('ok');
    const swapped = batchOf([
      signBundle(
        genesis.chainId,
        a.index,
        [txs[1]!, txs[0]!, ...txs.slice(2)],
        a.signingSecret,
        random,
      ),
    ]);
    expect(code(swapped)).toBe('SEQUENCE_GAP');
  });

  it('rejects forged bundles, foreign txs, replays, unknown or unpinned patients and bad linkage', () => {
    const { m1, n1 } = sampleTxs();
    const good = signBundle(genesis.chainId, a.index, [m1], a.signingSecret, random);
    expect(
      code(
        batchOf([
          {
            ...good,
            signature: signBundle(genesis.chainId, a.index, [m1], b.signingSecret, random)
              .signature,
          },
        ]),
      ),
    ).toBe('BAD_SIGNATURE');
    expect(
      code(batchOf([signBundle(genesis.chainId, a.index, [n1], a.signingSecret, random)])),
    ).toBe('UNAUTHORISED_INSTITUTION');
    expect(code(batchOf([good, good]))).toBe('REPLAYED_TX');
    expect(code(batchOf([good]), ctx({ isPinnedTx: (h) => h === toHex(txHash(m1)) }))).toBe(
      'REPLAYED_TX',
    );
    expect(code(batchOf([good]), ctx({ microblocks: { get: () => undefined } }))).toBe(
      'UNKNOWN_PATIENT',
    );
    expect(code(batchOf([good]), ctx({ pinnedKeyblockHeight: 0 }))).toBe('WRONG_HEIGHT');
    expect(code(batchOf([good]), ctx({ height: 2 }))).toBe('WRONG_PARENT');
    expect(
      code(
        batchOf([good]),
        ctx({ genesis: { ...genesis, params: { ...genesis.params, maxBatchTxs: 0 } } }),
      ),
    ).toBe('TOO_LARGE');
    expect(code(batchOf([{ ...good, txs: [{ ...m1, fee: 0 }] }]))).toBe('FEE_TOO_LOW');
  });

  it('leaf txs come from the home institution only', () => {
    const p0 = patients[0]!;
    const leaf = makeLeafTx({
      chainId: genesis.chainId,
      block: p0.block,
      home: a,
      newcomer: { index: b.index, chameleonKey: b.chameleonKey },
      patientSigningSecret: p0.keys.signingSecret,
      fee: 1,
      random,
    });
    expect(
      code(batchOf([signBundle(genesis.chainId, a.index, [leaf], a.signingSecret, random)])),
    ).toBe('ok');
    expect(
      code(batchOf([signBundle(genesis.chainId, b.index, [leaf], b.signingSecret, random)])),
    ).toBe('UNAUTHORISED_INSTITUTION');
  });

  it('proves one tx with a logarithmic path to the hash the certificate signs', () => {
    const txs: BatchTx[] = [];
    let block = patients[2]!.block;
    for (let n = 0; n < 9; n++) {
      const tx = makeRecordTx(block, a, { type: 'medical', pointer: pointer(n) }, 1, random);
      txs.push(tx);
      block = {
        ...block,
        leaves: [{ ...block.leaves[0]!, seq: tx.seq, running: nextRunningOf(block, tx) }],
      };
    }
    const batch = batchOf([signBundle(genesis.chainId, a.index, txs, a.signingSecret, random)]);
    const inclusion = txInclusion(batch, 5);
    expect(inclusion.proof.siblings.length).toBeLessThanOrEqual(4);
    expect(verifyTxInclusion(txHash(txs[5]!), inclusion)).toEqual(batchHash(batch));
    expect(verifyTxInclusion(txHash(txs[4]!), inclusion)).toBeNull();
    expect(
      verifyTxInclusion(txHash(txs[5]!), { ...inclusion, proof: { ...inclusion.proof, size: 10 } }),
    ).toBeNull();
    const lied = { ...inclusion, commitment: { ...inclusion.commitment, txCount: 10 } };
    expect(verifyTxInclusion(txHash(txs[5]!), lied)).toBeNull();
  });

  it('decoding rejects truncated and extended batches with typed errors', () => {
    const { m1 } = sampleTxs();
    const bytes = encodeBatch(
      batchOf([signBundle(genesis.chainId, a.index, [m1], a.signingSecret, random)]),
    );
    for (const bad of [
      bytes.slice(0, bytes.length - 1),
      new Uint8Array([...bytes, 0]),
      bytes.slice(0, 40),
    ]) {
      let typed = false;
      try {
        decodeBatch(bad);
      } catch (err) {
        typed = isLedgerError(err);
      }
      expect(typed).toBe(true);
    }
  });
});

function nextRunningOf(block: Microblock, tx: BatchTx) {
  if (tx.type === 'leaf') throw new Error('record txs only');
  return nextRunning(block.leaves[0]!.running, tx);
}

describe('tx spans in the encoded batch', () => {
  /** Checks that each span holds its tx's encoding, in batch tx order, and nothing else. */
  function expectSpans(batch: TxBatch): void {
    const encoded = encodeBatch(batch);
    const txs = batch.bundles.flatMap((bundle) => bundle.txs);
    const spans = batchTxSpans(batch);
    expect(spans).toHaveLength(txs.length);
    const hashes = batchTxHashes(batch);
    spans.forEach(({ offset, length }, n) => {
      const bytes = encoded.subarray(offset, offset + length);
      expect(bytes).toEqual(encodeTx(txs[n]!));
      expect(txHashOfEncoding(bytes)).toEqual(hashes[n]);
      if (n > 0) expect(offset).toBeGreaterThanOrEqual(spans[n - 1]!.offset + spans[n - 1]!.length);
    });
  }

  it('finds every tx of medical, label and leaf txs across bundles, empty ones included', () => {
    const { m1, n1 } = sampleTxs();
    const p0 = patients[0]!;
    const label = makeRecordTx(
      p0.block,
      a,
      { type: 'label', pointer: pointer(9), target: txHash(m1) },
      1,
      random,
    );
    const leaf = makeLeafTx({
      chainId: genesis.chainId,
      block: p0.block,
      home: a,
      newcomer: { index: b.index, chameleonKey: b.chameleonKey },
      patientSigningSecret: p0.keys.signingSecret,
      fee: 1,
      random,
    });
    const batch: TxBatch = {
      height: 300, // two-byte varints in the header
      prev: random(32),
      keyblockHeight: 20_000,
      proposer: 200,
      bundles: [
        signBundle(genesis.chainId, a.index, [m1, label, leaf], a.signingSecret, random),
        signBundle(genesis.chainId, b.index, [], b.signingSecret, random),
        signBundle(genesis.chainId, b.index, [n1], b.signingSecret, random),
      ],
      evidence: [],
    };
    expectSpans(batch);
    const spans = batchTxSpans(batch);
    const last = spans[spans.length - 1]!;
    // The last bundle's signature, then the empty evidence list (one byte).
    expect(last.offset + last.length + 64 + 1).toBe(encodeBatch(batch).length);
  });

  it('handles bundles of more than 127 txs (a two-byte tx count) and empty batches', () => {
    const { m1, n1 } = sampleTxs();
    const many = Array.from({ length: 130 }, (_, n) =>
      makeRecordTx(patients[0]!.block, a, { type: 'medical', pointer: pointer(n) }, 1, random),
    );
    expectSpans(
      batchOf([
        signBundle(genesis.chainId, a.index, [m1], a.signingSecret, random),
        signBundle(genesis.chainId, a.index, many, a.signingSecret, random),
        signBundle(genesis.chainId, b.index, [n1], b.signingSecret, random),
      ]),
    );
    expect(batchTxSpans(batchOf([]))).toEqual([]);
  });
});
