/**
 * What travels on each channel: gossip topics (scoped by chain id), direct message kinds, protocol
 * ids, and the sync page codec. Payloads are the ledger's own canonical encodings.
 */
import { type BftMessage, decodeBftMessage, encodeBftMessage } from '../ledger/bft-messages.ts';
import { decode, encode } from '../ledger/codec.ts';
import { LedgerError } from '../ledger/errors.ts';
import { decodeKeyblock, encodeKeyblock } from '../ledger/keyblock.ts';
import { readAdmit, writeAdmit } from '../ledger/membership.ts';
import { decodeBundle, decodeTx, encodeBundle, encodeTx } from '../ledger/tx.ts';
import type { AdmitTx, Bundle, InstitutionIndex, Keyblock, RegisterTx } from '../ledger/types.ts';

export interface TopicPayloads {
  readonly bundles: Bundle;
  readonly keyblocks: Keyblock;
  readonly bft: BftMessage;
}
export type TopicName = keyof TopicPayloads;
export const TOPIC_NAMES: readonly TopicName[] = ['bundles', 'keyblocks', 'bft'];

export function topicId(chainId: string, name: TopicName): string {
  return `/spchain/${encodeURIComponent(chainId)}/${name}/1`;
}

/**
 * An admit tx (a new member) a member forwards to the miners: `from` is the forwarding member (the
 * tx itself is signed by the new member and its approvers, none of whom need be the sender).
 */
export interface ForwardedAdmit {
  readonly from: InstitutionIndex;
  readonly tx: AdmitTx;
}

/**
 * Direct (stream) messages: BFT proposals and votes (batch proposals included), bundles, register
 * txs (sent by the patient's home institution to the miners), and admit txs (sent by the member
 * whose operator submitted them, to the miners).
 */
export interface DirectPayloads {
  readonly bft: BftMessage;
  readonly bundle: Bundle;
  readonly register: RegisterTx;
  readonly admit: ForwardedAdmit;
}
export type DirectKind = keyof DirectPayloads;
export const DIRECT_KIND_CODES: Readonly<Record<DirectKind, number>> = {
  bft: 1,
  bundle: 2,
  register: 3,
  admit: 4,
};
export const DIRECT_KINDS: readonly DirectKind[] = ['bft', 'bundle', 'register', 'admit'];

export type Service = 'direct' | 'sync' | 'record';
export const PROTOCOLS: Readonly<Record<Service, string>> = {
  direct: '/spchain/direct/1.0.0',
  sync: '/spchain/sync/1.0.0',
  record: '/spchain/record/1.0.0',
};

type Codec<T> = { encode(v: T): Uint8Array; decode(b: Uint8Array, maxBytes: number): T };
const bft: Codec<BftMessage> = { encode: encodeBftMessage, decode: decodeBftMessage };
const bundle: Codec<Bundle> = { encode: encodeBundle, decode: (b) => decodeBundle(b) };
const keyblock: Codec<Keyblock> = { encode: encodeKeyblock, decode: (b) => decodeKeyblock(b) };
const register: Codec<RegisterTx> = {
  encode: encodeTx,
  decode: (b) => {
    const tx = decodeTx(b);
    if (tx.type !== 'register') throw new LedgerError('MALFORMED', 'expected a register tx');
    return tx;
  },
};

const admit: Codec<ForwardedAdmit> = {
  encode: (m) =>
    encode((w) => {
      w.varint(m.from);
      writeAdmit(w, m.tx);
    }),
  decode: (b) =>
    decode(b, 'forwarded admit tx', (r) => ({ from: r.varint('from'), tx: readAdmit(r) })),
};

export const TOPIC_CODECS: { readonly [T in TopicName]: Codec<TopicPayloads[T]> } = {
  bundles: bundle,
  keyblocks: keyblock,
  bft,
};
export const DIRECT_CODECS: { readonly [K in DirectKind]: Codec<DirectPayloads[K]> } = {
  bft,
  bundle,
  register,
  admit,
};

/** The member a direct message claims to come from: it must be the peer that sent it. */
export function directAuthor(kind: DirectKind, value: DirectPayloads[DirectKind]): number {
  if (kind === 'bft') return (value as BftMessage).member;
  if (kind === 'register') return (value as RegisterTx).home;
  if (kind === 'admit') return (value as ForwardedAdmit).from;
  return (value as Bundle).institution;
}

/**
 * "Give me pinned items from batch height h and keyblock height k": at most maxItems items and
 * maxBytes bytes of them.
 */
export interface SyncRequest {
  readonly fromHeight: number;
  /** The first keyblock height wanted (0: none asked for). */
  readonly fromKeyblock?: number;
  readonly maxItems: number;
  readonly maxBytes: number;
}

/** A page of pinned items in chain order; nextHeight is where to ask next (null: caught up). */
export interface SyncPage {
  readonly items: readonly Uint8Array[];
  readonly nextHeight: number | null;
}

export function encodeSyncRequest(r: SyncRequest): Uint8Array {
  return encode((w) =>
    w
      .varint(r.fromHeight)
      .varint(r.maxItems)
      .varint(r.maxBytes)
      .varint(r.fromKeyblock ?? 0),
  );
}

export function decodeSyncRequest(b: Uint8Array): SyncRequest {
  return decode(b, 'sync request', (r) => ({
    fromHeight: r.varint('fromHeight'),
    maxItems: r.varint('maxItems'),
    maxBytes: r.varint('maxBytes'),
    fromKeyblock: r.varint('fromKeyblock'),
  }));
}

export function pageBytes(page: SyncPage): number {
  let n = 0;
  for (const item of page.items) n += item.length;
  return n;
}

export function encodeSyncPage(page: SyncPage): Uint8Array {
  return encode((w) => {
    w.list(page.items, (lw, item) => lw.bytes(item));
    w.bool(page.nextHeight !== null);
    if (page.nextHeight !== null) w.varint(page.nextHeight);
  });
}

/** Rejects (LedgerError MALFORMED) a page over the bounds the request asked for. */
export function decodeSyncPage(b: Uint8Array, req: SyncRequest): SyncPage {
  return decode(b, 'sync page', (r) => {
    let total = 0;
    const items = r.list('items', req.maxItems, (rr) => {
      const item = rr.bytes('item', req.maxBytes - total);
      total += item.length;
      return item;
    });
    const nextHeight = r.bool('has next') ? r.varint('nextHeight') : null;
    return { items, nextHeight };
  });
}
