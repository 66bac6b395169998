import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { toHex } from '../../src/crypto/bytes.ts';
import { makeLeafTx, makeRecordTx, makeRegisterTx } from '../../src/ledger/author.ts';
import { isLedgerError } from '../../src/ledger/errors.ts';
import {
  addLeaf,
  appendRecord,
  createMicroblock,
  decodeMicroblock,
  encodeMicroblock,
  type Microblock,
  microblockHash,
} from '../../src/ledger/microblock.ts';
import { decodeTx, encodeTx, txHash } from '../../src/ledger/tx.ts';
import type { RecordTx } from '../../src/ledger/types.ts';
import { makeNetwork, makePatient } from '../helpers/ledger-fixtures.ts';

const { genesis, institutions, random } = makeNetwork(3, 'microblock');
const members = (i: number) => genesis.members[i];
const [home, other, stranger] = institutions as [
  (typeof institutions)[0],
  (typeof institutions)[0],
  (typeof institutions)[0],
];
const patient = makePatient(random);
const idHash = random(32);
const pointer = (n: number) => new Uint8Array(32).fill(n);

function registered(): Microblock {
  const tx = makeRegisterTx({ chainId: genesis.chainId, idHash, home, patient, fee: 1, random });
  const made = createMicroblock(tx, { i: 5, j: 2 }, members);
  if (!made.ok) throw made.verdict.ok ? new Error('?') : made.verdict.error;
  return made.block;
}

/** Pinned medical txs (what the store's record index answers). */
const pinnedRecords = new Set<string>();
const isRecordOf = (target: string, ref: { i: number; j: number }, institution: number) =>
  pinnedRecords.has(`${target}|${ref.i}/${ref.j}|${institution}`);

function mustAppend(block: Microblock, tx: RecordTx): Microblock {
  const out = appendRecord(block, tx, members, isRecordOf);
  if (out.ok && tx.type === 'medical') {
    pinnedRecords.add(`${toHex(txHash(tx))}|${tx.block.i}/${tx.block.j}|${tx.institution}`);
  }
  if (!out.ok) throw out.verdict.ok ? new Error('?') : out.verdict.error;
  return out.block;
}

function reason(out: { ok: boolean; verdict?: { ok: boolean; error?: { code: string } } }) {
  return out.ok ? 'ok' : out.verdict?.error?.code;
}

