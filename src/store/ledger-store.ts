/**
 * The node's persistence of the pinned ledger (DESIGN section 5, "store"): LevelDB through `level`,
 * on disk. Only pinned (final) items are written, each pin as ONE atomic LevelDB batch holding the
 * item, its certificate, the patient blocks it creates or changes, every index entry and the tip.
 *
 * Key layout (one sublevel per kind; integers big-endian so keys sort by height and (i, j)):
 *   kb  be48(height)                                  -> encodeKeyblock (register txs included)
 *   kh  keyblockHash                                  -> varint height
 *   ce  u8(kind: 0 keyblock, 1 batch) be48(height)    -> encodeCertificate
 *   ba  be48(height)                                  -> encodeBatch
 *   bp  be48(height)                                  -> the batch's proof index: its commitment,
 *                                                        the Merkle roots of its 32-tx chunks and
 *                                                        each tx's byte span in the encoded batch
 *   mb  be48(i) u32be(j)                              -> microblock (encodeStoredMicroblock)
 *   id  idHash                                        -> varint i, varint j
 *   tx  txHash                                        -> u8 0, varint batch height, varint index
 *                                                        (medical, label, leaf), or
 *                                                        u8 1, varint i, varint j (register)
 *   rc  be48(i) u32be(j) u16be(institution) txHash    -> (empty): medical txs, for label targets
 *                                                        (a prefix scan lists one institution's
 *                                                        records of one patient)
 *   me  'keyblock' | 'batch'                          -> varint height, hash (the pinned tips)
 *
 * Every value but the empty `rc` ones is sealed: payload || u32be(CRC-32 of (sublevel, key,
 * payload)). A read checks the seal, decodes the payload with the ledger's canonical decoders and
 * checks it against its key (height, (i, j), hash), so corrupt bytes, or a value under the wrong key,
 * give a StoreError CORRUPT naming the kind and key, never a wrong answer.
 *
 * Record proofs in O(log n) of the batch: the tx tree is cut into aligned chunks of 32 leaves,
 * which are subtrees of the RFC 6962 tree (merkle.ts). A proof reads the batch's bytes and its
 * proof index, hashes only the 32 raw txs of its chunk (hash = ledgerHash('tx', encoding)), and
 * joins the path inside the chunk to the path over the stored chunk roots; the tx itself is decoded
 * from its span. About 4 bytes per record on disk instead of decoding and rehashing the whole
 * batch (1,000 txs: ~15 ms) for every proof.
 *
 * Synchronous ports over an async database: validateBatch reads patient blocks, pinned tx hashes and
 * label targets through synchronous ports (it is pure), while LevelDB is async. `loadBatchContext`
 * bridges the two: it lists what one batch can ask for (its txs' patient blocks, its tx hashes, its
 * labels' targets), prefetches all of it in parallel from one LevelDB snapshot, and returns
 * synchronous lookups over that snapshot. Asking it for anything outside the batch throws
 * NOT_PREFETCHED (a programming error, not a "no"). The snapshot carries the height it was taken
 * at: if another batch is pinned in between, putPinnedBatch refuses the validated batch (its height
 * is no longer the next one: CONFLICTS_WITH_PINNED, or 'unchanged' if it is the same batch).
 */
import { crc32 } from 'node:zlib';
import { Level } from 'level';
import { equalBytes, fromHex, toHex } from '../crypto/bytes.ts';
import {
  type MerkleProof,
  MerkleTree,
  merkleLeafHash,
  merkleRootOfLeafHashes,
} from '../crypto/merkle.ts';
import {
  type BatchCommitment,
  type BatchContext,
  batchCommitment,
  batchTxHashes,
  commitmentHash,
  decodeBatch,
  encodeBatch,
  refKey,
  type TxInclusion,
} from '../ledger/batch.ts';
import { decodeCertificate, encodeCertificate } from '../ledger/certificate.ts';
import { decode, encode, type Reader, type Writer } from '../ledger/codec.ts';
import { ledgerHash } from '../ledger/hash.ts';
import { decodeKeyblock, encodeKeyblock, keyblockHash, ZERO_HASH } from '../ledger/keyblock.ts';
import { type LeafState, type Microblock, microblockHash } from '../ledger/microblock.ts';
import { decodeTx, encodeTx, txHash } from '../ledger/tx.ts';
import type {
  BatchTx,
  BlockRef,
  Bytes,
  Certificate,
  InstitutionIndex,
  Keyblock,
  TxBatch,
} from '../ledger/types.ts';

