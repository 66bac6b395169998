/**
 * Grant, share link and revocation, all signed in the browser:
 * - grant: authz/grant.ts makeGrant (the FHIR Consent signed by the patient and the kfrag from the
 *   patient's PRE key to the grantee's, computed here: the secret key never leaves the page),
 *   sent to every institution holding the patient's records (and to the home sidecar, where the
 *   share link is redeemed), never to the grantee itself: its kfrag with the grantee's secret key
 *   would reveal the patient's key. Each recipient is first asked who it is
 *   (GET /spchain/institution), so a wrong directory entry cannot divert the grant;
 * - share link: authz/share-link.ts makeShareLink, issued by this page's sidecar, shown as text
 *   and as a QR code (qrcode's SVG, made here, inserted as sanitised nodes);
 * - revoke: the patient's signed revocation (authz/consent.ts) to the same institutions.
 * `grantAccess` and `showLink` also serve the approval of an institution's access request
 * (access.ts): the same grant, made the same way.
 */
import QRCode from 'qrcode';
import { revocationToJson, signRevocation } from '../authz/consent.ts';
import { grantToJson, makeGrant } from '../authz/grant.ts';
import { makeShareLink } from '../authz/share-link.ts';
import { fromHex, toHex } from '../crypto/bytes.ts';
import {
  type Directory,
  type GrantMade,
  holdersOf,
  loadDirectory,
  loadRegistration,
  memberOf,
  type PortalContext,
  signerOf,
  urlOf,
} from './context.ts';
import { announce, busy, byId, el, safeSvg } from './dom.ts';
import { postJson, requestJson } from './net.ts';

/** A share link is valid for at most this long (and never past the grant's end). */
export const SHARE_LINK_TTL_MS = 7 * 86_400_000;
const DAY_MS = 86_400_000;

const button = (id: string) => byId(id, HTMLButtonElement);

export function initSharing(ctx: PortalContext): void {
  initEndInput(byId('grant-end', HTMLInputElement));
  byId('grant-form').addEventListener('submit', (e) => {
    e.preventDefault();
    void busy(button('grant-button'), 'Making and sending your grant…', () => grant(ctx));
  });
  byId('revoke-form').addEventListener('submit', (e) => {
    e.preventDefault();
    void busy(button('revoke-button'), 'Revoking…', () => revoke(ctx));
  });
  initCopy('copy-button', 'share-link-text');
}

/** The Copy button of a share link display. */
export function initCopy(buttonId: string, textId: string): void {
  button(buttonId).addEventListener('click', () => {
    const text = byId(textId, HTMLInputElement);
    navigator.clipboard.writeText(text.value).then(
      () => announce('Link copied.', 'ok'),
      () => {
        text.select();
        announce('Copying is not allowed here: the link is selected, copy it yourself.');
      },
    );
  });
}

/** Fills the grantee and revocation choices and enables the buttons. */
export function refreshSharing(ctx: PortalContext): void {
  const ready = ctx.session !== null && ctx.state.block !== undefined;
  const select = byId('grant-institution', HTMLSelectElement);
  const chosen = select.value;
  const d = ctx.directory;
  const choices = d ? d.institutions.filter((i) => i.index !== d.self) : [];
  select.replaceChildren(
    ...choices.map((i) => el('option', { value: String(i.index) }, `${i.name} (${i.index})`)),
  );
  if (choices.some((i) => String(i.index) === chosen)) select.value = chosen;
  button('grant-button').disabled = !ready || choices.length === 0;

  const revocable = ctx.state.grants.filter((g) => !g.revoked);
  const revoke = byId('revoke-consent', HTMLSelectElement);
  revoke.replaceChildren(
    ...revocable.map((g) =>
      el(
        'option',
        { value: g.consentId },
        `${g.granteeName}, until ${new Date(g.end - 1).toISOString().slice(0, 10)} (${g.consentId})`,
      ),
    ),
  );
  button('revoke-button').disabled = !ready || revocable.length === 0;
}

/** Who an institution's sidecar says it is must be who the directory says it is. */
async function checkIdentity(url: string, d: Directory, index: number): Promise<void> {
  const { body } = await requestJson<{ chainId?: unknown; index?: unknown }>(
    `${url}/spchain/institution`,
  );
  if (body.chainId !== d.chainId || body.index !== index) {
    throw new Error(`${new URL(url).origin} is not ${memberOf(d, index)?.name ?? index}`);
  }
}

/** Where grants and revocations go: the holders and the home sidecar, never the grantee. */
function recipients(
  ctx: PortalContext,
  d: Directory,
  holders: readonly number[],
  grantee: number,
): { index: number; url: string }[] {
  const set = new Set([d.self, ...holders]);
  set.delete(grantee);
  const out: { index: number; url: string }[] = [];
  for (const index of set) {
    const url = urlOf(ctx, d, index);
    if (!url) throw new Error(`${memberOf(d, index)?.name ?? index} has no address: nothing sent`);
    out.push({ index, url });
  }
  return out;
}

/** The last day of access chosen in a date input, as an exclusive end (ms). */
export function endOfDay(input: HTMLInputElement, now: number): number {
  const day = input.value;
  if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) throw new Error('choose the last day of access');
  const end = Date.parse(`${day}T00:00:00Z`) + DAY_MS;
  if (!(end > now)) throw new Error('the last day of access must not be in the past');
  return end;
}

/** Sets a date input's earliest choice to tomorrow and its value to 30 days from now. */
export function initEndInput(input: HTMLInputElement): void {
  input.min = new Date(Date.now() + DAY_MS).toISOString().slice(0, 10);
  input.value = new Date(Date.now() + 30 * DAY_MS).toISOString().slice(0, 10);
}

