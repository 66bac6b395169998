/**
 * The queue on Redis, through BullMQ (used when REDIS_URL is set; DESIGN section 5). What BullMQ
 * gives and what this adds:
 * - All or none: `Queue.addBulk` is NOT atomic in BullMQ 6 (it sends one script call per job in a
 *   pipeline; bullmq issue #3451). `FlowProducer.addBulk` sends them in one MULTI/EXEC, which Redis
 *   runs as one unit and writes to its AOF as one unit, so a group is enqueued with that: jobs
 *   without children are ordinary jobs of the queue.
 * - Duplicates: a job id that exists makes BullMQ's add script return that id without writing, and
 *   the reply does not say so. Each enqueue therefore names its jobs with a fresh nonce and reads
 *   the stored names back: a job whose stored name is not ours was there before. Exact even when
 *   two sidecars race on one id.
 * - Durability is Redis's: a group is on disk when EXEC returns only with `appendonly yes` and
 *   `appendfsync always` (see `persistence`, read at open).
 * - Redis away: the producer connection has no offline queue (`enableOfflineQueue: false`), so a
 *   command while disconnected fails at once instead of waiting for a reconnect, and a connected but
 *   silent server fails after `commandTimeoutMs`; both surface as UNAVAILABLE (retryable), which
 *   the HTTP edge answers with 503 and Retry-After. A failed enqueue may still have been applied
 *   (the reply was lost): the retry then reports duplicates, never a second job.
 * - Leases: jobs are fetched by hand (`Worker.getNextJob` with no processor), each locked for
 *   `leaseMs` with this queue's token. A lock is never renewed behind the caller's back (that is
 *   what `extend` is for); the worker's stalled-job check puts expired ones back into `wait`, and
 *   `maxStalledCount` is unbounded so that a job is never failed only because consumers died.
 *   The consumer connection is blocking-style (`maxRetriesPerRequest: null`, offline queue on): it
 *   waits out Redis outages instead of failing.
 * - Retries: job options `attempts` and exponential `backoff`; failed jobs are kept
 *   (`removeOnFail: false`), completed ones for `keepCompletedMs` (`removeOnComplete.age`), which
 *   is also how long an acked id counts as a duplicate.
 */
import { randomUUID } from 'node:crypto';
import { FlowProducer, type Job, Queue, UnrecoverableError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
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
} from './validate.ts';

export interface BullQueueOpts extends QueueOpts {
  /** Prefix of every Redis key of the queue. */
  readonly prefix: string;
  readonly queueName: string;
  /** A producer command unanswered for this long fails UNAVAILABLE. */
  readonly commandTimeoutMs: number;
  /** `open` fails UNAVAILABLE when Redis cannot be reached within this. */
  readonly connectTimeoutMs: number;
  /**
   * How often expired leases are looked for: an expired job is delivered again within about 2x
   * this after its lease ends. BullMQ lets one check run per interval across all consumers, with
   * the interval of the consumer that ran it, so every sidecar on one queue should use the same.
   */
  readonly stalledIntervalMs: number;
  /** How often an idle `take` asks Redis again while it waits. */
  readonly pollMs: number;
  /** Longest pause between reconnection attempts. */
  readonly reconnectMaxMs: number;
  /** Connection and BullMQ errors that no call returned (for logging); ignored by default. */
  readonly onError: (err: Error) => void;
}

export const defaultBullQueueOpts: BullQueueOpts = {
  ...defaultQueueOpts,
  prefix: 'spchain',
  queueName: 'txs',
  commandTimeoutMs: 5000,
  connectTimeoutMs: 10_000,
  stalledIntervalMs: 15_000,
  pollMs: 100,
  reconnectMaxMs: 2000,
  onError: () => {},
};

/** What the server said about its persistence (null when CONFIG is not allowed). */
export interface RedisPersistence {
  readonly appendonly: string;
  readonly appendfsync: string;
}

interface JobData {
  readonly tx: string;
  readonly meta: JobMeta;
}

/** Jobs fetched concurrently per round trip in `take`. */
const FETCH_ROUND = 64;
/** MAX_STALLED: a job is put back however often its consumers die. */
const MAX_STALLED = 1_000_000_000;

/** The URL with any user name and password replaced, for messages. */
export function redactRedisUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.username) u.username = '***';
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable REDIS_URL)';
  }
}

