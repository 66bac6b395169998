import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { utf8 } from '../../src/crypto/bytes.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';
import { generateSigningKey, sign } from '../../src/crypto/sign.ts';
import { proposer, step, timeoutDuration } from '../../src/ledger/bft.ts';
import {
  type BftMessage,
  decodeBftMessage,
  encodeBftMessage,
  makeSigner,
  type ProposalBody,
  signMessage,
  type VoteBody,
  valueHash,
  verifyEquivocation,
  verifyMessage,
} from '../../src/ledger/bft-messages.ts';
import {
  type BftContext,
  type BftEffect,
  type BftInput,
  type BftState,
  initialBftState,
} from '../../src/ledger/bft-state.ts';
import {
  type ConsensusGroup,
  isQuorum,
  makeCertificate,
  signVote,
  verifyCertificate,
} from '../../src/ledger/certificate.ts';
import type { Bytes } from '../../src/ledger/types.ts';
import {
  type Behaviour,
  randomScenario,
  runSim,
  type SimConfig,
  type SimResult,
  simBftOpts,
  simValidate,
} from './sim/bft-network.ts';

const CHAIN = 'bft-test';
const keys = Array.from({ length: 8 }, (_, i) =>
  generateSigningKey(deterministicRandom(`bft-${i}`)),
);
const signers = keys.map((k, i) => makeSigner(i, k.secretKey, deterministicRandom(`bft-sig-${i}`)));

function groupOf(reputations: readonly number[]): ConsensusGroup {
  return reputations.map((reputation, i) => ({
    member: i,
    signingKey: keys[i]!.publicKey,
    reputation,
  }));
}

function ctxFor(group: ConsensusGroup, self: number): BftContext {
  return {
    chainId: CHAIN,
    kind: 'batch',
    group,
    signer: signers[self]!,
    opts: simBftOpts,
    validate: simValidate,
    getValue: (height) => utf8(`ok:${height}:${self}`),
  };
}

const V = utf8('ok:v');
const W = utf8('ok:w');
const BAD = utf8('bad:v');

function proposal(from: number, height: number, round: number, value: Bytes, validRound = -1) {
  const body: ProposalBody = { type: 'proposal', kind: 'batch', height, round, validRound, value };
  return signMessage(CHAIN, body, signers[from]!);
}

function vote(
  from: number,
  type: 'prevote' | 'precommit',
  height: number,
  round: number,
  value: Bytes | null,
) {
  const body: VoteBody = {
    type,
    kind: 'batch',
    height,
    round,
    value: value && valueHash(value),
  };
  return signMessage(CHAIN, body, signers[from]!);
}

/** Drives one node by hand, keeping every effect. */
class Driver {
  state: BftState = initialBftState();
  effects: BftEffect[] = [];
  now = 0;
  readonly ctx: BftContext;
  constructor(ctx: BftContext) {
    this.ctx = ctx;
  }

  feed(input: BftInput) {
    const result = step(this.ctx, this.state, input, this.now);
    this.state = result.state;
    this.effects.push(...result.effects);
    return result;
  }
  msg(m: BftMessage) {
    return this.feed({ type: 'message', message: m });
  }
  timeout(kind: 'propose' | 'prevote' | 'precommit', round = this.state.round) {
    return this.feed({ type: 'timeout', timeout: { kind, height: this.state.height, round } });
  }
  /** Broadcast messages since the last call. */
  sent(): BftMessage[] {
    const out = this.effects.flatMap((e) => (e.type === 'broadcast' ? [e.message] : []));
    this.effects = [];
    return out;
  }
}

const hashOf = (m: BftMessage) => m.value;

