/**
 * "Requests from institutions" (paper 5.2 "share"; http/access-request-routes.ts): institutions
 * may ask the patient's home for access, and the patient decides here.
 * - the threshold: the lowest reputation an institution must have to ask at all
 *   (GET/PUT /spchain/patients/:idHash/access-policy, signed); below it, the home refuses the
 *   request itself, and the patient never sees it. No threshold: nobody may ask.
 * - the requests (GET /spchain/patients/:idHash/access-requests, signed): who asked, their
 *   reputation then and now, why, when, and what became of it.
 * - approve: the same grant as the "Share" section (sharing.ts grantAccess: Consent and kfrag made
 *   here, sent to the holders), then the decision with that Consent's id (signed), then the share
 *   link for it; decline: the decision alone.
 * Every route is at the home, which is this page's sidecar.
 */
import { formatReputation } from '../authz/access-request.ts';
import { type PortalContext, signerOf } from './context.ts';
import { announce, busy, byId, el, row } from './dom.ts';
import { signedGet, signedSend } from './net.ts';
import { endOfDay, grantAccess, hideLink, initCopy, initEndInput, showLink } from './sharing.ts';

/** One request as the home lists it. */
export interface AccessRequestView {
  readonly id: string;
  readonly institution: number;
  readonly name: string;
  readonly reputation: number;
  readonly reputationNow: number;
  readonly purpose: string;
  readonly time: string;
  readonly state: 'pending' | 'approved' | 'declined';
  readonly decided?: string;
  readonly consentId?: string;
}

const button = (id: string) => byId(id, HTMLButtonElement);

/** The threshold a patient may set: a reputation, in [0, 1]; the problem with `text`, or none. */
export function thresholdInputProblem(text: string): string | undefined {
  const t = text.trim();
  const value = Number(t);
  if (!/^(?:\d+(?:\.\d*)?|\.\d+)$/.test(t) || !(value >= 0 && value <= 1)) {
    return 'the threshold is a reputation: a number from 0 to 1 (for example 0.5)';
  }
  return undefined;
}

function isRequest(v: unknown): v is AccessRequestView {
  const x = v as AccessRequestView | null;
  return (
    typeof x === 'object' &&
    x !== null &&
    typeof x.id === 'string' &&
    /^[0-9a-f]{32}$/.test(x.id) &&
    Number.isSafeInteger(x.institution) &&
    typeof x.name === 'string' &&
    typeof x.reputation === 'number' &&
    typeof x.reputationNow === 'number' &&
    typeof x.purpose === 'string' &&
    typeof x.time === 'string' &&
    ['pending', 'approved', 'declined'].includes(x.state)
  );
}

export function initAccess(ctx: PortalContext): void {
  initEndInput(byId('access-end', HTMLInputElement));
  initCopy('access-copy-button', 'access-link-text');
  button('access-button').addEventListener('click', () => {
    void busy(button('access-button'), 'Loading your threshold and the requests…', async () => {
      const n = await showAccess(ctx);
      announce(`${n} access request${n === 1 ? '' : 's'}.`, 'ok');
    });
  });
  byId('threshold-form').addEventListener('submit', (e) => {
    e.preventDefault();
    void busy(button('threshold-button'), 'Saving your threshold…', () => setThreshold(ctx));
  });
  byId('access-body').addEventListener('click', (e) => {
    const target = (e.target as Element).closest('button');
    const id = target?.dataset.request;
    const decision = target?.dataset.decision;
    if (!target || !id || (decision !== 'approve' && decision !== 'decline')) return;
    void busy(target, decision === 'approve' ? 'Granting access…' : 'Declining…', () =>
      decision === 'approve' ? approve(ctx, id) : decline(ctx, id),
    );
  });
}

/** Enables the section's controls from the keys and the registration. */
export function refreshAccess(ctx: PortalContext): void {
  const ready = ctx.session !== null && ctx.state.block !== undefined;
  button('access-button').disabled = !ready;
  button('threshold-button').disabled = !ready;
  for (const b of Array.from(byId('access-body').querySelectorAll('button'))) {
    if (!b.hasAttribute('aria-busy')) b.disabled = !ready;
  }
}

/** Takes the requests, the threshold and the share link off the page (on lock). */
export function clearAccess(): void {
  byId('access-body').replaceChildren();
  byId('access-table').hidden = true;
  byId('threshold-state').textContent =
    'Your threshold is shown with the requests (your keys must be unlocked).';
  hideLink('access');
}

const policyPath = (idHash: string) => `/spchain/patients/${idHash}/access-policy`;

function thresholdText(min: number | null): string {
  return min === null
    ? 'No threshold set: institutions cannot ask you for access.'
    : `Institutions with a reputation below ${formatReputation(min)} are refused automatically.`;
}

