/**
 * Checking a record another institution served re-encrypted (DESIGN section 7, step 4), and
 * applying corrections to the records that pass. Pure: the receiver's pinned patient block and the
 * certified batch hash come in as values.
 *
 * A holder serves, per record: its tx, the running hash of its leaf before the tx, the tx's
 * inclusion proof in a pinned batch, the Umbral capsule, the cfrag(s) it made with the patient's
 * kfrag(s), and the ciphertext. The receiver accepts it only if every check holds, cheapest first:
 *   1. the tx is addressed to this patient's block (i, j)           OTHER_PATIENT
 *   2. it is on the serving holder's own leaf                       WRONG_HOLDER
 *   3. its seq is within the leaf as the receiver has it pinned     NOT_PINNED
 *   4. SHA-256(ciphertext) = tx.pointer                             WRONG_CIPHERTEXT
 *   5. the inclusion proof leads to the batch hash the receiver's
 *      own pinned certificate at that height signs                  NOT_PINNED
 *   6. the tx's chameleon opening opens the leaf's digest to
 *      nextRunning(previous running hash, tx) (the ledger's rule)   BAD_OPENING
 *   7. capsule and cfrags decode, each cfrag's proof verifies for
 *      (patient PRE key -> receiver PRE key) under the patient's
 *      signing key                                                   BAD_CAPSULE / BAD_CFRAG
 *   8. the cfrags open the capsule and the AEAD tag holds           DECRYPTION_FAILED
 * A holder holds its own chameleon trapdoor, so (6) alone could be forged for any content; (5) is
 * what binds the content to the ledger, (6) binds the tx to the patient's block.
 */

import { equalBytes, toHex, u32be } from '../crypto/bytes.ts';
import { verifyChameleon } from '../crypto/chameleon.ts';
import { isCryptoError } from '../crypto/errors.ts';
import { type RandomBytes, systemRandom } from '../crypto/random.ts';
import { sha256, sha256Parts } from '../crypto/sha256.ts';
import {
  type Capsule,
  decodeCapsule,
  decodeCapsuleFrag,
  decryptReencrypted,
  decryptWithSeed,
  openReencrypted,
  type VerifiedCapsuleFrag,
  verifyCapsuleFrag,
} from '../crypto/umbral/index.ts';
import { type TxInclusion, verifyTxInclusion } from './batch.ts';
import { leafContext, type Microblock, nextRunning } from './microblock.ts';
import { txHash } from './tx.ts';
import type { Bytes, InstitutionIndex, RecordTx } from './types.ts';

/** One record as a holder serves it. */
export interface ServedRecord {
  readonly tx: RecordTx;
  /** The holder's leaf running hash before this tx (the tx's opening opens nextRunning of it). */
  readonly prevRunning: Bytes;
  /** The tx's path to its batch's commitment (whose height names the certificate). */
  readonly inclusion: TxInclusion;
  /** encodeCapsule of the record's capsule. */
  readonly capsule: Bytes;
  /** encodeCapsuleFrag of each cfrag (one per kfrag of the grant). */
  readonly cfrags: readonly Bytes[];
  readonly ciphertext: Bytes;
}

export interface SharedRecordContext {
  /** The patient's block as the receiver's node has it pinned. */
  readonly block: Microblock;
  /** The serving institution (authenticated by the transport) and its chameleon hash key. */
  readonly holder: { readonly index: InstitutionIndex; readonly chameleonKey: Bytes };
  /** The batch hash the receiver's own pinned certificate at the proof's height signs, if any. */
  readonly certifiedBatchHash: Bytes | undefined;
  /** The receiver's PRE key pair. */
  readonly receiver: { readonly preSecret: Bytes; readonly preKey: Bytes };
  readonly random?: RandomBytes;
  /** Capsules this fetch has verified and opened already (records that share one). */
  readonly opened?: OpenedCapsules;
}

/**
 * The capsules one fetch of one receiver has checked and opened, for the records that share a
 * capsule (a holder's ingest seals the records of one bundle, patient and resource type under one,
 * and re-encrypts it once per answer, so they come with the same cfrags): the cfrags of a given
 * (patient keys, capsule, cfrags) are verified once and recombined into the key seed once; each
 * record then only decrypts its own ciphertext, whose AEAD binds it to the capsule. Nothing is
 * assumed of a record that does not match byte for byte. Holds key seeds in memory: `dispose`
 * zero-fills them, and an instance serves one fetch of one receiver only.
 */
export class OpenedCapsules {
  /** Verified keys, with the capsule as decoded (and self-checked) then. */
  private readonly verified = new Map<string, Capsule>();
  private readonly opened = new Map<string, { capsule: Capsule; seed: Uint8Array }>();

  /** The key of a capsule with its cfrags under a patient's keys. */
  static keyOf(
    block: Pick<Microblock, 'patientPreKey' | 'patientSigningKey'>,
    rec: Pick<ServedRecord, 'capsule' | 'cfrags'>,
  ): string {
    const parts = [block.patientSigningKey, block.patientPreKey, rec.capsule, ...rec.cfrags];
    return toHex(sha256Parts(parts.flatMap((p) => [u32be(p.length), p])));
  }

