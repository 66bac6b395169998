/**
 * The node's pinned chain: the LevelDB store (src/store), the replica (src/ledger/replica.ts) and
 * the keyblock tree (src/ledger/keyblock-tree.ts) kept in step. On open, the replica is rebuilt
 * from the store: the genesis keyblock is pinned on first start, then every stored keyblock and
 * batch is replayed through the ledger's own rules, so a restarted node has exactly the chain it
 * had (and the same accounts, reputation histories and patient blocks). Every pin is written to the
 * store (one atomic LevelDB batch, the item with its certificate) before the replica moves, so the
 * store is never behind what the node has acted on.
 *
 * The tree holds the pinned keyblock (with the few ancestors the rules need) and every valid
 * unpinned keyblock above it, mined here or received; its fork choice names the head, which the
 * keyblock consensus proposes (its ancestor at the next height) and the miner builds on.
 *
 * Items learned by sync are checked like any certified item: the certificate against the group
 * that pins that height (keyblocks.ts explains which), the value against the certificate, and the
 * item against the pinned state. A second, different item certified at a pinned height is a FORK:
 * the node stops.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { equalBytes, toHex } from '../crypto/bytes.ts';
import { batchHash, encodeBatch } from '../ledger/batch.ts';
import type { Equivocation } from '../ledger/bft-messages.ts';
import {
  type ConsensusGroup,
  decodeCertificate,
  verifyCertificate,
} from '../ledger/certificate.ts';
import { isLedgerError, LedgerError, OK, reject, type Verdict } from '../ledger/errors.ts';
import { checkCharges, keyblockCharges } from '../ledger/fees.ts';
import { decodeKeyblock, keyblockHash } from '../ledger/keyblock.ts';
import {
  addKeyblock,
  adoptPinned,
  createKeyblockTree,
  headNode,
  type KeyblockTree,
  pinKeyblock as pinInTree,
  pinnedNode,
} from '../ledger/keyblock-tree.ts';
import { rosterLookup } from '../ledger/membership.ts';
import { createMicroblock, type Microblock } from '../ledger/microblock.ts';
import {
  applyDecision,
  applyEvidence,
  batchValueHash,
  consensusGroupAt,
  consensusGroupOf,
  createReplica,
  pinKeyblock,
  type Replica,
  type ReplicaOpts,
  type ReplicaUpdate,
  receiveBundle,
  validateCertified,
} from '../ledger/replica.ts';
import { checkBatch } from '../ledger/replica-batch.ts';
import type {
  AdmitTx,
  BlockRef,
  Bundle,
  Bytes,
  Certificate,
  Genesis,
  InstitutionIndex,
  Keyblock,
  Member,
  TxBatch,
} from '../ledger/types.ts';
import type { SyncPage, SyncRequest } from '../p2p/index.ts';
import { LedgerStore } from '../store/ledger-store.ts';
import { NodeError } from './errors.ts';
import { type GenesisFile, genesisReplicaInit, verifyGenesisKeyblock } from './genesis-file.ts';
import { keyblockGroupSettled } from './keyblocks.ts';
import { readSyncPage, type SyncItem } from './sync-items.ts';

export interface ChainOpts {
  readonly dataDir: string;
  readonly genesisFile: GenesisFile;
  readonly replica?: Partial<ReplicaOpts>;
  /** The clock keyblock 1's time is checked against. */
  readonly now: number;
}

/** A pinned batch as the node reports it. */
export interface PinnedBatch {
  readonly batch: TxBatch;
  readonly hash: Bytes;
  readonly certificate: Certificate;
}

/** A pinned keyblock as the node reports it. */
export interface KeyblockPin {
  readonly keyblock: Keyblock;
  readonly hash: Bytes;
  readonly certificate: Certificate;
}

/** What a sync item did: its verdict, and what it pinned (null: nothing new). */
export interface SyncApplied {
  readonly verdict: Verdict;
  readonly batch: PinnedBatch | null;
  readonly keyblock: KeyblockPin | null;
}

