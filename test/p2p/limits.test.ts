/** Verdict mapping, bounded queues, token buckets, misbehaviour, frames and sync pages: pure. */
import { describe, expect, it } from 'vitest';
import { LedgerError, type LedgerErrorCode, OK, reject } from '../../src/ledger/errors.ts';
import { FrameReader, type ReadableMessageStream, varintBytes } from '../../src/p2p/frames.ts';
import { BoundedQueue, Misbehaviour, TokenBucket } from '../../src/p2p/limits.ts';
import { decodeSyncPage, encodeSyncPage } from '../../src/p2p/messages.ts';
import {
  acceptanceOfCode,
  acceptanceOfError,
  acceptanceOfVerdict,
} from '../../src/p2p/verdicts.ts';

describe('gossip verdicts', () => {
  it.each<[LedgerErrorCode, 'ignore' | 'reject']>([
    ['MALFORMED', 'reject'],
    ['NON_CANONICAL', 'reject'],
    ['TOO_LARGE', 'reject'],
    ['BAD_SIGNATURE', 'reject'],
    ['BAD_POW', 'reject'],
    ['BAD_TX_ROOT', 'reject'],
    ['FEE_TOO_LOW', 'reject'],
    ['WRONG_HEIGHT', 'ignore'],
    ['WRONG_ROUND', 'ignore'],
    ['REPLAYED_TX', 'ignore'],
    ['DUPLICATE_VOTE', 'ignore'],
    ['DUPLICATE_PATIENT', 'ignore'],
    ['WRONG_PARENT', 'ignore'],
    ['BAD_TIMESTAMP', 'ignore'],
    ['NOT_IN_GROUP', 'ignore'],
    ['EQUIVOCATION', 'ignore'],
  ])('%s -> %s', (code, acceptance) => {
    expect(acceptanceOfCode(code)).toBe(acceptance);
    expect(acceptanceOfVerdict(reject(code, 'x'))).toBe(acceptance);
    expect(acceptanceOfError(new LedgerError(code, 'x'))).toBe(acceptance);
  });

  it('accepts OK, and ignores errors that are not the ledger’s', () => {
    expect(acceptanceOfVerdict(OK)).toBe('accept');
    expect(acceptanceOfError(new Error('disk full'))).toBe('ignore');
    expect(acceptanceOfError('nonsense')).toBe('ignore');
  });
});

describe('BoundedQueue', () => {
  const item = (n: number, size = 10) => new Uint8Array(size).fill(n);

  it('drops the oldest when full by count or bytes, never exceeding either', () => {
    const q = new BoundedQueue(3, 25, 'drop-oldest');
    expect([1, 2].map((n) => q.push(item(n)))).toEqual(['queued', 'queued']);
    expect(q.push(item(3))).toBe('dropped-oldest'); // 30 bytes > 25: 1 goes
    expect([q.length, q.bytes]).toEqual([2, 20]);
    expect(q.shift()![0]).toBe(2);
    expect(q.push(item(4, 5))).toBe('queued');
    expect(q.push(item(5, 5))).toBe('queued'); // 3 items, 20 bytes: full, not over
    expect(q.push(item(6, 5))).toBe('dropped-oldest'); // 4 items > 3: 3 goes
    expect([q.shift()![0], q.shift()![0], q.shift()![0], q.shift()]).toEqual([4, 5, 6, undefined]);
    expect([q.length, q.bytes, q.dropped]).toEqual([0, 0, 2]);
  });

  it('refuses when full (refuse policy), and an item larger than the byte bound', () => {
    const q = new BoundedQueue(2, 100, 'refuse');
    q.push(item(1));
    q.push(item(2));
    expect(q.push(item(3))).toBe('refused');
    expect(q.push(item(4, 101))).toBe('refused');
    expect([q.shift()![0], q.shift()![0]]).toEqual([1, 2]);
    expect(q.dropped).toBe(2);
  });

  it('stays O(bound) over many pushes', () => {
    const q = new BoundedQueue(100, 1e9, 'drop-oldest');
    for (let i = 0; i < 50_000; i++) q.push(item(i & 0xff, 1));
    expect(q.length).toBe(100);
    expect(q.dropped).toBe(49_900);
  });
});

describe('TokenBucket', () => {
  it('allows a burst, then the rate, computed from the clock passed in', () => {
    const b = new TokenBucket({ perSecond: 10, burst: 5 }, 0);
    expect(Array.from({ length: 6 }, () => b.take(0))).toEqual([
      true,
      true,
      true,
      true,
      true,
      false,
    ]);
    expect(b.msUntil(0)).toBe(100);
    expect(b.take(99)).toBe(false);
    expect(b.take(100)).toBe(true);
    expect(b.take(10_000)).toBe(true);
    expect(b.msUntil(10_000)).toBe(0); // refilled to the burst, not beyond
    for (let i = 0; i < 4; i++) b.take(10_000);
    expect(b.take(10_000)).toBe(false);
    expect(() => new TokenBucket({ perSecond: 0, burst: 1 }, 0)).toThrow(RangeError);
  });
});

