/**
 * One error type for the crypto domain. `code` is stable and machine-readable; `message` says what
 * was wrong in words an integrator can act on; `detail` carries typed context (never secrets).
 */
export type CryptoErrorCode =
  | 'INVALID_ARGUMENT'
  | 'INVALID_LENGTH'
  | 'INVALID_POINT'
  | 'IDENTITY_POINT'
  | 'SCALAR_OUT_OF_RANGE'
  | 'ZERO_SCALAR'
  | 'INVALID_ENCODING'
  | 'INVALID_SIGNATURE'
  | 'CAPSULE_INVALID'
  | 'KFRAG_INVALID'
  | 'CFRAG_INVALID'
  | 'CFRAGS_MISMATCHED'
  | 'DECRYPTION_FAILED'
  | 'CHAMELEON_INVALID'
  | 'MERKLE_INVALID'
  | 'KEYFILE_INVALID'
  | 'WRONG_PASSPHRASE';

export class CryptoError extends Error {
  readonly code: CryptoErrorCode;
  readonly detail: Readonly<Record<string, unknown>>;

  constructor(code: CryptoErrorCode, message: string, detail: Record<string, unknown> = {}) {
    super(message);
    this.name = 'CryptoError';
    this.code = code;
    this.detail = detail;
  }
}

export function isCryptoError(err: unknown, code?: CryptoErrorCode): err is CryptoError {
  return err instanceof CryptoError && (code === undefined || err.code === code);
}
