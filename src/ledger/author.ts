/**
 * Making valid txs: what an institution (and, for signatures, the patient) does to register a
 * patient, append a record or a correction, and add another institution's leaf. Pure: keys and
 * randomness are passed in; the trapdoors never leave the institution that owns them.
 */
import {
  type ChameleonOpening,
  chameleonCollision,
  chameleonCollisionWithKey,
  chameleonHash,
} from '../crypto/chameleon.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { systemRandom } from '../crypto/random.ts';
import {
  initialRunning,
  leafContext,
  leafSetRoot,
  type Microblock,
  nextRunning,
  rootContext,
} from './microblock.ts';
import { signGrant, signRegister } from './tx.ts';
import type {
  Bytes,
  InstitutionIndex,
  LabelTx,
  LeafTx,
  MedicalTx,
  RecordTx,
  RegisterTx,
} from './types.ts';

export interface InstitutionSecrets {
  readonly index: InstitutionIndex;
  readonly chameleonKey: Bytes;
  readonly chameleonTrapdoor: Bytes;
}

export interface PatientKeys {
  readonly preKey: Bytes;
  readonly signingKey: Bytes;
  readonly signingSecret: Bytes;
}

/** A new leaf's digest: anyone can make it from the institution's public hash key. */
function freshLeafDigest(
  institution: { index: InstitutionIndex; chameleonKey: Bytes },
  idHash: Bytes,
  random: RandomBytes,
): Bytes {
  const { index, chameleonKey } = institution;
  return chameleonHash(
    chameleonKey,
    leafContext(idHash, index),
    initialRunning(idHash, index),
    random,
  ).digest;
}

/**
 * The home institution prepares the register tx (leaf and root digests, root opening); the
 * patient's signature makes it valid and grants the home institution uploads.
 */
export function makeRegisterTx(opts: {
  chainId: string;
  idHash: Bytes;
  /** Only public keys: the patient's own device can make the tx from the genesis file. */
  home: Pick<InstitutionSecrets, 'index' | 'chameleonKey'>;
  patient: PatientKeys;
  fee: number;
  random?: RandomBytes;
}): RegisterTx {
  const random = opts.random ?? systemRandom;
  const { idHash, home } = opts;
  const homeLeafDigest = freshLeafDigest(home, idHash, random);
  const leaves = [{ institution: home.index, digest: homeLeafDigest }];
  const root = chameleonHash(home.chameleonKey, rootContext(idHash), leafSetRoot(leaves), random);
  return signRegister(
    opts.chainId,
    {
      type: 'register',
      idHash,
      patientPreKey: opts.patient.preKey,
      patientSigningKey: opts.patient.signingKey,
      home: home.index,
      homeLeafDigest,
      rootDigest: root.digest,
      rootOpening: root.opening,
      fee: opts.fee,
    },
    opts.patient.signingSecret,
    random,
  );
}

type RecordFields =
  | { type: 'medical'; pointer: Bytes }
  | { type: 'label'; pointer: Bytes; target: Bytes };

/**
 * Appends a record (or a correction) to the institution's leaf of a patient's block: the next seq,
 * and the trapdoor's collision that opens the leaf digest to the new running hash.
 */
export function makeRecordTx(
  block: Microblock,
  institution: InstitutionSecrets,
  fields: RecordFields,
  fee: number,
  random: RandomBytes = systemRandom,
): MedicalTx | LabelTx {
  return recordTx(block, institution, fields, fee, (ctx, digest, message) =>
    chameleonCollision(institution.chameleonTrapdoor, ctx, digest, message, random),
  );
}

/**
 * makeRecordTx with the collision made against the institution's hash key as given
 * (chameleonCollisionWithKey: one base-point multiplication less, for ingest's hot path). Secrets
 * whose hash key is not the trapdoor's make it throw (CryptoError CHAMELEON_INVALID).
 */