export class Chain {
  readonly store: LedgerStore;
  readonly genesis: Genesis;
  private current: Replica;
  private keyblocks: KeyblockTree;
  /** Patients (idHash, hex) registered in pinned keyblocks. */
  private readonly registered = new Set<string>();
  /** Patient blocks by home institution, from the pinned keyblocks. */
  private readonly homes = new Map<number, BlockRef[]>();
  /** The peer records of the members admitted after genesis, by index (membership.ts). */
  private readonly admitted = new Map<InstitutionIndex, AdmitTx['peer']>();

  private constructor(store: LedgerStore, genesis: Genesis, replica: Replica) {
    this.store = store;
    this.genesis = genesis;
    this.current = replica;
    this.keyblocks = createKeyblockTree(genesis);
  }

  static async open(opts: ChainOpts): Promise<Chain> {
    const { genesis } = opts.genesisFile;
    await mkdir(opts.dataDir, { recursive: true });
    const store = await LedgerStore.open(join(opts.dataDir, 'ledger'));
    try {
      const chain = new Chain(
        store,
        genesis,
        createReplica({ ...genesisReplicaInit(opts.genesisFile), opts: opts.replica }),
      );
      await chain.rebuild(opts);
      return chain;
    } catch (err) {
      await store.close().catch(() => {});
      throw err;
    }
  }

  get replica(): Replica {
    return this.current;
  }

  get tree(): KeyblockTree {
    return this.keyblocks;
  }

  /** The members as of the pinned keyblock: the genesis members, then those admitted since. */
  get roster(): readonly Member[] {
    return this.current.chain.roster;
  }

  /** Where each member admitted after genesis is reached (from the keyblock admitting it). */
  admittedPeers(): ReadonlyMap<InstitutionIndex, AdmitTx['peer']> {
    return this.admitted;
  }

  /** The patient blocks whose home is `institution` (registered in pinned keyblocks). */
  patientsOf(institution: number): readonly BlockRef[] {
    return this.homes.get(institution) ?? [];
  }

  /** Whether a patient (idHash, hex) is registered in a pinned keyblock. */
  readonly isRegistered = (idHashHex: string): boolean => this.registered.has(idHashHex);

  /** The group that decides the next batch: as of the pinned batch tip's anchor. */
  batchGroup(): ConsensusGroup {
    return consensusGroupAt(this.current, this.current.chain.anchor);
  }

  /** The group that pins the next keyblock: as of the latest pinned keyblock. */
  keyblockGroup(): ConsensusGroup {
    return consensusGroupOf(this.current);
  }

  /** Whether the next keyblock's group is final, and a keyblock to pin next is known. */
  keyblockReady(): boolean {
    const c = this.current.chain;
    const settled = keyblockGroupSettled(c.anchor, c.keyblockHeight, this.genesis.params.chunkSize);
    return settled && headNode(this.keyblocks).height > pinnedNode(this.keyblocks).height;
  }