function checkRedisUrl(url: unknown): string {
  if (typeof url !== 'string') throw new QueueError('CONFIG', 'REDIS_URL must be a string');
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new QueueError('CONFIG', 'REDIS_URL is not a URL (expected redis://host:port)');
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new QueueError(
      'CONFIG',
      `REDIS_URL must start with redis:// or rediss://, not ${u.protocol}//`,
    );
  }
  return url;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Rejects UNAVAILABLE when `p` has not settled within `ms` (its late outcome is dropped). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new QueueError(
            'UNAVAILABLE',
            `Redis did not answer ${what} within ${ms} ms`,
            {},
            {
              retryAfterMs: 1000,
            },
          ),
        ),
      ms,
    );
  });
  p.catch(() => {});
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** The numeric codes BullMQ's scripts give for a job that is not (or no longer) ours. */
function isLeaseLost(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'number' && code < 0;
}

export class BullQueue implements TxQueue {
  readonly kind = 'bullmq' as const;
  readonly persistence: RedisPersistence | null;
  private readonly opts: BullQueueOpts;
  private readonly url: string;
  private readonly producer: Redis;
  private readonly queue: Queue;
  private readonly flow: FlowProducer;
  /** This consumer's lock token. */
  private readonly token = randomUUID();
  private readonly leased = new Map<string, Job>();
  private readonly inflight = new Set<Promise<unknown>>();
  private worker: Promise<Worker> | null = null;
  private closed = false;

  private constructor(
    opts: BullQueueOpts,
    url: string,
    producer: Redis,
    queue: Queue,
    flow: FlowProducer,
    persistence: RedisPersistence | null,
  ) {
    this.opts = opts;
    this.url = url;
    this.producer = producer;
    this.queue = queue;
    this.flow = flow;
    this.persistence = persistence;
  }

