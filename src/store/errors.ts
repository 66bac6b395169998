/** The store's one error type: `code` names what went wrong, `detail` carries the values involved. */
export type StoreErrorCode =
  | 'OPEN_FAILED'
  | 'CORRUPT'
  | 'NOT_CONSECUTIVE'
  | 'WRONG_PARENT'
  | 'CONFLICTS_WITH_PINNED'
  | 'DUPLICATE_PATIENT'
  | 'DUPLICATE_TX'
  | 'INVALID_ARGUMENT'
  | 'NOT_PREFETCHED';

export class StoreError extends Error {
  readonly code: StoreErrorCode;
  readonly detail: Readonly<Record<string, unknown>>;

  constructor(
    code: StoreErrorCode,
    message: string,
    detail: Record<string, unknown> = {},
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'StoreError';
    this.code = code;
    this.detail = detail;
  }
}

export function isStoreError(err: unknown, code?: StoreErrorCode): err is StoreError {
  return err instanceof StoreError && (code === undefined || err.code === code);
}
