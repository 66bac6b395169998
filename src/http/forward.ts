/**
 * One sidecar calling another on its institution's behalf (a share-link redemption at the link's
 * issuer, an access request at the patient's home): POST a JSON body, and pass the other side's
 * refusal on as our own OperationOutcome, with its status (a 4xx; anything else is 502), its
 * issue code and reason coding, and its text prefixed by who refused. 502 when the other side
 * cannot be reached, times out, redirects or answers something other than JSON.
 */
import { fail, type IssueType, OutcomeError } from '../fhir/outcome.ts';

/** How long a sidecar waits for another. */
export const FORWARD_TIMEOUT_MS = 15_000;

export interface ForwardOpts {
  /** Who is called, for messages: e.g. "the patient's home". */
  readonly who: string;
  readonly timeoutMs?: number;
}

/** The other side's JSON answer on success (2xx), with its status. */
export async function postToSidecar(
  http: typeof fetch,
  url: string,
  body: unknown,
  opts: ForwardOpts,
): Promise<{ status: number; json: unknown }> {
  let res: Response;
  let json: unknown;
  try {
    res = await http(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(body),
      redirect: 'error',
      signal: AbortSignal.timeout(opts.timeoutMs ?? FORWARD_TIMEOUT_MS),
    });
    json = await res.json();
  } catch {
    throw fail(502, 'transient', `${opts.who} could not be reached or did not answer JSON`);
  }
  if (!res.ok) throw passedOn(res.status, json, opts.who);
  return { status: res.status, json };
}

/** The other side's refusal as ours: its first issue's code, coding and text. */
function passedOn(status: number, json: unknown, who: string): OutcomeError {
  const issue = (
    json as { issue?: { code?: unknown; details?: { text?: unknown; coding?: unknown } }[] }
  )?.issue?.[0];
  const text = typeof issue?.details?.text === 'string' ? issue.details.text : `HTTP ${status}`;
  return new OutcomeError(status >= 400 && status < 500 ? status : 502, [
    {
      severity: 'error',
      code: typeof issue?.code === 'string' ? (issue.code as IssueType) : 'exception',
      details: {
        ...(Array.isArray(issue?.details?.coding) ? { coding: issue.details.coding } : {}),
        text: `${who} refused it: ${text.slice(0, 300)}`,
      },
    },
  ]);
}