  /** Connects to `url` (REDIS_URL); UNAVAILABLE when Redis is not reachable in connectTimeoutMs. */
  static async open(url: string, opts: Partial<BullQueueOpts> = {}): Promise<BullQueue> {
    const full = checkQueueOpts({ ...defaultBullQueueOpts, ...opts });
    checkRedisUrl(url);
    const producer = new Redis(url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: full.commandTimeoutMs,
      connectTimeout: full.connectTimeoutMs,
      retryStrategy: (times) => Math.min(100 * 2 ** times, full.reconnectMaxMs),
    });
    producer.on('error', full.onError);
    try {
      await within(producer.connect(), full.connectTimeoutMs, 'the first connection');
    } catch (err) {
      producer.disconnect();
      throw new QueueError(
        'UNAVAILABLE',
        `cannot reach Redis at ${redactRedisUrl(url)}: ${errorText(err)}`,
        {},
        { cause: err, retryAfterMs: 5000 },
      );
    }
    const queue = new Queue(full.queueName, { connection: producer, prefix: full.prefix });
    const flow = new FlowProducer({ connection: producer, prefix: full.prefix });
    queue.on('error', full.onError);
    flow.on('error', full.onError);
    let persistence: RedisPersistence | null = null;
    try {
      await within(queue.waitUntilReady(), full.connectTimeoutMs, 'the queue set-up');
      const [, appendonly] = (await producer.config('GET', 'appendonly')) as string[];
      const [, appendfsync] = (await producer.config('GET', 'appendfsync')) as string[];
      persistence = { appendonly: String(appendonly), appendfsync: String(appendfsync) };
    } catch (err) {
      if (err instanceof QueueError) {
        await Promise.allSettled([queue.close(), flow.close()]);
        producer.disconnect();
        throw err;
      }
      // CONFIG may be disabled (managed Redis): the persistence stays unknown.
    }
    return new BullQueue(full, url, producer, queue, flow, persistence);
  }

  enqueue(input: readonly unknown[]): Promise<EnqueueResult> {
    this.checkOpen();
    const jobs = checkJobs(input, this.opts);
    return this.track(async () => {
      const nonce = `enq:${randomUUID()}`;
      const { prefix, queueName } = this.opts;
      const flows = jobs.map((job) => ({
        name: nonce,
        queueName,
        prefix,
        data: { tx: Buffer.from(job.tx).toString('base64'), meta: job.meta ?? {} } as JobData,
        opts: {
          jobId: job.id,
          attempts: this.opts.maxAttempts,
          backoff: { type: 'exponential', delay: this.opts.backoffMs },
          removeOnComplete: { age: Math.ceil(this.opts.keepCompletedMs / 1000) },
          removeOnFail: false,
        },
      }));
      const names = await this.redis('enqueue', async () => {
        const added = await this.flow.addBulk(flows);
        if (added === undefined) throw new QueueError('CLOSED', 'the queue is closed');
        const read = this.producer.pipeline();
        for (const job of jobs) read.hget(`${prefix}:${queueName}:${job.id}`, 'name');
        return (await read.exec()) ?? [];
      });
      const added: string[] = [];
      const duplicates: string[] = [];
      jobs.forEach((job, n) => {
        const [err, name] = names[n] ?? [new Error('no reply')];
        // Redis went away between the add and the read-back: the same retryable outage, naming
        // the server, as a failed call.
        if (err) throw this.unavailable('enqueue', err);
        (name === nonce ? added : duplicates).push(job.id);
      });
      return { added, duplicates };
    });
  }

  async take(max: number, opts: TakeOpts = {}): Promise<Delivery[]> {
    this.checkOpen();
    const limit = checkMax(max);
    const deadline = Date.now() + checkWaitMs(opts.waitMs);
    const worker = await this.consumer();
    return this.track(async () => {
      let first: Job | undefined;
      for (;;) {
        first = await this.redis('take', () => worker.getNextJob(this.token, { block: false }));
        if (first || this.closed || Date.now() >= deadline) break;
        await sleep(Math.min(this.opts.pollMs, deadline - Date.now()));
      }
      if (!first) return [];
      // The rest in rounds of concurrent fetches (one round trip each; Redis runs the fetch scripts
      // one after another, in order), until a round comes back short.
      const jobs = [first];
      while (jobs.length < limit && !this.closed) {
        const round = Math.min(FETCH_ROUND, limit - jobs.length);
        const got = await this.redis('take', () =>
          Promise.all(
            Array.from({ length: round }, () => worker.getNextJob(this.token, { block: false })),
          ),
        );
        const found = got.filter((job): job is Job => job !== undefined);
        jobs.push(...found);
        if (found.length < round) break;
      }
      const out: Delivery[] = [];
      for (const job of jobs) {
        const delivery = await this.toDelivery(job);
        if (delivery) out.push(delivery);
      }
      return out;
    });
  }

  ack(input: readonly string[]): Promise<AckResult> {
    this.checkOpen();
    const ids = [...new Set(checkIds(input, 'ids'))];
    return this.track(() =>
      this.eachLeased(ids, (job) => job.moveToCompleted(null, this.token, false), true),
    );
  }

  fail(id: string, reason: string): Promise<FailOutcome> {
    this.checkOpen();
    const [checked] = checkIds([id], 'id');
    const why = checkReason(reason);
    return this.track(async (): Promise<FailOutcome> => {
      const job = this.leased.get(checked!);
      if (!job) return 'not-leased';
      const out = job.attemptsMade + 1 >= this.opts.maxAttempts;
      const err = new Error(why);
      err.stack = why;
      this.leased.delete(checked!);
      try {
        await within(job.moveToFailed(err, this.token, false), this.opts.commandTimeoutMs, 'fail');
      } catch (e) {
        if (isLeaseLost(e)) return 'not-leased';
        throw this.unavailable('fail', e);
      }
      return out ? 'failed' : 'retrying';
    });
  }

  extend(input: readonly string[]): Promise<AckResult> {
    this.checkOpen();
    const ids = [...new Set(checkIds(input, 'ids'))];
    return this.track(() =>
      this.eachLeased(
        ids,
        async (job) => {
          const ok = await job.extendLock(this.token, this.opts.leaseMs);
          if (Number(ok) !== 1) throw Object.assign(new Error('lock lost'), { code: -2 });
        },
        false,
      ),
    );
  }

  async stats(): Promise<QueueStats> {
    this.checkOpen();
    const c = await this.redis('stats', () =>
      this.queue.getJobCounts('wait', 'prioritized', 'active', 'delayed', 'failed'),
    );
    return {
      waiting: (c.wait ?? 0) + (c.prioritized ?? 0),
      active: c.active ?? 0,
      delayed: c.delayed ?? 0,
      failed: c.failed ?? 0,
    };
  }

  async failed(limit?: number): Promise<FailedJob[]> {
    this.checkOpen();
    const n = checkLimit(limit);
    const jobs = await this.redis('failed', () => this.queue.getJobs(['failed'], 0, n - 1, true));
    return jobs
      .filter((job): job is Job => job !== undefined && job !== null)
      .map((job) => ({
        id: String(job.id),
        reason: job.failedReason ?? '',
        attemptsMade: job.attemptsMade,
        failedAt: job.finishedOn ?? 0,
      }));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // In-flight calls get the command timeout to finish; closing never waits on Redis for longer.
    await within(Promise.allSettled([...this.inflight]), this.opts.commandTimeoutMs, 'close').catch(
      () => undefined,
    );
    this.leased.clear();
    if (this.worker) {
      const worker = await this.worker.catch(() => null);
      if (worker) {
        // worker.disconnect() waits for the connection's end, which a dead server may never send.
        await within(worker.close(), this.opts.commandTimeoutMs, 'close').catch(() =>
          within(worker.disconnect(), this.opts.commandTimeoutMs, 'close').catch(() => undefined),
        );
      }
    }
    await Promise.allSettled([
      within(this.flow.close(), this.opts.commandTimeoutMs, 'close'),
      within(this.queue.close(), this.opts.commandTimeoutMs, 'close'),
    ]);
    this.producer.disconnect();
  }

  /** Removes every key of this queue from Redis (for tests and decommissioning). */
  async obliterate(): Promise<void> {
    await this.redis('obliterate', () => this.queue.obliterate({ force: true }));
  }

  /** Runs `f` on each leased job; lease errors put the id in notLeased, others throw. */
  private async eachLeased(
    ids: readonly string[],
    f: (job: Job) => Promise<unknown>,
    release: boolean,
  ): Promise<AckResult> {
    const acked: string[] = [];
    const notLeased: string[] = [];
    const results = await Promise.allSettled(
      ids.map(async (id) => {
        const job = this.leased.get(id);
        if (!job) return false;
        try {
          await within(f(job), this.opts.commandTimeoutMs, 'the lease update');
          if (release) this.leased.delete(id);
          return true;
        } catch (err) {
          if (!isLeaseLost(err)) throw err;
          this.leased.delete(id);
          return false;
        }
      }),
    );
    results.forEach((r, n) => {
      if (r.status === 'fulfilled') (r.value ? acked : notLeased).push(ids[n]!);
    });
    const failure = results.find((r) => r.status === 'rejected');
    if (failure) {
      throw this.unavailable('ack', (failure as PromiseRejectedResult).reason);
    }
    return { acked, notLeased };
  }

  private async toDelivery(job: Job): Promise<Delivery | null> {
    const id = String(job.id);
    const data = job.data as Partial<JobData> | undefined;
    if (
      typeof data?.tx !== 'string' ||
      typeof data.meta !== 'object' ||
      data.meta === null ||
      Array.isArray(data.meta)
    ) {
      // Not written by this module: kept as failed for inspection rather than retried forever.
      await this.redis('fail', () =>
        job.moveToFailed(new UnrecoverableError('unreadable job data'), this.token, false),
      );
      return null;
    }
    this.leased.set(id, job);
    return {
      id,
      tx: new Uint8Array(Buffer.from(data.tx, 'base64')),
      meta: data.meta,
      attemptsMade: job.attemptsMade,
      enqueuedAt: job.timestamp,
    };
  }

  /** The consumer side, made on first use (a producer-only sidecar opens no blocking connection). */
  private consumer(): Promise<Worker> {
    this.worker ??= (async () => {
      const o = this.opts;
      const worker = new Worker(o.queueName, null, {
        connection: {
          url: this.url,
          maxRetriesPerRequest: null,
          connectTimeout: o.connectTimeoutMs,
          retryStrategy: (times: number) => Math.min(100 * 2 ** times, o.reconnectMaxMs),
        },
        prefix: o.prefix,
        autorun: false,
        lockDuration: o.leaseMs,
        stalledInterval: o.stalledIntervalMs,
        maxStalledCount: MAX_STALLED,
      });
      worker.on('error', o.onError);
      await this.redis('consumer set-up', async () => {
        await within(worker.waitUntilReady(), o.connectTimeoutMs, 'the consumer set-up');
        await worker.startStalledCheckTimer();
      });
      return worker;
    })();
    this.worker.catch(() => {
      this.worker = null;
    });
    return this.worker;
  }

  /** Runs a Redis call, any failure as UNAVAILABLE (QueueErrors pass through). */
  private async redis<T>(what: string, f: () => Promise<T>): Promise<T> {
    try {
      return await within(f(), this.opts.commandTimeoutMs, what);
    } catch (err) {
      throw this.unavailable(what, err);
    }
  }

  private unavailable(what: string, err: unknown): QueueError {
    if (err instanceof QueueError) return err;
    return new QueueError(
      'UNAVAILABLE',
      `Redis at ${redactRedisUrl(this.url)} failed during ${what}: ${errorText(err)}`,
      {},
      { cause: err, retryAfterMs: 1000 },
    );
  }

  private track<T>(f: () => Promise<T>): Promise<T> {
    const p = f();
    this.inflight.add(p);
    p.then(
      () => this.inflight.delete(p),
      () => this.inflight.delete(p),
    );
    return p;
  }

  private checkOpen(): void {
    if (this.closed) throw new QueueError('CLOSED', 'the queue is closed');
  }
}
