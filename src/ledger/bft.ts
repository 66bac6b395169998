/**
 * Tendermint consensus for one height at a time (Buchman, Kwon, Milosevic, "The latest gossip on
 * BFT consensus", 2018, Algorithm 1; "line N" below is that listing), with the weighted quorum of
 * certificate.ts in place of 2f + 1 and exceedsOneThird in place of f + 1.
 *
 * `step(ctx, state, input, now)` is a pure function: it returns the next state, the effects
 * (broadcast, schedule a timeout, decide, evidence) and a verdict on the input for the network
 * edge. The caller verifies signatures before delivering messages, feeds timeouts back when they
 * fall due, and after a decision starts the next height. It must also answer a peer that sends
 * messages of a height it has decided with that decision (the `commit` input): Tendermint's
 * liveness assumes gossip, and a node that lost the precommits before GST learns the decision only so.
 *
 * Departures from the listing, none of which affects safety:
 * - Gossip: every resendIntervalMs the node re-broadcasts its recent messages and the prevotes
 *   behind its validValue (see `resend`). This stands in for the paper's assumption that every
 *   message a correct process sent or received reaches all correct processes by GST + Δ, which a
 *   lossy network does not give.
 * - Votes are counted as the paper counts messages: a member that equivocates is counted for each
 *   value it signed (quorum intersection still holds, as an honest member signs one value), so the
 *   first of its votes to arrive cannot hide a polka that others saw. Duplicates count once.
 * - A proposer with no value to propose (getValue returns null) waits for the propose timeout.
 * - Memory is bounded: rounds above round_p + maxRoundsAhead are dropped, old rounds forgotten,
 *   proposals and conflicting votes capped per round and member (bft-state.ts, BftOpts), and at
 *   most maxFuturePerSender messages per sender buffered for height + 1.
 */
import { equalBytes, toHex } from '../crypto/bytes.ts';
import {
  type BftMessage,
  checkMessageShape,
  type Proposal,
  type ProposalBody,
  sameContent,
  signMessage,
  type Vote,
  valueHash,
} from './bft-messages.ts';
import {
  type BftContext,
  type BftEffect,
  type BftInput,
  type BftState,
  type BftTimeout,
  freshHeight,
  isBacked,
  type ProposalEntry,
  pruneRounds,
  roundLog,
  roundStarted,
  sendersOf,
  type TimeoutKind,
  type ValueRef,
  voteFor,
  voteKey,
  votersFor,
  withRound,
} from './bft-state.ts';
import {
  type ConsensusGroup,
  exceedsOneThird,
  indexGroup,
  isQuorum,
  makeCertificate,
  verifyCertificate,
} from './certificate.ts';
import { OK, reject, type Verdict } from './errors.ts';
import type { Bytes, Certificate, InstitutionIndex } from './types.ts';

export interface BftResult {
  readonly state: BftState;
  readonly effects: readonly BftEffect[];
  /** OK, or why the input was ignored (for peer scoring at the edge). */
  readonly verdict: Verdict;
}

/** proposer(h, r): round-robin over the members sorted by index, starting at (h + r) mod n. */
export function proposer(group: ConsensusGroup, height: number, round: number): InstitutionIndex {
  const sorted = indexGroup(group).sorted;
  return sorted[(height + round) % sorted.length]!.member;
}

/** timeoutX(r) grows linearly with the round, so that after GST some round is long enough. */
export function timeoutDuration(ctx: BftContext, kind: TimeoutKind, round: number): number {
  const o = ctx.opts;
  const base =
    kind === 'propose'
      ? o.timeoutProposeMs
      : kind === 'prevote'
        ? o.timeoutPrevoteMs
        : kind === 'precommit'
          ? o.timeoutPrecommitMs
          : o.resendIntervalMs;
  return kind === 'resend' ? base : base + round * o.timeoutDeltaMs;
}

/** One step's working set: the state so far and the effects emitted. */
interface Run {
  readonly ctx: BftContext;
  readonly now: number;
  s: BftState;
  readonly effects: BftEffect[];
}

/** id(v) under the context's hash, or null when the value cannot be hashed (undecodable). */
function idOf(ctx: BftContext, value: Bytes): Bytes | null {
  try {
    return (ctx.hashValue ?? valueHash)(value);
  } catch {
    return null;
  }
}

export function step(ctx: BftContext, state: BftState, input: BftInput, now: number): BftResult {
  const run: Run = { ctx, now, s: state, effects: [] };
  let verdict: Verdict = OK;
  switch (input.type) {
    case 'start':
      verdict = onStart(run, input.height);
      break;
    case 'message':
      verdict = onMessage(run, input.message);
      break;
    case 'timeout':
      onTimeout(run, input.timeout);
      break;
    case 'commit':
      verdict = onCommit(run, input.value, input.certificate);
      break;
  }
  applyRules(run);
  return { state: run.s, effects: run.effects, verdict };
}