export type StoreErrorCode =
  | 'OPEN_FAILED'
  | 'CORRUPT'
  | 'NOT_CONSECUTIVE'
  | 'WRONG_PARENT'
  | 'CONFLICTS_WITH_PINNED'
  | 'DUPLICATE_PATIENT'
  | 'DUPLICATE_TX'
  | 'INVALID_ARGUMENT'
  | 'NOT_PREFETCHED';

export class StoreError extends Error {
  readonly code: StoreErrorCode;
  readonly detail: Readonly<Record<string, unknown>>;

  constructor(
    code: StoreErrorCode,
    message: string,
    detail: Record<string, unknown> = {},
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'StoreError';
    this.code = code;
    this.detail = detail;
  }
}

export function isStoreError(err: unknown, code?: StoreErrorCode): err is StoreError {
  return err instanceof StoreError && (code === undefined || err.code === code);
}

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

export interface PinnedTip {
  readonly height: number;
  readonly hash: Bytes;
}

/** The latest pinned keyblock and batch, or null before the first. */
export interface StoreTip {
  readonly keyblock: PinnedTip | null;
  readonly batch: PinnedTip | null;
}

export type TxLocation =
  | { readonly kind: 'batch'; readonly height: number; readonly index: number }
  | { readonly kind: 'register'; readonly ref: BlockRef };

/** One pinned batch tx with the evidence a third party checks: path to the certified batch hash. */
export interface RecordProof {
  readonly tx: BatchTx;
  readonly height: number;
  readonly index: number;
  readonly inclusion: TxInclusion;
  readonly certificate: Certificate;
}

/** What validateBatch needs from the chain for one batch; add `genesis` and `members`. */
export type BatchSnapshot = Pick<
  BatchContext,
  'prevHash' | 'height' | 'pinnedKeyblockHeight' | 'microblocks' | 'isPinnedTx' | 'isRecordOf'
>;

export type PutOutcome = 'written' | 'unchanged';

// ---------------------------------------------------------------------------------------------
// Key layout

/** Sublevel names; short, since every key carries its sublevel's prefix `!name!`. */
export const SPACES = {
  keyblock: 'kb',
  keyblockHash: 'kh',
  certificate: 'ce',
  batch: 'ba',
  batchProof: 'bp',
  microblock: 'mb',
  idHash: 'id',
  tx: 'tx',
  record: 'rc',
  meta: 'me',
} as const;

export type SpaceKind = keyof typeof SPACES;

const HASH_BYTES = 32;
const MAX_BE48 = 2 ** 48 - 1;
const CHECKSUM_BYTES = 4;
const MAX_LEAVES = 0x10000;
const KIND_CODE = { keyblock: 0, batch: 1 } as const;

function be(n: number, size: number, what: string): Bytes {
  const max = size === 6 ? MAX_BE48 : 2 ** (8 * size) - 1;
  if (!Number.isSafeInteger(n) || n < 0 || n > max) {
    throw new StoreError('INVALID_ARGUMENT', `${what} must be an integer in [0, ${max}], got ${n}`);
  }
  const out = new Uint8Array(size);
  let v = n;
  for (let k = size - 1; k >= 0; k--) {
    out[k] = v % 256;
    v = Math.floor(v / 256);
  }
  return out;
}

function hash32(bytes: Bytes, what: string): Bytes {
  if (!(bytes instanceof Uint8Array) || bytes.length !== HASH_BYTES) {
    throw new StoreError('INVALID_ARGUMENT', `${what} must be ${HASH_BYTES} bytes`);
  }
  return bytes;
}

