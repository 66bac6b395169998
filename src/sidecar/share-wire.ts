/**
 * The sharing protocol on the p2p 'record' service (request bytes in, response bytes out; the p2p
 * layer authenticates the requesting institution by its peer binding and caps frames at
 * `maxRecordBytes`, 4 MiB by default). Encodings use the ledger codec (canonical varints and
 * length-prefixed bytes); every decoder is strict (bounds on every length, no trailing bytes)
 * and fails with a LedgerError MALFORMED naming the field.
 *
 *   request   u8 kind = 1 (page of shared records)
 *             idHash(32)  after: varint (the last seq the requester has; 0 = from the start)
 *             maxRecords: varint (1-1024)  maxBytes: varint
 *
 *   response  u8 1 = page:   leafSeq varint (the holder's pinned leaf), items, skipped,
 *                            more: bool, next: varint (the `after` of the next request)
 *             u8 2 = denied: reason string, message string
 *
 *   item      resourceType, id, version (strings; what the holder indexes the record under)
 *             tx (encodeTx, a medical or label tx), prevRunning(32),
 *             commitment (the batch's, ledger/batch.ts) + Merkle path (index, size, siblings),
 *             capsule, cfrags (1-8), ciphertext
 *   skipped   seq, txHash(32), reason string: a record the holder could not serve on this page
 *             (TOO_LARGE: above the frame limit; MISSING: not in its vault).
 */
import type { MerkleProof } from '../crypto/merkle.ts';
import { readCommitment, writeCommitment } from '../ledger/batch.ts';
import { decode, encode, type Reader } from '../ledger/codec.ts';
import { HASH_BYTES } from '../ledger/hash.ts';
import type { ServedRecord } from '../ledger/shared-record.ts';
import { encodeTx, readTx } from '../ledger/tx.ts';
import type { Bytes } from '../ledger/types.ts';

export const SHARE_PAGE_KIND = 1;
export const MAX_PAGE_RECORDS = 1024;
const MAX_TEXT = 256;
const MAX_TX_BYTES = 4096;
const MAX_CAPSULE_BYTES = 1024;
const MAX_CFRAG_BYTES = 1024;
const MAX_CFRAGS = 8;
const MAX_SIBLINGS = 64;
const MAX_REASON = 64;
const MAX_MESSAGE = 512;

export interface SharePageRequest {
  readonly idHash: Bytes;
  readonly after: number;
  readonly maxRecords: number;
  readonly maxBytes: number;
}

/** The name a holder keeps a record under (FHIR type, id and version). */
export interface SharedRecordMeta {
  readonly resourceType: string;
  readonly id: string;
  readonly version: string;
}

export interface ShareItem extends ServedRecord {
  readonly meta: SharedRecordMeta;
}

export interface SkippedRecord {
  readonly seq: number;
  readonly txHash: Bytes;
  readonly reason: string;
}

export type ShareResponse =
  | {
      readonly type: 'page';
      readonly leafSeq: number;
      readonly items: readonly ShareItem[];
      readonly skipped: readonly SkippedRecord[];
      readonly more: boolean;
      readonly next: number;
    }
  | { readonly type: 'denied'; readonly reason: string; readonly message: string };

export function encodeShareRequest(r: SharePageRequest): Bytes {
  return encode((w) =>
    w
      .u8(SHARE_PAGE_KIND)
      .fixed(r.idHash, HASH_BYTES, 'idHash')
      .varint(r.after)
      .varint(r.maxRecords)
      .varint(r.maxBytes),
  );
}

export function decodeShareRequest(bytes: Bytes): SharePageRequest {
  return decode(bytes, 'share request', (r) => {
    const kind = r.u8('kind');
    if (kind !== SHARE_PAGE_KIND) r.fail('kind', `is ${kind}, not ${SHARE_PAGE_KIND} (page)`);
    const out = {
      idHash: r.fixed(HASH_BYTES, 'idHash'),
      after: r.varint('after'),
      maxRecords: r.varint('maxRecords', MAX_PAGE_RECORDS),
      maxBytes: r.varint('maxBytes'),
    };
    if (out.maxRecords === 0) r.fail('maxRecords', 'is 0');
    return out;
  });
}

