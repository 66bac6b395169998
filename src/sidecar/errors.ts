/**
 * The sidecar core's one error type. `code` names what went wrong; `detail` carries where (the
 * record's entry index, resource type and id, a tx hash), never patient data: no identifier, no
 * name, no resource content appears in a message or a detail. The HTTP edge translates codes to
 * OperationOutcome issues and statuses once.
 */
export type SidecarErrorCode =
  /** A record or argument does not have the required shape (names the entry and field). */
  | 'INVALID_RECORD'
  /** No patient with this identifier is known to this institution. */
  | 'UNKNOWN_PATIENT'
  /** The patient is known here but not (yet) registered on the pinned ledger. */
  | 'UNREGISTERED_PATIENT'
  /** The patient's block has no leaf of this institution: it may not write for them. */
  | 'NO_LEAF'
  /** An identifier is already linked to another patient. */
  | 'IDENTIFIER_CONFLICT'
  /** A correction names a resource this institution does not hold. */
  | 'UNKNOWN_RESOURCE'
  /** A resource (or the one it corrects) belongs to another patient. */
  | 'PATIENT_MISMATCH'
  /** A queue job that is not one of this institution's txs. */
  | 'BAD_JOB'
  /** The node's mempool has no room now: the job is retried later. */
  | 'NODE_BUSY'
  /** The node refused a bundle for a reason retrying will not fix. */
  | 'NODE_REFUSED'
  /** A grant or revocation that this holder refuses (detail.reason: authz DenyReason). */
  | 'GRANT_REFUSED'
  /** The sidecar was closed. */
  | 'CLOSED';

export class SidecarError extends Error {
  readonly code: SidecarErrorCode;
  readonly detail: Readonly<Record<string, unknown>>;

  constructor(
    code: SidecarErrorCode,
    message: string,
    detail: Record<string, unknown> = {},
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'SidecarError';
    this.code = code;
    this.detail = detail;
  }
}

export function isSidecarError(err: unknown, code?: SidecarErrorCode): err is SidecarError {
  return err instanceof SidecarError && (code === undefined || err.code === code);
}
