/**
 * One error type for the ledger domain. `code` names the rule that failed (the "typed reason");
 * `detail` carries the values involved. The edges translate codes once: to gossip verdicts
 * (accept / ignore / reject) in the p2p layer and to HTTP statuses in the API.
 */
export type LedgerErrorCode =
  // encoding
  | 'MALFORMED'
  | 'NON_CANONICAL'
  | 'TOO_LARGE'
  // signatures and proofs
  | 'BAD_SIGNATURE'
  | 'BAD_CHAMELEON_OPENING'
  | 'BAD_MERKLE_PROOF'
  // keyblocks
  | 'BAD_POW'
  | 'BAD_DIFFICULTY'
  | 'WRONG_PARENT'
  | 'WRONG_I2_LINK'
  | 'BAD_TIMESTAMP'
  | 'CONFLICTS_WITH_PINNED'
  | 'BAD_TX_ROOT'
  // transactions
  | 'UNKNOWN_PATIENT'
  | 'DUPLICATE_PATIENT'
  | 'UNKNOWN_INSTITUTION'
  | 'UNAUTHORISED_INSTITUTION'
  | 'REPLAYED_TX'
  | 'SEQUENCE_GAP'
  | 'UNKNOWN_TX'
  | 'FEE_TOO_LOW'
  | 'INSUFFICIENT_FUNDS'
  | 'UNFAIR_BATCH'
  // consensus
  | 'NOT_IN_GROUP'
  | 'NOT_PROPOSER'
  | 'QUORUM_SHORT_MEMBERS'
  | 'QUORUM_SHORT_REPUTATION'
  | 'DUPLICATE_VOTE'
  | 'WRONG_HEIGHT'
  | 'WRONG_ROUND'
  | 'EQUIVOCATION'
  | 'INVALID_VALUE';

export class LedgerError extends Error {
  readonly code: LedgerErrorCode;
  readonly detail: Readonly<Record<string, unknown>>;

  constructor(code: LedgerErrorCode, message: string, detail: Record<string, unknown> = {}) {
    super(message);
    this.name = 'LedgerError';
    this.code = code;
    this.detail = detail;
  }
}

export function isLedgerError(err: unknown, code?: LedgerErrorCode): err is LedgerError {
  return err instanceof LedgerError && (code === undefined || err.code === code);
}

/** A validation verdict: ok, or the typed reason it failed. */
export type Verdict = { ok: true } | { ok: false; error: LedgerError };

export const OK: Verdict = { ok: true };

export function reject(
  code: LedgerErrorCode,
  message: string,
  detail: Record<string, unknown> = {},
): Verdict {
  return { ok: false, error: new LedgerError(code, message, detail) };
}
