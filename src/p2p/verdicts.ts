/**
 * The one translation from ledger verdicts to gossip acceptance (STYLE: errors are translated once,
 * at the edge). The rule, as in Lodestar's gossip validation:
 * - reject: the message is invalid whatever the receiver's view of the chain (bad encoding, bad
 *   signature, bad proof of work, a fee below the chain's floor). It is not forwarded and the peer
 *   that sent it is penalised: an honest peer validates before forwarding, so it never sends one.
 * - ignore: the verdict depends on the receiver's state (its height, round, pinned chain, clock,
 *   balances, consensus group) or the message is a repeat. Not forwarded, nobody penalised: the
 *   sender may simply be ahead of, behind, or on a different round from us.
 */
import { isLedgerError, type LedgerErrorCode, type Verdict } from '../ledger/errors.ts';

export type GossipAcceptance = 'accept' | 'ignore' | 'reject';

const ACCEPTANCE: Readonly<Record<LedgerErrorCode, 'ignore' | 'reject'>> = {
  // encoding: intrinsic to the bytes
  MALFORMED: 'reject',
  NON_CANONICAL: 'reject',
  TOO_LARGE: 'reject',
  // signatures and proofs: checkable against the (static) member registry and the message alone
  BAD_SIGNATURE: 'reject',
  BAD_CHAMELEON_OPENING: 'reject',
  BAD_MERKLE_PROOF: 'reject',
  // keyblocks: the PoW and tx root are checked against the header itself; the rest needs our chain
  BAD_POW: 'reject',
  BAD_TX_ROOT: 'reject',
  BAD_DIFFICULTY: 'ignore',
  WRONG_PARENT: 'ignore',
  WRONG_I2_LINK: 'ignore',
  BAD_TIMESTAMP: 'ignore',
  CONFLICTS_WITH_PINNED: 'ignore',
  // transactions: the fee floor is a chain parameter; everything else is state
  FEE_TOO_LOW: 'reject',
  UNKNOWN_PATIENT: 'ignore',
  DUPLICATE_PATIENT: 'ignore',
  UNKNOWN_INSTITUTION: 'ignore',
  UNAUTHORISED_INSTITUTION: 'ignore',
  REPLAYED_TX: 'ignore',
  SEQUENCE_GAP: 'ignore',
  UNKNOWN_TX: 'ignore',
  INSUFFICIENT_FUNDS: 'ignore',
  UNFAIR_BATCH: 'ignore',
  // consensus: group, proposer, height and round all depend on where the receiver is. An
  // equivocation is evidence against its signer, not against the forwarder: the node keeps it.
  NOT_IN_GROUP: 'ignore',
  NOT_PROPOSER: 'ignore',
  QUORUM_SHORT_MEMBERS: 'ignore',
  QUORUM_SHORT_REPUTATION: 'ignore',
  DUPLICATE_VOTE: 'ignore',
  WRONG_HEIGHT: 'ignore',
  WRONG_ROUND: 'ignore',
  EQUIVOCATION: 'ignore',
  INVALID_VALUE: 'ignore',
};

export function acceptanceOfCode(code: LedgerErrorCode): 'ignore' | 'reject' {
  return ACCEPTANCE[code] ?? 'ignore';
}

export function acceptanceOfVerdict(verdict: Verdict): GossipAcceptance {
  return verdict.ok ? 'accept' : acceptanceOfCode(verdict.error.code);
}

/**
 * A thrown error: a LedgerError (a decoder's MALFORMED, say) maps by its code; anything else is a
 * fault of ours, not the peer's, so the message is ignored and nobody is penalised.
 */
export function acceptanceOfError(err: unknown): 'ignore' | 'reject' {
  return isLedgerError(err) ? acceptanceOfCode(err.code) : 'ignore';
}