describe('messages', () => {
  const group = groupOf([1, 1, 1, 1]);
  it('encode/decode round-trip and verify; any change breaks the signature', () => {
    for (const m of [
      proposal(1, 5, 2, V, 1),
      vote(2, 'prevote', 5, 2, W),
      vote(3, 'precommit', 5, 0, null),
    ]) {
      const back = decodeBftMessage(encodeBftMessage(m), 1024);
      expect(back).toEqual(m);
      expect(verifyMessage(back, group, CHAIN).ok).toBe(true);
      expect(verifyMessage({ ...m, round: 3 }, group, CHAIN)).toMatchObject({ ok: false });
      expect(verifyMessage({ ...m, member: (m.member + 1) % 4 }, group, CHAIN)).toMatchObject({
        error: { code: 'BAD_SIGNATURE' },
      });
      expect(verifyMessage(m, group, 'other-chain').ok).toBe(false);
    }
    expect(verifyMessage({ ...proposal(1, 5, 2, V), value: W }, group, CHAIN).ok).toBe(false);
    expect(verifyMessage(vote(5, 'prevote', 1, 0, V), group, CHAIN)).toMatchObject({
      error: { code: 'NOT_IN_GROUP' },
    });
    expect(verifyMessage(proposal(1, 5, 2, V, 2), group, CHAIN)).toMatchObject({
      error: { code: 'MALFORMED' },
    });
    expect(() => decodeBftMessage(encodeBftMessage(proposal(1, 5, 2, V)), 3)).toThrow(
      /above the limit/,
    );
  });

  it('equivocation evidence verifies only for two conflicting signed messages of one member', () => {
    const a = vote(2, 'prevote', 4, 1, V);
    const b = vote(2, 'prevote', 4, 1, null);
    expect(verifyEquivocation({ member: 2, first: a, second: b }, group, CHAIN).ok).toBe(true);
    const pa = proposal(1, 4, 1, V);
    const pb = proposal(1, 4, 1, W);
    expect(verifyEquivocation({ member: 1, first: pa, second: pb }, group, CHAIN).ok).toBe(true);
    const bad = [
      { member: 2, first: a, second: a },
      { member: 2, first: a, second: vote(2, 'prevote', 4, 2, null) },
      { member: 2, first: a, second: vote(2, 'precommit', 4, 1, null) },
      { member: 2, first: a, second: vote(3, 'prevote', 4, 1, null) },
      { member: 3, first: a, second: b },
    ];
    for (const e of bad) expect(verifyEquivocation(e, group, CHAIN).ok).toBe(false);
    const forged = { ...b, signature: a.signature };
    expect(verifyEquivocation({ member: 2, first: a, second: forged }, group, CHAIN)).toMatchObject(
      {
        error: { code: 'BAD_SIGNATURE' },
      },
    );
  });
});

