/**
 * How a receiving institution D names a patient whose records other institutions hold (issue 5
 * part 6). The ledger knows patients only by idHash, a slow keyed hash of a national identifier
 * (system|value) and the birth date; D's clinicians know the identifier and the birth date.
 *
 * - A Patient of D's own (its EHR posted one) is D's name for that person: `Patient/{id}` as
 *   stored here. Its idHash comes from the identifier the mapping prefers (mapping.json
 *   patient.identifierSystems): the patient registry's link (made when records of the patient
 *   were posted here), else computed from that identifier and the Patient's birthDate.
 * - A patient D has no Patient of its own for is a *ledger patient*: `Patient/{idHash}` (the 64
 *   lowercase hex digits of the idHash, a valid FHIR id), served read-only and never stored, with
 *   the identifier `urn:spchain:idhash|{idHash}` and no demographics (those stay with the holders;
 *   only records are shared). `Patient?identifier=system|value&birthdate=YYYY-MM-DD` finds one:
 *   D computes the idHash and looks for the patient's pinned block.
 *
 * Resolution order for `Patient?identifier=...`: D's own Patients with that identifier (birthdate,
 * if given, must match too); else, with a system and a birthdate, the idHash computed from them;
 * without a birthdate, the registry's link for the identifier (a patient D's EHR wrote about). A ledger patient is returned only if registered on the pinned
 * ledger. Resolution for `Patient/{id}`: D's own Patient `id`; else, when `id` is an idHash with a
 * pinned block, that ledger patient; else not found. Nothing is written: looking a patient up
 * leaves no link behind (the registry is for the patients D's EHR writes about).
 */
import { createHash } from 'node:crypto';
import type { Patient, Resource } from '@medplum/fhirtypes';
import { fromHex, toHex } from '../crypto/bytes.ts';
import { isLedgerError } from '../ledger/errors.ts';
import { computeIdHashAsync, type IdHashCost } from '../ledger/idhash.ts';
import type { Microblock } from '../ledger/microblock.ts';
import type { Bytes } from '../ledger/types.ts';
import { chooseIdentifier } from '../mapping/map-bundle.ts';
import type { FhirMapping } from '../mapping/mapping.ts';
import { isSidecarError } from '../sidecar/errors.ts';
import type { PatientIdentifier, PatientLedger, PatientRegistry } from '../sidecar/patients.ts';
import { fail } from './outcome.ts';
import type { ResourceStore } from './resource-store.ts';

export const IDHASH_SYSTEM = 'urn:spchain:idhash';
export const LEDGER_PATIENT_TAG = { system: 'urn:spchain:fhir', code: 'ledger-patient' };

/** A patient as this institution names it. */
export interface FoundPatient {
  /** The Patient id here: D's own id, or the idHash (hex) of a ledger patient. */
  readonly id: string;
  readonly resource: Resource;
  /** True for D's own stored Patient; false for a ledger patient. */
  readonly own: boolean;
  /** Undefined when D's own Patient has no identifier and birth date to derive it from. */
  readonly idHash?: Bytes;
  /** The patient's pinned block, when registered. */
  readonly block?: Microblock;
}

export interface PatientLookupDeps {
  readonly resources: Pick<ResourceStore, 'read' | 'search'>;
  readonly registry: Pick<PatientRegistry, 'idHashOf'>;
  readonly ledger: PatientLedger;
  readonly mapping: Pick<FhirMapping, 'patientIdentifierSystems'>;
  /** The network's idHash key (genesis). */
  readonly idHashKey: Bytes;
  readonly cost?: IdHashCost;
}

export interface PatientQuery {
  /** `system|value`, `|value` (no system) or `value` (any system). */
  readonly identifier?: { readonly system?: string; readonly value: string };
  /** YYYY-MM-DD. */
  readonly birthDate?: string;
  readonly id?: string;
}

const IDHASH_ID = /^[0-9a-f]{64}$/;
const MAX_MEMO = 10_000;

export class PatientLookup {
  private readonly deps: PatientLookupDeps;
  /** (system, value, birth date) digest -> idHash, for the computed ones (scrypt is slow). */
  private readonly memo = new Map<string, Promise<Bytes>>();

  constructor(deps: PatientLookupDeps) {
    this.deps = deps;
  }