export function makeRecordTxWithKey(
  block: Microblock,
  institution: InstitutionSecrets,
  fields: RecordFields,
  fee: number,
  random: RandomBytes = systemRandom,
): MedicalTx | LabelTx {
  return recordTx(block, institution, fields, fee, (ctx, digest, message) =>
    chameleonCollisionWithKey(
      institution.chameleonTrapdoor,
      institution.chameleonKey,
      ctx,
      digest,
      message,
      random,
    ),
  );
}

function recordTx(
  block: Microblock,
  institution: InstitutionSecrets,
  fields: RecordFields,
  fee: number,
  collide: (ctx: Bytes, digest: Bytes, message: Bytes) => ChameleonOpening,
): MedicalTx | LabelTx {
  const leaf = block.leaves.find((l) => l.institution === institution.index);
  if (!leaf) throw new Error(`institution ${institution.index} has no leaf for this patient`);
  const base = {
    block: { i: block.header.i, j: block.header.j },
    institution: institution.index,
    seq: leaf.seq + 1,
    fee,
  };
  // The opening is not part of the running hash, so a placeholder suffices to compute it.
  const draft =
    fields.type === 'medical'
      ? { ...base, type: 'medical' as const, pointer: fields.pointer, opening: PLACEHOLDER }
      : {
          ...base,
          type: 'label' as const,
          pointer: fields.pointer,
          target: fields.target,
          opening: PLACEHOLDER,
        };
  const opening = collide(
    leafContext(block.header.idHash, institution.index),
    leaf.digest,
    nextRunning(leaf.running, draft),
  );
  return { ...draft, opening };
}

const PLACEHOLDER = { r: new Uint8Array(32), s: new Uint8Array(32) };

/**
 * The patient block as it is once `tx` is appended to its writer's leaf (seq and running hash),
 * without checking the opening: for an author that continues from its own signed txs before they
 * are pinned. Validators use appendRecord, which checks everything.
 */
export function advanceLeaf(block: Microblock, tx: RecordTx): Microblock {
  const leaves = block.leaves.map((l) =>
    l.institution === tx.institution
      ? { ...l, seq: tx.seq, running: nextRunning(l.running, tx) }
      : l,
  );
  return { ...block, leaves };
}

/**
 * Adds `newcomer`'s leaf: the newcomer supplies its leaf digest, the patient the grant, and the home
 * institution the root opening for the new leaf set. The grant is either signed here with the
 * patient's secret (tests, the CLI on the patient's machine) or given as the signature the patient
 * made on their own device (signGrant over grantMessage): the secret never has to leave them. A
 * wrong grant is not checked here; the ledger rejects the tx (addLeaf, BAD_SIGNATURE).
 */
export function makeLeafTx(
  opts: {
    chainId: string;
    block: Microblock;
    home: InstitutionSecrets;
    newcomer: { index: InstitutionIndex; chameleonKey: Bytes };
    fee: number;
    random?: RandomBytes;
  } & ({ patientSigningSecret: Bytes } | { grant: Bytes }),
): LeafTx {
  const random = opts.random ?? systemRandom;
  const { block, newcomer } = opts;
  const idHash = block.header.idHash;
  const leafDigest = freshLeafDigest(newcomer, idHash, random);
  const leaves = [
    ...block.leaves.map((l) => ({ institution: l.institution, digest: l.digest })),
    { institution: newcomer.index, digest: leafDigest },
  ];
  const rootOpening = chameleonCollision(
    opts.home.chameleonTrapdoor,
    rootContext(idHash),
    block.header.rootDigest,
    leafSetRoot(leaves),
    random,
  );
  const grant =
    'grant' in opts
      ? opts.grant
      : signGrant(opts.chainId, idHash, newcomer.index, opts.patientSigningSecret, random);
  return {
    type: 'leaf',
    block: { i: block.header.i, j: block.header.j },
    institution: newcomer.index,
    leafDigest,
    grant,
    rootOpening,
    fee: opts.fee,
  };
}
