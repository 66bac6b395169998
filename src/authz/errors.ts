/**
 * The authorisation domain's error type, for bad arguments and undecodable grants. Decisions are
 * values, not errors: `decideShare` returns allow or deny(reason) (grant.ts).
 */
export type AuthzErrorCode =
  /** A caller passed something that is not what the function takes (names the argument). */
  | 'INVALID_ARGUMENT'
  /** A grant, Consent or revocation that cannot be decoded (names the field). */
  | 'MALFORMED';

export class AuthzError extends Error {
  readonly code: AuthzErrorCode;
  readonly detail: Readonly<Record<string, unknown>>;

  constructor(code: AuthzErrorCode, message: string, detail: Record<string, unknown> = {}) {
    super(message);
    this.name = 'AuthzError';
    this.code = code;
    this.detail = detail;
  }
}

export function isAuthzError(err: unknown, code?: AuthzErrorCode): err is AuthzError {
  return err instanceof AuthzError && (code === undefined || err.code === code);
}
