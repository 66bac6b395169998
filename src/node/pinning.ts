/**
 * The two kinds of pinning the consensus driver (consensus.ts) runs, as PinningTargets:
 * - batches: the next batch height after the pinned tip, decided by the group as of the tip's
 *   keyblock anchor; a proposal's bundles go to the mempool first, valid(v) is validateProposal
 *   (replica.ts), the proposer builds its batch by Algorithm 2, and a proposal anchored to the
 *   keyblock this node is about to pin waits for it rather than be judged invalid;
 * - keyblocks: the next keyblock height after the pinned one, decided by the group as of the
 *   pinned keyblock once that group is final (keyblocks.ts); the value is the head keyblock's
 *   ancestor at that height (fork choice by work), a proposal's keyblock goes into the tree first,
 *   and valid(v) is validateKeyblock against the tree plus the register fees (chain.ts).
 */

import { batchValueHash, decodeBatch } from '../ledger/batch.ts';
import type { ConsensusGroup } from '../ledger/certificate.ts';
import type { Verdict } from '../ledger/errors.ts';
import { decodeKeyblock, encodeKeyblock, keyblockValueHash } from '../ledger/keyblock.ts';
import { ancestorAt, headNode, type KeyblockTree, pinnedNode } from '../ledger/keyblock-tree.ts';
import { proposeBatch, type Replica, validateProposal } from '../ledger/replica.ts';
import type {
  Bundle,
  Bytes,
  Certificate,
  InstitutionIndex,
  Keyblock,
  TxBatch,
} from '../ledger/types.ts';
import type { ConsensusOpts, PinningTarget } from './consensus.ts';

export interface BatchPinningPorts {
  readonly self: InstitutionIndex;
  replica(): Replica;
  /** The group that decides the next batch. */
  group(): ConsensusGroup;
  /** Takes a proposal's bundles into the mempool (they may not have reached us yet). */
  receiveBundles(bundles: readonly Bundle[]): void;
  /** Whether anything waits to be pinned (else the next height starts after the idle pause). */
  hasWork(): boolean;
  /** Persists, then applies, a decided batch. */
  commit(value: Bytes, certificate: Certificate): Promise<void>;
}

export function batchPinning(
  ports: BatchPinningPorts,
  opts: Pick<ConsensusOpts, 'batchIntervalMs' | 'idleBatchIntervalMs'>,
): PinningTarget {
  // A proposal's bytes are looked at several times (bundles, anchor, pause): decoded once.
  const decoded = new WeakMap<Bytes, TxBatch>();
  const batchOf = (value: Bytes): TxBatch => {
    let batch = decoded.get(value);
    if (batch === undefined) {
      batch = decodeBatch(value);
      decoded.set(value, batch);
    }
    return batch;
  };
  return {
    kind: 'batch',
    hashValue: batchValueHash,
    nextHeight: () => ports.replica().chain.height + 1,
    group: () => ports.group(),
    ready: () => true,
    received: (value) => ports.receiveBundles(batchOf(value).bundles),
    // Anchored to the keyblock after the pinned one: its pinning is under way here.
    premature: (value) =>
      batchOf(value).keyblockHeight === ports.replica().chain.keyblockHeight + 1,
    validate: (value, asOf) => validateProposal(ports.replica(), value, asOf),
    propose: (height) => proposeBatch(ports.replica(), height, ports.self),
    commit: (value, certificate) => ports.commit(value, certificate),
    pauseAfter: (value) => {
      const busy = batchOf(value).bundles.length > 0 || ports.hasWork();
      return busy ? opts.batchIntervalMs : opts.idleBatchIntervalMs;
    },
  };
}

export interface KeyblockPinningPorts {
  tree(): KeyblockTree;
  /** The group that pins the next keyblock. */
  group(): ConsensusGroup;
  /** Whether that group is final and a keyblock to pin is known. */
  ready(): boolean;
  /** Takes a proposal's keyblock into the tree (its verdict is judged by `validate`). */
  received(kb: Keyblock): void;
  /** valid(v): the keyblock is valid in the tree, extends the pinned one, and its fees are paid. */
  validate(kb: Keyblock): Verdict;
  /** Persists, then applies, a decided keyblock. */
  commit(value: Bytes, certificate: Certificate): Promise<void>;
}

export function keyblockPinning(ports: KeyblockPinningPorts): PinningTarget {
  return {
    kind: 'keyblock',
    hashValue: keyblockValueHash,
    nextHeight: () => pinnedNode(ports.tree()).height + 1,
    group: () => ports.group(),
    ready: () => ports.ready(),
    received: (value) => ports.received(decodeKeyblock(value)),
    premature: () => false,
    validate: (value) => ports.validate(decodeKeyblock(value)),
    propose: (height) => {
      const tree = ports.tree();
      const head = headNode(tree);
      if (head.height < height) return null;
      const kb = ancestorAt(tree, head, height).keyblock;
      if (kb === null || !ports.validate(kb).ok) return null;
      return encodeKeyblock(kb);
    },
    commit: (value, certificate) => ports.commit(value, certificate),
    pauseAfter: () => 0,
  };
}
