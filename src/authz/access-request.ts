/**
 * Access requests (paper 5.2, "share"): an institution asks a patient for access to their records.
 * The request is a small document signed by the requesting institution with its genesis signing
 * key, posted to the patient's home sidecar; the home checks it and the patient's threshold, and
 * the patient then approves (by making a grant, grant.ts) or declines in the portal.
 *
 * Document (JSON): { idHash, institution, purpose, ts, nonce, signature }
 *   idHash       64 lowercase hex: the patient
 *   institution  the requesting member's index
 *   purpose      why, for the patient to read: 1 to ACCESS_PURPOSE_MAX_CHARS characters
 *   ts           ms since epoch when it was signed
 *   nonce        16 random bytes, 32 lowercase hex: the request's identity for single use
 *   signature    128 lowercase hex: ECDSA (crypto/sign.ts), domain 'spchain/access-request', over
 *                the codec encoding (ledger/codec.ts) of
 *                  string chainId, fixed32 idHash, varint institution, string purpose, varint ts,
 *                  fixed16 nonce
 * The network (chainId) is bound by the signature, not carried: the home checks against its own.
 *
 * Two decisions, both values, never errors:
 * - checkAccessRequest: the document is the institution's (UNKNOWN_INSTITUTION: no such member;
 *   BAD_SIGNATURE) and fresh (STALE: more than ACCESS_REQUEST_WINDOW_MS from now, either way).
 * - decideAccessRequest: the patient's policy admits it. NO_POLICY when the patient has set no
 *   threshold: by default no institution may ask (the patient opens requests by setting one).
 *   BELOW_THRESHOLD names both numbers. TOO_MANY_PENDING bounds what waits for the patient.
 *   Monotone in reputation: if an institution is admitted, any more reputable one is too.
 *
 * Pure: no clock (now is passed in), randomness passed in.
 */
import { fromHex, toHex } from '../crypto/bytes.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { sign, verify } from '../crypto/sign.ts';
import { encode } from '../ledger/codec.ts';
import type { Bytes, InstitutionIndex } from '../ledger/types.ts';
import { AuthzError } from './errors.ts';

export const ACCESS_REQUEST_DOMAIN = 'spchain/access-request';
/** How far a request's timestamp may be from the home's clock, either way. */
export const ACCESS_REQUEST_WINDOW_MS = 300_000;
export const ACCESS_PURPOSE_MAX_CHARS = 200;
/** The most requests that may wait for one patient's decision at once. */
export const MAX_PENDING_ACCESS_REQUESTS = 20;

const HEX64 = /^[0-9a-f]{64}$/;
const HEX32 = /^[0-9a-f]{32}$/;
const HEX128 = /^[0-9a-f]{128}$/;
const FIELDS = ['idHash', 'institution', 'purpose', 'ts', 'nonce', 'signature'] as const;

/** What the institution signs (besides the network). */
export interface AccessRequestFields {
  /** Lowercase hex. */
  readonly idHash: string;
  readonly institution: InstitutionIndex;
  readonly purpose: string;
  readonly ts: number;
  /** 32 lowercase hex digits. */
  readonly nonce: string;
}

export interface AccessRequestDocument extends AccessRequestFields {
  /** The institution's signature, lowercase hex. */
  readonly signature: string;
}

export type AccessRequestParse =
  | { readonly ok: true; readonly value: AccessRequestDocument }
  | { readonly ok: false; readonly field: string; readonly message: string };

export type AccessRequestFailure =
  /** No member of the network has this index. */
  | 'UNKNOWN_INSTITUTION'
  /** The signature is not the institution's over this request on this network. */
  | 'BAD_SIGNATURE'
  /** ts is more than ACCESS_REQUEST_WINDOW_MS away from now. */
  | 'STALE';

export type AccessRefusal =
  /** The patient has not opened requests (no threshold set). */
  | 'NO_POLICY'
  /** The institution's reputation is under the patient's threshold. */
  | 'BELOW_THRESHOLD'
  /** The patient already has the most pending requests allowed. */
  | 'TOO_MANY_PENDING';

export type AccessRequestCheck =
  | { readonly ok: true }
  | { readonly ok: false; readonly reason: AccessRequestFailure; readonly message: string };