describe('step', () => {
  it('rotates the proposer over members by index from (height + round) mod n', () => {
    const group = [...groupOf([1, 2, 3, 4, 5])].reverse();
    expect(proposer(group, 0, 0)).toBe(0);
    expect(proposer(group, 3, 4)).toBe(2);
    const seen = new Set(Array.from({ length: 5 }, (_, r) => proposer(group, 9, r)));
    expect(seen.size).toBe(5);
  });

  it('timeouts grow with the round', () => {
    const ctx = ctxFor(groupOf([1, 1, 1, 1]), 0);
    for (const kind of ['propose', 'prevote', 'precommit'] as const) {
      expect(timeoutDuration(ctx, kind, 3)).toBeGreaterThan(timeoutDuration(ctx, kind, 2));
    }
  });

  it('decides with a certificate of 2f + 1 precommits (lines 22, 36, 49)', () => {
    const d = new Driver(ctxFor(groupOf([1, 1, 1, 1]), 3));
    d.feed({ type: 'start', height: 1 });
    expect(d.effects).toContainEqual(
      expect.objectContaining({
        type: 'schedule',
        timeout: { kind: 'propose', height: 1, round: 0 },
      }),
    );
    expect(d.sent()).toEqual([]); // proposer(1, 0) = 1
    d.msg(proposal(1, 1, 0, V));
    expect(d.sent().map((m) => [m.type, hashOf(m)])).toEqual([['prevote', valueHash(V)]]);
    d.msg(vote(0, 'prevote', 1, 0, V));
    d.msg(vote(1, 'prevote', 1, 0, V));
    expect(d.state.locked?.value).toEqual(V);
    expect(d.state.lockedRound).toBe(0);
    expect(d.sent().map((m) => m.type)).toEqual(['precommit']);
    d.msg(vote(0, 'precommit', 1, 0, V));
    expect(d.effects.some((e) => e.type === 'decide')).toBe(false);
    d.msg(vote(2, 'precommit', 1, 0, V));
    const decided = d.effects.find((e) => e.type === 'decide');
    expect(decided).toMatchObject({ type: 'decide', height: 1, value: V });
    if (decided?.type !== 'decide') throw new Error('no decision');
    expect(decided.certificate.signatures.map((s) => s.member)).toEqual([0, 2, 3]);
    expect(verifyCertificate(decided.certificate, d.ctx.group, CHAIN).ok).toBe(true);
  });

  it('an observer (no signer) follows to a decision without sending anything', () => {
    const d = new Driver({ ...ctxFor(groupOf([1, 1, 1, 1]), 0), signer: null });
    d.feed({ type: 'start', height: 4 });
    d.msg(proposal(0, 4, 0, V)); // proposer(4, 0) = 0
    for (const m of [0, 1, 2]) d.msg(vote(m, 'precommit', 4, 0, V));
    expect(d.state.decision?.value).toEqual(V);
    expect(d.sent()).toEqual([]);
  });

  it('a locked node prevotes nil for another value; a polka in a later round unlocks it (lines 22-33)', () => {
    // n = 5, quorum = 4. Node 4 locks V in round 0 (proposer 1).
    const d = new Driver(ctxFor(groupOf([1, 1, 1, 1, 1]), 4));
    d.feed({ type: 'start', height: 1 });
    d.msg(proposal(1, 1, 0, V));
    for (const m of [0, 1, 2]) d.msg(vote(m, 'prevote', 1, 0, V));
    expect(d.state.lockedRound).toBe(0);
    for (const m of [0, 1, 2]) d.msg(vote(m, 'precommit', 1, 0, null));
    d.timeout('precommit');
    expect(d.state.round).toBe(1);
    // Round 1 (proposer 2): the others prevote W; this node misses the proposal and prevotes nil.
    for (const m of [0, 1, 2, 3]) d.msg(vote(m, 'prevote', 1, 1, W));
    d.sent();
    d.timeout('propose');
    expect(d.sent().map((m) => hashOf(m))).toEqual([null]);
    d.timeout('prevote');
    for (const m of [0, 1, 2]) d.msg(vote(m, 'precommit', 1, 1, null));
    d.timeout('precommit');
    expect(d.state.round).toBe(2);
    d.sent();
    // Round 2 (proposer 3): a fresh proposal of W (vr = -1) gets nil: the node is locked on V.
    const fork = new Driver(d.ctx);
    fork.state = d.state;
    fork.msg(proposal(3, 1, 2, W));
    expect(fork.sent().map((m) => hashOf(m))).toEqual([null]);
    // W re-proposed with vr = 1, backed by the round-1 polka: lockedRound 0 <= 1, so prevote W.
    d.msg(proposal(3, 1, 2, W, 1));
    expect(d.sent().map((m) => hashOf(m))).toEqual([valueHash(W)]);
    // Without the polka of round vr the re-proposal does not count: the node waits, then nil.
    const noPolka = new Driver(d.ctx);
    noPolka.feed({ type: 'start', height: 1 });
    for (const m of [0, 1]) noPolka.msg(vote(m, 'prevote', 1, 2, null)); // 2 of 5: skip to round 2
    expect(noPolka.state.round).toBe(2);
    noPolka.sent();
    noPolka.msg(proposal(3, 1, 2, W, 1));
    expect(noPolka.sent()).toEqual([]);
    noPolka.timeout('propose');
    expect(noPolka.sent().map((m) => hashOf(m))).toEqual([null]);
  });

  it('prevotes nil for a value that validate rejects', () => {
    const d = new Driver(ctxFor(groupOf([1, 1, 1, 1]), 3));
    d.feed({ type: 'start', height: 1 });
    d.msg(proposal(1, 1, 0, BAD));
    expect(d.sent().map((m) => hashOf(m))).toEqual([null]);
    // Even 2f + 1 precommits for it decide nothing (line 49 requires valid(v)).
    for (const m of [0, 1, 2]) d.msg(vote(m, 'precommit', 1, 0, BAD));
    expect(d.state.decision).toBeNull();
  });

  it('reports equivocation once, and ignores exact duplicates', () => {
    const d = new Driver(ctxFor(groupOf([1, 1, 1, 1]), 3));
    d.feed({ type: 'start', height: 1 });
    expect(d.msg(vote(2, 'prevote', 1, 0, V)).verdict).toEqual({ ok: true });
    expect(d.msg(vote(2, 'prevote', 1, 0, V)).verdict).toMatchObject({
      error: { code: 'DUPLICATE_VOTE' },
    });
    expect(d.effects.filter((e) => e.type === 'evidence')).toEqual([]);
    expect(d.msg(vote(2, 'prevote', 1, 0, W)).verdict).toMatchObject({
      error: { code: 'EQUIVOCATION' },
    });
    d.msg(vote(2, 'prevote', 1, 0, null));
    const evidence = d.effects.flatMap((e) => (e.type === 'evidence' ? [e.evidence] : []));
    expect(evidence).toHaveLength(1);
    expect(evidence[0]!.member).toBe(2);
    expect(verifyEquivocation(evidence[0]!, d.ctx.group, CHAIN).ok).toBe(true);
  });

  it('checks membership, proposer, height and round; buffers height + 1 boundedly', () => {
    const d = new Driver(ctxFor(groupOf([1, 1, 1, 1]), 3));
    d.feed({ type: 'start', height: 1 });
    const code = (m: BftMessage) => {
      const v = d.msg(m).verdict;
      return v.ok ? 'OK' : v.error.code;
    };
    expect(code(vote(5, 'prevote', 1, 0, V))).toBe('NOT_IN_GROUP');
    expect(code(proposal(2, 1, 0, V))).toBe('NOT_PROPOSER');
    expect(code(vote(0, 'prevote', 0, 0, V))).toBe('WRONG_HEIGHT');
    expect(code(vote(0, 'prevote', 3, 0, V))).toBe('WRONG_HEIGHT');
    expect(code(vote(0, 'prevote', 1, simBftOpts.maxRoundsAhead + 1, V))).toBe('WRONG_ROUND');
    // Height 2 is buffered (proposer(2, 0) = 2) and replayed when it starts.
    expect(code(proposal(2, 2, 0, W))).toBe('OK');
    const cap = simBftOpts.maxFuturePerSender;
    for (let r = 1; r <= cap; r++) expect(code(vote(0, 'prevote', 2, r, null))).toBe('OK');
    expect(code(vote(0, 'prevote', 2, 1, null))).toBe('DUPLICATE_VOTE');
    expect(code(vote(0, 'prevote', 2, 99, null))).toBe('WRONG_HEIGHT'); // member 0's share is full
    expect(code(vote(1, 'prevote', 2, 0, null))).toBe('OK');
    expect(d.state.future).toHaveLength(cap + 2);
    d.sent();
    d.feed({ type: 'start', height: 2 });
    expect(d.state.future).toEqual([]);
    expect(d.sent().map((m) => [m.type, m.height, hashOf(m)])).toEqual([
      ['prevote', 2, valueHash(W)],
    ]);
  });

  it('skips to a round where more than 1/3 of members or of reputation are (line 55)', () => {
    const d = new Driver(ctxFor(groupOf([1, 1, 1, 1]), 3));
    d.feed({ type: 'start', height: 1 });
    d.msg(vote(0, 'prevote', 1, 5, null));
    expect(d.state.round).toBe(0);
    d.msg(vote(1, 'precommit', 1, 5, null));
    expect(d.state.round).toBe(5);
    const heavy = new Driver(ctxFor(groupOf([2, 1, 1, 1]), 3));
    heavy.feed({ type: 'start', height: 1 });
    heavy.msg(vote(0, 'prevote', 1, 4, null)); // 1 of 4 members but 40% of reputation
    expect(heavy.state.round).toBe(4);
  });

  it('accepts a decision from sync only with a valid certificate', () => {
    const group = groupOf([1, 1, 1, 1]);
    const d = new Driver(ctxFor(group, 3));
    d.feed({ type: 'start', height: 1 });
    const subject = { kind: 'batch', height: 1, round: 0, value: valueHash(V) } as const;
    const sigs = [0, 1, 2].map((m) => ({
      member: m,
      signature: signVote(keys[m]!.secretKey, CHAIN, { ...subject, type: 'precommit' }),
    }));
    const short = makeCertificate(subject, sigs.slice(0, 2));
    expect(d.feed({ type: 'commit', value: V, certificate: short }).verdict).toMatchObject({
      error: { code: 'QUORUM_SHORT_MEMBERS' },
    });
    const full = makeCertificate(subject, sigs);
    expect(d.feed({ type: 'commit', value: W, certificate: full }).verdict).toMatchObject({
      error: { code: 'INVALID_VALUE' },
    });
    expect(d.state.decision).toBeNull();
    d.feed({ type: 'commit', value: V, certificate: full });
    expect(d.state.decision?.value).toEqual(V);
  });

  it('is pure: same inputs give equal results, and the input state is never mutated', () => {
    const script: BftInput[] = [
      { type: 'start', height: 1 },
      { type: 'message', message: proposal(1, 1, 0, V) },
      { type: 'message', message: vote(0, 'prevote', 1, 0, V) },
      { type: 'message', message: vote(0, 'prevote', 1, 0, W) },
      { type: 'message', message: vote(2, 'prevote', 1, 0, V) },
      { type: 'timeout', timeout: { kind: 'resend', height: 1, round: 0 } },
      { type: 'message', message: vote(0, 'precommit', 1, 0, null) },
      { type: 'message', message: vote(1, 'precommit', 1, 0, null) },
      { type: 'timeout', timeout: { kind: 'precommit', height: 1, round: 0 } },
      { type: 'message', message: vote(1, 'prevote', 2, 0, V) },
    ];
    // Zero nonce entropy: RFC 6979 alone, so signatures are a function of the message too.
    const fixed = (domain: string, message: Bytes) =>
      sign(keys[3]!.secretKey, domain, message, () => new Uint8Array(32));
    const ctx = { ...ctxFor(groupOf([1, 1, 1, 1]), 3), signer: { member: 3, sign: fixed } };
    let state = initialBftState();
    for (const [t, input] of script.entries()) {
      const before = structuredClone(state);
      const a = step(ctx, state, input, t * 10);
      const b = step(ctx, state, input, t * 10);
      expect(state).toEqual(before);
      expect(b.state).toEqual(a.state);
      expect(b.effects).toEqual(a.effects);
      state = a.state;
    }
    expect(state.round).toBe(1);
  });
});

