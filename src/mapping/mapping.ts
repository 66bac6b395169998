/**
 * A mapping file: how FHIR resources posted by the EHR become SPChain records. It is data
 * (fhir-mappings/*.json, documented in fhir-mappings/README.md) so that an integrator changes
 * behaviour by editing a file, not code. `parseMapping` checks every field and refuses a bad file
 * with a message naming the file and the field (`fhir-mappings/x.json: splitBy must be "resource"
 * or "encounter"`); unknown fields are refused too, so a misspelt key is not silently ignored.
 *
 *   { "version": 1, "name": "...", "description": "...",
 *     "patient": { "identifierSystems": ["http://hl7.org/fhir/sid/us-ssn", ...] },
 *     "splitBy": "resource" | "encounter",
 *     "records": { "Observation": { "patient": "subject", "encounter": "encounter",
 *                  "enteredInError": { "element": "status", "code": "entered-in-error" } }, ... },
 *     "context": { "types": ["Organization", ...], "handling": "alongside" | "drop" },
 *     "ignored": ["Provenance"],
 *     "unmappedTypes": "reject" | "ignore" }
 */
import { MappingError } from './errors.ts';
import { ELEMENT_PATH, isJsonObject } from './paths.ts';

/** The mapping file format this code reads. */
export const MAPPING_VERSION = 1;

export type SplitBy = 'resource' | 'encounter';
export type ContextHandling = 'alongside' | 'drop';
export type UnmappedPolicy = 'reject' | 'ignore';

/** When a resource of a record type says it was entered in error. */
export interface EnteredInErrorRule {
  /** Dotted element path: a `code`, a Coding or a CodeableConcept (`status`, `verificationStatus`). */
  readonly element: string;
  readonly code: string;
  /** For Coding / CodeableConcept elements: the coding's system must be this one, if given. */
  readonly system?: string;
}

export interface RecordTypeMapping {
  /** Dotted path of the Reference to the record's Patient (`subject`, `patient`). */
  readonly patient: string;
  /** Dotted path of the Reference to the record's Encounter, for splitBy "encounter". */
  readonly encounter?: string;
  readonly enteredInError?: EnteredInErrorRule;
}

export interface FhirMapping {
  /** Where the mapping came from (the file path), for messages. */
  readonly source: string;
  readonly version: typeof MAPPING_VERSION;
  readonly name: string;
  /** Identifier systems in order of preference: the first one a Patient has identifies it. */
  readonly patientIdentifierSystems: readonly string[];
  readonly splitBy: SplitBy;
  readonly records: ReadonlyMap<string, RecordTypeMapping>;
  readonly contextTypes: ReadonlySet<string>;
  readonly contextHandling: ContextHandling;
  readonly ignoredTypes: ReadonlySet<string>;
  readonly unmappedTypes: UnmappedPolicy;
}

/** The resource type that is the patient's identity, never a record, context or ignored. */
export const PATIENT_TYPE = 'Patient';