describe('patient microblocks', () => {
  it('appends medical and label txs by collision; the block hash never changes', () => {
    const block = registered();
    const hash = microblockHash(block.header);
    const m1 = makeRecordTx(block, home, { type: 'medical', pointer: pointer(1) }, 1, random);
    const b1 = mustAppend(block, m1);
    const m2 = makeRecordTx(b1, home, { type: 'medical', pointer: pointer(2) }, 1, random);
    const b2 = mustAppend(b1, m2);
    const fix = makeRecordTx(
      b2,
      home,
      { type: 'label', pointer: pointer(3), target: txHash(m1) },
      1,
      random,
    );
    const b3 = mustAppend(b2, fix);
    for (const b of [b1, b2, b3]) expect(microblockHash(b.header)).toEqual(hash);
    expect(b3.leaves[0]!.seq).toBe(3);
    // Each tx survives its encoding.
    for (const tx of [m1, m2, fix]) expect(encodeTx(decodeTx(encodeTx(tx)))).toEqual(encodeTx(tx));
  });

  it('a medical tx is small: about 105 bytes on the ledger', () => {
    const block = registered();
    const m1 = makeRecordTx(block, home, { type: 'medical', pointer: pointer(1) }, 1, random);
    expect(encodeTx(m1).length).toBeLessThanOrEqual(110);
  });

  it('detects a dropped, reordered, replayed or altered tx', () => {
    const block = registered();
    const m1 = makeRecordTx(block, home, { type: 'medical', pointer: pointer(1) }, 1, random);
    const b1 = mustAppend(block, m1);
    const m2 = makeRecordTx(b1, home, { type: 'medical', pointer: pointer(2) }, 1, random);
    const b2 = mustAppend(b1, m2);
    const m3 = makeRecordTx(b2, home, { type: 'medical', pointer: pointer(3) }, 1, random);
    expect(reason(appendRecord(b1, m3, members, isRecordOf))).toBe('SEQUENCE_GAP'); // m2 dropped
    expect(reason(appendRecord(block, m2, members, isRecordOf))).toBe('SEQUENCE_GAP'); // reordered
    expect(reason(appendRecord(b2, m2, members, isRecordOf))).toBe('REPLAYED_TX');
    const altered = { ...m2, pointer: pointer(9) };
    expect(reason(appendRecord(b1, altered, members, isRecordOf))).toBe('BAD_CHAMELEON_OPENING');
    // An opening made for another history (the trapdoor holder rewriting m1) does not fit.
    const forged = makeRecordTx(block, home, { type: 'medical', pointer: pointer(7) }, 1, random);
    expect(reason(appendRecord(b1, { ...forged, seq: 2 }, members, isRecordOf))).toBe(
      'BAD_CHAMELEON_OPENING',
    );
  });

  it('rejects writers without a leaf and labels of unknown records', () => {
    const block = registered();
    const byOther = makeRecordTx(
      { ...block, leaves: [...block.leaves, { ...block.leaves[0]!, institution: other.index }] },
      other,
      { type: 'medical', pointer: pointer(1) },
      1,
      random,
    );
    expect(reason(appendRecord(block, byOther, members, isRecordOf))).toBe(
      'UNAUTHORISED_INSTITUTION',
    );
    const label = makeRecordTx(
      block,
      home,
      { type: 'label', pointer: pointer(2), target: pointer(8) },
      1,
      random,
    );
    expect(reason(appendRecord(block, label, members, isRecordOf))).toBe('UNKNOWN_TX');
  });

  it('adds a leaf with the patient grant and the home root opening; then the newcomer writes', () => {
    const block = registered();
    const hash = microblockHash(block.header);
    const leaf = makeLeafTx({
      chainId: genesis.chainId,
      block,
      home,
      newcomer: { index: other.index, chameleonKey: other.chameleonKey },
      patientSigningSecret: patient.signingSecret,
      fee: 1,
      random,
    });
    const added = addLeaf(block, leaf, genesis.chainId, members);
    expect(added.ok).toBe(true);
    if (!added.ok) return;
    expect(microblockHash(added.block.header)).toEqual(hash);
    const m = makeRecordTx(added.block, other, { type: 'medical', pointer: pointer(4) }, 1, random);
    expect(appendRecord(added.block, m, members, isRecordOf).ok).toBe(true);
    expect(encodeTx(decodeTx(encodeTx(leaf)))).toEqual(encodeTx(leaf));

    expect(reason(addLeaf(added.block, leaf, genesis.chainId, members))).toBe('REPLAYED_TX');
    const noGrant = { ...leaf, institution: stranger.index };
    expect(reason(addLeaf(block, noGrant, genesis.chainId, members))).toBe('BAD_SIGNATURE');
    const wrongRoot = {
      ...leaf,
      rootOpening: makeLeafTx({
        chainId: genesis.chainId,
        block,
        home: other, // not the home institution: its trapdoor cannot open the root digest
        newcomer: { index: other.index, chameleonKey: other.chameleonKey },
        patientSigningSecret: patient.signingSecret,
        fee: 1,
        random,
      }).rootOpening,
    };
    expect(reason(addLeaf(block, wrongRoot, genesis.chainId, members))).toBe(
      'BAD_CHAMELEON_OPENING',
    );
  });

  it('a register tx whose root opening is wrong creates no block', () => {
    const tx = makeRegisterTx({ chainId: genesis.chainId, idHash, home, patient, fee: 1, random });
    const bad = { ...tx, homeLeafDigest: pointer(5) };
    expect(createMicroblock(bad, { i: 1, j: 0 }, members).ok).toBe(false);
    expect(createMicroblock({ ...tx, home: 9 }, { i: 1, j: 0 }, members).ok).toBe(false);
  });

  it('property: any sequence of appends keeps the hash and every tx verifies in order', () => {
    fc.assert(
      fc.property(fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }), (kinds) => {
        let block = registered();
        const hash = microblockHash(block.header);
        const medical: Uint8Array[] = [];
        kinds.forEach((isLabel, n) => {
          const fields =
            isLabel && medical.length > 0
              ? { type: 'label' as const, pointer: pointer(n), target: medical[0]! }
              : { type: 'medical' as const, pointer: pointer(n) };
          const tx = makeRecordTx(block, home, fields, 1, random);
          if (tx.type === 'medical') medical.push(txHash(tx));
          block = mustAppend(block, tx);
        });
        return microblockHash(block.header).every((b, i) => b === hash[i]);
      }),
      { numRuns: 10 },
    );
  });
});

