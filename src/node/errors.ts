/**
 * The node's one error type. `code` names what went wrong; `detail` carries the values involved
 * (the config field, the height, the peer). Ledger verdicts stay LedgerErrors and p2p failures
 * P2pErrors; a NodeError is about the node itself: its configuration, its files, and the
 * invariants it refuses to run past (a certified batch that conflicts with a pinned one).
 */
export type NodeErrorCode =
  /** The config file, or a file it names, is missing or has a bad field (`detail.field`). */
  | 'BAD_CONFIG'
  /** The genesis file does not describe a valid chain (`detail.field`). */
  | 'BAD_GENESIS'
  /** The key file does not hold this member's keys. */
  | 'BAD_KEYS'
  /** The data directory holds another chain, or a file in it is damaged. */
  | 'BAD_DATA'
  /** Two different batches are certified at one height: more than a third of the group is faulty. */
  | 'FORK'
  /** A bounded queue is full; the input was dropped (the sender re-sends). */
  | 'BUSY'
  /** The node is stopping or stopped. */
  | 'STOPPED';

export class NodeError extends Error {
  readonly code: NodeErrorCode;
  readonly detail: Readonly<Record<string, unknown>>;

  constructor(
    code: NodeErrorCode,
    message: string,
    detail: Record<string, unknown> = {},
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'NodeError';
    this.code = code;
    this.detail = detail;
  }
}

export function isNodeError(err: unknown, code?: NodeErrorCode): err is NodeError {
  return err instanceof NodeError && (code === undefined || err.code === code);
}
