/**
 * Options, events and the narrow context the gossip and stream parts share with the node (they get
 * what they need, not the node).
 */
import type { InstitutionIndex } from '../ledger/types.ts';
import type { QueuePolicy, RateLimit } from './limits.ts';
import type { TopicName } from './messages.ts';

export interface P2pLimits {
  /** Largest gossip message per topic (gossipsub itself caps messages at 4 MiB). */
  readonly maxGossipBytes: Readonly<Record<TopicName, number>>;
  /** Largest direct message (an encoded BFT message or bundle). */
  readonly maxDirectBytes: number;
  /** Largest record-transfer request or response. */
  readonly maxRecordBytes: number;
  /** Largest sync page (encoded), and most items in one. */
  readonly maxSyncPageBytes: number;
  readonly maxSyncItems: number;
  /** Direct messages waiting for one peer: at most this many, and this many bytes. */
  readonly directQueueMessages: number;
  readonly directQueueBytes: number;
  /** When a peer's queue is full: drop its oldest message, or refuse the new one. */
  readonly queuePolicy: QueuePolicy;
  /** Requests in flight to one peer on one service. */
  readonly maxPendingRequests: number;
  readonly requestTimeoutMs: number;
  /** How long a caller-supplied request handler may take before the requester gets TIMEOUT. */
  readonly handlerTimeoutMs: number;
  readonly dialTimeoutMs: number;
  /** Per peer, inbound: direct messages, requests (each service), gossip messages. */
  readonly directRate: RateLimit;
  readonly requestRate: RateLimit;
  readonly gossipRate: RateLimit;
  /** Penalty points for a message the validator rejects, and for a protocol violation. */
  readonly rejectPenalty: number;
  readonly violationPenalty: number;
  readonly banThreshold: number;
  readonly banMs: number;
  readonly penaltyHalfLifeMs: number;
  readonly redialMinMs: number;
  readonly redialMaxMs: number;
  /** Yamux per-stream window cap: bounds what one paused stream can have in flight. */
  readonly streamWindowBytes: number;
}

const MiB = 1024 * 1024;

export const defaultP2pLimits: P2pLimits = {
  maxGossipBytes: { bundles: 1 * MiB, keyblocks: 2 * MiB, bft: 2 * MiB },
  maxDirectBytes: 4 * MiB,
  maxRecordBytes: 4 * MiB,
  maxSyncPageBytes: 4 * MiB,
  maxSyncItems: 256,
  directQueueMessages: 4096,
  directQueueBytes: 16 * MiB,
  queuePolicy: 'drop-oldest',
  maxPendingRequests: 64,
  requestTimeoutMs: 10_000,
  handlerTimeoutMs: 8_000,
  dialTimeoutMs: 5_000,
  directRate: { perSecond: 5_000, burst: 10_000 },
  requestRate: { perSecond: 100, burst: 200 },
  gossipRate: { perSecond: 2_000, burst: 4_000 },
  rejectPenalty: 1,
  violationPenalty: 10,
  banThreshold: 20,
  banMs: 10 * 60_000,
  penaltyHalfLifeMs: 5 * 60_000,
  redialMinMs: 250,
  redialMaxMs: 10_000,
  streamWindowBytes: 1 * MiB,
};

export type P2pEvent =
  | { readonly type: 'connected'; readonly member: InstitutionIndex; readonly peerId: string }
  | { readonly type: 'disconnected'; readonly member: InstitutionIndex; readonly peerId: string }
  | {
      readonly type: 'penalised';
      readonly member: InstitutionIndex | undefined;
      readonly peerId: string;
      readonly points: number;
      readonly reason: string;
    }
  | {
      readonly type: 'banned';
      readonly member: InstitutionIndex | undefined;
      readonly peerId: string;
      readonly untilMs: number;
    }
  | {
      readonly type: 'refused-peer';
      readonly index: number;
      readonly peerId: string;
      readonly reason: string;
    };

/** What the gossip and stream parts need from the node. */
export interface EdgeContext {
  readonly limits: P2pLimits;
  readonly stopSignal: AbortSignal;
  now(): number;
  /** The member a peer id is bound to, if it is a verified peer. */
  memberOf(peerId: string): InstitutionIndex | undefined;
  isBanned(peerId: string): boolean;
  penalise(peerId: string, points: number, reason: string): void;
}

/** Resolves once `bucket` has a token; the caller's stream stays paused meanwhile. */
export async function waitForToken(
  bucket: { msUntil(now: number): number; take(now: number): boolean },
  ctx: Pick<EdgeContext, 'now' | 'stopSignal'>,
): Promise<boolean> {
  let waited = false;
  while (!bucket.take(ctx.now())) {
    waited = true;
    const ms = Math.max(1, bucket.msUntil(ctx.now()));
    await new Promise<void>((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        ctx.stopSignal.removeEventListener('abort', done);
        resolve();
      }
      ctx.stopSignal.addEventListener('abort', done, { once: true });
    });
    if (ctx.stopSignal.aborted) throw ctx.stopSignal.reason;
  }
  return waited;
}
