/**
 * Step two: resolve and rewrite references, following FHIR's bundle rules (bundle.html#references
 * and http.html#trules). In a transaction every entry's fullUrl (`urn:uuid:...`, or a RESTful URL)
 * stands for the resource the entry writes, so a reference to it becomes `Type/id` with the id
 * assigned in step one; a `urn:` reference that names no entry cannot be resolved and fails the
 * transaction, naming the element. Conditional references (`Patient?identifier=system|value`)
 * are resolved to their single match, among the bundle's own resources (for `_id` and
 * `identifier`) and the stored ones. Batch entries are independent, so in a batch a `urn:`
 * reference to another entry is an error. Local references (`#id`) and references to stored
 * resources (`Observation/123`) are left as they are. Narrative links (`href`/`src` in `text.div`)
 * to entries are rewritten too, as FHIR asks.
 */
import type { Resource } from '@medplum/fhirtypes';
import { type EntryWork, issue } from './entries.ts';
import { isJsonObject } from './paths.ts';
import {
  describeSearch,
  matchInBundle,
  parseConditional,
  parseRelative,
  type StoredResources,
} from './stored.ts';

export interface References {
  /** fullUrl -> `Type/id` (transactions only). */
  readonly rewrites: ReadonlyMap<string, string>;
  /** fullUrls of entries that failed: references to them are not reported a second time. */
  readonly failed: ReadonlySet<string>;
}

/** The transaction's fullUrl map; a fullUrl used by two entries is a conflict. */
export function collectReferences(works: readonly EntryWork[], transaction: boolean): References {
  const rewrites = new Map<string, string>();
  const failed = new Set<string>();
  const seen = new Map<string, number>();
  for (const w of works) {
    if (w.fullUrl === undefined || w.role === 'read') continue;
    const first = seen.get(w.fullUrl);
    if (first !== undefined) {
      issue(w, 'CONFLICT', 'fullUrl', `repeats the fullUrl of Bundle.entry[${first}]`);
    } else {
      seen.set(w.fullUrl, w.index);
    }
  }
  for (const w of works) {
    if (w.fullUrl === undefined || w.role === 'read') continue;
    if (w.issues.length > 0 || w.id === undefined || w.resourceType === undefined) {
      failed.add(w.fullUrl);
    } else if (transaction && seen.get(w.fullUrl) === w.index) {
      rewrites.set(w.fullUrl, `${w.resourceType}/${w.id}`);
    }
  }
  return { rewrites, failed };
}

export interface RewriteContext extends References {
  readonly transaction: boolean;
  /** The bundle's own resources of a type, for conditional references (transactions only). */
  readonly candidates: (
    resourceType: string,
  ) => { id: string; resource: Record<string, unknown> }[];
  readonly stored: StoredResources;
  /** Stored resources met while resolving conditional references, keyed `Type/id`. */
  readonly found: Map<string, Resource>;
  readonly lastUpdated?: string;
}

const RESTFUL = /^(https?:\/\/\S+\/)[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/;
const ABSOLUTE = /^[A-Za-z][A-Za-z0-9+.-]*:/;
const NARRATIVE_LINK = /\b(href|src)="([^"]+)"/g;

export interface Rewritten {
  /** A copy of the entry's resource, with its id set and its references rewritten. */
  readonly resource: Record<string, unknown>;
  /** Every Reference.reference in it, as rewritten (contained resources included). */
  readonly references: readonly string[];
}

/**
 * The entry's resource as it will be stored. Problems become issues on the entry; the input is
 * never modified.
 */
