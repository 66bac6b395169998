/**
 * SMART App Launch 2 scopes (HL7 SMART App Launch 2.x, "Scopes and Launch Context") for this FHIR
 * R4 server: parse what a client asks for, decide what a token may carry (the token endpoint:
 * `grantScopes`), and decide what a token allows (every FHIR route: `allows`, `filterResources`).
 * Pure: no IO, no clock.
 *
 * Grammar (case-sensitive; only OAuth scope-token characters, RFC 6749 section 3.3):
 *   resource scope   context "/" type "." permissions [ "?" name "=" value *( "&" name "=" value ) ]
 *   context          patient | user | system
 *   type             a FHIR resource type name ([A-Z][A-Za-z]*) or "*"
 *   permissions      v1: read | write | *   (read = rs, write = cud, * = cruds)
 *                    v2: a non-empty subsequence of c r u d s, in that order, no repeats
 *   parameters       v2 only (granular scopes); values are percent-decoded. The one parameter
 *                    this server can enforce is `category` = `system|code` or `code`. Any other
 *                    parameter is refused at parse time: a restriction that would not be enforced
 *                    must not quietly become wider access.
 *   special scopes   openid fhirUser profile launch launch/patient launch/encounter offline_access
 *                    online_access: kept as they are.
 *
 * Downscoping (`grantScopes`): a requested resource scope is granted when each of its permissions
 * is covered by some allowed scope with the same context (never a wider one), the same type or
 * "*", that permission, and no parameter the request lacks: every allowed parameter must be on the
 * request with an equal or narrower value (a granular allowed scope never covers an ungranular
 * request). Otherwise the requested scope is dropped whole, never rewritten. A special scope is
 * granted only when the allowed set names it.
 *
 * Decision order (`allows`): the request is checked first (a malformed one is an AuthzError, not a
 * denial), then each resource scope in turn, the first that permits wins:
 *   1. context: the scope's must equal the request's, when the request names one;
 *   2. resource type: equal, or the scope's "*";
 *   3. interaction: among the scope's permissions;
 *   4. parameters: none; or no resource given, a provisional yes (the search may start, the read may
 *      be attempted) after which the caller MUST decide again with each resource it returns,
 *      creates, updates or deletes; or the resource satisfies every parameter (category: some
 *      coding with the scope's code, and its system when the scope names one).
 * No scope permits: deny. What a context means (the launch patient's compartment for patient/, the
 * user's own access for user/) is the route's to enforce; this module only matches it.
 */
import { AuthzError } from './errors.ts';

export const SCOPE_CONTEXTS = ['patient', 'user', 'system'] as const;
export type ScopeContext = (typeof SCOPE_CONTEXTS)[number];

/** create, read, update, delete, search; in the order v2 permissions are written. */
export const INTERACTIONS = ['c', 'r', 'u', 'd', 's'] as const;
export type Interaction = (typeof INTERACTIONS)[number];

export const SPECIAL_SCOPES = [
  'openid',
  'fhirUser',
  'profile',
  'launch',
  'launch/patient',
  'launch/encounter',
  'offline_access',
  'online_access',
] as const;
export type SpecialScopeName = (typeof SPECIAL_SCOPES)[number];

/** Granular-scope parameters that `allows` can enforce. */
export const SCOPE_PARAMETERS = ['category'] as const;

/** The longest scope string accepted, and the most scopes in one. */
export const MAX_SCOPE_CHARS = 4096;
export const MAX_SCOPES = 100;

export interface ResourceScope {
  readonly kind: 'resource';
  readonly context: ScopeContext;
  /** A FHIR resource type, or '*'. */
  readonly resourceType: string;
  readonly permissions: ReadonlySet<Interaction>;
  /** Granular parameters, decoded: e.g. category -> 'http://...observation-category|laboratory'. */
  readonly params: ReadonlyMap<string, string>;
  /** The scope as given. */
  readonly text: string;
}

export interface SpecialScope {
  readonly kind: 'special';
  readonly name: SpecialScopeName;
  readonly text: string;
}

export type Scope = ResourceScope | SpecialScope;

export type ScopeParse =
  | { readonly ok: true; readonly scope: Scope }
  | { readonly ok: false; readonly problem: string };

export type ScopesParse =
  | { readonly ok: true; readonly scopes: readonly Scope[] }
  | { readonly ok: false; readonly problem: string };

/** What a route asks: may this token do `interaction` on `resourceType` (and this resource)? */
export interface AccessRequest {
  /** Only scopes of this context count; any context when absent. */
  readonly context?: ScopeContext;
  readonly resourceType: string;
  readonly interaction: Interaction;
  /** The resource read, created, updated or deleted, when the route has it (granular checks). */
  readonly resource?: unknown;
}