function hexHash(hex: string, what: string): Bytes {
  if (typeof hex !== 'string' || hex.length !== 2 * HASH_BYTES) {
    throw new StoreError('INVALID_ARGUMENT', `${what} must be ${2 * HASH_BYTES} hex characters`);
  }
  try {
    return fromHex(hex, what);
  } catch (err) {
    throw new StoreError('INVALID_ARGUMENT', `${what} is not hex`, {}, err);
  }
}

const cat = (...parts: Bytes[]): Bytes => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

/** The key of each kind of entry (exported for tooling and tests that inspect the database). */
export const storeKeys = {
  keyblock: (height: number) => be(height, 6, 'keyblock height'),
  keyblockHash: (hash: Bytes) => hash32(hash, 'keyblock hash'),
  certificate: (kind: Certificate['kind'], height: number) =>
    cat(Uint8Array.of(KIND_CODE[kind]), be(height, 6, 'certificate height')),
  batch: (height: number) => be(height, 6, 'batch height'),
  batchProof: (height: number) => be(height, 6, 'batch height'),
  microblock: (ref: BlockRef) => cat(be(ref.i, 6, 'block i'), be(ref.j, 4, 'block j')),
  idHash: (idHash: Bytes) => hash32(idHash, 'idHash'),
  tx: (hash: Bytes) => hash32(hash, 'tx hash'),
  record: (ref: BlockRef, institution: InstitutionIndex, hash: Bytes) =>
    cat(storeKeys.microblock(ref), be(institution, 2, 'institution'), hash32(hash, 'tx hash')),
  meta: (which: 'keyblock' | 'batch') => new TextEncoder().encode(which),
};

function checksum(space: string, key: Bytes, payload: Bytes): Bytes {
  return be(crc32(payload, crc32(key, crc32(space))), 4, 'checksum');
}

/** payload || CRC-32(sublevel name, key, payload): binds the value to its key. */
export function sealValue(kind: SpaceKind, key: Bytes, payload: Bytes): Bytes {
  return cat(payload, checksum(SPACES[kind], key, payload));
}

function describeKey(kind: SpaceKind, key: Bytes): string {
  const n = (from: number, size: number) => {
    let v = 0;
    for (let k = from; k < from + size; k++) v = v * 256 + (key[k] ?? 0);
    return v;
  };
  switch (kind) {
    case 'keyblock':
    case 'batch':
    case 'batchProof':
      return `height ${n(0, 6)}`;
    case 'certificate':
      return `${key[0] === 0 ? 'keyblock' : 'batch'} height ${n(1, 6)}`;
    case 'microblock':
      return `${n(0, 6)}/${n(6, 4)}`;
    case 'meta':
      return new TextDecoder().decode(key);
    default:
      return toHex(key.subarray(0, 8));
  }
}

const LABELS: Record<SpaceKind, string> = {
  keyblock: 'keyblock',
  keyblockHash: 'keyblock-hash index entry',
  certificate: 'certificate',
  batch: 'batch',
  batchProof: 'batch proof index',
  microblock: 'microblock',
  idHash: 'idHash index entry',
  tx: 'tx index entry',
  record: 'record index entry',
  meta: 'meta entry',
};

function corrupt(kind: SpaceKind, key: Bytes, problem: string, cause?: unknown): StoreError {
  const where = describeKey(kind, key);
  return new StoreError(
    'CORRUPT',
    `corrupt ${LABELS[kind]} (${where}): ${problem}`,
    { kind, key: where },
    cause,
  );
}

/** Checks the seal and decodes the payload; any failure is CORRUPT naming the kind and key. */
function unseal<T>(kind: SpaceKind, key: Bytes, stored: Bytes, f: (payload: Bytes) => T): T {
  if (stored.length < CHECKSUM_BYTES) throw corrupt(kind, key, 'value is shorter than its seal');
  const view = new Uint8Array(stored.buffer, stored.byteOffset, stored.byteLength);
  const payload = view.subarray(0, view.length - CHECKSUM_BYTES);
  if (
    !equalBytes(view.subarray(view.length - CHECKSUM_BYTES), checksum(SPACES[kind], key, payload))
  )
    throw corrupt(kind, key, 'checksum mismatch');
  return decodeAs(kind, key, payload, f);
}

