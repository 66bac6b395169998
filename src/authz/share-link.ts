/**
 * Share links: what the patient hands to the institution they granted (a URL, or its QR code).
 * After a grant (grant.ts) the patient's device signs a small payload that names the patient's
 * block, the Consent, the one institution that may use it, the sidecar where it is redeemed
 * (`issuer`), an expiry and a random nonce. The grantee's sidecar presents it to the issuer
 * (`POST /spchain/share-links/redeem`) with its own institution signature; the issuer checks the
 * patient's signature against the pinned block, the grantee, the expiry, single use (nonce) and
 * that the Consent is still active, then tells the grantee which patient to read.
 *
 * Payload (JSON, then base64url without padding):
 *   { v: 1, chainId, idHash, block: { i, j }, consent, grantee, issuer, exp, nonce, sig }
 * sig = ECDSA (crypto/sign.ts), domain 'spchain/share-link', over the codec encoding of
 *   u8 v, string chainId, fixed32 idHash, varint i, varint j, string consent, varint grantee,
 *   string issuer, varint exp, fixed16 nonce.
 * Link text: `<issuer>/portal/#share=<payload>`; `spchain+share:<payload>` is accepted too.
 *
 * The redemption signature (the grantee institution's, with its genesis signing key), domain
 * 'spchain/share-link-redeem', is over: string chainId, fixed16 nonce, varint institution, varint ts.
 *
 * Pure: no clock (now is passed in), randomness passed in; base64url is done here so the module
 * runs unchanged in the browser.
 */
import { fromHex, toHex } from '../crypto/bytes.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { sign, verify } from '../crypto/sign.ts';
import { encode } from '../ledger/codec.ts';
import type { BlockRef, Bytes, InstitutionIndex } from '../ledger/types.ts';
import { AuthzError } from './errors.ts';

export const SHARE_LINK_DOMAIN = 'spchain/share-link';
export const SHARE_LINK_REDEEM_DOMAIN = 'spchain/share-link-redeem';
export const SHARE_LINK_SCHEME = 'spchain+share:';
export const SHARE_LINK_FRAGMENT = '#share=';
export const SHARE_LINK_VERSION = 1;

const MAX_LINK_CHARS = 4096;
const MAX_ISSUER_CHARS = 1024;
const MAX_CHAIN_ID_CHARS = 128;
const HEX64 = /^[0-9a-f]{64}$/;
const HEX32 = /^[0-9a-f]{32}$/;
const HEX128 = /^[0-9a-f]{128}$/;
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const FIELDS = [
  'v',
  'chainId',
  'idHash',
  'block',
  'consent',
  'grantee',
  'issuer',
  'exp',
  'nonce',
  'sig',
] as const;

export interface ShareLinkPayload {
  readonly v: 1;
  readonly chainId: string;
  /** Lowercase hex. */
  readonly idHash: string;
  readonly block: BlockRef;
  /** The Consent id of the grant. */
  readonly consent: string;
  readonly grantee: InstitutionIndex;
  /** Base URL of the sidecar where the link is redeemed (no trailing slash). */
  readonly issuer: string;
  /** Expiry, ms since epoch: valid while now < exp. */
  readonly exp: number;
  /** 16 random bytes, lowercase hex: the link's identity for single use. */
  readonly nonce: string;
  /** The patient's signature, lowercase hex. */
  readonly sig: string;
}

export type ShareLinkFields = Omit<ShareLinkPayload, 'v' | 'nonce' | 'sig' | 'idHash'> & {
  readonly idHash: string | Bytes;
};

export type ShareLinkFailure = 'BAD_SIGNATURE' | 'EXPIRED' | 'WRONG_NETWORK' | 'MALFORMED';

export type ShareLinkCheck =
  | { readonly ok: true }
  | { readonly ok: false; readonly reason: ShareLinkFailure; readonly message: string };

