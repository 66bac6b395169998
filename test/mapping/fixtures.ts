/** Small FHIR bundles for the mapping and validation tests, and the Synthea bundles on disk. */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import type { Bundle } from '@medplum/fhirtypes';
import { parseMapping } from '../../src/mapping/mapping.ts';

export const SSN = 'http://hl7.org/fhir/sid/us-ssn';
export const MRN = 'http://hospital.example.org/mrn';

export const DEFAULT_MAPPING_JSON = JSON.parse(
  readFileSync(new URL('../../fhir-mappings/default.json', import.meta.url), 'utf8'),
);
export const defaultMapping = parseMapping(DEFAULT_MAPPING_JSON, 'fhir-mappings/default.json');

/** Deterministic ids: `${prefix}-1`, `${prefix}-2`, ... */
export function counterIds(prefix = 'id'): () => string {
  let n = 0;
  return () => `${prefix}-${++n}`;
}

export type Json = Record<string, unknown>;

export function urn(n: number): string {
  return `urn:uuid:00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
}

/** A Patient with an MRN (if given) and an SSN (a default one; none if `ssn` is null). */
export function patient(opts: { ssn?: string | null; mrn?: string; id?: string } = {}): Json {
  const ssn = opts.ssn === undefined ? '999-00-1234' : opts.ssn;
  const identifier = [
    ...(opts.mrn ? [{ system: MRN, value: opts.mrn }] : []),
    ...(ssn === null ? [] : [{ system: SSN, value: ssn }]),
  ];
  return {
    resourceType: 'Patient',
    ...(opts.id ? { id: opts.id } : {}),
    identifier,
    name: [{ family: 'Test', given: ['Pat'] }],
    gender: 'female',
    birthDate: '1980-02-29',
  };
}

export function encounter(subject: string, practitioner?: string): Json {
  return {
    resourceType: 'Encounter',
    status: 'finished',
    class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' },
    subject: { reference: subject },
    ...(practitioner ? { participant: [{ individual: { reference: practitioner } }] } : {}),
    period: { start: '2020-01-01T10:00:00Z', end: '2020-01-01T10:30:00Z' },
  };
}

export function observation(subject: string, enc?: string, status = 'final'): Json {
  return {
    resourceType: 'Observation',
    status,
    code: { coding: [{ system: 'http://loinc.org', code: '8302-2', display: 'Body Height' }] },
    subject: { reference: subject },
    ...(enc ? { encounter: { reference: enc } } : {}),
    effectiveDateTime: '2020-01-01T10:00:00Z',
    valueQuantity: { value: 170.5, unit: 'cm', system: 'http://unitsofmeasure.org', code: 'cm' },
  };
}

export function condition(subject: string, verification = 'confirmed'): Json {
  return {
    resourceType: 'Condition',
    clinicalStatus: {
      coding: [
        { system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' },
      ],
    },
    verificationStatus: {
      coding: [
        {
          system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status',
          code: verification,
        },
      ],
    },
    code: { coding: [{ system: 'http://snomed.info/sct', code: '44054006' }] },
    subject: { reference: subject },
  };
}

export function practitioner(): Json {
  return { resourceType: 'Practitioner', name: [{ family: 'Doc' }] };
}

export function organization(): Json {
  return { resourceType: 'Organization', name: 'General Hospital' };
}

export interface EntryOpts {
  readonly fullUrl?: string;
  readonly method?: string;
  readonly url?: string;
  readonly ifNoneExist?: string;
}

export function entry(resource: Json | undefined, opts: EntryOpts = {}): Json {
  const method = opts.method ?? 'POST';
  const type = resource?.resourceType as string;
  return {
    ...(opts.fullUrl ? { fullUrl: opts.fullUrl } : {}),
    ...(resource ? { resource } : {}),
    request: {
      method,
      url: opts.url ?? type,
      ...(opts.ifNoneExist ? { ifNoneExist: opts.ifNoneExist } : {}),
    },
  };
}

export function bundle(entries: Json[], type = 'transaction'): Json {
  return { resourceType: 'Bundle', type, entry: entries };
}

/** Patient, Practitioner, Encounter, two Observations and a Condition, all by urn:uuid. */
export function clinicalBundle(): Json {
  return bundle([
    entry(patient(), { fullUrl: urn(1) }),
    entry(practitioner(), { fullUrl: urn(2) }),
    entry(encounter(urn(1), urn(2)), { fullUrl: urn(3) }),
    entry(observation(urn(1), urn(3)), { fullUrl: urn(4) }),
    entry(observation(urn(1), urn(3)), { fullUrl: urn(5) }),
    entry(condition(urn(1)), { fullUrl: urn(6) }),
  ]);
}

const SYNTHEA = new URL('../../../shared/data/synthea/', import.meta.url);

/** Every Synthea bundle in ../shared/data/synthea, by file name. */
export function syntheaBundles(): { name: string; bundle: Bundle; text: string }[] {
  if (!existsSync(SYNTHEA)) {
    throw new Error(`the Synthea test bundles are missing: expected them in ${SYNTHEA.pathname}`);
  }
  const files = readdirSync(SYNTHEA).filter((f) => f.endsWith('.json'));
  if (files.length === 0) throw new Error(`no Synthea bundles in ${SYNTHEA.pathname}`);
  return files.map((name) => {
    const text = readFileSync(new URL(name, SYNTHEA), 'utf8');
    return { name, bundle: JSON.parse(text) as Bundle, text };
  });
}
