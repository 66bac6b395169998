/**
 * Misbehaviour evidence in batches (src/ledger/evidence.ts): the canonical codec (every malformed
 * field named at decode), the commitment binding it, and validateBatch's checks, one table row per
 * rejection reason.
 */
import { describe, expect, it } from 'vitest';
import { concatBytes } from '../../src/crypto/bytes.ts';
import { merkleRoot } from '../../src/crypto/merkle.ts';
import { makeLeafTx, makeRecordTx, makeRegisterTx } from '../../src/ledger/author.ts';
import {
  type BatchContext,
  batchCommitment,
  batchHash,
  batchValueHash,
  decodeBatch,
  encodeBatch,
  refKey,
  validateBatch,
} from '../../src/ledger/batch.ts';
import { encodeBftMessage, makeSigner, signMessage } from '../../src/ledger/bft-messages.ts';
import { encode, type Writer } from '../../src/ledger/codec.ts';
import { isLedgerError, type LedgerError } from '../../src/ledger/errors.ts';
import {
  encodeEvidence,
  evidenceCulprit,
  evidenceRoot,
  MAX_BATCH_EVIDENCE,
  MAX_EVIDENCE_MESSAGE_BYTES,
  statelessBlame,
  writeEvidence,
} from '../../src/ledger/evidence.ts';
import { createMicroblock, type Microblock, nextRunning } from '../../src/ledger/microblock.ts';
import { encodeBundle, signBundle } from '../../src/ledger/tx.ts';
import type {
  BatchTx,
  BundleEvidence,
  Bytes,
  ConsensusKind,
  EquivocationEvidence,
  Evidence,
  MedicalTx,
  TxBatch,
} from '../../src/ledger/types.ts';
import { makeNetwork, makePatient, type TestInstitution } from '../helpers/ledger-fixtures.ts';

const { genesis, institutions, random } = makeNetwork(3, 'evidence');
const { chainId } = genesis;
const members = (i: number) => genesis.members[i];
const [a, b, c] = institutions as [TestInstitution, TestInstitution, TestInstitution];
const group = genesis.members.map((m) => ({
  member: m.index,
  signingKey: m.signingKey,
  reputation: 1,
}));
/** Patient 0 at home a, patient 1 at home b, both in keyblock 1. */
const patients = [a, b].map((home, j) => {
  const keys = makePatient(random);
  const tx = makeRegisterTx({ chainId, idHash: random(32), home, patient: keys, fee: 1, random });
  const made = createMicroblock(tx, { i: 1, j }, members);
  if (!made.ok) throw new Error('register failed');
  return { keys, block: made.block };
});
const pinned = new Map<string, Microblock>(patients.map((p) => [refKey(p.block.header), p.block]));

function ctx(overrides: Partial<BatchContext> = {}): BatchContext {
  return {
    genesis,
    members,
    prevHash: new Uint8Array(32),
    height: 1,
    pinnedKeyblockHeight: 1,
    microblocks: { get: (ref) => pinned.get(refKey(ref)) },
    isPinnedTx: () => false,
    isRecordOf: () => false,
    group,
    hasPinnedEvidence: () => false,
    ...overrides,
  };
}

function batchWith(evidence: readonly Evidence[]): TxBatch {
  return {
    height: 1,
    prev: new Uint8Array(32),
    keyblockHeight: 1,
    proposer: 0,
    bundles: [],
    evidence,
  };
}

function verdictOf(evidence: readonly Evidence[], c = ctx()): string {
  const v = validateBatch(batchWith(evidence), c).verdict;
  return v.ok ? 'ok' : v.error.code;
}

// ---------------------------------------------------------------------------------------------
// Evidence of each kind

const signerOf = (who: TestInstitution) => makeSigner(who.index, who.signingSecret, random);
const hashOf = (n: number) => new Uint8Array(32).fill(n);

function vote(who: TestInstitution, value: Bytes | null, kind: ConsensusKind = 'batch') {
  return signMessage(chainId, { type: 'prevote', kind, height: 3, round: 1, value }, signerOf(who));
}

function equivocation(who: TestInstitution, kind: ConsensusKind = 'batch'): EquivocationEvidence {
  return {
    type: 'equivocation',
    kind,
    first: vote(who, hashOf(1), kind),
    second: vote(who, null, kind),
  };
}

function proposal(who: TestInstitution, value: Bytes, hashValue = batchValueHash) {
  return signMessage(
    chainId,
    { type: 'proposal', kind: 'batch', height: 3, round: 0, validRound: -1, value },
    signerOf(who),
    hashValue,
  );
}

