/**
 * The zero-setup queue: a sublevel of the sidecar's own LevelDB (DESIGN section 5). Every state
 * change is one atomic LevelDB batch, and `enqueue` writes its batch with fsync (`syncWrites`), so
 * a group is on disk, whole or not at all, before the promise resolves: a SIGKILL or power loss
 * after that loses nothing. Leases live in memory only: after a restart every job not acked is
 * ready again, which is the redelivery the contract promises.
 *
 * Key layout inside the sublevel (ids are the 32 tx-hash bytes, times ms big-endian so that keys
 * sort by time):
 *   J id                  -> the job record (state, seq, attempts, times, tx, meta, reason)
 *   W be48(seq) id        -> (empty): ready or leased, in delivery order
 *   D be48(readyAt) id    -> (empty): waiting for its retry backoff
 *   F be48(failedAt) id   -> (empty): out of attempts
 *   C id                  -> be48(completedAt): acked, still a duplicate for keepCompletedMs
 *   T be48(completedAt) id-> (empty): the same, by time, for pruning
 * One process owns a LevelDB, and all writes of one queue run one at a time (`serial`), so the
 * duplicate checks and the counters need no further locking.
 */
import { fromHex, toHex } from '../crypto/bytes.ts';
import { decode, encode } from '../ledger/codec.ts';
import type { Db } from '../store/db.ts';
import { be } from '../store/keys.ts';
import { errorText, QueueError } from './errors.ts';
import {
  type AckResult,
  type Delivery,
  defaultQueueOpts,
  type EnqueueResult,
  type FailedJob,
  type FailOutcome,
  type JobMeta,
  type QueueOpts,
  type QueueStats,
  retryDelayMs,
  type TakeOpts,
  type TxQueue,
} from './types.ts';
import {
  checkIds,
  checkJobs,
  checkLimit,
  checkMax,
  checkQueueOpts,
  checkReason,
  checkWaitMs,
  MAX_META_JSON,
  MAX_REASON,
} from './validate.ts';

export interface EmbeddedQueueOpts extends QueueOpts {
  /** fsync each enqueued group (acks and retries are not fsynced: losing one only redelivers). */
  readonly syncWrites: boolean;
  /** The sublevel's name in the shared LevelDB. */
  readonly sublevel: string;
}

export const defaultEmbeddedQueueOpts: EmbeddedQueueOpts = {
  ...defaultQueueOpts,
  syncWrites: true,
  sublevel: 'jq',
};

type Bytes = Uint8Array;
type Space = ReturnType<typeof openSpace>;
type BatchOp = { type: 'put'; key: Bytes; value: Bytes } | { type: 'del'; key: Bytes };

const J = 0x4a;
const W = 0x57;
const D = 0x44;
const F = 0x46;
const C = 0x43;
const T = 0x54;
const ID_BYTES = 32;
const EMPTY = new Uint8Array(0);
const RECORD_VERSION = 1;
const PRUNE_PER_ACK = 1000;

const STATE = { waiting: 0, delayed: 1, failed: 2 } as const;
type State = (typeof STATE)[keyof typeof STATE];

interface JobRecord {
  readonly state: State;
  readonly seq: number;
  readonly attemptsMade: number;
  readonly enqueuedAt: number;
  readonly readyAt: number;
  readonly failedAt: number;
  readonly tx: Bytes;
  readonly meta: string;
  readonly reason: string;
}

function openSpace(db: Db, name: string) {
  return db.sublevel<Bytes, Bytes>(name, { keyEncoding: 'view', valueEncoding: 'view' });
}