  wasVerified(key: string): boolean {
    return this.verified.has(key);
  }

  markVerified(key: string, capsule: Capsule): void {
    this.verified.set(key, capsule);
  }

  /** The capsule decoded when `key` was verified, if it was. */
  capsuleOf(key: string): Capsule | undefined {
    return this.verified.get(key);
  }

  /** The capsule and key seed under `key`, made by `open` the first time. */
  open(
    key: string,
    open: () => { capsule: Capsule; seed: Uint8Array },
  ): { capsule: Capsule; seed: Uint8Array } {
    let entry = this.opened.get(key);
    if (entry === undefined) {
      entry = open();
      this.opened.set(key, entry);
    }
    return entry;
  }

  dispose(): void {
    for (const { seed } of this.opened.values()) seed.fill(0);
    this.opened.clear();
    this.verified.clear();
  }
}

export type SharedRecordFailure =
  | 'OTHER_PATIENT'
  | 'WRONG_HOLDER'
  | 'NOT_PINNED'
  | 'WRONG_CIPHERTEXT'
  | 'BAD_OPENING'
  | 'BAD_CAPSULE'
  | 'BAD_CFRAG'
  | 'DECRYPTION_FAILED';

export type SharedRecordCheck =
  | { readonly ok: true; readonly hash: Bytes; readonly plaintext: Bytes }
  | { readonly ok: false; readonly code: SharedRecordFailure; readonly message: string };

const failed = (code: SharedRecordFailure, message: string): SharedRecordCheck => ({
  ok: false,
  code,
  message,
});

/** Every check of the module comment, in order; the plaintext when all hold. */
export function verifySharedRecord(rec: ServedRecord, ctx: SharedRecordContext): SharedRecordCheck {
  const { block, holder } = ctx;
  const { tx } = rec;
  if (tx.block.i !== block.header.i || tx.block.j !== block.header.j) {
    return failed('OTHER_PATIENT', `the tx belongs to patient block ${tx.block.i}/${tx.block.j}`);
  }
  if (tx.institution !== holder.index) {
    return failed('WRONG_HOLDER', `the tx is on institution ${tx.institution}'s leaf`);
  }
  const leaf = block.leaves.find((l) => l.institution === holder.index);
  if (leaf === undefined || tx.seq > leaf.seq) {
    return failed('NOT_PINNED', `seq ${tx.seq} is beyond the pinned leaf (${leaf?.seq ?? 0})`);
  }
  if (!equalBytes(sha256(rec.ciphertext), tx.pointer)) {
    return failed('WRONG_CIPHERTEXT', 'the ciphertext does not hash to the tx pointer');
  }
  const hash = txHash(tx);
  const proven = verifyTxInclusion(hash, rec.inclusion);
  if (proven === null) {
    return failed('NOT_PINNED', 'the inclusion proof does not lead to its batch commitment');
  }
  if (ctx.certifiedBatchHash === undefined || !equalBytes(proven, ctx.certifiedBatchHash)) {
    return failed(
      'NOT_PINNED',
      `no pinned certificate at batch ${rec.inclusion.commitment.height} signs this batch`,
    );
  }
  if (
    !(rec.prevRunning instanceof Uint8Array) ||
    !verifyChameleon(
      holder.chameleonKey,
      leafContext(block.header.idHash, holder.index),
      nextRunning(rec.prevRunning, tx),
      leaf.digest,
      tx.opening,
    )
  ) {
    return failed('BAD_OPENING', "the tx's opening does not open the holder's leaf digest");
  }
  if (rec.cfrags.length === 0) return failed('BAD_CFRAG', 'no cfrag was served');
  // The same capsule and cfrags, byte for byte, under the same patient keys: checked already.
  const opened = ctx.opened;
  const key = opened === undefined ? '' : OpenedCapsules.keyOf(block, rec);
  if (opened?.wasVerified(key)) {
    return decrypted(hash, () =>
      openedPlaintext(opened, key, block, rec, ctx.receiver, ctx.random),
    );
  }
  let capsule: Capsule;
  try {
    capsule = decodeCapsule(rec.capsule);
  } catch (err) {
    if (!isCryptoError(err)) throw err;
    return failed('BAD_CAPSULE', `capsule: ${err.message}`);
  }
  const cfrags: VerifiedCapsuleFrag[] = [];
  for (const [n, bytes] of rec.cfrags.entries()) {
    try {
      cfrags.push(
        verifyCapsuleFrag(decodeCapsuleFrag(bytes), {
          capsule,
          verifyingPk: block.patientSigningKey,
          delegatingPk: block.patientPreKey,
          receivingPk: ctx.receiver.preKey,
        }),
      );
    } catch (err) {
      if (!isCryptoError(err)) throw err;
      return failed('BAD_CFRAG', `cfrag ${n}: ${err.message}`);
    }
  }
  if (opened !== undefined) {
    opened.markVerified(key, capsule);
    return decrypted(hash, () =>
      openedPlaintext(opened, key, block, rec, ctx.receiver, ctx.random),
    );
  }
  return decrypted(hash, () =>
    decryptReencrypted(
      ctx.receiver.preSecret,
      block.patientPreKey,
      capsule,
      cfrags,
      rec.ciphertext,
      ctx.random,
    ),
  );
}

