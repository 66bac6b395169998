/**
 * Tx batches: the ordinary, pinned record of every append. A batch carries signed bundles of
 * institutions' txs and the misbehaviour evidence it pins (evidence.ts); validating it replays each
 * tx against the patients' microblocks in order, so it yields the updated microblocks the batch
 * produces (or the first typed reason it fails), and checks every evidence item against the pinned
 * state.
 */
import { equalBytes, toHex } from '../crypto/bytes.ts';
import {
  type MerkleProof,
  MerkleTree,
  merkleLeafHash,
  merkleRoot,
  merkleRootFromProof,
  merkleRootOfLeafHashes,
} from '../crypto/merkle.ts';
import type { HashValue } from './bft-messages.ts';
import type { ConsensusGroup } from './certificate.ts';
import { decode, encode, type Reader, type Writer } from './codec.ts';
import { OK, reject, type Verdict } from './errors.ts';
import { checkEvidence, evidenceRoot, readEvidenceList, writeEvidence } from './evidence.ts';
import { HASH_BYTES, ledgerHash } from './hash.ts';
import {
  applyBatchTx,
  type MemberLookup,
  type Microblock,
  type RecordLookup,
} from './microblock.ts';
import {
  checkBundleStateless,
  encodeTx,
  readBundle,
  txHash,
  verifyBundleSignature,
  writeBundle,
} from './tx.ts';
import type { BlockRef, Bytes, Genesis, InstitutionIndex, TxBatch } from './types.ts';

/** Most bundles in one batch. */
export const MAX_BATCH_BUNDLES = 4096;
/** A bundle's signature, written after its txs. */
const BUNDLE_SIGNATURE_BYTES = 64;

export function encodeBatch(batch: TxBatch): Bytes {
  return encode((w) => {
    w.varint(batch.height)
      .fixed(batch.prev, HASH_BYTES, 'prev')
      .varint(batch.keyblockHeight)
      .varint(batch.proposer);
    w.list(batch.bundles, writeBundle);
    w.list(batch.evidence, writeEvidence);
  });
}

export function decodeBatch(bytes: Bytes): TxBatch {
  return decode(bytes, 'batch', (r) => ({
    height: r.varint('height'),
    prev: r.fixed(HASH_BYTES, 'prev'),
    keyblockHeight: r.varint('keyblockHeight'),
    proposer: r.varint('proposer', 0xffff),
    bundles: r.list('bundles', MAX_BATCH_BUNDLES, readBundle),
    evidence: readEvidenceList(r),
  }));
}

/**
 * Where each tx's canonical encoding lies inside encodeBatch(batch), in batch tx order (the order
 * of batchTxHashes), so a tx can be read and hashed from the stored batch bytes alone. Follows the
 * layout of encodeBatch and writeBundle: header, bundle count, then per bundle its institution and
 * tx count, its txs back to back, and its 64-byte signature (the evidence list comes after them).
 */
export function batchTxSpans(batch: TxBatch): { offset: number; length: number }[] {
  const varintSize = (n: number) => encode((w) => w.varint(n)).length;
  let offset =
    varintSize(batch.height) +
    HASH_BYTES +
    varintSize(batch.keyblockHeight) +
    varintSize(batch.proposer) +
    varintSize(batch.bundles.length);
  const spans: { offset: number; length: number }[] = [];
  for (const bundle of batch.bundles) {
    offset += varintSize(bundle.institution) + varintSize(bundle.txs.length);
    for (const tx of bundle.txs) {
      const length = encodeTx(tx).length;
      spans.push({ offset, length });
      offset += length;
    }
    offset += BUNDLE_SIGNATURE_BYTES;
  }
  return spans;
}

/**
 * What a batch's certificate signs: its header and three Merkle roots, over the hashes of all its
 * txs in order, over its bundles' (institution, size, signature), and over its encoded evidence
 * items. A record is then proven with a logarithmic path instead of the whole batch.
 */
export interface BatchCommitment {
  readonly height: number;
  readonly prev: Bytes;
  readonly keyblockHeight: number;
  readonly proposer: InstitutionIndex;
  /** The tx tree's size: a Merkle root means something only together with it. */
  readonly txCount: number;
  readonly txRoot: Bytes;
  readonly bundleRoot: Bytes;
  /** Merkle root of the encoded evidence items, in order (the empty tree's root when none). */
  readonly evidenceRoot: Bytes;
}

export function batchTxHashes(batch: TxBatch): Bytes[] {
  return batch.bundles.flatMap((b) => b.txs.map(txHash));
}

export function batchCommitment(batch: TxBatch, txHashes = batchTxHashes(batch)): BatchCommitment {
  return {
    height: batch.height,
    prev: batch.prev,
    keyblockHeight: batch.keyblockHeight,
    proposer: batch.proposer,
    txCount: txHashes.length,
    txRoot: merkleRootOfLeafHashes(txHashes.map(merkleLeafHash)),
    bundleRoot: merkleRoot(
      batch.bundles.map((b) =>
        encode((w) =>
          w.varint(b.institution).varint(b.txs.length).fixed(b.signature, 64, 'signature'),
        ),
      ),
    ),
    evidenceRoot: evidenceRoot(batch.evidence),
  };
}

