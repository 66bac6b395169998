/**
 * Length-prefixed frames (unsigned varint length, then the bytes: the same wire format as
 * @libp2p/utils' lpStream) read with backpressure.
 *
 * Why not lpStream for reading (measured here, NOTES-libp2p "bound your own queues"): its byte
 * buffer takes every 'message' event the stream emits, and yamux re-grants window as soon as data
 * is dispatched, so a fast sender fills that buffer until it aborts the stream; pausing between
 * reads does not help, because each resume dispatches everything that arrived meanwhile and
 * grants a full window again. This reader pauses the stream as soon as it holds one complete
 * frame and resumes it only while its consumer waits for an incomplete one. Buffered data is
 * then at most one frame plus one yamux window (plus one window in the paused stream itself).
 */
import { P2pError } from './errors.ts';

/** The part of a libp2p Stream the reader uses. */
export interface ReadableMessageStream {
  readonly readStatus: string;
  addEventListener(
    type: 'message',
    l: (evt: { data: Uint8Array | { subarray(): Uint8Array } }) => void,
  ): void;
  addEventListener(type: 'close' | 'remoteCloseWrite', l: () => void): void;
  pause(): void;
  resume(): void;
}

export function varintBytes(n: number): Uint8Array {
  const out: number[] = [];
  let v = n;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return Uint8Array.from(out);
}

export class FrameReader {
  private readonly stream: ReadableMessageStream;
  private readonly maxFrame: number;
  private readonly maxPrefix: number;
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  private ended = false;
  private pausePending = false;
  private waiter: (() => void) | undefined;

  constructor(stream: ReadableMessageStream, maxFrameBytes: number) {
    this.stream = stream;
    this.maxFrame = maxFrameBytes;
    this.maxPrefix = varintBytes(maxFrameBytes).length;
    stream.addEventListener('message', (evt) => {
      const d = evt.data instanceof Uint8Array ? evt.data : evt.data.subarray();
      if (d.length === 0) return;
      this.chunks.push(d);
      this.buffered += d.length;
      this.schedulePause();
      this.wake();
    });
    const end = () => {
      this.ended = true;
      this.wake();
    };
    stream.addEventListener('close', end);
    stream.addEventListener('remoteCloseWrite', end);
  }

  /** Bytes held here (not counting what the paused stream holds). */
  get bufferedBytes(): number {
    return this.buffered;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /**
   * Pauses in a microtask, not in the 'message' listener: `resume()` dispatches the buffered data
   * to the listener and only then tells yamux to resume, so a pause from inside the listener
   * leaves the stream marked paused while yamux grants window again on every frame (libp2p/utils
   * 7.4, yamux 8.0: the paused stream's buffer then grows to its 4 MiB limit and aborts).
   */
  private schedulePause(): void {
    if (this.pausePending) return;
    this.pausePending = true;
    queueMicrotask(() => {
      this.pausePending = false;
      let hold: boolean;
      try {
        hold = this.complete();
      } catch {
        hold = true; // an oversize prefix: next() reports it
      }
      if (hold && this.stream.readStatus === 'readable') this.stream.pause();
    });
  }

  private resume(): void {
    if (this.stream.readStatus === 'paused') this.stream.resume();
  }

  /** The first frame's prefix and body lengths, once its prefix is buffered. */
  private header(): { prefix: number; body: number } | null {
    let value = 0;
    let scale = 1;
    let i = 0;
    for (const chunk of this.chunks) {
      for (const b of chunk) {
        i++;
        value += (b & 0x7f) * scale;
        if ((b & 0x80) === 0) {
          if (value > this.maxFrame) {
            throw new P2pError('TOO_LARGE', `frame of ${value} bytes exceeds ${this.maxFrame}`, {
              size: value,
              max: this.maxFrame,
            });
          }
          return { prefix: i, body: value };
        }
        if (i >= this.maxPrefix) {
          throw new P2pError('TOO_LARGE', `frame length prefix over ${this.maxPrefix} bytes`);
        }
        scale *= 0x80;
      }
    }
    return null;
  }

  private complete(): boolean {
    const h = this.header();
    return h !== null && this.buffered >= h.prefix + h.body;
  }

  private consume(n: number): Uint8Array {
    if (n === 0) return new Uint8Array(0);
    const first = this.chunks[0]!;
    let out: Uint8Array;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = new Uint8Array(n);
      let off = 0;
      while (off < n) {
        const c = this.chunks[0]!;
        const take = Math.min(c.length, n - off);
        out.set(c.subarray(0, take), off);
        off += take;
        if (take === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(take);
      }
    }
    this.buffered -= n;
    return out;
  }

  /**
   * The next frame's bytes; null at a clean end of stream. Throws P2pError TOO_LARGE (the peer
   * announced a frame over the limit) or STREAM_CLOSED (the stream ended inside a frame).
   */
  async next(): Promise<Uint8Array | null> {
    for (;;) {
      const h = this.header();
      if (h !== null && this.buffered >= h.prefix + h.body) {
        this.consume(h.prefix);
        return this.consume(h.body);
      }
      if (this.ended) {
        if (this.buffered === 0) return null;
        throw new P2pError('STREAM_CLOSED', `stream ended inside a frame (${this.buffered} bytes)`);
      }
      const arrived = new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
      this.resume();
      await arrived;
    }
  }
}