function canSign(ctx: BftContext): boolean {
  return ctx.signer !== null && indexGroup(ctx.group).byMember.has(ctx.signer.member);
}

function schedule(run: Run, kind: TimeoutKind, round: number, at: number): void {
  run.effects.push({ type: 'schedule', timeout: { kind, height: run.s.height, round }, at });
}

function onStart(run: Run, height: number): Verdict {
  const s = run.s;
  if (!Number.isSafeInteger(height) || height < 0 || height <= s.height) {
    return reject('WRONG_HEIGHT', `cannot start height ${height} at height ${s.height}`);
  }
  const buffered = height === s.height + 1 ? s.future : [];
  run.s = { ...freshHeight(s, height), future: [] };
  schedule(run, 'resend', 0, run.now + timeoutDuration(run.ctx, 'resend', 0));
  startRound(run, 0);
  for (const m of buffered) if (m.height === height) onMessage(run, m);
  return OK;
}

/** Lines 11-21. */
function startRound(run: Run, round: number): void {
  const { ctx } = run;
  run.s = pruneRounds(roundStarted(run.s, round), ctx.opts.maxRoundsKept);
  const s = run.s;
  if (canSign(ctx) && proposer(ctx.group, s.height, round) === ctx.signer!.member) {
    const fresh = s.valid === null ? ctx.getValue(s.height) : null;
    const value = s.valid?.value ?? fresh;
    if (value !== null) {
      const validRound = s.valid === null ? -1 : s.validRound;
      const body: ProposalBody = {
        type: 'proposal',
        kind: ctx.kind,
        height: s.height,
        round,
        validRound,
        value,
      };
      broadcast(run, signMessage(ctx.chainId, body, ctx.signer!, ctx.hashValue));
      return;
    }
  }
  schedule(run, 'propose', round, run.now + timeoutDuration(ctx, 'propose', round));
}

/** Sends a message and delivers it to this node's own log, as a broadcast to all would. */
function broadcast(run: Run, m: BftMessage): void {
  run.effects.push({ type: 'broadcast', message: m });
  if (m.type === 'proposal') addProposal(run, m);
  else addVote(run, m);
}

function vote(run: Run, type: Vote['type'], value: Bytes | null): void {
  const { ctx, s } = run;
  if (canSign(ctx)) {
    const body = { type, kind: ctx.kind, height: s.height, round: s.round, value };
    broadcast(run, signMessage(ctx.chainId, body, ctx.signer!));
  }
  run.s = { ...run.s, step: type };
}

function onMessage(run: Run, m: BftMessage): Verdict {
  const { ctx, s } = run;
  if (m.kind !== ctx.kind)
    return reject('MALFORMED', `a ${m.kind} message in a ${ctx.kind} instance`);
  const shape = checkMessageShape(m);
  if (!shape.ok) return shape;
  if (!indexGroup(ctx.group).byMember.has(m.member)) {
    return reject('NOT_IN_GROUP', `sender ${m.member} is not in the consensus group`, {
      member: m.member,
    });
  }
  if (s.height >= 0 && m.height === s.height + 1) return bufferFuture(run, m);
  if (m.height !== s.height) {
    return reject('WRONG_HEIGHT', `message for height ${m.height} at height ${s.height}`, {
      height: m.height,
      current: s.height,
    });
  }
  if (s.decision !== null) return OK; // this height is over; late messages are harmless
  const tooOld = m.round < s.round - ctx.opts.maxRoundsKept && !s.rounds.has(m.round);
  if (m.round > s.round + ctx.opts.maxRoundsAhead || tooOld) {
    return reject('WRONG_ROUND', `message for round ${m.round} at round ${s.round}`, {
      round: m.round,
      current: s.round,
    });
  }
  return m.type === 'proposal' ? addProposal(run, m) : addVote(run, m);
}

function bufferFuture(run: Run, m: BftMessage): Verdict {
  const future = run.s.future;
  let count = 0;
  for (const f of future) {
    if (f.member !== m.member) continue;
    if (sameContent(f, m)) return reject('DUPLICATE_VOTE', 'already buffered');
    count++;
  }
  if (count >= run.ctx.opts.maxFuturePerSender) {
    return reject('WRONG_HEIGHT', `buffer for height ${m.height} is full for member ${m.member}`);
  }
  run.s = { ...run.s, future: [...future, m] };
  return OK;
}

function report(run: Run, first: BftMessage, second: BftMessage): Verdict {
  const tag = `${second.round}/${second.type}/${second.member}`;
  if (!run.s.reported.has(tag)) {
    const reported = new Set(run.s.reported).add(tag);
    run.s = { ...run.s, reported };
    run.effects.push({ type: 'evidence', evidence: { member: second.member, first, second } });
  }
  return reject('EQUIVOCATION', `member ${second.member} sent conflicting ${second.type}s`, {
    member: second.member,
    round: second.round,
  });
}

