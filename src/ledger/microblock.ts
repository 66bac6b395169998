/**
 * Patient microblocks (paper 5.1, Fig. 6; DESIGN section 4).
 *
 * MB_{i,j} is the one block of the patient registered by the j-th register tx of keyblock i. Its
 * hash G(MB) covers only the header (i, j, idHash, home, rootDigest) and never changes. What grows
 * is behind chameleon digests:
 *  - the institution root: rootDigest opens (under the home institution's hash key) to the Merkle
 *    root of the leaf set; adding an institution's leaf is a new opening by the home institution;
 *  - each leaf: (institution, leafDigest), where leafDigest opens (under that institution's hash
 *    key) to the leaf's running hash over its txs; appending a record is a new opening by the writer.
 * Every append is also a tx in a pinned batch (the ordinary record): the running hash is rebuilt from
 * the pinned txs in order, so a dropped, reordered or altered tx breaks the opening check.
 */

import { POINT_BYTES } from '../crypto/curve/point.ts';
import { merkleRoot } from '../crypto/merkle.ts';
import { decode, encode } from './codec.ts';
import { isLedgerError, reject, type Verdict } from './errors.ts';
import { HASH_BYTES, ledgerHash } from './hash.ts';
import { readKey, recordTxCore, verifyGrant } from './tx.ts';
import type {
  BatchTx,
  BlockRef,
  Bytes,
  InstitutionIndex,
  LeafTx,
  Member,
  RecordTx,
  RegisterTx,
} from './types.ts';
import { verifyChameleonCached } from './verify-cache.ts';

export interface MicroblockHeader {
  readonly i: number;
  readonly j: number;
  readonly idHash: Bytes;
  readonly home: InstitutionIndex;
  readonly rootDigest: Bytes;
}

export interface LeafState {
  readonly institution: InstitutionIndex;
  readonly digest: Bytes;
  /** Number of record txs appended so far (the next must carry seq + 1). */
  readonly seq: number;
  /** Running hash over the leaf's record txs, the message its digest currently opens to. */
  readonly running: Bytes;
}

export interface Microblock {
  readonly header: MicroblockHeader;
  readonly hash: Bytes;
  readonly patientPreKey: Bytes;
  readonly patientSigningKey: Bytes;
  /** Leaves in the order they were added (the Merkle tree's order). */
  readonly leaves: readonly LeafState[];
}

/** What the rules need to know about institutions. */
export type MemberLookup = (index: InstitutionIndex) => Member | undefined;

/**
 * Whether `targetHex` is a medical tx of `institution` for the patient block `ref` (pinned, or
 * earlier in the batch being validated): a label may only correct such a tx.
 */
export type RecordLookup = (
  targetHex: string,
  ref: BlockRef,
  institution: InstitutionIndex,
) => boolean;

export function microblockHash(header: MicroblockHeader): Bytes {
  return ledgerHash(
    'microblock',
    encode((w) =>
      w
        .varint(header.i)
        .varint(header.j)
        .fixed(header.idHash, HASH_BYTES, 'idHash')
        .varint(header.home)
        .fixed(header.rootDigest, HASH_BYTES, 'rootDigest'),
    ),
  );
}

/** Most leaves one patient block can hold: one per institution index. */
const MAX_LEAVES = 0x10000;

/**
 * A patient block's canonical encoding (what the store keeps and peers exchange): header, patient
 * keys, then the leaves (institution, digest, seq, running) in order. The hash is not encoded:
 * decodeMicroblock recomputes it from the header.
 */
export function encodeMicroblock(block: Microblock): Bytes {
  const h = block.header;
  return encode((w) =>
    w
      .varint(h.i)
      .varint(h.j)
      .fixed(h.idHash, HASH_BYTES, 'idHash')
      .varint(h.home)
      .fixed(h.rootDigest, HASH_BYTES, 'rootDigest')
      .fixed(block.patientPreKey, POINT_BYTES, 'patientPreKey')
      .fixed(block.patientSigningKey, POINT_BYTES, 'patientSigningKey')
      .list(block.leaves, (lw, l) =>
        lw
          .varint(l.institution)
          .fixed(l.digest, HASH_BYTES, 'leaf digest')
          .varint(l.seq)
          .fixed(l.running, HASH_BYTES, 'leaf running'),
      ),
  );
}

