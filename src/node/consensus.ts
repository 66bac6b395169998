/**
 * The BFT driver: runs Tendermint (src/ledger/bft.ts, a pure `step`) for one kind of item against
 * the real world: timers for its timeouts, the clock, the network (our proposals and votes go over
 * direct streams to the other group members), the signing record (wal.ts) and the pinned chain.
 * The node runs two drivers, one per kind: keyblocks and tx batches are separate instances with
 * their own heights, groups, signing records and messages (a message names its kind). What
 * differs between the kinds is behind `PinningTarget` (pinning.ts: batchTarget, keyblockTarget).
 *
 * Heights are decided one after the other: after a decision is persisted and applied, the next
 * height starts `pauseAfter` later, once the target is `ready` (a keyblock height waits for a
 * keyblock to pin). As in the simulation (test/ledger/sim/ledger-network.ts):
 * - what a proposal carries (its bundles, its keyblock) is taken in before the proposal is judged;
 * - valid(v) is judged as of when the leader became accountable: the earlier of when the proposal
 *   arrived and when this node entered its round;
 * - a height decided elsewhere reaches a laggard by sync (sync.ts), after which `wake` starts the
 *   height after the pinned tip.
 * A proposal this node cannot judge yet (a batch anchored to a keyblock whose pinning is still
 * under way here) is held, not judged invalid, and delivered on the next `wake` once it can be:
 * Tendermint judges a proposal once, and a batch proposed right after a keyblock was pinned would
 * otherwise get this node's nil prevote. The propose timeout bounds the wait.
 *
 * Every input runs in the node's serial queue, and its effects are carried out in order before the
 * next input: the signing record is flushed before any new message of ours is sent, and a decision
 * is persisted before the next height starts.
 */
import { toHex } from '../crypto/bytes.ts';
import { step } from '../ledger/bft.ts';
import {
  type BftMessage,
  type Equivocation,
  type HashValue,
  type Proposal,
  type Signer,
  verifyMessage,
} from '../ledger/bft-messages.ts';
import {
  type BftContext,
  type BftEffect,
  type BftInput,
  type BftOpts,
  type BftState,
  type BftTimeout,
  defaultBftOpts,
  initialBftState,
  type ValueRef,
} from '../ledger/bft-state.ts';
import type { ConsensusGroup } from '../ledger/certificate.ts';
import { isLedgerError, OK, reject, type Verdict } from '../ledger/errors.ts';
import type { Bytes, Certificate, ConsensusKind, InstitutionIndex } from '../ledger/types.ts';
import { isNodeError } from './errors.ts';
import type { SerialQueue } from './serial.ts';
import type { ConsensusWal, SigningRecord } from './wal.ts';

export interface ConsensusOpts {
  /** Tendermint's timeouts: timeoutX(r) = timeoutXMs + r · timeoutDeltaMs. */
  readonly timeoutProposeMs: number;
  readonly timeoutPrevoteMs: number;
  readonly timeoutPrecommitMs: number;
  readonly timeoutDeltaMs: number;
  /** Our recent messages are re-sent this often (stands in for Tendermint's gossip). */
  readonly resendIntervalMs: number;
  /** Pause between a decision and the next height while bundles wait (timeout_commit). */
  readonly batchIntervalMs: number;
  /** The pause when the last batch was empty and nothing waits: empty batches come this seldom. */
  readonly idleBatchIntervalMs: number;
  /** Flush the signing record to disk before each new message (off only for throwaway tests). */
  readonly fsyncWal: boolean;
}

export const defaultConsensusOpts: ConsensusOpts = {
  timeoutProposeMs: 2000,
  timeoutPrevoteMs: 1000,
  timeoutPrecommitMs: 1000,
  timeoutDeltaMs: 500,
  resendIntervalMs: 1000,
  batchIntervalMs: 250,
  idleBatchIntervalMs: 1000,
  fsyncWal: true,
};

export function bftOptsOf(o: ConsensusOpts): BftOpts {
  return {
    ...defaultBftOpts,
    timeoutProposeMs: o.timeoutProposeMs,
    timeoutPrevoteMs: o.timeoutPrevoteMs,
    timeoutPrecommitMs: o.timeoutPrecommitMs,
    timeoutDeltaMs: o.timeoutDeltaMs,
    resendIntervalMs: o.resendIntervalMs,
  };
}

