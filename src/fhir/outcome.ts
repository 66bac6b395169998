/**
 * The FHIR edge's one error translation (Medplum's normalizeOperationOutcome + getStatus): every
 * failure becomes an OperationOutcome and an HTTP status, here and nowhere else.
 *
 * - `OutcomeError` is the error the FHIR service throws itself: a status and the issues, each with
 *   its FHIRPath `expression` where one applies.
 * - MappingError (src/mapping) carries the mapper's issues; the status is the first issue's (issues
 *   come in bundle order, so the answer names the first failing entry's problem):
 *     MALFORMED, UNSUPPORTED, UNRESOLVED_REFERENCE 400 · UNKNOWN_PATIENT 404 (a Patient reference
 *     that resolves to nothing on this server) · MULTIPLE_MATCHES 412 · CONFLICT 409 ·
 *     UNMAPPED_TYPE, NO_PATIENT_IDENTIFIER 422.
 * - SidecarError (src/sidecar): a patient this server knows as a FHIR Patient but who is not
 *   registered on the ledger (UNKNOWN_PATIENT, UNREGISTERED_PATIENT) or for whom this institution
 *   holds no upload grant (NO_LEAF) is 422, a business rule: the request is valid FHIR and names an
 *   existing Patient, but records cannot be anchored for them yet. 404 is kept for what does not
 *   exist on this server. IDENTIFIER_CONFLICT and PATIENT_MISMATCH are 409; INVALID_RECORD 400.
 * - QueueError UNAVAILABLE and FhirError BUSY are 503 with Retry-After; everything else is 500,
 *   with a fixed message (the cause goes to the log, never to the client).
 *
 * No message here holds patient data: the domains' messages name entries, types, ids and fields.
 */
import type { OperationOutcome, OperationOutcomeIssue } from '@medplum/fhirtypes';
import { isMappingError, type MappingIssueCode } from '../mapping/errors.ts';
import { isQueueError } from '../queue/errors.ts';
import { isSidecarError, type SidecarErrorCode } from '../sidecar/errors.ts';
import { isFhirError } from './errors.ts';

export type IssueType = OperationOutcomeIssue['code'];
export type IssueSeverity = OperationOutcomeIssue['severity'];

export interface Outcome {
  readonly status: number;
  readonly outcome: OperationOutcome;
  /** Response headers the status needs (Retry-After for 503). */
  readonly headers: Readonly<Record<string, string>>;
  /** True for failures of the server itself (logged with their cause). */
  readonly internal: boolean;
}

/** A failure the FHIR service reports: the HTTP status and every issue found. */
export class OutcomeError extends Error {
  readonly status: number;
  readonly issues: readonly OperationOutcomeIssue[];
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    status: number,
    issues: readonly OperationOutcomeIssue[],
    headers: Record<string, string> = {},
  ) {
    super(issues[0]?.diagnostics ?? issues[0]?.details?.text ?? `HTTP ${status}`);
    this.name = 'OutcomeError';
    this.status = status;
    this.issues = issues;
    this.headers = headers;
  }
}

/** One error issue; `expression` is a FHIRPath such as `Bundle.entry[3].resource.subject`. */
export function issue(
  code: IssueType,
  message: string,
  expression?: string | readonly string[],
  severity: IssueSeverity = 'error',
): OperationOutcomeIssue {
  const expr =
    expression === undefined ? [] : typeof expression === 'string' ? [expression] : expression;
  return {
    severity,
    code,
    details: { text: message },
    ...(expr.length > 0 ? { expression: [...expr] } : {}),
  };
}

/** A failure with one issue. */
export function fail(
  status: number,
  code: IssueType,
  message: string,
  expression?: string | readonly string[],
): OutcomeError {
  return new OutcomeError(status, [issue(code, message, expression)]);
}

export function operationOutcome(issues: readonly OperationOutcomeIssue[]): OperationOutcome {
  return { resourceType: 'OperationOutcome', issue: [...issues] };
}

const MAPPING_STATUS: Record<MappingIssueCode, [number, IssueType]> = {
  MALFORMED: [400, 'structure'],
  UNSUPPORTED: [400, 'not-supported'],
  UNRESOLVED_REFERENCE: [400, 'not-found'],
  UNKNOWN_PATIENT: [404, 'not-found'],
  MULTIPLE_MATCHES: [412, 'multiple-matches'],
  CONFLICT: [409, 'conflict'],
  UNMAPPED_TYPE: [422, 'not-supported'],
  NO_PATIENT_IDENTIFIER: [422, 'business-rule'],
};

const SIDECAR_STATUS: Record<SidecarErrorCode, [number, IssueType]> = {
  INVALID_RECORD: [400, 'invalid'],
  UNKNOWN_PATIENT: [422, 'business-rule'],
  UNREGISTERED_PATIENT: [422, 'business-rule'],
  NO_LEAF: [422, 'business-rule'],
  IDENTIFIER_CONFLICT: [409, 'conflict'],
  UNKNOWN_RESOURCE: [404, 'not-found'],
  PATIENT_MISMATCH: [409, 'conflict'],
  BAD_JOB: [500, 'exception'],
  NODE_BUSY: [503, 'transient'],
  NODE_REFUSED: [500, 'exception'],
  GRANT_REFUSED: [403, 'forbidden'],
  CLOSED: [503, 'transient'],
};

/** The status and issue type of a mapping issue code. */
export function mappingStatus(code: MappingIssueCode): [number, IssueType] {
  return MAPPING_STATUS[code];
}

/** The status and issue type of a sidecar error code. */
export function sidecarStatus(code: SidecarErrorCode): [number, IssueType] {
  return SIDECAR_STATUS[code];
}

function retryAfter(ms: number): Record<string, string> {
  return { 'retry-after': String(Math.max(1, Math.ceil(ms / 1000))) };
}

/** Translates any error into an OperationOutcome and a status. */
export function outcomeOf(err: unknown): Outcome {
  const done = (
    status: number,
    issues: readonly OperationOutcomeIssue[],
    headers: Record<string, string> = {},
  ): Outcome => ({
    status,
    outcome: operationOutcome(issues),
    headers,
    internal: status >= 500 && status !== 503,
  });
  if (err instanceof OutcomeError) return done(err.status, err.issues, { ...err.headers });
  if (isMappingError(err)) {
    if (err.issues.length === 0) return done(400, [issue('invalid', err.message)]);
    const [status] = MAPPING_STATUS[err.issues[0]!.code];
    return done(
      status,
      err.issues.map((i) => issue(MAPPING_STATUS[i.code][1], i.message, i.expression)),
    );
  }
  if (isSidecarError(err)) {
    const [status, code] = SIDECAR_STATUS[err.code];
    if (status >= 500 && status !== 503) return done(500, [issue('exception', 'internal error')]);
    const headers: Record<string, string> = status === 503 ? retryAfter(1000) : {};
    return done(status, [issue(code, err.message)], headers);
  }
  if (isQueueError(err, 'UNAVAILABLE')) {
    return done(
      503,
      [issue('transient', 'the tx queue is unavailable; nothing was stored, try again')],
      retryAfter(err.retryAfterMs ?? 1000),
    );
  }
  if (isFhirError(err, 'BUSY')) {
    return done(503, [issue('throttled', err.message)], retryAfter(1000));
  }
  return done(500, [issue('exception', 'internal error')]);
}
