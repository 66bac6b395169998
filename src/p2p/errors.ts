/**
 * One error type for the network edge. `code` names what went wrong; `detail` carries the values
 * involved (sizes, limits, peers). Ledger verdicts never become P2pErrors: they are mapped to
 * gossip acceptance in verdicts.ts.
 */
export type P2pErrorCode =
  /** The peers list, a key seed or an option is unusable. */
  | 'BAD_CONFIG'
  /** A message, request or response is larger than its protocol allows. */
  | 'TOO_LARGE'
  /** A bounded queue (pending requests to one peer) is full. */
  | 'QUEUE_FULL'
  | 'TIMEOUT'
  /** The member is not in the verified peers list (or is this node itself). */
  | 'UNKNOWN_PEER'
  /** The remote answered a request with an error. */
  | 'REMOTE_ERROR'
  /** The stream or connection closed before the answer arrived. */
  | 'STREAM_CLOSED'
  /** The node is stopping or stopped. */
  | 'STOPPED'
  /** The remote broke the wire protocol (bad frame, impersonation, out-of-bounds page). */
  | 'PROTOCOL_VIOLATION'
  /** This node has no handler for the request's service. */
  | 'NO_HANDLER';

export class P2pError extends Error {
  readonly code: P2pErrorCode;
  readonly detail: Readonly<Record<string, unknown>>;

  constructor(code: P2pErrorCode, message: string, detail: Record<string, unknown> = {}) {
    super(message);
    this.name = 'P2pError';
    this.code = code;
    this.detail = detail;
  }
}

export function isP2pError(err: unknown, code?: P2pErrorCode): err is P2pError {
  return err instanceof P2pError && (code === undefined || err.code === code);
}