describe('microblock encoding', () => {
  /** A block with two leaves, one of them with a record. */
  function grown(): Microblock {
    const block = registered();
    const m1 = makeRecordTx(block, home, { type: 'medical', pointer: pointer(7) }, 1, random);
    const appended = mustAppend(block, m1);
    const leaf = makeLeafTx({
      chainId: genesis.chainId,
      block: appended,
      home,
      newcomer: { index: other.index, chameleonKey: other.chameleonKey },
      patientSigningSecret: patient.signingSecret,
      fee: 1,
      random,
    });
    const added = addLeaf(appended, leaf, genesis.chainId, members);
    if (!added.ok) throw added.verdict.ok ? new Error('?') : added.verdict.error;
    return added.block;
  }

  /** The decoder's error, or undefined when it accepts the bytes. */
  function decodeError(bytes: Uint8Array): unknown {
    try {
      decodeMicroblock(bytes);
      return undefined;
    } catch (err) {
      return err;
    }
  }

  it('round-trips a block; the hash is recomputed from the header, not stored', () => {
    const block = grown();
    expect(block.leaves).toHaveLength(2);
    const bytes = encodeMicroblock(block);
    expect(decodeMicroblock(bytes)).toEqual(block);
    expect(encodeMicroblock(decodeMicroblock(bytes))).toEqual(bytes);
    const wrongHash = encodeMicroblock({ ...block, hash: new Uint8Array(32) });
    expect(wrongHash).toEqual(bytes);
    expect(decodeMicroblock(wrongHash).hash).toEqual(microblockHash(block.header));
  });

  it('every one-bit change is a typed error or another canonical block', () => {
    const block = grown();
    const bytes = encodeMicroblock(block);
    let rejected = 0;
    for (let at = 0; at < bytes.length; at++) {
      for (const bit of [0, 7]) {
        const bad = Uint8Array.from(bytes);
        bad[at]! ^= 1 << bit;
        const err = decodeError(bad);
        if (err !== undefined) {
          expect(isLedgerError(err)).toBe(true);
          rejected++;
          continue;
        }
        const out = decodeMicroblock(bad);
        expect(out).not.toEqual(block);
        expect(out.hash).toEqual(microblockHash(out.header));
        expect(encodeMicroblock(out)).toEqual(bad);
      }
    }
    expect(rejected).toBeGreaterThan(0);
  });

  it('rejects truncated and extended encodings', () => {
    const bytes = encodeMicroblock(grown());
    for (const bad of [bytes.slice(0, bytes.length - 1), new Uint8Array([...bytes, 0])]) {
      expect(isLedgerError(decodeError(bad), 'MALFORMED')).toBe(true);
    }
  });

  it('a patient key that is not a point is MALFORMED, naming the key', () => {
    const block = grown();
    const bytes = encodeMicroblock(block);
    // i, j, home are one-byte varints here: i, j, idHash, home, rootDigest come before the keys.
    expect([block.header.i, block.header.j, block.header.home].every((n) => n < 0x80)).toBe(true);
    const preKeyAt = 1 + 1 + 32 + 1 + 32;
    for (const [at, prefix, field] of [
      [preKeyAt, 0x05, 'patientPreKey'],
      [preKeyAt + 33, 0x00, 'patientSigningKey'],
    ] as const) {
      const bad = Uint8Array.from(bytes);
      bad[at] = prefix;
      const err = decodeError(bad);
      expect(isLedgerError(err, 'MALFORMED')).toBe(true);
      expect(err).toMatchObject({ detail: { what: 'microblock', field } });
    }
  });
});