/** Loads and shows the threshold and the requests; the number of requests. */
async function showAccess(ctx: PortalContext): Promise<number> {
  const signer = signerOf(ctx);
  const { body: policy } = await signedGet<{ minReputation?: unknown }>(
    ctx.origin,
    policyPath(signer.idHash),
    signer,
  );
  const min = typeof policy.minReputation === 'number' ? policy.minReputation : null;
  byId('threshold-state').textContent = thresholdText(min);
  if (min !== null) byId('threshold', HTMLInputElement).value = String(min);
  const { body } = await signedGet<{ requests?: unknown }>(
    ctx.origin,
    `/spchain/patients/${signer.idHash}/access-requests`,
    signer,
  );
  const list = Array.isArray(body.requests) ? body.requests.filter(isRequest) : [];
  byId('access-body').replaceChildren(...list.map(requestRow));
  byId('access-table').hidden = false;
  refreshAccess(ctx);
  return list.length;
}

function requestRow(r: AccessRequestView): HTMLTableRowElement {
  const when = new Date(r.time);
  const state =
    r.state === 'approved'
      ? `approved${r.consentId ? ` (${r.consentId})` : ''}`
      : r.state === 'declined'
        ? 'declined'
        : 'waiting for you';
  const actions =
    r.state === 'pending'
      ? el(
          'span',
          {},
          el(
            'button',
            {
              type: 'button',
              'data-request': r.id,
              'data-decision': 'approve',
              'aria-label': `Approve the request of ${r.name}`,
            },
            'Approve',
          ),
          ' ',
          el(
            'button',
            {
              type: 'button',
              'data-request': r.id,
              'data-decision': 'decline',
              'aria-label': `Decline the request of ${r.name}`,
            },
            'Decline',
          ),
        )
      : '';
  return row([
    `${r.name} (${r.institution})`,
    formatReputation(r.reputation),
    formatReputation(r.reputationNow),
    r.purpose,
    Number.isNaN(when.getTime()) ? r.time : when.toLocaleString(),
    state,
    actions,
  ]);
}

async function setThreshold(ctx: PortalContext): Promise<void> {
  const signer = signerOf(ctx);
  const text = byId('threshold', HTMLInputElement).value;
  const problem = thresholdInputProblem(text);
  if (problem !== undefined) throw new Error(problem);
  const minReputation = Number(text.trim());
  const { body } = await signedSend<{ minReputation?: unknown }>(
    ctx.origin,
    'PUT',
    policyPath(signer.idHash),
    { minReputation },
    signer,
  );
  const saved = typeof body.minReputation === 'number' ? body.minReputation : null;
  if (saved !== minReputation) throw new Error('the hospital did not keep the threshold asked');
  byId('threshold-state').textContent = thresholdText(saved);
  announce(`Threshold saved. ${thresholdText(saved)}`, 'ok');
}

/** The pending request `id` as the home lists it now (names the institution to grant). */
async function pendingRequest(ctx: PortalContext, id: string): Promise<AccessRequestView> {
  const signer = signerOf(ctx);
  const { body } = await signedGet<{ requests?: unknown }>(
    ctx.origin,
    `/spchain/patients/${signer.idHash}/access-requests`,
    signer,
  );
  const found = (Array.isArray(body.requests) ? body.requests : []).find(
    (r): r is AccessRequestView => isRequest(r) && r.id === id,
  );
  if (!found) throw new Error('this request is no longer listed');
  if (found.state !== 'pending') throw new Error(`this request was already ${found.state}`);
  return found;
}

const decisionPath = (id: string) => `/spchain/access-requests/${id}/decision`;

async function approve(ctx: PortalContext, id: string): Promise<void> {
  const signer = signerOf(ctx);
  const request = await pendingRequest(ctx, id);
  const end = endOfDay(byId('access-end', HTMLInputElement), Date.now());
  const granted = await grantAccess(ctx, request.institution, end);
  try {
    await signedSend(
      ctx.origin,
      'POST',
      decisionPath(id),
      { decision: 'approve', consentId: granted.made.consentId },
      signer,
    );
  } catch (err) {
    throw new Error(
      `access was granted (${granted.made.consentId}), but the request could not be marked ` +
        `approved: ${(err as Error).message}`,
    );
  }
  await showLink(granted.link, 'access');
  await showAccess(ctx);
  announce(
    `Request of ${request.name} approved: access granted (${granted.made.consentId}, kept by ` +
      `${granted.kept}).${granted.refused.length ? ` Refused: ${granted.refused.join('; ')}` : ''}` +
      ` ${request.name} can read your records now; the share link is below.`,
    granted.refused.length ? 'error' : 'ok',
  );
}

async function decline(ctx: PortalContext, id: string): Promise<void> {
  const signer = signerOf(ctx);
  const request = await pendingRequest(ctx, id);
  await signedSend(ctx.origin, 'POST', decisionPath(id), { decision: 'decline' }, signer);
  await showAccess(ctx);
  announce(`Request of ${request.name} declined.`, 'ok');
}