/** Decodes (part of) a stored value; a decoder's error becomes CORRUPT naming the kind and key. */
function decodeAs<T>(kind: SpaceKind, key: Bytes, payload: Bytes, f: (payload: Bytes) => T): T {
  try {
    return f(payload);
  } catch (err) {
    if (isStoreError(err)) throw err;
    throw corrupt(kind, key, (err as Error).message, err);
  }
}

// ---------------------------------------------------------------------------------------------
// Value encodings (the ledger's codec)

function writeMicroblock(w: Writer, mb: Microblock): void {
  const h = mb.header;
  w.varint(h.i)
    .varint(h.j)
    .fixed(h.idHash, HASH_BYTES, 'idHash')
    .varint(h.home)
    .fixed(h.rootDigest, HASH_BYTES, 'rootDigest')
    .fixed(mb.patientPreKey, 33, 'patientPreKey')
    .fixed(mb.patientSigningKey, 33, 'patientSigningKey')
    .list(mb.leaves, (lw, l) =>
      lw
        .varint(l.institution)
        .fixed(l.digest, HASH_BYTES, 'leaf digest')
        .varint(l.seq)
        .fixed(l.running, HASH_BYTES, 'leaf running'),
    );
}

/** A patient block: header, patient keys, leaves (the hash is recomputed from the header). */
export function encodeStoredMicroblock(mb: Microblock): Bytes {
  return encode((w) => writeMicroblock(w, mb));
}

export function decodeStoredMicroblock(bytes: Bytes): Microblock {
  return decode(bytes, 'microblock', (r) => {
    const header = {
      i: r.varint('i'),
      j: r.varint('j'),
      idHash: r.fixed(HASH_BYTES, 'idHash'),
      home: r.varint('home', 0xffff),
      rootDigest: r.fixed(HASH_BYTES, 'rootDigest'),
    };
    const patientPreKey = r.fixed(33, 'patientPreKey');
    const patientSigningKey = r.fixed(33, 'patientSigningKey');
    const leaves = r.list(
      'leaves',
      MAX_LEAVES,
      (lr): LeafState => ({
        institution: lr.varint('leaf institution', 0xffff),
        digest: lr.fixed(HASH_BYTES, 'leaf digest'),
        seq: lr.varint('leaf seq'),
        running: lr.fixed(HASH_BYTES, 'leaf running'),
      }),
    );
    return { header, hash: microblockHash(header), patientPreKey, patientSigningKey, leaves };
  });
}

const readRef = (r: Reader): BlockRef => ({ i: r.varint('i'), j: r.varint('j') });
const encodeRef = (ref: BlockRef) => encode((w) => w.varint(ref.i).varint(ref.j));
const encodeHeight = (h: number) => encode((w) => w.varint(h));
const encodeTip = (t: PinnedTip) =>
  encode((w) => w.varint(t.height).fixed(t.hash, HASH_BYTES, 'hash'));

function encodeLocation(loc: TxLocation): Bytes {
  return encode((w) =>
    loc.kind === 'batch'
      ? w.u8(0).varint(loc.height).varint(loc.index)
      : w.u8(1).varint(loc.ref.i).varint(loc.ref.j),
  );
}

function decodeLocation(bytes: Bytes): TxLocation {
  return decode(bytes, 'tx location', (r): TxLocation => {
    const tag = r.u8('kind');
    if (tag === 0) return { kind: 'batch', height: r.varint('height'), index: r.varint('index') };
    if (tag === 1) return { kind: 'register', ref: readRef(r) };
    return r.fail('kind', `is ${tag}, not 0 (batch) or 1 (register)`);
  });
}

// ---------------------------------------------------------------------------------------------
// Batch proof index

/** Leaves per chunk: a power of two, so an aligned chunk is a subtree of the batch's tx tree. */
export const PROOF_CHUNK = 32;

export interface TxSpan {
  readonly start: number;
  readonly length: number;
}

