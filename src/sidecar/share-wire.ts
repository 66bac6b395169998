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
 *
 * The patient's own records (issue 6 part 7, paper 5.2 retrieval): a sidecar relays the patient's
 * signed page request (authz/own-records.ts) to a holder, which answers with the ORIGINAL
 * envelopes, already encrypted to the patient (nothing is re-encrypted; the relay cannot read them).
 *
 *   request   u8 kind = 2 (own records)
 *             idHash(32)  ts: varint  sig(64)  (the patient's x-spchain-patient header)
 *             path: string (<= 1024 bytes; the signed path with its query: holder, after, count)
 *             maxBytes: varint (>= 1; the holder's answer fits it and its own frame budget)
 *
 *   response  u8 1 = page:   records (<= the query's count, <= 200), skipped (<= 200),
 *                            next: bool + cursor string (<= 1024; authz/own-records.ts)
 *             u8 2 = denied: reason string (authz OwnRecordsDenial), message string
 *
 *   record    resourceType, id, version (strings <= 256), kind u8 (0 medical, 1 label),
 *             txHash(32), target: bool + (32), capsule (<= 1024), ciphertext (<= maxBytes),
 *             anchoring u8: 0 pending (not pinned at the holder) | 1 pinned + batch, index,
 *             round (varints)
 *   skipped   resourceType, id, version, txHash(32), reason string (TOO_LARGE)
 */
import { parseRecordsCursor } from '../authz/own-records.ts';
import type { MerkleProof } from '../crypto/merkle.ts';
import { readCommitment, writeCommitment } from '../ledger/batch.ts';
import { decode, encode, type Reader, type Writer } from '../ledger/codec.ts';
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

/** A holder's refusal, the same for every record request. */
export interface RecordsDenied {
  readonly type: 'denied';
  readonly reason: string;
  readonly message: string;
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
  | RecordsDenied;

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

/**
 * The type tag of a records answer: a denial (2, written by encodeShareDenied) is read whole; a
 * page (1) is left to the caller to read (null); any other tag fails.
 */
function readDenied(r: Reader): RecordsDenied | null {
  const tag = r.u8('type');
  if (tag === 2) {
    return {
      type: 'denied',
      reason: r.string('reason', MAX_REASON),
      message: r.string('message', MAX_MESSAGE),
    };
  }
  if (tag !== 1) r.fail('type', `is ${tag}, not 1 (page) or 2 (denied)`);
  return null;
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
    const denied = readDenied(r);
    if (denied !== null) return denied;
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

// ---------------------------------------------------------------------------------------------
// The patient's own records (kind 2)

export const OWN_RECORDS_KIND = 2;
/** Records of one own-records page at most (authz/own-records.ts MAX_OWN_RECORDS). */
export const MAX_OWN_PAGE_RECORDS = 200;
const MAX_PATH = 1024;
const MAX_CURSOR = 1024;
const SIGNATURE_BYTES = 64;

/** The patient's signed request for one page of a holder's records, as a sidecar relays it. */
export interface OwnRecordsRequest {
  readonly idHash: Bytes;
  readonly ts: number;
  readonly sig: Bytes;
  /** The path with its query, exactly as the patient's device signed it. */
  readonly path: string;
  readonly maxBytes: number;
}

export type OwnAnchoring =
  | { readonly state: 'pending' }
  | {
      readonly state: 'pinned';
      readonly batch: number;
      readonly index: number;
      readonly round: number;
    };

/** One stored record as its holder keeps it: the original capsule and ciphertext. */
export interface OwnRecordItem {
  readonly resourceType: string;
  readonly id: string;
  readonly version: string;
  readonly kind: 'medical' | 'label';
  readonly txHash: Bytes;
  readonly target: Bytes | null;
  readonly capsule: Bytes;
  readonly ciphertext: Bytes;
  readonly anchoring: OwnAnchoring;
}

export interface OwnSkipped {
  readonly resourceType: string;
  readonly id: string;
  readonly version: string;
  readonly txHash: Bytes;
  readonly reason: string;
}

export type OwnRecordsResponse =
  | {
      readonly type: 'page';
      readonly records: readonly OwnRecordItem[];
      readonly skipped: readonly OwnSkipped[];
      readonly next?: string;
    }
  | RecordsDenied;

/** The request kind of a record-service request (its first byte), or undefined when empty. */
export function recordRequestKind(bytes: Bytes): number | undefined {
  return bytes[0];
}

export function encodeOwnRecordsRequest(r: OwnRecordsRequest): Bytes {
  return encode((w) =>
    w
      .u8(OWN_RECORDS_KIND)
      .fixed(r.idHash, HASH_BYTES, 'idHash')
      .varint(r.ts)
      .fixed(r.sig, SIGNATURE_BYTES, 'sig')
      .string(r.path)
      .varint(r.maxBytes),
  );
}

export function decodeOwnRecordsRequest(bytes: Bytes): OwnRecordsRequest {
  return decode(bytes, 'own records request', (r) => {
    const kind = r.u8('kind');
    if (kind !== OWN_RECORDS_KIND) {
      r.fail('kind', `is ${kind}, not ${OWN_RECORDS_KIND} (own records)`);
    }
    const out = {
      idHash: r.fixed(HASH_BYTES, 'idHash'),
      ts: r.varint('ts'),
      sig: r.fixed(SIGNATURE_BYTES, 'sig'),
      path: r.string('path', MAX_PATH),
      maxBytes: r.varint('maxBytes'),
    };
    if (!out.path.startsWith('/')) r.fail('path', 'is not an absolute path');
    if (out.maxBytes === 0) r.fail('maxBytes', 'is 0');
    return out;
  });
}

function writeOwnMeta(w: Writer, m: { resourceType: string; id: string; version: string }): void {
  w.string(m.resourceType).string(m.id).string(m.version);
}

function readOwnMeta(r: Reader) {
  const meta = {
    resourceType: r.string('resourceType', MAX_TEXT),
    id: r.string('id', MAX_TEXT),
    version: r.string('version', MAX_TEXT),
  };
  if (meta.resourceType === '' || meta.id === '') r.fail('resourceType/id', 'is empty');
  return meta;
}

/** One record's encoding (self-delimiting); the holder sizes pages with it. */
export function encodeOwnRecordItem(item: OwnRecordItem): Bytes {
  return encode((w) => {
    writeOwnMeta(w, item);
    w.u8(item.kind === 'medical' ? 0 : 1).fixed(item.txHash, HASH_BYTES, 'txHash');
    w.bool(item.target !== null);
    if (item.target !== null) w.fixed(item.target, HASH_BYTES, 'target');
    w.bytes(item.capsule).bytes(item.ciphertext);
    const a = item.anchoring;
    if (a.state === 'pinned') w.u8(1).varint(a.batch).varint(a.index).varint(a.round);
    else w.u8(0);
  });
}

function readOwnRecordItem(r: Reader, maxCiphertext: number): OwnRecordItem {
  const meta = readOwnMeta(r);
  const kindByte = r.u8('kind');
  if (kindByte > 1) r.fail('kind', `is ${kindByte}, not 0 (medical) or 1 (label)`);
  const kind = kindByte === 0 ? 'medical' : 'label';
  const txHash = r.fixed(HASH_BYTES, 'txHash');
  const target = r.bool('target?') ? r.fixed(HASH_BYTES, 'target') : null;
  if ((kind === 'label') !== (target !== null)) r.fail('target', `does not match kind ${kind}`);
  const capsule = r.bytes('capsule', MAX_CAPSULE_BYTES);
  const ciphertext = r.bytes('ciphertext', maxCiphertext);
  const state = r.u8('anchoring');
  let anchoring: OwnAnchoring;
  if (state === 0) anchoring = { state: 'pending' };
  else if (state === 1) {
    anchoring = {
      state: 'pinned',
      batch: r.varint('anchoring.batch'),
      index: r.varint('anchoring.index'),
      round: r.varint('anchoring.round'),
    };
  } else return r.fail('anchoring', `is ${state}, not 0 (pending) or 1 (pinned)`);
  return { ...meta, kind, txHash, target, capsule, ciphertext, anchoring };
}

/** A page from records already encoded with encodeOwnRecordItem. */
export function encodeOwnRecordsPage(page: {
  records: readonly Bytes[];
  skipped: readonly OwnSkipped[];
  next?: string;
}): Bytes {
  return encode((w) => {
    w.u8(1);
    w.list(page.records, (lw, b) => lw.fixed(b, b.length, 'record'));
    w.list(page.skipped, (lw, s) => {
      writeOwnMeta(lw, s);
      lw.fixed(s.txHash, HASH_BYTES, 'txHash').string(s.reason);
    });
    w.bool(page.next !== undefined);
    if (page.next !== undefined) w.string(page.next);
  });
}

export function encodeOwnRecordsResponse(res: OwnRecordsResponse): Bytes {
  return res.type === 'denied'
    ? encodeShareDenied(res.reason, res.message)
    : encodeOwnRecordsPage({ ...res, records: res.records.map(encodeOwnRecordItem) });
}

/**
 * Decodes a holder's answer to an own-records request: at most `maxRecords` records (the signed
 * query's count) and ciphertexts of at most `maxBytes`; `next` must be a cursor.
 */
export function decodeOwnRecordsResponse(
  bytes: Bytes,
  bounds: { readonly maxRecords: number; readonly maxBytes: number },
): OwnRecordsResponse {
  return decode(bytes, 'own records response', (r): OwnRecordsResponse => {
    const denied = readDenied(r);
    if (denied !== null) return denied;
    const maxRecords = Math.min(bounds.maxRecords, MAX_OWN_PAGE_RECORDS);
    const records = r.list('records', maxRecords, (lr) => readOwnRecordItem(lr, bounds.maxBytes));
    const skipped = r.list('skipped', MAX_OWN_PAGE_RECORDS, (lr) => ({
      ...readOwnMeta(lr),
      txHash: lr.fixed(HASH_BYTES, 'skipped.txHash'),
      reason: lr.string('skipped.reason', MAX_REASON),
    }));
    if (!r.bool('next?')) return { type: 'page', records, skipped };
    const next = r.string('next', MAX_CURSOR);
    if (parseRecordsCursor(next) === undefined) r.fail('next', 'is not a records cursor');
    return { type: 'page', records, skipped, next };
  });
}