  private async rebuild(opts: ChainOpts): Promise<void> {
    const file = opts.genesisFile;
    const kb1 = file.keyblock;
    if (this.store.tip().keyblock === null) {
      const blocks = verifyGenesisKeyblock(file, opts.now);
      await this.store.putPinnedKeyblock(kb1, file.certificate, blocks);
    } else {
      const stored = await this.store.getKeyblock(1);
      if (stored === undefined || !equalBytes(keyblockHash(stored), keyblockHash(kb1))) {
        throw new NodeError(
          'BAD_DATA',
          `${opts.dataDir} holds another chain (keyblock 1 differs from the genesis file)`,
          { dataDir: opts.dataDir },
        );
      }
    }
    const tip = this.store.tip();
    const keyblocks = tip.keyblock?.height ?? 0;
    const batches = tip.batch?.height ?? 0;
    const pinKeyblocksTo = async (height: number) => {
      for (let k = this.current.chain.keyblockHeight + 1; k <= height; k++) {
        const kb = await this.store.getKeyblock(k);
        if (kb === undefined) throw this.damaged(`keyblock ${k} is missing`);
        try {
          this.keyblocks = adoptPinned(this.keyblocks, kb);
        } catch (err) {
          throw this.damaged(`keyblock ${k}: ${(err as Error).message}`);
        }
        this.pinned(kb);
      }
    };
    for (let h = 1; h <= batches; h++) {
      const [batch, cert] = await Promise.all([
        this.store.getBatch(h),
        this.store.getCertificate('batch', h),
      ]);
      if (batch === undefined || cert === undefined) throw this.damaged(`batch ${h} is missing`);
      await pinKeyblocksTo(batch.keyblockHeight);
      this.current = applyDecision(this.current, encodeBatch(batch), cert);
    }
    await pinKeyblocksTo(keyblocks);
    const hash = tip.batch?.hash;
    if (hash !== undefined && !equalBytes(hash, this.current.chain.hash)) {
      throw this.damaged(`replaying the stored batches does not reach the stored tip`);
    }
  }

  /** The replica after keyblock `kb` (pinned in the tree and the store), and the indexes. */
  private pinned(kb: Keyblock): void {
    this.current = pinKeyblock(this.current, kb);
    for (const a of kb.admits) this.admitted.set(a.member.index, a.peer);
    kb.registers.forEach((tx, j) => {
      this.registered.add(toHex(tx.idHash));
      const list = this.homes.get(tx.home) ?? [];
      list.push({ i: kb.height, j });
      this.homes.set(tx.home, list);
    });
  }

  private damaged(why: string): NodeError {
    return new NodeError('BAD_DATA', `the ledger store is damaged: ${why}`);
  }

  // -------------------------------------------------------------------------------------------
  // Keyblocks

  /** A keyblock mined here or received: into the tree when valid there (REPLAYED_TX: known). */
  addKeyblock(kb: Keyblock, now: number): Verdict {
    const added = addKeyblock(this.keyblocks, kb, now, this.isRegistered);
    if (added.verdict.ok) this.keyblocks = added.tree;
    return added.verdict;
  }

  /**
   * valid(v) of keyblock consensus: the keyblock is valid in the tree (added now if it was not
   * known), its parent is the pinned keyblock, and every register tx's home can pay its fee.
   */
  checkNextKeyblock(kb: Keyblock, now: number): Verdict {
    const id = toHex(keyblockHash(kb));
    if (!this.keyblocks.nodes.has(id)) {
      const added = this.addKeyblock(kb, now);
      if (!added.ok) return added;
    }
    const pinned = pinnedNode(this.keyblocks);
    if (this.keyblocks.nodes.get(id)?.parent !== pinned.id) {
      return reject('WRONG_HEIGHT', `keyblock ${kb.height} is not next after ${pinned.height}`, {
        height: kb.height,
      });
    }
    const params = this.genesis.params;
    return checkCharges(this.current.chain.accounts, keyblockCharges(kb), params);
  }