/** A grant made and accepted by the home: its record, share link, and who refused it. */
export interface GrantResult {
  readonly made: GrantMade;
  readonly link: string;
  /** The names of the institutions that keep it. */
  readonly kept: string;
  readonly refused: readonly string[];
}

/**
 * Grants institution `granteeIndex` access until `end` (ms, exclusive): the Consent and kfrag
 * made here, sent to the holders and the home (each checked first), kept in this browser's
 * state; and a share link for it. Throws unless the home accepted it.
 */
export async function grantAccess(
  ctx: PortalContext,
  granteeIndex: number,
  end: number,
): Promise<GrantResult> {
  const signer = signerOf(ctx);
  const session = ctx.session!;
  const block = ctx.state.block;
  if (!block) throw new Error('register first');
  const d = await loadDirectory(ctx);
  const grantee = memberOf(d, granteeIndex);
  if (!grantee || granteeIndex === d.self) throw new Error('choose another institution');
  const now = Date.now();
  if (!(end > now)) throw new Error('the last day of access must not be in the past');
  const reg = await loadRegistration(ctx, signer.idHash);
  const targets = recipients(ctx, d, holdersOf(reg), granteeIndex);
  for (const t of targets) await checkIdentity(t.url, d, t.index);

  const consentId = `consent-${toHex(ctx.random(8))}`;
  const made = makeGrant({
    chainId: signer.chainId,
    idHash: fromHex(signer.idHash),
    patientPreSecret: session.preSecret,
    patientSigningSecret: session.signingSecret,
    grantee: { index: grantee.index, preKey: fromHex(grantee.preKey), name: grantee.name },
    consentId,
    start: now - 5 * 60_000,
    end,
    now,
    random: ctx.random,
  });
  const body = grantToJson(made);
  const accepted: number[] = [];
  const refused: string[] = [];
  for (const t of targets) {
    try {
      await postJson(`${t.url}/spchain/grants`, body, { ok: [200, 201] });
      accepted.push(t.index);
    } catch (err) {
      refused.push((err as Error).message);
    }
  }
  if (!accepted.includes(d.self)) {
    throw new Error(`the grant was not accepted here: ${refused.join('; ')}`);
  }
  const record: GrantMade = {
    consentId,
    grantee: grantee.index,
    granteeName: grantee.name,
    end,
    holders: accepted,
  };
  ctx.state.grants.push(record);
  ctx.save();

  const { link } = makeShareLink(
    {
      chainId: signer.chainId,
      idHash: signer.idHash,
      block,
      consent: consentId,
      grantee: grantee.index,
      issuer: ctx.origin,
      exp: Math.min(end, now + SHARE_LINK_TTL_MS),
    },
    session.signingSecret,
    ctx.random,
  );
  const kept = accepted.map((i) => memberOf(d, i)?.name ?? String(i)).join(', ');
  return { made: record, link, kept, refused };
}

async function grant(ctx: PortalContext): Promise<void> {
  const granteeIndex = Number(byId('grant-institution', HTMLSelectElement).value);
  const end = endOfDay(byId('grant-end', HTMLInputElement), Date.now());
  const { made, link, kept, refused } = await grantAccess(ctx, granteeIndex, end);
  await showLink(link, 'share');
  const name = made.granteeName;
  announce(
    `Access granted to ${name} (kept by ${kept}).${
      refused.length ? ` Refused: ${refused.join('; ')}` : ''
    } Give ${name} the share link below.`,
    refused.length ? 'error' : 'ok',
  );
}

/**
 * Shows a share link as text and as a QR code, in the grant section ('share': #share-link,
 * #share-link-text, #share-qr) or the access requests section ('access': #access-link, ...).
 */
export async function showLink(link: string, where: 'share' | 'access'): Promise<void> {
  byId(`${where}-link-text`, HTMLInputElement).value = link;
  const svg = await QRCode.toString(link, { type: 'svg', errorCorrectionLevel: 'M', margin: 2 });
  const image = safeSvg(svg);
  image.setAttribute('role', 'img');
  image.setAttribute('aria-label', 'QR code of the share link');
  byId(`${where}-qr`).replaceChildren(image);
  byId(`${where}-link`).hidden = false;
}

/** Hides and empties a share link display. */
export function hideLink(where: 'share' | 'access'): void {
  byId(`${where}-link`).hidden = true;
  byId(`${where}-link-text`, HTMLInputElement).value = '';
  byId(`${where}-qr`).replaceChildren();
}

async function revoke(ctx: PortalContext): Promise<void> {
  const signer = signerOf(ctx);
  const consentId = byId('revoke-consent', HTMLSelectElement).value;
  const made = ctx.state.grants.find((g) => g.consentId === consentId);
  if (!made) throw new Error('choose a grant to revoke');
  const d = await loadDirectory(ctx);
  const reg = await loadRegistration(ctx, signer.idHash);
  const targets = recipients(ctx, d, [...holdersOf(reg), ...made.holders], made.grantee);
  const revocation = signRevocation(
    signer.chainId,
    fromHex(signer.idHash),
    consentId,
    signer.signingSecret,
    ctx.random,
  );
  const body = revocationToJson(revocation);
  const refused: string[] = [];
  for (const t of targets) {
    try {
      await postJson(`${t.url}/spchain/revocations`, body, { ok: [200] });
    } catch (err) {
      refused.push((err as Error).message);
    }
  }
  if (refused.length === targets.length) {
    throw new Error(`the revocation was not accepted: ${refused.join('; ')}`);
  }
  made.revoked = true;
  ctx.save();
  hideLink('share');
  hideLink('access');
  announce(
    `Access of ${made.granteeName} revoked (${consentId}).${
      refused.length ? ` Not reached: ${refused.join('; ')}` : ''
    }`,
    refused.length ? 'error' : 'ok',
  );
}