export type AccessDecision =
  | { readonly ok: true }
  | { readonly ok: false; readonly reason: AccessRefusal; readonly message: string };

/** The problem with a purpose text, or undefined when it is fine. */
export function purposeProblem(purpose: unknown): string | undefined {
  if (typeof purpose !== 'string' || purpose.trim().length === 0) {
    return 'purpose must be a non-empty string';
  }
  if (purpose.length > ACCESS_PURPOSE_MAX_CHARS) {
    return `purpose must be at most ${ACCESS_PURPOSE_MAX_CHARS} characters`;
  }
  // Control characters would let a purpose forge lines in the patient's view or in logs.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: that is what it looks for
  if (/[\u0000-\u001f\u007f]/.test(purpose)) return 'purpose must not hold control characters';
  return undefined;
}

/** The first problem with the fields (naming the field), or undefined. */
function fieldsProblem(r: Record<string, unknown>): { field: string; message: string } | undefined {
  const nat = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
  if (typeof r.idHash !== 'string' || !HEX64.test(r.idHash)) {
    return { field: 'idHash', message: 'idHash must be 64 lowercase hex digits' };
  }
  if (!nat(r.institution)) {
    return { field: 'institution', message: 'institution must be a member index' };
  }
  const purpose = purposeProblem(r.purpose);
  if (purpose !== undefined) return { field: 'purpose', message: purpose };
  if (!nat(r.ts)) return { field: 'ts', message: 'ts must be ms since epoch' };
  if (typeof r.nonce !== 'string' || !HEX32.test(r.nonce)) {
    return { field: 'nonce', message: 'nonce must be 16 bytes as 32 lowercase hex digits' };
  }
  return undefined;
}

/** The bytes the institution signs. */
export function accessRequestMessage(chainId: string, r: AccessRequestFields): Bytes {
  if (typeof chainId !== 'string' || chainId.length === 0) {
    throw new AuthzError('INVALID_ARGUMENT', 'chainId must be a non-empty string');
  }
  const problem = fieldsProblem(r as unknown as Record<string, unknown>);
  if (problem !== undefined) throw new AuthzError('INVALID_ARGUMENT', problem.message);
  return encode((w) =>
    w
      .string(chainId)
      .fixed(fromHex(r.idHash, 'idHash'), 32, 'idHash')
      .varint(r.institution)
      .string(r.purpose)
      .varint(r.ts)
      .fixed(fromHex(r.nonce, 'nonce'), 16, 'nonce'),
  );
}

/** The institution's signature (its genesis signing secret) over a request, lowercase hex. */
export function signAccessRequest(
  chainId: string,
  r: AccessRequestFields,
  institutionSigningSecret: Bytes,
  random?: RandomBytes,
): string {
  const message = accessRequestMessage(chainId, r);
  return toHex(sign(institutionSigningSecret, ACCESS_REQUEST_DOMAIN, message, random));
}

/** What a requesting sidecar does: a fresh nonce from `random`, then the signature. */
export function makeAccessRequest(
  chainId: string,
  fields: Omit<AccessRequestFields, 'nonce' | 'idHash'> & { readonly idHash: string | Bytes },
  institutionSigningSecret: Bytes,
  random: RandomBytes,
): AccessRequestDocument {
  const idHash = typeof fields.idHash === 'string' ? fields.idHash : toHex(fields.idHash);
  const unsigned: AccessRequestFields = {
    idHash,
    institution: fields.institution,
    purpose: fields.purpose,
    ts: fields.ts,
    nonce: toHex(random(16)),
  };
  const signature = signAccessRequest(chainId, unsigned, institutionSigningSecret, random);
  return { ...unsigned, signature };
}

/** The document of a request body (JSON object), or the first problem naming its field. */
export function parseAccessRequest(body: unknown): AccessRequestParse {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { ok: false, field: 'body', message: 'the body must be a JSON object' };
  }
  const r = body as Record<string, unknown>;
  const extra = Object.keys(r).find((k) => !(FIELDS as readonly string[]).includes(k));
  if (extra !== undefined) {
    return {
      ok: false,
      field: 'body',
      message: `unknown field ${JSON.stringify(extra.slice(0, 32))}`,
    };
  }
  const problem = fieldsProblem(r);
  if (problem !== undefined) return { ok: false, ...problem };
  if (typeof r.signature !== 'string' || !HEX128.test(r.signature)) {
    return {
      ok: false,
      field: 'signature',
      message: 'signature must be 64 bytes as 128 lowercase hex digits',
    };
  }
  const value: AccessRequestDocument = {
    idHash: r.idHash as string,
    institution: r.institution as number,
    purpose: r.purpose as string,
    ts: r.ts as number,
    nonce: r.nonce as string,
    signature: r.signature,
  };
  return { ok: true, value };
}

