/**
 * Runs the load (load.ts) for a node: the signing side runs on a worker thread (load-worker.ts),
 * which signs bundles at the configured rate and flushes each to the durable outbox before posting
 * it here; this side submits them to the node (its mempool, then the network) and reports back
 * which of them it sees pinned.
 *
 * Backpressure: the worker holds until this node has pinned a batch since it started (a sidecar
 * has no use for a node that is not pinning yet: its txs would only pile up), then while this
 * institution's bundles waiting in the mempool reach about two batches' worth of its share
 * (roomOf), or while a bundle the mempool had no room for waits to be submitted again (before anything new, since the bundles after it depend on it);
 * it also pauses itself while maxPendingTxs of its txs wait to be pinned.
 *
 * Pin latency: for every bundle signed in this run, the time from its signing to the pin of the
 * batch that carries it, as this node sees it (the pinned tip is looked at every POLL_MS, so a
 * sample may be up to that much late). Reported per pin as an `own-pinned` event (one sample per
 * tx); bundles taken back from the outbox after a restart have no signing time and no sample.
 *
 * On start, the outbox is compacted to the bundles that are not pinned; those are submitted again
 * (the author in the worker continues from them).
 */
import { Worker } from 'node:worker_threads';
import type { Verdict } from '../ledger/errors.ts';
import type { Microblock } from '../ledger/microblock.ts';
import type { Replica } from '../ledger/replica.ts';
import { decodeBundle, txHashHex } from '../ledger/tx.ts';
import type { BlockRef, Bundle } from '../ledger/types.ts';
import type { InstitutionKeys } from './keys.ts';
import { type LoadOpts, Outbox } from './load.ts';
import type { FromLoadWorker, LoadWorkerInit, ToLoadWorker } from './load-worker.ts';

/** How often the pinned tip is looked at for own bundles. */
const POLL_MS = 20;
/** Own bundles followed for their pin at most (the oldest are forgotten beyond). */
const MAX_TRACKED = 65_536;
const STOP_TIMEOUT_MS = 10_000;

/** What the load reports, besides warnings. */
export interface LoadEvent {
  /** Own bundles seen pinned since the last such event (at most one per pinned height). */
  readonly event: 'own-pinned';
  /** The pinned batch height when they were seen. */
  readonly height: number;
  readonly bundles: number;
  readonly txs: number;
  /**
   * Milliseconds from signing to pin, one per tx of the bundles that were signed in this run
   * (bundles taken back from the outbox after a restart have none).
   */
  readonly latencyMs: readonly number[];
}

export interface LoadRunnerOpts {
  readonly dir: string;
  readonly keys: InstitutionKeys;
  readonly chainId: string;
  readonly patients: readonly BlockRef[];
  readonly fee: number;
  readonly opts: LoadOpts;
  replica(): Replica;
  submit(bundle: Bundle): Verdict;
  warn(code: string, message: string): void;
  /** Milliseconds since the epoch (default Date.now). */
  now?(): number;
  report?(event: LoadEvent): void;
}

interface Tracked {
  readonly bundle: Bundle;
  readonly txIds: readonly string[];
  /** null: taken back from the outbox (signed before this run). */
  readonly signedAt: number | null;
}

export class LoadRunner {
  private readonly o: LoadRunnerOpts;
  private readonly worker: Worker;
  private readonly now: () => number;
  /** Own bundles submitted (or waiting to be) and not seen pinned, in signing order. */
  private tracked: Tracked[] = [];
  /** Signed bundles our own mempool had no room for: submitted again before any new one. */
  private backlog: Bundle[] = [];
  /** The worker holds while this many of our bundles wait in our mempool (half its quota). */
  private readonly room: number;
  /** The worker starts held (load-worker.ts); released once this node pins. */
  private held = true;
  private pinning = false;
  private pendingOwn = 0;
  private seenHeight: number;
  private timer: ReturnType<typeof setInterval> | null = null;
  private stopped: Promise<void> | null = null;

  private constructor(o: LoadRunnerOpts, worker: Worker) {
    this.o = o;
    this.worker = worker;
    this.now = o.now ?? Date.now;
    this.room = roomOf(o.replica(), o.opts);
    this.seenHeight = o.replica().chain.height;
  }

  static async start(o: LoadRunnerOpts): Promise<LoadRunner> {
    const replica = o.replica();
    const ledger = replica.chain.ledger;
    const pinned = (b: Bundle) => b.txs.every((tx) => ledger.isPinnedTx(txHashHex(tx)));
    // Compact the outbox to what is not pinned: the worker takes those back.
    const { outbox, bundles } = await Outbox.open(o.dir);
    const unpinned = bundles.filter((b) => b.institution === o.keys.index && !pinned(b));
    await outbox.rewrite(unpinned);
    await outbox.close();
    if (o.patients.length === 0) o.warn('NO_PATIENTS', 'no registered patients: no load to sign');
    const init: LoadWorkerInit = {
      dir: o.dir,
      keys: {
        index: o.keys.index,
        chameleonKey: o.keys.chameleonKey,
        chameleonTrapdoor: o.keys.chameleonTrapdoor,
        signingSecret: o.keys.signingSecret,
      },
      chainId: o.chainId,
      patients: o.patients,
      fee: o.fee,
      opts: o.opts,
      blocks: blocksOf(replica, o.patients),
    };
    const worker = new Worker(new URL('./load-worker.ts', import.meta.url), { workerData: init });
    const runner = new LoadRunner(o, worker);
    await runner.started();
    for (const b of unpinned) runner.submitNew(b, null);
    runner.timer = setInterval(() => runner.poll(), POLL_MS);
    return runner;
  }

  /** Own txs signed and not pinned yet (as the worker last counted them). */
  pending(): number {
    return this.pendingOwn;
  }

