/**
 * What the mapper may know of resources already stored: a synchronous, read-only view, so the
 * mapping stays a pure function. A caller whose store is asynchronous asks `lookupsFor(bundle)`
 * which searches and reads a bundle can need, fetches them, and passes `storedSnapshot(...)`.
 *
 * Searches are FHIR search queries as they appear in the bundle (`identifier=http://x|123`), keyed
 * `Type?query`: conditional references, conditional creates (`ifNoneExist`) and conditional updates.
 * Reads are `Type/id`: the targets of updates (an update of a stored record is a correction) and
 * the Patients that records reference but the bundle does not hold (their identifier is needed).
 */
import type { Resource } from '@medplum/fhirtypes';
import { isJsonObject } from './paths.ts';

export interface StoredResources {
  /** The stored resources of `resourceType` that match a FHIR search query. */
  search(resourceType: string, query: string): readonly Resource[];
  /** The stored resource `resourceType/id`, if there is one. */
  read(resourceType: string, id: string): Resource | undefined;
}

export const NOTHING_STORED: StoredResources = {
  search: () => [],
  read: () => undefined,
};

export interface StoredSnapshotInput {
  /** Search results keyed `Type?query`, exactly as `lookupsFor` lists them. */
  readonly searches?: Iterable<readonly [string, readonly Resource[]]>;
  /** Stored resources that may be read by type and id. */
  readonly resources?: Iterable<Resource>;
}

export function storedSnapshot(input: StoredSnapshotInput): StoredResources {
  const searches = new Map(input.searches ?? []);
  const byKey = new Map<string, Resource>();
  for (const r of input.resources ?? []) {
    if (r.id !== undefined) byKey.set(`${r.resourceType}/${r.id}`, r);
  }
  return {
    search: (type, query) => searches.get(`${type}?${query}`) ?? [],
    read: (type, id) => byKey.get(`${type}/${id}`),
  };
}

export interface Lookups {
  /** `Type?query` strings to search for. */
  readonly searches: readonly string[];
  /** `Type/id` strings to read. */
  readonly reads: readonly string[];
}

const RELATIVE = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]{1,64})?$/;
const CONDITIONAL = /^([A-Z][A-Za-z]+)\?(.+)$/;

/** Splits a relative literal reference `Type/id` (optionally versioned); undefined otherwise. */
export function parseRelative(ref: string): { resourceType: string; id: string } | undefined {
  const m = RELATIVE.exec(ref);
  return m ? { resourceType: m[1]!, id: m[2]! } : undefined;
}

/**
 * How a search is named in messages: the type and the parameter names, not their values, which
 * are often the patient's identifiers (`Patient?identifier=...`).
 */
export function describeSearch(resourceType: string, query: string): string {
  const names = query.split('&').map((p) => `${p.split('=')[0]}=...`);
  return `${resourceType}?${names.join('&')}`;
}

/** Splits a conditional reference or request URL `Type?query`; undefined otherwise. */
export function parseConditional(ref: string): { resourceType: string; query: string } | undefined {
  const m = CONDITIONAL.exec(ref);
  return m ? { resourceType: m[1]!, query: m[2]! } : undefined;
}

/**
 * Every stored-resource lookup mapping `bundle` may make. Over-approximates (a relative reference
 * that the bundle itself resolves is listed too); the mapper reads nothing outside this list.
 */
export function lookupsFor(bundle: unknown): Lookups {
  const searches = new Set<string>();
  const reads = new Set<string>();
  const entries = isJsonObject(bundle) && Array.isArray(bundle.entry) ? bundle.entry : [];
  for (const entry of entries) {
    if (!isJsonObject(entry)) continue;
    const request = isJsonObject(entry.request) ? entry.request : {};
    const resource = isJsonObject(entry.resource) ? entry.resource : undefined;
    const type = typeof resource?.resourceType === 'string' ? resource.resourceType : undefined;
    if (typeof request.ifNoneExist === 'string' && type) {
      searches.add(`${type}?${request.ifNoneExist.replace(/^\?/, '')}`);
    }
    if (typeof request.url === 'string' && request.method === 'PUT') {
      const cond = parseConditional(request.url);
      if (cond) searches.add(request.url);
      const rel = parseRelative(request.url);
      if (rel) reads.add(`${rel.resourceType}/${rel.id}`);
    }
    if (!resource) continue;
    for (const ref of allReferences(resource)) {
      if (parseConditional(ref)) searches.add(ref);
      const rel = parseRelative(ref);
      if (rel?.resourceType === 'Patient') reads.add(`Patient/${rel.id}`);
    }
  }
  return { searches: [...searches], reads: [...reads] };
}

/** Every Reference.reference string anywhere in `value` (contained resources included). */
export function allReferences(value: unknown): string[] {
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) {
      for (const item of v) walk(item);
    } else if (isJsonObject(v)) {
      for (const [k, child] of Object.entries(v)) {
        if (k === 'reference' && typeof child === 'string') out.push(child);
        else walk(child);
      }
    }
  };
  walk(value);
  return out;
}

/** The ids of `candidates` that match a search query, or undefined if the query is not one the
 * mapper can evaluate itself (only `_id` and `identifier` are). */
export function matchInBundle(
  query: string,
  candidates: readonly { id: string; resource: Record<string, unknown> }[],
): string[] | undefined {
  const params: [string, string][] = [];
  for (const part of query.split('&')) {
    const eq = part.indexOf('=');
    if (eq <= 0) return undefined;
    let value: string;
    try {
      value = decodeURIComponent(part.slice(eq + 1));
    } catch {
      return undefined;
    }
    params.push([part.slice(0, eq), value]);
  }
  for (const [name] of params) if (name !== '_id' && name !== 'identifier') return undefined;
  return candidates
    .filter(({ id, resource }) =>
      params.every(([name, value]) =>
        name === '_id' ? id === value : hasIdentifier(resource, value),
      ),
    )
    .map((c) => c.id);
}

/** FHIR token search on identifier: `system|value`, `|value` (no system) or `value` (any). */
function hasIdentifier(resource: Record<string, unknown>, token: string): boolean {
  const bar = token.indexOf('|');
  const system = bar < 0 ? undefined : token.slice(0, bar);
  const value = bar < 0 ? token : token.slice(bar + 1);
  const ids = Array.isArray(resource.identifier) ? resource.identifier : [];
  return ids.some((i) => {
    if (!isJsonObject(i) || i.value !== value) return false;
    if (system === undefined) return true;
    return system === '' ? i.system === undefined : i.system === system;
  });
}