export interface BatchProofIndex {
  readonly commitment: BatchCommitment;
  /** Root of each aligned chunk of PROOF_CHUNK leaf hashes (the last one may be shorter). */
  readonly chunkRoots: readonly Bytes[];
  /** Where each tx's canonical encoding lies in the encoded batch, in tx order. */
  readonly spans: readonly TxSpan[];
}

/**
 * The path of leaf `index` in a tree of `size` leaves, from the leaf hashes of its chunk and the
 * roots of all chunks: the path inside the chunk, then the path of the chunk among the chunks.
 * Equal to MerkleTree.fromLeafHashes(all).proof(index): an aligned block of 2^k leaves is a node
 * of the tree, and the last (shorter) chunk is carried up exactly as its own tree's root is.
 * Also returns the chunk's root and the whole tree's root, for the caller to check.
 */
export function chunkedProof(
  chunkLeafHashes: readonly Bytes[],
  chunkRoots: readonly Bytes[],
  index: number,
  size: number,
): { proof: MerkleProof; chunkRoot: Bytes; root: Bytes } {
  const chunk = Math.floor(index / PROOF_CHUNK);
  const inner = MerkleTree.fromLeafHashes(chunkLeafHashes);
  const outer = MerkleTree.fromLeafHashes(chunkRoots);
  const siblings = [
    ...inner.proof(index - chunk * PROOF_CHUNK).siblings,
    ...outer.proof(chunk).siblings,
  ];
  return { proof: { index, size, siblings }, chunkRoot: inner.root, root: outer.root };
}

/** Finds each tx's encoding in the encoded batch (in order, a bundle's few header bytes apart). */
function txSpans(encoded: Bytes, txBytes: readonly Bytes[]): TxSpan[] {
  const SLACK = 160;
  let cursor = 0;
  return txBytes.map((bytes, n) => {
    for (let start = cursor; start <= cursor + SLACK; start++) {
      if (start + bytes.length > encoded.length) break;
      let k = 0;
      while (k < bytes.length && encoded[start + k] === bytes[k]) k++;
      if (k === bytes.length) {
        cursor = start + bytes.length;
        return { start, length: bytes.length };
      }
    }
    throw new Error(`tx ${n} is not where the batch encoding should hold it`);
  });
}

function buildProofIndex(
  encoded: Bytes,
  txs: readonly BatchTx[],
  hashes: readonly Bytes[],
  commitment: BatchCommitment,
): BatchProofIndex {
  const txBytes = txs.map(encodeTx);
  const spans = txSpans(encoded, txBytes);
  if (txBytes.length > 0 && !equalBytes(ledgerHash('tx', txBytes[0]!), hashes[0]!)) {
    throw new Error("txHash is no longer ledgerHash('tx', encoding): update the proof index");
  }
  const leaves = hashes.map(merkleLeafHash);
  const chunkRoots: Bytes[] = [];
  for (let at = 0; at < leaves.length; at += PROOF_CHUNK) {
    chunkRoots.push(merkleRootOfLeafHashes(leaves.slice(at, at + PROOF_CHUNK)));
  }
  if (leaves.length > 0 && !equalBytes(merkleRootOfLeafHashes(chunkRoots), commitment.txRoot)) {
    throw new Error('chunk roots do not rebuild the batch tx root');
  }
  return { commitment, chunkRoots, spans };
}

function encodeProofIndex(x: BatchProofIndex): Bytes {
  const c = x.commitment;
  let end = 0;
  return encode((w) =>
    w
      .varint(c.height)
      .fixed(c.prev, HASH_BYTES, 'prev')
      .varint(c.keyblockHeight)
      .varint(c.proposer)
      .varint(c.txCount)
      .fixed(c.txRoot, HASH_BYTES, 'txRoot')
      .fixed(c.bundleRoot, HASH_BYTES, 'bundleRoot')
      .list(x.chunkRoots, (lw, root) => lw.fixed(root, HASH_BYTES, 'chunk root'))
      .list(x.spans, (lw, span) => {
        lw.varint(span.start - end).varint(span.length);
        end = span.start + span.length;
      }),
  );
}

