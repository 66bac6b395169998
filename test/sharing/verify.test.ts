/**
 * The receiver's record check (ledger/shared-record.ts) on records built with the ledger's own
 * code (register, record and label txs, a signed bundle in a batch, its inclusion proof) and real
 * Umbral re-encryption: one vector per failure code, a property over damaged bytes, and
 * corrections.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { toHex, utf8 } from '../../src/crypto/bytes.ts';
import {
  encodeCapsule,
  encodeCapsuleFrag,
  encrypt,
  generateKFrags,
  generateSecretKey,
  publicKeyOf,
  reencrypt,
} from '../../src/crypto/umbral/index.ts';
import { advanceLeaf, makeRecordTx, makeRegisterTx } from '../../src/ledger/author.ts';
import { batchHash, txInclusion } from '../../src/ledger/batch.ts';
import { ZERO_HASH } from '../../src/ledger/keyblock.ts';
import { type Microblock, microblockFromRegister } from '../../src/ledger/microblock.ts';
import {
  currentRecords,
  decryptVerifiedRecord,
  OpenedCapsules,
  type ServedRecord,
  type SharedRecordContext,
  verifySharedRecord,
} from '../../src/ledger/shared-record.ts';
import { signBundle, txHash } from '../../src/ledger/tx.ts';
import type { RecordTx, TxBatch } from '../../src/ledger/types.ts';
import { makeNetwork, makePatient } from '../helpers/ledger-fixtures.ts';

const { genesis, institutions, random } = makeNetwork(3, 'sharing-verify');
const [holder, otherHolder] = institutions;
const patient = makePatient(random);
const receiverSecret = generateSecretKey(random);
const receiverPk = publicKeyOf(receiverSecret);

function registered(j: number, p = patient): Microblock {
  const tx = makeRegisterTx({
    chainId: genesis.chainId,
    idHash: random(32),
    home: holder!,
    patient: p,
    fee: 1,
    random,
  });
  return microblockFromRegister(tx, { i: 1, j });
}

const empty = registered(0);
const contents = [
  '{"resourceType":"Observation","id":"a"}',
  '{"resourceType":"Observation","id":"b"}',
  '{"resourceType":"Observation","id":"a","status":"entered-in-error"}',
];
const sealed = contents.map((c) => encrypt(patient.preKey, utf8(c), random));
let block = empty;
const txs: RecordTx[] = [];
for (const [n, s] of sealed.entries()) {
  const pointer = sha256(s.ciphertext);
  const fields =
    n === 2
      ? { type: 'label' as const, pointer, target: txHash(txs[0]!) }
      : { type: 'medical' as const, pointer };
  const tx = makeRecordTx(block, holder!, fields, 1, random);
  txs.push(tx);
  block = advanceLeaf(block, tx);
}
const runnings = [empty, ...txs.map((_, n) => txs.slice(0, n + 1).reduce(advanceLeaf, empty))].map(
  (b) => b.leaves[0]!.running,
);
const batch: TxBatch = {
  height: 4,
  prev: ZERO_HASH,
  keyblockHeight: 1,
  proposer: 0,
  bundles: [signBundle(genesis.chainId, 0, txs, holder!.signingSecret, random)],
  evidence: [],
};
/** The patient's kfrag (t = n = 1) to a receiving PRE key. */
const kfragTo = (receivingPk: Uint8Array) =>
  generateKFrags({
    delegatingSk: patient.preSecret,
    receivingPk,
    signerSk: patient.signingSecret,
    threshold: 1,
    shares: 1,
    signDelegatingKey: true,
    signReceivingKey: true,
    random,
  })[0]!;
const kfrag = kfragTo(receiverPk);

function served(n: number): ServedRecord {
  const { capsule, ciphertext } = sealed[n]!;
  return {
    tx: txs[n]!,
    prevRunning: runnings[n]!,
    inclusion: txInclusion(batch, n),
    capsule: encodeCapsule(capsule),
    cfrags: [encodeCapsuleFrag(reencrypt(capsule, kfrag, random))],
    ciphertext,
  };
}

const ctx: SharedRecordContext = {
  block,
  holder: { index: 0, chameleonKey: holder!.chameleonKey },
  certifiedBatchHash: batchHash(batch),
  receiver: { preSecret: receiverSecret, preKey: receiverPk },
};

/** Any one damaged byte of the record's ciphertext, capsule, cfrag or prevRunning fails it. */
function expectEveryDamageFails(rec: ServedRecord, context: SharedRecordContext): void {
  const fields = ['ciphertext', 'capsule', 'cfrag', 'prevRunning'] as const;
  fc.assert(
    fc.property(
      fc.constantFrom(...fields),
      fc.nat(),
      fc.integer({ min: 1, max: 255 }),
      (field, pos, x) => {
        const bytes = (field === 'cfrag' ? rec.cfrags[0]! : rec[field]).slice();
        bytes[pos % bytes.length]! ^= x;
        const damaged =
          field === 'cfrag' ? { ...rec, cfrags: [bytes] } : { ...rec, [field]: bytes };
        expect(verifySharedRecord(damaged, context).ok).toBe(false);
      },
    ),
    { numRuns: 120 },
  );
}

