/**
 * The patients known to this institution. A FHIR record names its patient by an identifier
 * (system | value); the ledger knows them by idHash, a deliberately slow keyed hash (scrypt, about
 * a tenth of a second) of the national identifier and birth date. So the idHash is computed once,
 * when the patient is added here (registration, through the CLI for now), and kept under the
 * identifier (and any other identifier linked to the patient, e.g. the EHR's MRN); every later
 * lookup is one LevelDB get, or a hit in a small memory cache.
 *
 * The rest comes from the pinned ledger: the patient's block (i, j), PRE and signing keys and its
 * leaves, read from the node's ledger store by idHash. An identifier nobody added is
 * UNKNOWN_PATIENT; a patient added here but not pinned yet is UNREGISTERED_PATIENT.
 */
import { equalBytes, toHex } from '../crypto/bytes.ts';
import { isLedgerError } from '../ledger/errors.ts';
import {
  computeIdHashAsync,
  ID_HASH_COST,
  type IdHashCost,
  normaliseIdentifier,
  type PatientIdentity,
} from '../ledger/idhash.ts';
import type { Microblock } from '../ledger/microblock.ts';
import type { BlockRef, Bytes } from '../ledger/types.ts';
import { identifierKey } from './entries.ts';
import { SidecarError } from './errors.ts';
import type { SidecarStore, WriteOp } from './store.ts';

export interface PatientIdentifier {
  readonly system: string;
  readonly value: string;
}

/** What the registry reads from the pinned ledger (LedgerStore has it). */
export interface PatientLedger {
  getMicroblockByIdHash(idHash: Bytes): Promise<Microblock | undefined>;
}

/** A patient registered on the pinned ledger. */
export interface RegisteredPatient {
  readonly idHash: Bytes;
  readonly ref: BlockRef;
  readonly preKey: Bytes;
  readonly signingKey: Bytes;
  /** The pinned patient block (leaves as pinned). */
  readonly block: Microblock;
}

export interface PatientRegistryOpts {
  /** The network's idHash key (genesis). */
  readonly idHashKey: Bytes;
  readonly cost: IdHashCost;
  /** Identifiers whose idHash is kept in memory (the rest are one LevelDB get away). */
  readonly maxCached: number;
}

const MAX_IDENTIFIER_CHARS = 1024;

/** The identifier's key, checked and normalised; a bad one is INVALID_RECORD naming `where`. */
function keyOf(id: PatientIdentifier, where: string): Bytes {
  const ok =
    typeof id === 'object' &&
    id !== null &&
    typeof id.system === 'string' &&
    typeof id.value === 'string' &&
    id.system.length <= MAX_IDENTIFIER_CHARS &&
    id.value.length <= MAX_IDENTIFIER_CHARS;
  if (!ok) {
    throw new SidecarError(
      'INVALID_RECORD',
      `${where}: patient identifier must be { system, value } strings of at most ${MAX_IDENTIFIER_CHARS} characters`,
    );
  }
  try {
    const n = normaliseIdentifier(id);
    return identifierKey(n.system, n.value);
  } catch (err) {
    if (!isLedgerError(err)) throw err;
    // The ledger's message names the empty part, not its value.
    throw new SidecarError('INVALID_RECORD', `${where}: ${err.message}`);
  }
}

export class PatientRegistry {
  private readonly store: SidecarStore;
  private readonly ledger: PatientLedger;
  private readonly opts: PatientRegistryOpts;
  private readonly cache = new Map<string, Bytes>();

  constructor(
    store: SidecarStore,
    ledger: PatientLedger,
    opts: Pick<PatientRegistryOpts, 'idHashKey'> & Partial<PatientRegistryOpts>,
  ) {
    if (!(opts.idHashKey instanceof Uint8Array) || opts.idHashKey.length !== 32) {
      throw new SidecarError('INVALID_RECORD', 'idHashKey must be 32 bytes');
    }
    this.store = store;
    this.ledger = ledger;
    this.opts = { cost: ID_HASH_COST, maxCached: 100_000, ...opts };
  }

