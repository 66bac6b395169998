/**
 * State, inputs and effects of the Tendermint instance (bft.ts), and the per-height message log.
 * Everything is immutable: a step returns a new state that shares unchanged parts with the old one,
 * so states can be kept, compared and replayed.
 */
import { toHex } from '../crypto/bytes.ts';
import type {
  BftMessage,
  Equivocation,
  HashValue,
  Proposal,
  Signer,
  Vote,
} from './bft-messages.ts';
import type { ConsensusGroup, ConsensusKind } from './certificate.ts';
import type { Verdict } from './errors.ts';
import type { Bytes, Certificate, InstitutionIndex } from './types.ts';

export interface BftOpts {
  /** timeoutPropose(r) = timeoutProposeMs + r · timeoutDeltaMs; likewise prevote and precommit. */
  readonly timeoutProposeMs: number;
  readonly timeoutPrevoteMs: number;
  readonly timeoutPrecommitMs: number;
  readonly timeoutDeltaMs: number;
  /** Every this often the node re-sends its recent messages and its polka (gossip, see bft.ts). */
  readonly resendIntervalMs: number;
  /** Messages for rounds above round_p + this are dropped (no tracking round 2^50 for a liar). */
  readonly maxRoundsAhead: number;
  /** Rounds below round_p - this are forgotten (except lockedRound and validRound). */
  readonly maxRoundsKept: number;
  /**
   * Distinct proposals kept per round, and distinct votes per member per round and type: more than
   * one only from an equivocator. Beyond the cap a conflicting message is still kept when its value
   * is backed by another member's vote (or is a proposal of the round), as the paper counts every
   * sender of a value; those values are at most n per round, so memory stays bounded.
   */
  readonly maxProposalsPerRound: number;
  readonly maxVotesPerMember: number;
  /** Messages kept per sender for height + 1, replayed when that height starts. */
  readonly maxFuturePerSender: number;
}

export const defaultBftOpts: BftOpts = {
  timeoutProposeMs: 3000,
  timeoutPrevoteMs: 1000,
  timeoutPrecommitMs: 1000,
  timeoutDeltaMs: 500,
  resendIntervalMs: 2000,
  maxRoundsAhead: 16,
  maxRoundsKept: 64,
  maxProposalsPerRound: 2,
  maxVotesPerMember: 2,
  maxFuturePerSender: 12,
};

/** What the instance needs from its caller, and nothing else. */
export interface BftContext {
  readonly chainId: string;
  readonly kind: ConsensusKind;
  readonly group: ConsensusGroup;
  /** This node's signer, or null for an observer that follows but never votes. */
  readonly signer: Signer | null;
  /** valid(v) of the paper: pure, deterministic. */
  validate(value: Bytes): Verdict;
  /** getValue() of the paper: what this node proposes at `height`; null proposes nothing. */
  getValue(height: number): Bytes | null;
  /** id(v); default H('value', v) (bft-messages.ts valueHash). May throw for undecodable values. */
  readonly hashValue?: HashValue;
  readonly opts: BftOpts;
}

export type TimeoutKind = 'propose' | 'prevote' | 'precommit' | 'resend';

export interface BftTimeout {
  readonly kind: TimeoutKind;
  readonly height: number;
  readonly round: number;
}

export type BftInput =
  | { readonly type: 'start'; readonly height: number }
  /** A message whose signature the edge has verified (verifyMessage). */
  | { readonly type: 'message'; readonly message: BftMessage }
  | { readonly type: 'timeout'; readonly timeout: BftTimeout }
  /** A decision learned from a peer (sync): the value and its pinning certificate. */
  | { readonly type: 'commit'; readonly value: Bytes; readonly certificate: Certificate };

export type BftEffect =
  | { readonly type: 'broadcast'; readonly message: BftMessage }
  | { readonly type: 'schedule'; readonly timeout: BftTimeout; readonly at: number }
  | {
      readonly type: 'decide';
      readonly height: number;
      readonly value: Bytes;
      readonly certificate: Certificate;
    }
  | { readonly type: 'evidence'; readonly evidence: Equivocation };

export type BftStep = 'propose' | 'prevote' | 'precommit';

/** A value with its id(v), and id(v) in hex as a map key. */
export interface ValueRef {
  readonly value: Bytes;
  readonly hash: Bytes;
  readonly key: string;
}

export interface ProposalEntry extends ValueRef {
  readonly message: Proposal;
  readonly valid: boolean;
}

export interface VoteEntry {
  readonly message: Vote;
  /** hex id(v), or '' for nil. */
  readonly key: string;
}

