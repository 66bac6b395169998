/**
 * Tx batches: the ordinary, pinned record of every append. A batch carries signed bundles of
 * institutions' txs; validating it replays each tx against the patients' microblocks in order, so
 * it yields the updated microblocks the batch produces (or the first typed reason it fails).
 */
import { equalBytes, toHex } from '../crypto/bytes.ts';
import { decode, encode } from './codec.ts';
import { isLedgerError, OK, reject, type Verdict } from './errors.ts';
import { HASH_BYTES, ledgerHash } from './hash.ts';
import { addLeaf, appendRecord, type MemberLookup, type Microblock } from './microblock.ts';
import {
  checkBundleStateless,
  readBundle,
  txHash,
  verifyBundleSignature,
  writeBundle,
} from './tx.ts';
import type { BlockRef, Bytes, Genesis, InstitutionIndex, TxBatch } from './types.ts';

/** Most bundles in one batch. */
export const MAX_BATCH_BUNDLES = 4096;

export function encodeBatch(batch: TxBatch): Bytes {
  return encode((w) => {
    w.varint(batch.height)
      .fixed(batch.prev, HASH_BYTES, 'prev')
      .varint(batch.keyblockHeight)
      .varint(batch.proposer);
    w.list(batch.bundles, writeBundle);
  });
}

export function decodeBatch(bytes: Bytes): TxBatch {
  return decode(bytes, 'batch', (r) => ({
    height: r.varint('height'),
    prev: r.fixed(HASH_BYTES, 'prev'),
    keyblockHeight: r.varint('keyblockHeight'),
    proposer: r.varint('proposer', 0xffff),
    bundles: r.list('bundles', MAX_BATCH_BUNDLES, readBundle),
  }));
}

export function batchHash(batch: TxBatch): Bytes {
  return ledgerHash('batch', encodeBatch(batch));
}

export function refKey(ref: BlockRef): string {
  return `${ref.i}/${ref.j}`;
}

/** Where the rules read patient blocks from (memory in simulations, LevelDB in the node). */
export interface MicroblockView {
  get(ref: BlockRef): Microblock | undefined;
}

export interface BatchContext {
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
}

export interface BatchEffects {
  /** The patient blocks the batch changed, by refKey, in their new state. */
  readonly microblocks: ReadonlyMap<string, Microblock>;
  /** Record txs and fees per institution (for reputation and accounts). */
  readonly recordsBy: ReadonlyMap<InstitutionIndex, number>;
  readonly feesBy: ReadonlyMap<InstitutionIndex, number>;
  readonly txCount: number;
}

export function validateBatch(
  batch: TxBatch,
  ctx: BatchContext,
): { verdict: Verdict; effects: BatchEffects } {
  const changed = new Map<string, Microblock>();
  const recordsBy = new Map<number, number>();
  const feesBy = new Map<number, number>();
  const seen = new Set<string>();
  let txCount = 0;
  const done = (verdict: Verdict) => ({
    verdict,
    effects: { microblocks: changed, recordsBy, feesBy, txCount },
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
      let out: ReturnType<typeof appendRecord>;
      try {
        out =
          tx.type === 'leaf'
            ? addLeaf(block, tx, ctx.genesis.chainId, ctx.members)
            : appendRecord(block, tx, ctx.members);
      } catch (err) {
        if (isLedgerError(err)) return done({ ok: false, error: err });
        throw err;
      }
      if (!out.ok) return done(out.verdict);
      if (tx.type === 'leaf' && bundle.institution !== block.header.home) {
        return done(
          reject('UNAUTHORISED_INSTITUTION', 'only the home institution submits leaf txs'),
        );
      }
      changed.set(key, out.block);
      if (tx.type !== 'leaf')
        recordsBy.set(tx.institution, (recordsBy.get(tx.institution) ?? 0) + 1);
      feesBy.set(bundle.institution, (feesBy.get(bundle.institution) ?? 0) + tx.fee);
    }
  }
  return done(OK);
}
