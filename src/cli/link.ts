/**
 * `patient link` (and `patient grant --link`): the share link the patient hands to the institution
 * they granted (authz/share-link.ts makeShareLink), signed here with the key file's signing key.
 * It names the patient's pinned block, which the issuer (the sidecar where the link is redeemed,
 * normally the patient's home, and a holder of the grant) tells publicly
 * (`GET /spchain/patients/:idHash/registration`); the issuer must be on the key file's network.
 * With `qr`, the link is also written as an SVG QR code (the `qrcode` package) for a phone to
 * show. Output names the grantee and the expiry; the link itself carries no identifier.
 */
import { writeFile } from 'node:fs/promises';
import QRCode from 'qrcode';
import { makeShareLink } from '../authz/share-link.ts';
import { toHex } from '../crypto/bytes.ts';
import { systemRandom } from '../crypto/random.ts';
import type { Bytes, Genesis, Member } from '../ledger/types.ts';
import { describe, fetchJson } from './patient.ts';
import { baseUrl, identify, type PatientSecrets, type Print } from './share.ts';

/** A share link is valid for at most this long by default (the portal's default too). */
export const DEFAULT_LINK_TTL_MS = 7 * 86_400_000;

/** The patient's pinned block as the issuer tells it. */
async function pinnedBlock(issuer: string, idHash: Bytes): Promise<{ i: number; j: number }> {
  const r = await fetchJson(`${issuer}/spchain/patients/${toHex(idHash)}/registration`, {});
  const b = r.body as { registered?: unknown; block?: { i?: unknown; j?: unknown } };
  if (r.status !== 200)
    throw new Error(`${issuer} did not answer the registration: ${describe(r)}`);
  if (b.registered !== true) {
    throw new Error(`the patient's registration is not pinned as ${issuer} sees it`);
  }
  const { i, j } = b.block ?? {};
  if (!Number.isSafeInteger(i) || !Number.isSafeInteger(j)) {
    throw new Error(`${issuer} answered a registration without its block`);
  }
  return { i: i as number, j: j as number };
}

/** The issuer as a share link names it: an absolute http(s) base URL without trailing slash. */
export function issuerUrl(text: string): string {
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    url = undefined;
  }
  if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    throw new Error('--issuer must be the http(s) URL of the sidecar where the link is redeemed');
  }
  if (url.search !== '' || url.hash !== '') {
    throw new Error('--issuer must be a base URL without query or fragment');
  }
  return baseUrl(text);
}

/** Makes, prints and (with `qr`) draws the share link; returns its text. */
export async function makeLink(o: {
  readonly genesis: Pick<Genesis, 'chainId'>;
  readonly keys: Pick<PatientSecrets, 'signingSecret'>;
  readonly idHash: Bytes;
  readonly consentId: string;
  readonly grantee: Member;
  readonly issuer: string;
  /** ms since epoch. */
  readonly exp: number;
  /** A file for the QR code (SVG). */
  readonly qr?: string;
  readonly print: Print;
}): Promise<string> {
  const issuer = issuerUrl(o.issuer);
  const who = await identify(issuer);
  if (who.chainId !== o.genesis.chainId) {
    throw new Error(`${issuer} is on network ${who.chainId}, not ${o.genesis.chainId}`);
  }
  const block = await pinnedBlock(issuer, o.idHash);
  const { link } = makeShareLink(
    {
      chainId: o.genesis.chainId,
      idHash: o.idHash,
      block,
      consent: o.consentId,
      grantee: o.grantee.index,
      issuer,
      exp: o.exp,
    },
    o.keys.signingSecret,
    systemRandom,
  );
  o.print(
    `share link for ${o.grantee.name} (consent ${o.consentId}, redeemed once at ${who.name}, valid until ${new Date(o.exp).toISOString()}):`,
  );
  o.print(link);
  if (o.qr !== undefined) {
    const svg = await QRCode.toString(link, { type: 'svg', errorCorrectionLevel: 'M', margin: 2 });
    await writeFile(o.qr, svg, { mode: 0o600 });
    o.print(`QR code written to ${o.qr}`);
  }
  return link;
}
