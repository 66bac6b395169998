/**
 * Bounded resources, pure (the caller passes `now` in milliseconds): a token bucket per peer, a
 * bounded queue per peer, and a misbehaviour ledger that bans a peer for a while once its penalty
 * points reach a threshold. Points halve every `halfLifeMs`, so an honest peer that sent one bad
 * message long ago is not banned by the next one.
 */

export interface RateLimit {
  /** Tokens added per second. */
  readonly perSecond: number;
  /** Bucket capacity: the largest burst allowed after a quiet period. */
  readonly burst: number;
}

export class TokenBucket {
  private tokens: number;
  private last: number;
  private readonly limit: RateLimit;

  constructor(limit: RateLimit, now: number) {
    if (!(limit.perSecond > 0) || !(limit.burst >= 1)) {
      throw new RangeError(
        `rate limit needs perSecond > 0 and burst >= 1, got ${JSON.stringify(limit)}`,
      );
    }
    this.limit = limit;
    this.tokens = limit.burst;
    this.last = now;
  }

  private refill(now: number): void {
    if (now > this.last) {
      this.tokens = Math.min(
        this.limit.burst,
        this.tokens + ((now - this.last) * this.limit.perSecond) / 1000,
      );
      this.last = now;
    }
  }

  /** Takes `n` tokens if there are that many; false (and nothing taken) otherwise. */
  take(now: number, n = 1): boolean {
    this.refill(now);
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }

  /** Milliseconds until `n` tokens are available (0 if they are now). */
  msUntil(now: number, n = 1): number {
    this.refill(now);
    if (this.tokens >= n) return 0;
    return Math.ceil(((n - this.tokens) * 1000) / this.limit.perSecond);
  }
}

export type QueuePolicy = 'drop-oldest' | 'refuse';
export type EnqueueOutcome = 'queued' | 'dropped-oldest' | 'refused';

/** A FIFO bounded by item count and total bytes; never grows past either. */
export class BoundedQueue {
  private items: Uint8Array[] = [];
  private head = 0;
  private bytesHeld = 0;
  private readonly maxItems: number;
  private readonly maxBytes: number;
  private readonly policy: QueuePolicy;
  /** Items dropped (oldest first) or refused since creation. */
  dropped = 0;

  constructor(maxItems: number, maxBytes: number, policy: QueuePolicy) {
    if (!(maxItems >= 1) || !(maxBytes >= 1)) throw new RangeError('queue bounds must be >= 1');
    this.maxItems = maxItems;
    this.maxBytes = maxBytes;
    this.policy = policy;
  }

  get length(): number {
    return this.items.length - this.head;
  }

  get bytes(): number {
    return this.bytesHeld;
  }

  push(item: Uint8Array): EnqueueOutcome {
    if (item.length > this.maxBytes) {
      this.dropped++;
      return 'refused';
    }
    const full = () => this.length >= this.maxItems || this.bytesHeld + item.length > this.maxBytes;
    if (full() && this.policy === 'refuse') {
      this.dropped++;
      return 'refused';
    }
    let outcome: EnqueueOutcome = 'queued';
    while (full()) {
      this.shift();
      this.dropped++;
      outcome = 'dropped-oldest';
    }
    this.items.push(item);
    this.bytesHeld += item.length;
    return outcome;
  }

  shift(): Uint8Array | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head]!;
    this.head++;
    this.bytesHeld -= item.length;
    // Compact now and then, so the backing array stays O(maxItems).
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
    this.bytesHeld = 0;
  }
}

export interface MisbehaviourOpts {
  /** Points at which a peer is banned. */
  readonly banThreshold: number;
  readonly banMs: number;
  /** Points halve every this many milliseconds. */
  readonly halfLifeMs: number;
}

interface PeerRecord {
  points: number;
  at: number;
  bannedUntil: number;
  /** Every penalty ever recorded, undecayed (for metrics and tests). */
  total: number;
}

/** Penalty points per peer key (a peer id string); bans past a threshold. */
export class Misbehaviour {
  private readonly peers = new Map<string, PeerRecord>();
  private readonly opts: MisbehaviourOpts;

  constructor(opts: MisbehaviourOpts) {
    if (!(opts.banThreshold > 0) || !(opts.banMs >= 0) || !(opts.halfLifeMs > 0)) {
      throw new RangeError('misbehaviour: banThreshold > 0, banMs >= 0, halfLifeMs > 0');
    }
    this.opts = opts;
  }

  private record(peer: string, now: number): PeerRecord {
    let r = this.peers.get(peer);
    if (r === undefined) {
      r = { points: 0, at: now, bannedUntil: 0, total: 0 };
      this.peers.set(peer, r);
    } else {
      // Halve once per whole half-life elapsed: between halvings points add up exactly, so
      // "n penalties of 1 reach a threshold of n" holds without clock fudge.
      const halvings = Math.floor((now - r.at) / this.opts.halfLifeMs);
      if (halvings > 0) {
        r.points *= 0.5 ** halvings;
        r.at += halvings * this.opts.halfLifeMs;
      }
    }
    return r;
  }

  /** Adds points; 'banned' when this penalty starts a ban (points then reset). */
  penalise(peer: string, points: number, now: number): 'ok' | 'banned' {
    const r = this.record(peer, now);
    r.points += points;
    r.total += points;
    if (r.bannedUntil <= now && r.points >= this.opts.banThreshold) {
      r.bannedUntil = now + this.opts.banMs;
      r.points = 0;
      return 'banned';
    }
    return 'ok';
  }

  /** Current (decayed) points. */
  points(peer: string, now: number): number {
    return this.peers.has(peer) ? this.record(peer, now).points : 0;
  }

  /** Every penalty point ever recorded for the peer. */
  total(peer: string): number {
    return this.peers.get(peer)?.total ?? 0;
  }

  isBanned(peer: string, now: number): boolean {
    return (this.peers.get(peer)?.bannedUntil ?? 0) > now;
  }

  forget(peer: string): void {
    this.peers.delete(peer);
  }
}