/** One item's encoding (self-delimiting: pages are items back to back). */
export function encodeShareItem(item: ShareItem): Bytes {
  const tx = encodeTx(item.tx);
  const { proof } = item.inclusion;
  return encode((w) => {
    w.string(item.meta.resourceType).string(item.meta.id).string(item.meta.version);
    w.bytes(tx).fixed(item.prevRunning, HASH_BYTES, 'prevRunning');
    writeCommitment(w, item.inclusion.commitment);
    w.varint(proof.index)
      .varint(proof.size)
      .list(proof.siblings, (lw, s) => lw.fixed(s, HASH_BYTES, 'sibling'));
    w.bytes(item.capsule)
      .list(item.cfrags, (lw, c) => lw.bytes(c))
      .bytes(item.ciphertext);
  });
}

export function readShareItem(r: Reader, maxCiphertext: number): ShareItem {
  const meta = {
    resourceType: r.string('resourceType', MAX_TEXT),
    id: r.string('id', MAX_TEXT),
    version: r.string('version', MAX_TEXT),
  };
  const txBytes = r.bytes('tx', MAX_TX_BYTES);
  const tx = decode(txBytes, 'shared tx', readTx);
  if (tx.type !== 'medical' && tx.type !== 'label') r.fail('tx', `is a ${tx.type} tx`);
  const prevRunning = r.fixed(HASH_BYTES, 'prevRunning');
  const commitment = readCommitment(r);
  const proof: MerkleProof = {
    index: r.varint('proof.index'),
    size: r.varint('proof.size'),
    siblings: r.list('proof.siblings', MAX_SIBLINGS, (lr) => lr.fixed(HASH_BYTES, 'sibling')),
  };
  return {
    meta,
    tx,
    prevRunning,
    inclusion: { commitment, proof },
    capsule: r.bytes('capsule', MAX_CAPSULE_BYTES),
    cfrags: r.list('cfrags', MAX_CFRAGS, (lr) => lr.bytes('cfrag', MAX_CFRAG_BYTES)),
    ciphertext: r.bytes('ciphertext', maxCiphertext),
  };
}

export function decodeShareItem(bytes: Bytes, maxCiphertext: number): ShareItem {
  return decode(bytes, 'shared record', (r) => readShareItem(r, maxCiphertext));
}

/** A page from items already encoded with encodeShareItem (the holder sizes pages with them). */
export function encodeSharePage(page: {
  leafSeq: number;
  items: readonly Bytes[];
  skipped: readonly SkippedRecord[];
  more: boolean;
  next: number;
}): Bytes {
  return encode((w) => {
    w.u8(1).varint(page.leafSeq);
    w.list(page.items, (lw, b) => lw.fixed(b, b.length, 'item'));
    w.list(page.skipped, (lw, s) =>
      lw.varint(s.seq).fixed(s.txHash, HASH_BYTES, 'txHash').string(s.reason),
    );
    w.bool(page.more).varint(page.next);
  });
}

export function encodeShareDenied(reason: string, message: string): Bytes {
  return encode((w) =>
    w
      .u8(2)
      .string(reason)
      .string(message.slice(0, MAX_MESSAGE / 4)),
  );
}

export function encodeShareResponse(res: ShareResponse): Bytes {
  return res.type === 'denied'
    ? encodeShareDenied(res.reason, res.message)
    : encodeSharePage({ ...res, items: res.items.map(encodeShareItem) });
}

/** Decodes a holder's answer to `request`: at most the records and bytes it asked for. */
export function decodeShareResponse(bytes: Bytes, request: SharePageRequest): ShareResponse {
  return decode(bytes, 'share response', (r): ShareResponse => {
    const tag = r.u8('type');
    if (tag === 2) {
      return {
        type: 'denied',
        reason: r.string('reason', MAX_REASON),
        message: r.string('message', MAX_MESSAGE),
      };
    }
    if (tag !== 1) r.fail('type', `is ${tag}, not 1 (page) or 2 (denied)`);
    const leafSeq = r.varint('leafSeq');
    const items = r.list('items', request.maxRecords, (lr) => readShareItem(lr, request.maxBytes));
    const skipped = r.list('skipped', MAX_PAGE_RECORDS, (lr) => ({
      seq: lr.varint('skipped.seq'),
      txHash: lr.fixed(HASH_BYTES, 'skipped.txHash'),
      reason: lr.string('skipped.reason', MAX_REASON),
    }));
    const more = r.bool('more');
    const next = r.varint('next');
    if (more && next <= request.after) r.fail('next', 'does not move past the request');
    return { type: 'page', leafSeq, items, skipped, more, next };
  });
}
