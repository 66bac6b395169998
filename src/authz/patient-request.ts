/**
 * Patient request signatures: how the patient's own device (the portal page or the CLI) proves,
 * on each HTTP request it makes on the patient's behalf, that it holds the patient's signing key.
 * No cookie and no bearer token: the request itself is signed, so a route that reads the
 * patient's data needs nothing ambient (and browsers may call it cross-origin).
 *
 *   x-spchain-patient: idHash=<64 hex>, ts=<ms since epoch>, sig=<128 hex>
 *
 * sig = ECDSA (crypto/sign.ts) with the patient's signing secret, domain 'spchain/patient-request',
 * over the canonical encoding (ledger/codec.ts) of
 *   string chainId, string METHOD, string path-with-query, varint ts, fixed32 SHA-256(body)
 * (an empty body hashes as zero bytes). The network, the method, the exact resource and the body
 * are bound, so a signature is good for one request only, and only for PATIENT_REQUEST_WINDOW_MS
 * either side of its timestamp. The server checks the key against the patient's pinned block.
 * Pure: the time is passed in, randomness too.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { fromHex, toHex, utf8 } from '../crypto/bytes.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { sign, verify } from '../crypto/sign.ts';
import { encode } from '../ledger/codec.ts';
import type { Bytes } from '../ledger/types.ts';
import { AuthzError } from './errors.ts';

export const PATIENT_REQUEST_HEADER = 'x-spchain-patient';
export const PATIENT_REQUEST_DOMAIN = 'spchain/patient-request';
/** How far a request's timestamp may be from the server's clock, either way. */
export const PATIENT_REQUEST_WINDOW_MS = 300_000;

const MAX_HEADER_CHARS = 512;
const HEX64 = /^[0-9a-f]{64}$/;
const HEX128 = /^[0-9a-f]{128}$/;
const METHOD = /^[A-Z]{1,16}$/;

export interface ParsedPatientRequest {
  /** Lowercase hex of the patient's idHash. */
  readonly idHash: string;
  readonly ts: number;
  readonly sig: Bytes;
}

export type PatientRequestFailure =
  /** The header is missing or not of the form above. */
  | 'MALFORMED'
  /** The timestamp is more than PATIENT_REQUEST_WINDOW_MS away from now. */
  | 'STALE'
  /** The signature is not the patient's over this request. */
  | 'BAD_SIGNATURE';

export type PatientRequestCheck =
  | { readonly ok: true }
  | { readonly ok: false; readonly reason: PatientRequestFailure; readonly message: string };

export type ParseResult =
  | { readonly ok: true; readonly value: ParsedPatientRequest }
  | { readonly ok: false; readonly reason: 'MALFORMED'; readonly message: string };

/** What the signature covers (besides the network). */
export interface PatientRequestTarget {
  readonly method: string;
  /** The path with its query string, exactly as sent (e.g. `/spchain/patients/ab…/records?count=5`). */
  readonly path: string;
  /** The body bytes (a string is taken as UTF-8); none or empty for a GET. */
  readonly body?: Bytes | string;
}

/** The bytes signed for one request. */
export function patientRequestMessage(
  chainId: string,
  target: PatientRequestTarget,
  ts: number,
): Bytes {
  if (typeof chainId !== 'string' || chainId.length === 0) {
    throw new AuthzError('INVALID_ARGUMENT', 'chainId must be a non-empty string');
  }
  if (typeof target.method !== 'string' || !METHOD.test(target.method.toUpperCase())) {
    throw new AuthzError('INVALID_ARGUMENT', 'method must be an HTTP method name');
  }
  if (typeof target.path !== 'string' || !target.path.startsWith('/')) {
    throw new AuthzError('INVALID_ARGUMENT', 'path must be an absolute path (with its query)');
  }
  if (!Number.isSafeInteger(ts) || ts < 0) {
    throw new AuthzError('INVALID_ARGUMENT', 'ts must be a non-negative integer (ms since epoch)');
  }
  const body = target.body ?? new Uint8Array(0);
  const bodyBytes = typeof body === 'string' ? utf8(body) : body;
  if (!(bodyBytes instanceof Uint8Array)) {
    throw new AuthzError('INVALID_ARGUMENT', 'body must be bytes or a string');
  }
  return encode((w) =>
    w
      .string(chainId)
      .string(target.method.toUpperCase())
      .string(target.path)
      .varint(ts)
      .fixed(sha256(bodyBytes), 32, 'body'),
  );
}