/** Inverse of encodeMicroblock; a malformed field (or a key that is no point) is MALFORMED. */
export function decodeMicroblock(bytes: Bytes): Microblock {
  return decode(bytes, 'microblock', (r) => {
    const header: MicroblockHeader = {
      i: r.varint('i'),
      j: r.varint('j'),
      idHash: r.fixed(HASH_BYTES, 'idHash'),
      home: r.varint('home', 0xffff),
      rootDigest: r.fixed(HASH_BYTES, 'rootDigest'),
    };
    const patientPreKey = readKey(r, 'patientPreKey');
    const patientSigningKey = readKey(r, 'patientSigningKey');
    const leaves = r.list(
      'leaves',
      MAX_LEAVES,
      (lr): LeafState => ({
        institution: lr.varint('leaf institution', 0xffff),
        digest: lr.fixed(HASH_BYTES, 'leaf digest'),
        seq: lr.varint('leaf seq'),
        running: lr.fixed(HASH_BYTES, 'leaf running'),
      }),
    );
    return { header, hash: microblockHash(header), patientPreKey, patientSigningKey, leaves };
  });
}

/** Chameleon context of the root: the patient. */
export function rootContext(idHash: Bytes): Bytes {
  return encode((w) => w.fixed(idHash, HASH_BYTES, 'idHash'));
}

/** Chameleon context of a leaf: the patient and the institution. */
export function leafContext(idHash: Bytes, institution: InstitutionIndex): Bytes {
  return encode((w) => w.fixed(idHash, HASH_BYTES, 'idHash').varint(institution));
}

/** The running hash a fresh leaf starts from. */
export function initialRunning(idHash: Bytes, institution: InstitutionIndex): Bytes {
  return ledgerHash('leaf-start', leafContext(idHash, institution));
}

export function nextRunning(running: Bytes, tx: RecordTx): Bytes {
  return ledgerHash('leaf-next', running, recordTxCore(tx));
}

/** The Merkle root of a leaf set: leaves are (institution, digest) in order of addition. */
export function leafSetRoot(leaves: readonly { institution: number; digest: Bytes }[]): Bytes {
  return merkleRoot(
    leaves.map((l) => encode((w) => w.varint(l.institution).fixed(l.digest, HASH_BYTES, 'digest'))),
  );
}

