/**
 * Keeps this node connected to every verified peer: a tick looks at each peer, and one that has no
 * open connection is dialled, with exponential backoff and jitter between failed attempts (a peer
 * that is down costs a dial every `redialMaxMs` at most). A successful connection, in either
 * direction, resets the backoff; a disconnect makes the peer due again at once.
 *
 * We do not use libp2p's own reconnect queue (peers tagged KEEP_ALIVE): it gives up after
 * `reconnectRetries` attempts, and a consensus member must never give up on another.
 */
import type { Libp2p, PeerId } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import type { PeerEntry } from './peers.ts';

export interface RedialOpts {
  readonly redialMinMs: number;
  readonly redialMaxMs: number;
  readonly dialTimeoutMs: number;
}

interface Target {
  readonly entry: PeerEntry;
  readonly peerId: PeerId;
  readonly addr: Multiaddr;
  attempts: number;
  nextAt: number;
  dialing: boolean;
}

/** The dialable address: the listed multiaddr, with /p2p/<peerId> appended if it lacks one. */
export function dialAddress(entry: PeerEntry): Multiaddr {
  const ma = multiaddr(entry.multiaddr);
  return ma.getComponents().some((c) => c.name === 'p2p')
    ? ma
    : ma.encapsulate(`/p2p/${entry.peerId}`);
}

export function isConnected(libp2p: Libp2p, peerId: PeerId): boolean {
  return libp2p.getConnections(peerId).some((c) => c.status === 'open');
}

export class Redialer {
  private readonly targets = new Map<string, Target>();
  private timer: ReturnType<typeof setInterval> | undefined;
  private readonly stopping = new AbortController();

  private readonly libp2p: Libp2p;
  private readonly opts: RedialOpts;
  private readonly canDial: (peerId: string) => boolean;
  private readonly now: () => number;

  constructor(
    libp2p: Libp2p,
    opts: RedialOpts,
    canDial: (peerId: string) => boolean,
    now: () => number,
  ) {
    this.libp2p = libp2p;
    this.opts = opts;
    this.canDial = canDial;
    this.now = now;
  }

  /** Replaces the set of peers to keep connected (keeps the backoff of peers that stay). */
  setTargets(entries: Iterable<PeerEntry>): void {
    const keep = new Set<string>();
    for (const entry of entries) {
      keep.add(entry.peerId);
      if (!this.targets.has(entry.peerId)) {
        this.targets.set(entry.peerId, {
          entry,
          peerId: peerIdFromString(entry.peerId),
          addr: dialAddress(entry),
          attempts: 0,
          nextAt: 0,
          dialing: false,
        });
      }
    }
    for (const id of this.targets.keys()) if (!keep.has(id)) this.targets.delete(id);
  }

  start(): void {
    if (this.timer !== undefined) return;
    const tickMs = Math.max(20, Math.min(200, this.opts.redialMinMs));
    this.timer = setInterval(() => this.tick(), tickMs);
    this.tick();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    this.stopping.abort();
  }

  /** A connection to the peer closed: dial it again on the next tick. */
  due(peerId: string): void {
    const t = this.targets.get(peerId);
    if (t !== undefined) {
      t.attempts = 0;
      t.nextAt = 0;
    }
  }

  private backoff(attempts: number): number {
    const base = Math.min(this.opts.redialMaxMs, this.opts.redialMinMs * 2 ** (attempts - 1));
    return base * (0.8 + 0.4 * Math.random());
  }

  private tick(): void {
    const now = this.now();
    for (const t of this.targets.values()) {
      if (t.dialing || this.stopping.signal.aborted) continue;
      if (isConnected(this.libp2p, t.peerId)) {
        t.attempts = 0;
        continue;
      }
      if (now < t.nextAt || !this.canDial(t.entry.peerId)) continue;
      t.dialing = true;
      const signal = AbortSignal.any([
        AbortSignal.timeout(this.opts.dialTimeoutMs),
        this.stopping.signal,
      ]);
      this.libp2p
        .dial(t.addr, { signal })
        .then(
          () => {
            t.attempts = 0;
          },
          () => {
            t.attempts++;
            t.nextAt = this.now() + this.backoff(t.attempts);
          },
        )
        .finally(() => {
          t.dialing = false;
        });
    }
  }
}