  /**
   * Persists, then applies, the decided keyblock at the next keyblock height (run in the node's
   * serial queue): store, tree, replica (patient blocks, fees, the miner's chunk count). A height
   * already pinned must hold the same keyblock (else FORK); returns null then.
   */
  async commitKeyblock(
    value: Bytes,
    certificate: Certificate,
    now: number,
  ): Promise<KeyblockPin | null> {
    const kb = decodeKeyblock(value);
    const hash = keyblockHash(kb);
    const c = this.current.chain;
    if (certificate.kind !== 'keyblock' || !equalBytes(hash, certificate.value)) {
      throw new LedgerError('INVALID_VALUE', 'the certificate does not sign this keyblock');
    }
    if (certificate.height <= c.keyblockHeight) {
      await this.checkPinned('keyblock', certificate.height, hash);
      return null;
    }
    if (certificate.height !== c.keyblockHeight + 1 || kb.height !== certificate.height) {
      throw new LedgerError(
        'WRONG_HEIGHT',
        `keyblock ${kb.height} certified at ${certificate.height}, after ${c.keyblockHeight}`,
      );
    }
    // A certified keyblock that is not valid here means more than a third of the group is faulty.
    const valid = this.checkNextKeyblock(kb, now);
    if (!valid.ok) throw valid.error;
    await this.store.putPinnedKeyblock(kb, certificate, this.microblocksOf(kb));
    // Keyblocks may have been added to the tree while the write was under way; none was pinned.
    const pinned = pinInTree(this.keyblocks, toHex(hash));
    if (!pinned.verdict.ok) throw pinned.verdict.error;
    this.keyblocks = pinned.tree;
    this.pinned(kb);
    return { keyblock: kb, hash, certificate };
  }

  private microblocksOf(kb: Keyblock): Microblock[] {
    // A register tx's home may be a member admitted in this chunk: on the roster, not yet taking part.
    const members = rosterLookup(() => this.current.chain.roster);
    return kb.registers.map((tx, j) => {
      const made = createMicroblock(tx, { i: kb.height, j }, members);
      if (!made.ok)
        throw made.verdict.ok ? new LedgerError('MALFORMED', 'rejected') : made.verdict.error;
      return made.block;
    });
  }

  // -------------------------------------------------------------------------------------------
  // Batches

  receiveBundle(bundle: Bundle, now: number): ReplicaUpdate {
    const u = receiveBundle(this.current, bundle, now);
    this.current = u.replica;
    return u;
  }

  takeEvidence(e: Equivocation, group: ConsensusGroup): ReplicaUpdate {
    const u = applyEvidence(this.current, e, group);
    this.current = u.replica;
    return u;
  }

  /**
   * Persists, then applies, the decided batch at the next height (run in the node's serial
   * queue). A height already pinned must hold the same batch (else FORK); returns null then.
   */
  async commit(value: Bytes, certificate: Certificate): Promise<PinnedBatch | null> {
    const c = this.current.chain;
    if (certificate.height <= c.height) {
      await this.checkPinned('batch', certificate.height, batchValueHash(value));
      return null;
    }
    if (certificate.kind !== 'batch' || certificate.height !== c.height + 1) {
      throw new LedgerError(
        'WRONG_HEIGHT',
        `certificate for ${certificate.kind} ${certificate.height} at ${c.height}`,
      );
    }
    const checked = checkBatch(this.current, value);
    if (!checked.verdict.ok) throw checked.verdict.error;
    const batch = checked.batch!;
    await this.store.putPinnedBatch(batch, certificate, checked.effects!.microblocks.values());
    // The mempool may have changed while the write was under way; the pinned state has not.
    this.current = applyDecision(this.current, value, certificate);
    return { batch, hash: this.current.chain.hash, certificate };
  }

  private async checkPinned(kind: 'batch' | 'keyblock', height: number, hash: Bytes) {
    const stored =
      kind === 'batch' ? await this.store.getBatch(height) : await this.store.getKeyblock(height);
    if (stored === undefined) throw this.damaged(`${kind} ${height} is missing`);
    const pinned =
      kind === 'batch' ? batchHash(stored as TxBatch) : keyblockHash(stored as Keyblock);
    if (!equalBytes(pinned, hash)) {
      throw new NodeError(
        'FORK',
        `${kind} ${toHex(hash).slice(0, 16)} is certified at height ${height}, where ${toHex(pinned).slice(0, 16)} is pinned`,
        { kind, height },
      );
    }
  }

  // -------------------------------------------------------------------------------------------
  // Sync