/**
 * Whether `doc` is signed by the institution it names (`signingKeyOf`: the member's genesis
 * signing key, undefined for no such member) on `chainId`, and fresh at `now`.
 * Order: institution, signature, freshness.
 */
export function checkAccessRequest(
  doc: AccessRequestDocument,
  ctx: {
    readonly chainId: string;
    readonly now: number;
    readonly signingKeyOf: (institution: InstitutionIndex) => Bytes | undefined;
  },
): AccessRequestCheck {
  if (!Number.isFinite(ctx.now)) throw new AuthzError('INVALID_ARGUMENT', 'now must be a number');
  const key = ctx.signingKeyOf(doc.institution);
  if (key === undefined) {
    return {
      ok: false,
      reason: 'UNKNOWN_INSTITUTION',
      message: `no institution ${doc.institution} is a member of this network`,
    };
  }
  const { signature, ...fields } = doc;
  const good =
    typeof signature === 'string' &&
    HEX128.test(signature) &&
    verify(
      key,
      ACCESS_REQUEST_DOMAIN,
      accessRequestMessage(ctx.chainId, fields),
      fromHex(signature),
    );
  if (!good) {
    return {
      ok: false,
      reason: 'BAD_SIGNATURE',
      message: `the signature is not institution ${doc.institution}'s`,
    };
  }
  if (Math.abs(ctx.now - doc.ts) > ACCESS_REQUEST_WINDOW_MS) {
    return {
      ok: false,
      reason: 'STALE',
      message: `ts is more than ${ACCESS_REQUEST_WINDOW_MS / 1000} s from the home's clock`,
    };
  }
  return { ok: true };
}

/** The problem with a threshold the patient sets, or undefined. */
export function thresholdProblem(value: unknown): string | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0
    ? undefined
    : 'minReputation must be a number >= 0 (reputations are in [0, 1]; above 1 admits no one)';
}

/** A reputation for people: at most 4 decimals, never rounded up to or past `below`. */
export function formatReputation(value: number, below?: number): string {
  let shown = Math.round(value * 10_000) / 10_000;
  if (below !== undefined && value < below && shown >= below) {
    shown = Math.floor(value * 10_000) / 10_000;
  }
  return String(shown);
}

/**
 * The patient's policy on one request: `threshold` is the patient's minReputation (undefined: no
 * policy), `reputation` the institution's current one (an institution the view does not list has
 * 0), `pending` how many requests already wait for the patient.
 */
export function decideAccessRequest(input: {
  readonly institution: InstitutionIndex;
  readonly reputation: number | undefined;
  readonly threshold: number | undefined;
  readonly pending?: number;
  readonly maxPending?: number;
}): AccessDecision {
  const { institution, threshold } = input;
  const reputation = input.reputation ?? 0;
  if (!Number.isFinite(reputation)) {
    throw new AuthzError('INVALID_ARGUMENT', 'reputation must be a finite number');
  }
  if (threshold === undefined) {
    return {
      ok: false,
      reason: 'NO_POLICY',
      message: 'the patient has not opened access requests (no reputation threshold set)',
    };
  }
  if (thresholdProblem(threshold) !== undefined) {
    throw new AuthzError('INVALID_ARGUMENT', 'threshold must be a finite number >= 0');
  }
  if (reputation < threshold) {
    return {
      ok: false,
      reason: 'BELOW_THRESHOLD',
      message: `institution ${institution} has reputation ${formatReputation(reputation, threshold)}, below the ${formatReputation(threshold)} the patient set`,
    };
  }
  const max = input.maxPending ?? MAX_PENDING_ACCESS_REQUESTS;
  if ((input.pending ?? 0) >= max) {
    return {
      ok: false,
      reason: 'TOO_MANY_PENDING',
      message: `the patient already has ${max} requests waiting for a decision`,
    };
  }
  return { ok: true };
}