const RESOURCE_TYPE = /^[A-Z][A-Za-z]{1,63}$/;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Reads one mapping file's JSON; every error names `source` and the field. */
export function parseMapping(json: unknown, source: string): FhirMapping {
  const fail = (field: string, problem: string): never => {
    throw new MappingError('BAD_MAPPING', `${source}: ${field} ${problem}`, { source, field });
  };
  const object = (
    value: unknown,
    field: string,
    required: readonly string[],
    optional: readonly string[],
  ): Record<string, unknown> => {
    if (!isJsonObject(value)) return fail(field || 'the file', 'must be a JSON object');
    const at = field === '' ? '' : `${field}.`;
    for (const key of required) if (!(key in value)) fail(`${at}${key}`, 'is missing');
    for (const key of Object.keys(value)) {
      if (!required.includes(key) && !optional.includes(key)) {
        fail(
          `${at}${key}`,
          `is not a known field (known: ${[...required, ...optional].join(', ')})`,
        );
      }
    }
    return value;
  };
  const string = (value: unknown, field: string, pattern?: RegExp, what?: string): string => {
    if (typeof value !== 'string' || value.trim() === '') {
      return fail(field, 'must be a non-empty string');
    }
    if (pattern && !pattern.test(value))
      fail(field, `must be ${what}, got ${JSON.stringify(value)}`);
    return value;
  };
  const oneOf = <T extends string>(value: unknown, field: string, allowed: readonly T[]): T => {
    if (!allowed.includes(value as T)) {
      fail(field, `must be ${allowed.map((a) => `"${a}"`).join(' or ')}`);
    }
    return value as T;
  };
  const typeList = (value: unknown, field: string): string[] => {
    if (!Array.isArray(value)) return fail(field, 'must be a JSON array of resource types');
    const out = value.map((t, i) =>
      string(t, `${field}[${i}]`, RESOURCE_TYPE, 'a FHIR resource type name'),
    );
    out.forEach((t, i) => {
      if (out.indexOf(t) !== i) fail(`${field}[${i}]`, `repeats ${t}`);
    });
    return out;
  };
  const path = (value: unknown, field: string): string =>
    string(value, field, ELEMENT_PATH, 'a dotted element path such as "subject"');

  const root = object(
    json,
    '',
    ['version', 'patient', 'records'],
    ['name', 'description', 'splitBy', 'context', 'ignored', 'unmappedTypes'],
  );
  if (root.version !== MAPPING_VERSION) fail('version', `must be ${MAPPING_VERSION}`);
  const name =
    root.name === undefined ? 'unnamed' : string(root.name, 'name', NAME, 'a short name');
  if (root.description !== undefined) string(root.description, 'description');

  const patient = object(root.patient, 'patient', ['identifierSystems'], []);
  if (!Array.isArray(patient.identifierSystems) || patient.identifierSystems.length === 0) {
    fail('patient.identifierSystems', 'must be a non-empty JSON array of identifier system URIs');
  }
  const systems = (patient.identifierSystems as unknown[]).map((s, i) =>
    string(s, `patient.identifierSystems[${i}]`, /^\S+$/, 'a URI without spaces'),
  );
  systems.forEach((s, i) => {
    if (systems.indexOf(s) !== i) fail(`patient.identifierSystems[${i}]`, `repeats ${s}`);
  });

  const splitBy =
    root.splitBy === undefined
      ? 'resource'
      : oneOf(root.splitBy, 'splitBy', ['resource', 'encounter'] as const);

  if (!isJsonObject(root.records)) fail('records', 'must be a JSON object keyed by resource type');
  const recordsJson = root.records as Record<string, unknown>;
  const records = new Map<string, RecordTypeMapping>();
  for (const [type, value] of Object.entries(recordsJson)) {
    const field = `records.${type}`;
    if (!RESOURCE_TYPE.test(type)) fail(field, 'must be keyed by a FHIR resource type name');
    if (type === PATIENT_TYPE) fail(field, 'cannot be a record type: Patient is the identity');
    const r = object(value, field, ['patient'], ['encounter', 'enteredInError']);
    let enteredInError: EnteredInErrorRule | undefined;
    if (r.enteredInError !== undefined) {
      const e = object(
        r.enteredInError,
        `${field}.enteredInError`,
        ['element', 'code'],
        ['system'],
      );
      enteredInError = {
        element: path(e.element, `${field}.enteredInError.element`),
        code: string(e.code, `${field}.enteredInError.code`, /^\S+$/, 'a code without spaces'),
        ...(e.system === undefined
          ? {}
          : { system: string(e.system, `${field}.enteredInError.system`, /^\S+$/, 'a URI') }),
      };
    }
    records.set(type, {
      patient: path(r.patient, `${field}.patient`),
      ...(r.encounter === undefined ? {} : { encounter: path(r.encounter, `${field}.encounter`) }),
      ...(enteredInError ? { enteredInError } : {}),
    });
  }
  if (records.size === 0) fail('records', 'must name at least one resource type');

  const context =
    root.context === undefined
      ? { types: [], handling: 'alongside' }
      : object(root.context, 'context', ['types'], ['handling']);
  const contextTypes = typeList(context.types, 'context.types');
  const contextHandling =
    context.handling === undefined
      ? 'alongside'
      : oneOf(context.handling, 'context.handling', ['alongside', 'drop'] as const);
  const ignored = root.ignored === undefined ? [] : typeList(root.ignored, 'ignored');
  const unmappedTypes =
    root.unmappedTypes === undefined
      ? 'reject'
      : oneOf(root.unmappedTypes, 'unmappedTypes', ['reject', 'ignore'] as const);

  // A type has exactly one role.
  const lists: [string, string[]][] = [
    ['context.types', contextTypes],
    ['ignored', ignored],
  ];
  for (const [field, types] of lists) {
    types.forEach((t, i) => {
      if (t === PATIENT_TYPE) fail(`${field}[${i}]`, 'cannot list Patient: it is the identity');
      if (records.has(t)) fail(`${field}[${i}]`, `lists ${t}, which is already a record type`);
    });
  }
  ignored.forEach((t, i) => {
    if (contextTypes.includes(t)) fail(`ignored[${i}]`, `lists ${t}, which is already context`);
  });

  return {
    source,
    version: MAPPING_VERSION,
    name,
    patientIdentifierSystems: systems,
    splitBy,
    records,
    contextTypes: new Set(contextTypes),
    contextHandling,
    ignoredTypes: new Set(ignored),
    unmappedTypes,
  };
}

/** The role a resource type plays under a mapping; undefined: the mapping does not name it. */
export function roleOf(
  mapping: FhirMapping,
  resourceType: string,
): 'record' | 'patient' | 'context' | 'ignored' | undefined {
  if (resourceType === PATIENT_TYPE) return 'patient';
  if (mapping.records.has(resourceType)) return 'record';
  if (mapping.contextTypes.has(resourceType)) return 'context';
  if (mapping.ignoredTypes.has(resourceType)) return 'ignored';
  return mapping.unmappedTypes === 'ignore' ? 'ignored' : undefined;
}
