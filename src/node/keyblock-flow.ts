/**
 * How keyblocks and register txs move through the node (the pinning itself is consensus.ts with
 * pinning.ts keyblockPinning):
 * - in: keyblocks by gossip and in proposals, into the tree after validation (chain.ts); one whose
 *   parent is unknown waits in the orphan pool until the parent arrives; register txs from this
 *   institution's sidecar (submitRegister) and from the other members, into the register pool;
 * - out: keyblocks this institution mines (miner.ts) on the tree's head, carrying pool txs, signed
 *   and gossiped; its own register txs, sent directly to the other members (every miner may carry
 *   them) and again until pinned.
 * Verdicts follow the gossip rule (src/p2p/verdicts.ts): an invalid keyblock is rejected and its
 * sender penalised; one that depends on what this node knows (unknown parent, conflicts with the
 * pinned keyblock) is ignored.
 */
import { toHex } from '../crypto/bytes.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { reject, type Verdict } from '../ledger/errors.ts';
import { keyblockHash } from '../ledger/keyblock.ts';
import { branchRegistrations, node, rosterAt } from '../ledger/keyblock-tree.ts';
import type { AdmitTx, Bytes, InstitutionIndex, Keyblock, RegisterTx } from '../ledger/types.ts';
import type { Chain } from './chain.ts';
import { NodeError } from './errors.ts';
import type { NodeEvent } from './events.ts';
import { AdmitPool, OrphanPool, RegisterPool, type RegisterPoolOpts } from './keyblocks.ts';
import { assembleKeyblock, Miner, type MiningJob, type MiningOpts, miningJob } from './miner.ts';

export interface KeyblockFlowPorts {
  readonly self: InstitutionIndex;
  readonly chainId: string;
  readonly signingKey: Bytes;
  readonly signingSecret: Bytes;
  readonly random: RandomBytes;
  readonly chain: Pick<Chain, 'tree' | 'addKeyblock' | 'isRegistered' | 'replica' | 'genesis'>;
  now(): number;
  /** Gossips a keyblock this node mined. */
  publish(kb: Keyblock): void;
  /** Sends this institution's register txs to the other members. */
  sendRegisters(txs: readonly RegisterTx[]): void;
  /** Sends the admit txs submitted here to the other members (every miner may carry them). */
  sendAdmits(txs: readonly AdmitTx[]): void;
  /** The tree has a new keyblock: the keyblock consensus may be ready. */
  changed(): void;
  emit(e: NodeEvent): void;
}

export interface KeyblockFlowOpts {
  readonly mining: MiningOpts;
  readonly registers: RegisterPoolOpts;
  /** Keyblocks with an unknown parent held at most. */
  readonly maxOrphans: number;
  /** Own register txs not yet pinned are sent again this often. */
  readonly resendMs: number;
}

/** Own register txs re-sent per round at most. */
const MAX_RESEND = 256;
/** Keyblocks of one miner on one parent that the tree takes. */
const MAX_SIBLINGS = 2;
/** Unpinned keyblocks the tree holds at most. */
const MAX_UNPINNED = 256;

export class KeyblockFlow {
  private readonly ports: KeyblockFlowPorts;
  private readonly opts: KeyblockFlowOpts;
  readonly pool: RegisterPool;
  readonly admits = new AdmitPool();
  private readonly orphans: OrphanPool;
  private readonly miner: Miner;
  private resend: ReturnType<typeof setInterval> | null = null;
  /** Keyblocks this node mined (since start). */
  mined = 0;

  constructor(ports: KeyblockFlowPorts, opts: KeyblockFlowOpts) {
    this.ports = ports;
    this.opts = opts;
    this.pool = new RegisterPool(opts.registers);
    this.orphans = new OrphanPool(opts.maxOrphans);
    this.miner = new Miner(
      {
        // An institution admitted after genesis mines once the keyblock admitting it is pinned.
        job: () =>
          ports.chain.tree.roster.some((m) => m.index === ports.self)
            ? miningJob(ports.chain.tree, ports.self, opts.mining.maxUnpinned)
            : null,
        found: (job, nonce) => this.found(job, nonce),
      },
      ports.signingKey,
      opts.mining,
    );
  }

  start(): void {
    this.miner.start();
    this.resend = setInterval(() => {
      const own = this.pool.of(this.ports.self).slice(0, MAX_RESEND);
      if (own.length > 0) this.ports.sendRegisters(own);
      const admits = this.admits.submitted();
      if (admits.length > 0) this.ports.sendAdmits(admits);
    }, this.opts.resendMs);
  }

  stop(): void {
    this.miner.stop();
    if (this.resend !== null) clearInterval(this.resend);
    this.resend = null;
  }

  /** PoW hashes tried since start. */
  get hashes(): number {
    return this.miner.hashes;
  }

