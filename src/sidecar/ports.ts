/**
 * What the sidecar core needs from the parts around it, and no more (Lodestar's "ask only for
 * what you need"). The node's LedgerStore, SpchainNode and the queues of src/queue (TxQueue)
 * satisfy these as they are; the composition root passes them in.
 */
import type { Verdict } from '../ledger/errors.ts';
import type { Microblock } from '../ledger/microblock.ts';
import type { Bundle, Bytes, Certificate } from '../ledger/types.ts';
import type { TxLocation } from '../store/values.ts';

/** One signed tx on its way to the node: id = tx hash (64 lowercase hex), tx = encodeTx. */
export interface TxJob {
  readonly id: string;
  readonly tx: Uint8Array;
}

/** The producer side of the tx queue: idempotent by job id, resolves once the jobs are durable. */
export interface EnqueuePort {
  enqueue(jobs: readonly TxJob[]): Promise<unknown>;
}

/** The consumer side of the tx queue (at-least-once: a job not acked is delivered again). */
export interface JobSource {
  take(max: number, opts?: { waitMs?: number }): Promise<readonly TxJob[]>;
  ack(ids: readonly string[]): Promise<unknown>;
  /** Gives up on a job for now (it comes back after a backoff); `reason` holds no patient data. */
  fail(id: string, reason: string): Promise<unknown>;
  /** Renews leases while the worker keeps the jobs in hand. */
  extend(ids: readonly string[]): Promise<unknown>;
}

/** The node: its mempool takes a signed bundle of this institution's txs, or says why not. */
export interface NodePort {
  submitBundle(bundle: Bundle): Verdict;
}

/** Reads of the pinned ledger (the node's LedgerStore). */
export interface PinnedLedger {
  getMicroblockByIdHash(idHash: Bytes): Promise<Microblock | undefined>;
  getTxLocation(hash: Bytes): Promise<TxLocation | undefined>;
  getCertificate(kind: 'batch', height: number): Promise<Certificate | undefined>;
}

/** Where operational warnings go: a code and a message, never patient data. */
export type Warn = (code: string, message: string) => void;
