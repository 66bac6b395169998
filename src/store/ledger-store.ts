/**
 * The node's persistence of the pinned ledger (DESIGN section 5, "store"): LevelDB through `level`,
 * on disk. Only pinned (final) items are written, each pin as ONE atomic LevelDB batch holding the
 * item, its certificate, the patient blocks it creates or changes, every index entry and the tip.
 *
 * The parts: keys.ts (key layout), values.ts (sealed values and their checks), proof-index.ts
 * (record proofs in O(log n) of the batch), batch-context.ts (the synchronous ports validateBatch
 * reads, prefetched from one snapshot), pin-checks.ts, db.ts (the LevelDB handle) and errors.ts.
 */
import { equalBytes, toHex } from '../crypto/bytes.ts';
import {
  batchCommitment,
  batchTxHashes,
  commitmentHash,
  decodeBatch,
  encodeBatch,
  refKey,
  type TxInclusion,
} from '../ledger/batch.ts';
import { decodeCertificate, encodeCertificate } from '../ledger/certificate.ts';
import { decodeKeyblock, encodeKeyblock, keyblockHash, ZERO_HASH } from '../ledger/keyblock.ts';
import { decodeMicroblock, encodeMicroblock, type Microblock } from '../ledger/microblock.ts';
import { txHash } from '../ledger/tx.ts';
import type {
  BatchTx,
  BlockRef,
  Bytes,
  Certificate,
  InstitutionIndex,
  Keyblock,
  TxBatch,
} from '../ledger/types.ts';
import { type BatchSnapshot, loadBatchContext } from './batch-context.ts';
import {
  approximateSpaceSizes,
  compactDb,
  type Db,
  type Op,
  openDb,
  openSpaces,
  type ReadOpts,
  type Spaces,
} from './db.ts';
import { StoreError } from './errors.ts';
import { describeKey, hexHash, type SpaceKind, storeKeys } from './keys.ts';
import { checkCertificate, checkChangedMicroblocks, checkNewMicroblocks } from './pin-checks.ts';
import {
  buildProofIndex,
  decodeProofIndex,
  encodeProofIndex,
  proveStoredTx,
} from './proof-index.ts';
import {
  corrupt,
  decodeHeight,
  decodeLocation,
  decodeRef,
  decodeTip,
  encodeHeight,
  encodeLocation,
  encodeRef,
  encodeTip,
  type StoreTip,
  sealValue,
  type TxLocation,
  unseal,
} from './values.ts';

// The store's module surface, as before the split.
export {
  decodeMicroblock as decodeStoredMicroblock,
  encodeMicroblock as encodeStoredMicroblock,
} from '../ledger/microblock.ts';
export type { BatchSnapshot } from './batch-context.ts';
export { isStoreError, StoreError, type StoreErrorCode } from './errors.ts';
export { SPACES, type SpaceKind, storeKeys } from './keys.ts';
export { type BatchProofIndex, chunkedProof, PROOF_CHUNK, type TxSpan } from './proof-index.ts';
export { type PinnedTip, type StoreTip, sealValue, type TxLocation } from './values.ts';

export interface LedgerStoreOpts {
  /** Decoding bound on a stored certificate's signer count (a group never exceeds the registry). */
  readonly maxCertificateSigners: number;
  /**
   * fsync every pin. Off by default: LevelDB's log keeps each pin atomic across a process crash,
   * and pinned items lost to an OS crash are fetched again from peers (sync).
   */
  readonly syncWrites: boolean;
}

export const defaultLedgerStoreOpts: LedgerStoreOpts = {
  maxCertificateSigners: 0x10000,
  syncWrites: false,
};

/** One pinned batch tx with the evidence a third party checks: path to the certified batch hash. */
export interface RecordProof {
  readonly tx: BatchTx;
  readonly height: number;
  readonly index: number;
  readonly inclusion: TxInclusion;
  readonly certificate: Certificate;
}

export type PutOutcome = 'written' | 'unchanged';

export class LedgerStore {
  private readonly db: Db;
  private readonly spaces: Spaces;
  private readonly opts: LedgerStoreOpts;
  private current: StoreTip = { keyblock: null, batch: null };
  /** Pins run one at a time, so each checks the tip the previous one left. */
  private writing: Promise<unknown> = Promise.resolve();

