/**
 * The ledger's data types (paper section 5.1, Table 3; DESIGN section 4).
 *
 * Institutions are referred to by their index in the member registry (the genesis file, extended by
 * membership changes), which keeps every transaction small: the ledger's storage goal is a third of
 * the paper's 476 bytes per record, certificates included.
 */
import type { ChameleonOpening } from '../crypto/chameleon.ts';
import type { LedgerErrorCode } from './errors.ts';

export type Bytes = Uint8Array;

/** Index of an institution in the member registry. */
export type InstitutionIndex = number;

export interface Member {
  readonly index: InstitutionIndex;
  readonly name: string;
  /** secp256k1 ECDSA key (33 bytes) for txs, bundles, keyblocks and votes. */
  readonly signingKey: Bytes;
  /** Chameleon-hash public key hk = x·G (33 bytes); the trapdoor never leaves the institution. */
  readonly chameleonKey: Bytes;
  /** Umbral public key (33 bytes) that re-encrypted records for this institution are made for. */
  readonly preKey: Bytes;
}

export interface ChainParams {
  /** Keyblock interval the difficulty is retargeted toward (seconds in tests, minutes in production). */
  readonly keyblockIntervalMs: number;
  /** Initial PoW target: a keyblock's PoW hash, read as a 256-bit integer, must be below it. */
  readonly initialTarget: bigint;
  /** Keyblocks per difficulty retarget window. */
  readonly retargetWindow: number;
  /** Reputation chunk size c (keyblocks); the consensus group is recomputed at chunk boundaries. */
  readonly chunkSize: number;
  /** Consensus group size n (top-n institutions by reputation). */
  readonly groupSize: number;
  /** Algorithm 1 parameters (paper: a = 5000, λ = 20000). */
  readonly reputationA: number;
  readonly reputationLambda: number;
  /** Minimum fee per tx, in fee units. */
  readonly minFee: number;
  /** Reward credited to a keyblock's miner, and to the proposer of each pinned tx batch. */
  readonly keyblockReward: number;
  readonly batchReward: number;
  /** Most txs in one pinned batch. */
  readonly maxBatchTxs: number;
}

export interface Genesis {
  readonly chainId: string;
  /** Network-wide key of the idHash (32 bytes): outsiders cannot run a dictionary over it. */
  readonly idHashKey: Bytes;
  /** Milliseconds since the epoch. */
  readonly time: number;
  readonly members: readonly Member[];
  readonly params: ChainParams;
  /**
   * Fee units each member starts with (members not listed start at 0). When given, genesisHash
   * covers them, so keyblock 1 (and every certificate after it) binds the opening balances.
   */
  readonly credits?: ReadonlyMap<InstitutionIndex, number>;
}

/** A patient block's address: the j-th register tx of keyblock i (paper: O(1) retrieval). */
export interface BlockRef {
  readonly i: number;
  readonly j: number;
}

/**
 * TR: registers a patient and creates their microblock. Signed by the patient, which also grants
 * the home institution the standing right to upload records for them (the upload grant).
 */
export interface RegisterTx {
  readonly type: 'register';
  /** Slow keyed hash of (national identifier, birth date): same patient, same idHash everywhere. */
  readonly idHash: Bytes;
  /** The patient's Umbral public key (records are encrypted to it). */
  readonly patientPreKey: Bytes;
  /** The patient's signing key (grants, consents). */
  readonly patientSigningKey: Bytes;
  readonly home: InstitutionIndex;
  /** The home institution's leaf digest, and the root chameleon digest over the leaf set. */
  readonly homeLeafDigest: Bytes;
  readonly rootDigest: Bytes;
  /** Opens rootDigest to the Merkle root of the initial leaf set {home}. */
  readonly rootOpening: ChameleonOpening;
  readonly fee: number;
  /** The patient's signature over everything above. */
  readonly signature: Bytes;
}

/**
 * TM: one encrypted record appended to the writing institution's leaf of a patient's microblock.
 * `opening` opens the leaf's chameleon digest to the leaf's new running hash (which includes this
 * tx), so the microblock's hash never changes. The institution's signature is on the bundle that
 * carries the tx (one signature per bundle, not per tx).
 */
export interface MedicalTx {
  readonly type: 'medical';
  readonly block: BlockRef;
  readonly institution: InstitutionIndex;
  /** 1, 2, 3, ... per (patient, institution): a gap or a repeat is rejected. */
  readonly seq: number;
  /** SHA-256 of the record's ciphertext: its address in the holder's vault. */
  readonly pointer: Bytes;
  readonly opening: ChameleonOpening;
  readonly fee: number;
}

/** TL: corrects the record of an earlier TM (`target`) of the same institution and patient. */
export interface LabelTx {
  readonly type: 'label';
  readonly block: BlockRef;
  readonly institution: InstitutionIndex;
  readonly seq: number;
  /** Hash of the TM being corrected. */
  readonly target: Bytes;
  /** SHA-256 of the corrected record's ciphertext. */
  readonly pointer: Bytes;
  readonly opening: ChameleonOpening;
  readonly fee: number;
}

/**
 * Adds an institution's leaf to a patient's microblock. The patient authorises it (grant
 * signature); the home institution opens the root digest to the new leaf set (root opening).
 */
export interface LeafTx {
  readonly type: 'leaf';
  readonly block: BlockRef;
  /** The institution being added. */
  readonly institution: InstitutionIndex;
  readonly leafDigest: Bytes;
  /** The patient's signature granting `institution` the right to upload for them. */
  readonly grant: Bytes;
  readonly rootOpening: ChameleonOpening;
  readonly fee: number;
}

