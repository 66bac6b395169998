/**
 * Step one of mapping a bundle: read each entry's request, give the mapping role of its resource
 * type, and settle which resource the entry writes, following FHIR's transaction rules
 * (http.html#trules): a POST creates a resource with a new server id (unless its `ifNoneExist`
 * matches one stored resource, which is then used instead); a PUT `Type/id` updates that resource
 * or creates it with that id; a conditional PUT `Type?query` updates its one match or creates.
 * GET/HEAD entries are reads, left to the caller; DELETE and PATCH are refused (the ledger never
 * forgets: a wrong record is corrected by an update, or marked entered-in-error).
 */
import type { MappingIssue, MappingIssueCode } from './errors.ts';
import { type FhirMapping, roleOf } from './mapping.ts';
import { isJsonObject } from './paths.ts';
import { describeSearch, parseConditional, parseRelative, type StoredResources } from './stored.ts';

export type EntryRole = 'record' | 'patient' | 'context' | 'ignored' | 'read';
export type EntryAction = 'create' | 'update' | 'existing' | 'read';

/** Mutable working state of one entry while the bundle is mapped. */
export interface EntryWork {
  readonly index: number;
  /** `Bundle.entry[i]`. */
  readonly expression: string;
  readonly method: string;
  readonly url: string;
  readonly fullUrl?: string;
  /** `request.ifNoneExist`: the search query of a conditional create. */
  readonly ifNoneExist?: string;
  readonly resource?: Record<string, unknown>;
  readonly resourceType?: string;
  role?: EntryRole;
  action?: EntryAction;
  id?: string;
  /** For `existing` entries: the stored resource the conditional create matched. */
  stored?: Record<string, unknown>;
  readonly issues: MappingIssue[];
}

