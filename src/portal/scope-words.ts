/**
 * What a SMART app asks for, in words a patient understands (the portal's "Approve an app"
 * section), each next to the scope as the app wrote it: "read all your records" for
 * `patient/*.rs`, "keep access after you close the app" for `offline_access`. Parsing is
 * authz/scopes.ts's, so the page explains exactly what the server grants. Also the checks of the
 * text a patient pastes (a request code or the portal link of an approval page) and of the URL the
 * server sends the browser back to. Pure: no DOM, no IO.
 */
import { type Interaction, parseScope, type ResourceScope } from '../authz/scopes.ts';

/** One asked scope: the plain words and the scope as asked. */
export interface ScopeWords {
  readonly text: string;
  readonly scope: string;
}

/** Common record types by what a patient calls them. */
const TYPE_WORDS: Readonly<Record<string, string>> = {
  AllergyIntolerance: 'your allergies',
  CarePlan: 'your care plans',
  Condition: 'your conditions and diagnoses',
  DiagnosticReport: 'your test reports',
  DocumentReference: 'your documents',
  Encounter: 'your visits',
  Immunization: 'your vaccinations',
  MedicationRequest: 'your prescriptions',
  MedicationStatement: 'your medicines',
  Observation: 'your test results and measurements',
  Patient: 'your personal details',
  Procedure: 'your procedures',
};

const SPECIAL_WORDS: Readonly<Record<string, string>> = {
  'launch/patient': 'know which patient record is yours',
  'launch/encounter': 'know which visit you are in',
  launch: 'be started from your record',
  offline_access: 'keep access after you close the app (until you revoke it)',
  online_access: 'keep access while you use the app',
  openid: 'know who you are',
  fhirUser: 'know who you are',
  profile: 'see your name',
};

/** "a, b and c". */
function list(words: readonly string[]): string {
  if (words.length <= 1) return words.join('');
  return `${words.slice(0, -1).join(', ')} and ${words[words.length - 1]}`;
}

function verbs(p: ReadonlySet<Interaction>): string {
  const out: string[] = [];
  if (p.has('r')) out.push('read');
  else if (p.has('s')) out.push('search');
  if (p.has('c')) out.push('add to');
  if (p.has('u')) out.push('change');
  if (p.has('d')) out.push('delete');
  return list(out);
}

function resourceWords(s: ResourceScope): string {
  const what =
    s.resourceType === '*'
      ? 'all your records'
      : (TYPE_WORDS[s.resourceType] ?? `your ${s.resourceType} records`);
  const whose =
    s.context === 'patient'
      ? what
      : s.context === 'user'
        ? what.replace(/\byour\b/g, "a user's")
        : what.replace(/\byour\b/g, "every patient's");
  const category = s.params.get('category');
  const only = category === undefined ? '' : ` (category ${category.split('|').pop()} only)`;
  return `${verbs(s.permissions)} ${whose}${only}`;
}

/** The asked scopes (space separated, as the authorisation server lists them) in words. */
export function describeScopes(scope: string): ScopeWords[] {
  return scope
    .split(' ')
    .filter((t) => t !== '')
    .map((t) => {
      const parsed = parseScope(t);
      if (!parsed.ok) return { text: 'something this portal does not understand', scope: t };
      const s = parsed.scope;
      return {
        text:
          s.kind === 'special'
            ? (SPECIAL_WORDS[s.name] ?? 'a special permission')
            : resourceWords(s),
        scope: t,
      };
    });
}

/** A pending request's id: 16 random bytes in lowercase hex (smart/routes.ts). */
export const REQUEST_ID = /^[0-9a-f]{32}$/;

export type ApprovalInput =
  | { readonly ok: true; readonly request: string; readonly origin?: string }
  | { readonly ok: false; readonly message: string };

/**
 * What the patient pasted or the page was opened with: a request code, or a portal link
 * `<origin>/portal/#approve=<code>` (its origin says which sidecar holds the request).
 */
export function parseApprovalInput(text: string): ApprovalInput {
  const t = text.trim();
  if (REQUEST_ID.test(t.toLowerCase())) return { ok: true, request: t.toLowerCase() };
  let url: URL;
  try {
    url = new URL(t);
  } catch {
    return { ok: false, message: 'the request code has 32 letters and digits (0-9, a-f)' };
  }
  const m = /^#approve=([0-9a-fA-F]{32})$/.exec(url.hash);
  if (!m || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    return { ok: false, message: 'this link is not an approval link of a patient portal' };
  }
  return { ok: true, request: m[1]!.toLowerCase(), origin: url.origin };
}

/**
 * The URL the browser goes to after a decision: the app's registered redirect URI as the server
 * answered it. Only http(s) (the server registers nothing else); anything else is refused.
 */
export function checkRedirect(text: unknown): string {
  if (typeof text !== 'string') throw new Error('the server did not say where to go next');
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error('the server answered a redirect that is not a URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error('the server answered a redirect that is not http(s): not followed');
  }
  return url.toString();
}