/** The canonical encoding of a commitment (what its hash covers; the store keeps it too). */
export function writeCommitment(w: Writer, c: BatchCommitment): void {
  w.varint(c.height)
    .fixed(c.prev, HASH_BYTES, 'prev')
    .varint(c.keyblockHeight)
    .varint(c.proposer)
    .varint(c.txCount)
    .fixed(c.txRoot, HASH_BYTES, 'txRoot')
    .fixed(c.bundleRoot, HASH_BYTES, 'bundleRoot')
    .fixed(c.evidenceRoot, HASH_BYTES, 'evidenceRoot');
}

export function readCommitment(r: Reader): BatchCommitment {
  return {
    height: r.varint('height'),
    prev: r.fixed(HASH_BYTES, 'prev'),
    keyblockHeight: r.varint('keyblockHeight'),
    proposer: r.varint('proposer', 0xffff),
    txCount: r.varint('txCount'),
    txRoot: r.fixed(HASH_BYTES, 'txRoot'),
    bundleRoot: r.fixed(HASH_BYTES, 'bundleRoot'),
    evidenceRoot: r.fixed(HASH_BYTES, 'evidenceRoot'),
  };
}

export function commitmentHash(c: BatchCommitment): Bytes {
  return ledgerHash(
    'batch',
    encode((w) => writeCommitment(w, c)),
  );
}

export function batchHash(batch: TxBatch): Bytes {
  return commitmentHash(batchCommitment(batch));
}

const valueHashes = new WeakMap<Bytes, Bytes>();
/** By a digest of the bytes: each copy of a proposal that arrives (re-sends) is a new array. */
const valueHashesByContent = new Map<string, Bytes>();
const MAX_VALUE_HASHES_BY_CONTENT = 64;

/**
 * id(v) for batch consensus (BftContext.hashValue): the commitment hash of the encoded batch `v`.
 * Throws if undecodable. Memoised by bytes object, and by a SHA-256 of the bytes (one pass over
 * them, against decoding and hashing every tx): callers must not mutate bytes once passed in.
 */
export const batchValueHash: HashValue = (bytes) => {
  let hash = valueHashes.get(bytes);
  if (hash === undefined) {
    const key = toHex(ledgerHash('batch-bytes', bytes));
    hash = valueHashesByContent.get(key);
    if (hash === undefined) {
      hash = batchHash(decodeBatch(bytes));
      if (valueHashesByContent.size >= MAX_VALUE_HASHES_BY_CONTENT) {
        valueHashesByContent.delete(valueHashesByContent.keys().next().value!);
      }
      valueHashesByContent.set(key, hash);
    }
    valueHashes.set(bytes, hash);
  }
  return hash;
};

/** Proof that the tx with hash `txHashes[index]` is in the batch (path in the tx tree). */
export interface TxInclusion {
  readonly commitment: BatchCommitment;
  readonly proof: MerkleProof;
}

export function txInclusion(
  batch: TxBatch,
  index: number,
  txHashes = batchTxHashes(batch),
): TxInclusion {
  return {
    commitment: batchCommitment(batch, txHashes),
    proof: MerkleTree.fromLeafHashes(txHashes.map(merkleLeafHash)).proof(index),
  };
}

/** Checks a tx hash against an inclusion proof; returns the batch hash the certificate must sign. */
export function verifyTxInclusion(txHashValue: Bytes, inclusion: TxInclusion): Bytes | null {
  if (inclusion.proof.size !== inclusion.commitment.txCount) return null;
  const root = merkleRootFromProofSafe(merkleLeafHash(txHashValue), inclusion.proof);
  if (!root || !equalBytes(root, inclusion.commitment.txRoot)) return null;
  return commitmentHash(inclusion.commitment);
}

function merkleRootFromProofSafe(leaf: Bytes, proof: MerkleProof): Bytes | null {
  try {
    return merkleRootFromProof(leaf, proof);
  } catch {
    return null;
  }
}

export function refKey(ref: BlockRef): string {
  return `${ref.i}/${ref.j}`;
}

/** Where the rules read patient blocks from (memory in simulations, LevelDB in the node). */
export interface MicroblockView {
  get(ref: BlockRef): Microblock | undefined;
}

/** What validateBatchTxs reads: the pinned tip and patient blocks, and the tx indexes. */
export interface BatchTxContext {
  readonly genesis: Genesis;
  readonly members: MemberLookup;
  /** The batch must extend this one. */
  readonly prevHash: Bytes;
  readonly height: number;
  /** Height of the latest pinned keyblock: a batch may only address patients registered up to it. */
  readonly pinnedKeyblockHeight: number;
  readonly microblocks: MicroblockView;
  /** Tx hashes already pinned (replays across batches), hex. */
  readonly isPinnedTx: (hashHex: string) => boolean;
  /** Pinned medical txs, for label targets. */
  readonly isRecordOf: RecordLookup;
}