function isValid(run: Run, ref: ValueRef): boolean {
  for (const log of run.s.rounds.values()) {
    for (const p of log.proposals) if (p.key === ref.key) return p.valid;
  }
  return run.ctx.validate(ref.value).ok;
}

function addProposal(run: Run, m: Proposal): Verdict {
  const { ctx, s } = run;
  const expected = proposer(ctx.group, s.height, m.round);
  if (m.member !== expected) {
    return reject('NOT_PROPOSER', `member ${m.member} is not the proposer`, {
      member: m.member,
      proposer: expected,
      round: m.round,
    });
  }
  const log = roundLog(s, m.round);
  const hash = idOf(ctx, m.value);
  if (hash === null) return reject('MALFORMED', `proposal of member ${m.member} is not decodable`);
  const ref = { value: m.value, hash, key: toHex(hash) };
  const first = log.proposals[0];
  if (log.proposals.some((p) => p.key === ref.key && p.message.validRound === m.validRound)) {
    return reject('DUPLICATE_VOTE', `proposal for round ${m.round} already received`);
  }
  const backed =
    votersFor(log.prevotes, ref.key).length + votersFor(log.precommits, ref.key).length;
  if (log.proposals.length >= ctx.opts.maxProposalsPerRound && backed === 0) {
    return report(run, first!.message, m);
  }
  const entry: ProposalEntry = { ...ref, message: m, valid: isValid(run, ref) };
  run.s = withRound(run.s, m.round, { ...log, proposals: [...log.proposals, entry] });
  return first === undefined ? OK : report(run, first.message, m);
}

function addVote(run: Run, m: Vote): Verdict {
  const log = roundLog(run.s, m.round);
  const votes = m.type === 'prevote' ? log.prevotes : log.precommits;
  const key = voteKey(m.value);
  const mine = votes.get(m.member) ?? [];
  if (mine.some((e) => e.key === key))
    return reject('DUPLICATE_VOTE', `${m.type} already received`);
  const full = mine.length >= run.ctx.opts.maxVotesPerMember;
  if (!full || isBacked(log, votes, key, m.member)) {
    const next = new Map(votes).set(m.member, [...mine, { message: m, key }]);
    const updated =
      m.type === 'prevote' ? { ...log, prevotes: next } : { ...log, precommits: next };
    run.s = withRound(run.s, m.round, updated);
  }
  return mine[0] === undefined ? OK : report(run, mine[0].message, m);
}

function onTimeout(run: Run, t: BftTimeout): void {
  const s = run.s;
  if (t.height !== s.height || s.decision !== null) return;
  if (t.kind === 'resend') {
    resend(run);
    return;
  }
  if (t.round !== s.round) return;
  if (t.kind === 'propose' && s.step === 'propose') vote(run, 'prevote', null); // lines 57-60
  if (t.kind === 'prevote' && s.step === 'prevote') vote(run, 'precommit', null); // lines 61-64
  if (t.kind === 'precommit') startRound(run, s.round + 1); // lines 65-67: the view change
}

/**
 * Gossip: every resendIntervalMs, re-sends this node's messages of the current and previous round
 * (a peer still in the previous round may lack our precommit there) and the 2f + 1 prevotes that
 * justify our validValue, so that a later proposal of it with vr = validRound can pass line 28 at
 * peers that lost those prevotes before GST. Periodic rather than "when stuck": rounds can keep
 * advancing on timeouts while no decision is possible without these messages.
 */
function resend(run: Run): void {
  const { ctx, s, now } = run;
  const self = canSign(ctx) ? ctx.signer!.member : -1;
  const rounds = [s.round - 1, s.round];
  if (s.validRound >= 0 && s.validRound < s.round - 1) rounds.unshift(s.validRound);
  for (const r of rounds) {
    const log = s.rounds.get(r);
    if (log === undefined) continue;
    const polka = r === s.validRound ? s.valid!.key : null;
    const recent = r >= s.round - 1;
    const messages: BftMessage[] = [];
    for (const p of log.proposals)
      if (recent && p.message.member === self) messages.push(p.message);
    for (const [member, entries] of log.prevotes) {
      for (const e of entries) {
        if ((recent && member === self) || e.key === polka) messages.push(e.message);
      }
    }
    if (recent) for (const e of log.precommits.get(self) ?? []) messages.push(e.message);
    for (const message of messages) run.effects.push({ type: 'broadcast', message });
  }
  schedule(run, 'resend', 0, now + ctx.opts.resendIntervalMs);
}

