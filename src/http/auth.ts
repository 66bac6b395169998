/**
 * The one authorisation hook every route goes through (server.ts installs it as the first
 * onRequest hook, and refuses to register a route that does not declare its rule).
 *
 * A route is `public` (`GET /fhir/metadata`, discovery, the authorisation server's own endpoints,
 * the portal), `ehr`: it needs `Authorization: Bearer <token>`, either a SMART access token of this
 * sidecar (smart/tokens.ts: signature, issuer, audience, expiry, revocation) or the EHR's
 * configured static token (kept for EHRs that cannot do SMART Backend Services yet; never logged);
 * or `patient-signed`: the body or header carries the patient's own signature (a grant, a
 * revocation, an upload grant), which is what authorises it; the hook lets it through without a
 * token and the route's handler MUST verify that signature against the patient's keys on the
 * pinned ledger before it acts. The static token comparison is constant-time (both sides hashed to
 * 32 bytes, then timingSafeEqual). A missing or wrong token is 401 with a `WWW-Authenticate: Bearer`
 * challenge (RFC 6750) and an OperationOutcome saying why. What an accepted token may do is then
 * each FHIR route's decision (authz/access.ts, `requireAccess`): 403 `insufficient_scope`.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import {
  type Access,
  type AccessDecision,
  type AccessRequest,
  decide,
  decideEverything,
} from '../authz/access.ts';
import { parseScopes } from '../authz/scopes.ts';
import type { AuditAgent } from '../fhir/audit.ts';
import { issue, OutcomeError } from '../fhir/outcome.ts';
import { TokenError, type TokenService } from '../smart/tokens.ts';

/**
 * Who may call a route: anyone, a bearer of an access token (a SMART token, or the EHR's static
 * one), or whoever brings a patient's signature that the handler verifies.
 */
export type AuthRule = 'public' | 'ehr' | 'patient-signed';

export const AUTH_RULES: readonly AuthRule[] = ['public', 'ehr', 'patient-signed'];

export const REALM = 'spchain-sidecar';

/** The shortest static token accepted (hex of 16 random bytes is 32 characters). */
export const MIN_TOKEN_LENGTH = 32;

/** Who is calling, for the audit trail, and what they may do. */
export interface Principal extends AuditAgent {
  readonly access: Access;
}

export interface Authoriser {
  /** The principal for a request with this Authorization header, or a 401 OutcomeError. */
  authorise(rule: AuthRule, authorization: string | undefined, address: string): Promise<Principal>;
}

export function checkToken(token: string): void {
  if (typeof token !== 'string' || token.length < MIN_TOKEN_LENGTH || /\s/.test(token)) {
    throw new RangeError(
      `the EHR bearer token must be at least ${MIN_TOKEN_LENGTH} characters without spaces`,
    );
  }
}

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();
const NONE: Access = { kind: 'none' };

/**
 * Bearer tokens: SMART access tokens of `tokens` (when given) and the EHR's static token (when
 * given). At least one must be.
 */
export function bearerAuthoriser(o: { staticToken?: string; tokens?: TokenService }): Authoriser {
  if (o.staticToken === undefined && o.tokens === undefined) {
    throw new RangeError('an authoriser needs a static EHR token, a token service, or both');
  }
  if (o.staticToken !== undefined) checkToken(o.staticToken);
  const expected = o.staticToken === undefined ? undefined : digest(o.staticToken);
  return {
    async authorise(rule, authorization, address) {
      if (rule === 'public') return { id: 'anonymous', method: 'public', address, access: NONE };
      if (rule === 'patient-signed') {
        return { id: 'patient', method: 'patient-signature', address, access: NONE };
      }
      const m = /^Bearer +([^\s]+) *$/i.exec(authorization ?? '');
      if (!m) throw unauthorised('missing');
      const token = m[1]!;
      if (expected !== undefined && timingSafeEqual(digest(token), expected)) {
        return { id: 'ehr', method: 'static-bearer', address, access: { kind: 'ehr' } };
      }
      if (o.tokens === undefined || token.split('.').length !== 3) throw unauthorised('wrong');
      let claims: Awaited<ReturnType<TokenService['verifyAccessToken']>>;
      try {
        claims = await o.tokens.verifyAccessToken(token);
      } catch (err) {
        if (err instanceof TokenError) throw unauthorised('wrong', err.message);
        throw err;
      }
      const scopes = parseScopes(claims.scope);
      if (!scopes.ok)
        throw unauthorised('wrong', 'the token carries scopes this server cannot read');
      const access: Access = {
        kind: 'token',
        clientId: claims.clientId,
        scopes: scopes.scopes,
        ...(claims.patient ? { patient: claims.patient } : {}),
        ...(claims.idHash ? { idHash: claims.idHash } : {}),
      };
      const method = claims.patient === undefined ? 'smart-backend' : 'smart-launch';
      return { id: claims.clientId, method, address, access };
    },
  };
}

/** The static bearer token authoriser (tests, and EHRs without SMART). */
export function staticTokenAuthoriser(token: string): Authoriser {
  return bearerAuthoriser({ staticToken: token });
}

function unauthorised(why: 'missing' | 'wrong', detail?: string): OutcomeError {
  const text =
    why === 'missing'
      ? 'authorisation required: send Authorization: Bearer <token>'
      : `the bearer token is not valid${detail ? `: ${detail}` : ''}`;
  const challenge =
    why === 'missing'
      ? `Bearer realm="${REALM}"`
      : `Bearer realm="${REALM}", error="invalid_token", error_description="${text.replace(/"/g, "'")}"`;
  return new OutcomeError(401, [issue('login', text)], { 'www-authenticate': challenge });
}

function forbidden(decision: AccessDecision): void {
  if (decision.ok) return;
  throw new OutcomeError(403, [issue('forbidden', decision.reason)], {
    'www-authenticate': `Bearer realm="${REALM}", error="insufficient_scope", error_description="${decision.reason.replace(/"/g, "'")}"`,
  });
}

/** The request's access (set by the hook). */
export function accessOf(req: FastifyRequest): Access {
  return (req.principal as Principal | null)?.access ?? NONE;
}

/** 403 unless the request's token allows `request` (authz/access.ts decide). */
export function requireAccess(req: FastifyRequest, request: AccessRequest): Access {
  const access = accessOf(req);
  forbidden(decide(access, request));
  return access;
}

/** 403 unless the request's token may read the patient's `$everything`. */
export function requireEverything(req: FastifyRequest, patient: string): Access {
  const access = accessOf(req);
  forbidden(decideEverything(access, patient));
  return access;
}