/** What validateBatch reads: the tx context, and what judging evidence needs of pinned state. */
export interface BatchContext extends BatchTxContext {
  /**
   * The consensus group as of the batch's keyblock anchor, from pinned data only: equivocations
   * are judged under it.
   */
  readonly group: ConsensusGroup;
  /** Whether pinned evidence already names the institution (no re-pinning). */
  readonly hasPinnedEvidence: (institution: InstitutionIndex) => boolean;
}

export interface BatchEffects {
  /** The patient blocks the batch changed, by refKey, in their new state. */
  readonly microblocks: ReadonlyMap<string, Microblock>;
  /** Record txs per institution (for reputation); fees are settled by fees.ts batchCharges. */
  readonly recordsBy: ReadonlyMap<InstitutionIndex, number>;
  readonly txCount: number;
}

/**
 * The whole batch: its header and txs (validateBatchTxs), then its evidence against the pinned
 * state as of its parent (evidence.ts checkEvidence).
 */
export function validateBatch(
  batch: TxBatch,
  ctx: BatchContext,
): { verdict: Verdict; effects: BatchEffects } {
  const out = validateBatchTxs(batch, ctx);
  if (!out.verdict.ok) return out;
  const verdict = checkEvidence(batch.evidence, { ...ctx, batchValueHash });
  return verdict.ok ? out : { verdict, effects: out.effects };
}

/**
 * A batch's header and bundles, tx by tx in order (its evidence is not looked at): the mempool
 * checks single bundles with it.
 */
export function validateBatchTxs(
  batch: Omit<TxBatch, 'evidence'>,
  ctx: BatchTxContext,
): { verdict: Verdict; effects: BatchEffects } {
  const changed = new Map<string, Microblock>();
  const recordsBy = new Map<number, number>();
  const seen = new Set<string>();
  // Medical txs earlier in this batch, as `hash|i/j|institution`, for label targets.
  const batchRecords = new Set<string>();
  const isRecordOf: RecordLookup = (target, ref, institution) =>
    batchRecords.has(`${target}|${refKey(ref)}|${institution}`) ||
    ctx.isRecordOf(target, ref, institution);
  let txCount = 0;
  const done = (verdict: Verdict) => ({
    verdict,
    effects: { microblocks: changed, recordsBy, txCount },
  });
  if (batch.height !== ctx.height || !equalBytes(batch.prev, ctx.prevHash)) {
    return done(
      reject('WRONG_PARENT', `batch ${batch.height} does not extend batch ${ctx.height - 1}`),
    );
  }
  if (!ctx.members(batch.proposer)) {
    return done(reject('UNKNOWN_INSTITUTION', `proposer ${batch.proposer} is not a member`));
  }
  if (batch.keyblockHeight > ctx.pinnedKeyblockHeight) {
    return done(reject('WRONG_HEIGHT', 'batch is anchored to an unpinned keyblock'));
  }
  for (const bundle of batch.bundles) {
    const member = ctx.members(bundle.institution);
    if (!member)
      return done(
        reject('UNKNOWN_INSTITUTION', `bundle of unknown institution ${bundle.institution}`),
      );
    const stateless = checkBundleStateless(bundle, ctx.genesis.params.minFee);
    if (!stateless.ok) return done(stateless);
    txCount += bundle.txs.length;
    if (txCount > ctx.genesis.params.maxBatchTxs) {
      return done(
        reject('TOO_LARGE', `batch carries more than ${ctx.genesis.params.maxBatchTxs} txs`),
      );
    }
    if (!verifyBundleSignature(ctx.genesis.chainId, bundle, member.signingKey)) {
      return done(
        reject('BAD_SIGNATURE', `bundle of institution ${bundle.institution} is not signed by it`),
      );
    }
    for (const tx of bundle.txs) {
      const id = toHex(txHash(tx));
      if (seen.has(id) || ctx.isPinnedTx(id))
        return done(reject('REPLAYED_TX', 'tx was already pinned'));
      seen.add(id);
      if (tx.block.i > ctx.pinnedKeyblockHeight) {
        return done(
          reject(
            'UNKNOWN_PATIENT',
            `tx addresses patient block ${refKey(tx.block)}, not yet pinned`,
          ),
        );
      }
      const key = refKey(tx.block);
      const block = changed.get(key) ?? ctx.microblocks.get(tx.block);
      if (!block) return done(reject('UNKNOWN_PATIENT', `no patient block ${key}`));
      const out = applyBatchTx(block, tx, ctx.genesis.chainId, ctx.members, isRecordOf);
      if (!out.ok) return done(out.verdict);
      if (tx.type === 'leaf' && bundle.institution !== block.header.home) {
        return done(
          reject('UNAUTHORISED_INSTITUTION', 'only the home institution submits leaf txs'),
        );
      }
      changed.set(key, out.block);
      if (tx.type === 'medical') batchRecords.add(`${id}|${key}|${tx.institution}`);
      if (tx.type !== 'leaf')
        recordsBy.set(tx.institution, (recordsBy.get(tx.institution) ?? 0) + 1);
    }
  }
  return done(OK);
}