function decodeProofIndex(bytes: Bytes): BatchProofIndex {
  return decode(bytes, 'batch proof index', (r) => {
    const commitment: BatchCommitment = {
      height: r.varint('height'),
      prev: r.fixed(HASH_BYTES, 'prev'),
      keyblockHeight: r.varint('keyblockHeight'),
      proposer: r.varint('proposer', 0xffff),
      txCount: r.varint('txCount'),
      txRoot: r.fixed(HASH_BYTES, 'txRoot'),
      bundleRoot: r.fixed(HASH_BYTES, 'bundleRoot'),
    };
    const chunks = Math.ceil(commitment.txCount / PROOF_CHUNK);
    const chunkRoots = r.list('chunk roots', chunks, (rr) => rr.fixed(HASH_BYTES, 'chunk root'));
    let end = 0;
    const spans = r.list('spans', commitment.txCount, (rr) => {
      const start = end + rr.varint('span gap');
      const length = rr.varint('span length');
      end = start + length;
      return { start, length };
    });
    if (chunkRoots.length !== chunks || spans.length !== commitment.txCount) {
      r.fail('spans', `do not match txCount ${commitment.txCount}`);
    }
    return { commitment, chunkRoots, spans };
  });
}

// ---------------------------------------------------------------------------------------------

function openSpaces(db: Level<Bytes, Bytes>) {
  const space = (name: string) =>
    db.sublevel<Bytes, Bytes>(name, { keyEncoding: 'view', valueEncoding: 'view' });
  return {
    keyblock: space(SPACES.keyblock),
    keyblockHash: space(SPACES.keyblockHash),
    certificate: space(SPACES.certificate),
    batch: space(SPACES.batch),
    batchProof: space(SPACES.batchProof),
    microblock: space(SPACES.microblock),
    idHash: space(SPACES.idHash),
    tx: space(SPACES.tx),
    record: space(SPACES.record),
    meta: space(SPACES.meta),
  };
}

type Spaces = ReturnType<typeof openSpaces>;
type Op = { type: 'put'; sublevel: Spaces[SpaceKind]; key: Bytes; value: Bytes };
type ReadOpts = { snapshot?: ReturnType<Level<Bytes, Bytes>['snapshot']> };

function refsMatch(a: BlockRef, b: BlockRef): boolean {
  return a.i === b.i && a.j === b.j;
}

export class LedgerStore {
  private readonly db: Level<Bytes, Bytes>;
  private readonly spaces: Spaces;
  private readonly opts: LedgerStoreOpts;
  private current: StoreTip = { keyblock: null, batch: null };
  /** Pins run one at a time, so each checks the tip the previous one left. */
  private writing: Promise<unknown> = Promise.resolve();

  private constructor(db: Level<Bytes, Bytes>, opts: LedgerStoreOpts) {
    this.db = db;
    this.spaces = openSpaces(db);
    this.opts = opts;
  }

  /** Opens (creating if missing) the database at `path` and loads the pinned tips. */
  static async open(path: string, opts: Partial<LedgerStoreOpts> = {}): Promise<LedgerStore> {
    const db = new Level<Bytes, Bytes>(path, { keyEncoding: 'view', valueEncoding: 'view' });
    try {
      await db.open();
    } catch (err) {
      const e = err as Error & { cause?: Error };
      const why = e.cause ? `${e.message} (${e.cause.message})` : e.message;
      throw new StoreError('OPEN_FAILED', `cannot open LevelDB at ${path}: ${why}`, { path }, err);
    }
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
    const db = this.db as unknown as {
      compactRange?: (start: Bytes, end: Bytes) => Promise<void>;
    };
    if (typeof db.compactRange !== 'function') return false;
    await db.compactRange(Uint8Array.of(0), new Uint8Array(16).fill(0xff));
    return true;
  }

