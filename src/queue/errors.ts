/**
 * The queue's one error type. `code` says what went wrong; `retryable` says whether the same call
 * may succeed later unchanged (the backend was unreachable or slow), and `retryAfterMs` suggests
 * when: the HTTP edge answers those with 503 and a Retry-After header, everything else is the
 * caller's mistake (INVALID_*) or a programming error (CLOSED) or damaged storage (CORRUPT).
 */
export type QueueErrorCode =
  | 'INVALID_JOB'
  | 'INVALID_ARGUMENT'
  | 'UNAVAILABLE'
  | 'CLOSED'
  | 'CORRUPT'
  | 'CONFIG';

export class QueueError extends Error {
  readonly code: QueueErrorCode;
  readonly detail: Readonly<Record<string, unknown>>;
  readonly retryable: boolean;
  /** For UNAVAILABLE: when trying again makes sense. */
  readonly retryAfterMs: number | undefined;

  constructor(
    code: QueueErrorCode,
    message: string,
    detail: Record<string, unknown> = {},
    opts: { cause?: unknown; retryAfterMs?: number } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'QueueError';
    this.code = code;
    this.detail = detail;
    this.retryable = code === 'UNAVAILABLE';
    this.retryAfterMs = code === 'UNAVAILABLE' ? (opts.retryAfterMs ?? 1000) : undefined;
  }
}

export function isQueueError(err: unknown, code?: QueueErrorCode): err is QueueError {
  return err instanceof QueueError && (code === undefined || err.code === code);
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
