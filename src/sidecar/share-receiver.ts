/**
 * The receiving side of sharing (DESIGN section 7, step 4): `fetchShared(idHash)` gathers a
 * patient's records from every institution holding them, verifies each, decrypts it, applies
 * corrections, and returns plain FHIR with provenance, and warnings for what failed.
 *
 *   1. The patient's block from this node's pinned ledger (one index get, one get): its leaves
 *      name the holders (every other institution with seq > 0).
 *   2. Each holder in parallel, page by page over the p2p 'record' service (share-wire.ts),
 *      after the records already cached from it.
 *   3. Each served record through ledger/shared-record.ts verifySharedRecord: patient block,
 *      holder, pinned leaf seq, SHA-256(ciphertext) = tx.pointer, inclusion in a batch that this
 *      node's own pinned certificate signs, the chameleon opening against the leaf, the cfrag
 *      proofs, and decryption with this institution's PRE secret key. A record that fails is a
 *      warning naming the record and the holder, and is never served.
 *   4. Verified records are cached here (sublevel `sc`): kept as they arrived (capsule, cfrags,
 *      ciphertext: still encrypted, openable only with this institution's PRE secret key) and
 *      decrypted on each read; the next fetch asks each holder only for what follows.
 *   5. Corrections (ledger/shared-record.ts currentRecords): a label's record replaces the one it
 *      targets; entered-in-error is flagged.
 *
 * Revocation: a holder that denies (revoked, expired, ...) has its cached records of the patient
 * deleted here, and none are served. A holder that cannot be reached leaves its cached records
 * served (each verified when it arrived) with an UNREACHABLE warning.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { concatBytes, toHex } from '../crypto/bytes.ts';
import { isCryptoError } from '../crypto/errors.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { commitmentHash } from '../ledger/batch.ts';
import type { Microblock } from '../ledger/microblock.ts';
import {
  type CurrentRecord,
  currentRecords,
  decryptVerifiedRecord,
  OpenedCapsules,
  type SharedRecordFailure,
  type VersionOf,
  verifySharedRecord,
} from '../ledger/shared-record.ts';
import { txHash } from '../ledger/tx.ts';
import type { BlockRef, Bytes, Certificate, InstitutionIndex, Member } from '../ledger/types.ts';
import { type ParsedResource, parseResource } from './canonical.ts';
import { SidecarError } from './errors.ts';
import type { Warn } from './ports.ts';
import { prefixRange, scanPrefix, u16be } from './share-grants.ts';
import {
  decodeShareItem,
  decodeShareResponse,
  encodeShareItem,
  encodeShareRequest,
  type SharedRecordMeta,
  type ShareItem,
  type SharePageRequest,
  type ShareResponse,
} from './share-wire.ts';
import type { SidecarStore, WriteOp } from './store.ts';

/** What one holder gave: verified versions, warnings, and how it answered. */
interface HolderResult {
  versions: VersionOf<Verified>[];
  warnings: ShareWarning[];
  outcome: HolderOutcome;
}

/** Reads of this node's pinned ledger. */
export interface ReceiverLedger {
  getMicroblockByIdHash(idHash: Bytes): Promise<Microblock | undefined>;
  getCertificate(kind: 'batch', height: number): Promise<Certificate | undefined>;
}

/** The p2p node's record service (P2pNode.requestRecord). */
export interface RecordTransport {
  requestRecord(
    to: InstitutionIndex,
    request: Uint8Array,
    opts?: { timeoutMs?: number; signal?: AbortSignal },
  ): Promise<Uint8Array>;
}

export interface ShareReceiverDeps {
  readonly store: SidecarStore;
  readonly ledger: ReceiverLedger;
  readonly transport: RecordTransport;
  /** This institution: its index and PRE key pair (the grants' kfrags are made for preKey). */
  readonly self: {
    readonly index: InstitutionIndex;
    readonly preKey: Bytes;
    readonly preSecret: Bytes;
  };
  /** The member registry (genesis): names and chameleon keys of the holders. */
  readonly members: (index: InstitutionIndex) => Pick<Member, 'name' | 'chameleonKey'> | undefined;
  readonly random?: RandomBytes;
  readonly warn?: Warn;
}

