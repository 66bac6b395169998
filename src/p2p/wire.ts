/**
 * One long-lived stream to a peer, carrying length-prefixed frames (frames.ts) both ways:
 *   MSG  [0][kind u8][body]          one-way message (BFT hot path)
 *   REQ  [1][id u32][body]           request, answered by a RES with the same id
 *   RES  [2][id u32][body]           answer
 *   ERR  [3][id u32][code][message]  failed answer (ledger codec strings)
 * The end that opened the stream sends MSG and REQ frames on it and reads answers; several
 * requests can be in flight (ids), and a late answer to a timed-out request is dropped. The other
 * end handles one inbound frame at a time, which is what slows a fast sender down.
 *
 * Backpressure: the frame reader keeps the stream paused while it holds a frame the read loop has
 * not taken, so while a handler runs or the rate limiter waits, yamux stops granting window and
 * the sender's `send()` reports full; the sender then waits for 'drain'. In-flight data is bounded
 * by the yamux window (node.ts caps it).
 */
import type { Stream } from '@libp2p/interface';
import { decode, encode } from '../ledger/codec.ts';
import { P2pError, type P2pErrorCode } from './errors.ts';
import { FrameReader, varintBytes } from './frames.ts';

const MSG = 0;
const REQ = 1;
const RES = 2;
const ERR = 3;
/** Bytes a stream's own write buffer may hold before a writer waits (one frame may exceed it). */
const WRITE_LOW_WATER = 64 * 1024;
/** Type byte and request id. */
export const FRAME_OVERHEAD = 5;

export type InboundFrame =
  | { readonly t: 'msg'; readonly kind: number; readonly body: Uint8Array }
  | { readonly t: 'req'; readonly id: number; readonly body: Uint8Array };
type Frame =
  | InboundFrame
  | { readonly t: 'res'; readonly id: number; readonly body: Uint8Array }
  | { readonly t: 'err'; readonly id: number; readonly code: string; readonly message: string };

function header(type: number, n: number, bodyLength: number): Uint8Array {
  const out = new Uint8Array(FRAME_OVERHEAD + bodyLength);
  out[0] = type;
  new DataView(out.buffer).setUint32(1, n);
  return out;
}

export function msgFrame(kind: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(2 + body.length);
  out[0] = MSG;
  out[1] = kind;
  out.set(body, 2);
  return out;
}

function idFrame(type: number, id: number, body: Uint8Array): Uint8Array {
  const out = header(type, id, body.length);
  out.set(body, FRAME_OVERHEAD);
  return out;
}

function decodeFrame(b: Uint8Array): Frame {
  const type = b[0];
  if (type === MSG && b.length >= 2) return { t: 'msg', kind: b[1]!, body: b.subarray(2) };
  if (b.length < FRAME_OVERHEAD || type === undefined || type > ERR) {
    throw new P2pError('PROTOCOL_VIOLATION', `undecodable frame (type ${type}, ${b.length} bytes)`);
  }
  const id = new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(1);
  const body = b.subarray(FRAME_OVERHEAD);
  if (type === REQ) return { t: 'req', id, body };
  if (type === RES) return { t: 'res', id, body };
  try {
    return decode(body, 'error frame', (r) => ({
      t: 'err' as const,
      id,
      code: r.string('code', 64),
      message: r.string('message', 1024),
    }));
  } catch {
    throw new P2pError('PROTOCOL_VIOLATION', 'undecodable error frame');
  }
}

/**
 * The next 'drain' event. Not `stream.onDrain()`: in @libp2p/utils 7.4 it keeps its first,
 * resolved promise forever, so after one drain every later call resolves at once (a writer
 * looping on it spins the event loop to a halt; one await per write gives no backpressure).
 */
function nextDrain(stream: Stream, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const cleanup = () => {
      stream.removeEventListener('drain', drained);
      stream.removeEventListener('close', closed);
      signal?.removeEventListener('abort', aborted);
    };
    const drained = () => {
      cleanup();
      resolve();
    };
    const closed = () => {
      cleanup();
      reject(new Error('stream closed'));
    };
    const aborted = () => {
      cleanup();
      reject(signal?.reason);
    };
    if (signal?.aborted) return aborted();
    if (stream.status !== 'open') return closed();
    stream.addEventListener('drain', drained);
    stream.addEventListener('close', closed);
    signal?.addEventListener('abort', aborted);
  });
}

export interface WireHooks {
  /** MSG and REQ frames. The read loop waits for the returned promise: that is the backpressure. */
  onInbound(wire: Wire, frame: InboundFrame): Promise<void>;
  /** The remote broke the protocol; the wire aborts itself right after. */
  onViolation(wire: Wire, err: P2pError): void;
  onClose(wire: Wire): void;
}

interface Pending {
  resolve(body: Uint8Array): void;
  reject(err: Error): void;
}

export class Wire {
  readonly peer: string;
  readonly stream: Stream;
  private readonly reader: FrameReader;
  private readonly hooks: WireHooks;
  private readonly maxPending: number;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  closed = false;