function key(prefix: number, ...parts: Bytes[]): Bytes {
  const out = new Uint8Array(1 + parts.reduce((n, p) => n + p.length, 0));
  out[0] = prefix;
  let at = 1;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const be48 = (n: number, what: string) => be(n, 6, what);
const readBe48 = (bytes: Bytes, at: number) => {
  let n = 0;
  for (let k = 0; k < 6; k++) n = n * 256 + bytes[at + k]!;
  return n;
};
/** The id at the end of an index key. */
const idOf = (k: Bytes) => toHex(k.subarray(k.length - ID_BYTES));
/** Every key starting with `prefix`. */
const range = (prefix: number) => ({ gte: Uint8Array.of(prefix), lt: Uint8Array.of(prefix + 1) });

function encodeRecord(r: JobRecord): Bytes {
  return encode((w) =>
    w
      .varint(RECORD_VERSION)
      .u8(r.state)
      .varint(r.seq)
      .varint(r.attemptsMade)
      .varint(r.enqueuedAt)
      .varint(r.readyAt)
      .varint(r.failedAt)
      .bytes(r.tx)
      .string(r.meta)
      .string(r.reason),
  );
}

function decodeRecord(bytes: Bytes, id: string, maxTxBytes: number): JobRecord {
  try {
    return decode(bytes, 'queued job', (r) => {
      const version = r.varint('version');
      if (version !== RECORD_VERSION) r.fail('version', `is ${version}, not ${RECORD_VERSION}`);
      const state = r.u8('state');
      if (state > STATE.failed) r.fail('state', `is ${state}`);
      return {
        state: state as State,
        seq: r.varint('seq'),
        attemptsMade: r.varint('attemptsMade'),
        enqueuedAt: r.varint('enqueuedAt'),
        readyAt: r.varint('readyAt'),
        failedAt: r.varint('failedAt'),
        tx: r.bytes('tx', maxTxBytes),
        meta: r.string('meta', MAX_META_JSON),
        reason: r.string('reason', 4 * MAX_REASON),
      };
    });
  } catch (err) {
    throw new QueueError(
      'CORRUPT',
      `queued job ${id} is unreadable: ${errorText(err)}`,
      { id },
      {
        cause: err,
      },
    );
  }
}

function parseMeta(json: string, id: string): JobMeta {
  try {
    return JSON.parse(json) as JobMeta;
  } catch (err) {
    throw new QueueError(
      'CORRUPT',
      `queued job ${id} has unreadable metadata`,
      { id },
      {
        cause: err,
      },
    );
  }
}

export class EmbeddedQueue implements TxQueue {
  readonly kind = 'embedded' as const;
  private readonly db: Db;
  private readonly space: Space;
  private readonly opts: EmbeddedQueueOpts;
  private readonly now: () => number;
  /** Leased ids and when each lease ends. */
  private readonly leases = new Map<string, number>();
  private readonly waiters = new Set<() => void>();
  private counts = { ready: 0, delayed: 0, failed: 0 };
  private nextSeq = 0;
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(db: Db, opts: EmbeddedQueueOpts, now: () => number) {
    this.db = db;
    this.space = openSpace(db, opts.sublevel);
    this.opts = opts;
    this.now = now;
  }

  /**
   * Opens the queue in `db` (the sidecar's LevelDB, which the caller opens and closes) and counts
   * what it holds. `now` is the clock (ms since the epoch).
   */
  static async open(
    db: Db,
    opts: Partial<EmbeddedQueueOpts> = {},
    now: () => number = Date.now,
  ): Promise<EmbeddedQueue> {
    const full = checkQueueOpts({ ...defaultEmbeddedQueueOpts, ...opts });
    const queue = new EmbeddedQueue(db, full, now);
    await queue.guard(async () => {
      for (const [name, prefix] of [
        ['ready', W],
        ['delayed', D],
        ['failed', F],
      ] as const) {
        for await (const _ of queue.space.keys(range(prefix))) queue.counts[name]++;
      }
      const last = await queue.space.keys({ ...range(W), reverse: true, limit: 1 }).all();
      if (last[0] !== undefined) queue.nextSeq = readBe48(last[0], 1) + 1;
    });
    return queue;
  }

  enqueue(input: readonly unknown[]): Promise<EnqueueResult> {
    this.checkOpen();
    const jobs = checkJobs(input, this.opts);
    return this.serial(async () => {
      const t = this.now();
      const ids = jobs.map((j) => fromHex(j.id));
      const found = await this.space.getMany([
        ...ids.map((id) => key(J, id)),
        ...ids.map((id) => key(C, id)),
      ]);
      const ops: BatchOp[] = [];
      const added: string[] = [];
      const duplicates: string[] = [];
      jobs.forEach((job, n) => {
        const done = found[jobs.length + n];
        const recentlyDone =
          done !== undefined && readBe48(done, 0) + this.opts.keepCompletedMs > t;
        if (found[n] !== undefined || recentlyDone) {
          duplicates.push(job.id);
          return;
        }
        const seq = this.nextSeq++;
        const record: JobRecord = {
          state: STATE.waiting,
          seq,
          attemptsMade: 0,
          enqueuedAt: t,
          readyAt: t,
          failedAt: 0,
          tx: job.tx,
          meta: JSON.stringify(job.meta ?? {}),
          reason: '',
        };
        ops.push({ type: 'put', key: key(J, ids[n]!), value: encodeRecord(record) });
        ops.push({ type: 'put', key: key(W, be48(seq, 'seq'), ids[n]!), value: EMPTY });
        added.push(job.id);
      });
      if (ops.length > 0) {
        // Written through the root so that `sync` reaches LevelDB.
        await this.db.batch(
          ops.map((op) => ({ ...op, sublevel: this.space })),
          { sync: this.opts.syncWrites },
        );
      }
      this.counts.ready += added.length;
      if (added.length > 0) this.wake();
      return { added, duplicates };
    });
  }

  async take(max: number, opts: TakeOpts = {}): Promise<Delivery[]> {
    this.checkOpen();
    const limit = checkMax(max);
    const deadline = this.now() + checkWaitMs(opts.waitMs);
    for (;;) {
      const got = await this.serial(() => this.takeNow(limit));
      if (got.length > 0 || this.closed || this.now() >= deadline) return got;
      await this.waitForWork(deadline);
      if (this.closed) return [];
    }
  }

  ack(input: readonly string[]): Promise<AckResult> {
    this.checkOpen();
    const ids = checkIds(input, 'ids');
    return this.serial(async () => {
      const t = this.now();
      const { live, notLeased } = this.splitLeased(ids, t);
      const records = await this.records(live);
      const ops: BatchOp[] = [];
      const stamp = be48(t, 'completedAt');
      live.forEach((id, n) => {
        const raw = fromHex(id);
        ops.push({ type: 'del', key: key(J, raw) });
        ops.push({ type: 'del', key: key(W, be48(records[n]!.seq, 'seq'), raw) });
        ops.push({ type: 'put', key: key(C, raw), value: stamp });
        ops.push({ type: 'put', key: key(T, stamp, raw), value: EMPTY });
      });
      await this.pruneCompleted(t, ops);
      if (ops.length > 0) await this.space.batch(ops);
      for (const id of live) this.leases.delete(id);
      this.counts.ready -= live.length;
      return { acked: live, notLeased };
    });
  }

  fail(id: string, reason: string): Promise<FailOutcome> {
    this.checkOpen();
    const [checked] = checkIds([id], 'id');
    const why = checkReason(reason);
    return this.serial(async (): Promise<FailOutcome> => {
      const t = this.now();
      const { live } = this.splitLeased([checked!], t);
      if (live.length === 0) return 'not-leased';
      const [record] = await this.records(live);
      const raw = fromHex(checked!);
      const attemptsMade = record!.attemptsMade + 1;
      const out = attemptsMade >= this.opts.maxAttempts;
      const readyAt = out ? t : t + retryDelayMs(this.opts.backoffMs, attemptsMade);
      const next: JobRecord = {
        ...record!,
        state: out ? STATE.failed : STATE.delayed,
        attemptsMade,
        readyAt,
        failedAt: out ? t : 0,
        reason: why,
      };
      await this.space.batch([
        { type: 'del', key: key(W, be48(record!.seq, 'seq'), raw) },
        out
          ? { type: 'put', key: key(F, be48(t, 'failedAt'), raw), value: EMPTY }
          : { type: 'put', key: key(D, be48(readyAt, 'readyAt'), raw), value: EMPTY },
        { type: 'put', key: key(J, raw), value: encodeRecord(next) },
      ]);
      this.leases.delete(checked!);
      this.counts.ready--;
      this.counts[out ? 'failed' : 'delayed']++;
      return out ? 'failed' : 'retrying';
    });
  }

  extend(input: readonly string[]): Promise<AckResult> {
    this.checkOpen();
    const ids = checkIds(input, 'ids');
    return this.serial(async () => {
      const t = this.now();
      const { live, notLeased } = this.splitLeased(ids, t);
      for (const id of live) this.leases.set(id, t + this.opts.leaseMs);
      return { acked: live, notLeased };
    });
  }

  async stats(): Promise<QueueStats> {
    this.checkOpen();
    const t = this.now();
    let active = 0;
    for (const until of this.leases.values()) if (until > t) active++;
    return {
      waiting: this.counts.ready - active,
      active,
      delayed: this.counts.delayed,
      failed: this.counts.failed,
    };
  }

  async failed(limit?: number): Promise<FailedJob[]> {
    this.checkOpen();
    const n = checkLimit(limit);
    return this.guard(async () => {
      const keys = await this.space.keys({ ...range(F), limit: n }).all();
      const ids = keys.map(idOf);
      const records = await this.records(ids);
      return ids.map((id, k) => ({
        id,
        reason: records[k]!.reason,
        attemptsMade: records[k]!.attemptsMade,
        failedAt: records[k]!.failedAt,
      }));
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.wake();
    await this.tail.catch(() => {});
    this.leases.clear();
  }

  /** Promotes due retries, then leases up to `max` ready jobs in seq order. */
  private async takeNow(max: number): Promise<Delivery[]> {
    const t = this.now();
    await this.promoteDue(t);
    for (const [id, until] of this.leases) if (until <= t) this.leases.delete(id);
    const ids: string[] = [];
    for await (const k of this.space.keys(range(W))) {
      const id = idOf(k);
      if (this.leases.has(id)) continue;
      ids.push(id);
      if (ids.length === max) break;
    }
    const records = await this.records(ids);
    return ids.map((id, n) => {
      const r = records[n]!;
      this.leases.set(id, t + this.opts.leaseMs);
      return {
        id,
        tx: r.tx,
        meta: parseMeta(r.meta, id),
        attemptsMade: r.attemptsMade,
        enqueuedAt: r.enqueuedAt,
      };
    });
  }

  /** Moves every retry due at `t` to the back of the ready order. */
  private async promoteDue(t: number): Promise<void> {
    const due = await this.space
      .keys({ gte: Uint8Array.of(D), lt: key(D, be48(t + 1, 't')) })
      .all();
    if (due.length === 0) return;
    const ids = due.map(idOf);
    const records = await this.records(ids);
    const ops: BatchOp[] = [];
    ids.forEach((id, n) => {
      const raw = fromHex(id);
      const seq = this.nextSeq++;
      const next: JobRecord = { ...records[n]!, state: STATE.waiting, seq };
      ops.push({ type: 'del', key: due[n]! });
      ops.push({ type: 'put', key: key(W, be48(seq, 'seq'), raw), value: EMPTY });
      ops.push({ type: 'put', key: key(J, raw), value: encodeRecord(next) });
    });
    await this.space.batch(ops);
    this.counts.delayed -= ids.length;
    this.counts.ready += ids.length;
  }

  /** Adds to `ops` the removal of completion markers older than keepCompletedMs (bounded). */
  private async pruneCompleted(t: number, ops: BatchOp[]): Promise<void> {
    const cutoff = t - this.opts.keepCompletedMs;
    if (cutoff <= 0) return;
    const old = await this.space
      .keys({ gte: Uint8Array.of(T), lt: key(T, be48(cutoff, 'cutoff')), limit: PRUNE_PER_ACK })
      .all();
    if (old.length === 0) return;
    const markers = await this.space.getMany(old.map((k) => key(C, k.subarray(7))));
    old.forEach((k, n) => {
      ops.push({ type: 'del', key: k });
      // A later ack of the same id (enqueued again once this one expired) rewrote the marker.
      const marker = markers[n];
      if (marker !== undefined && readBe48(marker, 0) === readBe48(k, 1)) {
        ops.push({ type: 'del', key: key(C, k.subarray(7)) });
      }
    });
  }

  private async records(ids: readonly string[]): Promise<JobRecord[]> {
    if (ids.length === 0) return [];
    const values = await this.space.getMany(ids.map((id) => key(J, fromHex(id))));
    return values.map((v, n) => {
      if (v === undefined) {
        throw new QueueError('CORRUPT', `queued job ${ids[n]} is indexed but missing`, {
          id: ids[n],
        });
      }
      return decodeRecord(v, ids[n]!, this.opts.maxTxBytes);
    });
  }

  private splitLeased(ids: readonly string[], t: number) {
    const live: string[] = [];
    const notLeased: string[] = [];
    for (const id of new Set(ids)) {
      const until = this.leases.get(id);
      (until !== undefined && until > t ? live : notLeased).push(id);
    }
    return { live, notLeased };
  }

  /** Resolves when work may be there: an enqueue, a retry or lease coming due, or `deadline`. */
  private async waitForWork(deadline: number): Promise<void> {
    let wakeAt = deadline;
    for (const until of this.leases.values()) wakeAt = Math.min(wakeAt, until);
    const next = await this.guard(() => this.space.keys({ ...range(D), limit: 1 }).all());
    if (next[0] !== undefined) wakeAt = Math.min(wakeAt, readBe48(next[0], 1));
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(1, wakeAt - this.now()));
      this.waiters.add(done);
    });
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  private checkOpen(): void {
    if (this.closed) throw new QueueError('CLOSED', 'the queue is closed');
  }

  /** Runs `f` after every earlier write of this queue, storage errors made QueueErrors. */
  private serial<T>(f: () => Promise<T>): Promise<T> {
    const run = this.tail.then(
      () => this.guard(f),
      () => this.guard(f),
    );
    this.tail = run.catch(() => {});
    return run;
  }

  private async guard<T>(f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (err) {
      if (err instanceof QueueError) throw err;
      throw new QueueError(
        'UNAVAILABLE',
        `the queue's LevelDB failed: ${errorText(err)}`,
        {},
        { cause: err, retryAfterMs: 1000 },
      );
    }
  }
}