function onCommit(run: Run, value: Bytes, cert: Certificate): Verdict {
  const { ctx, s } = run;
  if (s.height < 0 || s.decision !== null) return OK;
  if (cert.kind !== ctx.kind || cert.height !== s.height) {
    return reject('WRONG_HEIGHT', `certificate for height ${cert.height} at height ${s.height}`);
  }
  const hash = idOf(ctx, value);
  if (hash === null || !equalBytes(hash, cert.value)) {
    return reject('INVALID_VALUE', 'the value does not match the certificate');
  }
  const checked = verifyCertificate(cert, ctx.group, ctx.chainId);
  if (!checked.ok) return checked;
  const valid = ctx.validate(value);
  if (!valid.ok) return valid;
  decide(run, cert.round, value, cert);
  return OK;
}

function decide(run: Run, round: number, value: Bytes, certificate: Certificate): void {
  run.s = { ...run.s, decision: { round, value, certificate } };
  run.effects.push({ type: 'decide', height: run.s.height, value, certificate });
}

/** Evaluates the upon-rules until none fires; true if any did. */
function applyRules(run: Run): boolean {
  let fired = false;
  while (fireOne(run)) fired = true;
  return fired;
}

function fireOne(run: Run): boolean {
  const { ctx } = run;
  const s = run.s;
  const group = ctx.group;
  if (s.decision !== null || s.height < 0) return false;
  // Lines 49-54: a valid proposal of any round with 2f + 1 precommits for it is decided.
  for (const [r, log] of s.rounds) {
    for (const p of log.proposals) {
      if (p.valid && isQuorum(group, votersFor(log.precommits, p.key))) {
        const signatures = votersFor(log.precommits, p.key).map((member) => ({
          member,
          signature: voteFor(log.precommits, member, p.key)!.message.signature,
        }));
        const subject = { kind: ctx.kind, height: s.height, round: r, value: p.hash };
        decide(run, r, p.value, makeCertificate(subject, signatures));
        return true;
      }
    }
  }
  // Lines 55-56: f + 1 senders in a higher round guarantee an honest one is there; join it.
  let skip = -1;
  for (const [r, log] of s.rounds) {
    if (r > s.round && r > skip && exceedsOneThird(group, sendersOf(log))) skip = r;
  }
  if (skip >= 0) {
    startRound(run, skip);
    return true;
  }
  const log = roundLog(s, s.round);
  const proposal = log.proposals[0];
  if (s.step === 'propose' && proposal !== undefined) {
    const vr = proposal.message.validRound;
    if (vr === -1) {
      // Lines 22-27: prevote v unless locked on another value.
      const ok = proposal.valid && (s.lockedRound === -1 || s.locked?.key === proposal.key);
      vote(run, 'prevote', ok ? proposal.hash : null);
      return true;
    }
    if (vr < s.round && isQuorum(group, votersFor(roundLog(s, vr).prevotes, proposal.key))) {
      // Lines 28-33: a re-proposal backed by a polka in round vr unlocks a lock from round <= vr.
      const ok = proposal.valid && (s.lockedRound <= vr || s.locked?.key === proposal.key);
      vote(run, 'prevote', ok ? proposal.hash : null);
      return true;
    }
  }
  // Lines 34-35.
  if (s.step === 'prevote' && !s.fired.prevoteTimeout && isQuorum(group, log.prevotes.keys())) {
    run.s = { ...s, fired: { ...s.fired, prevoteTimeout: true } };
    schedule(run, 'prevote', s.round, run.now + timeoutDuration(ctx, 'prevote', s.round));
    return true;
  }
  // Lines 36-43: a polka for a valid proposal locks it (if still prevoting) and makes it validValue.
  if (s.step !== 'propose' && !s.fired.polka) {
    for (const p of log.proposals) {
      if (!p.valid || !isQuorum(group, votersFor(log.prevotes, p.key))) continue;
      const ref: ValueRef = { value: p.value, hash: p.hash, key: p.key };
      if (s.step === 'prevote') {
        run.s = { ...run.s, locked: ref, lockedRound: s.round };
        vote(run, 'precommit', p.hash);
      }
      run.s = { ...run.s, valid: ref, validRound: s.round, fired: { ...s.fired, polka: true } };
      return true;
    }
  }
  // Lines 44-46.
  if (s.step === 'prevote' && isQuorum(group, votersFor(log.prevotes, ''))) {
    vote(run, 'precommit', null);
    return true;
  }
  // Lines 47-48.
  if (!s.fired.precommitTimeout && isQuorum(group, log.precommits.keys())) {
    run.s = { ...s, fired: { ...s.fired, precommitTimeout: true } };
    schedule(run, 'precommit', s.round, run.now + timeoutDuration(ctx, 'precommit', s.round));
    return true;
  }
  return false;
}
