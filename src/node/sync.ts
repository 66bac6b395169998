/**
 * Catching up (DESIGN section 5, "sync"): a node that was down, or lost the messages of a height,
 * asks a peer for pages of pinned keyblocks and batches with their certificates, from the heights
 * after its own tips, in the order the replica pins them (sync-items.ts), and pins each one only
 * after checking it (chain.ts applyCertified). It asks
 * - a group member whose BFT messages (of either kind) are two or more heights ahead of ours, at
 *   once;
 * - one that is one height ahead (it decided the height we are deciding), after lagGraceMs, in
 *   case the precommits that would let us decide it ourselves never come;
 * - a peer that just connected (we may have been down);
 * - the next connected peer in turn when nothing was pinned for stallMs (we may not be in the
 *   group, so nobody sends us BFT messages).
 * One sync at a time; each is bounded in pages.
 */
import type { Bytes, ConsensusKind, InstitutionIndex } from '../ledger/types.ts';
import type { SyncPage } from '../p2p/index.ts';

export interface SyncOpts {
  readonly tickMs: number;
  readonly lagGraceMs: number;
  readonly stallMs: number;
  /** Pages fetched in one sync before giving others a turn. */
  readonly maxPages: number;
}

export const defaultSyncOpts: SyncOpts = {
  tickMs: 500,
  lagGraceMs: 1000,
  stallMs: 3000,
  maxPages: 64,
};

/** Where a node is: its pinned batch and keyblock heights. */
export interface SyncPosition {
  readonly batch: number;
  readonly keyblock: number;
}

export interface SyncPorts {
  now(): number;
  /** The pinned tips. */
  position(): SyncPosition;
  /** When this node last pinned a batch or keyblock (or started). */
  lastPinnedAt(): number;
  connected(): readonly InstitutionIndex[];
  /** A page of items from the heights after `from`. */
  fetch(peer: InstitutionIndex, from: SyncPosition): Promise<SyncPage>;
  /** Checks and pins one item; false when it was refused (stop asking this peer for now). */
  apply(item: Bytes, peer: InstitutionIndex): Promise<boolean>;
  /** The pinned tip moved: the BFT must move past it. */
  caughtUp(): Promise<void>;
  synced(peer: InstitutionIndex, from: SyncPosition, to: SyncPosition): void;
  failed(peer: InstitutionIndex, err: unknown): void;
}

export class Syncer {
  private readonly ports: SyncPorts;
  private readonly opts: SyncOpts;
  private readonly ahead = new Map<
    ConsensusKind,
    { height: number; from: InstitutionIndex; since: number }
  >();
  private running = false;
  private turn = 0;
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(ports: SyncPorts, opts: SyncOpts) {
    this.ports = ports;
    this.opts = opts;
  }

  start(): void {
    this.timer = setInterval(() => this.tick(), this.opts.tickMs);
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** A BFT message of `kind` for `height` came from `from`, above the height we decide. */
  noteAhead(kind: ConsensusKind, height: number, from: InstitutionIndex): void {
    // A peer deciding height h has pinned h - 1.
    if (height - 1 <= this.pinned(kind)) return;
    const a = this.ahead.get(kind);
    if (a === undefined || height > a.height) {
      this.ahead.set(kind, { height, from, since: a?.since ?? this.ports.now() });
    }
  }

  private pinned(kind: ConsensusKind): number {
    const p = this.ports.position();
    return kind === 'batch' ? p.batch : p.keyblock;
  }

  onConnected(peer: InstitutionIndex): void {
    void this.syncFrom(peer);
  }

  private tick(): void {
    if (this.running) return;
    const now = this.ports.now();
    for (const [kind, a] of this.ahead) {
      const height = this.pinned(kind);
      if (a.height - 1 <= height) this.ahead.delete(kind);
      else if (a.height - 1 > height + 1 || now - a.since >= this.opts.lagGraceMs) {
        void this.syncFrom(a.from);
        return;
      }
    }
    if (now - this.ports.lastPinnedAt() >= this.opts.stallMs) {
      const peers = this.ports.connected();
      if (peers.length > 0) void this.syncFrom(peers[this.turn++ % peers.length]!);
    }
  }

  private async syncFrom(peer: InstitutionIndex): Promise<void> {
    if (this.running || this.timer === null) return;
    this.running = true;
    const start = this.ports.position();
    try {
      for (let page = 0; page < this.opts.maxPages && this.timer !== null; page++) {
        const at = this.ports.position();
        const p = await this.ports.fetch(peer, { batch: at.batch + 1, keyblock: at.keyblock + 1 });
        let refused = false;
        for (const item of p.items) {
          if (!(await this.ports.apply(item, peer))) {
            refused = true;
            break;
          }
        }
        if (refused || p.items.length === 0 || p.nextHeight === null) break;
      }
    } catch (err) {
      this.ports.failed(peer, err);
    } finally {
      this.running = false;
      this.ahead.clear();
    }
    const end = this.ports.position();
    if (end.batch > start.batch || end.keyblock > start.keyblock) {
      this.ports.synced(peer, start, end);
      await this.ports.caughtUp().catch((err) => this.ports.failed(peer, err));
    }
  }
}
