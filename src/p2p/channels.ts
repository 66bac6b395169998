/**
 * Direct streams (NOTES-libp2p: gossip is several times slower than a stream for the BFT hot
 * path): one protocol per service, one reused outbound stream per peer and service (wire.ts), a
 * bounded send queue per peer for one-way messages, and request-response with ids, timeouts and
 * a bound on requests in flight. Inbound frames are rate limited per peer by pausing the stream
 * (backpressure), never by buffering.
 */
import type { Connection, Libp2p, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import type { BftMessage } from '../ledger/bft-messages.ts';
import { isLedgerError, type Verdict } from '../ledger/errors.ts';
import type { Bundle, InstitutionIndex, RegisterTx } from '../ledger/types.ts';
import { type EdgeContext, waitForToken } from './context.ts';
import { P2pError } from './errors.ts';
import { BoundedQueue, type EnqueueOutcome, TokenBucket } from './limits.ts';
import {
  DIRECT_CODECS,
  DIRECT_KIND_CODES,
  DIRECT_KINDS,
  type DirectKind,
  type DirectPayloads,
  decodeSyncRequest,
  directAuthor,
  encodeSyncPage,
  type ForwardedAdmit,
  PROTOCOLS,
  pageBytes,
  type Service,
  type SyncPage,
  type SyncRequest,
} from './messages.ts';
import { acceptanceOfError, acceptanceOfVerdict } from './verdicts.ts';
import { type InboundFrame, msgFrame, Wire } from './wire.ts';

export interface DirectHandlers {
  readonly bft?: (message: BftMessage, from: InstitutionIndex) => Verdict | Promise<Verdict>;
  readonly bundle?: (bundle: Bundle, from: InstitutionIndex) => Verdict | Promise<Verdict>;
  readonly register?: (tx: RegisterTx, from: InstitutionIndex) => Verdict | Promise<Verdict>;
  readonly admit?: (m: ForwardedAdmit, from: InstitutionIndex) => Verdict | Promise<Verdict>;
}
/** Answers a sync request within its bounds (items and bytes); `signal` fires at the deadline. */
export type SyncHandler = (
  request: SyncRequest,
  from: InstitutionIndex,
  signal: AbortSignal,
) => SyncPage | Promise<SyncPage>;
/** Institution-to-institution record transfer: opaque request bytes in, response bytes out. */
export type RecordHandler = (
  request: Uint8Array,
  from: InstitutionIndex,
  signal: AbortSignal,
) => Uint8Array | Promise<Uint8Array>;

export interface StreamHandlers {
  readonly direct?: DirectHandlers;
  readonly sync?: SyncHandler;
  readonly record?: RecordHandler;
}

const SERVICES: readonly Service[] = ['direct', 'sync', 'record'];
/** Streams per connection and service: one each way, and a few more for races and reopens. */
const MAX_STREAMS = 4;

export class Channels {
  private readonly libp2p: Libp2p;
  private readonly ctx: EdgeContext;
  private readonly handlers: StreamHandlers;
  private readonly wires = new Map<string, Set<Wire>>();
  private readonly opening = new Map<string, Promise<Wire>>();
  private readonly queues = new Map<string, BoundedQueue>();
  private readonly flushing = new Set<string>();
  private readonly buckets = new Map<string, TokenBucket>();
  /** Times an inbound stream was paused because its peer was over its rate. */
  throttled = 0;
  /** Direct messages lost when a stream died under them. */
  lost = 0;

  constructor(libp2p: Libp2p, ctx: EdgeContext, handlers: StreamHandlers) {
    this.libp2p = libp2p;
    this.ctx = ctx;
    this.handlers = handlers;
  }

  private maxFrame(service: Service): number {
    const l = this.ctx.limits;
    return service === 'direct'
      ? l.maxDirectBytes
      : service === 'record'
        ? l.maxRecordBytes
        : l.maxSyncPageBytes;
  }

  async start(): Promise<void> {
    for (const service of SERVICES) {
      await this.libp2p.handle(
        PROTOCOLS[service],
        (stream, connection) => this.accept(service, stream, connection),
        { maxInboundStreams: MAX_STREAMS, maxOutboundStreams: MAX_STREAMS },
      );
    }
  }

  stop(): void {
    for (const set of this.wires.values()) {
      for (const w of set) w.abort(new P2pError('STOPPED', 'node stopping'));
    }
    this.wires.clear();
    for (const q of this.queues.values()) q.clear();
  }

  /** Forgets a peer's streams, queue and buckets (it was banned or removed from the list). */
  dropPeer(peerId: string): void {
    for (const service of SERVICES) {
      for (const w of this.wires.get(`${service}:${peerId}`) ?? []) {
        w.abort(new P2pError('STOPPED', 'peer dropped'));
      }
    }
    this.queues.get(peerId)?.clear();
    this.queues.delete(peerId);
    for (const key of this.buckets.keys()) if (key.endsWith(`:${peerId}`)) this.buckets.delete(key);
  }

  private accept(service: Service, stream: Stream, connection: Connection): void {
    const peer = connection.remotePeer.toString();
    if (this.ctx.memberOf(peer) === undefined || this.ctx.isBanned(peer)) {
      stream.abort(new P2pError('UNKNOWN_PEER', 'not a verified peer'));
      return;
    }
    this.register(service, peer, stream);
  }

  private register(service: Service, peer: string, stream: Stream): Wire {
    const key = `${service}:${peer}`;
    const maxFrame = this.maxFrame(service);
    const wire = new Wire(
      stream,
      peer,
      {
        maxFrameBytes: maxFrame,
        maxPending: this.ctx.limits.maxPendingRequests,
      },
      {
        onInbound: (w, frame) => this.inbound(service, w, frame),
        onViolation: (w, err) =>
          this.ctx.penalise(w.peer, this.ctx.limits.violationPenalty, `${service}: ${err.message}`),
        onClose: (w) => {
          this.wires.get(key)?.delete(w);
          if (this.wires.get(key)?.size === 0) this.wires.delete(key);
        },
      },
    );
    let set = this.wires.get(key);
    if (set === undefined) {
      set = new Set();
      this.wires.set(key, set);
    }
    set.add(wire);
    wire.start();
    return wire;
  }

  /**
   * The stream this node opened to the peer for the service, reused while it is open. We send
   * only on streams we opened: the read loop of an inbound stream waits for each request handler
   * (backpressure), so answers to our own requests queued behind it could deadlock a handler that
   * itself asks the same peer something.
   */
  private async wireFor(service: Service, peer: string): Promise<Wire> {
    const key = `${service}:${peer}`;
    for (const w of this.wires.get(key) ?? []) {
      if (w.isOpen && w.stream.direction === 'outbound') return w;
    }
    const pending = this.opening.get(key);
    if (pending !== undefined) return pending;
    const open = (async () => {
      const connection = this.libp2p
        .getConnections(peerIdFromString(peer))
        .find((c) => c.status === 'open');
      if (connection === undefined) {
        throw new P2pError('STREAM_CLOSED', `not connected to ${peer}`, { peer });
      }
      const stream = await connection.newStream(PROTOCOLS[service], {
        signal: AbortSignal.any([
          AbortSignal.timeout(this.ctx.limits.dialTimeoutMs),
          this.ctx.stopSignal,
        ]),
        maxOutboundStreams: MAX_STREAMS,
      });
      return this.register(service, peer, stream);
    })();
    this.opening.set(key, open);
    try {
      return await open;
    } finally {
      this.opening.delete(key);
    }
  }

  // ---- one-way direct messages -------------------------------------------------------------

  sendDirect<K extends DirectKind>(
    peer: string,
    kind: K,
    value: DirectPayloads[K],
  ): EnqueueOutcome {
    return this.enqueueEncoded(peer, kind, DIRECT_CODECS[kind].encode(value));
  }

  enqueueEncoded(peer: string, kind: DirectKind, body: Uint8Array): EnqueueOutcome {
    const max = this.ctx.limits.maxDirectBytes;
    if (body.length > max) {
      throw new P2pError('TOO_LARGE', `${kind} message of ${body.length} bytes exceeds ${max}`, {
        size: body.length,
        max,
      });
    }
    let q = this.queues.get(peer);
    if (q === undefined) {
      const l = this.ctx.limits;
      q = new BoundedQueue(l.directQueueMessages, l.directQueueBytes, l.queuePolicy);
      this.queues.set(peer, q);
    }
    const outcome = q.push(msgFrame(DIRECT_KIND_CODES[kind], body));
    this.flush(peer);
    return outcome;
  }

  /** Starts draining the peer's queue unless that is under way; stops when not connected. */
  flush(peer: string): void {
    if (this.flushing.has(peer) || this.ctx.stopSignal.aborted) return;
    const q = this.queues.get(peer);
    if (q === undefined || q.length === 0) return;
    this.flushing.add(peer);
    void (async () => {
      try {
        while (q.length > 0 && !this.ctx.stopSignal.aborted) {
          let wire: Wire;
          try {
            wire = await this.wireFor('direct', peer);
          } catch {
            return; // not connected: the queue waits (bounded) for the next connect
          }
          const frame = q.shift()!;
          try {
            await wire.write(frame, this.ctx.stopSignal);
          } catch {
            this.lost++;
          }
        }
      } finally {
        this.flushing.delete(peer);
      }
    })();
  }

  queueStats(): { messages: number; bytes: number; dropped: number } {
    let messages = 0;
    let bytes = 0;
    let dropped = 0;
    for (const q of this.queues.values()) {
      messages += q.length;
      bytes += q.bytes;
      dropped += q.dropped;
    }
    return { messages, bytes, dropped };
  }

  // ---- requests ----------------------------------------------------------------------------

  async request(
    peer: string,
    service: 'sync' | 'record',
    body: Uint8Array,
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<Uint8Array> {
    const max = this.maxFrame(service);
    if (body.length > max) {
      throw new P2pError('TOO_LARGE', `${service} request of ${body.length} bytes exceeds ${max}`, {
        size: body.length,
        max,
      });
    }
    const signal =
      opts.signal === undefined
        ? this.ctx.stopSignal
        : AbortSignal.any([opts.signal, this.ctx.stopSignal]);
    const wire = await this.wireFor(service, peer);
    return wire.request(body, opts.timeoutMs ?? this.ctx.limits.requestTimeoutMs, signal);
  }

  // ---- inbound -----------------------------------------------------------------------------

  private bucket(service: Service, peer: string): TokenBucket {
    const key = `${service}:${peer}`;
    let b = this.buckets.get(key);
    if (b === undefined) {
      const l = this.ctx.limits;
      b = new TokenBucket(service === 'direct' ? l.directRate : l.requestRate, this.ctx.now());
      this.buckets.set(key, b);
    }
    return b;
  }

  private async inbound(service: Service, wire: Wire, frame: InboundFrame): Promise<void> {
    const from = this.ctx.memberOf(wire.peer);
    if (from === undefined || this.ctx.isBanned(wire.peer)) {
      wire.abort(new P2pError('UNKNOWN_PEER', 'peer no longer verified'));
      return;
    }
    if (await waitForToken(this.bucket(service, wire.peer), this.ctx)) this.throttled++;
    if (frame.t === 'msg') {
      if (service !== 'direct') return this.violation(wire, `${service}: one-way message`);
      return this.direct(wire, from, frame.kind, frame.body);
    }
    const deadline = AbortSignal.any([
      AbortSignal.timeout(this.ctx.limits.handlerTimeoutMs),
      this.ctx.stopSignal,
    ]);
    try {
      const answer = await this.answer(service, from, frame.body, deadline);
      if (answer.length > this.maxFrame(service)) {
        await wire.respondError(
          frame.id,
          'TOO_LARGE',
          `answer of ${answer.length} bytes over the limit`,
        );
      } else {
        await wire.respond(frame.id, answer, this.writeDeadline());
      }
    } catch (err) {
      const code = isLedgerError(err) || err instanceof P2pError ? err.code : 'INTERNAL';
      const message = code === 'INTERNAL' ? 'request handler failed' : (err as Error).message;
      if (acceptanceOfError(err) === 'reject') {
        this.ctx.penalise(wire.peer, this.ctx.limits.rejectPenalty, `${service}: ${message}`);
      }
      if (wire.isOpen) {
        await wire.respondError(frame.id, code, message, this.writeDeadline()).catch(() => {});
      }
    }
  }

  private writeDeadline(): AbortSignal {
    return AbortSignal.any([
      AbortSignal.timeout(this.ctx.limits.requestTimeoutMs),
      this.ctx.stopSignal,
    ]);
  }

  private violation(wire: Wire, reason: string): void {
    this.ctx.penalise(wire.peer, this.ctx.limits.violationPenalty, reason);
    wire.abort(new P2pError('PROTOCOL_VIOLATION', reason));
  }

  private async direct(wire: Wire, from: InstitutionIndex, code: number, body: Uint8Array) {
    const kind = DIRECT_KINDS.find((k) => DIRECT_KIND_CODES[k] === code);
    if (kind === undefined) return this.violation(wire, `direct: unknown kind ${code}`);
    let verdict: Verdict;
    try {
      const value = DIRECT_CODECS[kind].decode(body, this.ctx.limits.maxDirectBytes);
      // A direct message comes straight from its author: a peer sending another member's
      // message is not who it claims to be, and the message is dropped.
      const author = directAuthor(kind, value);
      if (author !== from)
        return this.violation(wire, `direct: member ${from} sent ${author}'s ${kind}`);
      const handler = this.handlers.direct?.[kind] as
        | ((v: DirectPayloads[DirectKind], f: InstitutionIndex) => Verdict | Promise<Verdict>)
        | undefined;
      if (handler === undefined) return;
      verdict = await handler(value, from);
    } catch (err) {
      if (acceptanceOfError(err) === 'reject') {
        this.ctx.penalise(
          wire.peer,
          this.ctx.limits.rejectPenalty,
          `direct ${kind}: ${(err as Error).message}`,
        );
      }
      return;
    }
    if (acceptanceOfVerdict(verdict) === 'reject' && !verdict.ok) {
      this.ctx.penalise(
        wire.peer,
        this.ctx.limits.rejectPenalty,
        `direct ${kind}: ${verdict.error.code}`,
      );
    }
  }

  private async answer(
    service: Service,
    from: InstitutionIndex,
    body: Uint8Array,
    signal: AbortSignal,
  ): Promise<Uint8Array> {
    const timedOut = new Promise<never>((_, reject) => {
      const fail = () => reject(new P2pError('TIMEOUT', `${service} handler took too long`));
      if (signal.aborted) fail();
      else signal.addEventListener('abort', fail, { once: true });
    });
    timedOut.catch(() => {});
    if (service === 'record') {
      const handler = this.handlers.record;
      if (handler === undefined) throw new P2pError('NO_HANDLER', 'no record handler');
      return Promise.race([Promise.resolve(handler(body, from, signal)), timedOut]);
    }
    if (service === 'sync') {
      const handler = this.handlers.sync;
      if (handler === undefined) throw new P2pError('NO_HANDLER', 'no sync handler');
      const asked = decodeSyncRequest(body);
      const l = this.ctx.limits;
      const request: SyncRequest = {
        fromHeight: asked.fromHeight,
        fromKeyblock: asked.fromKeyblock ?? 0,
        maxItems: Math.min(asked.maxItems, l.maxSyncItems),
        // Room for the page's own framing (a varint per item, the count and next height).
        maxBytes: Math.min(asked.maxBytes, l.maxSyncPageBytes - 16 * (l.maxSyncItems + 2)),
      };
      const page = await Promise.race([Promise.resolve(handler(request, from, signal)), timedOut]);
      if (page.items.length > request.maxItems || pageBytes(page) > request.maxBytes) {
        throw new Error('sync handler returned a page over the requested bounds');
      }
      return encodeSyncPage(page);
    }
    throw new P2pError('NO_HANDLER', `${service} takes no requests`);
  }
}
