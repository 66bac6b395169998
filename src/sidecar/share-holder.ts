/**
 * The holding side of sharing (DESIGN section 6, "Holding side"): answers another institution's
 * request for a patient's records on the p2p 'record' service.
 *
 * For a request from institution D (authenticated by the p2p layer's peer binding) for patient X:
 * the share decision over the grants held here (share-grants.ts); on a denial, an answer naming
 * the reason and nothing re-encrypted. Otherwise, the records this institution wrote for X and
 * that are pinned, in leaf order (seq), after the requester's cursor: each re-encrypted for D with
 * the grant's kfrag(s) and sent with its tx, the running hash before it, its inclusion proof in
 * its pinned batch (the store's proof index) and its ciphertext, as many as fit the page's record
 * and byte bounds (share-wire.ts). Unpinned records are not served yet; a record above the frame
 * limit is named in `skipped`.
 *
 * The same service also answers kind 2, a patient's own-records request relayed by another
 * sidecar (own-records.ts answerOwnRecords): the patient's signature is the authority there, not
 * a grant, and the records go out as stored (encrypted to the patient), never re-encrypted.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { toHex } from '../crypto/bytes.ts';
import { type RandomBytes, systemRandom } from '../crypto/random.ts';
import {
  decodeCapsule,
  encodeCapsuleFrag,
  reencrypt,
  type VerifiedKeyFrag,
} from '../crypto/umbral/index.ts';
import type { TxInclusion } from '../ledger/batch.ts';
import { initialRunning, type Microblock, nextRunning } from '../ledger/microblock.ts';
import type { BatchTx, Bytes, InstitutionIndex, RecordTx } from '../ledger/types.ts';
import { decodeResourceEntry, decodeResourceKey } from './entries.ts';
import { answerOwnRecords, type OwnRecordsLedger } from './own-records.ts';
import type { Warn } from './ports.ts';
import type { ShareGrants } from './share-grants.ts';
import { prefixRange } from './share-grants.ts';
import {
  decodeOwnRecordsRequest,
  decodeShareRequest,
  encodeShareDenied,
  encodeShareItem,
  encodeSharePage,
  OWN_RECORDS_KIND,
  type OwnRecordsRequest,
  recordRequestKind,
  type SharedRecordMeta,
  type SharePageRequest,
  type SkippedRecord,
} from './share-wire.ts';
import type { SidecarStore } from './store.ts';

/** A pinned batch tx with its inclusion proof (LedgerStore.getRecordProof has this shape). */
export interface PinnedRecordProof {
  readonly tx: BatchTx;
  readonly inclusion: TxInclusion;
}

/** Reads of the pinned ledger the holder needs (the node's LedgerStore). */
export interface HolderLedger extends OwnRecordsLedger {
  getMicroblockByIdHash(idHash: Bytes): Promise<Microblock | undefined>;
  getRecordProof(hash: Bytes): Promise<PinnedRecordProof | undefined>;
}

export interface ShareHolderOpts {
  /** Bytes of one answer: the p2p frame limit (maxRecordBytes) less room for framing. */
  readonly maxPageBytes: number;
  /** Records per answer. */
  readonly maxPageRecords: number;
  /** Yield to the event loop after this many re-encryptions. */
  readonly yieldEvery: number;
  /** Pinned record proofs remembered (about 1 KiB each). */
  readonly maxCachedProofs: number;
}

export const defaultShareHolderOpts: ShareHolderOpts = {
  maxPageBytes: 4 * 1024 * 1024 - 64 * 1024,
  maxPageRecords: 512,
  yieldEvery: 16,
  maxCachedProofs: 20_000,
};

export interface ShareHolderDeps {
  readonly store: SidecarStore;
  readonly grants: ShareGrants;
  readonly ledger: HolderLedger;
  /** This institution's member index. */
  readonly self: InstitutionIndex;
  readonly now: () => number;
  readonly random?: RandomBytes;
  readonly warn?: Warn;
}

/** One pinned record of this institution's leaf of a patient's block. */
interface HeldRecord {
  readonly meta: SharedRecordMeta;
  readonly txHash: Bytes;
  readonly pointer: Bytes;
  readonly tx: RecordTx;
  readonly inclusion: TxInclusion;
  readonly prevRunning: Bytes;
}