/** A record tx of `who` for patient `p`, seq `skip + 1` (the leaf is pinned at seq 0). */
function recordOf(who: TestInstitution, p: number, fee = 1, skip = 0): MedicalTx {
  let block = patients[p]!.block;
  for (let k = 0; k <= skip; k++) {
    const tx = makeRecordTx(block, who, { type: 'medical', pointer: random(32) }, fee, random);
    if (k === skip) return tx as MedicalTx;
    const leaves = block.leaves.map((l) =>
      l.institution === who.index ? { ...l, seq: tx.seq, running: nextRunning(l.running, tx) } : l,
    );
    block = { ...block, leaves };
  }
  throw new Error('unreachable');
}

function blame(
  who: TestInstitution,
  txs: BatchTx[],
  reason: BundleEvidence['reason'],
  index = 0,
): BundleEvidence {
  return {
    type: 'bundle',
    bundle: signBundle(chainId, who.index, txs, who.signingSecret, random),
    index,
    reason,
  };
}

const lowFee = () => blame(a, [recordOf(a, 0, 0)], 'FEE_TOO_LOW');
const foreign = () => blame(b, [recordOf(a, 0)], 'UNAUTHORISED_INSTITUTION');
const forged = (skip = 0) =>
  blame(a, [{ ...recordOf(a, 0, 1, skip), pointer: random(32) }], 'BAD_CHAMELEON_OPENING');
const leafTx = () =>
  makeLeafTx({
    chainId,
    block: patients[0]!.block,
    home: a,
    newcomer: { index: c.index, chameleonKey: c.chameleonKey },
    patientSigningSecret: patients[0]!.keys.signingSecret,
    fee: 1,
    random,
  });

/** Batch bytes whose evidence list is written by `write` (count included). */
function withRawEvidence(write: (w: Writer) => void): Bytes {
  const head = encodeBatch(batchWith([]));
  return concatBytes(head.subarray(0, head.length - 1), encode(write));
}

function decodeError(bytes: Bytes): LedgerError {
  try {
    decodeBatch(bytes);
  } catch (err) {
    if (isLedgerError(err)) return err;
    throw err;
  }
  throw new Error('decoded');
}