  /**
   * A keyblock from a peer (gossip) or a proposal: into the tree, or the orphan pool. The PoW
   * covers neither the time nor the register txs, so one nonce yields any number of distinct
   * keyblocks: the tree takes at most MAX_SIBLINGS children of one parent by one miner, and at
   * most MAX_UNPINNED keyblocks above the pinned one.
   */
  receive(kb: Keyblock): Verdict {
    const { chain } = this.ports;
    const tree = chain.tree;
    const parentId = toHex(kb.prev);
    const parentKnown = tree.nodes.has(parentId);
    const pinnedHeight = node(tree, tree.pinned).height;
    let siblings = 0;
    let unpinned = 0;
    for (const n of tree.nodes.values()) {
      if (n.parent === parentId && n.keyblock?.miner === kb.miner) siblings++;
      if (n.height > pinnedHeight) unpinned++;
    }
    if (siblings >= MAX_SIBLINGS || unpinned >= MAX_UNPINNED) {
      return reject('REPLAYED_TX', `no room for another keyblock ${kb.height} of ${kb.miner}`);
    }
    const verdict = chain.addKeyblock(kb, this.ports.now());
    if (verdict.ok) {
      this.added(toHex(keyblockHash(kb)));
      return verdict;
    }
    if (verdict.error.code !== 'WRONG_PARENT') return verdict;
    if (!parentKnown) {
      if (kb.height > pinnedHeight) this.orphans.add(kb);
      return verdict;
    }
    // The parent's hash fixes its height: a keyblock whose height does not follow is invalid
    // for every receiver.
    return reject('MALFORMED', `keyblock ${kb.height} does not follow its parent's height`);
  }

  /** A keyblock is pinned (by consensus or sync): the pools drop what it made stale. */
  pinned(kb: Keyblock): void {
    const { chain } = this.ports;
    this.pool.prune(chain.isRegistered);
    this.admits.prune(chain.tree.roster);
    this.orphans.prune(kb.height - 1);
    this.added(toHex(keyblockHash(kb)));
  }

  /**
   * A register tx from this institution's sidecar: the patient's home must be this institution.
   * Held for the miners (refused: a duplicate of a registered or waiting patient, a bad signature,
   * a full pool) and sent to the other members.
   */
  submitRegister(tx: RegisterTx): Verdict {
    if (tx.home !== this.ports.self) {
      return reject(
        'UNAUTHORISED_INSTITUTION',
        `register tx of home ${tx.home} submitted at institution ${this.ports.self}`,
      );
    }
    const verdict = this.pool.add(tx, this.members(), this.ports.chain.isRegistered);
    if (verdict.ok) this.ports.sendRegisters([tx]);
    return verdict;
  }

  /**
   * An admit tx (a new member, approved by more than 2/3 of the members) from this institution's
   * operator: held for the keyblocks this institution mines and sent to the other members, whose
   * miners may carry it too (again until pinned); refused when not valid against the pinned
   * members.
   */
  submitAdmit(tx: AdmitTx): Verdict {
    const verdict = this.admits.add(tx, this.ports.chainId, this.ports.chain.tree.roster, true);
    if (verdict.ok) this.ports.sendAdmits([tx]);
    return verdict;
  }

  /** An admit tx another member forwarded. A full pool is our state: BUSY. */
  receiveAdmit(tx: AdmitTx): Verdict {
    const verdict = this.admits.add(tx, this.ports.chainId, this.ports.chain.tree.roster, false);
    if (!verdict.ok && verdict.error.code === 'TOO_LARGE') {
      // Thrown, not returned: the p2p edge ignores it rather than penalising the peer.
      throw new NodeError('BUSY', verdict.error.message);
    }
    return verdict;
  }

  /** The chain as register txs are judged: the pinned members, not only the genesis ones. */
  private members() {
    const { genesis, tree } = this.ports.chain;
    return { chainId: genesis.chainId, params: genesis.params, members: tree.roster };
  }

  /** A register tx sent by its patient's home institution. A full pool is our state: BUSY. */
  receiveRegister(tx: RegisterTx): Verdict {
    const verdict = this.pool.add(tx, this.members(), this.ports.chain.isRegistered);
    if (!verdict.ok && verdict.error.code === 'TOO_LARGE') {
      // Thrown, not returned: the p2p edge ignores it rather than penalising the peer.
      throw new NodeError('BUSY', verdict.error.message);
    }
    return verdict;
  }

  /** After keyblock `id` joined the tree: the orphans waiting for it follow, and consensus hears. */
  private added(id: string): void {
    const waiting = [id];
    for (let next = waiting.pop(); next !== undefined; next = waiting.pop()) {
      for (const child of this.orphans.takeChildren(next)) {
        if (this.ports.chain.addKeyblock(child, this.ports.now()).ok) {
          waiting.push(toHex(keyblockHash(child)));
        }
      }
    }
    this.ports.changed();
  }

  private found(job: MiningJob, nonce: number): void {
    const { chain, now } = this.ports;
    const tree = chain.tree;
    try {
      const parent = node(tree, job.parentId);
      const registers = this.pool.select(
        branchRegistrations(tree, parent),
        chain.isRegistered,
        chain.replica.chain.accounts,
      );
      const signer = {
        chainId: this.ports.chainId,
        secret: this.ports.signingSecret,
        random: this.ports.random,
      };
      const admits = this.admits.select(this.ports.chainId, rosterAt(tree, parent));
      const kb = assembleKeyblock(tree, job, nonce, registers, signer, now(), admits);
      const verdict = chain.addKeyblock(kb, now());
      if (!verdict.ok) {
        const { code, message } = verdict.error;
        this.ports.emit({ event: 'warn', code: 'MINED_INVALID', message: `${code}: ${message}` });
        return;
      }
      this.mined++;
      const hash = toHex(keyblockHash(kb));
      this.ports.emit({
        event: 'mined',
        height: kb.height,
        hash,
        registers: kb.registers.length,
        admits: kb.admits.length,
      });
      this.ports.publish(kb);
      this.added(hash);
    } catch (err) {
      // The head moved on while the slice ran (its parent was pruned): the next job starts anew.
      this.ports.emit({ event: 'warn', code: 'MINING_FAILED', message: (err as Error).message });
    }
  }
}
