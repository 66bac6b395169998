/**
 * The sidecar database's entries and their canonical encodings (the ledger codec: varints,
 * fixed and length-prefixed bytes). Layout, one sublevel per kind:
 *
 *   pi  identifierKey(system, value)         -> idHash                         (patients.ts)
 *   rs  resourceKey(type, id)                -> ResourceEntry: the patient and every version
 *   pr  idHash || resourceKey(type, id)      -> (empty): a patient's records, by prefix scan
 *   au  idHash                               -> AuthorState: this institution's leaf as of its
 *                                               last signed tx for the patient
 *   ot  be48(n)                              -> OwnTx: a signed tx not known pinned, in signing
 *                                               order (the outbox while state is 'new')
 *   oh  txHash                               -> varint n (the ot key of that tx)
 *   vt  SHA-256(ciphertext)                  -> the vault (src/store/vault.ts)
 *   gr  idHash || u16be(grantee) || H(id)    -> encodeGrant: a patient's grant held here
 *                                               (share-grants.ts; H(id) = SHA-256 of Consent.id)
 *   gx  idHash || H(id)                      -> (Consent.id, grantees): a revoked Consent, for good
 *   sc  idHash || u16be(holder) || u32be(seq) -> encodeShareItem: a record another institution
 *                                               shared with this one, verified (share-receiver.ts)
 *
 * Every value is sealed (values.ts sealIn) under its sublevel's name and key.
 */

import { concatBytes } from '../crypto/bytes.ts';
import { sha256 } from '../crypto/sha256.ts';
import { decode, encode, type Reader } from '../ledger/codec.ts';
import { HASH_BYTES } from '../ledger/hash.ts';
import type { BlockRef, Bytes } from '../ledger/types.ts';

export const SIDECAR_SPACES = {
  identifier: 'pi',
  resource: 'rs',
  patientRecord: 'pr',
  author: 'au',
  tx: 'ot',
  txByHash: 'oh',
  grant: 'gr',
  revocation: 'gx',
  sharedRecord: 'sc',
} as const;

export type SidecarSpace = keyof typeof SIDECAR_SPACES;

/** Bounds (FHIR ids are at most 64 characters, resource type names are short). */
export const MAX_TYPE_LENGTH = 64;
export const MAX_ID_LENGTH = 64;
export const MAX_VERSION_LENGTH = 64;
const MAX_VERSIONS = 1 << 20;
const MAX_TX_BYTES = 4096;

// ---------------------------------------------------------------------------------------------
// Keys

/** The key of a patient identifier: a hash of its normalised system and value. */
export function identifierKey(system: string, value: string): Bytes {
  return sha256(encode((w) => w.string('spchain/sidecar/identifier').string(system).string(value)));
}

/** (type, id) as length-prefixed strings: unique, and no key is a prefix of another. */
export function resourceKey(resourceType: string, id: string): Bytes {
  return encode((w) => w.string(resourceType).string(id));
}

export function decodeResourceKey(bytes: Bytes): { resourceType: string; id: string } {
  return decode(bytes, 'resource key', (r) => ({
    resourceType: r.string('resourceType', MAX_TYPE_LENGTH * 4),
    id: r.string('id', MAX_ID_LENGTH * 4),
  }));
}

export function patientRecordKey(idHash: Bytes, resource: Bytes): Bytes {
  return concatBytes(idHash, resource);
}

// ---------------------------------------------------------------------------------------------
// Values

export type RecordKind = 'medical' | 'label';

/** One stored version of a resource: its tx, its ciphertext's pointer and its content hash. */
export interface VersionEntry {
  readonly version: string;
  readonly kind: RecordKind;
  readonly txHash: Bytes;
  readonly pointer: Bytes;
  /** SHA-256 of the resource's canonical JSON (canonical.ts): what "identical" means. */
  readonly contentHash: Bytes;
  /** For a label: the medical tx it corrects. */
  readonly target: Bytes | null;
}