  /** `Patient/{id}` here: D's own, or a ledger patient by idHash; undefined when neither. */
  async resolve(id: string): Promise<FoundPatient | undefined> {
    const stored = await this.deps.resources.read('Patient', id);
    if (stored !== undefined) return this.own(stored.resource);
    if (!IDHASH_ID.test(id)) return undefined;
    return this.ledgerPatient(fromHex(id, 'idHash'));
  }

  /** The patients a `Patient?identifier=...&birthdate=...` (or `_id=`) search finds. */
  async search(q: PatientQuery): Promise<FoundPatient[]> {
    if (q.id !== undefined) {
      const found = await this.resolve(q.id);
      return found === undefined || !this.matches(found, q) ? [] : [found];
    }
    const ident = q.identifier;
    if (ident === undefined) {
      throw fail(400, 'required', 'Patient search needs identifier (system|value) or _id');
    }
    const token = ident.system === undefined ? ident.value : `${ident.system}|${ident.value}`;
    const own = await this.deps.resources.search(
      'Patient',
      `identifier=${encodeURIComponent(token)}`,
    );
    const mine = (await Promise.all(own.map((r) => this.own(r)))).filter((p) => this.matches(p, q));
    if (mine.length > 0 || !ident.system) return mine;
    const identifier = { system: ident.system, value: ident.value };
    // With a birth date, the idHash of exactly that (identifier, birth date); without, the
    // patient this institution linked the identifier to.
    const idHash =
      q.birthDate === undefined
        ? await this.linked(identifier)
        : await this.computed(identifier, q.birthDate);
    if (idHash === undefined) return [];
    const found = await this.ledgerPatient(idHash);
    return found === undefined ? [] : [found];
  }

  /** The ledger patient of `idHash`, if registered on the pinned ledger. */
  async ledgerPatient(idHash: Bytes): Promise<FoundPatient | undefined> {
    const block = await this.deps.ledger.getMicroblockByIdHash(idHash);
    if (block === undefined) return undefined;
    const hex = toHex(idHash);
    const resource: Patient = {
      resourceType: 'Patient',
      id: hex,
      meta: { tag: [LEDGER_PATIENT_TAG] },
      identifier: [{ system: IDHASH_SYSTEM, value: hex }],
    };
    return { id: hex, resource, own: false, idHash, block };
  }

  private async own(resource: Resource): Promise<FoundPatient> {
    const json = resource as unknown as Record<string, unknown>;
    const id = String(resource.id);
    const identifier = chooseIdentifier(json, this.deps.mapping.patientIdentifierSystems);
    const birthDate = typeof json.birthDate === 'string' ? json.birthDate : undefined;
    let idHash: Bytes | undefined;
    if (identifier !== undefined) {
      idHash = await this.linked(identifier);
      if (idHash === undefined && birthDate !== undefined) {
        idHash = await this.computed(identifier, birthDate);
      }
    }
    const block =
      idHash === undefined ? undefined : await this.deps.ledger.getMicroblockByIdHash(idHash);
    return {
      id,
      resource,
      own: true,
      ...(idHash === undefined ? {} : { idHash }),
      ...(block === undefined ? {} : { block }),
    };
  }

  private matches(p: FoundPatient, q: PatientQuery): boolean {
    if (q.birthDate === undefined || !p.own) return true;
    return (p.resource as Patient).birthDate === q.birthDate;
  }

  private async linked(identifier: PatientIdentifier): Promise<Bytes | undefined> {
    try {
      return await this.deps.registry.idHashOf(identifier, 'patient');
    } catch (err) {
      if (isSidecarError(err, 'UNKNOWN_PATIENT') || isSidecarError(err, 'INVALID_RECORD')) {
        return undefined;
      }
      throw err;
    }
  }

  private computed(identifier: PatientIdentifier, birthDate: string): Promise<Bytes | undefined> {
    const key = createHash('sha256')
      .update(JSON.stringify([identifier.system, identifier.value, birthDate]))
      .digest('hex');
    let p = this.memo.get(key);
    if (p === undefined) {
      if (this.memo.size >= MAX_MEMO) this.memo.clear();
      p = computeIdHashAsync(this.deps.idHashKey, { ...identifier, birthDate }, this.deps.cost);
      this.memo.set(key, p);
      p.catch(() => this.memo.delete(key));
    }
    return p.catch((err: unknown) => {
      // A malformed identifier or birth date names no patient; the ledger's message says which part.
      if (isLedgerError(err)) return undefined;
      throw err;
    });
  }
}