describe('verifySharedRecord', () => {
  it('accepts what the holder served honestly and decrypts it', () => {
    for (const n of [0, 1, 2]) {
      const check = verifySharedRecord(served(n), ctx);
      expect(check.ok).toBe(true);
      if (check.ok) {
        expect(new TextDecoder().decode(check.plaintext)).toBe(contents[n]);
        expect(toHex(check.hash)).toBe(toHex(txHash(txs[n]!)));
      }
    }
  });

  it('names each failure', () => {
    const rec = served(1);
    const other = served(0);
    const otherReceiver = kfragTo(publicKeyOf(generateSecretKey(random)));
    const flipped = rec.ciphertext.slice();
    flipped[20]! ^= 1;
    const cases: [string, ServedRecord, SharedRecordContext, string][] = [
      [
        'another patient',
        rec,
        { ...ctx, block: { ...block, header: { ...block.header, j: 1 } } },
        'OTHER_PATIENT',
      ],
      [
        'another holder',
        rec,
        { ...ctx, holder: { index: 1, chameleonKey: otherHolder!.chameleonKey } },
        'WRONG_HOLDER',
      ],
      ['beyond the pinned leaf', rec, { ...ctx, block: empty }, 'NOT_PINNED'],
      ['wrong ciphertext', { ...rec, ciphertext: flipped }, ctx, 'WRONG_CIPHERTEXT'],
      ['no certificate here', rec, { ...ctx, certifiedBatchHash: undefined }, 'NOT_PINNED'],
      ['another batch certified', rec, { ...ctx, certifiedBatchHash: random(32) }, 'NOT_PINNED'],
      ["another tx's path", { ...rec, inclusion: other.inclusion }, ctx, 'NOT_PINNED'],
      ['wrong previous running hash', { ...rec, prevRunning: random(32) }, ctx, 'BAD_OPENING'],
      ['garbage capsule', { ...rec, capsule: random(98) }, ctx, 'BAD_CAPSULE'],
      ['cfrag of another capsule', { ...rec, cfrags: other.cfrags }, ctx, 'BAD_CFRAG'],
      [
        'cfrag for another receiver',
        {
          ...rec,
          cfrags: [encodeCapsuleFrag(reencrypt(sealed[1]!.capsule, otherReceiver, random))],
        },
        ctx,
        'BAD_CFRAG',
      ],
      ['no cfrag', { ...rec, cfrags: [] }, ctx, 'BAD_CFRAG'],
      [
        "another record's capsule and cfrags",
        { ...rec, capsule: other.capsule, cfrags: other.cfrags },
        ctx,
        'DECRYPTION_FAILED',
      ],
      [
        'not the receiver',
        rec,
        { ...ctx, receiver: { preKey: receiverPk, preSecret: generateSecretKey(random) } },
        'DECRYPTION_FAILED',
      ],
    ];
    for (const [name, r, c, code] of cases) {
      const check = verifySharedRecord(r, c);
      expect(check.ok, name).toBe(false);
      if (!check.ok) expect(check.code, name).toBe(code);
    }
  });

  it('a forged tx with a valid opening (the holder has the trapdoor) is caught as not pinned', () => {
    const forged = encrypt(
      patient.preKey,
      utf8('{"resourceType":"Observation","id":"b","x":1}'),
      random,
    );
    const before = txs.slice(0, 1).reduce(advanceLeaf, empty);
    const tx = makeRecordTx(
      before,
      holder!,
      { type: 'medical', pointer: sha256(forged.ciphertext) },
      1,
      random,
    );
    const rec: ServedRecord = {
      ...served(1),
      tx,
      capsule: encodeCapsule(forged.capsule),
      cfrags: [encodeCapsuleFrag(reencrypt(forged.capsule, kfrag, random))],
      ciphertext: forged.ciphertext,
    };
    const check = verifySharedRecord(rec, ctx);
    expect(check.ok ? 'ok' : check.code).toBe('NOT_PINNED');
  });

  it('any damaged byte of a served record fails verification', () => {
    expectEveryDamageFails(served(0), ctx);
  });
});

describe('capsules checked and opened once per fetch (OpenedCapsules)', () => {
  it('gives the same answers as checking every record in full', () => {
    const opened = new OpenedCapsules();
    const withCache = { ...ctx, opened };
    const recs = [0, 1, 2].map(served);
    for (let round = 0; round < 2; round++) {
      for (const [n, rec] of recs.entries()) {
        const check = verifySharedRecord(rec, withCache);
        expect(check.ok).toBe(true);
        if (check.ok) expect(new TextDecoder().decode(check.plaintext)).toBe(contents[n]);
        const again = decryptVerifiedRecord(rec, block, receiverSecret, random, opened);
        expect(new TextDecoder().decode(again)).toBe(contents[n]);
      }
    }
    opened.dispose();
    expect(verifySharedRecord(recs[0]!, withCache).ok).toBe(true);
  });

  it('never vouches for a damaged record whose honest twin it has checked', () => {
    const rec = served(0);
    const opened = new OpenedCapsules();
    const withCache = { ...ctx, opened };
    expect(verifySharedRecord(rec, withCache).ok).toBe(true);
    expectEveryDamageFails(rec, withCache);
    // Another record's cfrags with this capsule: another key, checked, refused.
    const mixed = { ...rec, cfrags: served(1).cfrags };
    const check = verifySharedRecord(mixed, withCache);
    expect(check.ok ? 'ok' : check.code).toBe('BAD_CFRAG');
    opened.dispose();
  });
});

describe('currentRecords', () => {
  it('lets the last label stand for the record it corrects, in leaf order', () => {
    const v = (n: number) => ({ tx: txs[n]!, hash: txHash(txs[n]!), value: n });
    const out = currentRecords([v(2), v(1), v(0)]);
    expect(out.map((r) => r.current.value)).toEqual([2, 1]);
    expect(out[0]!.origin).toBe(toHex(txHash(txs[0]!)));
    expect(out[0]!.superseded.map((s) => s.value)).toEqual([0]);
    expect(out[1]!.superseded).toEqual([]);
    // A label whose target was not served still stands for the record.
    const alone = currentRecords([v(2)]);
    expect(alone.map((r) => [r.current.value, r.origin])).toEqual([[2, toHex(txHash(txs[0]!))]]);
  });
});