/** The header value for one request, signed with the patient's signing secret. */
export function signPatientRequest(opts: {
  readonly chainId: string;
  readonly method: string;
  readonly path: string;
  readonly ts: number;
  readonly body?: Bytes | string;
  readonly idHash: Bytes | string;
  readonly signingSecret: Bytes;
  readonly random?: RandomBytes;
}): string {
  const idHash = typeof opts.idHash === 'string' ? opts.idHash : toHex(opts.idHash);
  if (!HEX64.test(idHash)) {
    throw new AuthzError('INVALID_ARGUMENT', 'idHash must be 32 bytes (64 lowercase hex digits)');
  }
  const message = patientRequestMessage(opts.chainId, opts, opts.ts);
  const sig = sign(opts.signingSecret, PATIENT_REQUEST_DOMAIN, message, opts.random);
  return `idHash=${idHash}, ts=${opts.ts}, sig=${toHex(sig)}`;
}

const malformed = (message: string): ParseResult => ({ ok: false, reason: 'MALFORMED', message });

/** The header's three fields (each exactly once, any order, `, ` or `,` between them). */
export function parsePatientRequestHeader(text: unknown): ParseResult {
  if (typeof text !== 'string' || text.length === 0) {
    return malformed(`the ${PATIENT_REQUEST_HEADER} header is missing`);
  }
  if (text.length > MAX_HEADER_CHARS) {
    return malformed(`the ${PATIENT_REQUEST_HEADER} header is too long`);
  }
  const fields = new Map<string, string>();
  for (const part of text.split(',')) {
    const m = /^\s*(idHash|ts|sig)=([0-9a-f]+)\s*$/.exec(part);
    if (!m) {
      return malformed(
        `the ${PATIENT_REQUEST_HEADER} header must be "idHash=<64 hex>, ts=<ms>, sig=<128 hex>"`,
      );
    }
    if (fields.has(m[1]!)) return malformed(`${PATIENT_REQUEST_HEADER}: ${m[1]} appears twice`);
    fields.set(m[1]!, m[2]!);
  }
  const idHash = fields.get('idHash');
  const ts = fields.get('ts');
  const sig = fields.get('sig');
  if (idHash === undefined || !HEX64.test(idHash)) {
    return malformed(`${PATIENT_REQUEST_HEADER}: idHash must be 64 lowercase hex digits`);
  }
  if (ts === undefined || !/^(?:0|[1-9][0-9]{0,15})$/.test(ts) || !Number.isSafeInteger(+ts)) {
    return malformed(`${PATIENT_REQUEST_HEADER}: ts must be an integer (ms since epoch)`);
  }
  if (sig === undefined || !HEX128.test(sig)) {
    return malformed(`${PATIENT_REQUEST_HEADER}: sig must be 128 lowercase hex digits`);
  }
  return { ok: true, value: { idHash, ts: Number(ts), sig: fromHex(sig) } };
}

/**
 * Whether the parsed header signs this request, now, with `signingKey` (the patient's key from
 * their pinned block). The caller has checked that the header's idHash is the route's patient
 * and looked up that patient's key.
 */
export function verifyPatientRequest(
  parsed: ParsedPatientRequest,
  ctx: PatientRequestTarget & {
    readonly chainId: string;
    readonly now: number;
    readonly signingKey: Bytes;
  },
): PatientRequestCheck {
  if (!Number.isFinite(ctx.now)) throw new AuthzError('INVALID_ARGUMENT', 'now must be a number');
  if (Math.abs(ctx.now - parsed.ts) > PATIENT_REQUEST_WINDOW_MS) {
    return {
      ok: false,
      reason: 'STALE',
      message: `the request's timestamp is more than ${PATIENT_REQUEST_WINDOW_MS / 1000} s from the server's clock`,
    };
  }
  const message = patientRequestMessage(ctx.chainId, ctx, parsed.ts);
  if (!verify(ctx.signingKey, PATIENT_REQUEST_DOMAIN, message, parsed.sig)) {
    return {
      ok: false,
      reason: 'BAD_SIGNATURE',
      message: "the request's signature is not the patient's",
    };
  }
  return { ok: true };
}