/** Each member's votes of one type in one round: one, unless the member equivocated. */
export type VoteMap = ReadonlyMap<InstitutionIndex, readonly VoteEntry[]>;

export interface RoundLog {
  /** From proposer(h, r) only; the first is the one this node acts on (lines 22, 28). */
  readonly proposals: readonly ProposalEntry[];
  readonly prevotes: VoteMap;
  readonly precommits: VoteMap;
}

export interface Decision {
  readonly round: number;
  readonly value: Bytes;
  readonly certificate: Certificate;
}

export interface BftState {
  /** h_p; -1 before the first start. */
  readonly height: number;
  readonly round: number;
  readonly step: BftStep;
  readonly decision: Decision | null;
  readonly locked: ValueRef | null;
  readonly lockedRound: number;
  readonly valid: ValueRef | null;
  readonly validRound: number;
  /** The "for the first time" rules of round_p: line 34, line 36, line 47. */
  readonly fired: {
    readonly prevoteTimeout: boolean;
    readonly polka: boolean;
    readonly precommitTimeout: boolean;
  };
  readonly rounds: ReadonlyMap<number, RoundLog>;
  /** `${round}/${type}/${member}` already reported as equivocation. */
  readonly reported: ReadonlySet<string>;
  /** Bounded buffer of messages for height + 1. */
  readonly future: readonly BftMessage[];
}

const NOT_FIRED = { prevoteTimeout: false, polka: false, precommitTimeout: false } as const;
const EMPTY_ROUND: RoundLog = { proposals: [], prevotes: new Map(), precommits: new Map() };

export function initialBftState(): BftState {
  return {
    height: -1,
    round: 0,
    step: 'propose',
    decision: null,
    locked: null,
    lockedRound: -1,
    valid: null,
    validRound: -1,
    fired: NOT_FIRED,
    rounds: new Map(),
    reported: new Set(),
    future: [],
  };
}

/** Line 53: fresh variables and an empty log for a new height; the h+1 buffer is kept. */
export function freshHeight(state: BftState, height: number): BftState {
  return { ...initialBftState(), height, future: state.future };
}

export function roundStarted(state: BftState, round: number): BftState {
  return { ...state, round, step: 'propose', fired: NOT_FIRED };
}

export function roundLog(state: BftState, round: number): RoundLog {
  return state.rounds.get(round) ?? EMPTY_ROUND;
}

export function withRound(state: BftState, round: number, log: RoundLog): BftState {
  const rounds = new Map(state.rounds);
  rounds.set(round, log);
  return { ...state, rounds };
}

export function voteKey(value: Bytes | null): string {
  return value === null ? '' : toHex(value);
}

/** Forgets rounds older than round - maxRoundsKept, except lockedRound's and validRound's. */
export function pruneRounds(state: BftState, maxRoundsKept: number): BftState {
  const cut = state.round - maxRoundsKept;
  let rounds: Map<number, RoundLog> | null = null;
  for (const r of state.rounds.keys()) {
    if (r < cut && r !== state.lockedRound && r !== state.validRound) {
      rounds ??= new Map(state.rounds);
      rounds.delete(r);
    }
  }
  return rounds === null ? state : { ...state, rounds };
}

/** The members that voted for `key` ('' = nil), or for anything when `key` is null. */
export function votersFor(votes: VoteMap, key: string | null): InstitutionIndex[] {
  const out: InstitutionIndex[] = [];
  for (const [member, entries] of votes) {
    if (key === null || entries.some((e) => e.key === key)) out.push(member);
  }
  return out;
}

/** A member's vote for `key`, if it cast one. */
export function voteFor(
  votes: VoteMap,
  member: InstitutionIndex,
  key: string,
): VoteEntry | undefined {
  return votes.get(member)?.find((e) => e.key === key);
}

/** Whether some other member voted for `key`, or it is a proposal of the round (see maxVotesPerMember). */
export function isBacked(
  log: RoundLog,
  votes: VoteMap,
  key: string,
  member: InstitutionIndex,
): boolean {
  if (key === '' || log.proposals.some((p) => p.key === key)) return true;
  for (const [other, entries] of votes) {
    if (other !== member && entries.some((e) => e.key === key)) return true;
  }
  return false;
}

/** Distinct senders of any message in a round (line 55). */
export function sendersOf(log: RoundLog): Set<InstitutionIndex> {
  const out = new Set<InstitutionIndex>(log.prevotes.keys());
  for (const m of log.precommits.keys()) out.add(m);
  for (const p of log.proposals) out.add(p.message.member);
  return out;
}
