/**
 * What a caller may do on the FHIR API (issue 6 part 3): the one decision every FHIR route asks
 * before it reads or writes, from what the authorisation hook found on the request.
 *
 *   - `ehr`: the EHR's configured static bearer token: everything an EHR does (as system/*.cruds).
 *   - `token`: a SMART access token of this sidecar, with its parsed scopes and, for a patient
 *     launch, the patient. Decision order:
 *       1. a token with a patient (a patient launch) counts only its `patient/` scopes, and only
 *          for that patient's compartment: the request must name the patient (the URL's
 *          Patient/{id}, or the search's `patient`/`subject`), and it must be the token's;
 *       2. a token without a patient (backend services) counts only its `system/` scopes, which
 *          are not tied to a patient;
 *       3. then the scopes (authz/scopes.ts `allows`) for the resource type and interaction; a
 *          granular scope (`?category=`) is decided again on each resource found (`permitted`).
 *   - `none`: nothing (public and patient-signed routes never reach a FHIR resource route).
 * Pure: no IO.
 */
import {
  allows,
  filterResources,
  type Interaction,
  type Scope,
  type ScopeContext,
} from './scopes.ts';

export type Access =
  | { readonly kind: 'ehr' }
  | {
      readonly kind: 'token';
      readonly clientId: string;
      readonly scopes: readonly Scope[];
      /** The FHIR Patient id of a patient launch. */
      readonly patient?: string;
      /** The patient's idHash (hex) of a patient launch. */
      readonly idHash?: string;
    }
  | { readonly kind: 'none' };

export interface AccessRequest {
  readonly resourceType: string;
  readonly interaction: Interaction;
  /** The patient the request names (URL or search), when it names one. */
  readonly patient?: string;
  /** Whether the route serves only one patient's compartment (false: e.g. AuditEvent search). */
  readonly compartment?: boolean;
}

export type AccessDecision =
  | { readonly ok: true }
  | { readonly ok: false; readonly reason: string };

const INTERACTION_NAMES: Record<Interaction, string> = {
  c: 'create',
  r: 'read',
  u: 'update',
  d: 'delete',
  s: 'search',
};

/** The scope context that counts for this access (undefined: the static EHR token). */
export function contextOf(access: Access): ScopeContext | undefined {
  if (access.kind !== 'token') return undefined;
  return access.patient === undefined ? 'system' : 'patient';
}

export function decide(access: Access, req: AccessRequest): AccessDecision {
  if (access.kind === 'ehr') return { ok: true };
  if (access.kind === 'none') return { ok: false, reason: 'no access token was presented' };
  const what = `${INTERACTION_NAMES[req.interaction]} ${req.resourceType}`;
  const context = contextOf(access);
  if (access.patient !== undefined) {
    if (req.compartment === false || req.patient === undefined) {
      return {
        ok: false,
        reason: `a patient's token reaches only that patient's records: ${what} must name the patient (Patient/${access.patient}, or patient=${access.patient})`,
      };
    }
    if (req.patient !== access.patient) {
      return { ok: false, reason: `this token is for another patient than Patient/${req.patient}` };
    }
  }
  const request = {
    resourceType: req.resourceType,
    interaction: req.interaction,
    ...(context ? { context } : {}),
  };
  if (!allows(access.scopes, request)) {
    return { ok: false, reason: `the token's scopes do not allow ${what}` };
  }
  return { ok: true };
}

/**
 * `$everything` of a patient: the compartment check of `decide`, then any scope of the counted
 * context that reads or searches some type (what it returns is then cut down with `permitted`).
 */
export function decideEverything(access: Access, patient: string): AccessDecision {
  if (access.kind !== 'token')
    return decide(access, { resourceType: 'Patient', interaction: 'r', patient });
  const compartment = decide(
    { ...access, scopes: ALL_PATIENT_READS },
    { resourceType: 'Patient', interaction: 'r', patient },
  );
  if (!compartment.ok) return compartment;
  const context = contextOf(access);
  const reads = access.scopes.some(
    (s) =>
      s.kind === 'resource' &&
      s.context === context &&
      (s.permissions.has('r') || s.permissions.has('s')),
  );
  return reads
    ? { ok: true }
    : { ok: false, reason: "the token's scopes read nothing of the patient" };
}

/** Used only to run the compartment part of `decide` without its scope part. */
const ALL_PATIENT_READS: readonly Scope[] = (['patient', 'system'] as const).map((context) => ({
  kind: 'resource' as const,
  context,
  resourceType: '*',
  permissions: new Set<Interaction>(['r', 's']),
  params: new Map<string, string>(),
  text: `${context}/*.rs`,
}));

/** The resources this access may see among those a permitted request found (granular scopes). */
export function permitted<T>(
  access: Access,
  interaction: Interaction,
  resources: readonly T[],
): T[] {
  if (access.kind === 'ehr') return [...resources];
  if (access.kind === 'none') return [];
  return filterResources(access.scopes, contextOf(access), interaction, resources);
}