/** A resource this institution holds: whose it is and its versions, oldest first. */
export interface ResourceEntry {
  readonly idHash: Bytes;
  readonly versions: readonly VersionEntry[];
}

export function encodeResourceEntry(e: ResourceEntry): Bytes {
  return encode((w) =>
    w.fixed(e.idHash, HASH_BYTES, 'idHash').list(e.versions, (vw, v) => {
      vw.string(v.version)
        .u8(v.kind === 'medical' ? 0 : 1)
        .fixed(v.txHash, HASH_BYTES, 'txHash')
        .fixed(v.pointer, HASH_BYTES, 'pointer')
        .fixed(v.contentHash, HASH_BYTES, 'contentHash');
      if (v.kind === 'label') vw.fixed(v.target!, HASH_BYTES, 'target');
    }),
  );
}

function readVersion(r: Reader): VersionEntry {
  const version = r.string('version', MAX_VERSION_LENGTH * 4);
  const tag = r.u8('kind');
  if (tag > 1) r.fail('kind', `is ${tag}, not 0 (medical) or 1 (label)`);
  const kind: RecordKind = tag === 0 ? 'medical' : 'label';
  const txHash = r.fixed(HASH_BYTES, 'txHash');
  const pointer = r.fixed(HASH_BYTES, 'pointer');
  const contentHash = r.fixed(HASH_BYTES, 'contentHash');
  const target = kind === 'label' ? r.fixed(HASH_BYTES, 'target') : null;
  return { version, kind, txHash, pointer, contentHash, target };
}

export function decodeResourceEntry(bytes: Bytes): ResourceEntry {
  return decode(bytes, 'resource entry', (r) => ({
    idHash: r.fixed(HASH_BYTES, 'idHash'),
    versions: r.list('versions', MAX_VERSIONS, readVersion),
  }));
}

/** This institution's leaf of one patient block as of its last signed tx (pinned or not). */
export interface AuthorState {
  readonly ref: BlockRef;
  readonly seq: number;
  readonly running: Bytes;
}

export function encodeAuthorState(s: AuthorState): Bytes {
  return encode((w) =>
    w.varint(s.ref.i).varint(s.ref.j).varint(s.seq).fixed(s.running, HASH_BYTES, 'running'),
  );
}

export function decodeAuthorState(bytes: Bytes): AuthorState {
  return decode(bytes, 'author state', (r) => ({
    ref: { i: r.varint('i'), j: r.varint('j') },
    seq: r.varint('seq'),
    running: r.fixed(HASH_BYTES, 'running'),
  }));
}

/**
 * Where a signed tx is on its way to the chain: 'new' (durable, not yet handed to the queue: the
 * outbox), 'handed' (the queue has it), 'submitted' (the node's mempool took it). Pinned txs leave
 * this table; the ledger store's tx index says where they are.
 */
export type OwnTxState = 'new' | 'handed' | 'submitted';
const STATE_TAGS: readonly OwnTxState[] = ['new', 'handed', 'submitted'];

export interface OwnTx {
  readonly state: OwnTxState;
  readonly hash: Bytes;
  /** encodeTx of the tx. */
  readonly tx: Bytes;
}

export function encodeOwnTx(t: OwnTx): Bytes {
  return encode((w) =>
    w.u8(STATE_TAGS.indexOf(t.state)).fixed(t.hash, HASH_BYTES, 'hash').bytes(t.tx),
  );
}

export function decodeOwnTx(bytes: Bytes): OwnTx {
  return decode(bytes, 'own tx', (r) => {
    const tag = r.u8('state');
    const state = STATE_TAGS[tag] ?? r.fail('state', `is ${tag}, not 0, 1 or 2`);
    return { state, hash: r.fixed(HASH_BYTES, 'hash'), tx: r.bytes('tx', MAX_TX_BYTES) };
  });
}

export const encodeCounter = (n: number): Bytes => encode((w) => w.varint(n));
export const decodeCounter = (bytes: Bytes): number =>
  decode(bytes, 'counter', (r) => r.varint('counter'));