  private constructor(db: Db, opts: LedgerStoreOpts) {
    this.db = db;
    this.spaces = openSpaces(db);
    this.opts = opts;
  }

  /** Opens (creating if missing) the database at `path` and loads the pinned tips. */
  static async open(path: string, opts: Partial<LedgerStoreOpts> = {}): Promise<LedgerStore> {
    const db = await openDb(path);
    const store = new LedgerStore(db, { ...defaultLedgerStoreOpts, ...opts });
    try {
      store.current = await store.readTip({});
    } catch (err) {
      await db.close();
      throw err;
    }
    return store;
  }

  async close(): Promise<void> {
    await this.writing.catch(() => undefined);
    await this.db.close();
  }

  /** The latest pinned keyblock and batch (kept in memory, updated by each pin). */
  tip(): StoreTip {
    return this.current;
  }

  /** Compacts the whole database; false when the backend has no compactRange. */
  async compact(): Promise<boolean> {
    return compactDb(this.db);
  }

  /** LevelDB's estimate of each sublevel's bytes on disk; null when the backend cannot tell. */
  async approximateSizes(): Promise<Record<SpaceKind, number> | null> {
    return approximateSpaceSizes(this.db);
  }

  // -------------------------------------------------------------------------------------------
  // Writes

  /**
   * Pins keyblock `kb` with its certificate and the patient blocks its register txs create (one
   * per register tx, in order): keyblock, hash index, certificate, microblocks, idHash and
   * register-tx indexes and the tip, in one atomic batch. Re-pinning the same keyblock is a no-op
   * ('unchanged': the patient blocks keep their later state, the first certificate is kept); a
   * different one at a pinned height is CONFLICTS_WITH_PINNED; a gap is NOT_CONSECUTIVE. Checks
   * that fail (height, parent, certificate subject, blocks, duplicates) write nothing.
   */
  async putPinnedKeyblock(
    kb: Keyblock,
    certificate: Certificate,
    newMicroblocks: readonly Microblock[],
  ): Promise<PutOutcome> {
    return this.exclusive(async () => {
      checkCertificate(certificate, 'keyblock', kb.height);
      const encoded = encodeKeyblock(kb);
      const tip = this.current.keyblock;
      const tipHeight = tip?.height ?? 0;
      if (kb.height >= 1 && kb.height <= tipHeight) {
        return this.samePinned('keyblock', storeKeys.keyblock(kb.height), encoded);
      }
      if (kb.height !== tipHeight + 1) {
        throw new StoreError(
          'NOT_CONSECUTIVE',
          `keyblock ${kb.height} does not follow pinned keyblock ${tipHeight}`,
          { height: kb.height, tipHeight },
        );
      }
      const hash = keyblockHash(kb);
      if (tip && !equalBytes(kb.prev, tip.hash)) {
        throw new StoreError(
          'WRONG_PARENT',
          `keyblock ${kb.height} does not extend pinned keyblock ${tipHeight}`,
          { height: kb.height },
        );
      }
      checkNewMicroblocks(kb, newMicroblocks);
      const idKeys = kb.registers.map((tx) => storeKeys.idHash(tx.idHash));
      const known = await this.spaces.idHash.hasMany(idKeys);
      const dup = known.indexOf(true);
      if (dup >= 0 || new Set(idKeys.map(toHex)).size !== idKeys.length) {
        throw new StoreError(
          'DUPLICATE_PATIENT',
          `keyblock ${kb.height} registers a patient already registered`,
          { height: kb.height, j: dup },
        );
      }
      const ops: Op[] = [];
      this.put(ops, 'keyblock', storeKeys.keyblock(kb.height), encoded);
      this.put(ops, 'keyblockHash', storeKeys.keyblockHash(hash), encodeHeight(kb.height));
      this.put(
        ops,
        'certificate',
        storeKeys.certificate('keyblock', kb.height),
        encodeCertificate(certificate),
      );
      kb.registers.forEach((tx, j) => {
        const ref = { i: kb.height, j };
        this.put(
          ops,
          'microblock',
          storeKeys.microblock(ref),
          encodeMicroblock(newMicroblocks[j]!),
        );
        this.put(ops, 'idHash', idKeys[j]!, encodeRef(ref));
        this.put(ops, 'tx', storeKeys.tx(txHash(tx)), encodeLocation({ kind: 'register', ref }));
      });
      const next = { height: kb.height, hash };
      this.put(ops, 'meta', storeKeys.meta('keyblock'), encodeTip(next));
      await this.db.batch(ops, { sync: this.opts.syncWrites });
      this.current = { ...this.current, keyblock: next };
      return 'written';
    });
  }