/** What one kind of pinning (keyblocks or batches) needs of the chain. */
export interface PinningTarget {
  readonly kind: ConsensusKind;
  /** id(v): what votes and the certificate sign. May throw for an undecodable value. */
  readonly hashValue: HashValue;
  /** The height after the pinned tip of this kind. */
  nextHeight(): number;
  /** The consensus group that decides the next height. */
  group(): ConsensusGroup;
  /** Whether the next height may start now (the node calls `wake` when this may have changed). */
  ready(): boolean;
  /** Takes in what a proposal carries that this node may not hold yet (bundles, a keyblock). */
  received(value: Bytes): void;
  /** Whether judging `value` must wait for something this node is about to pin. */
  premature(value: Bytes): boolean;
  /** valid(v), judged as of `asOf`: when the proposal's leader became accountable. */
  validate(value: Bytes, asOf: number): Verdict;
  /** getValue(): what this node proposes at `height` (the next one), or null for nothing. */
  propose(height: number): Bytes | null;
  /** Persists, then applies, a decided value. */
  commit(value: Bytes, certificate: Certificate): Promise<void>;
  /** The pause after deciding `value` (and applying it) before the next height starts. */
  pauseAfter(value: Bytes): number;
}

/** What the driver needs from the node, and nothing else. */
export interface ConsensusPorts {
  readonly chainId: string;
  readonly self: InstitutionIndex;
  readonly signer: Signer;
  /** The signing record of this driver's kind. */
  readonly wal: ConsensusWal;
  readonly queue: SerialQueue;
  now(): number;
  /** Sends a message to the given group members. */
  send(to: readonly InstitutionIndex[], message: BftMessage): void;
  /** Equivocation the BFT caught (two conflicting messages of one member). */
  evidence(e: Equivocation, group: ConsensusGroup): void;
  /** A group member sent a message for a height above ours: we may be behind. */
  ahead(height: number, from: InstitutionIndex): void;
  /** A failure the node cannot run past (a write that failed, two certified values). */
  fatal(err: unknown): void;
}

/** A timeout or wake refused by a full queue is tried again after this long. */
const BUSY_RETRY_MS = 50;
/** Proposals held until they can be judged, at most. */
const MAX_HELD = 16;

interface Arrival {
  readonly at: number;
  readonly height: number;
  readonly round: number;
}

export class Consensus {
  readonly kind: ConsensusKind;
  private readonly ports: ConsensusPorts;
  private readonly target: PinningTarget;
  private readonly bftOpts: BftOpts;
  private state: BftState = initialBftState();
  private ctx: BftContext | null = null;
  private readonly timers = new Map<string, ReturnType<typeof setTimeout>>();
  private nextStart: ReturnType<typeof setTimeout> | null = null;
  private readonly arrived = new WeakMap<Bytes, Arrival>();
  /** `${height}/${round}` -> when this node entered that round (current height only). */
  private readonly entered = new Map<string, number>();
  /** What the signing record on disk says, as a comparable key. */
  private recorded = '';
  /** Proposals that cannot be judged yet, oldest first. */
  private held: Proposal[] = [];
  /** A wake is queued (at most one at a time). */
  private waking = false;
  private stopped = false;

  constructor(ports: ConsensusPorts, target: PinningTarget, opts: ConsensusOpts) {
    if (ports.wal.kind !== target.kind) {
      throw new RangeError(`a ${target.kind} driver given the ${ports.wal.kind} signing record`);
    }
    this.kind = target.kind;
    this.ports = ports;
    this.target = target;
    this.bftOpts = bftOptsOf(opts);
  }

  /** The height being decided (-1 before the first start) and its round. */
  position(): { height: number; round: number } {
    return { height: this.state.height, round: this.state.round };
  }

  /** Starts at the height after the pinned tip once ready (resuming from the signing record). */
  start(): Promise<void> {
    return this.ports.queue.run(() => this.advance(true));
  }

  /**
   * Something the target depends on changed (a keyblock was pinned or added, sync moved the pinned
   * tip): starts the next height if it is due and ready, and delivers held proposals that can be
   * judged now.
   */
  wake(): void {
    if (this.waking) return;
    this.waking = true;
    this.runSoon(() => {
      this.waking = false;
      return this.advance(false);
    });
  }

  /** After sync moved the pinned tip: start the height after it. */
  catchUp(): Promise<void> {
    return this.ports.queue.run(() => this.advance(true));
  }

  /** A BFT message of this driver's kind from a peer: verified here, then delivered. */
  onMessage(m: BftMessage, from: InstitutionIndex): Promise<Verdict> {
    return this.ports.queue.run(async () => {
      if (this.stopped) return reject('WRONG_HEIGHT', 'consensus is not running');
      if (m.kind !== this.kind) return reject('MALFORMED', `a ${m.kind} message for ${this.kind}s`);
      const group = this.ctx?.group ?? this.target.group();
      const checked = verifyMessage(m, group, this.ports.chainId, this.target.hashValue);
      if (!checked.ok) return checked;
      const s = this.state;
      if (m.height > s.height) this.ports.ahead(m.height, from);
      return this.deliver(m);
    });
  }