describe('Misbehaviour', () => {
  const opts = { banThreshold: 3, banMs: 1_000, halfLifeMs: 10_000 };

  it('bans at the threshold, for banMs', () => {
    const m = new Misbehaviour(opts);
    expect(m.penalise('p', 1, 0)).toBe('ok');
    expect(m.penalise('p', 1, 5)).toBe('ok');
    expect(m.penalise('p', 1, 9)).toBe('banned');
    expect(m.isBanned('p', 9)).toBe(true);
    expect(m.isBanned('p', 1_008)).toBe(true);
    expect(m.isBanned('p', 1_009)).toBe(false);
    expect(m.total('p')).toBe(3);
    expect(m.isBanned('q', 9)).toBe(false);
  });

  it('halves points per whole half-life, so old faults fade', () => {
    const m = new Misbehaviour(opts);
    m.penalise('p', 2, 0);
    expect(m.points('p', 9_999)).toBe(2);
    expect(m.points('p', 10_000)).toBe(1);
    expect(m.penalise('p', 1, 10_001)).toBe('ok'); // 2 points, not 3
    expect(m.points('p', 30_001)).toBe(0.5);
  });
});

/** A stream stand-in: tests push chunks; the reader pauses and resumes it. */
class FakeStream implements ReadableMessageStream {
  readStatus = 'readable';
  private readonly listeners = new Map<string, ((evt: never) => void)[]>();
  pauses = 0;
  addEventListener(type: string, l: (evt: never) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), l]);
  }
  emit(type: string, evt: unknown = {}): void {
    for (const l of this.listeners.get(type) ?? []) l(evt as never);
  }
  push(data: Uint8Array): void {
    this.emit('message', { data });
  }
  pause(): void {
    this.pauses++;
    this.readStatus = 'paused';
  }
  resume(): void {
    this.readStatus = 'readable';
  }
}

describe('FrameReader', () => {
  const frame = (body: number[]) => Uint8Array.from([...varintBytes(body.length), ...body]);

  it('reassembles frames split anywhere, and pauses while it holds a complete one', async () => {
    const s = new FakeStream();
    const r = new FrameReader(s, 1000);
    const big = Array.from({ length: 300 }, (_, i) => i & 0xff);
    const bytes = Uint8Array.from([...frame([1, 2, 3]), ...frame(big), ...frame([])]);
    s.push(bytes.subarray(0, 1));
    s.push(bytes.subarray(1, 5));
    await Promise.resolve();
    expect(s.readStatus).toBe('paused');
    expect([...(await r.next())!]).toEqual([1, 2, 3]);
    const next = r.next();
    expect(s.readStatus).toBe('readable'); // waiting for an incomplete frame: resumed
    s.push(bytes.subarray(5, 100));
    s.push(bytes.subarray(100));
    expect([...(await next)!]).toEqual(big);
    expect([...(await r.next())!]).toEqual([]);
    s.emit('remoteCloseWrite');
    expect(await r.next()).toBeNull();
    expect(r.bufferedBytes).toBe(0);
  });

  it('refuses a frame announced over the limit before its body arrives', async () => {
    const s = new FakeStream();
    const r = new FrameReader(s, 100);
    s.push(varintBytes(101));
    await expect(r.next()).rejects.toMatchObject({ code: 'TOO_LARGE' });
    const s2 = new FakeStream();
    const r2 = new FrameReader(s2, 100);
    s2.push(Uint8Array.of(0x80, 0x80, 0x80)); // a length prefix that never ends
    await expect(r2.next()).rejects.toMatchObject({ code: 'TOO_LARGE' });
  });

  it('reports a stream that ends inside a frame', async () => {
    const s = new FakeStream();
    const r = new FrameReader(s, 100);
    s.push(Uint8Array.of(5, 1, 2));
    s.emit('close');
    await expect(r.next()).rejects.toMatchObject({ code: 'STREAM_CLOSED' });
  });
});

describe('sync pages', () => {
  it('round-trip, and a page over the requested bounds is MALFORMED', () => {
    const page = { items: [Uint8Array.of(1), Uint8Array.of(2, 3)], nextHeight: 7 };
    const req = { fromHeight: 0, maxItems: 2, maxBytes: 3 };
    expect(decodeSyncPage(encodeSyncPage(page), req)).toEqual(page);
    const last = { items: [], nextHeight: null };
    expect(decodeSyncPage(encodeSyncPage(last), req)).toEqual(last);
    expect(() => decodeSyncPage(encodeSyncPage(page), { ...req, maxItems: 1 })).toThrow(
      LedgerError,
    );
    expect(() => decodeSyncPage(encodeSyncPage(page), { ...req, maxBytes: 2 })).toThrow(
      LedgerError,
    );
  });
});
