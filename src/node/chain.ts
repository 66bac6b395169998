/**
 * The node's pinned chain: the LevelDB store (src/store) and the replica (src/ledger/replica.ts)
 * kept in step. On open, the replica is rebuilt from the store: the genesis keyblock is pinned on
 * first start, then every stored keyblock and batch is replayed through the ledger's own rules, so
 * a restarted node has exactly the chain it had (and the same accounts, reputation histories and
 * patient blocks). Every pin is written to the store (one atomic LevelDB batch) before the replica
 * moves, so the store is never behind what the node has acted on.
 *
 * Batches learned by sync are checked like any certified batch: the certificate against the
 * consensus group, the value against the batch bytes, and the batch against the pinned state.
 * A second, different batch certified at a pinned height is a FORK: the node stops.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { equalBytes, toHex } from '../crypto/bytes.ts';
import { batchHash, encodeBatch } from '../ledger/batch.ts';
import type { Equivocation } from '../ledger/bft-messages.ts';
import {
  type ConsensusGroup,
  decodeCertificate,
  encodeCertificate,
  verifyCertificate,
} from '../ledger/certificate.ts';
import { decode, encode } from '../ledger/codec.ts';
import { isLedgerError, LedgerError, OK, reject, type Verdict } from '../ledger/errors.ts';
import { keyblockHash } from '../ledger/keyblock.ts';
import {
  applyDecision,
  applyEvidence,
  batchValueHash,
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
import type { BlockRef, Bundle, Bytes, Certificate, Genesis, TxBatch } from '../ledger/types.ts';
import type { SyncPage, SyncRequest } from '../p2p/index.ts';
import { LedgerStore } from '../store/ledger-store.ts';
import { NodeError } from './errors.ts';
import { type GenesisFile, genesisReplicaInit, verifyGenesisKeyblock } from './genesis-file.ts';

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

/** One sync item: a pinned batch's bytes and its certificate. */
export function encodeSyncItem(batch: Bytes, certificate: Bytes): Bytes {
  return encode((w) => w.bytes(batch).bytes(certificate));
}

export function decodeSyncItem(
  item: Bytes,
  maxBytes: number,
): { batch: Bytes; certificate: Bytes } {
  return decode(item, 'sync item', (r) => ({
    batch: r.bytes('batch', maxBytes),
    certificate: r.bytes('certificate', maxBytes),
  }));
}

export class Chain {
  readonly store: LedgerStore;
  readonly genesis: Genesis;
  private current: Replica;
  /** Patient blocks by home institution, from the pinned keyblocks. */
  private readonly homes = new Map<number, BlockRef[]>();

  private constructor(store: LedgerStore, genesis: Genesis, replica: Replica) {
    this.store = store;
    this.genesis = genesis;
    this.current = replica;
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

  /** The patient blocks whose home is `institution` (registered in pinned keyblocks). */
  patientsOf(institution: number): readonly BlockRef[] {
    return this.homes.get(institution) ?? [];
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
    let pinnedKb = 0;
    const pinKeyblocksTo = async (height: number) => {
      while (pinnedKb < height) {
        pinnedKb++;
        const kb = await this.store.getKeyblock(pinnedKb);
        if (kb === undefined) throw this.damaged(`keyblock ${pinnedKb} is missing`);
        this.current = pinKeyblock(this.current, kb);
        kb.registers.forEach((tx, j) => {
          const list = this.homes.get(tx.home) ?? [];
          list.push({ i: kb.height, j });
          this.homes.set(tx.home, list);
        });
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

  private damaged(why: string): NodeError {
    return new NodeError('BAD_DATA', `the ledger store is damaged: ${why}`);
  }

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
      await this.checkPinned(certificate.height, value);
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

  private async checkPinned(height: number, value: Bytes): Promise<void> {
    const stored = await this.store.getBatch(height);
    if (stored === undefined) throw this.damaged(`batch ${height} is missing`);
    const a = batchHash(stored);
    const b = batchValueHash(value);
    if (!equalBytes(a, b)) {
      throw new NodeError(
        'FORK',
        `batch ${toHex(b).slice(0, 16)} is certified at height ${height}, where ${toHex(a).slice(0, 16)} is pinned`,
        { height },
      );
    }
  }

  /**
   * A batch and certificate from a peer's sync page, checked before anything is written: the
   * certificate is a quorum of the current group on this height, it signs these bytes, and the
   * batch is valid on the pinned tip. OK with the pinned batch (null: that height was pinned
   * meanwhile), or the reason it was refused.
   */
  async applyCertified(
    batchBytes: Bytes,
    certBytes: Bytes,
  ): Promise<{ verdict: Verdict; pinned: PinnedBatch | null }> {
    const refused = (verdict: Verdict) => ({ verdict, pinned: null });
    let cert: Certificate;
    let hash: Bytes;
    try {
      cert = decodeCertificate(certBytes, this.genesis.members.length);
      hash = batchValueHash(batchBytes);
    } catch (err) {
      if (isLedgerError(err)) return refused({ ok: false, error: err });
      throw err;
    }
    const c = this.current.chain;
    if (cert.kind !== 'batch') return refused(reject('MALFORMED', 'not a batch certificate'));
    if (!equalBytes(hash, cert.value)) {
      return refused(reject('INVALID_VALUE', 'the certificate does not sign this batch'));
    }
    // Pinned meanwhile (by consensus, or an earlier page): nothing to do.
    if (cert.height <= c.height) return { verdict: OK, pinned: null };
    if (cert.height !== c.height + 1) {
      return refused(reject('WRONG_HEIGHT', `batch ${cert.height} is not next after ${c.height}`));
    }
    const group = consensusGroupOf(this.current);
    const certified = verifyCertificate(cert, group, this.genesis.chainId);
    if (!certified.ok) return refused(certified);
    const valid = validateCertified(this.current, batchBytes);
    if (!valid.ok) return refused(valid);
    return { verdict: OK, pinned: await this.commit(batchBytes, cert) };
  }

  /** Pinned batches from `request.fromHeight` on, with certificates, within the request's bounds. */
  async readSyncPage(request: SyncRequest): Promise<SyncPage> {
    const tip = this.store.tip().batch?.height ?? 0;
    const items: Bytes[] = [];
    let bytes = 0;
    let h = Math.max(1, request.fromHeight);
    while (h <= tip && items.length < request.maxItems) {
      const [batch, cert] = await Promise.all([
        this.store.getBatch(h),
        this.store.getCertificate('batch', h),
      ]);
      if (batch === undefined || cert === undefined) break;
      const item = encodeSyncItem(encodeBatch(batch), encodeCertificate(cert));
      if (bytes + item.length > request.maxBytes) break;
      items.push(item);
      bytes += item.length;
      h++;
    }
    return { items, nextHeight: h <= tip ? h : null };
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
