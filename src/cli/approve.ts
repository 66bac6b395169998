/**
 * `patient approve`: the patient's decision on a SMART app's pending authorisation request (issue
 * 6 part 1), from the command line instead of the portal. The sidecar's authorisation server shows
 * what the request asks (`GET /smart/authorize/requests/:id`: the client, the scopes, the FHIR
 * server, the network); that is printed, then signed with the key file's signing key
 * (authz/smart-approval.ts signApproval: exactly this request, client, scopes and server) and
 * posted (`POST /smart/authorize/decision`). The answer is the app's redirect URL with its code
 * (or, declined, with `access_denied`), where the app continues.
 */
import { signApproval } from '../authz/smart-approval.ts';
import { toHex } from '../crypto/bytes.ts';
import { systemRandom } from '../crypto/random.ts';
import type { Bytes } from '../ledger/types.ts';
import { describe, fetchJson } from './patient.ts';
import { baseUrl, type PatientSecrets, type Print } from './share.ts';

/** A pending request's view, as src/smart/routes.ts gives it. */
export interface RequestView {
  readonly request: string;
  readonly chainId: string;
  readonly client: { readonly id: string; readonly name: string };
  readonly scope: string;
  readonly aud: string;
  readonly expires?: string;
}

const REQUEST_ID = /^[A-Za-z0-9_-]{1,128}$/;

export function checkRequestId(id: string): string {
  if (!REQUEST_ID.test(id)) {
    throw new Error('--request must be the id of a pending request ([A-Za-z0-9_-], 1-128)');
  }
  return id;
}

function checkView(v: unknown, id: string): RequestView {
  const o = v as Partial<RequestView> | null;
  const ok =
    o !== null &&
    typeof o === 'object' &&
    o.request === id &&
    typeof o.chainId === 'string' &&
    typeof o.client?.id === 'string' &&
    typeof o.client.name === 'string' &&
    typeof o.scope === 'string' &&
    typeof o.aud === 'string';
  if (!ok) throw new Error('the sidecar answered a request view that is not well formed');
  return o as RequestView;
}

/** Fetches the request, prints it, and posts the decision; returns the app's redirect URL. */
export async function decideSmartRequest(o: {
  readonly sidecar: string;
  readonly request: string;
  /** Undefined: decline (nothing is signed). */
  readonly approve?: {
    readonly chainId: string;
    readonly idHash: Bytes;
    readonly keys: Pick<PatientSecrets, 'signingSecret'>;
  };
  readonly print: Print;
}): Promise<string> {
  const base = baseUrl(o.sidecar);
  const id = checkRequestId(o.request);
  const got = await fetchJson(`${base}/smart/authorize/requests/${id}`, {
    headers: { accept: 'application/json' },
  });
  if (got.status !== 200) throw new Error(`no such pending request at ${base}: ${describe(got)}`);
  const view = checkView(got.body, id);
  o.print(`${view.client.name} (client ${view.client.id}) asks for access to ${view.aud}`);
  o.print(`  scopes: ${view.scope}`);
  if (view.expires !== undefined) o.print(`  the request expires at ${view.expires}`);
  let body: Record<string, unknown>;
  if (o.approve === undefined) {
    body = { request: id, approve: false };
  } else {
    const { chainId, idHash, keys } = o.approve;
    if (view.chainId !== chainId) {
      throw new Error(
        `the request is for network ${view.chainId}, the patient's is ${chainId}: nothing was signed`,
      );
    }
    const hex = toHex(idHash);
    const subject = {
      chainId,
      request: id,
      clientId: view.client.id,
      scope: view.scope,
      aud: view.aud,
      idHash: hex,
    };
    const signature = signApproval(subject, keys.signingSecret, systemRandom);
    body = { request: id, approve: true, idHash: hex, signature: toHex(signature) };
  }
  const sent = await fetchJson(`${base}/smart/authorize/decision`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const redirect = (sent.body as { redirect?: unknown })?.redirect;
  if (sent.status !== 200 || typeof redirect !== 'string') {
    throw new Error(`the decision was refused: ${describe(sent)}`);
  }
  o.print(o.approve === undefined ? 'declined.' : `approved for ${view.client.name}.`);
  o.print(`the app continues at: ${redirect}`);
  return redirect;
}