export interface ScopeGrant {
  /** Requested scopes the token may carry, in the order requested, without repeats. */
  readonly granted: readonly Scope[];
  /** Requested scopes not covered by the allowed set. */
  readonly dropped: readonly Scope[];
  /** The granted scopes' texts, space separated (the token response's `scope`). */
  readonly scope: string;
}

const CRUDS = 'cruds';
const V1_PERMISSIONS: ReadonlyMap<string, string> = new Map([
  ['read', 'rs'],
  ['write', 'cud'],
  ['*', 'cruds'],
]);
const RESOURCE_TYPE = /^[A-Z][A-Za-z]{0,63}$/;
/** RFC 6749: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). */
const SCOPE_TOKEN = /^[!#-[\]-~]+$/;
/** One side of a category token: no whitespace, control characters, or FHIR search escapes. */
const TOKEN_PART = /^[^\s\p{Cc},$\\|]+$/u;
/** Characters toV2 writes as they are in a parameter value; the rest are percent-encoded. */
const VALUE_UNSAFE = /[^A-Za-z0-9\-._~:/|@!'()*+;,$]/gu;

const isContext = (s: string): s is ScopeContext =>
  (SCOPE_CONTEXTS as readonly string[]).includes(s);
const isInteraction = (s: unknown): s is Interaction =>
  typeof s === 'string' && (INTERACTIONS as readonly string[]).includes(s);
const isSpecial = (s: string): s is SpecialScopeName =>
  (SPECIAL_SCOPES as readonly string[]).includes(s);
const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** A scope's text for an error message: quoted, and cut short. */
function quote(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}...` : text);
}

const problem = (text: string, why: string): ScopeParse => ({
  ok: false,
  problem: `scope ${quote(text)} ${why}`,
});

/** Parse one scope token. Never throws: a bad scope is `{ ok: false, problem }` naming it. */
export function parseScope(text: string): ScopeParse {
  if (typeof text !== 'string') return { ok: false, problem: 'a scope must be a string' };
  if (text.length === 0) return { ok: false, problem: 'a scope is empty' };
  if (text.length > MAX_SCOPE_CHARS) {
    return problem(text, `is ${text.length} characters long; at most ${MAX_SCOPE_CHARS}`);
  }
  if (!SCOPE_TOKEN.test(text)) {
    return problem(text, 'has a character no OAuth scope may have (space, quote, \\, non-ASCII)');
  }
  if (isSpecial(text)) return { ok: true, scope: { kind: 'special', name: text, text } };
  const slash = text.indexOf('/');
  if (slash < 0) {
    return problem(
      text,
      'is not a known scope (expected context/Type.permissions or a launch scope)',
    );
  }
  const context = text.slice(0, slash);
  if (!isContext(context)) {
    return problem(text, 'has an unknown context (expected patient/, user/ or system/)');
  }
  const rest = text.slice(slash + 1);
  const q = rest.indexOf('?');
  const body = q < 0 ? rest : rest.slice(0, q);
  const dot = body.indexOf('.');
  if (dot < 0) return problem(text, 'has no ".permissions" after the resource type');
  const resourceType = body.slice(0, dot);
  const written = body.slice(dot + 1);
  if (resourceType === '') return problem(text, 'has no resource type');
  if (resourceType !== '*' && !RESOURCE_TYPE.test(resourceType)) {
    return problem(text, 'has an invalid resource type (expected a FHIR resource type or *)');
  }
  if (written === '') return problem(text, 'has no permissions after "."');
  const v1 = V1_PERMISSIONS.get(written);
  if (v1 !== undefined && q >= 0) {
    return problem(text, 'has parameters on v1 permissions (granular scopes need v2, e.g. .rs)');
  }
  const permissions = parsePermissions(v1 ?? written);
  if (typeof permissions === 'string') return problem(text, permissions);
  const params = q < 0 ? new Map<string, string>() : parseParams(rest.slice(q + 1));
  if (typeof params === 'string') return problem(text, params);
  return {
    ok: true,
    scope: { kind: 'resource', context, resourceType, permissions, params, text },
  };
}

/** v2 permissions: a non-empty subsequence of "cruds"; a string is the problem. */
function parsePermissions(written: string): Set<Interaction> | string {
  const out = new Set<Interaction>();
  let last = -1;
  for (const ch of written) {
    const at = CRUDS.indexOf(ch);
    if (at < 0) {
      return `has an unknown permission ${JSON.stringify(ch)} (v1: read, write or *; v2: letters of cruds)`;
    }
    if (out.has(ch as Interaction)) return `repeats the permission "${ch}"`;
    if (at < last) return 'has permissions out of order (v2 writes them in the order c r u d s)';
    out.add(ch as Interaction);
    last = at;
  }
  return out;
}

/** Granular parameters `name=value&...`; a string is the problem. */
function parseParams(query: string): Map<string, string> | string {
  if (query === '') return 'has an empty query after "?"';
  const params = new Map<string, string>();
  for (const pair of query.split('&')) {
    const eq = pair.indexOf('=');
    if (eq <= 0) return `has a parameter that is not name=value: ${quote(pair)}`;
    const name = pair.slice(0, eq);
    if (!(SCOPE_PARAMETERS as readonly string[]).includes(name)) {
      return (
        `has the parameter ${quote(name)}, which this server cannot enforce (only ` +
        `${SCOPE_PARAMETERS.join(', ')}); refused rather than granted wider`
      );
    }
    if (params.has(name)) return `repeats the parameter "${name}" (use one scope per value)`;
    let value: string;
    try {
      value = decodeURIComponent(pair.slice(eq + 1));
    } catch {
      return `has a malformed percent-escape in "${name}"`;
    }
    const bad = checkCategory(value);
    if (bad !== undefined) return bad;
    params.set(name, value);
  }
  return params;
}

function checkCategory(value: string): string | undefined {
  const parts = value.split('|');
  if (parts.length > 2) return 'has more than one "|" in category (expected system|code or code)';
  if (!parts.every((p) => TOKEN_PART.test(p))) {
    return (
      'has a category with an empty system or code, whitespace, ",", "$" or "\\" ' +
      '(expected one system|code or code per scope)'
    );
  }
  return undefined;
}

/**
 * Parse a space-separated scope string (the `scope` of an authorize or token request, or a
 * client's configuration). Every bad scope is named in `problem`; repeats are kept once. An empty
 * string is no scopes.
 */
export function parseScopes(spaceSeparated: string): ScopesParse {
  if (typeof spaceSeparated !== 'string') {
    return { ok: false, problem: 'scope must be a space-separated string' };
  }
  if (spaceSeparated.length > MAX_SCOPE_CHARS) {
    return {
      ok: false,
      problem: `scope is ${spaceSeparated.length} characters long; at most ${MAX_SCOPE_CHARS}`,
    };
  }
  if (spaceSeparated === '') return { ok: true, scopes: [] };
  const tokens = spaceSeparated.split(' ');
  if (tokens.length > MAX_SCOPES) {
    return { ok: false, problem: `scope has ${tokens.length} scopes; at most ${MAX_SCOPES}` };
  }
  const problems: string[] = [];
  const scopes: Scope[] = [];
  const seen = new Set<string>();
  tokens.forEach((token, i) => {
    if (token === '') {
      problems.push(`scope ${i + 1} is empty (scopes are separated by single spaces)`);
      return;
    }
    const parsed = parseScope(token);
    if (!parsed.ok) problems.push(parsed.problem);
    else if (!seen.has(token)) {
      seen.add(token);
      scopes.push(parsed.scope);
    }
  });
  if (problems.length > 0) return { ok: false, problem: problems.join('; ') };
  return { ok: true, scopes };
}

/** The canonical v2 form: `patient/Observation.rs`, parameters sorted and percent-encoded. */
export function toV2(scope: Scope): string {
  if (scope.kind === 'special') return scope.name;
  const permissions = INTERACTIONS.filter((i) => scope.permissions.has(i)).join('');
  const base = `${scope.context}/${scope.resourceType}.${permissions}`;
  if (scope.params.size === 0) return base;
  const query = [...scope.params]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, value]) => `${name}=${value.replace(VALUE_UNSAFE, encodeURIComponent)}`)
    .join('&');
  return `${base}?${query}`;
}

/** The contexts of the resource scopes present. */
export function scopeContexts(scopes: readonly Scope[]): ReadonlySet<ScopeContext> {
  const out = new Set<ScopeContext>();
  for (const s of scopes) if (s.kind === 'resource') out.add(s.context);
  return out;
}

/** Whether a token with these scopes must carry a patient: any patient/ scope, or launch/patient. */
export function needsPatientContext(scopes: readonly Scope[]): boolean {
  return scopes.some(
    (s) =>
      (s.kind === 'resource' && s.context === 'patient') ||
      (s.kind === 'special' && s.name === 'launch/patient'),
  );
}

/** The requested scopes a token may carry given the allowed (widest) scopes; see the header. */
export function grantScopes(requested: readonly Scope[], allowed: readonly Scope[]): ScopeGrant {
  const granted: Scope[] = [];
  const dropped: Scope[] = [];
  const seen = new Set<string>();
  for (const r of requested) {
    if (seen.has(r.text)) continue;
    seen.add(r.text);
    (isCovered(r, allowed) ? granted : dropped).push(r);
  }
  return { granted, dropped, scope: granted.map((s) => s.text).join(' ') };
}

function isCovered(requested: Scope, allowed: readonly Scope[]): boolean {
  if (requested.kind === 'special') {
    return allowed.some((a) => a.kind === 'special' && a.name === requested.name);
  }
  for (const p of requested.permissions) {
    if (!allowed.some((a) => a.kind === 'resource' && covers(a, requested, p))) return false;
  }
  return true;
}

function covers(a: ResourceScope, r: ResourceScope, p: Interaction): boolean {
  if (a.context !== r.context) return false;
  if (a.resourceType !== '*' && a.resourceType !== r.resourceType) return false;
  if (!a.permissions.has(p)) return false;
  for (const [name, value] of a.params) {
    const asked = r.params.get(name);
    if (asked === undefined || !paramCovers(name, value, asked)) return false;
  }
  return true;
}

/** Whether every resource `asked` admits is admitted by `allowed` (equal, or code-only ⊇ system|code). */
function paramCovers(name: string, allowed: string, asked: string): boolean {
  if (allowed === asked) return true;
  if (name !== 'category' || allowed.includes('|')) return false;
  const [, code] = asked.split('|');
  return code === allowed;
}

/** Whether any of the scopes permits the request; see the decision order in the header. */
export function allows(scopes: readonly Scope[], request: AccessRequest): boolean {
  checkRequest(request);
  return scopes.some((s) => s.kind === 'resource' && permits(s, request));
}

/**
 * The resources (of any types) the scopes permit for this interaction, each decided with its own
 * resourceType and content. Something that is not a resource is left out.
 */
export function filterResources<T>(
  scopes: readonly Scope[],
  context: ScopeContext | undefined,
  interaction: Interaction,
  resources: readonly T[],
): T[] {
  if (context !== undefined && !isContext(context)) {
    throw new AuthzError('INVALID_ARGUMENT', 'context must be patient, user or system');
  }
  if (!isInteraction(interaction)) {
    throw new AuthzError(
      'INVALID_ARGUMENT',
      `interaction must be one of ${INTERACTIONS.join(' ')}`,
    );
  }
  return resources.filter((resource) => {
    if (!isObject(resource)) return false;
    const resourceType = resource.resourceType;
    if (typeof resourceType !== 'string' || !RESOURCE_TYPE.test(resourceType)) return false;
    const request = { context, resourceType, interaction, resource };
    return scopes.some((s) => s.kind === 'resource' && permits(s, request));
  });
}

function checkRequest(request: AccessRequest): void {
  const bad = (field: string, why: string) =>
    new AuthzError('INVALID_ARGUMENT', `request.${field} ${why}`, { field: `request.${field}` });
  if (!isObject(request)) throw bad('', 'must be an object');
  if (request.context !== undefined && !isContext(request.context)) {
    throw bad('context', 'must be patient, user or system');
  }
  if (typeof request.resourceType !== 'string' || !RESOURCE_TYPE.test(request.resourceType)) {
    throw bad('resourceType', 'must be a FHIR resource type name');
  }
  if (!isInteraction(request.interaction)) {
    throw bad('interaction', `must be one of ${INTERACTIONS.join(' ')}`);
  }
  if (request.resource !== undefined) {
    if (!isObject(request.resource)) throw bad('resource', 'must be a FHIR resource object');
    if (request.resource.resourceType !== request.resourceType) {
      throw bad('resource.resourceType', 'must equal request.resourceType');
    }
  }
}

function permits(scope: ResourceScope, request: AccessRequest): boolean {
  if (request.context !== undefined && scope.context !== request.context) return false;
  if (scope.resourceType !== '*' && scope.resourceType !== request.resourceType) return false;
  if (!scope.permissions.has(request.interaction)) return false;
  if (scope.params.size === 0 || request.resource === undefined) return true;
  const resource = request.resource;
  if (!isObject(resource)) return false;
  for (const [name, value] of scope.params) {
    if (!satisfies(name, value, resource)) return false;
  }
  return true;
}

/** Whether the resource meets one granular parameter; a parameter not known here never does. */
function satisfies(name: string, value: string, resource: Record<string, unknown>): boolean {
  if (name !== 'category') return false;
  const bar = value.indexOf('|');
  const system = bar < 0 ? undefined : value.slice(0, bar);
  const code = value.slice(bar + 1);
  const category = resource.category;
  const items: unknown[] = Array.isArray(category) ? category : [category];
  return items.some((item) => {
    // AllergyIntolerance.category is a plain code; most others are CodeableConcepts.
    if (typeof item === 'string') return system === undefined && item === code;
    if (!isObject(item) || !Array.isArray(item.coding)) return false;
    return item.coding.some(
      (c: unknown) =>
        isObject(c) && c.code === code && (system === undefined || c.system === system),
    );
  });
}
