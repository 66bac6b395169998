/**
 * Which ledger patient a FHIR Patient is. The mapper names each record's patient by the identifier
 * the mapping chose and the Patient's birth date; the ledger knows patients by idHash, a slow keyed
 * hash of exactly those two (src/ledger/idhash.ts). The first time a (identifier, birth date) pair
 * is seen, its idHash is computed (scrypt, about 0.1 s) and must be registered on the pinned ledger;
 * the identifier is then linked to it in the sidecar's patient registry, so every later record
 * resolves in one lookup. Pairs already checked are remembered in memory.
 *
 * Nothing is linked for a patient who is not registered: a mistyped birth date cannot poison the
 * registry. A birth date that disagrees with the one an identifier was linked with is a conflict.
 */
import { createHash } from 'node:crypto';
import { isLedgerError } from '../ledger/errors.ts';
import { computeIdHashAsync, type IdHashCost } from '../ledger/idhash.ts';
import type { Bytes } from '../ledger/types.ts';
import type { PatientRef } from '../mapping/map-bundle.ts';
import type { PatientLedger, PatientRegistry } from '../sidecar/patients.ts';
import { fail } from './outcome.ts';

export interface PatientBindingDeps {
  readonly registry: Pick<PatientRegistry, 'link'>;
  readonly ledger: PatientLedger;
  /** The network's idHash key (genesis). */
  readonly idHashKey: Bytes;
  readonly cost?: IdHashCost;
}

/** Pairs remembered; past this the memory is cleared (the registry still has every link). */
const MAX_REMEMBERED = 100_000;

export const REGISTER_HINT =
  'register the patient at this institution first (npm run cli -- patient register), and post again once the registration is pinned';

export class PatientBinder {
  private readonly deps: PatientBindingDeps;
  private readonly checked = new Map<string, Promise<void>>();

  constructor(deps: PatientBindingDeps) {
    this.deps = deps;
  }

  /**
   * Makes sure records of `patient` resolve to a registered ledger patient, or fails with a 422
   * (not registered, no birth date) or 409 (identifier linked to another patient) naming
   * `expression`.
   */
  bind(patient: PatientRef, expression: string): Promise<void> {
    const { system, value } = patient.identifier;
    const key = createHash('sha256')
      .update(JSON.stringify([system, value, patient.birthDate ?? '']))
      .digest('hex');
    let done = this.checked.get(key);
    if (done === undefined) {
      if (this.checked.size >= MAX_REMEMBERED) this.checked.clear();
      done = this.check(patient, expression);
      this.checked.set(key, done);
      done.catch(() => this.checked.delete(key));
    }
    return done;
  }

  private async check(patient: PatientRef, expression: string): Promise<void> {
    const { identifier, birthDate } = patient;
    if (birthDate === undefined) {
      throw fail(
        422,
        'business-rule',
        `Patient/${patient.id} has no birthDate: the ledger identifies a patient by identifier and birth date`,
        expression,
      );
    }
    let idHash: Bytes;
    try {
      idHash = await computeIdHashAsync(
        this.deps.idHashKey,
        { ...identifier, birthDate },
        this.deps.cost,
      );
    } catch (err) {
      if (!isLedgerError(err)) throw err;
      throw fail(422, 'business-rule', `Patient/${patient.id}: ${err.message}`, expression);
    }
    const block = await this.deps.ledger.getMicroblockByIdHash(idHash);
    if (block === undefined) {
      throw fail(
        422,
        'business-rule',
        `Patient/${patient.id} is not registered on the ledger: ${REGISTER_HINT}`,
        expression,
      );
    }
    await this.deps.registry.link(identifier, idHash);
  }
}
