/**
 * One error type for the FHIR mapping domain. A mapping file that is wrong fails with
 * `BAD_MAPPING`, naming the file and the field. A bundle that cannot be mapped fails with
 * `UNMAPPABLE_BUNDLE` and carries every problem found as an issue (code + FHIRPath `expression` +
 * message), collected rather than stopping at the first, so the edge can answer with one
 * OperationOutcome. The HTTP edge picks the status from the issue codes:
 *
 *   MALFORMED             400  the bundle or an entry is not shaped as FHIR says
 *   UNSUPPORTED           400  an interaction the sidecar does not take (DELETE, PATCH)
 *   UNMAPPED_TYPE         422  a resource type the mapping does not name (policy "reject")
 *   UNRESOLVED_REFERENCE  400  a reference that must resolve inside the transaction does not
 *   UNKNOWN_PATIENT       404  a record's patient is neither in the bundle nor stored
 *   NO_PATIENT_IDENTIFIER 422  the patient has no identifier in the mapping's systems
 *   MULTIPLE_MATCHES      412  a conditional reference, create or update matches several resources
 *   CONFLICT              409  two entries touch one resource, or an encounter spans two patients
 */
export type MappingErrorCode = 'BAD_MAPPING' | 'UNMAPPABLE_BUNDLE';

export type MappingIssueCode =
  | 'MALFORMED'
  | 'UNSUPPORTED'
  | 'UNMAPPED_TYPE'
  | 'UNRESOLVED_REFERENCE'
  | 'UNKNOWN_PATIENT'
  | 'NO_PATIENT_IDENTIFIER'
  | 'MULTIPLE_MATCHES'
  | 'CONFLICT';

export interface MappingIssue {
  readonly code: MappingIssueCode;
  /** FHIRPath of the element at fault, e.g. `Bundle.entry[3].resource.subject`. */
  readonly expression: string;
  /** What is wrong, without patient data (names types, ids, references and fields only). */
  readonly message: string;
}

export class MappingError extends Error {
  readonly code: MappingErrorCode;
  readonly detail: Readonly<Record<string, unknown>>;
  readonly issues: readonly MappingIssue[];

  constructor(
    code: MappingErrorCode,
    message: string,
    detail: Record<string, unknown> = {},
    issues: readonly MappingIssue[] = [],
  ) {
    super(message);
    this.name = 'MappingError';
    this.code = code;
    this.detail = detail;
    this.issues = issues;
  }
}

export function isMappingError(err: unknown, code?: MappingErrorCode): err is MappingError {
  return err instanceof MappingError && (code === undefined || err.code === code);
}
