/**
 * Keyblock mining in competition (paper 5.1, DESIGN section 4): every institution searches for a
 * nonce with H(nonce, G(MB^{i-2}), G(KB_{i-1}), pk) below the target, on the head of its keyblock
 * tree (fork choice by work), and the first to find one signs and gossips its keyblock.
 *
 * The search runs on the main thread in slices: a bounded number of hashes (keyblock.ts
 * searchNonce, pure), then the event loop is free until the next slice, at most hashesPerSecond
 * in all. So mining never takes the CPU that consensus needs, and institutions on one host mine at
 * a known rate: with the initial target set for that rate (localnet.ts), a keyblock comes about
 * every keyblockIntervalMs, and retargeting corrects the rest. The PoW covers neither the register
 * txs nor the time, so those are filled in when a nonce is found, and a search is restarted only
 * when the head changes. Nothing is mined while the head is maxUnpinned keyblocks above the pinned
 * one: keyblocks the consensus has not caught up with would only pile up.
 */
import type { RandomBytes } from '../crypto/random.ts';
import {
  type KeyblockHeader,
  keyblockTxRoot,
  searchNonce,
  signKeyblock,
} from '../ledger/keyblock.ts';
import {
  childRequirements,
  headNode,
  type KeyblockTree,
  node,
  pinnedNode,
} from '../ledger/keyblock-tree.ts';
import type { AdmitTx, Bytes, InstitutionIndex, Keyblock, RegisterTx } from '../ledger/types.ts';

export interface MiningOpts {
  /** Off: this institution mines nothing (it still pins what others mine). */
  readonly enabled: boolean;
  /** PoW hashes per second at most. */
  readonly hashesPerSecond: number;
  /** One slice of the search every this many milliseconds. */
  readonly sliceMs: number;
  /** Mine only while the head is fewer than this many keyblocks above the pinned one. */
  readonly maxUnpinned: number;
}

export const defaultMiningOpts: MiningOpts = {
  enabled: true,
  hashesPerSecond: 2000,
  sliceMs: 25,
  maxUnpinned: 2,
};

/** What to mine on: the parent and the header fields the PoW covers. */
export interface MiningJob {
  readonly parentId: string;
  readonly header: KeyblockHeader;
}

/** The job on the tree's head for `miner`, or null when the head is maxUnpinned above the pin. */
export function miningJob(
  tree: KeyblockTree,
  miner: InstitutionIndex,
  maxUnpinned: number,
): MiningJob | null {
  const head = headNode(tree);
  if (head.height - pinnedNode(tree).height >= maxUnpinned) return null;
  const req = childRequirements(tree, head);
  return {
    parentId: head.id,
    header: {
      height: req.height,
      prev: head.hash,
      i2Link: req.i2Link,
      txRoot: keyblockTxRoot([]),
      miner,
      time: 0,
      target: req.target,
      nonce: 0,
    },
  };
}

/**
 * The keyblock for a nonce found for `job`: the register and admit txs, a time after its parent's and no
 * earlier than `now`, and the miner's signature. Throws WRONG_PARENT if the parent left the tree.
 */
export function assembleKeyblock(
  tree: KeyblockTree,
  job: MiningJob,
  nonce: number,
  registers: readonly RegisterTx[],
  signer: { readonly chainId: string; readonly secret: Bytes; readonly random?: RandomBytes },
  now: number,
  admits: readonly AdmitTx[] = [],
): Keyblock {
  const parent = node(tree, job.parentId);
  const header: KeyblockHeader = {
    ...job.header,
    txRoot: keyblockTxRoot(registers, admits),
    time: Math.max(now, parent.time + 1),
    nonce,
  };
  return signKeyblock(signer.chainId, header, registers, signer.secret, signer.random, admits);
}

export interface MinerPorts {
  /** The job to work on now (null: nothing to mine). Called before every slice. */
  job(): MiningJob | null;
  /** A nonce meeting the job's target was found. */
  found(job: MiningJob, nonce: number): void;
}

export class Miner {
  private readonly ports: MinerPorts;
  private readonly signingKey: Bytes;
  private readonly opts: MiningOpts;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private parentId = '';
  private nextNonce = 0;
  /** Hashes tried since start (for stats). */
  hashes = 0;

  constructor(ports: MinerPorts, minerSigningKey: Bytes, opts: MiningOpts) {
    for (const k of ['hashesPerSecond', 'sliceMs', 'maxUnpinned'] as const) {
      if (!(Number.isSafeInteger(opts[k]) && opts[k] >= 1)) {
        throw new RangeError(`mining.${k}: expected an integer >= 1, got ${opts[k]}`);
      }
    }
    this.ports = ports;
    this.signingKey = minerSigningKey;
    this.opts = opts;
  }

  start(): void {
    if (!this.opts.enabled || this.timer !== null) return;
    this.schedule();
  }

  stop(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(): void {
    this.timer = setTimeout(() => this.slice(), this.opts.sliceMs);
  }

  private slice(): void {
    const job = this.ports.job();
    if (job !== null) {
      if (job.parentId !== this.parentId) {
        this.parentId = job.parentId;
        this.nextNonce = 0;
      }
      const attempts = Math.max(
        1,
        Math.round((this.opts.hashesPerSecond * this.opts.sliceMs) / 1000),
      );
      const nonce = searchNonce(job.header, this.signingKey, this.nextNonce, attempts);
      this.hashes += nonce === null ? attempts : nonce - this.nextNonce + 1;
      this.nextNonce = nonce === null ? this.nextNonce + attempts : nonce + 1;
      if (nonce !== null) this.ports.found(job, nonce);
    }
    if (this.timer !== null) this.schedule();
  }
}