  constructor(
    stream: Stream,
    peer: string,
    limits: { maxFrameBytes: number; maxPending: number },
    hooks: WireHooks,
  ) {
    this.stream = stream;
    this.peer = peer;
    this.hooks = hooks;
    this.maxPending = limits.maxPending;
    this.reader = new FrameReader(stream, limits.maxFrameBytes + FRAME_OVERHEAD);
    stream.addEventListener('close', () => this.shutdown(), { once: true });
  }

  get isOpen(): boolean {
    return !this.closed && this.stream.status === 'open' && this.stream.writeStatus === 'writable';
  }

  get pendingRequests(): number {
    return this.pending.size;
  }

  start(): void {
    this.readLoop().catch(() => this.shutdown());
  }

  private async readLoop(): Promise<void> {
    try {
      while (!this.closed) {
        const data = await this.reader.next();
        if (data === null) break;
        const frame = decodeFrame(data);
        if (frame.t === 'res' || frame.t === 'err') this.settle(frame);
        else await this.hooks.onInbound(this, frame);
      }
    } catch (err) {
      const violation =
        err instanceof P2pError && (err.code === 'TOO_LARGE' || err.code === 'PROTOCOL_VIOLATION')
          ? err
          : null;
      if (violation !== null && !this.closed) {
        this.hooks.onViolation(this, violation);
        this.abort(violation);
      }
    } finally {
      this.shutdown();
    }
  }

  private settle(frame: Extract<Frame, { t: 'res' | 'err' }>): void {
    const p = this.pending.get(frame.id);
    if (p === undefined) return; // the request timed out: a late answer is not a fault
    this.pending.delete(frame.id);
    if (frame.t === 'res') p.resolve(frame.body);
    else {
      p.reject(
        new P2pError('REMOTE_ERROR', `peer answered ${frame.code}: ${frame.message}`, {
          remoteCode: frame.code,
        }),
      );
    }
  }

  /** Writes one frame, then waits for the stream to drain if it is full. */
  async write(frame: Uint8Array, signal?: AbortSignal): Promise<void> {
    if (!this.isOpen) throw new P2pError('STREAM_CLOSED', `stream to ${this.peer} is closed`);
    try {
      // Two synchronous sends: nothing can come between them, so frames never interleave.
      this.stream.send(varintBytes(frame.length));
      this.stream.send(frame);
      // 'drain' fires on every yamux window update, however small, while the write buffer may
      // still hold many frames: waiting for one 'drain' per frame lets the buffer grow by a frame
      // per update (measured: 1.6 MB queued in a burst). Wait until it is nearly empty instead.
      while (this.stream.writeBufferLength > WRITE_LOW_WATER && this.stream.writableNeedsDrain) {
        await nextDrain(this.stream, signal);
      }
    } catch (err) {
      if (signal?.aborted) throw new P2pError('TIMEOUT', `write to ${this.peer} timed out`);
      throw new P2pError(
        'STREAM_CLOSED',
        `write to ${this.peer} failed: ${(err as Error).message}`,
      );
    }
  }

  async request(body: Uint8Array, timeoutMs: number, signal?: AbortSignal): Promise<Uint8Array> {
    if (this.pending.size >= this.maxPending) {
      throw new P2pError(
        'QUEUE_FULL',
        `${this.pending.size} requests already pending to ${this.peer}`,
      );
    }
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    const timeout = AbortSignal.timeout(timeoutMs);
    const both = signal === undefined ? timeout : AbortSignal.any([timeout, signal]);
    const answer = new Promise<Uint8Array>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
    });
    answer.catch(() => {}); // rejected while the write is still pending: reported by the write
    const onAbort = () => {
      const p = this.pending.get(id);
      if (p === undefined) return;
      this.pending.delete(id);
      p.reject(
        timeout.aborted
          ? new P2pError('TIMEOUT', `no answer from ${this.peer} within ${timeoutMs} ms`)
          : new P2pError('STOPPED', 'request aborted'),
      );
    };
    both.addEventListener('abort', onAbort, { once: true });
    try {
      await this.write(idFrame(REQ, id, body), both);
      return await answer;
    } catch (err) {
      this.pending.delete(id);
      throw err;
    } finally {
      both.removeEventListener('abort', onAbort);
    }
  }

  async respond(id: number, body: Uint8Array, signal?: AbortSignal): Promise<void> {
    await this.write(idFrame(RES, id, body), signal);
  }

  async respondError(
    id: number,
    code: P2pErrorCode | string,
    message: string,
    signal?: AbortSignal,
  ): Promise<void> {
    const body = encode((w) => w.string(code.slice(0, 64)).string(message.slice(0, 1000)));
    await this.write(idFrame(ERR, id, body), signal);
  }

  abort(err: Error): void {
    if (this.stream.status === 'open' || this.stream.status === 'closing') this.stream.abort(err);
    this.shutdown();
  }

  private shutdown(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pending.values()) {
      p.reject(new P2pError('STREAM_CLOSED', `stream to ${this.peer} closed`));
    }
    this.pending.clear();
    this.hooks.onClose(this);
  }
}
