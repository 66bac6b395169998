/**
 * The node's keyblock bookkeeping around the pure keyblock tree (src/ledger/keyblock-tree.ts):
 * - RegisterPool: the bounded pool of register txs waiting for a keyblock (submitted by this
 *   institution's sidecar, or sent by a patient's home institution to the miners);
 * - AdmitPool: admit txs (new members) waiting for a keyblock this institution mines;
 * - OrphanPool: a bounded pool of gossiped keyblocks whose parent this node does not know yet,
 *   added once the parent arrives (by gossip, in a proposal, or pinned by sync);
 * - keyblockGroupSettled: when the group that pins the next keyblock is final (see below).
 *
 * Why the keyblock consensus waits at chunk boundaries: the group of the next keyblock is
 * computed from the reputation chunks before the latest pinned keyblock's chunk (replica.ts
 * consensusGroupOf). A chunk's record counts come from the batches anchored to its keyblocks, and
 * such a batch can still be pinned after the next chunk's first keyblock (anchors only never go
 * back). Once a batch anchored in the latest keyblock's chunk is pinned, no later batch can add
 * to an earlier chunk, so every node computes the same group; until then the keyblock consensus
 * does not start. The same rule orders sync (sync-items.ts), and batch heights are decided by the
 * group as of the previous batch's anchor (consensusGroupAt(replica, anchor)), final for the same
 * reason.
 */
import { toHex } from '../crypto/bytes.ts';
import { OK, reject, type Verdict } from '../ledger/errors.ts';
import type { Accounts } from '../ledger/fees.ts';
import { keyblockHash } from '../ledger/keyblock.ts';
import { checkAdmits, nextMemberIndex } from '../ledger/membership.ts';
import { chunkOfHeight } from '../ledger/reputation.ts';
import { checkTxStateless, txHash, verifyRegisterSignature } from '../ledger/tx.ts';
import type {
  AdmitTx,
  Genesis,
  InstitutionIndex,
  Keyblock,
  Member,
  RegisterTx,
} from '../ledger/types.ts';

/** The chunk of keyblock `height`; height 0 (nothing pinned yet) counts as chunk 0. */
export function chunkOf(height: number, chunkSize: number): number {
  return height === 0 ? 0 : chunkOfHeight(height, chunkSize);
}

/**
 * Whether the group that pins keyblock `keyblockHeight + 1` is final: the pinned batch tip is
 * anchored in the same chunk as the latest pinned keyblock.
 */
export function keyblockGroupSettled(
  anchor: number,
  keyblockHeight: number,
  chunkSize: number,
): boolean {
  return chunkOf(anchor, chunkSize) === chunkOf(keyblockHeight, chunkSize);
}

export interface RegisterPoolOpts {
  /** Register txs held at most. */
  readonly maxPending: number;
  /** Register txs one mined keyblock carries at most. */
  readonly maxPerKeyblock: number;
}

export const defaultRegisterPoolOpts: RegisterPoolOpts = { maxPending: 4096, maxPerKeyblock: 512 };

interface Held {
  readonly tx: RegisterTx;
  readonly id: string;
  /** Hex hash of the tx: the same patient with different bytes is another tx. */
  readonly key: string;
}

/** Register txs waiting for a keyblock, oldest first, one per patient (idHash). */
export class RegisterPool {
  private readonly opts: RegisterPoolOpts;
  private readonly held = new Map<string, Held>();

  constructor(opts: RegisterPoolOpts = defaultRegisterPoolOpts) {
    this.opts = opts;
  }

  get size(): number {
    return this.held.size;
  }

  /**
   * Checks and holds a register tx: its home is a member (of `chain.members`: the genesis
   * members and those admitted since), its fee meets the floor, the patient is neither registered
   * (`isRegistered`, pinned) nor waiting already, the pool has room, and the patient signed it.
   */
  add(
    tx: RegisterTx,
    chain: Pick<Genesis, 'chainId' | 'params' | 'members'>,
    isRegistered: (idHashHex: string) => boolean,
  ): Verdict {
    if (!chain.members.some((m) => m.index === tx.home)) {
      return reject('UNKNOWN_INSTITUTION', `register tx names unknown home institution ${tx.home}`);
    }
    const fee = checkTxStateless(tx, chain.params.minFee);
    if (!fee.ok) return fee;
    const id = toHex(tx.idHash);
    if (isRegistered(id)) {
      return reject('DUPLICATE_PATIENT', 'patient is already registered', {
        idHash: id.slice(0, 16),
      });
    }
    const key = toHex(txHash(tx));
    const waiting = this.held.get(id);
    if (waiting !== undefined) {
      return waiting.key === key
        ? reject('REPLAYED_TX', 'register tx already held')
        : reject('DUPLICATE_PATIENT', 'another register tx of this patient is waiting', {
            idHash: id.slice(0, 16),
          });
    }
    if (this.held.size >= this.opts.maxPending) {
      return reject('TOO_LARGE', `${this.held.size} register txs are waiting`, {
        held: this.held.size,
      });
    }
    if (!verifyRegisterSignature(chain.chainId, tx)) {
      return reject('BAD_SIGNATURE', 'register tx is not signed by the patient');
    }
    this.held.set(id, { tx, id, key });
    return OK;
  }