/** Heights at which two honest nodes decided different values. */
function disagreements(r: SimResult, heights: number): number[] {
  const out: number[] = [];
  for (let h = 1; h <= heights; h++) {
    const values = new Set<string>();
    for (const m of r.honest) {
      const d = r.decisions.get(m)!.get(h);
      if (d !== undefined) values.add(new TextDecoder().decode(d.value));
    }
    if (values.size > 1) out.push(h);
  }
  return out;
}

/** Every honest node's decisions: agreement, validity, certificates, evidence. */
function checkRun(config: SimConfig, r: SimResult): void {
  const tag = `seed ${config.seed}, n ${config.nodes.length}`;
  expect(disagreements(r, config.heights), `SAFETY ${tag}`).toEqual([]);
  for (let h = 1; h <= config.heights; h++) {
    const decided = r.honest.map((m) => r.decisions.get(m)!.get(h));
    const first = decided.find((d) => d !== undefined);
    for (const d of decided) {
      if (d === undefined) continue;
      expect(simValidate(d.value).ok, `VALIDITY ${tag} height ${h}`).toBe(true);
    }
    if (first !== undefined) {
      expect(first.certificate.value).toEqual(valueHash(first.value));
      expect(verifyCertificate(first.certificate, r.group, r.chainId).ok, tag).toBe(true);
    }
  }
  for (const { evidence } of r.evidence) {
    expect(config.nodes[evidence.member]!.behaviour, `evidence names ${tag}`).toBe('equivocate');
    expect(verifyEquivocation(evidence, r.group, r.chainId).ok).toBe(true);
  }
  if (config.nodes.some((x) => x.behaviour === 'equivocate')) {
    expect(r.evidence.length, `evidence ${tag}`).toBeGreaterThan(0);
  }
}