  /**
   * Pins a validated batch with its certificate and the patient blocks it changed (e.g.
   * `effects.microblocks.values()` from validateBatch): batch, certificate, microblocks, the tx
   * index for every tx, the label-target index for medical txs and the tip, in one atomic batch.
   * Same idempotence and height rules as putPinnedKeyblock.
   */
  async putPinnedBatch(
    batch: TxBatch,
    certificate: Certificate,
    changedMicroblocks: Iterable<Microblock>,
  ): Promise<PutOutcome> {
    return this.exclusive(async () => {
      checkCertificate(certificate, 'batch', batch.height);
      const encoded = encodeBatch(batch);
      const tipHeight = this.current.batch?.height ?? 0;
      if (batch.height >= 1 && batch.height <= tipHeight) {
        return this.samePinned('batch', storeKeys.batch(batch.height), encoded);
      }
      if (batch.height !== tipHeight + 1) {
        throw new StoreError(
          'NOT_CONSECUTIVE',
          `batch ${batch.height} does not follow pinned batch ${tipHeight}`,
          { height: batch.height, tipHeight },
        );
      }
      if (!equalBytes(batch.prev, this.current.batch?.hash ?? ZERO_HASH)) {
        throw new StoreError(
          'WRONG_PARENT',
          `batch ${batch.height} does not extend pinned batch ${tipHeight}`,
          { height: batch.height },
        );
      }
      const kbHeight = this.current.keyblock?.height ?? 0;
      const txs = batch.bundles.flatMap((b) => b.txs);
      const changed = checkChangedMicroblocks(batch.height, txs, changedMicroblocks, kbHeight);
      if (batch.keyblockHeight > kbHeight) {
        throw new StoreError(
          'INVALID_ARGUMENT',
          `batch ${batch.height} is anchored to keyblock ${batch.keyblockHeight}, above the pinned ${kbHeight}`,
        );
      }
      const hashes = batchTxHashes(batch);
      const txKeys = hashes.map((h) => storeKeys.tx(h));
      const pinned = await this.spaces.tx.hasMany(txKeys);
      const dup = pinned.indexOf(true);
      if (dup >= 0 || new Set(txKeys.map(toHex)).size !== txKeys.length) {
        throw new StoreError('DUPLICATE_TX', `batch ${batch.height} repeats a pinned tx`, {
          height: batch.height,
          index: dup,
        });
      }
      const commitment = batchCommitment(batch, hashes);
      const proofIndex = buildProofIndex(batch, hashes, commitment);
      const ops: Op[] = [];
      this.put(ops, 'batch', storeKeys.batch(batch.height), encoded);
      this.put(ops, 'batchProof', storeKeys.batchProof(batch.height), encodeProofIndex(proofIndex));
      this.put(
        ops,
        'certificate',
        storeKeys.certificate('batch', batch.height),
        encodeCertificate(certificate),
      );
      for (const mb of changed) {
        this.put(ops, 'microblock', storeKeys.microblock(mb.header), encodeMicroblock(mb));
      }
      txs.forEach((tx, index) => {
        const loc: TxLocation = { kind: 'batch', height: batch.height, index };
        this.put(ops, 'tx', txKeys[index]!, encodeLocation(loc));
        if (tx.type === 'medical') {
          const key = storeKeys.record(tx.block, tx.institution, hashes[index]!);
          ops.push({ type: 'put', sublevel: this.spaces.record, key, value: new Uint8Array(0) });
        }
      });
      const next = { height: batch.height, hash: commitmentHash(commitment) };
      this.put(ops, 'meta', storeKeys.meta('batch'), encodeTip(next));
      await this.db.batch(ops, { sync: this.opts.syncWrites });
      this.current = { ...this.current, batch: next };
      return 'written';
    });
  }