  /** A verified message: what a proposal carries is taken in first; one not judgeable waits. */
  private async deliver(m: BftMessage): Promise<Verdict> {
    const s = this.state;
    if (m.height < s.height) {
      return reject('WRONG_HEIGHT', `message for height ${m.height} at ${s.height}`);
    }
    if (m.type === 'proposal') {
      if (!this.arrived.has(m.value)) {
        this.arrived.set(m.value, { at: this.ports.now(), height: m.height, round: m.round });
        this.target.received(m.value);
        // What it carried may be what the next height waited for.
        if (m.height > s.height) await this.advance(false);
      }
      if (this.target.premature(m.value)) {
        if (!this.held.includes(m)) this.held = [...this.held, m].slice(-MAX_HELD);
        return OK;
      }
    }
    if (this.ctx === null) return reject('WRONG_HEIGHT', `${this.kind} consensus waits`);
    return this.feed({ type: 'message', message: m });
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    if (this.nextStart !== null) clearTimeout(this.nextStart);
    this.nextStart = null;
  }

  // -------------------------------------------------------------------------------------------

  /**
   * Starts the height after the pinned tip unless it runs already, the pause after the last
   * decision is still on (`force` ends it), or the target is not ready; then delivers the held
   * proposals that can be judged now.
   */
  private async advance(force: boolean): Promise<void> {
    if (this.stopped) return;
    if (this.due(force)) await this.startHeight(this.target.nextHeight());
    if (this.held.length > 0) await this.release();
  }

  private due(force: boolean): boolean {
    if (this.state.height >= this.target.nextHeight()) return false;
    if (this.nextStart !== null) {
      if (!force) return false;
      clearTimeout(this.nextStart);
      this.nextStart = null;
    }
    return this.target.ready();
  }

  /** Delivers the held proposals that can be judged now; drops those of past heights. */
  private async release(): Promise<void> {
    const held = this.held;
    this.held = [];
    for (const m of held) {
      if (m.height < this.state.height) continue;
      if (this.target.premature(m.value)) this.held.push(m);
      else await this.deliver(m);
    }
  }

  private makeContext(group: ConsensusGroup): BftContext {
    const { ports, target } = this;
    const inGroup = group.some((g) => g.member === ports.self);
    return {
      chainId: ports.chainId,
      kind: target.kind,
      group,
      signer: inGroup ? ports.signer : null,
      opts: this.bftOpts,
      hashValue: target.hashValue,
      validate: (v) => {
        try {
          return target.validate(v, this.accountableFrom(v));
        } catch (err) {
          if (isLedgerError(err)) return { ok: false, error: err };
          throw err;
        }
      },
      getValue: (height) => (target.nextHeight() === height ? target.propose(height) : null),
    };
  }

  /**
   * When the leader of `value` became accountable for what this node holds: the earlier of when
   * the proposal arrived and when this node entered its round.
   */
  private accountableFrom(value: Bytes): number {
    const a = this.arrived.get(value);
    if (a === undefined) return this.ports.now(); // our own proposal
    return Math.min(a.at, this.entered.get(`${a.height}/${a.round}`) ?? a.at);
  }

  private async startHeight(height: number): Promise<void> {
    if (this.stopped) return;
    for (const [key, t] of this.timers) {
      if (Number(key.split('/')[1]) < height) {
        clearTimeout(t);
        this.timers.delete(key);
      }
    }
    this.entered.clear();
    this.ctx = this.makeContext(this.target.group());
    const record = this.ports.wal.record;
    if (record !== null && record.height === height && this.ctx.signer !== null) {
      await this.resume(record);
      return;
    }
    // From the decided height before it, the BFT keeps the messages it buffered for this one.
    await this.feed({ type: 'start', height });
  }

  /**
   * Resumes a height this node signed messages in before a restart: its lock, valid value and the
   * polka behind it come back, and it continues in the round after the last one it signed in, so
   * it can never sign a second, conflicting message in a round it already signed in.
   */
  private async resume(record: SigningRecord): Promise<void> {
    const { hashValue } = this.target;
    const ref = (value: Bytes | null): ValueRef | null => {
      if (value === null) return null;
      const hash = hashValue(value);
      return { value, hash, key: toHex(hash) };
    };
    this.recorded = recordKey(record, hashValue);
    this.state = {
      ...initialBftState(),
      height: record.height,
      round: record.round,
      step: 'precommit',
      locked: ref(record.locked),
      lockedRound: record.lockedRound,
      valid: ref(record.valid),
      validRound: record.validRound,
    };
    for (const m of record.polka) {
      const ok = verifyMessage(m, this.ctx!.group, this.ports.chainId, hashValue);
      if (ok.ok) await this.feed({ type: 'message', message: m });
    }
    const resendAt = this.ports.now() + this.bftOpts.resendIntervalMs;
    this.schedule({ kind: 'resend', height: record.height, round: 0 }, resendAt);
    const timeout: BftTimeout = { kind: 'precommit', height: record.height, round: record.round };
    await this.feed({ type: 'timeout', timeout });
  }