export type ShareLinkParse =
  | { readonly ok: true; readonly payload: ShareLinkPayload }
  | { readonly ok: false; readonly reason: 'MALFORMED'; readonly message: string };

// ---------------------------------------------------------------------------------------------
// base64url (RFC 4648 section 5, no padding), strict: one text per byte string.

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

export function toBase64Url(bytes: Bytes): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    const chars = Math.min(4, Math.ceil(((bytes.length - i) * 8) / 6));
    for (let k = 0; k < chars; k++) out += B64URL[(n >> (18 - 6 * k)) & 63];
  }
  return out;
}

/** The bytes of canonical unpadded base64url, or null. */
export function fromBase64Url(text: string): Bytes | null {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) return null;
  const out = new Uint8Array(Math.floor((text.length * 6) / 8));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (const c of text) {
    acc = (acc << 6) | B64URL.indexOf(c);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
      acc &= (1 << bits) - 1;
    }
  }
  return acc === 0 ? out : null; // leftover bits must be zero (canonical)
}

// ---------------------------------------------------------------------------------------------

/** The first problem with the payload's shape, or undefined. */
function shapeProblem(p: Record<string, unknown>): string | undefined {
  const keys = Object.keys(p);
  const extra = keys.find((k) => !(FIELDS as readonly string[]).includes(k));
  if (extra !== undefined) return `share link: unknown field ${JSON.stringify(extra.slice(0, 32))}`;
  const missing = FIELDS.find((k) => !(k in p));
  if (missing !== undefined) return `share link: ${missing} is missing`;
  const nat = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
  const block = p.block as Record<string, unknown> | null;
  if (p.v !== SHARE_LINK_VERSION) return `share link: v must be ${SHARE_LINK_VERSION}`;
  if (
    typeof p.chainId !== 'string' ||
    p.chainId.length === 0 ||
    p.chainId.length > MAX_CHAIN_ID_CHARS
  ) {
    return `share link: chainId must be a string of 1 to ${MAX_CHAIN_ID_CHARS} characters`;
  }
  if (typeof p.idHash !== 'string' || !HEX64.test(p.idHash)) {
    return 'share link: idHash must be 64 lowercase hex digits';
  }
  if (
    typeof block !== 'object' ||
    block === null ||
    Array.isArray(block) ||
    Object.keys(block).length !== 2 ||
    !nat(block.i) ||
    !nat(block.j)
  ) {
    return 'share link: block must be { i, j } non-negative integers';
  }
  if (typeof p.consent !== 'string' || !FHIR_ID.test(p.consent)) {
    return 'share link: consent must be a FHIR id ([A-Za-z0-9-.]{1,64})';
  }
  if (!nat(p.grantee)) return 'share link: grantee must be an institution index';
  if (issuerProblem(p.issuer) !== undefined) return `share link: ${issuerProblem(p.issuer)}`;
  if (!nat(p.exp)) return 'share link: exp must be ms since epoch';
  if (typeof p.nonce !== 'string' || !HEX32.test(p.nonce)) {
    return 'share link: nonce must be 32 lowercase hex digits';
  }
  if (typeof p.sig !== 'string' || !HEX128.test(p.sig)) {
    return 'share link: sig must be 128 lowercase hex digits';
  }
  return undefined;
}

function issuerProblem(issuer: unknown): string | undefined {
  if (typeof issuer !== 'string' || issuer.length === 0 || issuer.length > MAX_ISSUER_CHARS) {
    return `issuer must be a URL of at most ${MAX_ISSUER_CHARS} characters`;
  }
  let url: URL;
  try {
    url = new URL(issuer);
  } catch {
    return 'issuer must be an absolute http(s) URL';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return 'issuer must be an absolute http(s) URL';
  }
  if (issuer.endsWith('/') || url.search !== '' || url.hash !== '' || issuer.includes('#')) {
    return 'issuer must be a base URL without a trailing slash, query or fragment';
  }
  return undefined;
}

