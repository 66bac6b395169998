/**
 * The search parameters of the patient reads (patient-reads.ts), each checked with a 400
 * OperationOutcome naming it: unknown parameters are refused rather than ignored (a filter the
 * server did not apply must not look applied), `_count` 1-1000, `_type` resource types, `_since`
 * a FHIR instant or date, `_cursor` only as this server made it (the last sort key of a page).
 */
import { parseFhirDateTime } from '../authz/consent.ts';
import { fail } from './outcome.ts';
import type { SortKey } from './patient-records.ts';
import { parseQuery } from './resource-store.ts';

export const DEFAULT_COUNT = 50;
export const MAX_COUNT = 1000;
const TYPE = /^[A-Z][A-Za-z]{1,63}$/;

export type Params = [string, string][];

/** The query's parameters, refusing any not in `allowed` (and `_format`, which the server reads). */
export function readParams(query: string, allowed: readonly string[]): Params {
  const params = parseQuery(query).filter(([n]) => n !== '_format');
  const unknown = [...new Set(params.map(([n]) => n).filter((n) => !allowed.includes(n)))];
  if (unknown.length > 0) {
    throw fail(
      400,
      'not-supported',
      `unsupported parameter(s) ${unknown.join(', ')}: this supports ${allowed.join(', ')}`,
    );
  }
  return params;
}

/** The parameters in one order, without the cursor: the self link, and the next's base. */
export function canonical(params: Params): string {
  return params
    .filter(([n]) => n !== '_cursor')
    .map(([n, v]) => `${encodeURIComponent(n)}=${encodeURIComponent(v)}`)
    .join('&');
}

export function typesOf(params: Params): Set<string> | undefined {
  const values = params.filter(([n]) => n === '_type').flatMap(([, v]) => v.split(','));
  if (values.length === 0) return undefined;
  for (const t of values) {
    if (!TYPE.test(t.trim())) throw fail(400, 'invalid', '_type must list resource types', '_type');
  }
  return new Set(values.map((t) => t.trim()));
}

export function sinceOf(params: Params): number | undefined {
  const v = params.filter(([n]) => n === '_since');
  if (v.length === 0) return undefined;
  const ms = v.length === 1 ? parseFhirDateTime(v[0]![1]) : undefined;
  if (ms === undefined) {
    throw fail(
      400,
      'invalid',
      '_since must be one FHIR instant (or date), e.g. 2025-01-31T12:00:00Z',
      '_since',
    );
  }
  return ms;
}

export interface Page {
  readonly count: number;
  readonly cursor?: SortKey;
}

export function pageOf(params: Params): Page {
  const counts = params.filter(([n]) => n === '_count');
  const count = counts.length === 0 ? DEFAULT_COUNT : Number(counts[0]![1]);
  if (counts.length > 1 || !Number.isInteger(count) || count < 1 || count > MAX_COUNT) {
    throw fail(400, 'invalid', `_count must be an integer in [1, ${MAX_COUNT}]`, '_count');
  }
  const cursors = params.filter(([n]) => n === '_cursor');
  if (cursors.length === 0) return { count };
  const cursor = cursors.length === 1 ? decodeCursor(cursors[0]![1]) : undefined;
  if (cursor === undefined)
    throw fail(400, 'invalid', '_cursor is not one this server made', '_cursor');
  return { count, cursor };
}

export function encodeCursor(key: SortKey): string {
  return Buffer.from(JSON.stringify(key), 'utf8').toString('base64url');
}

export function decodeCursor(text: string): SortKey | undefined {
  if (!/^[A-Za-z0-9_-]{1,512}$/.test(text)) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (
    !Array.isArray(v) ||
    v.length !== 4 ||
    (v[0] !== 0 && v[0] !== 1) ||
    typeof v[1] !== 'string' ||
    typeof v[2] !== 'string' ||
    !Number.isSafeInteger(v[3])
  ) {
    return undefined;
  }
  return v as unknown as SortKey;
}

/** `Patient/x`, `x`, or an absolute URL ending in `/Patient/x`: the id x. */
export function patientId(value: string, param: string): string {
  const m = /^(?:(?:.*\/)?Patient\/)?([A-Za-z0-9\-.]{1,64})$/.exec(value);
  if (!m) {
    throw fail(400, 'invalid', `${param} must be Patient/id or an id`, param);
  }
  return m[1]!;
}
