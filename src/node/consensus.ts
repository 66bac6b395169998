/**
 * The BFT driver for batch heights: runs Tendermint (src/ledger/bft.ts, a pure `step`) against the
 * real world: timers for its timeouts, the clock, the network (our proposals and votes go over
 * direct streams to the other group members), the signing record (wal.ts) and the pinned chain.
 * Heights are decided one after the other: after a decision is persisted and applied, the next
 * height starts batchIntervalMs later (idleBatchIntervalMs when nothing is waiting), as in the
 * simulation (test/ledger/sim/ledger-network.ts), whose choices this follows:
 * - a proposal's bundles are taken into the mempool before the proposal is judged;
 * - valid(v) is validateProposal judged as of when the leader became accountable: the earlier of
 *   when the proposal arrived and when this node entered its round;
 * - a height decided elsewhere reaches a laggard by sync (sync.ts), after which `catchUp` starts
 *   the height after the pinned tip.
 *
 * Every input runs in the node's serial queue, and its effects are carried out in order before the
 * next input: the signing record is flushed before any new message of ours is sent, and a decision
 * is persisted before the next height starts.
 */
import { toHex } from '../crypto/bytes.ts';
import { decodeBatch } from '../ledger/batch.ts';
import { step } from '../ledger/bft.ts';
import {
  type BftMessage,
  type Equivocation,
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
import { OK, reject, type Verdict } from '../ledger/errors.ts';
import {
  batchValueHash,
  consensusGroupOf,
  proposeBatch,
  type Replica,
  validateProposal,
} from '../ledger/replica.ts';
import type { Bundle, Bytes, Certificate, InstitutionIndex } from '../ledger/types.ts';
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

/** What the driver needs from the node, and nothing else. */
export interface ConsensusPorts {
  readonly chainId: string;
  readonly self: InstitutionIndex;
  readonly signer: Signer;
  readonly wal: ConsensusWal;
  readonly queue: SerialQueue;
  now(): number;
  replica(): Replica;
  /** Takes a proposal's bundles into the mempool (they may not have reached us yet). */
  receiveBundles(bundles: readonly Bundle[]): void;
  /** Whether anything waits to be pinned (else the next height starts after the idle pause). */
  hasWork(): boolean;
  /** Sends a message to the given group members. */
  send(to: readonly InstitutionIndex[], message: BftMessage): void;
  /** Persists, then applies, a decided batch; resolves once both are done. */
  commit(value: Bytes, certificate: Certificate): Promise<void>;
  /** Equivocation the BFT caught (two conflicting messages of one member). */
  evidence(e: Equivocation, group: ConsensusGroup): void;
  /** A group member sent a message for a height above ours: we may be behind. */
  ahead(height: number, from: InstitutionIndex): void;
  /** A failure the node cannot run past (a write that failed, two certified batches). */
  fatal(err: unknown): void;
}

interface Arrival {
  readonly at: number;
  readonly height: number;
  readonly round: number;
}

export class Consensus {
  private readonly ports: ConsensusPorts;
  private readonly bftOpts: BftOpts;
  private readonly opts: ConsensusOpts;
  private state: BftState = initialBftState();
  private ctx: BftContext | null = null;
  private readonly timers = new Map<string, ReturnType<typeof setTimeout>>();
  private nextStart: ReturnType<typeof setTimeout> | null = null;
  private readonly arrived = new WeakMap<Bytes, Arrival>();
  /** `${height}/${round}` -> when this node entered that round (current height only). */
  private readonly entered = new Map<string, number>();
  /** What the signing record on disk says, as a comparable key. */
  private recorded = '';
  private stopped = false;

  constructor(ports: ConsensusPorts, opts: ConsensusOpts) {
    this.ports = ports;
    this.opts = opts;
    this.bftOpts = bftOptsOf(opts);
  }

  /** The height being decided (-1 before start) and its round. */
  position(): { height: number; round: number } {
    return { height: this.state.height, round: this.state.round };
  }

  /** Starts at the height after the pinned tip (resuming from the signing record if it is there). */
  start(): Promise<void> {
    return this.ports.queue.run(() => this.startHeight(this.ports.replica().chain.height + 1));
  }

  /** After sync moved the pinned tip past the height being decided: start the one after it. */
  catchUp(): Promise<void> {
    return this.ports.queue.run(async () => {
      const tip = this.ports.replica().chain.height;
      if (!this.stopped && this.state.height <= tip) await this.startHeight(tip + 1);
    });
  }

  /** A BFT message from a peer (any group member): verified here, then delivered. */
  onMessage(m: BftMessage, from: InstitutionIndex): Promise<Verdict> {
    return this.ports.queue.run(async () => {
      const ctx = this.ctx;
      if (ctx === null || this.stopped) return reject('WRONG_HEIGHT', 'consensus is not running');
      const checked = verifyMessage(m, ctx.group, this.ports.chainId, batchValueHash);
      if (!checked.ok) return checked;
      const s = this.state;
      if (m.height > s.height) this.ports.ahead(m.height, from);
      if (m.height < s.height) {
        return reject('WRONG_HEIGHT', `message for height ${m.height} at ${s.height}`);
      }
      if (m.type === 'proposal' && !this.arrived.has(m.value)) {
        this.arrived.set(m.value, { at: this.ports.now(), height: m.height, round: m.round });
        this.ports.receiveBundles(decodeBatch(m.value).bundles);
      }
      return this.feed({ type: 'message', message: m });
    });
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    if (this.nextStart !== null) clearTimeout(this.nextStart);
    this.nextStart = null;
  }

  // -------------------------------------------------------------------------------------------

  private makeContext(group: ConsensusGroup): BftContext {
    const { ports } = this;
    const inGroup = group.some((g) => g.member === ports.self);
    return {
      chainId: ports.chainId,
      kind: 'batch',
      group,
      signer: inGroup ? ports.signer : null,
      opts: this.bftOpts,
      hashValue: batchValueHash,
      validate: (v) => validateProposal(ports.replica(), v, this.accountableFrom(v)),
      getValue: (height) => {
        const replica = ports.replica();
        if (replica.chain.height + 1 !== height) return null;
        return proposeBatch(replica, height, ports.self);
      },
    };
  }

  /**
   * When the leader of `value` became accountable for the bundles this node holds: the earlier of
   * when the proposal arrived and when this node entered its round.
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
    this.ctx = this.makeContext(consensusGroupOf(this.ports.replica()));
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
    const ref = (value: Bytes | null): ValueRef | null => {
      if (value === null) return null;
      const hash = batchValueHash(value);
      return { value, hash, key: toHex(hash) };
    };
    this.recorded = recordKey(record);
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
      const ok = verifyMessage(m, this.ctx!.group, this.ports.chainId, batchValueHash);
      if (ok.ok) await this.feed({ type: 'message', message: m });
    }
    const resendAt = this.ports.now() + this.opts.resendIntervalMs;
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
    const hadWork = decodeBatch(decided.value).bundles.length > 0;
    await this.ports.commit(decided.value, decided.certificate);
    const busy = hadWork || this.ports.hasWork();
    this.startLater(
      decided.height + 1,
      busy ? this.opts.batchIntervalMs : this.opts.idleBatchIntervalMs,
    );
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
      height: s.height,
      round: signed,
      lockedRound: s.lockedRound,
      locked: s.locked?.value ?? null,
      validRound: s.validRound,
      valid: s.valid?.value ?? null,
      polka,
    };
    const key = recordKey(record, s.locked?.key, s.valid?.key);
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
      this.ports.queue
        .run(() => this.feed({ type: 'timeout', timeout }))
        .catch((err) => this.ports.fatal(err));
    };
    this.timers.set(key, setTimeout(fire, Math.max(0, at - this.ports.now())));
  }

  private startLater(height: number, delayMs: number): void {
    if (this.stopped) return;
    if (this.nextStart !== null) clearTimeout(this.nextStart);
    this.nextStart = setTimeout(() => {
      this.nextStart = null;
      this.ports.queue
        .run(async () => {
          const tip = this.ports.replica().chain.height;
          if (this.state.height < height && tip + 1 === height) await this.startHeight(height);
        })
        .catch((err) => this.ports.fatal(err));
    }, delayMs);
  }
}

function recordKey(r: SigningRecord, lockedKey?: string, validKey?: string): string {
  const locked = lockedKey ?? (r.locked === null ? '' : toHex(batchValueHash(r.locked)));
  const valid = validKey ?? (r.valid === null ? '' : toHex(batchValueHash(r.valid)));
  return `${r.height}/${r.round}/${r.lockedRound}/${locked}/${r.validRound}/${valid}`;
}