/** The bytes the patient signs (everything but sig). */
export function shareLinkMessage(p: Omit<ShareLinkPayload, 'sig'>): Bytes {
  return encode((w) =>
    w
      .u8(p.v)
      .string(p.chainId)
      .fixed(fromHex(p.idHash, 'idHash'), 32, 'idHash')
      .varint(p.block.i)
      .varint(p.block.j)
      .string(p.consent)
      .varint(p.grantee)
      .string(p.issuer)
      .varint(p.exp)
      .fixed(fromHex(p.nonce, 'nonce'), 16, 'nonce'),
  );
}

/** The link text for a payload: `<issuer>/portal/#share=<base64url JSON>`. */
export function shareLinkText(payload: ShareLinkPayload): string {
  const ordered = Object.fromEntries(FIELDS.map((k) => [k, payload[k]]));
  const encoded = toBase64Url(new TextEncoder().encode(JSON.stringify(ordered)));
  return `${payload.issuer}/portal/${SHARE_LINK_FRAGMENT}${encoded}`;
}

/**
 * What the patient's device does after a grant: signs the link for `fields.grantee` with the
 * patient's signing secret; `random` gives the nonce and the signature's hedge.
 */
export function makeShareLink(
  fields: ShareLinkFields,
  signingSecret: Bytes,
  random: RandomBytes,
): { link: string; payload: ShareLinkPayload } {
  const idHash = typeof fields.idHash === 'string' ? fields.idHash : toHex(fields.idHash);
  const unsigned = {
    v: SHARE_LINK_VERSION as 1,
    chainId: fields.chainId,
    idHash,
    block: { i: fields.block?.i, j: fields.block?.j },
    consent: fields.consent,
    grantee: fields.grantee,
    issuer: fields.issuer,
    exp: fields.exp,
    nonce: toHex(random(16)),
  } as Omit<ShareLinkPayload, 'sig'>;
  const problem = shapeProblem({ ...unsigned, sig: '0'.repeat(128) });
  if (problem !== undefined) throw new AuthzError('INVALID_ARGUMENT', problem);
  const sig = toHex(sign(signingSecret, SHARE_LINK_DOMAIN, shareLinkMessage(unsigned), random));
  const payload: ShareLinkPayload = { ...unsigned, sig };
  return { link: shareLinkText(payload), payload };
}

const malformed = (message: string): ShareLinkParse => ({
  ok: false,
  reason: 'MALFORMED',
  message,
});

/**
 * The payload of a link text (either form); MALFORMED with the problem otherwise. The URL form
 * must be the payload's own issuer's portal (a link whose address and payload disagree is refused).
 * Checks the shape only: verifyShareLink checks the signature, network and expiry.
 */
export function parseShareLink(text: unknown): ShareLinkParse {
  if (typeof text !== 'string' || text.length === 0) {
    return malformed('link must be a non-empty string');
  }
  const trimmed = text.trim();
  if (trimmed.length > MAX_LINK_CHARS) return malformed('link is too long');
  let encoded: string;
  let prefix: string | undefined;
  if (trimmed.startsWith(SHARE_LINK_SCHEME)) {
    encoded = trimmed.slice(SHARE_LINK_SCHEME.length);
  } else {
    const at = trimmed.indexOf(SHARE_LINK_FRAGMENT);
    if (at < 0) {
      return malformed(
        `link must be <issuer>/portal/${SHARE_LINK_FRAGMENT}<payload> or ${SHARE_LINK_SCHEME}<payload>`,
      );
    }
    prefix = trimmed.slice(0, at);
    encoded = trimmed.slice(at + SHARE_LINK_FRAGMENT.length);
  }
  const bytes = fromBase64Url(encoded);
  if (bytes === null || bytes.length === 0) return malformed('link payload is not base64url');
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    return malformed('link payload is not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return malformed('link payload is not a JSON object');
  }
  const problem = shapeProblem(value as Record<string, unknown>);
  if (problem !== undefined) return malformed(problem);
  const payload = value as ShareLinkPayload;
  if (prefix !== undefined && prefix !== `${payload.issuer}/portal/`) {
    return malformed("the link's address is not its issuer's portal");
  }
  return { ok: true, payload };
}

