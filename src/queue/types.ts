/**
 * The sidecar's durable tx queue (DESIGN section 5, "queue"): between "the EHR got its answer" and
 * "the node's mempool took the tx" every signed medical/label tx waits here. Two implementations
 * keep one contract (test/queue/contract.ts): BullQueue on Redis when REDIS_URL is set, and
 * EmbeddedQueue on the sidecar's own LevelDB otherwise.
 *
 * The contract:
 * - `enqueue(jobs)` takes a group (the txs of one FHIR transaction bundle) all or none, and resolves
 *   only once the group is durable (fsynced LevelDB batch; for Redis, as durable as the server's
 *   persistence makes it: appendonly + appendfsync always). A job's id is its tx hash: enqueueing an
 *   id the queue already holds (waiting, active, delayed, failed, or completed within
 *   `keepCompletedMs`) adds nothing and is reported in `duplicates`.
 * - Delivery is at least once. Jobs are leased by `take`; a lease not acked within `leaseMs` (the
 *   consumer died, or is slow and did not `extend`) ends and the job is delivered again, and every
 *   job not acked before a crash of the consumer is delivered again after restart.
 * - Order: first deliveries come in enqueue order, a group's jobs consecutively in the order given.
 *   Retries and redeliveries come when due, so they may overtake or trail newer jobs.
 * - `fail` counts an attempt: the job comes back after `backoffMs * 2^(attempts - 1)`, and after
 *   `maxAttempts` attempts it is kept as failed (listed by `failed()`, counted by `stats()`).
 *   A lease that merely expires is not an attempt.
 *
 * Why pull (`take`/`ack`/`fail`) rather than `process(handler)`: the worker signs one node Bundle
 * from many txs and submits it to the mempool in one call, so it needs the batch in its hands, and
 * may ack some txs of a bundle and fail others. The worker's concurrency bound is simply how many
 * leases it holds (how many `take` calls it has outstanding, times `max`).
 */

/** Small, flat metadata carried with a job (e.g. the record's vault key); never patient data. */
export type JobMeta = Readonly<Record<string, string | number | boolean>>;

export interface TxJob {
  /** The tx hash, 64 lowercase hex characters. */
  readonly id: string;
  /** The encoded, signed tx. */
  readonly tx: Uint8Array;
  readonly meta?: JobMeta;
}

export interface EnqueueResult {
  /** Ids newly queued, in the order given. */
  readonly added: readonly string[];
  /** Ids the queue already held: nothing was written for them. */
  readonly duplicates: readonly string[];
}

/** A leased job. */
export interface Delivery {
  readonly id: string;
  readonly tx: Uint8Array;
  readonly meta: JobMeta;
  /** Failed attempts before this delivery (0 on the first try). */
  readonly attemptsMade: number;
  /** When the job was first enqueued (ms since the epoch). */
  readonly enqueuedAt: number;
}

export interface AckResult {
  readonly acked: readonly string[];
  /**
   * Ids this consumer does not hold a live lease on (never taken, already acked, or the lease
   * expired): nothing was changed for them, and a job among them will be delivered again.
   */
  readonly notLeased: readonly string[];
}

export type FailOutcome = 'retrying' | 'failed' | 'not-leased';

export interface QueueStats {
  /** Ready to be taken now. */
  readonly waiting: number;
  /** Leased and not yet acked. */
  readonly active: number;
  /** Waiting for their retry backoff to pass. */
  readonly delayed: number;
  /** Out of attempts; kept for inspection. */
  readonly failed: number;
}

export interface FailedJob {
  readonly id: string;
  readonly reason: string;
  readonly attemptsMade: number;
  readonly failedAt: number;
}

export interface TakeOpts {
  /** How long to wait for a first job when none is ready (0: do not wait). */
  readonly waitMs?: number;
}

export interface TxQueue {
  readonly kind: 'bullmq' | 'embedded';
  /** Adds a group of jobs atomically; resolves once durable. */
  enqueue(jobs: readonly TxJob[]): Promise<EnqueueResult>;
  /** Leases up to `max` ready jobs, waiting up to `waitMs` for the first. */
  take(max: number, opts?: TakeOpts): Promise<Delivery[]>;
  /** Completes leased jobs: they are done and will not be delivered again. */
  ack(ids: readonly string[]): Promise<AckResult>;
  /** Gives up on a leased job for now, counting an attempt; `reason` is kept (no patient data). */
  fail(id: string, reason: string): Promise<FailOutcome>;
  /** Renews leases for another `leaseMs` (for a worker that acks only when the tx is pinned). */
  extend(ids: readonly string[]): Promise<AckResult>;
  stats(): Promise<QueueStats>;
  /** Failed jobs, oldest first. */
  failed(limit?: number): Promise<FailedJob[]>;
  /** Stops: waits for calls in flight, then refuses new ones (CLOSED); leases are dropped. */
  close(): Promise<void>;
}

export interface QueueOpts {
  /** A taken job not acked (or extended) within this is delivered again. */
  readonly leaseMs: number;
  readonly maxAttempts: number;
  /** The first retry's delay; each further retry doubles it. */
  readonly backoffMs: number;
  /** How long an acked job's id still counts as a duplicate. */
  readonly keepCompletedMs: number;
  /** Input bounds: jobs per group and bytes per tx. */
  readonly maxGroupJobs: number;
  readonly maxTxBytes: number;
}

export const defaultQueueOpts: QueueOpts = {
  leaseMs: 30_000,
  maxAttempts: 10,
  backoffMs: 1000,
  keepCompletedMs: 24 * 3600_000,
  maxGroupJobs: 10_000,
  maxTxBytes: 16 * 1024,
};

/** The delay before the retry that follows `attemptsMade` failed attempts (BullMQ's exponential). */
export function retryDelayMs(backoffMs: number, attemptsMade: number): number {
  return Math.round(2 ** (attemptsMade - 1) * backoffMs);
}
