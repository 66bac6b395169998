/**
 * The patient's whole history from any sidecar (issue 6 part 7; paper 5.2 "retrieval"): the query
 * of the records routes as the patient's device signs it, read the same way by the sidecar the
 * device calls and by the holder that sidecar relays the signed request to.
 *
 *   /spchain/blocks/<i>/<j>/records[?holder=<index>[&after=<cursor>][&count=<n>]]
 *   /spchain/patients/<idHash>/records[?holder=<index>][&after=<cursor>][&count=<n>]
 *
 * The device signs each page with its x-spchain-patient header (patient-request.ts: chainId, GET,
 * the path with its query, ts, empty body). A sidecar asked for another holder's page relays that
 * header (idHash, ts, sig) and the path verbatim over p2p; the holder checks the signature against
 * the patient's pinned signing key and the +-5 min window, and takes `holder`, `after` and `count`
 * from the signed path itself, so the relaying sidecar can neither forge a request nor change the
 * one it relays (it may only replay it within the window, for the page it already got).
 *
 * `after` is the cursor of a previous page's `next`: the hex of a record's resource key, '.', and
 * the version index within it. Query parameters appear at most once each; any other is refused.
 * Pure: the time is passed in.
 */
import { fromHex } from '../crypto/bytes.ts';
import type { Bytes, InstitutionIndex } from '../ledger/types.ts';
import { type ParsedPatientRequest, verifyPatientRequest } from './patient-request.ts';

/** Characters of a signed records path, query included. */
export const MAX_RECORDS_PATH_CHARS = 1024;
/** Records on one page at most, and when `count` is not given. */
export const MAX_OWN_RECORDS = 200;
export const DEFAULT_OWN_RECORDS = 50;

export interface RecordsCursor {
  /** The record's resource key (sidecar/entries.ts resourceKey). */
  readonly key: Bytes;
  /** The version index within the resource. */
  readonly version: number;
}

export type RecordsTarget =
  | { readonly kind: 'block'; readonly i: number; readonly j: number }
  | { readonly kind: 'patient'; readonly idHash: string };

export interface RecordsQuery {
  readonly target: RecordsTarget;
  readonly holder?: InstitutionIndex;
  readonly after?: RecordsCursor;
  readonly count?: number;
}

export type RecordsQueryResult =
  | { readonly ok: true; readonly value: RecordsQuery }
  | { readonly ok: false; readonly field: string; readonly message: string };

const CURSOR = /^((?:[0-9a-f]{2}){1,300})\.(0|[1-9][0-9]{0,6})$/;
const INDEX = /^(?:0|[1-9][0-9]{0,8})$/;
const COUNT = /^[1-9][0-9]{0,3}$/;
const BLOCK_PATH = /^\/spchain\/blocks\/(0|[1-9][0-9]{0,8})\/(0|[1-9][0-9]{0,8})\/records$/;
const PATIENT_PATH = /^\/spchain\/patients\/([0-9a-f]{64})\/records$/;

/** A cursor from its text, or undefined when the text is not one. */
export function parseRecordsCursor(text: unknown): RecordsCursor | undefined {
  const m = typeof text === 'string' ? CURSOR.exec(text) : null;
  return m ? { key: fromHex(m[1]!), version: Number(m[2]) } : undefined;
}

export function formatRecordsCursor(key: Bytes, version: number): string {
  let hex = '';
  for (const b of key) hex += b.toString(16).padStart(2, '0');
  return `${hex}.${version}`;
}

const bad = (field: string, message: string): RecordsQueryResult => ({
  ok: false,
  field,
  message,
});