  private post(m: ToLoadWorker): void {
    this.worker.postMessage(m);
  }

  /** Resolves once the worker is ready; wires its messages. */
  private started(): Promise<void> {
    return new Promise((resolve, reject) => {
      let ready = false;
      this.worker.on('message', (m: FromLoadWorker) => {
        if (m.type === 'ready') {
          ready = true;
          this.pendingOwn = m.pending;
          resolve();
        } else if (m.type === 'bundles') {
          this.pendingOwn = m.pending;
          m.bundles.forEach((bytes, k) => {
            this.submitNew(decodeBundle(bytes), m.signedAt[k] ?? null);
          });
          this.updateHold();
        } else if (m.type === 'pending') {
          this.pendingOwn = m.pending;
        } else if (m.type === 'warn') {
          this.o.warn(m.code, m.message);
          if (!ready && m.code === 'LOAD_FAILED') reject(new Error(m.message));
        }
      });
      this.worker.on('error', (err) => {
        this.o.warn('LOAD_FAILED', `load worker: ${err.message}`);
        if (!ready) reject(err);
      });
      this.worker.on('exit', (code) => {
        if (!ready) reject(new Error(`load worker exited with code ${code}`));
        else if (this.stopped === null) this.o.warn('LOAD_FAILED', `load worker exited (${code})`);
      });
    });
  }

  private submitNew(bundle: Bundle, signedAt: number | null): void {
    this.tracked.push({ bundle, txIds: bundle.txs.map(txHashHex), signedAt });
    if (this.tracked.length > MAX_TRACKED) this.tracked.shift();
    if (this.backlog.length > 0) this.backlog.push(bundle);
    else this.submit(bundle);
  }

  /** Submits; a bundle refused for want of room joins the backlog (it must not be skipped). */
  private submit(bundle: Bundle): boolean {
    const v = this.o.submit(bundle);
    if (v.ok || v.error.code === 'REPLAYED_TX') return true;
    if (v.error.code === 'TOO_LARGE') {
      this.backlog.push(bundle);
      return false;
    }
    this.o.warn('BUNDLE_REFUSED', `own bundle refused: ${v.error.code}: ${v.error.message}`);
    return true;
  }

  private updateHold(): void {
    const replica = this.o.replica();
    const waiting = replica.mempool.queues.get(this.o.keys.index)?.length ?? 0;
    const held = !this.pinning || this.backlog.length > 0 || waiting >= this.room;
    if (held !== this.held) {
      this.held = held;
      this.post({ type: 'hold', held });
    }
  }

  /** Re-submits the backlog, and reports own bundles newly pinned (to the worker and as events). */
  private poll(): void {
    if (this.stopped !== null) return;
    const retry = this.backlog.splice(0);
    for (const [k, b] of retry.entries()) {
      if (!this.submit(b)) {
        this.backlog.push(...retry.slice(k + 1));
        break;
      }
    }
    const replica = this.o.replica();
    const height = replica.chain.height;
    if (height !== this.seenHeight) {
      this.seenHeight = height;
      this.pinning = true;
      this.reportPinned(replica);
    }
    this.updateHold();
  }

  private reportPinned(replica: Replica): void {
    const ledger = replica.chain.ledger;
    const t = this.now();
    const ids: string[] = [];
    const latencyMs: number[] = [];
    let bundles = 0;
    const left: Tracked[] = [];
    for (const x of this.tracked) {
      if (!x.txIds.every((id) => ledger.isPinnedTx(id))) {
        left.push(x);
        continue;
      }
      bundles++;
      ids.push(...x.txIds);
      if (x.signedAt !== null) for (const _ of x.txIds) latencyMs.push(t - x.signedAt);
    }
    if (bundles === 0) return;
    this.tracked = left;
    this.post({ type: 'pinned', ids, blocks: blocksOf(replica, this.o.patients) });
    this.o.report?.({
      event: 'own-pinned',
      height: replica.chain.height,
      bundles,
      txs: ids.length,
      latencyMs,
    });
  }

  async stop(): Promise<void> {
    if (this.stopped !== null) return this.stopped;
    this.stopped = (async () => {
      if (this.timer !== null) clearInterval(this.timer);
      this.timer = null;
      const done = new Promise<void>((resolve) => {
        const finish = () => resolve();
        this.worker.on('message', (m: FromLoadWorker) => {
          if (m.type === 'stopped') finish();
        });
        this.worker.once('exit', finish);
        setTimeout(finish, STOP_TIMEOUT_MS).unref();
      });
      this.post({ type: 'stop' });
      await done;
      await this.worker.terminate();
    })();
    return this.stopped;
  }
}

/**
 * How many of its own bundles this institution lets wait in its mempool before it holds: about two
 * batches' worth of its share (maxBatchTxs over the members), and no more than half its quota. More
 * would only lengthen the queue, and so the latency, without pinning more: a batch takes at most
 * that share of an institution's txs while others have txs waiting (Algorithm 2).
 */
function roomOf(replica: Replica, opts: LoadOpts): number {
  const { params, members } = replica.chain.genesis;
  const share = (2 * params.maxBatchTxs) / Math.max(1, members.length) / opts.txsPerBundle;
  const quota = Math.floor(replica.opts.maxBundlesPerInstitution / 2);
  return Math.max(1, Math.min(quota, Math.ceil(share)));
}

/** The pinned state of the given patient blocks. */
function blocksOf(replica: Replica, refs: readonly BlockRef[]): Microblock[] {
  const out: Microblock[] = [];
  for (const ref of refs) {
    const b = replica.chain.ledger.microblocks.get(ref);
    if (b !== undefined) out.push(b);
  }
  return out;
}