  private async feed(input: BftInput): Promise<Verdict> {
    const ctx = this.ctx;
    if (ctx === null || this.stopped) return OK;
    const result = step(ctx, this.state, input, this.ports.now());
    this.state = result.state;
    const round = `${result.state.height}/${result.state.round}`;
    if (!this.entered.has(round)) this.entered.set(round, this.ports.now());
    const resend = input.type === 'timeout' && input.timeout.kind === 'resend';
    try {
      await this.carryOut(ctx, result.effects, resend);
    } catch (err) {
      this.ports.fatal(err);
    }
    return result.verdict;
  }

  private async carryOut(
    ctx: BftContext,
    effects: readonly BftEffect[],
    resend: boolean,
  ): Promise<void> {
    const self = this.ports.self;
    let signedRound = -1;
    for (const e of effects) {
      if (e.type === 'broadcast' && e.message.member === self) {
        signedRound = Math.max(signedRound, e.message.round);
      }
    }
    if (!resend && signedRound >= 0) await this.record(signedRound);
    const others = ctx.group.map((g) => g.member).filter((m) => m !== self);
    let decided: Extract<BftEffect, { type: 'decide' }> | null = null;
    for (const e of effects) {
      if (e.type === 'broadcast') this.ports.send(others, e.message);
      else if (e.type === 'schedule') this.schedule(e.timeout, e.at);
      else if (e.type === 'evidence') this.ports.evidence(e.evidence, ctx.group);
      else decided = e;
    }
    if (decided === null) return;
    const { height, value, certificate } = decided;
    await this.target.commit(value, certificate);
    this.startLater(height + 1, this.target.pauseAfter(value));
  }

  /** Flushes the signing record for the current state before a message signed in `round` leaves. */
  private async record(round: number): Promise<void> {
    const s = this.state;
    const previous = this.ports.wal.record;
    const signed =
      previous !== null && previous.height === s.height ? Math.max(previous.round, round) : round;
    const polka: BftMessage[] = [];
    if (s.valid !== null) {
      for (const entries of s.rounds.get(s.validRound)?.prevotes.values() ?? []) {
        for (const e of entries) if (e.key === s.valid.key) polka.push(e.message);
      }
    }
    const record: SigningRecord = {
      kind: this.kind,
      height: s.height,
      round: signed,
      lockedRound: s.lockedRound,
      locked: s.locked?.value ?? null,
      validRound: s.validRound,
      valid: s.valid?.value ?? null,
      polka,
    };
    const key = recordKey(record, this.target.hashValue, s.locked?.key, s.valid?.key);
    if (key === this.recorded) return;
    await this.ports.wal.write(record);
    this.recorded = key;
  }

  private schedule(timeout: BftTimeout, at: number): void {
    if (this.stopped) return;
    const key = `${timeout.kind}/${timeout.height}/${timeout.round}`;
    if (this.timers.has(key)) return;
    const fire = () => {
      this.timers.delete(key);
      this.runSoon(() => this.feed({ type: 'timeout', timeout }));
    };
    this.timers.set(key, setTimeout(fire, Math.max(0, at - this.ports.now())));
  }

  private startLater(height: number, delayMs: number): void {
    if (this.stopped) return;
    if (this.nextStart !== null) clearTimeout(this.nextStart);
    this.nextStart = setTimeout(() => {
      this.nextStart = null;
      this.runSoon(async () => {
        if (this.target.nextHeight() === height) await this.advance(false);
      });
    }, delayMs);
  }

  /**
   * Runs an input of ours (a timeout, a wake) in the serial queue. A full queue is load, not a
   * failure: the input is tried again shortly. After stop, nothing runs.
   */
  private runSoon(job: () => Promise<unknown>): void {
    if (this.stopped) return;
    this.ports.queue.run(job).catch((err) => {
      if (this.stopped || isNodeError(err, 'STOPPED')) return;
      if (isNodeError(err, 'BUSY')) setTimeout(() => this.runSoon(job), BUSY_RETRY_MS);
      else this.ports.fatal(err);
    });
  }
}

function recordKey(
  r: SigningRecord,
  hashValue: HashValue,
  lockedKey?: string,
  validKey?: string,
): string {
  const locked = lockedKey ?? (r.locked === null ? '' : toHex(hashValue(r.locked)));
  const valid = validKey ?? (r.valid === null ? '' : toHex(hashValue(r.valid)));
  return `${r.height}/${r.round}/${r.lockedRound}/${locked}/${r.validRound}/${valid}`;
}