/** After GST, 5 heights took at most 3 s over 700 seeds per size (randomScenario); allow 8 s. */
const LIVENESS_BOUND_MS = 8_000;

describe('simulated network', () => {
  it.each([4, 7, 10])('n = %i: safety, validity, liveness after GST over 60 seeds', (n) => {
    for (let seed = 1; seed <= 60; seed++) {
      const scenario = randomScenario(n, seed);
      // Stop the clock at GST + the bound: liveness means every height is decided by then.
      const config = { ...scenario, maxTimeMs: scenario.gstMs + LIVENESS_BOUND_MS };
      const run = runSim(config);
      checkRun(config, run);
      for (const m of run.honest) {
        expect(run.decisions.get(m)!.size, `LIVENESS seed ${seed} n ${n} node ${m}`).toBe(5);
      }
    }
  });

  it.each(['withhold', 'crash', 'invalid', 'unfair'] as Behaviour[])(
    'a %s leader costs a round change, and decisions continue',
    (behaviour) => {
      // proposer(1, 0) = member 1.
      const nodes = [0.3, 0.2, 0.35, 0.25].map((reputation, i) => ({
        reputation,
        behaviour: i === 1 ? behaviour : ('honest' as Behaviour),
      }));
      const config: SimConfig = {
        seed: 11,
        nodes,
        heights: 5,
        gstMs: 0,
        lossBeforeGst: 0,
        minDelayMs: 1,
        maxDelayMs: 20,
        maxTimeMs: 10_000,
      };
      const run = runSim(config);
      checkRun(config, run);
      for (const m of run.honest) {
        const first = run.decisions.get(m)!.get(1)!;
        expect(first.certificate.round).toBeGreaterThanOrEqual(1);
        expect(run.decisions.get(m)!.size).toBe(5);
      }
    },
  );

  it('equivocation produces evidence naming the equivocator, and consensus still decides', () => {
    const nodes = [0.3, 0.3, 0.2, 0.3].map((reputation, i) => ({
      reputation,
      behaviour: i === 2 ? 'equivocate' : ('honest' as Behaviour),
    }));
    const config: SimConfig = {
      seed: 5,
      nodes,
      heights: 3,
      gstMs: 0,
      lossBeforeGst: 0,
      minDelayMs: 1,
      maxDelayMs: 30,
      maxTimeMs: 10_000,
    };
    const run = runSim(config);
    checkRun(config, run);
    expect(new Set(run.evidence.map((e) => e.evidence.member))).toEqual(new Set([2]));
    expect(new Set(run.evidence.map((e) => e.reporter)).size).toBeGreaterThan(1);
    for (const m of run.honest) expect(run.decisions.get(m)!.size).toBe(3);
  });
});