describe('evidence codec', () => {
  it('round-trips every kind inside a batch; the commitment binds the evidence', () => {
    const evidence = [equivocation(b), lowFee(), foreign(), forged()];
    const batch = { ...batchWith(evidence), evidence: [equivocation(c), forged(), foreign()] };
    const bytes = encodeBatch(batch);
    expect(decodeBatch(bytes)).toEqual(batch);
    expect(encodeBatch(decodeBatch(bytes))).toEqual(bytes);
    const p = proposal(c, encodeBatch(batchWith([])));
    const q = proposal(c, encodeBatch({ ...batchWith([]), proposer: 1 }));
    const proposals = {
      ...batchWith([{ type: 'equivocation', kind: 'batch', first: p, second: q }]),
    };
    expect(decodeBatch(encodeBatch(proposals))).toEqual(proposals);

    const empty = batchWith([]);
    expect(encodeBatch(empty).at(-1)).toBe(0); // an empty evidence list is one byte
    expect(batchCommitment(empty).evidenceRoot).toEqual(merkleRoot([]));
    expect(batchCommitment(batch).evidenceRoot).toEqual(evidenceRoot(batch.evidence));
    expect(batchCommitment(batch).evidenceRoot).toEqual(
      merkleRoot(batch.evidence.map(encodeEvidence)),
    );
    // Same txs, other evidence (or none, or another order): another batch hash.
    const hashes = [
      empty,
      batch,
      { ...batch, evidence: batch.evidence.slice(1) },
      { ...batch, evidence: [...batch.evidence].reverse() },
    ].map((x) => Buffer.from(batchHash(x)).toString('hex'));
    expect(new Set(hashes).size).toBe(4);
  });

  it('names the field of every malformed or ill-shaped item', () => {
    const v1 = vote(b, hashOf(1));
    const cases: [string, Bytes, string][] = [
      ['unknown tag', withRawEvidence((w) => w.varint(1).u8(7)), 'evidence[0].type'],
      ['unknown kind', withRawEvidence((w) => w.varint(1).u8(0).u8(9)), 'evidence[0].kind'],
      [
        'kind unlike the messages',
        encodeBatch(batchWith([{ ...equivocation(b), kind: 'keyblock' }])),
        'evidence[0].kind',
      ],
      [
        'messages of two members',
        encodeBatch(
          batchWith([{ type: 'equivocation', kind: 'batch', first: v1, second: vote(c, null) }]),
        ),
        'evidence[0].second.member',
      ],
      [
        'a prevote and a precommit',
        encodeBatch(
          batchWith([
            {
              type: 'equivocation',
              kind: 'batch',
              first: v1,
              second: signMessage(
                chainId,
                { type: 'precommit', kind: 'batch', height: 3, round: 1, value: null },
                signerOf(b),
              ),
            },
          ]),
        ),
        'evidence[0].second.type',
      ],
      [
        'two rounds',
        encodeBatch(
          batchWith([
            {
              type: 'equivocation',
              kind: 'batch',
              first: v1,
              second: signMessage(
                chainId,
                { type: 'prevote', kind: 'batch', height: 3, round: 2, value: null },
                signerOf(b),
              ),
            },
          ]),
        ),
        'evidence[0].second.height',
      ],
      [
        'a repeat, not a conflict',
        encodeBatch(batchWith([{ type: 'equivocation', kind: 'batch', first: v1, second: v1 }])),
        'evidence[0].second',
      ],
      [
        'a truncated message',
        withRawEvidence((w) => {
          w.varint(1).u8(0).u8(1);
          w.bytes(encodeBftMessage(v1).slice(0, -1)).bytes(encodeBftMessage(vote(b, null)));
        }),
        'evidence[0].first.signature',
      ],
      [
        'a message above the size bound',
        withRawEvidence((w) =>
          w
            .varint(1)
            .u8(0)
            .u8(1)
            .varint(MAX_EVIDENCE_MESSAGE_BYTES + 1),
        ),
        'evidence[0].first length',
      ],
      [
        'a bad bundle',
        withRawEvidence((w) => w.varint(1).u8(1).varint(0x10000)),
        'evidence[0].bundle.institution',
      ],
      [
        'an index outside the bundle',
        encodeBatch(batchWith([{ ...lowFee(), index: 1 }])),
        'evidence[0].index',
      ],
      [
        'an unknown reason code',
        withRawEvidence((w) => {
          w.varint(1).u8(1);
          const bundle = encodeBundle(lowFee().bundle);
          w.fixed(bundle, bundle.length, 'bundle').varint(0).u8(3);
        }),
        'evidence[0].reason',
      ],
      [
        'a forged opening blamed on a leaf tx',
        encodeBatch(batchWith([blame(a, [leafTx()], 'BAD_CHAMELEON_OPENING')])),
        'evidence[0].reason',
      ],
      [
        'the second item malformed',
        encodeBatch(
          batchWith([lowFee(), { type: 'equivocation', kind: 'batch', first: v1, second: v1 }]),
        ),
        'evidence[1].second',
      ],
      [
        'too many items',
        withRawEvidence((w) => w.varint(MAX_BATCH_EVIDENCE + 1)),
        'evidence count',
      ],
    ];
    for (const [what, bytes, field] of cases) {
      const err = decodeError(bytes);
      expect(err.code, what).toBe('MALFORMED');
      expect(err.detail.field, what).toBe(field);
    }
  });

  it('bounds the evidence bytes of a batch', () => {
    const big = (n: number) =>
      proposal(c, new Uint8Array(MAX_EVIDENCE_MESSAGE_BYTES - 200).fill(n), (v) =>
        v.subarray(0, 32),
      );
    const pair = (n: number): Evidence => ({
      type: 'equivocation',
      kind: 'batch',
      first: big(n),
      second: big(n + 1),
    });
    expect(decodeBatch(encodeBatch(batchWith([pair(1)]))).evidence).toHaveLength(1);
    const err = decodeError(encodeBatch(batchWith([pair(1), pair(3)])));
    expect(err.detail.field).toBe('evidence[1]');
    expect(err.message).toMatch(/above the limit/);
    expect(verdictOf([pair(1), pair(3)])).toBe('TOO_LARGE');
  });

  it('every one-bit change is a typed error or another canonical batch', () => {
    const bytes = encodeBatch(batchWith([equivocation(b), forged()]));
    for (let bit = 0; bit < bytes.length * 8; bit++) {
      const flipped = bytes.slice();
      flipped[bit >> 3]! ^= 1 << (bit & 7);
      let out: TxBatch;
      try {
        out = decodeBatch(flipped);
      } catch (err) {
        expect(isLedgerError(err), `bit ${bit}`).toBe(true);
        continue;
      }
      expect(encodeBatch(out)).toEqual(flipped);
    }
  });
});