export interface ShareReceiverOpts {
  /** Records and bytes asked per page (a holder may send fewer). */
  readonly pageRecords: number;
  readonly pageBytes: number;
  readonly requestTimeoutMs: number;
  /** Pages asked of one holder per fetch at most (bounds a holder that never ends). */
  readonly maxPages: number;
  /** Yield to the event loop after this many verifications. */
  readonly yieldEvery: number;
}

export const defaultShareReceiverOpts: ShareReceiverOpts = {
  pageRecords: 512,
  pageBytes: 4 * 1024 * 1024 - 64 * 1024,
  requestTimeoutMs: 30_000,
  maxPages: 10_000,
  yieldEvery: 16,
};

/** Where a served record comes from, for FHIR Provenance. */
export interface SharedProvenance {
  readonly holder: InstitutionIndex;
  readonly holderName: string;
  /** The tx of the version served (hex), its kind and seq on the holder's leaf. */
  readonly txHash: string;
  readonly kind: 'medical' | 'label';
  readonly seq: number;
  readonly block: BlockRef;
  readonly batchHeight: number;
  /** The certified batch hash (hex) and the keyblock the batch is anchored to. */
  readonly batchHash: string;
  readonly keyblockHeight: number;
  /** The medical tx the record began as (hex): equal to txHash unless corrected. */
  readonly origin: string;
  /** Txs of earlier versions that this one replaces (hex), oldest first. */
  readonly supersedes: readonly string[];
  /** Read from this institution's cache (verified when it arrived) rather than fetched now. */
  readonly cached: boolean;
}

/** One verified version of a shared record. */
export interface SharedRecordVersion extends SharedRecordMeta {
  /** The record's FHIR JSON: the resource, or the document (e.g. a collection Bundle) holding it. */
  readonly resource: ParsedResource;
  /** This version marks the resource entered-in-error. */
  readonly enteredInError: boolean;
  readonly provenance: SharedProvenance;
}

/** A shared record: its current version, and the earlier ones the holder served (oldest first). */
export interface SharedRecord extends SharedRecordVersion {
  /** Verified versions it replaces, oldest first (a version that failed is left out, warned). */
  readonly earlier: readonly SharedRecordVersion[];
}

export type ShareWarningCode =
  | SharedRecordFailure
  /** The holder did not serve the record on its page (too large for a frame, missing). */
  | 'SKIPPED'
  /** Pinned records of the holder's leaf that it did not serve. */
  | 'WITHHELD'
  /** The record decrypts but is not FHIR JSON of the type and id the holder named. */
  | 'BAD_CONTENT'
  /** The holder refused (detail in the message: revoked, expired, no grant, ...). */
  | 'DENIED'
  | 'UNREACHABLE'
  /** The holder's answer does not decode. */
  | 'BAD_RESPONSE'
  /** The holder is not a member this node knows. */
  | 'UNKNOWN_HOLDER';

/** Names the record (type, id, version, tx, seq) and the holder; never content. */
export interface ShareWarning {
  readonly code: ShareWarningCode;
  readonly holder: InstitutionIndex;
  readonly message: string;
  readonly record?: Partial<SharedRecordMeta> & { readonly txHash?: string; readonly seq?: number };
}

export interface HolderOutcome {
  readonly holder: InstitutionIndex;
  readonly status: 'served' | 'denied' | 'unreachable' | 'bad-response';
  /** The holder's reason for a denial. */
  readonly reason?: string;
  /** Records verified in this fetch, and read from the cache. */
  readonly fetched: number;
  readonly cached: number;
}

export interface SharedFetch {
  readonly idHash: string;
  readonly block: BlockRef;
  readonly records: readonly SharedRecord[];
  readonly warnings: readonly ShareWarning[];
  readonly holders: readonly HolderOutcome[];
}

/** A verified version, with what the served record needs. */
interface Verified {
  readonly item: ShareItem;
  readonly plaintext: Bytes;
  readonly cached: boolean;
}

