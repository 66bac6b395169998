/**
 * Runs the load (load.ts) on a timer: every txsPerBundle / txPerSecond seconds the author signs a
 * bundle, the outbox flushes it to disk, and only then is it submitted to the node. Signing pauses
 * while maxPendingTxs of the institution's txs wait to be pinned, or while its bundles fill half of
 * its mempool quota (backpressure, bounded memory); a bundle the mempool had no room for is
 * submitted again before anything new, since the bundles after it depend on it. The outbox is
 * rewritten with only the unpinned bundles once it holds many more records.
 */

import { toHex } from '../crypto/bytes.ts';
import type { RandomBytes } from '../crypto/random.ts';
import type { Verdict } from '../ledger/errors.ts';
import type { Replica } from '../ledger/replica.ts';
import { txHash } from '../ledger/tx.ts';
import type { BlockRef, Bundle } from '../ledger/types.ts';
import { isNodeError } from './errors.ts';
import type { InstitutionKeys } from './keys.ts';
import { Author, type LoadOpts, Outbox } from './load.ts';

/** Rewrite the outbox once it holds this many records more than are unpinned. */
const COMPACT_SLACK = 512;

export interface LoadRunnerOpts {
  readonly dir: string;
  readonly keys: InstitutionKeys;
  readonly chainId: string;
  readonly patients: readonly BlockRef[];
  readonly fee: number;
  readonly opts: LoadOpts;
  readonly random: RandomBytes;
  replica(): Replica;
  submit(bundle: Bundle): Verdict;
  warn(code: string, message: string): void;
}

export class LoadRunner {
  private readonly o: LoadRunnerOpts;
  private readonly author: Author;
  private readonly outbox: Outbox;
  /** Bundles signed and not (known to be) pinned, in signing order. */
  private unpinned: Bundle[];
  private timer: ReturnType<typeof setInterval> | null = null;
  private busy: Promise<void> | null = null;
  private paused = false;
  /** Signed bundles our own mempool had no room for: submitted again before any new one. */
  private backlog: Bundle[] = [];
  /** Signing pauses while this many of our bundles wait in our mempool (half its cap). */
  private room = 1;

  private constructor(o: LoadRunnerOpts, author: Author, outbox: Outbox, unpinned: Bundle[]) {
    this.o = o;
    this.author = author;
    this.outbox = outbox;
    this.unpinned = unpinned;
  }

  static async start(o: LoadRunnerOpts): Promise<LoadRunner> {
    const { outbox, bundles } = await Outbox.open(o.dir);
    const author = new Author({
      keys: o.keys,
      chainId: o.chainId,
      patients: o.patients,
      fee: o.fee,
      random: o.random,
    });
    const unpinned = author.restore(bundles, o.replica());
    const runner = new LoadRunner(o, author, outbox, unpinned);
    for (const b of unpinned) runner.submit(b);
    runner.room = Math.max(1, Math.floor(o.replica().opts.maxBundlesPerInstitution / 2));
    if (o.patients.length === 0) o.warn('NO_PATIENTS', 'no registered patients: no load to sign');
    const everyMs = Math.max(1, Math.round((1000 * o.opts.txsPerBundle) / o.opts.txPerSecond));
    runner.timer = setInterval(() => runner.tick(), everyMs);
    return runner;
  }

  /** Own txs signed and not pinned yet. */
  pending(): number {
    return this.author.pendingCount(this.o.replica());
  }

  /** Submits; a bundle refused for want of room joins the backlog (it must not be skipped). */
  private submit(bundle: Bundle): void {
    const v = this.o.submit(bundle);
    if (v.ok || v.error.code === 'REPLAYED_TX') return;
    if (v.error.code === 'TOO_LARGE') {
      this.backlog.push(bundle);
      return;
    }
    this.o.warn('BUNDLE_REFUSED', `own bundle refused: ${v.error.code}: ${v.error.message}`);
  }

  private tick(): void {
    if (this.busy !== null) return;
    this.busy = this.produce()
      .catch((err) => {
        if (!isNodeError(err, 'STOPPED')) this.o.warn('LOAD_FAILED', (err as Error).message);
      })
      .finally(() => {
        this.busy = null;
      });
  }

  private async produce(): Promise<void> {
    const replica = this.o.replica();
    const retry = this.backlog.splice(0);
    for (const b of retry) this.submit(b);
    const waiting = replica.mempool.queues.get(this.o.keys.index)?.length ?? 0;
    if (this.backlog.length > 0 || waiting >= this.room) return;
    if (this.author.pendingCount(replica) >= this.o.opts.maxPendingTxs) {
      if (!this.paused) this.o.warn('LOAD_PAUSED', 'too many own txs wait to be pinned');
      this.paused = true;
      return;
    }
    this.paused = false;
    // Bundles are pinned roughly in signing order: drop the pinned ones from the front.
    const pinned = (b: Bundle) =>
      b.txs.every((tx) => replica.chain.ledger.isPinnedTx(toHex(txHash(tx))));
    while (this.unpinned.length > 0 && pinned(this.unpinned[0]!)) this.unpinned.shift();
    const bundle = this.author.makeBundle(replica, this.o.opts);
    if (bundle === null) return;
    await this.outbox.append(bundle);
    this.unpinned.push(bundle);
    this.submit(bundle);
    if (this.outbox.records > 2 * this.unpinned.length + COMPACT_SLACK) await this.compact();
  }

  private async compact(): Promise<void> {
    const ledger = this.o.replica().chain.ledger;
    this.unpinned = this.unpinned.filter(
      (b) => !b.txs.every((tx) => ledger.isPinnedTx(toHex(txHash(tx)))),
    );
    await this.outbox.rewrite(this.unpinned);
  }

  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await this.busy;
    await this.outbox.close();
  }
}
