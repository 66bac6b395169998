/**
 * "Approve an app" (issue 6 part 1): a SMART app's standalone launch at this sidecar makes a
 * pending authorisation request, whose page links here as `/portal/#approve=<request id>` (or the
 * patient pastes the code). The page shows what the request asks (smart/routes.ts
 * GET /smart/authorize/requests/:id): the app, its scopes in words (scope-words.ts) and as
 * asked, the FHIR server and the expiry. Approve signs exactly that (authz/smart-approval.ts) with
 * the patient's signing key, in this page, and POSTs it to the request's decision endpoint; Decline
 * POSTs a refusal. Either way the server answers where the browser goes next (the app's redirect
 * URI with a code, or with error=access_denied), and the page goes there.
 *
 * Only requests of this page's own sidecar: the authorisation routes answer no cross-origin calls.
 */
import { signApproval } from '../authz/smart-approval.ts';
import { toHex } from '../crypto/bytes.ts';
import { type PortalContext, signerOf } from './context.ts';
import { announce, busy, byId, el } from './dom.ts';
import { postJson, requestJson } from './net.ts';
import { checkRedirect, describeScopes, parseApprovalInput } from './scope-words.ts';

/** GET /smart/authorize/requests/:id. */
export interface AuthorizationView {
  readonly request: string;
  readonly chainId: string;
  readonly client: { readonly id: string; readonly name: string };
  readonly scope: string;
  readonly aud: string;
  readonly expires: string;
  readonly decision: string;
}

const button = (id: string) => byId(id, HTMLButtonElement);

/** The request on show (null: none). */
let shown: AuthorizationView | null = null;

function isView(v: unknown, request: string): v is AuthorizationView {
  const x = v as AuthorizationView | null;
  return (
    typeof x === 'object' &&
    x !== null &&
    x.request === request &&
    typeof x.chainId === 'string' &&
    typeof x.client?.id === 'string' &&
    typeof x.client?.name === 'string' &&
    typeof x.scope === 'string' &&
    typeof x.aud === 'string' &&
    typeof x.expires === 'string' &&
    typeof x.decision === 'string'
  );
}

/** The decision endpoint must be on the server the token is for (same origin, http(s)). */
function decisionUrl(view: AuthorizationView): string {
  try {
    const decision = new URL(view.decision);
    const aud = new URL(view.aud);
    if (
      decision.origin === aud.origin &&
      (decision.protocol === 'http:' || decision.protocol === 'https:')
    ) {
      return decision.toString();
    }
  } catch {
    // refused below
  }
  throw new Error('the request names a decision endpoint off its own server: not sent');
}

export function initApprove(ctx: PortalContext): void {
  byId('approve-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = byId('approve-code', HTMLInputElement).value;
    void busy(button('approve-lookup-button'), 'Looking up the request…', () => lookUp(ctx, text));
  });
  button('approve-button').addEventListener('click', () => {
    void busy(button('approve-button'), 'Signing your approval…', () => decide(ctx, true));
  });
  button('decline-button').addEventListener('click', () => {
    void busy(button('decline-button'), 'Declining…', () => decide(ctx, false));
  });
  const fromHash = () => {
    if (!location.hash.startsWith('#approve=')) return;
    const text = location.hash.slice('#approve='.length);
    byId('approve-code', HTMLInputElement).value = text;
    byId('approve').scrollIntoView();
    lookUp(ctx, text).then(
      () => ctx.refresh(),
      (err: Error) => announce(err.message, 'error'),
    );
  };
  window.addEventListener('hashchange', fromHash);
  fromHash();
}

/** Enables Approve when the keys are open, the patient registered and a request is shown. */
export function refreshApprove(ctx: PortalContext): void {
  const open = ctx.session !== null;
  const registered = ctx.state.block !== undefined;
  button('approve-button').disabled = shown === null || !open || !registered;
  button('decline-button').disabled = shown === null;
  byId('approve-needs').textContent =
    shown === null
      ? ''
      : !registered
        ? 'Register (section 2) before you can approve: the approval is checked against your registration.'
        : !open
          ? 'Unlock your keys (section 1) to approve: the approval is signed with them, here.'
          : 'Approving signs this request with your keys, in this page.';
}

async function lookUp(ctx: PortalContext, text: string): Promise<void> {
  const parsed = parseApprovalInput(text);
  if (!parsed.ok) throw new Error(parsed.message);
  if (parsed.origin !== undefined && parsed.origin !== ctx.origin) {
    throw new Error(
      `this request was made at ${parsed.origin}: approve it in that hospital's portal ` +
        `(${parsed.origin}/portal/), with your key file imported there`,
    );
  }
  const { body } = await requestJson<unknown>(
    `${ctx.origin}/smart/authorize/requests/${parsed.request}`,
  );
  if (!isView(body, parsed.request)) {
    throw new Error('the sidecar did not describe the request as expected');
  }
  show(body);
  ctx.refresh();
  announce(`${body.client.name} asks to read your records: see "Approve an app".`, 'ok');
}

function show(view: AuthorizationView): void {
  shown = view;
  byId('approve-title').textContent = `${view.client.name} asks to read your records`;
  const scopes = describeScopes(view.scope).map((w) =>
    el('li', {}, `${w.text} `, el('code', {}, w.scope)),
  );
  const expires = new Date(view.expires);
  byId('approve-details').replaceChildren(
    el('dt', {}, 'App'),
    el('dd', {}, `${view.client.name} (${view.client.id})`),
    el('dt', {}, 'It may'),
    el('dd', {}, el('ul', {}, ...scopes)),
    el('dt', {}, 'Server'),
    el('dd', {}, view.aud),
    el('dt', {}, 'Request expires'),
    el('dd', {}, Number.isNaN(expires.getTime()) ? view.expires : expires.toLocaleString()),
    el('dt', {}, 'Request code'),
    el('dd', {}, view.request),
  );
  byId('approve-request').hidden = false;
}

function clearShown(): void {
  shown = null;
  byId('approve-request').hidden = true;
  byId('approve-details').replaceChildren();
}

async function decide(ctx: PortalContext, approve: boolean): Promise<void> {
  const view = shown;
  if (view === null) throw new Error('look up a request first');
  const url = decisionUrl(view);
  let body: Record<string, unknown>;
  if (approve) {
    const signer = signerOf(ctx);
    if (view.chainId !== signer.chainId) {
      throw new Error('this request is for another network than your registration');
    }
    const signature = signApproval(
      {
        chainId: view.chainId,
        request: view.request,
        clientId: view.client.id,
        scope: view.scope,
        aud: view.aud,
        idHash: signer.idHash,
      },
      signer.signingSecret,
      ctx.random,
    );
    body = {
      request: view.request,
      approve: true,
      idHash: signer.idHash,
      signature: toHex(signature),
    };
  } else {
    body = { request: view.request, approve: false };
  }
  const { body: answer } = await postJson<{ redirect?: unknown }>(url, body, { ok: [200] });
  const redirect = checkRedirect(answer?.redirect);
  clearShown();
  announce(
    approve
      ? `Approved: taking you back to ${view.client.name}…`
      : `Declined: taking you back to ${view.client.name}…`,
    'ok',
  );
  location.assign(redirect);
}