/** The records query of a path as sent (with its query string); the error names the field. */
export function parseRecordsPath(path: unknown): RecordsQueryResult {
  if (typeof path !== 'string' || path.length > MAX_RECORDS_PATH_CHARS) {
    return bad('path', `must be a string of at most ${MAX_RECORDS_PATH_CHARS} characters`);
  }
  const q = path.indexOf('?');
  const pathname = q < 0 ? path : path.slice(0, q);
  let target: RecordsTarget;
  const block = BLOCK_PATH.exec(pathname);
  const patient = PATIENT_PATH.exec(pathname);
  if (block) target = { kind: 'block', i: Number(block[1]), j: Number(block[2]) };
  else if (patient) target = { kind: 'patient', idHash: patient[1]! };
  else return bad('path', 'is not a records path of a patient block or of a patient');
  const params = new Map<string, string>();
  if (q >= 0 && q < path.length - 1) {
    for (const part of path.slice(q + 1).split('&')) {
      const eq = part.indexOf('=');
      const name = eq < 0 ? part : part.slice(0, eq);
      let value: string;
      try {
        value = decodeURIComponent(eq < 0 ? '' : part.slice(eq + 1));
      } catch {
        return bad(name, 'is not percent-encoded correctly');
      }
      if (name !== 'holder' && name !== 'after' && name !== 'count') {
        return bad('query', 'takes only holder, after and count');
      }
      if (params.has(name)) return bad(name, 'appears twice');
      params.set(name, value);
    }
  }
  const out: { -readonly [K in keyof RecordsQuery]: RecordsQuery[K] } = { target };
  const holder = params.get('holder');
  if (holder !== undefined) {
    if (!INDEX.test(holder)) return bad('holder', 'must be an institution index');
    out.holder = Number(holder);
  }
  const after = params.get('after');
  if (after !== undefined) {
    const cursor = parseRecordsCursor(after);
    if (cursor === undefined) return bad('after', 'must be a cursor from a previous page (next)');
    out.after = cursor;
  }
  const count = params.get('count');
  if (count !== undefined) {
    if (!COUNT.test(count) || Number(count) > MAX_OWN_RECORDS) {
      return bad('count', `must be an integer in [1, ${MAX_OWN_RECORDS}]`);
    }
    out.count = Number(count);
  }
  return { ok: true, value: out };
}

/** Why a holder refuses a relayed request for the patient's own records. */
export type OwnRecordsDenial =
  /** The signed path is not a records query (parseRecordsPath). */
  | 'MALFORMED'
  /** The query's holder is not this institution. */
  | 'NOT_HOLDER'
  /** The query names another block or patient than the signature's. */
  | 'NOT_THIS_BLOCK'
  /** The patient has no pinned block here. */
  | 'UNREGISTERED'
  | 'STALE'
  | 'BAD_SIGNATURE';

export type OwnRecordsCheck =
  | { readonly ok: true; readonly query: RecordsQuery }
  | { readonly ok: false; readonly reason: OwnRecordsDenial; readonly message: string };

/**
 * Whether a relayed request is the patient's signed request for this holder's records: the
 * path's query names this holder and the patient's block, and the signature over (chainId, GET,
 * path, ts, no body) is the patient's, within the window. Answers the signed query.
 */
export function checkOwnRecordsRequest(
  request: ParsedPatientRequest & { readonly path: string },
  ctx: {
    readonly chainId: string;
    readonly now: number;
    readonly self: InstitutionIndex;
    /** The patient's pinned block (by the request's idHash): where it is, and the signing key. */
    readonly block: { readonly i: number; readonly j: number; readonly signingKey: Bytes };
  },
): OwnRecordsCheck {
  const parsed = parseRecordsPath(request.path);
  if (!parsed.ok) {
    return { ok: false, reason: 'MALFORMED', message: `${parsed.field} ${parsed.message}` };
  }
  const query = parsed.value;
  if (query.holder !== ctx.self) {
    return { ok: false, reason: 'NOT_HOLDER', message: 'the request is not for this holder' };
  }
  const { target } = query;
  const same =
    target.kind === 'block'
      ? target.i === ctx.block.i && target.j === ctx.block.j
      : target.idHash === request.idHash;
  if (!same) {
    return {
      ok: false,
      reason: 'NOT_THIS_BLOCK',
      message: "the request's path names another patient block",
    };
  }
  const checked = verifyPatientRequest(request, {
    chainId: ctx.chainId,
    method: 'GET',
    path: request.path,
    now: ctx.now,
    signingKey: ctx.block.signingKey,
  });
  if (!checked.ok) {
    return {
      ok: false,
      reason: checked.reason === 'STALE' ? 'STALE' : 'BAD_SIGNATURE',
      message: checked.message,
    };
  }
  return { ok: true, query };
}
