/**
 * The FHIR edge's own failures (not a problem with the posted data, which is an OperationOutcome
 * from validation or a MappingError): the HTTP layer answers BUSY with 503 and Retry-After, and
 * INTERNAL with 500.
 */
export type FhirErrorCode =
  /** A bounded queue (the validation workers') is full: try again later. */
  | 'BUSY'
  /** A component failed (a validation worker died); the request was not processed. */
  | 'INTERNAL';

export class FhirError extends Error {
  readonly code: FhirErrorCode;
  readonly detail: Readonly<Record<string, unknown>>;

  constructor(
    code: FhirErrorCode,
    message: string,
    detail: Record<string, unknown> = {},
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'FhirError';
    this.code = code;
    this.detail = detail;
  }
}

export function isFhirError(err: unknown, code?: FhirErrorCode): err is FhirError {
  return err instanceof FhirError && (code === undefined || err.code === code);
}