  // -------------------------------------------------------------------------------------------
  // Reads

  async getKeyblock(height: number, opts: ReadOpts = {}): Promise<Keyblock | undefined> {
    const key = storeKeys.keyblock(height);
    return this.read('keyblock', key, opts, (p) => {
      const kb = decodeKeyblock(p);
      if (kb.height !== height) throw corrupt('keyblock', key, `holds keyblock ${kb.height}`);
      return kb;
    });
  }

  async getKeyblockByHash(hash: Bytes): Promise<Keyblock | undefined> {
    const key = storeKeys.keyblockHash(hash);
    const height = await this.read('keyblockHash', key, {}, decodeHeight);
    if (height === undefined) return undefined;
    const kb = await this.getKeyblock(height);
    if (!kb || !equalBytes(keyblockHash(kb), hash)) {
      throw corrupt(
        'keyblockHash',
        key,
        `points to height ${height}, which holds another keyblock`,
      );
    }
    return kb;
  }

  async getCertificate(
    kind: Certificate['kind'],
    height: number,
    opts: ReadOpts = {},
  ): Promise<Certificate | undefined> {
    const key = storeKeys.certificate(kind, height);
    return this.read('certificate', key, opts, (p) => {
      const cert = decodeCertificate(p, this.opts.maxCertificateSigners);
      if (cert.kind !== kind || cert.height !== height) {
        throw corrupt('certificate', key, `holds the ${cert.kind} certificate of ${cert.height}`);
      }
      return cert;
    });
  }

  async getBatch(height: number, opts: ReadOpts = {}): Promise<TxBatch | undefined> {
    const key = storeKeys.batch(height);
    return this.read('batch', key, opts, (p) => {
      const batch = decodeBatch(p);
      if (batch.height !== height) throw corrupt('batch', key, `holds batch ${batch.height}`);
      return batch;
    });
  }

  /** The patient block (i, j): one get. */
  async getMicroblock(ref: BlockRef, opts: ReadOpts = {}): Promise<Microblock | undefined> {
    const key = storeKeys.microblock(ref);
    return this.read('microblock', key, opts, (p) => decodeMicroblockAt(key, ref, p));
  }

  /** The patient block of `idHash`: one index get, then one get. */
  async getMicroblockByIdHash(idHash: Bytes): Promise<Microblock | undefined> {
    const key = storeKeys.idHash(idHash);
    const ref = await this.read('idHash', key, {}, decodeRef);
    if (!ref) return undefined;
    const mb = await this.getMicroblock(ref);
    if (!mb || !equalBytes(mb.header.idHash, idHash)) {
      throw corrupt('idHash', key, `points to ${refKey(ref)}, which is another patient's block`);
    }
    return mb;
  }

  async getTxLocation(hash: Bytes): Promise<TxLocation | undefined> {
    const key = storeKeys.tx(hash);
    return this.read('tx', key, {}, decodeLocation);
  }

  async isRegistered(idHashHex: string): Promise<boolean> {
    return this.spaces.idHash.has(hexHash(idHashHex, 'idHash'));
  }

  /** Whether the tx (register or batch tx) is pinned. */
  async isPinnedTx(hashHex: string): Promise<boolean> {
    return this.spaces.tx.has(hexHash(hashHex, 'tx hash'));
  }

  /** Whether `targetHex` is a pinned medical tx of `institution` for patient block `ref`. */
  async isRecordOf(
    targetHex: string,
    ref: BlockRef,
    institution: InstitutionIndex,
  ): Promise<boolean> {
    return this.spaces.record.has(storeKeys.record(ref, institution, hexHash(targetHex, 'target')));
  }