  /** LevelDB's estimate of each sublevel's bytes on disk; null when the backend cannot tell. */
  async approximateSizes(): Promise<Record<SpaceKind, number> | null> {
    const db = this.db as unknown as {
      approximateSize?: (start: Bytes, end: Bytes) => Promise<number>;
    };
    if (typeof db.approximateSize !== 'function') return null;
    const enc = new TextEncoder();
    const kinds = Object.keys(SPACES) as SpaceKind[];
    const sizes = await Promise.all(
      kinds.map((kind) =>
        db.approximateSize!(enc.encode(`!${SPACES[kind]}!`), enc.encode(`!${SPACES[kind]}"`)),
      ),
    );
    return Object.fromEntries(kinds.map((kind, n) => [kind, sizes[n]!])) as Record<
      SpaceKind,
      number
    >;
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
          encodeStoredMicroblock(newMicroblocks[j]!),
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
      const proofIndex = buildProofIndex(encoded, txs, hashes, commitment);
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
        this.put(ops, 'microblock', storeKeys.microblock(mb.header), encodeStoredMicroblock(mb));
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
    const height = await this.read('keyblockHash', key, {}, (p) =>
      decode(p, 'height', (r) => r.varint('height')),
    );
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
    const ref = await this.read('idHash', key, {}, (p) => decode(p, 'block ref', readRef));
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
    const { commitment, chunkRoots, spans } = aid;
    if (commitment.height !== height) {
      throw corrupt('batchProof', proofKey, `holds the index of batch ${commitment.height}`);
    }
    if (index >= commitment.txCount) {
      throw corrupt('tx', key, `points to tx ${index} of batch ${height}, which has fewer`);
    }
    const from = index - (index % PROOF_CHUNK);
    const raw = spans.slice(from, from + PROOF_CHUNK).map((span) => {
      if (span.start + span.length > encoded.length) {
        throw corrupt('batchProof', proofKey, 'has a tx span outside the batch');
      }
      return encoded.subarray(span.start, span.start + span.length);
    });
    const hashes = raw.map((bytes) => ledgerHash('tx', bytes));
    if (!equalBytes(hashes[index - from]!, hash)) {
      throw corrupt('tx', key, `points to tx ${index} of batch ${height}, which is another tx`);
    }
    const joined = chunkedProof(hashes.map(merkleLeafHash), chunkRoots, index, commitment.txCount);
    if (
      !equalBytes(joined.chunkRoot, chunkRoots[from / PROOF_CHUNK]!) ||
      !equalBytes(joined.root, commitment.txRoot)
    ) {
      throw corrupt('batchProof', proofKey, 'does not rebuild the batch tx root');
    }
    const tx = decodeAs('batch', batchKey, raw[index - from]!, decodeTx);
    if (tx.type === 'register') throw corrupt('batch', batchKey, 'holds a register tx');
    return { tx, height, index, inclusion: { commitment, proof: joined.proof }, certificate };
  }

