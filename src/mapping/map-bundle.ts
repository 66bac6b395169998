/**
 * Maps a FHIR transaction or batch Bundle (already validated against FHIR R4) to SPChain records,
 * under a mapping file (mapping.ts). Pure: ids come from the caller's `newId`, what is already
 * stored from the caller's `stored` view, the time from `lastUpdated`.
 *
 * The steps: read the entries and their roles (entries.ts); settle each written resource's id and
 * whether it is a create or an update; rewrite references (rewrite.ts); identify each Patient by
 * the first identifier system of the mapping it has; find each record's patient through its
 * patient reference; split the records (one per resource, or one per encounter); carry the context
 * resources a record references alongside it; and encode each resource as canonical JSON
 * (RFC 8785), so the same resource gives the same bytes whatever key order the EHR sent. (FHIR
 * decimals pass through JSON.parse as doubles: `1.50` becomes `1.5`, as in every JavaScript FHIR
 * server.)
 *
 * A transaction is all or nothing: any problem throws a MappingError holding every issue found.
 * A batch's entries are independent: a failed entry carries its issues and the others map.
 */
import type { Resource } from '@medplum/fhirtypes';
import canonicalize from 'canonicalize';
import {
  assignIds,
  type EntryAction,
  type EntryRole,
  type EntryWork,
  issue,
  readEntries,
} from './entries.ts';
import { MappingError, type MappingIssue } from './errors.ts';
import type { EnteredInErrorRule, FhirMapping } from './mapping.ts';
import { isJsonObject, referencesAt, valuesAt } from './paths.ts';
import { collectReferences, rewriteEntry } from './rewrite.ts';
import { NOTHING_STORED, parseRelative, type StoredResources } from './stored.ts';

export interface MapOpts {
  /** A fresh FHIR id (`[A-Za-z0-9.-]{1,64}`) for each created resource, e.g. a random UUID. */
  readonly newId: () => string;
  /** What is already stored; default: nothing. */
  readonly stored?: StoredResources;
  /** If given, set as `meta.lastUpdated` of every written resource. */
  readonly lastUpdated?: string;
}

/** The patient identifier the mapping chose: `system|value` is the input to the ledger's idHash. */
export interface PatientIdentifier {
  readonly system: string;
  readonly value: string;
}

export interface PatientRef {
  /** The Patient's id on this server. */
  readonly id: string;
  readonly identifier: PatientIdentifier;
  /** YYYY-MM-DD when the Patient resource has it (idHash needs it). */
  readonly birthDate?: string;
}

export interface ResourceRef {
  /** Index of the bundle entry. */
  readonly entry: number;
  readonly resourceType: string;
  readonly id: string;
}

export interface RecordResource extends ResourceRef {
  /** Canonical JSON (RFC 8785, UTF-8) of the resource as written: id set, references rewritten. */
  readonly json: Uint8Array;
}

export interface Correction {
  /** The stored resource this record corrects. */
  readonly of: { readonly resourceType: string; readonly id: string };
  /** `entered-in-error`: the update marks the resource wrong; `update`: it replaces it. */
  readonly kind: 'update' | 'entered-in-error';
}

export interface MappedRecord {
  readonly patient: PatientRef;
  /** The record's resources, in bundle order (one, unless split by encounter). */
  readonly resources: readonly RecordResource[];
  /** Context resources of the bundle that the record's resources reference, carried alongside. */
  readonly context: readonly RecordResource[];
  /** `Encounter/id` the record was grouped by (splitBy "encounter" only). */
  readonly encounter?: string;
  readonly correction?: Correction;
}

const UTF8 = new TextEncoder();
const PAYLOAD_HEAD = UTF8.encode('{"entry":[');
const PAYLOAD_TAIL = UTF8.encode('],"resourceType":"Bundle","type":"collection"}');
const RESOURCE_HEAD = UTF8.encode('{"resource":');
const RESOURCE_TAIL = UTF8.encode('}');
const COMMA = UTF8.encode(',');