function decrypted(hash: Bytes, open: () => Bytes): SharedRecordCheck {
  try {
    return { ok: true, hash, plaintext: open() };
  } catch (err) {
    if (!isCryptoError(err)) throw err;
    return failed('DECRYPTION_FAILED', err.message);
  }
}

/** Decrypts a record whose cfrags were verified: its capsule opened once per OpenedCapsules. */
function openedPlaintext(
  opened: OpenedCapsules,
  key: string,
  block: Pick<Microblock, 'patientPreKey'>,
  rec: Pick<ServedRecord, 'capsule' | 'cfrags' | 'ciphertext'>,
  receiver: { readonly preSecret: Bytes },
  random: RandomBytes | undefined,
): Bytes {
  const { capsule, seed } = opened.open(key, () => {
    const capsule = opened.capsuleOf(key) ?? decodeCapsule(rec.capsule);
    const cfrags = rec.cfrags.map((b) => decodeCapsuleFrag(b) as VerifiedCapsuleFrag);
    const r = random ?? systemRandom;
    return {
      capsule,
      seed: openReencrypted(receiver.preSecret, block.patientPreKey, capsule, cfrags, r),
    };
  });
  return decryptWithSeed(seed, capsule, rec.ciphertext);
}

/**
 * Decrypts a record that passed verifySharedRecord earlier (e.g. kept in the receiver's cache):
 * the cfrags are decoded and taken as verified; decryption still checks the capsule binding and
 * the AEAD tag. Throws CryptoError.
 */
export function decryptVerifiedRecord(
  rec: Pick<ServedRecord, 'capsule' | 'cfrags' | 'ciphertext'>,
  block: Pick<Microblock, 'patientPreKey' | 'patientSigningKey'>,
  receiverPreSecret: Bytes,
  random?: RandomBytes,
  opened?: OpenedCapsules,
): Bytes {
  const patientPreKey = block.patientPreKey;
  if (opened !== undefined) {
    const key = OpenedCapsules.keyOf(block, rec);
    return openedPlaintext(opened, key, block, rec, { preSecret: receiverPreSecret }, random);
  }
  const capsule = decodeCapsule(rec.capsule);
  const cfrags = rec.cfrags.map((b) => decodeCapsuleFrag(b) as VerifiedCapsuleFrag);
  return decryptReencrypted(
    receiverPreSecret,
    patientPreKey,
    capsule,
    cfrags,
    rec.ciphertext,
    random,
  );
}

// ---------------------------------------------------------------------------------------------
// Corrections

/** A verified record tx with whatever the caller attaches (content, provenance). */
export interface VersionOf<T> {
  readonly tx: RecordTx;
  readonly hash: Bytes;
  readonly value: T;
}

/** A record as it stands after corrections. */
export interface CurrentRecord<T> {
  /** The latest version: the label with the highest seq correcting the record, else the record. */
  readonly current: VersionOf<T>;
  /** The medical tx the record started as (hex): the current version's own hash, or its target. */
  readonly origin: string;
  /** Versions it supersedes (the medical tx and older labels that were served), oldest first. */
  readonly superseded: readonly VersionOf<T>[];
}

/**
 * Applies label txs (paper Table 3, TL): a label's record replaces the record of the medical tx it
 * targets, and of several labels of one record the last (highest seq on the institution's leaf)
 * stands. A label whose target was not served still stands for that record (it is the newest
 * verified version of it). Records come out in the order their first served version appears on
 * each leaf (institution, then seq).
 */
export function currentRecords<T>(versions: readonly VersionOf<T>[]): CurrentRecord<T>[] {
  const groups = new Map<string, { first: VersionOf<T>; all: VersionOf<T>[] }>();
  for (const v of versions) {
    const origin = v.tx.type === 'label' ? toHex(v.tx.target) : toHex(v.hash);
    const key = `${v.tx.institution}:${origin}`;
    const g = groups.get(key);
    if (g === undefined) groups.set(key, { first: v, all: [v] });
    else g.all.push(v);
  }
  const out = [...groups.entries()].map(([key, g]) => {
    const all = [...g.all].sort((a, b) => a.tx.seq - b.tx.seq);
    const current = all[all.length - 1]!;
    return {
      current,
      origin: key.slice(key.indexOf(':') + 1),
      superseded: all.slice(0, -1),
      order: [Math.min(...all.map((v) => v.tx.institution)), all[0]!.tx.seq],
    };
  });
  out.sort((a, b) => a.order[0]! - b.order[0]! || a.order[1]! - b.order[1]!);
  return out.map(({ current, origin, superseded }) => ({ current, origin, superseded }));
}