  /**
   * Prefetches, from one LevelDB snapshot and in parallel, everything validateBatch can ask about
   * `batch` (see the file comment), and returns it as synchronous ports:
   *   validateBatch(batch, { genesis, members, ...(await store.loadBatchContext(batch)) })
   */
  async loadBatchContext(batch: TxBatch): Promise<BatchSnapshot> {
    const refs = new Map<string, BlockRef>();
    const hashes = new Set<string>();
    const targets = new Map<string, Bytes>();
    for (const bundle of batch.bundles) {
      for (const tx of bundle.txs) {
        refs.set(refKey(tx.block), tx.block);
        hashes.add(toHex(txHash(tx)));
        if (tx.type === 'label') {
          targets.set(
            labelKey(toHex(tx.target), tx.block, tx.institution),
            storeKeys.record(tx.block, tx.institution, tx.target),
          );
        }
      }
    }
    const snapshot = this.db.snapshot();
    try {
      const refList = [...refs.values()];
      const hashList = [...hashes];
      const [tip, blocks, pinned, records] = await Promise.all([
        this.readTip({ snapshot }),
        Promise.all(refList.map((ref) => this.getMicroblock(ref, { snapshot }))),
        this.spaces.tx.hasMany(
          hashList.map((h) => fromHex(h)),
          { snapshot },
        ),
        this.spaces.record.hasMany([...targets.values()], { snapshot }),
      ]);
      const blockBy = new Map(refList.map((ref, k) => [refKey(ref), blocks[k]]));
      const pinnedBy = new Map(hashList.map((h, k) => [h, pinned[k]!]));
      const recordBy = new Map([...targets.keys()].map((k, n) => [k, records[n]!]));
      const known = <T>(map: Map<string, T>, key: string, what: string): T => {
        if (!map.has(key)) {
          throw new StoreError(
            'NOT_PREFETCHED',
            `${what} ${key} was not prefetched for batch ${batch.height}`,
          );
        }
        return map.get(key) as T;
      };
      return {
        height: (tip.batch?.height ?? 0) + 1,
        prevHash: tip.batch?.hash ?? ZERO_HASH,
        pinnedKeyblockHeight: tip.keyblock?.height ?? 0,
        microblocks: { get: (ref) => known(blockBy, refKey(ref), 'patient block') },
        isPinnedTx: (h) => known(pinnedBy, h, 'tx'),
        isRecordOf: (t, ref, inst) => known(recordBy, labelKey(t, ref, inst), 'label target'),
      };
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
      this.read('meta', storeKeys.meta(which), opts, (p) =>
        decode(p, 'tip', (r) => ({
          height: r.varint('height'),
          hash: r.fixed(HASH_BYTES, 'hash'),
        })),
      );
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

function labelKey(targetHex: string, ref: BlockRef, institution: InstitutionIndex): string {
  return `${targetHex}|${refKey(ref)}|${institution}`;
}

function decodeMicroblockAt(key: Bytes, ref: BlockRef, payload: Bytes): Microblock {
  const mb = decodeStoredMicroblock(payload);
  if (!refsMatch(mb.header, ref)) {
    throw corrupt('microblock', key, `holds patient block ${refKey(mb.header)}`);
  }
  return mb;
}

function checkCertificate(cert: Certificate, kind: Certificate['kind'], height: number): void {
  if (cert.kind !== kind || cert.height !== height) {
    throw new StoreError(
      'INVALID_ARGUMENT',
      `the certificate is for ${cert.kind} ${cert.height}, not ${kind} ${height}`,
    );
  }
}

function checkNewMicroblocks(kb: Keyblock, blocks: readonly Microblock[]): void {
  if (blocks.length !== kb.registers.length) {
    throw new StoreError(
      'INVALID_ARGUMENT',
      `keyblock ${kb.height} has ${kb.registers.length} register txs but ${blocks.length} new microblocks`,
    );
  }
  kb.registers.forEach((tx, j) => {
    const h = blocks[j]!.header;
    if (
      h.i !== kb.height ||
      h.j !== j ||
      h.home !== tx.home ||
      !equalBytes(h.idHash, tx.idHash) ||
      !equalBytes(h.rootDigest, tx.rootDigest)
    ) {
      throw new StoreError(
        'INVALID_ARGUMENT',
        `microblock ${j} is not the block of register tx ${kb.height}/${j}`,
      );
    }
  });
}

function checkChangedMicroblocks(
  height: number,
  txs: readonly BatchTx[],
  changed: Iterable<Microblock>,
  keyblockHeight: number,
): Microblock[] {
  const addressed = new Set(txs.map((tx) => refKey(tx.block)));
  const blocks = [...changed];
  const given = new Set(blocks.map((mb) => refKey(mb.header)));
  for (const key of addressed) {
    if (!given.has(key)) {
      throw new StoreError('INVALID_ARGUMENT', `batch ${height} changes ${key}, not given`);
    }
  }
  for (const mb of blocks) {
    const key = refKey(mb.header);
    if (!addressed.has(key) || mb.header.i > keyblockHeight) {
      throw new StoreError(
        'INVALID_ARGUMENT',
        `microblock ${key} is not changed by batch ${height} or not yet pinned`,
      );
    }
  }
  if (given.size !== blocks.length) {
    throw new StoreError('INVALID_ARGUMENT', `batch ${height}: a microblock is given twice`);
  }
  return blocks;
}