  /**
   * Adds a patient: computes the idHash of (identifier, birth date) once (scrypt, off the event
   * loop's critical path) and keeps it under the identifier. Adding the same identity again is a
   * no-op; the same identifier with another birth date (another idHash) is IDENTIFIER_CONFLICT.
   */
  async add(identity: PatientIdentity): Promise<Bytes> {
    const key = keyOf(identity, 'patient');
    if (typeof identity.birthDate !== 'string') {
      throw new SidecarError('INVALID_RECORD', 'patient: birthDate must be a YYYY-MM-DD string');
    }
    let idHash: Bytes;
    try {
      idHash = await computeIdHashAsync(this.opts.idHashKey, identity, this.opts.cost);
    } catch (err) {
      if (!isLedgerError(err)) throw err;
      throw new SidecarError('INVALID_RECORD', `patient: ${err.message}`);
    }
    await this.bind(key, idHash);
    return idHash;
  }

  /**
   * Links another identifier (e.g. the EHR's MRN) to a patient's idHash, so records naming the
   * patient by it resolve too. Linking it again to the same patient is a no-op.
   */
  async link(identifier: PatientIdentifier, idHash: Bytes): Promise<void> {
    if (!(idHash instanceof Uint8Array) || idHash.length !== 32) {
      throw new SidecarError('INVALID_RECORD', 'link: idHash must be 32 bytes');
    }
    await this.bind(keyOf(identifier, 'link'), idHash);
  }

  private async bind(key: Bytes, idHash: Bytes): Promise<void> {
    const known = await this.store.read('identifier', key, (p) => p);
    if (known !== undefined) {
      if (!equalBytes(known, idHash)) {
        throw new SidecarError(
          'IDENTIFIER_CONFLICT',
          'this identifier is already linked to another patient',
        );
      }
      return;
    }
    const ops: WriteOp[] = [];
    this.store.put(ops, 'identifier', key, idHash);
    await this.store.write(ops);
    this.remember(key, idHash);
  }

  /** The idHash of the patient this identifier names; UNKNOWN_PATIENT when none was added. */
  async idHashOf(identifier: PatientIdentifier, where = 'record'): Promise<Bytes> {
    const key = keyOf(identifier, where);
    const k = toHex(key);
    const cached = this.cache.get(k);
    if (cached !== undefined) return cached;
    const idHash = await this.store.read('identifier', key, (p) => {
      if (p.length !== 32) throw new Error(`holds ${p.length} bytes, not a 32-byte idHash`);
      return p;
    });
    if (idHash === undefined) {
      throw new SidecarError('UNKNOWN_PATIENT', `${where}: no patient with this identifier`);
    }
    this.remember(key, idHash);
    return idHash;
  }

  /** The patient's pinned registration; UNKNOWN_PATIENT or UNREGISTERED_PATIENT otherwise. */
  async resolve(identifier: PatientIdentifier, where = 'record'): Promise<RegisteredPatient> {
    return this.registered(await this.idHashOf(identifier, where), where);
  }

  /** The pinned registration of `idHash`; UNREGISTERED_PATIENT when it is not pinned. */
  async registered(idHash: Bytes, where = 'record'): Promise<RegisteredPatient> {
    const block = await this.ledger.getMicroblockByIdHash(idHash);
    if (block === undefined) {
      throw new SidecarError(
        'UNREGISTERED_PATIENT',
        `${where}: the patient is not registered on the ledger yet`,
      );
    }
    return {
      idHash,
      ref: { i: block.header.i, j: block.header.j },
      preKey: block.patientPreKey,
      signingKey: block.patientSigningKey,
      block,
    };
  }

  private remember(key: Bytes, idHash: Bytes): void {
    if (this.cache.size >= this.opts.maxCached) this.cache.clear();
    this.cache.set(toHex(key), idHash);
  }
}