/**
 * Whether the payload is the patient's, for this network, and not expired at `now`. `signingKey`
 * is the patient's signing key from their pinned block (the caller looks it up by idHash).
 * Order: shape, network, signature, expiry.
 */
export function verifyShareLink(
  payload: ShareLinkPayload,
  ctx: { readonly chainId: string; readonly signingKey: Bytes; readonly now: number },
): ShareLinkCheck {
  if (!Number.isFinite(ctx.now)) throw new AuthzError('INVALID_ARGUMENT', 'now must be a number');
  if (typeof payload !== 'object' || payload === null) {
    return { ok: false, reason: 'MALFORMED', message: 'share link: payload is not an object' };
  }
  const problem = shapeProblem(payload as unknown as Record<string, unknown>);
  if (problem !== undefined) return { ok: false, reason: 'MALFORMED', message: problem };
  if (payload.chainId !== ctx.chainId) {
    return { ok: false, reason: 'WRONG_NETWORK', message: 'the link is for another network' };
  }
  const { sig, ...unsigned } = payload;
  if (!verify(ctx.signingKey, SHARE_LINK_DOMAIN, shareLinkMessage(unsigned), fromHex(sig))) {
    return {
      ok: false,
      reason: 'BAD_SIGNATURE',
      message: "the link's signature is not the patient's",
    };
  }
  if (ctx.now >= payload.exp) {
    return { ok: false, reason: 'EXPIRED', message: 'the link has expired' };
  }
  return { ok: true };
}

// ---------------------------------------------------------------------------------------------
// Redemption: the grantee institution's signature, presented with the link to the issuer.

export interface ShareLinkRedemption {
  readonly chainId: string;
  /** The link's nonce (hex). */
  readonly nonce: string;
  readonly institution: InstitutionIndex;
  readonly ts: number;
}

export function shareLinkRedemptionMessage(r: ShareLinkRedemption): Bytes {
  if (typeof r.nonce !== 'string' || !HEX32.test(r.nonce)) {
    throw new AuthzError('INVALID_ARGUMENT', 'nonce must be 32 lowercase hex digits');
  }
  if (!Number.isSafeInteger(r.institution) || r.institution < 0) {
    throw new AuthzError('INVALID_ARGUMENT', 'institution must be a member index');
  }
  if (!Number.isSafeInteger(r.ts) || r.ts < 0) {
    throw new AuthzError('INVALID_ARGUMENT', 'ts must be ms since epoch');
  }
  return encode((w) =>
    w
      .string(r.chainId)
      .fixed(fromHex(r.nonce, 'nonce'), 16, 'nonce')
      .varint(r.institution)
      .varint(r.ts),
  );
}

/** The grantee institution's signature (its genesis signing secret) on a redemption. */
export function signShareLinkRedemption(
  r: ShareLinkRedemption,
  institutionSigningSecret: Bytes,
  random?: RandomBytes,
): string {
  return toHex(
    sign(institutionSigningSecret, SHARE_LINK_REDEEM_DOMAIN, shareLinkRedemptionMessage(r), random),
  );
}

/** False for any wrong or malformed signature (hex) or key. */
export function verifyShareLinkRedemption(
  r: ShareLinkRedemption,
  signature: string,
  institutionSigningKey: Bytes,
): boolean {
  if (typeof signature !== 'string' || !HEX128.test(signature)) return false;
  return verify(
    institutionSigningKey,
    SHARE_LINK_REDEEM_DOMAIN,
    shareLinkRedemptionMessage(r),
    fromHex(signature),
  );
}