describe('evidence validation', () => {
  it('accepts evidence that proves what it claims', () => {
    const p = proposal(c, encodeBatch(batchWith([])));
    const q = proposal(c, encodeBatch({ ...batchWith([]), proposer: 1 }));
    const cases: [string, Evidence[]][] = [
      ['equivocating batch prevotes', [equivocation(b)]],
      ['equivocating keyblock prevotes', [equivocation(b, 'keyblock')]],
      [
        'two batch proposals (signed over the commitment hash)',
        [{ type: 'equivocation', kind: 'batch', first: p, second: q }],
      ],
      ['a fee below the minimum', [lowFee()]],
      ["another institution's tx", [foreign()]],
      ['a forged opening next in line', [forged()]],
      ['one item per culprit', [lowFee(), foreign(), equivocation(c)]],
    ];
    for (const [what, evidence] of cases) expect(verdictOf(evidence), what).toBe('ok');
    expect([lowFee(), foreign(), equivocation(c)].map(evidenceCulprit)).toEqual([0, 1, 2]);
  });

  it('rejects each invalid item with its reason, naming the item', () => {
    const v1 = vote(b, hashOf(1));
    const byC = vote(c, null);
    const framed: Evidence = {
      type: 'equivocation',
      kind: 'batch',
      first: v1,
      second: { ...byC, member: b.index },
    };
    const good = blame(a, [recordOf(a, 0)], 'FEE_TOO_LOW');
    const cases: [string, Evidence[], string, Partial<BatchContext>?][] = [
      ['too many items', Array.from({ length: MAX_BATCH_EVIDENCE + 1 }, lowFee), 'TOO_LARGE'],
      [
        'a repeat, not a conflict',
        [{ type: 'equivocation', kind: 'batch', first: v1, second: v1 }],
        'MALFORMED',
      ],
      ['a reason only state can explain', [{ ...lowFee(), reason: 'SEQUENCE_GAP' }], 'MALFORMED'],
      ['two items against one institution', [equivocation(a), lowFee()], 'REPLAYED_TX'],
      [
        'an institution pinned evidence names',
        [lowFee()],
        'CONFLICTS_WITH_PINNED',
        { hasPinnedEvidence: (i) => i === a.index },
      ],
      [
        'a culprit that is not a member',
        [
          {
            ...lowFee(),
            bundle: { ...lowFee().bundle, institution: 7 },
          },
        ],
        'UNKNOWN_INSTITUTION',
      ],
      [
        'an equivocator outside the group',
        [equivocation(b)],
        'NOT_IN_GROUP',
        { group: group.filter((g) => g.member !== b.index) },
      ],
      ['a vote signed by someone else', [framed], 'BAD_SIGNATURE'],
      [
        'a bundle its institution did not sign',
        [
          {
            ...good,
            bundle: {
              ...good.bundle,
              signature: lowFee().bundle.signature,
            },
          },
        ],
        'BAD_SIGNATURE',
      ],
      [
        'proposals whose values are not batches',
        [
          {
            type: 'equivocation',
            kind: 'batch',
            first: proposal(c, hashOf(1), (v) => v),
            second: proposal(c, hashOf(2), (v) => v),
          },
        ],
        'MALFORMED',
      ],
      ['a fee that is not below the minimum', [good], 'INVALID_VALUE'],
      [
        "the signer's own tx called foreign",
        [blame(a, [recordOf(a, 0)], 'UNAUTHORISED_INSTITUTION')],
        'INVALID_VALUE',
      ],
      [
        'a valid opening called forged',
        [blame(a, [recordOf(a, 0)], 'BAD_CHAMELEON_OPENING')],
        'INVALID_VALUE',
      ],
      [
        "another's tx called a forged opening",
        [blame(b, [{ ...recordOf(a, 0), pointer: random(32) }], 'BAD_CHAMELEON_OPENING')],
        'INVALID_VALUE',
      ],
      ['a forged opening not next in line', [forged(1)], 'SEQUENCE_GAP'],
      [
        'a forged opening for an unpinned patient',
        [forged()],
        'UNKNOWN_PATIENT',
        { microblocks: { get: () => undefined } },
      ],
    ];
    for (const [what, evidence, code, overrides] of cases) {
      expect(verdictOf(evidence, ctx(overrides)), what).toBe(code);
    }
    // The error names the failing item.
    const v = validateBatch(batchWith([lowFee(), equivocation(b), equivocation(b)]), ctx()).verdict;
    expect(v).toMatchObject({ ok: false, error: { code: 'REPLAYED_TX', detail: { evidence: 2 } } });
  });

  it('finds the stateless fault a bundle is blamed for, in checkBundleStateless order', () => {
    const own = recordOf(a, 0);
    const bundleOf = (txs: BatchTx[]) => signBundle(chainId, a.index, txs, a.signingSecret, random);
    expect(statelessBlame(bundleOf([own]), 1)).toBeNull();
    expect(statelessBlame(bundleOf([own, recordOf(a, 0, 0)]), 1)).toEqual({
      index: 1,
      reason: 'FEE_TOO_LOW',
    });
    expect(statelessBlame(bundleOf([own, recordOf(b, 1), recordOf(a, 0, 0)]), 1)).toEqual({
      index: 1,
      reason: 'UNAUTHORISED_INSTITUTION',
    });
    expect(statelessBlame(bundleOf([leafTx()]), 1)).toBeNull();
  });

  it('encodes only the blamable reasons', () => {
    const bad: Evidence = { ...lowFee(), reason: 'SEQUENCE_GAP' };
    expect(() => encode((w) => writeEvidence(w, bad))).toThrow(RangeError);
  });
});
