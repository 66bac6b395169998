/**
 * Checks of everything handed to a queue, shared by both implementations so that they refuse the
 * same inputs with the same messages (each naming the argument and what was expected).
 */
import { QueueError } from './errors.ts';
import type { JobMeta, QueueOpts, TxJob } from './types.ts';

const ID = /^[0-9a-f]{64}$/;
const META_KEY = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;
const MAX_META_KEYS = 16;
const MAX_META_STRING = 256;
export const MAX_META_JSON = 2048;
export const MAX_REASON = 1000;
export const MAX_TAKE = 1000;

function invalid(message: string, detail: Record<string, unknown> = {}): never {
  throw new QueueError('INVALID_JOB', message, detail);
}

function badArgument(message: string): never {
  throw new QueueError('INVALID_ARGUMENT', message);
}

export function checkId(id: unknown, what: string): string {
  if (typeof id !== 'string' || !ID.test(id)) {
    badArgument(`${what} must be a tx hash: 64 lowercase hex characters`);
  }
  return id;
}

function checkMeta(meta: unknown, what: string): JobMeta {
  if (meta === undefined) return {};
  if (typeof meta !== 'object' || meta === null || Array.isArray(meta)) {
    invalid(`${what} must be a plain object`);
  }
  const proto = Object.getPrototypeOf(meta);
  if (proto !== Object.prototype && proto !== null) invalid(`${what} must be a plain object`);
  const entries = Object.entries(meta);
  if (entries.length > MAX_META_KEYS)
    invalid(`${what} has ${entries.length} keys, at most ${MAX_META_KEYS}`);
  const out: Record<string, string | number | boolean> = {};
  for (const [key, value] of entries) {
    if (!META_KEY.test(key))
      invalid(`${what} key ${JSON.stringify(key.slice(0, 70))} is not a name`);
    if (typeof value === 'string') {
      if (value.length > MAX_META_STRING) {
        invalid(`${what}.${key} is longer than ${MAX_META_STRING} characters`);
      }
    } else if (typeof value === 'number') {
      if (!Number.isFinite(value)) invalid(`${what}.${key} must be a finite number`);
    } else if (typeof value !== 'boolean') {
      invalid(`${what}.${key} must be a string, a number or a boolean`);
    }
    out[key] = value;
  }
  if (JSON.stringify(out).length > MAX_META_JSON) {
    invalid(`${what} is larger than ${MAX_META_JSON} characters as JSON`);
  }
  return out;
}

/** A group of jobs as `enqueue` takes it: non-empty, bounded, each job well-formed, ids distinct. */
export function checkJobs(
  jobs: unknown,
  opts: Pick<QueueOpts, 'maxGroupJobs' | 'maxTxBytes'>,
): TxJob[] {
  if (!Array.isArray(jobs)) invalid('jobs must be an array');
  if (jobs.length === 0) invalid('jobs must hold at least one job');
  if (jobs.length > opts.maxGroupJobs) {
    invalid(`jobs holds ${jobs.length} jobs, at most ${opts.maxGroupJobs} may be enqueued at once`);
  }
  const seen = new Map<string, number>();
  return jobs.map((job: unknown, n): TxJob => {
    const what = `jobs[${n}]`;
    if (typeof job !== 'object' || job === null) invalid(`${what} must be an object`);
    const { id, tx, meta } = job as Record<string, unknown>;
    if (typeof id !== 'string' || !ID.test(id)) {
      invalid(`${what}.id must be a tx hash: 64 lowercase hex characters`, { index: n });
    }
    const first = seen.get(id);
    if (first !== undefined) invalid(`${what}.id repeats jobs[${first}].id`, { index: n, first });
    seen.set(id, n);
    if (!(tx instanceof Uint8Array)) invalid(`${what}.tx must be a Uint8Array`, { index: n });
    if (tx.length === 0 || tx.length > opts.maxTxBytes) {
      invalid(`${what}.tx must hold 1 to ${opts.maxTxBytes} bytes, got ${tx.length}`, {
        index: n,
      });
    }
    return { id, tx, meta: checkMeta(meta, `${what}.meta`) };
  });
}

export function checkIds(ids: unknown, what: string): string[] {
  if (!Array.isArray(ids)) badArgument(`${what} must be an array of tx hashes`);
  return ids.map((id, n) => checkId(id, `${what}[${n}]`));
}

export function checkMax(max: unknown): number {
  if (typeof max !== 'number' || !Number.isInteger(max) || max < 1 || max > MAX_TAKE) {
    badArgument(`max must be an integer from 1 to ${MAX_TAKE}`);
  }
  return max;
}

export function checkWaitMs(waitMs: unknown): number {
  if (waitMs === undefined) return 0;
  if (typeof waitMs !== 'number' || !Number.isFinite(waitMs) || waitMs < 0) {
    badArgument('waitMs must be a number of milliseconds, 0 or more');
  }
  return waitMs;
}

/** A failure reason: a string, cut to MAX_REASON characters. */
export function checkReason(reason: unknown): string {
  if (typeof reason !== 'string') badArgument('reason must be a string');
  return reason.length > MAX_REASON ? `${reason.slice(0, MAX_REASON - 1)}…` : reason;
}

export function checkLimit(limit: unknown): number {
  if (limit === undefined) return 100;
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1) {
    badArgument('limit must be a positive integer');
  }
  return limit;
}

/** Queue options: each a positive integer (milliseconds, counts or bytes). */
export function checkQueueOpts<T extends QueueOpts>(opts: T): T {
  for (const key of [
    'leaseMs',
    'maxAttempts',
    'backoffMs',
    'keepCompletedMs',
    'maxGroupJobs',
    'maxTxBytes',
  ] as const) {
    const v = opts[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) {
      throw new QueueError('CONFIG', `queue option ${key} must be a positive integer, got ${v}`);
    }
  }
  return opts;
}