  /**
   * A pinned batch tx with its inclusion proof (equal to txInclusion of the stored batch) and the
   * batch's certificate, in O(log n) of the batch: one index get, then the batch bytes, its proof
   * index and its certificate (three gets in parallel), and only the tx's 32-tx chunk is hashed.
   * Undefined for an unknown tx and for register txs (those are proven by their keyblock).
   */
  async getRecordProof(hash: Bytes): Promise<RecordProof | undefined> {
    const key = storeKeys.tx(hash);
    const loc = await this.read('tx', key, {}, decodeLocation);
    if (loc?.kind !== 'batch') return undefined;
    const { height, index } = loc;
    const batchKey = storeKeys.batch(height);
    const proofKey = storeKeys.batchProof(height);
    const [encoded, aid, certificate] = await Promise.all([
      this.read('batch', batchKey, {}, (p) => p),
      this.read('batchProof', proofKey, {}, decodeProofIndex),
      this.getCertificate('batch', height),
    ]);
    if (!encoded || !aid) throw corrupt('tx', key, `points to batch ${height}, not stored`);
    if (!certificate) throw corrupt('batch', batchKey, 'has no certificate');
    const keys = { tx: key, batch: batchKey, batchProof: proofKey };
    const { tx, inclusion } = proveStoredTx(encoded, aid, { hash, height, index, keys });
    return { tx, height, index, inclusion, certificate };
  }

  /**
   * Prefetches, from one LevelDB snapshot and in parallel, everything validateBatch can ask about
   * `batch` (see batch-context.ts), and returns it as synchronous ports:
   *   validateBatch(batch, {
   *     genesis, members, group, hasPinnedEvidence, ...(await store.loadBatchContext(batch)),
   *   })
   */
  async loadBatchContext(batch: TxBatch): Promise<BatchSnapshot> {
    const snapshot = this.db.snapshot();
    try {
      return await loadBatchContext(batch, {
        readTip: () => this.readTip({ snapshot }),
        getMicroblock: (ref) => this.getMicroblock(ref, { snapshot }),
        hasTxs: (keys) => this.spaces.tx.hasMany(keys, { snapshot }),
        hasRecords: (keys) => this.spaces.record.hasMany(keys, { snapshot }),
      });
    } finally {
      await snapshot.close();
    }
  }

  // -------------------------------------------------------------------------------------------

  private exclusive<T>(f: () => Promise<T>): Promise<T> {
    const run = this.writing.then(f, f);
    this.writing = run.catch(() => undefined);
    return run;
  }

  private put(ops: Op[], kind: SpaceKind, key: Bytes, payload: Bytes): void {
    ops.push({
      type: 'put',
      sublevel: this.spaces[kind],
      key,
      value: sealValue(kind, key, payload),
    });
  }

  private async read<T>(
    kind: SpaceKind,
    key: Bytes,
    opts: ReadOpts,
    f: (payload: Bytes) => T,
  ): Promise<T | undefined> {
    const stored = await this.spaces[kind].get(key, opts);
    return stored === undefined ? undefined : unseal(kind, key, stored, f);
  }

  private async readTip(opts: ReadOpts): Promise<StoreTip> {
    const one = (which: 'keyblock' | 'batch') =>
      this.read('meta', storeKeys.meta(which), opts, decodeTip);
    const [keyblock, batch] = await Promise.all([one('keyblock'), one('batch')]);
    return { keyblock: keyblock ?? null, batch: batch ?? null };
  }

  /** Re-pinning: the stored item at that height must be byte-identical. */
  private async samePinned(kind: 'keyblock' | 'batch', key: Bytes, encoded: Bytes) {
    const stored = await this.read(kind, key, {}, (p) => p);
    if (!stored) throw corrupt(kind, key, 'is missing below the pinned tip');
    if (!equalBytes(stored, encoded)) {
      throw new StoreError(
        'CONFLICTS_WITH_PINNED',
        `a different ${kind} is pinned at ${describeKey(kind, key)}`,
        { kind },
      );
    }
    return 'unchanged' as const;
  }
}

function decodeMicroblockAt(key: Bytes, ref: BlockRef, payload: Bytes): Microblock {
  const mb = decodeMicroblock(payload);
  if (mb.header.i !== ref.i || mb.header.j !== ref.j) {
    throw corrupt('microblock', key, `holds patient block ${refKey(mb.header)}`);
  }
  return mb;
}