describe('the thresholds matter', () => {
  it('a silent member holding >= 1/3 of reputation blocks pinning, though 3 of 4 members remain', () => {
    const blocked = (heavy: number) => {
      const nodes = [heavy, 0.3, 0.3, 0.3].map((reputation, i) => ({
        reputation,
        behaviour: i === 0 ? 'crash' : ('honest' as Behaviour),
      }));
      const run = runSim({
        seed: 3,
        nodes,
        heights: 2,
        gstMs: 0,
        lossBeforeGst: 0,
        minDelayMs: 1,
        maxDelayMs: 20,
        maxTimeMs: 8_000,
      });
      return run.honest.every((m) => run.decisions.get(m)!.size === 0);
    };
    expect(blocked(0.45)).toBe(true); // 0.45 / 1.35 = 1/3 exactly: the honest hold only 2/3
    expect(blocked(0.44)).toBe(false); // just below 1/3: the honest alone are a quorum
    // And what the honest three could sign is not a certificate:
    const group = groupOf([0.45, 0.3, 0.3, 0.3]);
    const subject = { kind: 'batch', height: 1, round: 0, value: valueHash(V) } as const;
    const sigs = [1, 2, 3].map((m) => ({
      member: m,
      signature: signVote(keys[m]!.secretKey, CHAIN, { ...subject, type: 'precommit' }),
    }));
    expect(verifyCertificate(makeCertificate(subject, sigs), group, CHAIN)).toMatchObject({
      error: { code: 'QUORUM_SHORT_REPUTATION' },
    });
  });

  it('a split-brain attack breaks agreement only with >= 1/3 of members and of reputation', () => {
    const attack = (reputations: number[], splitters: number) => {
      const nodes = reputations.map((reputation, i) => ({
        reputation,
        behaviour: (i < splitters ? 'split' : 'honest') as Behaviour,
      }));
      const config: SimConfig = {
        seed: 9,
        nodes,
        heights: 3,
        gstMs: 0,
        lossBeforeGst: 0,
        minDelayMs: 1,
        maxDelayMs: 20,
        maxTimeMs: 10_000,
      };
      return disagreements(runSim(config), config.heights);
    };
    // proposer(1, 0) = member 1, a splitter: the two honest halves decide different values.
    expect(attack([1, 1, 1, 1], 2)).not.toEqual([]);
    expect(attack([1, 1, 1, 1, 1, 1, 1], 3)).not.toEqual([]);
    // Within the model the same attack fails: the splitters plus half the honest are no quorum.
    expect(attack([1, 1, 1, 1], 1)).toEqual([]);
    expect(attack([1, 1, 1, 1, 1, 1, 1], 2)).toEqual([]);
    // Half the reputation but 1 of 4 members: the member count alone keeps quorums intersecting.
    expect(attack([3, 1, 1, 1], 1)).toEqual([]);
  });

  it('Byzantine members at >= 1/3 of members and of reputation can pin two values', () => {
    // Members 0 and 1 are Byzantine (2 of 4, half the reputation) and sign both values.
    const group = groupOf([1, 1, 1, 1]);
    const certFor = (value: Bytes, signersOf: number[]) => {
      const subject = { kind: 'batch', height: 9, round: 0, value: valueHash(value) } as const;
      return makeCertificate(
        subject,
        signersOf.map((m) => ({
          member: m,
          signature: signVote(keys[m]!.secretKey, CHAIN, { ...subject, type: 'precommit' }),
        })),
      );
    };
    expect(verifyCertificate(certFor(V, [0, 1, 2]), group, CHAIN).ok).toBe(true);
    expect(verifyCertificate(certFor(W, [0, 1, 3]), group, CHAIN).ok).toBe(true);
  });

  it('property: under the model, the honest are a quorum and any two quorums share an honest member', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 100 }), { minLength: 4, maxLength: 7 }),
        fc.array(fc.boolean(), { minLength: 7, maxLength: 7 }),
        (reps, bad) => {
          const n = reps.length;
          const group = groupOf(reps.map((r) => r / 100));
          const byz = reps.map((_, i) => i).filter((i) => bad[i]);
          const total = reps.reduce((a, r) => a + r, 0);
          const byzRep = byz.reduce((a, i) => a + reps[i]!, 0);
          const inModel = 3 * byz.length < n && 3 * byzRep < total;
          const honest = reps.map((_, i) => i).filter((i) => !bad[i]);
          const quorums: number[][] = [];
          for (let mask = 1; mask < 1 << n; mask++) {
            const set = reps.map((_, i) => i).filter((i) => mask & (1 << i));
            if (isQuorum(group, set)) quorums.push(set);
          }
          const intersectHonest = quorums.every((a) =>
            quorums.every((b) => a.some((i) => !bad[i] && b.includes(i))),
          );
          if (!inModel) return true;
          return isQuorum(group, honest) && intersectHonest;
        },
      ),
      { numRuns: 150 },
    );
  });
});