  /**
   * The register txs for a keyblock: oldest first, none whose patient is in `exclude` (registered
   * on the keyblock's branch) or registered, each home able to pay the fees of its txs together,
   * at most maxPerKeyblock.
   */
  select(
    exclude: ReadonlySet<string>,
    isRegistered: (idHashHex: string) => boolean,
    accounts: Accounts,
  ): RegisterTx[] {
    const owed = new Map<InstitutionIndex, number>();
    const out: RegisterTx[] = [];
    for (const h of this.held.values()) {
      if (out.length >= this.opts.maxPerKeyblock) break;
      if (exclude.has(h.id) || isRegistered(h.id)) continue;
      const due = (owed.get(h.tx.home) ?? 0) + h.tx.fee;
      if (due > (accounts.get(h.tx.home) ?? 0)) continue;
      owed.set(h.tx.home, due);
      out.push(h.tx);
    }
    return out;
  }

  /** Drops the txs of patients now registered (pinned). */
  prune(isRegistered: (idHashHex: string) => boolean): void {
    for (const [id] of this.held) if (isRegistered(id)) this.held.delete(id);
  }

  /** The waiting txs whose home is `home` (re-sent until pinned). */
  of(home: InstitutionIndex): RegisterTx[] {
    return [...this.held.values()].filter((h) => h.tx.home === home).map((h) => h.tx);
  }
}

/** Admit txs held at most (membership changes are rare; each waits for a keyblock this node mines). */
export const MAX_PENDING_ADMITS = 16;

/**
 * Admit txs (membership.ts) waiting for a keyblock: submitted by this institution's operator (sent
 * on to the other members until pinned) or forwarded by another member. Each is checked against the
 * pinned members when it arrives and again, on the branch mined on, when a keyblock is assembled.
 */
export class AdmitPool {
  private readonly held = new Map<string, AdmitTx>();
  /** Keys of the txs submitted here (the node re-sends these). */
  private readonly own = new Set<string>();

  get size(): number {
    return this.held.size;
  }

  /**
   * Holds a tx valid against the pinned `roster` (REPLAYED_TX: held already; TOO_LARGE: full);
   * `own`: submitted here.
   */
  add(tx: AdmitTx, chainId: string, roster: readonly Member[], own: boolean): Verdict {
    const key = toHex(tx.member.signingKey);
    if (this.held.has(key)) {
      if (own) this.own.add(key);
      return reject('REPLAYED_TX', 'this admit tx is already waiting');
    }
    if (this.held.size >= MAX_PENDING_ADMITS) {
      return reject('TOO_LARGE', `${this.held.size} admit txs are waiting`, {
        held: this.held.size,
      });
    }
    const { verdict } = checkAdmits(chainId, roster, [tx]);
    if (verdict.ok) {
      this.held.set(key, tx);
      if (own) this.own.add(key);
    }
    return verdict;
  }

  /** The txs submitted here that are still waiting. */
  submitted(): AdmitTx[] {
    return [...this.own].flatMap((key) => {
      const tx = this.held.get(key);
      return tx === undefined ? [] : [tx];
    });
  }

  /** The held txs valid in order on top of `roster` (the members as of the parent mined on). */
  select(chainId: string, roster: readonly Member[]): AdmitTx[] {
    const out: AdmitTx[] = [];
    let current = roster;
    for (const tx of this.held.values()) {
      const checked = checkAdmits(chainId, current, [tx]);
      if (!checked.verdict.ok) continue;
      out.push(tx);
      current = checked.roster;
    }
    return out;
  }

  /** Drops the txs whose member is pinned now, or whose index was taken by another. */
  prune(roster: readonly Member[]): void {
    const next = nextMemberIndex(roster);
    for (const [key, tx] of this.held) {
      if (tx.member.index >= next) continue;
      this.held.delete(key);
      this.own.delete(key);
    }
  }
}

/**
 * Keyblocks whose parent is unknown here, by parent hash (hex): at most `max` of them, the oldest
 * dropped first. PoW makes each one costly to forge; the bound keeps a flood from costing memory.
 */
export class OrphanPool {
  private readonly max: number;
  /** parent id -> keyblock id -> keyblock, in arrival order. */
  private readonly byParent = new Map<string, Map<string, Keyblock>>();
  private count = 0;

  constructor(max: number) {
    this.max = max;
  }

  get size(): number {
    return this.count;
  }

  add(kb: Keyblock): void {
    const parent = toHex(kb.prev);
    const id = toHex(keyblockHash(kb));
    const siblings = this.byParent.get(parent) ?? new Map<string, Keyblock>();
    if (siblings.has(id)) return;
    siblings.set(id, kb);
    this.byParent.set(parent, siblings);
    this.count++;
    while (this.count > this.max) {
      const [oldest, rest] = this.byParent.entries().next().value as [
        string,
        Map<string, Keyblock>,
      ];
      rest.delete(rest.keys().next().value as string);
      this.count--;
      if (rest.size === 0) this.byParent.delete(oldest);
    }
  }

  /** Removes and returns the keyblocks waiting for `parentId`. */
  takeChildren(parentId: string): Keyblock[] {
    const siblings = this.byParent.get(parentId);
    if (siblings === undefined) return [];
    this.byParent.delete(parentId);
    this.count -= siblings.size;
    return [...siblings.values()];
  }

  /** Drops those at or below the pinned height: they can never be added. */
  prune(pinnedHeight: number): void {
    for (const [parent, siblings] of this.byParent) {
      for (const [id, kb] of siblings) {
        if (kb.height > pinnedHeight) continue;
        siblings.delete(id);
        this.count--;
      }
      if (siblings.size === 0) this.byParent.delete(parent);
    }
  }
}