export function rewriteEntry(w: EntryWork, ctx: RewriteContext): Rewritten {
  const base = w.fullUrl === undefined ? undefined : RESTFUL.exec(w.fullUrl)?.[1];
  const references: string[] = [];
  const resolve = (ref: string, where: () => string): string => {
    const to = resolveOne(ref, where);
    references.push(to);
    return to;
  };
  const resolveOne = (ref: string, where: () => string): string => {
    if (ref.startsWith('#')) return ref;
    const fail = (code: 'UNRESOLVED_REFERENCE' | 'MULTIPLE_MATCHES', message: string): string => {
      w.issues.push({ code, expression: where(), message });
      return ref;
    };
    if (ref.startsWith('urn:')) {
      const to = ctx.rewrites.get(ref);
      if (to !== undefined) return to;
      if (ctx.transaction && ctx.failed.has(ref)) return ref; // the transaction fails anyway
      return fail(
        'UNRESOLVED_REFERENCE',
        ctx.transaction
          ? `${ref} is not the fullUrl of any entry in this transaction`
          : `${ref}: batch entries cannot reference each other; send them as a transaction`,
      );
    }
    const cond = parseConditional(ref);
    if (cond) {
      const search = describeSearch(cond.resourceType, cond.query);
      const own = ctx.transaction
        ? (matchInBundle(cond.query, ctx.candidates(cond.resourceType)) ?? [])
        : [];
      const stored = ctx.stored.search(cond.resourceType, cond.query);
      for (const r of stored) if (r.id) ctx.found.set(`${r.resourceType}/${r.id}`, r);
      const ids = [...new Set([...own, ...stored.flatMap((r) => (r.id ? [r.id] : []))])];
      if (ids.length === 0) return fail('UNRESOLVED_REFERENCE', `${search} matches no resource`);
      if (ids.length > 1)
        return fail('MULTIPLE_MATCHES', `${search} matches ${ids.length} resources`);
      return `${cond.resourceType}/${ids[0]}`;
    }
    if (ABSOLUTE.test(ref)) return ctx.rewrites.get(ref) ?? ref;
    if (base !== undefined && parseRelative(ref)) return ctx.rewrites.get(base + ref) ?? ref;
    return ref;
  };
  const narrative = (div: string): string =>
    div.replace(NARRATIVE_LINK, (all, attr: string, url: string) => {
      const to = ctx.rewrites.get(url);
      return to === undefined ? all : `${attr}="${to}"`;
    });

  const root = `${w.expression}.resource`;
  const copy = rewriteValue(w.resource, [], {
    resolve: (ref, path) => resolve(ref, () => root + renderPath(path)),
    narrative,
  });
  const out = copy as Record<string, unknown>;
  if (w.id !== undefined) out.id = w.id;
  if (ctx.lastUpdated !== undefined) {
    out.meta = { ...(isJsonObject(out.meta) ? out.meta : {}), lastUpdated: ctx.lastUpdated };
  }
  return { resource: out, references };
}

interface Rewriter {
  /** The new reference for `ref` found at `path` (the Reference element's path). */
  readonly resolve: (ref: string, path: readonly (string | number)[]) => string;
  readonly narrative: (div: string) => string;
}

/** A deep copy of `value` with references and narrative links rewritten. `path` is a stack: the
 * expression is only rendered for a reference that fails, which keeps large bundles cheap. */
function rewriteValue(value: unknown, path: (string | number)[], rw: Rewriter): unknown {
  if (Array.isArray(value)) {
    return value.map((item, i) => {
      path.push(i);
      const out = rewriteValue(item, path, rw);
      path.pop();
      return out;
    });
  }
  if (!isJsonObject(value)) return value;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value)) {
    const child = value[key];
    if (key === 'reference' && typeof child === 'string') {
      out[key] = rw.resolve(child, path);
    } else if (key === 'div' && typeof child === 'string') {
      out[key] = rw.narrative(child);
    } else if (typeof child === 'object' && child !== null) {
      path.push(key);
      out[key] = rewriteValue(child, path, rw);
      path.pop();
    } else {
      out[key] = child;
    }
  }
  return out;
}

function renderPath(path: readonly (string | number)[]): string {
  return path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${p}`)).join('');
}
