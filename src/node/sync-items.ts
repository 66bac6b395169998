/**
 * What sync carries (DESIGN section 5, "sync"): pinned keyblocks and batches, each with its
 * certificate, as one stream in the order a replica can pin them:
 * - a batch after the keyblock it is anchored to;
 * - keyblock k after a batch anchored in the chunk of keyblock k - 1, when that chunk is later than
 *   the previous batch's (keyblocks.ts keyblockGroupSettled: only then is k's group final).
 * The server knows where the client is from the request (the next batch height and the next
 * keyblock height it wants) and walks its own store from there; the client checks everything it
 * receives (chain.ts applyCertified), so a server that breaks the order only gets its page refused.
 */
import { encodeBatch } from '../ledger/batch.ts';
import { encodeCertificate, readKind, writeKind } from '../ledger/certificate.ts';
import { decode, encode } from '../ledger/codec.ts';
import { encodeKeyblock } from '../ledger/keyblock.ts';
import type { Bytes, Certificate, ConsensusKind } from '../ledger/types.ts';
import type { SyncPage, SyncRequest } from '../p2p/index.ts';
import type { LedgerStore } from '../store/ledger-store.ts';
import { keyblockGroupSettled } from './keyblocks.ts';

/** One sync item: a pinned keyblock's or batch's bytes and its certificate. */
export interface SyncItem {
  readonly kind: ConsensusKind;
  readonly value: Bytes;
  readonly certificate: Bytes;
}

export function encodeSyncItem(item: SyncItem): Bytes {
  return encode((w) => {
    writeKind(w, item.kind);
    w.bytes(item.value).bytes(item.certificate);
  });
}

export function decodeSyncItem(bytes: Bytes, maxBytes: number): SyncItem {
  return decode(bytes, 'sync item', (r) => ({
    kind: readKind(r),
    value: r.bytes('value', maxBytes),
    certificate: r.bytes('certificate', maxBytes),
  }));
}

type SyncReads = Pick<LedgerStore, 'tip' | 'getBatch' | 'getKeyblock' | 'getCertificate'>;

/**
 * Pinned items from batch `request.fromHeight` and keyblock `request.fromKeyblock` on (keyblock 1
 * comes with the genesis file), in pinning order, within the request's bounds. nextHeight is null
 * when nothing more can follow now.
 */
export async function readSyncPage(
  store: SyncReads,
  request: SyncRequest,
  chunkSize: number,
): Promise<SyncPage> {
  const tip = store.tip();
  const batchTip = tip.batch?.height ?? 0;
  const keyblockTip = tip.keyblock?.height ?? 0;
  let h = Math.max(1, request.fromHeight);
  let k = Math.max(2, request.fromKeyblock ?? 0);
  // The client holds every batch below h: its tip's anchor is at least ours at that height.
  const held = Math.min(h - 1, batchTip);
  let anchor = held >= 1 ? ((await store.getBatch(held))?.keyblockHeight ?? 0) : 0;
  const items: Bytes[] = [];
  let bytes = 0;
  /** Adds an item if it fits in the page. */
  const push = (kind: ConsensusKind, value: Bytes, cert: Certificate): boolean => {
    const item = encodeSyncItem({ kind, value, certificate: encodeCertificate(cert) });
    if (items.length >= request.maxItems || bytes + item.length > request.maxBytes) return false;
    items.push(item);
    bytes += item.length;
    return true;
  };
  for (;;) {
    const batch = h <= batchTip ? await store.getBatch(h) : undefined;
    if (batch !== undefined && batch.keyblockHeight < k) {
      const cert = await store.getCertificate('batch', h);
      if (cert === undefined) break;
      if (!push('batch', encodeBatch(batch), cert)) return { items, nextHeight: h };
      anchor = batch.keyblockHeight;
      h++;
      continue;
    }
    if (k > keyblockTip || !keyblockGroupSettled(anchor, k - 1, chunkSize)) break;
    const [kb, cert] = await Promise.all([
      store.getKeyblock(k),
      store.getCertificate('keyblock', k),
    ]);
    if (kb === undefined || cert === undefined) break;
    if (!push('keyblock', encodeKeyblock(kb), cert)) return { items, nextHeight: h };
    k++;
  }
  return { items, nextHeight: null };
}