  /**
   * A keyblock or batch and its certificate from a peer's sync page, checked before anything is
   * written: the item is the next of its kind, the certificate is a quorum of the group that pins
   * it and signs this item, and the item is valid on the pinned state.
   */
  async applyCertified(item: SyncItem, now: number): Promise<SyncApplied> {
    const refused = (verdict: Verdict): SyncApplied => ({ verdict, batch: null, keyblock: null });
    try {
      const cert = decodeCertificate(item.certificate, this.roster.length);
      if (cert.kind !== item.kind) {
        return refused(reject('MALFORMED', `a ${cert.kind} certificate with a ${item.kind}`));
      }
      return item.kind === 'batch'
        ? await this.applyCertifiedBatch(item.value, cert)
        : await this.applyCertifiedKeyblock(item.value, cert, now);
    } catch (err) {
      if (isLedgerError(err)) return refused({ ok: false, error: err });
      throw err;
    }
  }

  private async applyCertifiedBatch(bytes: Bytes, cert: Certificate): Promise<SyncApplied> {
    const refused = (verdict: Verdict): SyncApplied => ({ verdict, batch: null, keyblock: null });
    const hash = batchValueHash(bytes);
    const c = this.current.chain;
    if (!equalBytes(hash, cert.value)) {
      return refused(reject('INVALID_VALUE', 'the certificate does not sign this batch'));
    }
    // Pinned meanwhile (by consensus, or an earlier page): nothing to do.
    if (cert.height <= c.height) return { verdict: OK, batch: null, keyblock: null };
    if (cert.height !== c.height + 1) {
      return refused(reject('WRONG_HEIGHT', `batch ${cert.height} is not next after ${c.height}`));
    }
    const certified = verifyCertificate(cert, this.batchGroup(), this.genesis.chainId);
    if (!certified.ok) return refused(certified);
    const valid = validateCertified(this.current, bytes);
    if (!valid.ok) return refused(valid);
    return { verdict: OK, batch: await this.commit(bytes, cert), keyblock: null };
  }

  private async applyCertifiedKeyblock(
    bytes: Bytes,
    cert: Certificate,
    now: number,
  ): Promise<SyncApplied> {
    const refused = (verdict: Verdict): SyncApplied => ({ verdict, batch: null, keyblock: null });
    const kb = decodeKeyblock(bytes);
    const c = this.current.chain;
    if (!equalBytes(keyblockHash(kb), cert.value) || kb.height !== cert.height) {
      return refused(reject('INVALID_VALUE', 'the certificate does not sign this keyblock'));
    }
    if (cert.height <= c.keyblockHeight) return { verdict: OK, batch: null, keyblock: null };
    if (cert.height !== c.keyblockHeight + 1) {
      return refused(
        reject('WRONG_HEIGHT', `keyblock ${cert.height} is not next after ${c.keyblockHeight}`),
      );
    }
    if (!keyblockGroupSettled(c.anchor, c.keyblockHeight, this.genesis.params.chunkSize)) {
      return refused(
        reject('WRONG_HEIGHT', `keyblock ${cert.height} comes after a batch of a later chunk`),
      );
    }
    const certified = verifyCertificate(cert, this.keyblockGroup(), this.genesis.chainId);
    if (!certified.ok) return refused(certified);
    const valid = this.checkNextKeyblock(kb, now);
    if (!valid.ok) return refused(valid);
    return { verdict: OK, batch: null, keyblock: await this.commitKeyblock(bytes, cert, now) };
  }

  /** Pinned keyblocks and batches from the request's heights on, in pinning order. */
  readSyncPage(request: SyncRequest): Promise<SyncPage> {
    return readSyncPage(this.store, request, this.genesis.params.chunkSize);
  }

  /** The pinned batch hash at `height` (from the store), if pinned. */
  async batchHashAt(height: number): Promise<Bytes | undefined> {
    const batch = await this.store.getBatch(height);
    return batch === undefined ? undefined : batchHash(batch);
  }

  async close(): Promise<void> {
    await this.store.close();
  }
}