export function issue(
  work: EntryWork,
  code: MappingIssueCode,
  where: string,
  message: string,
): void {
  const expression = where === '' ? work.expression : `${work.expression}.${where}`;
  work.issues.push({ code, expression, message });
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH'];
const ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** Reads the entries' shape and roles; every problem is an issue on its entry. */
export function readEntries(entries: readonly unknown[], mapping: FhirMapping): EntryWork[] {
  return entries.map((raw, index) => {
    const expression = `Bundle.entry[${index}]`;
    const entry = isJsonObject(raw) ? raw : {};
    const request = isJsonObject(entry.request) ? entry.request : undefined;
    const method = typeof request?.method === 'string' ? request.method : '';
    const url = typeof request?.url === 'string' ? request.url : '';
    const resource = isJsonObject(entry.resource) ? entry.resource : undefined;
    const resourceType =
      typeof resource?.resourceType === 'string' ? resource.resourceType : undefined;
    const work: EntryWork = {
      index,
      expression,
      method,
      url,
      ...(typeof entry.fullUrl === 'string' ? { fullUrl: entry.fullUrl } : {}),
      ...(typeof request?.ifNoneExist === 'string'
        ? { ifNoneExist: request.ifNoneExist.replace(/^\?/, '') }
        : {}),
      ...(resource ? { resource } : {}),
      ...(resourceType ? { resourceType } : {}),
      issues: [],
    };
    if (!isJsonObject(raw)) {
      issue(work, 'MALFORMED', '', 'an entry must be a JSON object');
    } else if (!request) {
      issue(work, 'MALFORMED', 'request', 'a transaction or batch entry needs a request');
    } else if (!METHODS.includes(method)) {
      issue(work, 'MALFORMED', 'request.method', `must be one of ${METHODS.join(', ')}`);
    } else if (url === '') {
      issue(work, 'MALFORMED', 'request.url', 'is missing');
    } else if (method === 'DELETE' || method === 'PATCH') {
      issue(
        work,
        'UNSUPPORTED',
        'request.method',
        `${method} is not supported: records are never deleted or patched; send the corrected ` +
          'resource with PUT, or PUT it with its status set to entered-in-error',
      );
    } else if (method === 'GET' || method === 'HEAD') {
      work.role = 'read';
      work.action = 'read';
    } else if (!resource || !resourceType) {
      issue(
        work,
        'MALFORMED',
        'resource',
        `a ${method} entry needs a resource with a resourceType`,
      );
    } else {
      const role = roleOf(mapping, resourceType);
      if (role === undefined) {
        issue(
          work,
          'UNMAPPED_TYPE',
          'resource',
          `resource type ${resourceType} is not in the mapping ${mapping.name} (${mapping.source}): ` +
            'it names record, context and ignored types, and rejects others',
        );
      } else {
        work.role = role;
      }
    }
    return work;
  });
}

export interface IdAssignment {
  readonly newId: () => string;
  readonly stored: StoredResources;
}

/** Settles each writing entry's target id and action (create / update / existing). */
export function assignIds(works: readonly EntryWork[], opts: IdAssignment): void {
  const generated = new Set<string>();
  const fresh = (type: string): string => {
    const id = opts.newId();
    if (!ID.test(id)) throw new TypeError(`newId returned ${JSON.stringify(id)}, not a FHIR id`);
    if (generated.has(`${type}/${id}`)) throw new TypeError(`newId returned ${id} twice`);
    generated.add(`${type}/${id}`);
    return id;
  };
  const taken = new Map<string, number>();
  for (const w of works) {
    if (w.issues.length > 0 || w.role === 'read' || !w.resource || !w.resourceType) continue;
    const type = w.resourceType;
    const ownId = typeof w.resource.id === 'string' ? w.resource.id : undefined;
    if (w.method === 'POST') {
      if (w.url.split('?')[0] !== type) {
        issue(w, 'MALFORMED', 'request.url', `a POST of a ${type} must go to ${type}`);
        continue;
      }
      const query = w.ifNoneExist;
      if (query !== undefined) {
        const matches = opts.stored.search(type, query);
        if (matches.length > 1) {
          issue(
            w,
            'MULTIPLE_MATCHES',
            'request.ifNoneExist',
            `${describeSearch(type, query)} matches ${matches.length} resources`,
          );
          continue;
        }
        const match = matches[0];
        if (match?.id !== undefined) {
          w.action = 'existing';
          w.id = match.id;
          w.stored = match as unknown as Record<string, unknown>;
        }
      }
      if (w.action === undefined) {
        w.action = 'create';
        w.id = fresh(type);
      }
    } else {
      const rel = parseRelative(w.url);
      const cond = rel ? undefined : parseConditional(w.url);
      if ((rel ?? cond)?.resourceType !== type) {
        issue(
          w,
          'MALFORMED',
          'request.url',
          `a PUT of a ${type} must go to ${type}/id or ${type}?query`,
        );
        continue;
      }
      if (rel) {
        if (ownId !== rel.id) {
          issue(w, 'MALFORMED', 'resource.id', `must equal the id in request.url (${rel.id})`);
          continue;
        }
        w.id = rel.id;
        w.action = opts.stored.read(type, rel.id) ? 'update' : 'create';
      } else if (cond) {
        const matches = opts.stored.search(type, cond.query);
        if (matches.length > 1) {
          issue(
            w,
            'MULTIPLE_MATCHES',
            'request.url',
            `${describeSearch(type, cond.query)} matches ${matches.length} resources`,
          );
          continue;
        }
        const match = matches[0];
        if (match?.id !== undefined) {
          if (ownId !== undefined && ownId !== match.id) {
            issue(
              w,
              'MALFORMED',
              'resource.id',
              `differs from the id ${describeSearch(type, cond.query)} matches`,
            );
            continue;
          }
          w.id = match.id;
          w.action = 'update';
        } else {
          w.id = ownId ?? fresh(type);
          w.action = 'create';
        }
      }
    }
    const key = `${type}/${w.id}`;
    const first = taken.get(key);
    if (first !== undefined && w.action !== 'existing') {
      issue(w, 'CONFLICT', '', `writes ${key}, which Bundle.entry[${first}] writes too`);
    } else if (w.action !== 'existing') {
      taken.set(key, w.index);
    }
  }
}