const PROOF_READS = 64;

export class ShareHolder {
  private readonly deps: ShareHolderDeps;
  private readonly opts: ShareHolderOpts;
  private readonly random: RandomBytes;
  private readonly proofs = new Map<string, PinnedRecordProof>();
  /** Distinct capsules re-encrypted so far (per answer), and requests denied (tests, metrics). */
  reencrypted = 0;
  denied = 0;

  constructor(deps: ShareHolderDeps, opts: Partial<ShareHolderOpts> = {}) {
    this.deps = deps;
    this.opts = { ...defaultShareHolderOpts, ...opts };
    this.random = deps.random ?? systemRandom;
  }

  /**
   * The p2p RecordHandler: a malformed request throws LedgerError MALFORMED (the p2p layer answers
   * with an error and penalises the peer); a denial is an answer.
   */
  handle = async (request: Uint8Array, from: InstitutionIndex, signal: AbortSignal) => {
    if (recordRequestKind(request) === OWN_RECORDS_KIND) {
      return this.answerOwn(decodeOwnRecordsRequest(request));
    }
    return this.answer(decodeShareRequest(request), from, signal);
  };

  /** A patient's own-records page, on the patient's relayed signature (own-records.ts). */
  answerOwn(req: OwnRecordsRequest): Promise<Uint8Array> {
    const { store, ledger, grants, self, now } = this.deps;
    return answerOwnRecords(
      {
        store,
        ledger,
        chainId: async (idHash) => (await grants.subjectOf(idHash))?.chainId,
        self,
        now,
        maxPageBytes: this.opts.maxPageBytes,
      },
      req,
    );
  }

  async answer(
    req: SharePageRequest,
    from: InstitutionIndex,
    signal?: AbortSignal,
  ): Promise<Uint8Array> {
    const decision = await this.deps.grants.decide(req.idHash, from, this.deps.now());
    if (!decision.allow) {
      this.denied++;
      return encodeShareDenied(decision.reason, decision.message);
    }
    const block = await this.deps.ledger.getMicroblockByIdHash(req.idHash);
    const leafSeq = block?.leaves.find((l) => l.institution === this.deps.self)?.seq ?? 0;
    const held = (await this.held(req.idHash)).filter((r) => r.tx.seq > req.after);
    const budget = Math.min(req.maxBytes, this.opts.maxPageBytes);
    const maxRecords = Math.min(req.maxRecords, this.opts.maxPageRecords);
    const items: Bytes[] = [];
    const skipped: SkippedRecord[] = [];
    let bytes = 0;
    let next = req.after;
    let more = false;
    /** Records sealed together share a capsule (ingest-worker-seal.ts): re-encrypted once. */
    const cfragsOf = new Map<string, Bytes[]>();
    for (const rec of held) {
      if (items.length >= maxRecords) {
        more = true;
        break;
      }
      signal?.throwIfAborted();
      const envelope = await this.deps.store.vault.get(rec.pointer);
      if (envelope === undefined) {
        skipped.push({ seq: rec.tx.seq, txHash: rec.txHash, reason: 'MISSING' });
        this.deps.warn?.(
          'SHARE_MISSING_CIPHERTEXT',
          `pinned record ${toHex(rec.txHash).slice(0, 16)} has no ciphertext in the vault`,
        );
        next = rec.tx.seq;
        continue;
      }
      // A lower bound of the item's size first, so a record that cannot fit is not re-encrypted.
      const least = envelope.ciphertext.length + envelope.capsule.length;
      if (least > budget) {
        skipped.push({ seq: rec.tx.seq, txHash: rec.txHash, reason: 'TOO_LARGE' });
        next = rec.tx.seq;
        continue;
      }
      if (bytes + least > budget) {
        more = true;
        break;
      }
      const item = encodeShareItem({
        meta: rec.meta,
        tx: rec.tx,
        prevRunning: rec.prevRunning,
        inclusion: rec.inclusion,
        capsule: envelope.capsule,
        cfrags: this.reencrypt(envelope.capsule, decision.kfrags, cfragsOf),
        ciphertext: envelope.ciphertext,
      });
      if (bytes + item.length > budget) {
        if (items.length > 0) {
          more = true;
          break;
        }
        skipped.push({ seq: rec.tx.seq, txHash: rec.txHash, reason: 'TOO_LARGE' });
        next = rec.tx.seq;
        continue;
      }
      items.push(item);
      bytes += item.length;
      next = rec.tx.seq;
      if (this.reencrypted % this.opts.yieldEvery === 0) await yieldToLoop();
    }
    return encodeSharePage({ leafSeq, items, skipped, more, next });
  }

