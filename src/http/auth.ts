/**
 * The one authorisation hook every route goes through (server.ts installs it as the first
 * onRequest hook, and refuses to register a route that does not declare its rule).
 *
 * INTERIM (until SMART, issue 6): a route is `public` (`GET /fhir/metadata`, `GET
 * /spchain/institution`), `ehr`: it needs `Authorization: Bearer <token>` with the static token
 * configured for the EHR (from the environment or the data directory, never logged), or
 * `patient-signed`: the body carries the patient's own signature (a grant, a revocation, an
 * upload grant), which is what authorises it; the hook lets it through without a token and the
 * route's handler MUST verify that signature against the patient's keys on the pinned ledger
 * before it acts (src/http/share-routes.ts). The comparison is constant-time (both
 * sides hashed to 32 bytes, then timingSafeEqual). A missing or wrong token is 401 with a
 * `WWW-Authenticate: Bearer` challenge (RFC 6750) and an OperationOutcome. SMART replaces
 * `authorise` with token introspection and scopes; the routes keep their rules.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { AuditAgent } from '../fhir/audit.ts';
import { issue, OutcomeError } from '../fhir/outcome.ts';

/**
 * Who may call a route: anyone, the EHR (today: the static bearer token), or whoever brings a
 * patient's signature that the handler verifies.
 */
export type AuthRule = 'public' | 'ehr' | 'patient-signed';

export const AUTH_RULES: readonly AuthRule[] = ['public', 'ehr', 'patient-signed'];

export const REALM = 'spchain-sidecar';

/** The shortest static token accepted (hex of 16 random bytes is 32 characters). */
export const MIN_TOKEN_LENGTH = 32;

export interface Authoriser {
  /** The principal for a request with this Authorization header, or a 401 OutcomeError. */
  authorise(rule: AuthRule, authorization: string | undefined, address: string): AuditAgent;
}

export function checkToken(token: string): void {
  if (typeof token !== 'string' || token.length < MIN_TOKEN_LENGTH || /\s/.test(token)) {
    throw new RangeError(
      `the EHR bearer token must be at least ${MIN_TOKEN_LENGTH} characters without spaces`,
    );
  }
}

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** INTERIM: the static bearer token authoriser. */
export function staticTokenAuthoriser(token: string): Authoriser {
  checkToken(token);
  const expected = digest(token);
  return {
    authorise(rule, authorization, address) {
      if (rule === 'public') return { id: 'anonymous', method: 'public', address };
      if (rule === 'patient-signed') return { id: 'patient', method: 'patient-signature', address };
      const m = /^Bearer +([^\s]+) *$/i.exec(authorization ?? '');
      if (!m) throw unauthorised('missing');
      if (!timingSafeEqual(digest(m[1]!), expected)) throw unauthorised('wrong');
      return { id: 'ehr', method: 'static-bearer', address };
    },
  };
}

function unauthorised(why: 'missing' | 'wrong'): OutcomeError {
  const challenge =
    why === 'missing'
      ? `Bearer realm="${REALM}"`
      : `Bearer realm="${REALM}", error="invalid_token", error_description="the bearer token is not valid"`;
  return new OutcomeError(
    401,
    [
      issue(
        'login',
        why === 'missing'
          ? 'authorisation required: send Authorization: Bearer <token>'
          : 'the bearer token is not valid',
      ),
    ],
    { 'www-authenticate': challenge },
  );
}