function hex(b: Bytes): string {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

/** MB_{i,j} as its register tx makes it, without checks (createMicroblock checks first). */
export function microblockFromRegister(tx: RegisterTx, ref: BlockRef): Microblock {
  const header = {
    i: ref.i,
    j: ref.j,
    idHash: tx.idHash,
    home: tx.home,
    rootDigest: tx.rootDigest,
  };
  return {
    header,
    hash: microblockHash(header),
    patientPreKey: tx.patientPreKey,
    patientSigningKey: tx.patientSigningKey,
    leaves: [
      {
        institution: tx.home,
        digest: tx.homeLeafDigest,
        seq: 0,
        running: initialRunning(tx.idHash, tx.home),
      },
    ],
  };
}

/** Creates MB_{i,j} from its register tx, checking the home institution's root opening. */
export function createMicroblock(
  tx: RegisterTx,
  ref: BlockRef,
  members: MemberLookup,
): { ok: true; block: Microblock } | { ok: false; verdict: Verdict } {
  const home = members(tx.home);
  if (!home) {
    return {
      ok: false,
      verdict: reject('UNKNOWN_INSTITUTION', `home institution ${tx.home} is not a member`),
    };
  }
  const leaves = [{ institution: tx.home, digest: tx.homeLeafDigest }];
  if (
    !verifyChameleonCached(
      home.chameleonKey,
      rootContext(tx.idHash),
      leafSetRoot(leaves),
      tx.rootDigest,
      tx.rootOpening,
    )
  ) {
    return {
      ok: false,
      verdict: reject(
        'BAD_CHAMELEON_OPENING',
        'register tx root opening does not open the root digest to {home}',
      ),
    };
  }
  return { ok: true, block: microblockFromRegister(tx, ref) };
}

/**
 * Appends a medical or label tx to its institution's leaf: the institution must have a leaf (upload
 * grant), seq must be the next one, a label must target one of the leaf's medical txs, and the tx's
 * opening must open the leaf digest to the new running hash. Returns the new block (the header and
 * hash are unchanged) or the typed reason.
 */
export function appendRecord(
  block: Microblock,
  tx: RecordTx,
  members: MemberLookup,
  isRecordOf: RecordLookup,
): { ok: true; block: Microblock } | { ok: false; verdict: Verdict } {
  const fail = (verdict: Verdict) => ({ ok: false as const, verdict });
  if (tx.block.i !== block.header.i || tx.block.j !== block.header.j) {
    return fail(reject('UNKNOWN_PATIENT', 'tx is addressed to another patient block'));
  }
  const at = block.leaves.findIndex((l) => l.institution === tx.institution);
  const leaf = block.leaves[at];
  const member = members(tx.institution);
  if (!leaf || !member) {
    return fail(
      reject(
        'UNAUTHORISED_INSTITUTION',
        `institution ${tx.institution} has no upload grant for this patient`,
        {
          institution: tx.institution,
        },
      ),
    );
  }
  if (tx.seq <= leaf.seq) {
    return fail(
      reject('REPLAYED_TX', `seq ${tx.seq} was already used (leaf is at ${leaf.seq})`, {
        seq: tx.seq,
      }),
    );
  }
  if (tx.seq !== leaf.seq + 1) {
    return fail(
      reject('SEQUENCE_GAP', `seq ${tx.seq} skips ahead (expected ${leaf.seq + 1})`, {
        seq: tx.seq,
      }),
    );
  }
  if (tx.type === 'label' && !isRecordOf(hex(tx.target), tx.block, tx.institution)) {
    return fail(
      reject('UNKNOWN_TX', 'label targets no medical tx of this institution for this patient'),
    );
  }
  const running = nextRunning(leaf.running, tx);
  const ctx = leafContext(block.header.idHash, tx.institution);
  if (!verifyChameleonCached(member.chameleonKey, ctx, running, leaf.digest, tx.opening)) {
    return fail(
      reject(
        'BAD_CHAMELEON_OPENING',
        'tx opening does not open the leaf digest to the new running hash',
      ),
    );
  }
  const leaves = block.leaves.slice();
  leaves[at] = { ...leaf, seq: tx.seq, running };
  return { ok: true, block: { ...block, leaves } };
}

/**
 * Adds an institution's leaf: the patient's grant must be valid, the institution must be a member
 * without a leaf, and the home institution's root opening must open the root digest to the new set.
 */
export function addLeaf(
  block: Microblock,
  tx: LeafTx,
  chainId: string,
  members: MemberLookup,
): { ok: true; block: Microblock } | { ok: false; verdict: Verdict } {
  const fail = (verdict: Verdict) => ({ ok: false as const, verdict });
  if (tx.block.i !== block.header.i || tx.block.j !== block.header.j) {
    return fail(reject('UNKNOWN_PATIENT', 'leaf tx is addressed to another patient block'));
  }
  if (!members(tx.institution)) {
    return fail(reject('UNKNOWN_INSTITUTION', `institution ${tx.institution} is not a member`));
  }
  if (block.leaves.some((l) => l.institution === tx.institution)) {
    return fail(reject('REPLAYED_TX', `institution ${tx.institution} already has a leaf`));
  }
  if (!verifyGrant(chainId, block.header.idHash, tx, block.patientSigningKey)) {
    return fail(reject('BAD_SIGNATURE', 'the patient did not grant this institution'));
  }
  const home = members(block.header.home)!;
  const next = [
    ...block.leaves.map((l) => ({ institution: l.institution, digest: l.digest })),
    {
      institution: tx.institution,
      digest: tx.leafDigest,
    },
  ];
  if (
    !verifyChameleonCached(
      home.chameleonKey,
      rootContext(block.header.idHash),
      leafSetRoot(next),
      block.header.rootDigest,
      tx.rootOpening,
    )
  ) {
    return fail(
      reject(
        'BAD_CHAMELEON_OPENING',
        'leaf tx root opening does not open the root digest to the new leaf set',
      ),
    );
  }
  const leaf: LeafState = {
    institution: tx.institution,
    digest: tx.leafDigest,
    seq: 0,
    running: initialRunning(block.header.idHash, tx.institution),
  };
  return { ok: true, block: { ...block, leaves: [...block.leaves, leaf] } };
}

/**
 * Applies one batch tx to its patient block: a record append or a new leaf. A LedgerError thrown by
 * a rule becomes the verdict, so callers get one result shape.
 */
export function applyBatchTx(
  block: Microblock,
  tx: BatchTx,
  chainId: string,
  members: MemberLookup,
  isRecordOf: RecordLookup,
): { ok: true; block: Microblock } | { ok: false; verdict: Verdict } {
  try {
    return tx.type === 'leaf'
      ? addLeaf(block, tx, chainId, members)
      : appendRecord(block, tx, members, isRecordOf);
  } catch (err) {
    if (isLedgerError(err)) return { ok: false, verdict: { ok: false, error: err } };
    throw err;
  }
}