const MAX_CACHED_CIPHERTEXT = 256 * 1024 * 1024;
const u32be = (n: number): Bytes =>
  Uint8Array.of((n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);

export class ShareReceiver {
  private readonly deps: ShareReceiverDeps;
  private readonly opts: ShareReceiverOpts;

  constructor(deps: ShareReceiverDeps, opts: Partial<ShareReceiverOpts> = {}) {
    this.deps = deps;
    this.opts = { ...defaultShareReceiverOpts, ...opts };
  }

  /**
   * The patient's records held elsewhere, verified and decrypted (module comment). Throws
   * SidecarError UNREGISTERED_PATIENT when the patient has no pinned block here; a holder's
   * failure is an outcome and warnings, not an error.
   */
  async fetchShared(idHash: Bytes, opts: { signal?: AbortSignal } = {}): Promise<SharedFetch> {
    if (!(idHash instanceof Uint8Array) || idHash.length !== 32) {
      throw new SidecarError('INVALID_RECORD', 'fetchShared: idHash must be 32 bytes');
    }
    const block = await this.deps.ledger.getMicroblockByIdHash(idHash);
    if (block === undefined) {
      throw new SidecarError('UNREGISTERED_PATIENT', 'the patient has no pinned block here');
    }
    const holders = block.leaves
      .filter((l) => l.institution !== this.deps.self.index && l.seq > 0)
      .map((l) => l.institution);
    const results = await Promise.all(holders.map((h) => this.fromHolder(block, h, opts.signal)));
    const warnings = results.flatMap((r) => r.warnings);
    const versions = results.flatMap((r) => r.versions);
    const records: SharedRecord[] = [];
    for (const rec of currentRecords(versions)) {
      const served = this.serve(rec, block, warnings);
      if (served !== null) records.push(served);
    }
    return {
      idHash: toHex(idHash),
      block: { i: block.header.i, j: block.header.j },
      records,
      warnings,
      holders: results.map((r) => r.outcome),
    };
  }

  /**
   * One holder: cached records, then pages after them; verified versions and warnings. Records
   * that share a capsule are checked and opened once per capsule (OpenedCapsules), whose key
   * seeds are wiped when the holder is done.
   */
  private async fromHolder(
    first: Microblock,
    holder: InstitutionIndex,
    signal: AbortSignal | undefined,
  ): Promise<HolderResult> {
    const opened = new OpenedCapsules();
    try {
      return await this.fromHolderWith(opened, first, holder, signal);
    } finally {
      opened.dispose();
    }
  }

  private async fromHolderWith(
    opened: OpenedCapsules,
    first: Microblock,
    holder: InstitutionIndex,
    signal: AbortSignal | undefined,
  ): Promise<HolderResult> {
    const { store } = this.deps;
    const warnings: ShareWarning[] = [];
    const idHash = first.header.idHash;
    const member = this.deps.members(holder);
    if (member === undefined) {
      warnings.push({
        code: 'UNKNOWN_HOLDER',
        holder,
        message: `institution ${holder} has a leaf but is not a known member`,
      });
      return { versions: [], warnings, outcome: outcomeOf(holder, 'unreachable', 0, 0) };
    }
    const prefix = concatBytes(idHash, u16be(holder));
    const cachedRows = await scanPrefix(store, 'sharedRecord', prefix, (p) =>
      decodeShareItem(p, MAX_CACHED_CIPHERTEXT),
    );
    const cached = new Map(cachedRows.map((r) => [r.value.tx.seq, r.value]));
    let after = 0;
    while (cached.has(after + 1)) after++;

    const fresh = new Map<number, Verified>();
    const accounted = new Set<number>();
    const ops: WriteOp[] = [];
    let block = first;
    let status: HolderOutcome['status'] = 'served';
    let reason: string | undefined;
    const certificates = new Map<number, Bytes | undefined>();
    let holderLeafSeq = 0;
    for (let pages = 0; ; pages++) {
      if (pages >= this.opts.maxPages) {
        warnings.push({
          code: 'BAD_RESPONSE',
          holder,
          message: `stopped after ${pages} pages`,
        });
        break;
      }
      const request: SharePageRequest = {
        idHash,
        after,
        maxRecords: this.opts.pageRecords,
        maxBytes: this.opts.pageBytes,
      };
      let response: ShareResponse;
      try {
        const bytes = await this.deps.transport.requestRecord(holder, encodeShareRequest(request), {
          timeoutMs: this.opts.requestTimeoutMs,
          signal,
        });
        try {
          response = decodeShareResponse(bytes, request);
        } catch (err) {
          status = 'bad-response';
          warnings.push({
            code: 'BAD_RESPONSE',
            holder,
            message: `answer does not decode: ${(err as Error).message}`,
          });
          break;
        }
      } catch (err) {
        signal?.throwIfAborted();
        status = 'unreachable';
        warnings.push({
          code: 'UNREACHABLE',
          holder,
          message: `no answer: ${(err as Error).message}`,
        });
        break;
      }
      if (response.type === 'denied') {
        status = 'denied';
        reason = response.reason;
        warnings.push({
          code: 'DENIED',
          holder,
          message: `refused: ${response.reason}: ${response.message}`,
        });
        // Nothing of this holder's is kept or served: not the cache, not earlier pages.
        ops.length = 0;
        for (const row of cachedRows) store.del(ops, 'sharedRecord', row.key);
        cached.clear();
        fresh.clear();
        break;
      }
      holderLeafSeq = response.leafSeq;
      const highest = Math.max(0, ...response.items.map((i) => i.tx.seq));
      if (highest > (leafOf(block, holder)?.seq ?? 0)) {
        block = (await this.deps.ledger.getMicroblockByIdHash(idHash)) ?? block;
      }
      for (const [n, item] of response.items.entries()) {
        accounted.add(item.tx.seq);
        const height = item.inclusion.commitment.height;
        if (!certificates.has(height)) {
          const cert = await this.deps.ledger.getCertificate('batch', height);
          certificates.set(height, cert?.value);
        }
        const check = verifySharedRecord(item, {
          block,
          holder: { index: holder, chameleonKey: member.chameleonKey },
          certifiedBatchHash: certificates.get(height),
          receiver: this.deps.self,
          random: this.deps.random,
          opened,
        });
        if (!check.ok) {
          warnings.push({
            code: check.code,
            holder,
            message: check.message,
            record: { ...item.meta, seq: item.tx.seq },
          });
          continue;
        }
        fresh.set(item.tx.seq, { item, plaintext: check.plaintext, cached: false });
        store.put(
          ops,
          'sharedRecord',
          concatBytes(prefix, u32be(item.tx.seq)),
          encodeShareItem(item),
        );
        if ((n + 1) % this.opts.yieldEvery === 0) await yieldToLoop();
      }
      for (const s of response.skipped) {
        accounted.add(s.seq);
        warnings.push({
          code: 'SKIPPED',
          holder,
          message: `the holder did not serve it (${s.reason})`,
          record: { txHash: toHex(s.txHash), seq: s.seq },
        });
      }
      if (!response.more) break;
      after = response.next;
    }
    await store.write(ops, false);

    const versions: VersionOf<Verified>[] = [];
    for (const [seq, item] of cached) {
      if (fresh.has(seq)) continue;
      try {
        const plaintext = decryptVerifiedRecord(
          item,
          block,
          this.deps.self.preSecret,
          this.deps.random,
          opened,
        );
        versions.push(versionOf({ item, plaintext, cached: true }));
      } catch (err) {
        if (!isCryptoError(err)) throw err;
        warnings.push({
          code: 'DECRYPTION_FAILED',
          holder,
          message: `cached record: ${err.message}`,
          record: { ...item.meta, seq },
        });
      }
    }
    for (const v of fresh.values()) versions.push(versionOf(v));
    if (status !== 'denied') {
      const missing: number[] = [];
      const leafSeq = leafOf(block, holder)?.seq ?? 0;
      for (let seq = 1; seq <= leafSeq; seq++) {
        if (!cached.has(seq) && !fresh.has(seq) && !accounted.has(seq)) missing.push(seq);
      }
      if (missing.length > 0 && status === 'served') {
        warnings.push({
          code: 'WITHHELD',
          holder,
          message: `${missing.length} pinned record(s) not served (seq ${describeSeqs(missing)}); the holder says its pinned leaf is at seq ${holderLeafSeq}`,
        });
      }
    }
    const cachedCount = versions.filter((v) => v.value.cached).length;
    return {
      versions,
      warnings,
      outcome: {
        ...outcomeOf(holder, status, fresh.size, cachedCount),
        ...(reason === undefined ? {} : { reason }),
      },
    };
  }

  /** The served form of a record's current version, or null (with a warning) if its content is not. */
  private serve(
    rec: CurrentRecord<Verified>,
    block: Microblock,
    warnings: ShareWarning[],
  ): SharedRecord | null {
    const current = this.serveVersion(rec.current, rec.origin, rec.superseded, block, warnings);
    if (current === null) return null;
    const earlier: SharedRecordVersion[] = [];
    rec.superseded.forEach((v, k) => {
      const version = this.serveVersion(v, rec.origin, rec.superseded.slice(0, k), block, warnings);
      if (version !== null) earlier.push(version);
    });
    return { ...current, earlier };
  }

  /** One version as served, or null (warned) when its content is not what the holder names. */
  private serveVersion(
    v: VersionOf<Verified>,
    origin: string,
    supersedes: readonly VersionOf<Verified>[],
    block: Microblock,
    warnings: ShareWarning[],
  ): SharedRecordVersion | null {
    const { item, plaintext, cached } = v.value;
    const holder = item.tx.institution;
    const parsed = parseResource(plaintext);
    const meta = item.meta;
    const content = parsed.ok ? parsed.resource : null;
    const own = content !== null && content.resourceType === meta.resourceType;
    if (
      content === null ||
      (own && content.id !== undefined && content.id !== meta.id) ||
      (!own && content.resourceType !== 'Bundle')
    ) {
      warnings.push({
        code: 'BAD_CONTENT',
        holder,
        message: parsed.ok
          ? `the content is not the ${meta.resourceType} the holder names, nor a Bundle holding it`
          : `the content ${parsed.problem}`,
        record: { ...meta, txHash: toHex(v.hash), seq: item.tx.seq },
      });
      return null;
    }
    const c = item.inclusion.commitment;
    return {
      ...meta,
      resource: content,
      enteredInError: statusOf(content, meta) === 'entered-in-error',
      provenance: {
        holder,
        holderName: this.deps.members(holder)?.name ?? String(holder),
        txHash: toHex(v.hash),
        kind: item.tx.type,
        seq: item.tx.seq,
        block: { i: block.header.i, j: block.header.j },
        batchHeight: c.height,
        batchHash: toHex(commitmentHash(c)),
        keyblockHeight: c.keyblockHeight,
        origin,
        supersedes: supersedes.map((x) => toHex(x.hash)),
        cached,
      },
    };
  }

  /** Deletes what this institution keeps of the patient's shared records (all holders). */
  async forget(idHash: Bytes): Promise<number> {
    const ops: WriteOp[] = [];
    for await (const key of this.deps.store.spaces.sharedRecord.keys(prefixRange(idHash))) {
      this.deps.store.del(ops, 'sharedRecord', key);
    }
    await this.deps.store.write(ops);
    return ops.length;
  }
}

function versionOf(v: Verified): VersionOf<Verified> {
  return { tx: v.item.tx, hash: txHash(v.item.tx), value: v };
}

function leafOf(block: Microblock, institution: InstitutionIndex) {
  return block.leaves.find((l) => l.institution === institution);
}

function outcomeOf(
  holder: InstitutionIndex,
  status: HolderOutcome['status'],
  fetched: number,
  cached: number,
): HolderOutcome {
  return { holder, status, fetched, cached };
}

/** The `status` of the resource the record is (or, in a Bundle, the entry it names). */
function statusOf(content: ParsedResource, meta: SharedRecordMeta): unknown {
  if (content.resourceType === meta.resourceType) return content.status;
  const entries = Array.isArray(content.entry) ? content.entry : [];
  for (const e of entries) {
    const r = (e as { resource?: ParsedResource } | null)?.resource;
    if (r?.resourceType === meta.resourceType && r.id === meta.id) return r.status;
  }
  return undefined;
}

/** "1-3, 7" for [1, 2, 3, 7], at most a few ranges. */
function describeSeqs(seqs: readonly number[]): string {
  const ranges: string[] = [];
  let start = seqs[0]!;
  let prev = start;
  for (const s of [...seqs.slice(1), Number.NaN]) {
    if (s === prev + 1) {
      prev = s;
      continue;
    }
    ranges.push(start === prev ? String(start) : `${start}-${prev}`);
    start = s;
    prev = s;
  }
  return ranges.length > 5 ? `${ranges.slice(0, 5).join(', ')}, ...` : ranges.join(', ');
}