/**
 * A record as one document: the canonical JSON of a `collection` Bundle holding the record's
 * resources, then its context. Assembled from the resources' canonical bytes (keys `entry` <
 * `resourceType` < `type` are already in canonical order), so equal to canonicalizing it whole.
 */
export function recordPayload(record: MappedRecord): Uint8Array {
  const parts: Uint8Array[] = [PAYLOAD_HEAD];
  [...record.resources, ...record.context].forEach((r, i) => {
    if (i > 0) parts.push(COMMA);
    parts.push(RESOURCE_HEAD, r.json, RESOURCE_TAIL);
  });
  parts.push(PAYLOAD_TAIL);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export interface MappedEntry {
  readonly index: number;
  readonly action: EntryAction | 'failed';
  /** What the entry is under the mapping; absent if it failed before that was known. */
  readonly role?: EntryRole;
  readonly resourceType?: string;
  /** The id the entry's resource has on this server (assigned, given, or matched). */
  readonly id?: string;
  /** Index into `records` of the record holding this entry's resource. */
  readonly record?: number;
  /** The resource as written (references rewritten), or the stored match of a conditional create. */
  readonly resource?: Record<string, unknown>;
  /** Why the entry failed (batches only: a transaction with issues throws). */
  readonly issues: readonly MappingIssue[];
}

export interface MappedPatient extends PatientRef {
  readonly entry: number;
}

export interface MappedBundle {
  readonly type: 'transaction' | 'batch';
  /** One per bundle entry, in request order. */
  readonly entries: readonly MappedEntry[];
  readonly records: readonly MappedRecord[];
  /** The Patients the bundle writes (or matched by conditional create), with their identity. */
  readonly patients: readonly MappedPatient[];
  /** Transaction fullUrl -> `Type/id`, as references were rewritten. Empty for a batch. */
  readonly rewrites: ReadonlyMap<string, string>;
}

interface RecordWork {
  readonly work: EntryWork;
  readonly resource: Record<string, unknown>;
  readonly patient: PatientRef;
  readonly correction?: Correction;
  /** Grouping key for splitBy "encounter". */
  readonly group: string;
}

export function mapBundle(bundle: unknown, mapping: FhirMapping, opts: MapOpts): MappedBundle {
  const stored = opts.stored ?? NOTHING_STORED;
  const { type, entries } = readBundle(bundle);
  const transaction = type === 'transaction';
  const works = readEntries(entries, mapping);
  assignIds(works, { newId: opts.newId, stored });
  const refs = collectReferences(works, transaction);

  // References.
  const found = new Map<string, Resource>();
  const ctx = {
    ...refs,
    transaction,
    stored,
    found,
    ...(opts.lastUpdated === undefined ? {} : { lastUpdated: opts.lastUpdated }),
    candidates: (resourceType: string) =>
      works.flatMap((w) =>
        w.resourceType === resourceType && w.resource && w.id !== undefined && w.issues.length === 0
          ? [{ id: w.id, resource: w.resource }]
          : [],
      ),
  };
  const written = new Map<number, Record<string, unknown>>();
  const referencesOf = new Map<number, readonly string[]>();
  const json = new Map<number, Uint8Array>(); // canonical bytes of records and context
  for (const w of works) {
    if (w.issues.length > 0 || !w.resource || w.action === 'read') continue;
    if (w.action === 'existing') {
      if (w.stored) written.set(w.index, w.stored);
      continue;
    }
    const { resource: out, references } = rewriteEntry(w, ctx);
    if (w.issues.length === 0 && (w.role === 'record' || w.role === 'context')) {
      const bytes = canonicalBytes(out);
      if (bytes) json.set(w.index, bytes);
      else issue(w, 'MALFORMED', 'resource', 'holds a string that is not well-formed Unicode');
    }
    if (w.issues.length === 0) {
      written.set(w.index, out);
      referencesOf.set(w.index, references);
    }
  }

  // Patients of the bundle.
  const patients: MappedPatient[] = [];
  const failedPatients = new Set<string>();
  for (const w of works) {
    const resource = written.get(w.index);
    if (w.role !== 'patient' || w.id === undefined) continue;
    if (!resource) {
      failedPatients.add(w.id);
      continue;
    }
    const ref = patientRef(w.id, resource, mapping);
    if (ref) {
      patients.push({ entry: w.index, ...ref });
    } else {
      failedPatients.add(w.id);
      issue(w, 'NO_PATIENT_IDENTIFIER', 'resource.identifier', noIdentifier(mapping));
    }
  }
  const bundlePatients = new Map(transaction ? patients.map((p) => [p.id, p]) : []);

  // Records: their patient, correction and group.
  const recordWorks: RecordWork[] = [];
  for (const w of works) {
    const resource = written.get(w.index);
    if (w.role !== 'record' || !resource || w.action === 'existing' || !w.resourceType) continue;
    const rule = mapping.records.get(w.resourceType)!;
    const patient = recordPatient(w, resource, rule.patient, {
      mapping,
      bundlePatients,
      failedPatients,
      failedUrls: refs.failed,
      found,
      stored,
    });
    if (!patient) continue;
    const correction: Correction | undefined =
      w.action === 'update'
        ? {
            of: { resourceType: w.resourceType, id: w.id! },
            kind:
              rule.enteredInError && isEnteredInError(resource, rule.enteredInError)
                ? 'entered-in-error'
                : 'update',
          }
        : undefined;
    // A correction is always a record of its own (the sidecar replaces the stored record).
    const group = correction
      ? `correction ${w.index}`
      : mapping.splitBy === 'encounter'
        ? encounterOf(w, resource, rule.encounter)
        : `${w.resourceType}/${w.id}`;
    recordWorks.push({ work: w, resource, patient, ...(correction ? { correction } : {}), group });
  }

  // Split into records; an encounter's records must all be one patient's.
  const groups = new Map<string, RecordWork[]>();
  for (const r of recordWorks) {
    const group = groups.get(r.group);
    const first = group?.[0];
    if (first && !samePatient(first.patient, r.patient)) {
      issue(
        r.work,
        'CONFLICT',
        `resource.${mapping.records.get(r.work.resourceType!)!.patient}`,
        `is another patient than Bundle.entry[${first.work.index}] of the same encounter ${r.group}`,
      );
      continue;
    }
    if (group) group.push(r);
    else groups.set(r.group, [r]);
  }

  const contextByKey = new Map<string, EntryWork>();
  if (mapping.contextHandling === 'alongside') {
    for (const w of works) {
      if (w.role === 'context' && json.has(w.index) && w.action !== 'existing') {
        contextByKey.set(`${w.resourceType}/${w.id}`, w);
      }
    }
  }
  const encoded = (w: EntryWork): RecordResource => ({
    entry: w.index,
    resourceType: w.resourceType!,
    id: w.id!,
    json: json.get(w.index)!,
  });
  const records: MappedRecord[] = [];
  const recordOf = new Map<number, number>();
  for (const [key, group] of groups) {
    const context = contextFor(
      group.map((r) => r.work.index),
      referencesOf,
      contextByKey,
    );
    const head = group[0]!;
    for (const r of group) recordOf.set(r.work.index, records.length);
    records.push({
      patient: head.patient,
      resources: group.map((r) => encoded(r.work)),
      context: context.map(encoded),
      ...(mapping.splitBy === 'encounter' && key.startsWith('Encounter/') && !head.correction
        ? { encounter: key }
        : {}),
      ...(head.correction ? { correction: head.correction } : {}),
    });
  }

  const allIssues = works.flatMap((w) => w.issues);
  if (transaction && allIssues.length > 0) {
    const first = allIssues[0]!;
    const more = allIssues.length > 1 ? ` (and ${allIssues.length - 1} more issues)` : '';
    throw new MappingError(
      'UNMAPPABLE_BUNDLE',
      `${first.expression}: ${first.message}${more}`,
      { issues: allIssues.length },
      allIssues,
    );
  }
  return {
    type,
    entries: works.map((w) => entryOf(w, written.get(w.index), recordOf.get(w.index))),
    records,
    patients,
    rewrites: refs.rewrites,
  };
}

/** RFC 8785 bytes; undefined if a string is not well-formed UTF-16 (a lone surrogate). */
function canonicalBytes(resource: Record<string, unknown>): Uint8Array | undefined {
  try {
    return UTF8.encode(canonicalize(resource)!);
  } catch {
    return undefined;
  }
}

function readBundle(bundle: unknown): { type: 'transaction' | 'batch'; entries: unknown[] } {
  const fail = (expression: string, message: string): never => {
    throw new MappingError('UNMAPPABLE_BUNDLE', `${expression}: ${message}`, {}, [
      { code: 'MALFORMED', expression, message },
    ]);
  };
  if (!isJsonObject(bundle) || bundle.resourceType !== 'Bundle') {
    return fail('Bundle', 'must be a FHIR Bundle');
  }
  if (bundle.type !== 'transaction' && bundle.type !== 'batch') {
    return fail('Bundle.type', 'must be transaction or batch');
  }
  if (bundle.entry !== undefined && !Array.isArray(bundle.entry)) {
    return fail('Bundle.entry', 'must be an array');
  }
  return { type: bundle.type, entries: (bundle.entry as unknown[] | undefined) ?? [] };
}

/** The first identifier, in the mapping's order of systems, that the Patient has. */
export function chooseIdentifier(
  patient: Record<string, unknown>,
  systems: readonly string[],
): PatientIdentifier | undefined {
  const ids = Array.isArray(patient.identifier) ? patient.identifier.filter(isJsonObject) : [];
  for (const system of systems) {
    for (const id of ids) {
      if (id.system === system && typeof id.value === 'string' && id.value.trim() !== '') {
        return { system, value: id.value };
      }
    }
  }
  return undefined;
}

function patientRef(
  id: string,
  resource: Record<string, unknown>,
  mapping: FhirMapping,
): PatientRef | undefined {
  const identifier = chooseIdentifier(resource, mapping.patientIdentifierSystems);
  if (!identifier) return undefined;
  return {
    id,
    identifier,
    ...(typeof resource.birthDate === 'string' ? { birthDate: resource.birthDate } : {}),
  };
}

function noIdentifier(mapping: FhirMapping): string {
  return (
    'the patient has no identifier in any system the mapping identifies patients by ' +
    `(${mapping.patientIdentifierSystems.join(', ')})`
  );
}

interface PatientLookup {
  readonly mapping: FhirMapping;
  readonly bundlePatients: ReadonlyMap<string, PatientRef>;
  readonly failedPatients: ReadonlySet<string>;
  readonly failedUrls: ReadonlySet<string>;
  readonly found: ReadonlyMap<string, Resource>;
  readonly stored: StoredResources;
}

/** The record's patient, through its patient reference; undefined (with an issue) if none. */
function recordPatient(
  w: EntryWork,
  resource: Record<string, unknown>,
  path: string,
  lookup: PatientLookup,
): PatientRef | undefined {
  const refs = referencesAt(resource, path, `${w.expression}.resource`);
  const distinct = [...new Set(refs.map((r) => r.reference))];
  if (distinct.length !== 1) {
    issue(
      w,
      'MALFORMED',
      `resource.${path}`,
      distinct.length === 0
        ? `a ${w.resourceType} record needs a reference to its Patient here`
        : `must reference one Patient, references ${distinct.length}`,
    );
    return undefined;
  }
  const { reference, expression } = refs[0]!;
  if (lookup.failedUrls.has(reference)) return undefined; // its entry failed: already reported
  const rel = parseRelative(reference);
  if (rel?.resourceType !== 'Patient') {
    w.issues.push({
      code: rel ? 'MALFORMED' : 'UNKNOWN_PATIENT',
      expression,
      message: rel
        ? `must reference a Patient, references a ${rel.resourceType}`
        : `${reference} is not a Patient of this server`,
    });
    return undefined;
  }
  const own = lookup.bundlePatients.get(rel.id);
  if (own) return own;
  if (lookup.failedPatients.has(rel.id)) return undefined;
  const storedPatient =
    lookup.found.get(`Patient/${rel.id}`) ?? lookup.stored.read('Patient', rel.id);
  if (!storedPatient) {
    w.issues.push({
      code: 'UNKNOWN_PATIENT',
      expression,
      message: `Patient/${rel.id} is neither in the bundle nor stored`,
    });
    return undefined;
  }
  const ref = patientRef(
    rel.id,
    storedPatient as unknown as Record<string, unknown>,
    lookup.mapping,
  );
  if (!ref) {
    w.issues.push({
      code: 'NO_PATIENT_IDENTIFIER',
      expression,
      message: noIdentifier(lookup.mapping),
    });
  }
  return ref;
}

/** Does the resource say, by the mapping's rule for its type, that it was entered in error? */
export function isEnteredInError(resource: unknown, rule: EnteredInErrorRule): boolean {
  const matches = (coding: unknown): boolean =>
    isJsonObject(coding) &&
    coding.code === rule.code &&
    (rule.system === undefined || coding.system === rule.system);
  return valuesAt(resource, rule.element, '').some(({ value }) => {
    if (typeof value === 'string') return value === rule.code;
    if (!isJsonObject(value)) return false;
    if (Array.isArray(value.coding)) return value.coding.some(matches);
    return matches(value);
  });
}

function encounterOf(w: EntryWork, resource: Record<string, unknown>, path?: string): string {
  if (w.resourceType === 'Encounter') return `Encounter/${w.id}`;
  for (const { reference } of path ? referencesAt(resource, path, '') : []) {
    const rel = parseRelative(reference);
    if (rel?.resourceType === 'Encounter') return `Encounter/${rel.id}`;
  }
  return `${w.resourceType}/${w.id}`;
}

function samePatient(a: PatientRef, b: PatientRef): boolean {
  return a.identifier.system === b.identifier.system && a.identifier.value === b.identifier.value;
}

/** The bundle's context resources that the entries reference, and those they reference, in turn. */
function contextFor(
  entries: readonly number[],
  referencesOf: ReadonlyMap<number, readonly string[]>,
  contextByKey: ReadonlyMap<string, EntryWork>,
): EntryWork[] {
  const out = new Map<number, EntryWork>();
  if (contextByKey.size === 0) return [];
  const queue = [...entries];
  while (queue.length > 0) {
    const next = queue.pop()!;
    for (const ref of referencesOf.get(next) ?? []) {
      const rel = parseRelative(ref);
      const c = rel ? contextByKey.get(`${rel.resourceType}/${rel.id}`) : undefined;
      if (c && !out.has(c.index)) {
        out.set(c.index, c);
        queue.push(c.index);
      }
    }
  }
  return [...out.values()].sort((a, b) => a.index - b.index);
}

function entryOf(
  w: EntryWork,
  resource: Record<string, unknown> | undefined,
  record: number | undefined,
): MappedEntry {
  const failed = w.issues.length > 0;
  return {
    index: w.index,
    action: failed ? 'failed' : w.action!,
    ...(w.role ? { role: w.role } : {}),
    ...(w.resourceType ? { resourceType: w.resourceType } : {}),
    ...(w.id !== undefined && !failed ? { id: w.id } : {}),
    ...(record !== undefined && !failed ? { record } : {}),
    ...(resource && !failed ? { resource } : {}),
    issues: w.issues,
  };
}
