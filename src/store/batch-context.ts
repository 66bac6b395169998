/**
 * Synchronous ports over an async database: validateBatch reads patient blocks, pinned tx hashes and
 * label targets through synchronous ports (it is pure), while LevelDB is async. loadBatchContext
 * bridges the two: it lists what one batch can ask for (its txs' patient blocks, its tx hashes, its
 * labels' targets, and the patient block of each tx its evidence blames), prefetches all of it in
 * parallel from one LevelDB snapshot, and returns
 * synchronous lookups over that snapshot. Asking it for anything outside the batch throws
 * NOT_PREFETCHED (a programming error, not a "no"). The snapshot carries the height it was taken
 * at: if another batch is pinned in between, putPinnedBatch refuses the validated batch (its height
 * is no longer the next one: CONFLICTS_WITH_PINNED, or 'unchanged' if it is the same batch).
 */
import { fromHex, toHex } from '../crypto/bytes.ts';
import { type BatchContext, refKey } from '../ledger/batch.ts';
import { ZERO_HASH } from '../ledger/keyblock.ts';
import type { Microblock } from '../ledger/microblock.ts';
import { txHash } from '../ledger/tx.ts';
import type { BlockRef, Bytes, InstitutionIndex, TxBatch } from '../ledger/types.ts';
import { StoreError } from './errors.ts';
import { storeKeys } from './keys.ts';
import type { StoreTip } from './values.ts';

/**
 * What validateBatch needs from the chain for one batch; add `genesis`, `members`, and the pinned
 * consensus state its evidence is judged under (`group`, `hasPinnedEvidence`).
 */
export type BatchSnapshot = Pick<
  BatchContext,
  'prevHash' | 'height' | 'pinnedKeyblockHeight' | 'microblocks' | 'isPinnedTx' | 'isRecordOf'
>;

/** Reads from one consistent view of the store (a LevelDB snapshot). */
export interface SnapshotReads {
  readTip(): Promise<StoreTip>;
  getMicroblock(ref: BlockRef): Promise<Microblock | undefined>;
  /** Whether each tx key (storeKeys.tx) is present. */
  hasTxs(keys: Bytes[]): Promise<boolean[]>;
  /** Whether each record key (storeKeys.record) is present. */
  hasRecords(keys: Bytes[]): Promise<boolean[]>;
}

/** Prefetches everything validateBatch can ask about `batch` through `reads` (see above). */
export async function loadBatchContext(
  batch: TxBatch,
  reads: SnapshotReads,
): Promise<BatchSnapshot> {
  const refs = new Map<string, BlockRef>();
  const hashes = new Set<string>();
  const targets = new Map<string, Bytes>();
  for (const e of batch.evidence) {
    // A forged opening is judged against the blamed tx's pinned patient block.
    const tx = e.type === 'bundle' ? e.bundle.txs[e.index] : undefined;
    if (tx !== undefined) refs.set(refKey(tx.block), tx.block);
  }
  for (const bundle of batch.bundles) {
    for (const tx of bundle.txs) {
      refs.set(refKey(tx.block), tx.block);
      hashes.add(toHex(txHash(tx)));
      if (tx.type === 'label') {
        targets.set(
          labelKey(toHex(tx.target), tx.block, tx.institution),
          storeKeys.record(tx.block, tx.institution, tx.target),
        );
      }
    }
  }
  const refList = [...refs.values()];
  const hashList = [...hashes];
  const [tip, blocks, pinned, records] = await Promise.all([
    reads.readTip(),
    Promise.all(refList.map((ref) => reads.getMicroblock(ref))),
    reads.hasTxs(hashList.map((h) => fromHex(h))),
    reads.hasRecords([...targets.values()]),
  ]);
  const blockBy = new Map(refList.map((ref, k) => [refKey(ref), blocks[k]]));
  const pinnedBy = new Map(hashList.map((h, k) => [h, pinned[k]!]));
  const recordBy = new Map([...targets.keys()].map((k, n) => [k, records[n]!]));
  const known = <T>(map: Map<string, T>, key: string, what: string): T => {
    if (!map.has(key)) {
      throw new StoreError(
        'NOT_PREFETCHED',
        `${what} ${key} was not prefetched for batch ${batch.height}`,
      );
    }
    return map.get(key) as T;
  };
  return {
    height: (tip.batch?.height ?? 0) + 1,
    prevHash: tip.batch?.hash ?? ZERO_HASH,
    pinnedKeyblockHeight: tip.keyblock?.height ?? 0,
    microblocks: { get: (ref) => known(blockBy, refKey(ref), 'patient block') },
    isPinnedTx: (h) => known(pinnedBy, h, 'tx'),
    isRecordOf: (t, ref, inst) => known(recordBy, labelKey(t, ref, inst), 'label target'),
  };
}

function labelKey(targetHex: string, ref: BlockRef, institution: InstitutionIndex): string {
  return `${targetHex}|${refKey(ref)}|${institution}`;
}