  /**
   * A pinned tx with its inclusion proof, remembered (pinned is final, so a remembered proof
   * never goes stale): every page of a long history lists the whole leaf, and only its first
   * listing reads the proof index.
   */
  private async proofOf(txHash: Bytes): Promise<PinnedRecordProof | undefined> {
    const key = toHex(txHash);
    const known = this.proofs.get(key);
    if (known !== undefined) return known;
    const proof = await this.deps.ledger.getRecordProof(txHash);
    if (proof !== undefined) {
      if (this.proofs.size >= this.opts.maxCachedProofs) {
        this.proofs.delete(this.proofs.keys().next().value!);
      }
      this.proofs.set(key, { tx: proof.tx, inclusion: proof.inclusion });
    }
    return proof;
  }

  private reencrypt(
    capsuleBytes: Bytes,
    kfrags: readonly VerifiedKeyFrag[],
    done: Map<string, Bytes[]>,
  ): Bytes[] {
    const key = toHex(capsuleBytes);
    const known = done.get(key);
    if (known !== undefined) return known;
    const capsule = decodeCapsule(capsuleBytes);
    this.reencrypted++;
    const cfrags = kfrags.map((k) => encodeCapsuleFrag(reencrypt(capsule, k, this.random)));
    done.set(key, cfrags);
    return cfrags;
  }

  /**
   * The patient's records this institution wrote and that are pinned, in seq order, each with the
   * running hash before it. The chain is rebuilt from the leaf's start, so it stops at the first
   * seq this institution cannot account for (it warns: its own index lost a record).
   */
  private async held(idHash: Bytes): Promise<HeldRecord[]> {
    const { store, self } = this.deps;
    const versions: { meta: SharedRecordMeta; txHash: Bytes; pointer: Bytes }[] = [];
    const keys: Bytes[] = [];
    for await (const key of store.spaces.patientRecord.keys(prefixRange(idHash))) {
      keys.push(key.subarray(idHash.length));
    }
    const entries = keys.length === 0 ? [] : await store.spaces.resource.getMany(keys);
    keys.forEach((key, n) => {
      const stored = entries[n];
      if (stored === undefined) return;
      const entry = store.decodeStored('resource', key, stored, decodeResourceEntry);
      const { resourceType, id } = decodeResourceKey(key);
      for (const v of entry.versions) {
        versions.push({
          meta: { resourceType, id, version: v.version },
          txHash: v.txHash,
          pointer: v.pointer,
        });
      }
    });
    const pinned: Omit<HeldRecord, 'prevRunning'>[] = [];
    for (let at = 0; at < versions.length; at += PROOF_READS) {
      const chunk = versions.slice(at, at + PROOF_READS);
      const proofs = await Promise.all(chunk.map((v) => this.proofOf(v.txHash)));
      chunk.forEach((v, n) => {
        const proof = proofs[n];
        if (proof === undefined) return; // not pinned yet
        const { tx } = proof;
        if (tx.type === 'leaf' || tx.institution !== self) return;
        pinned.push({ ...v, tx, inclusion: proof.inclusion });
      });
    }
    pinned.sort((a, b) => a.tx.seq - b.tx.seq);
    const out: HeldRecord[] = [];
    let running = initialRunning(idHash, self);
    for (const rec of pinned) {
      if (rec.tx.seq !== out.length + 1) {
        this.deps.warn?.(
          'SHARE_LEAF_GAP',
          `own leaf of a patient block: seq ${out.length + 1} is not in the record index; records after it are not shared`,
        );
        break;
      }
      out.push({ ...rec, prevRunning: running });
      running = nextRunning(running, rec.tx);
    }
    return out;
  }
}