export type RecordTx = MedicalTx | LabelTx;
/** Txs that travel in pinned batches (register txs travel in keyblocks). */
export type BatchTx = MedicalTx | LabelTx | LeafTx;
export type Tx = RegisterTx | BatchTx;

/** An institution's signed bundle of batch txs: one signature over the Merkle root of their hashes. */
export interface Bundle {
  readonly institution: InstitutionIndex;
  readonly txs: readonly BatchTx[];
  readonly signature: Bytes;
}

export interface Keyblock {
  readonly height: number;
  /** G(KB_{i-1}). */
  readonly prev: Bytes;
  /** G(last microblock of round i-2): the hash of the last patient block created at height <= i-2. */
  readonly i2Link: Bytes;
  /** Merkle root of the register txs' hashes, then the admit txs' (membership.ts). */
  readonly txRoot: Bytes;
  readonly registers: readonly RegisterTx[];
  /** Institutions admitted by this keyblock (membership.ts); usually none. */
  readonly admits: readonly AdmitTx[];
  readonly miner: InstitutionIndex;
  readonly time: number;
  readonly target: bigint;
  readonly nonce: number;
  /** The miner's signature over the header (the PoW binds the miner's key, this binds the content). */
  readonly signature: Bytes;
}

/** Where a member's node is reached: its libp2p identity, bound by its chain key (p2p/binding.ts). */
export interface PeerRecord {
  /** Canonical peer id string (base58btc). */
  readonly peerId: string;
  readonly multiaddr: string;
  /** The member's signature binding the peer id to its index. */
  readonly binding: Bytes;
}

/** An existing member's signature approving an admit tx. */
export interface Approval {
  readonly member: InstitutionIndex;
  readonly signature: Bytes;
}

/** Admits a new institution (membership.ts); carried in a keyblock. */
export interface AdmitTx {
  readonly type: 'admit';
  readonly member: Member;
  readonly peer: PeerRecord;
  /** The new member's own signature over the request. */
  readonly proof: Bytes;
  /** Sorted by member, more than 2/3 of the members before the keyblock. */
  readonly approvals: readonly Approval[];
}

/** One member's vote signature in a certificate. */
export interface CertificateSignature {
  readonly member: InstitutionIndex;
  readonly signature: Bytes;
}

/** What a consensus instance decides: the next keyblock, or the next tx batch. */
export type ConsensusKind = 'keyblock' | 'batch';
export type VoteType = 'prevote' | 'precommit';

/**
 * A pinning certificate: signatures of more than 2/3 of the consensus group's members that also
 * hold more than 2/3 of the group's reputation, each over the same (kind, height, round, value).
 * One signature per member per batch root, never one per tx.
 */
export interface Certificate {
  readonly kind: ConsensusKind;
  readonly height: number;
  readonly round: number;
  readonly value: Bytes;
  readonly signatures: readonly CertificateSignature[];
}

/**
 * Tendermint's PROPOSAL (bft-messages.ts): the value bytes and the proposer's validRound, signed
 * over id(v) (the batch commitment hash for batches, the keyblock hash for keyblocks).
 */
export interface Proposal {
  readonly type: 'proposal';
  readonly kind: ConsensusKind;
  readonly height: number;
  readonly round: number;
  /** The proposer's validRound: -1, or the earlier round in which the value had 2f + 1 prevotes. */
  readonly validRound: number;
  readonly value: Bytes;
  readonly member: InstitutionIndex;
  readonly signature: Bytes;
}

/** Tendermint's PREVOTE and PRECOMMIT: the 32-byte id(v), or nil. */
export interface Vote {
  readonly type: VoteType;
  readonly kind: ConsensusKind;
  readonly height: number;
  readonly round: number;
  /** id(v), or null for nil. */
  readonly value: Bytes | null;
  readonly member: InstitutionIndex;
  readonly signature: Bytes;
}

export type BftMessage = Proposal | Vote;

/**
 * Two signed consensus messages of one member that conflict: same kind, height, round and type,
 * different content (two votes for different values, or two proposals of different values).
 */
export interface EquivocationEvidence {
  readonly type: 'equivocation';
  readonly kind: ConsensusKind;
  readonly first: BftMessage;
  readonly second: BftMessage;
}

/**
 * A correctly signed bundle whose tx `index` breaks a rule only the signer can break (evidence.ts,
 * BLAMABLE_REASONS): a fee below the minimum, another institution's tx, or a chameleon opening
 * that does not open the signer's own leaf although the tx is next in line for it.
 */
export interface BundleEvidence {
  readonly type: 'bundle';
  readonly bundle: Bundle;
  readonly index: number;
  readonly reason: LedgerErrorCode;
}

/** Proof that one institution misbehaved; pinned in a batch, it sets the institution's H to 0. */
export type Evidence = EquivocationEvidence | BundleEvidence;

/**
 * A pinned batch of txs: bundles in proposal order, anchored to a keyblock, and the misbehaviour
 * evidence it pins (at most one item per institution, never against one already named by pinned
 * evidence).
 */
export interface TxBatch {
  readonly height: number;
  readonly prev: Bytes;
  readonly keyblockHeight: number;
  readonly proposer: InstitutionIndex;
  readonly bundles: readonly Bundle[];
  readonly evidence: readonly Evidence[];
}
