/**
 * The anchor worker: the queue's consumer (DESIGN section 7, step 2). It takes this institution's
 * signed txs from the queue in order, signs them into bundles of up to `maxBundleTxs` (one
 * signature per bundle, tx.ts), hands each bundle to the node's mempool, records the txs as
 * submitted and acks the jobs. Per tx it reports where it is: queued (in the outbox, or handed to
 * the queue), in the mempool, or pinned at batch h with the batch's certificate (from the ledger
 * store's tx index).
 *
 * Delivery is at least once, so every step tolerates repeats: a job whose tx is pinned is acked
 * without a submission, and the mempool answers REPLAYED_TX for a tx it holds. A bundle that mixes
 * held and new txs is refused whole with REPLAYED_TX, so then each tx is submitted alone. A full
 * mempool (TOO_LARGE) is backpressure: the worker waits and tries the same bundle again (later
 * txs of a leaf depend on it), extending its leases. Any other refusal fails the jobs with the
 * reason's code (the queue retries them with backoff, then keeps them as failed).
 *
 * The node's mempool lives in memory: after a restart, and for txs the mempool dropped, `sweep`
 * submits again the txs recorded as submitted that are still not pinned, and forgets pinned ones.
 * A redelivered job whose tx is recorded as submitted is therefore acked without another offer.
 *
 * Gaps: the queue delivers roughly in order, but after an outage, or when a consumer died holding
 * leases, a job can come back after later txs of the same leaf. A bundle of those later txs would
 * wait in the mempool for the missing seq until its job returned (or, the queue having lost it,
 * until a restart). So before a round is offered, the own txs signed before the round's last one
 * that are neither submitted nor pinned are read from the own-tx table and offered with the round,
 * in signing order; their jobs, when they come, are acked as submitted or pinned. A stretch of such
 * txs goes in bundles of its own, between the round's (a bundle waits whole for its earliest
 * missing seq, so they cannot go after; and one of them refused must not fail the round's jobs).
 * Whether there is a gap is known from memory (TxLog), so the usual in-order round reads nothing
 * more.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { fromHex, toHex } from '../crypto/bytes.ts';
import { type RandomBytes, systemRandom } from '../crypto/random.ts';
import { decodeTx, signBundle, txHash } from '../ledger/tx.ts';
import type { Bytes, Certificate, InstitutionIndex, RecordTx } from '../ledger/types.ts';
import type { OwnTxEntry, TxLog } from './outbox.ts';
import type { JobSource, NodePort, PinnedLedger, TxJob, Warn } from './ports.ts';

export interface AnchorOpts {
  /** Most txs in one signed bundle. */
  readonly maxBundleTxs: number;
  /** How long one `take` waits for a first job. */
  readonly takeWaitMs: number;
  /** Wait before offering a bundle again to a full mempool. */
  readonly busyRetryMs: number;
  /** Offers of one bundle to a full mempool before its jobs are left to the queue's redelivery. */
  readonly maxBusyRetries: number;
  /** How often the running worker sweeps the own-tx table (forget pinned, resubmit stuck). */
  readonly sweepEveryMs: number;
  /** Pause after an unexpected error of the loop. */
  readonly errorPauseMs: number;
}

export const defaultAnchorOpts: AnchorOpts = {
  maxBundleTxs: 256,
  takeWaitMs: 200,
  busyRetryMs: 250,
  maxBusyRetries: 40,
  sweepEveryMs: 10_000,
  errorPauseMs: 1000,
};

export interface AnchorDeps {
  readonly chainId: string;
  readonly institution: { readonly index: InstitutionIndex; readonly signingSecret: Bytes };
  readonly txLog: TxLog;
  readonly ledger: PinnedLedger;
  readonly node: NodePort;
  readonly jobs: JobSource;
  readonly random?: RandomBytes;
  readonly warn?: Warn;
  /** Milliseconds; default Date.now. */
  readonly now?: () => number;
}

export type AnchorStatus =
  /** Durable, on its way to the node: in the outbox, or handed to the queue. */
  | { readonly state: 'queued'; readonly handedOver: boolean }
  /** The node's mempool took it (and gossiped it to the network). */
  | { readonly state: 'mempool' }
  /** Pinned: in batch `height` at position `index`, certified by `certificate`. */
  | {
      readonly state: 'pinned';
      readonly height: number;
      readonly index: number;
      readonly certificate: Certificate;
    }
  /** Not a tx of this institution that the sidecar knows of. */
  | { readonly state: 'unknown' };

type Offer = 'ok' | 'busy' | { readonly refused: string };

interface Job {
  readonly id: string;
  readonly hash: Bytes;
  readonly tx: RecordTx;
  /** Its number in signing order, when the own-tx table holds it. */
  readonly n?: number | undefined;
}

export class Anchorer {
  private readonly deps: AnchorDeps;
  private readonly opts: AnchorOpts;
  private readonly random: RandomBytes;
  private readonly now: () => number;
  private loop: Promise<void> | null = null;
  private stopping = false;
  /** Hashes found submitted and unpinned by the previous sweep. */
  private stuck = new Set<string>();
  /**
   * Numbers of own txs the node refused: not offered again to fill a gap (their jobs are retried
   * by the queue with its backoff). Pruned by each sweep to the txs still not submitted.
   */
  private refused = new Set<number>();

  constructor(deps: AnchorDeps, opts: Partial<AnchorOpts> = {}) {
    this.deps = deps;
    this.opts = { ...defaultAnchorOpts, ...opts };
    if (!Number.isSafeInteger(this.opts.maxBundleTxs) || this.opts.maxBundleTxs < 1) {
      throw new RangeError(`maxBundleTxs: expected an integer >= 1, got ${this.opts.maxBundleTxs}`);
    }
    this.random = deps.random ?? systemRandom;
    this.now = deps.now ?? Date.now;
  }

  /** Starts the worker loop: take, bundle, submit, ack; sweep every sweepEveryMs. */
  start(): void {
    if (this.loop !== null) return;
    this.stopping = false;
    this.loop = this.run();
  }

  /** Stops the loop after the round in progress. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop;
    this.loop = null;
  }

  private async run(): Promise<void> {
    let lastSweep = this.now();
    while (!this.stopping) {
      try {
        await this.runOnce();
        if (this.now() - lastSweep >= this.opts.sweepEveryMs) {
          lastSweep = this.now();
          await this.sweep();
        }
      } catch (err) {
        if (this.stopping) break;
        this.deps.warn?.('ANCHOR_FAILED', (err as Error).message);
        await sleep(this.opts.errorPauseMs);
      }
    }
  }

  /** One round: takes up to maxBundleTxs jobs and anchors them. Returns how many it took. */
  async runOnce(): Promise<number> {
    const jobs = await this.deps.jobs.take(this.opts.maxBundleTxs, {
      waitMs: this.opts.takeWaitMs,
    });
    if (jobs.length > 0) await this.process(jobs);
    return jobs.length;
  }

  /** Anchors delivered jobs: acks what the mempool took or what is pinned already. */
  async process(deliveries: readonly TxJob[]): Promise<void> {
    const { jobs: source } = this.deps;
    const jobs: Job[] = [];
    for (const d of deliveries) {
      const job = this.readJob(d);
      if (typeof job === 'string') {
        this.deps.warn?.('BAD_JOB', `job ${d.id.slice(0, 16)}: ${job}`);
        await source.fail(d.id, `BAD_JOB: ${job}`);
      } else {
        jobs.push(job);
      }
    }
    const pinned = await Promise.all(jobs.map((j) => this.deps.ledger.getTxLocation(j.hash)));
    const unpinned = await this.numbered(jobs.filter((_, k) => pinned[k] === undefined));
    // Submitted already (an ack lost in an outage, or a tx a gap filling took before its job
    // came): the mempool holds it, or the sweep gives it again. Offered in a bundle with new txs
    // it could only hurt: held but still waiting, it would get that bundle dropped as a replay
    // once the earlier copy fits.
    const sent = (j: Job) => j.n !== undefined && !this.deps.txLog.isUnsubmitted(j.n);
    const done = [...jobs.filter((_, k) => pinned[k] !== undefined), ...unpinned.filter(sent)].map(
      (j) => j.id,
    );
    if (done.length > 0) await source.ack(done);
    const open = unpinned.filter((j) => !sent(j));
    if (open.length === 0) return;
    const gap = new Set(await this.readGap(open));
    const all = inSigningOrder([...open, ...gap]);
    // Stretches of the round and of the gap, in signing order, each cut at maxBundleTxs.
    for (let at = 0, end = 0; at < all.length; at = end) {
      const ofGap = gap.has(all[at]!);
      end = at + 1;
      while (
        end < all.length &&
        end - at < this.opts.maxBundleTxs &&
        gap.has(all[end]!) === ofGap
      ) {
        end++;
      }
      const chunk = all.slice(at, end);
      const anchored = ofGap
        ? await this.anchorGap(chunk, inHandAfter(all, end, gap))
        : await this.anchorChunk(chunk);
      // Left to redelivery: the rest of the round may depend on it.
      if (!anchored) return;
    }
  }

  /**
   * Offers one chunk to the node until it is taken, refused, or the mempool stays full. Returns
   * false when the chunk is left to redelivery (the rest of the round would depend on it).
   */
  private async anchorChunk(chunk: readonly Job[]): Promise<boolean> {
    const { jobs: source, txLog } = this.deps;
    const offers = await this.offerPatiently(
      chunk,
      chunk.map((j) => j.id),
    );
    if (offers === null) return false;
    const taken = chunk.filter((_, k) => offers[k] === 'ok');
    await txLog.markSubmitted(taken.map((j) => j.hash));
    if (taken.length > 0) await source.ack(taken.map((j) => j.id));
    for (const [k, j] of chunk.entries()) {
      const o = offers[k]!;
      if (typeof o === 'object') {
        this.deps.warn?.('NODE_REFUSED', `tx ${j.id.slice(0, 16)}: ${o.refused}`);
        if (j.n !== undefined) this.refused.add(j.n);
        await source.fail(j.id, `NODE_REFUSED: ${o.refused}`);
      }
    }
    return true;
  }

  /**
   * The own txs signed before the round's last one that are neither submitted nor pinned, in
   * signing order, up to maxBundleTxs of them (a longer gap is filled over the next rounds; till
   * then the round's txs that depend on the rest wait in the mempool, as they would have).
   */
  private async readGap(round: readonly Job[]): Promise<Job[]> {
    const { txLog, ledger } = this.deps;
    const numbers = round.flatMap((j) => (j.n === undefined ? [] : [j.n]));
    if (numbers.length === 0) return [];
    const except = new Set([...numbers, ...this.refused]);
    const before = Math.max(...numbers);
    const missing = txLog.unsubmittedBefore(before, except, this.opts.maxBundleTxs);
    if (missing.length === 0) return [];
    const entries = await txLog.entriesAt(missing);
    const located = await Promise.all(entries.map((e) => ledger.getTxLocation(e.hash)));
    // Pinned but not known as submitted (the worker stopped between the offer and the mark): only
    // to be forgotten, as the sweep would.
    const pinned = entries.filter((_, k) => located[k] !== undefined);
    if (pinned.length > 0) await txLog.forget(pinned);
    return entries
      .filter((e, k) => located[k] === undefined && e.state !== 'submitted')
      .flatMap((e) => jobOfEntry(e) ?? []);
  }

  /**
   * Offers a chunk of gap txs. Their jobs are not in hand, so nothing is acked or failed here;
   * `inHand` are the round's jobs still to come, whose leases are extended while the mempool is
   * full. Returns false when it stayed full.
   */
  private async anchorGap(chunk: readonly Job[], inHand: readonly string[]): Promise<boolean> {
    const offers = await this.offerPatiently(chunk, inHand);
    if (offers === null) return false;
    await this.deps.txLog.markSubmitted(
      chunk.filter((_, k) => offers[k] === 'ok').map((j) => j.hash),
    );
    for (const [k, j] of chunk.entries()) {
      const o = offers[k]!;
      if (typeof o === 'object') {
        this.deps.warn?.('GAP_REFUSED', `tx ${j.id.slice(0, 16)}: ${o.refused}`);
        if (j.n !== undefined) this.refused.add(j.n);
      }
    }
    return true;
  }

  /**
   * Offers `chunk` until the mempool is not full, extending the leases of the jobs in hand
   * (`leased`) meanwhile; per tx: taken or refused. Null when the mempool stayed full.
   */
  private async offerPatiently(
    chunk: readonly Job[],
    leased: readonly string[],
  ): Promise<Offer[] | null> {
    let offers = this.offer(chunk);
    for (let tries = 0; offers.includes('busy'); tries++) {
      if (tries >= this.opts.maxBusyRetries || this.stopping) {
        this.deps.warn?.('NODE_BUSY', `mempool full: ${leased.length} txs left to redelivery`);
        return null;
      }
      await sleep(this.opts.busyRetryMs);
      await this.deps.jobs.extend(leased);
      offers = this.offer(chunk);
    }
    return offers;
  }

  /** Signs the txs into one bundle and submits it; per tx: taken, busy or refused. */
  private offer(jobs: readonly Job[]): Offer[] {
    const { chainId, institution, node } = this.deps;
    const bundle = signBundle(
      chainId,
      institution.index,
      jobs.map((j) => j.tx),
      institution.signingSecret,
      this.random,
    );
    const verdict = node.submitBundle(bundle);
    if (verdict.ok) return jobs.map(() => 'ok');
    const { code, message, detail } = verdict.error;
    // A full mempool, or this institution admitted so lately that it takes part only from the
    // next reputation chunk: offered again later.
    if (code === 'TOO_LARGE' || (code === 'UNKNOWN_INSTITUTION' && detail.admitted === true)) {
      return jobs.map(() => 'busy');
    }
    if (code === 'REPLAYED_TX') {
      // Held or pinned already; in a bundle of several, the others may be new: one at a time.
      return jobs.length === 1 ? ['ok'] : jobs.flatMap((j) => this.offer([j]));
    }
    return jobs.map(() => ({ refused: `${code}: ${message}` }));
  }

  /** A delivered job as a tx of ours, or what is wrong with it. */
  private readJob(d: TxJob): Job | string {
    let tx: ReturnType<typeof decodeTx>;
    try {
      tx = decodeTx(d.tx);
    } catch (err) {
      return `tx does not decode (${(err as Error).message})`;
    }
    const hash = txHash(tx);
    if (toHex(hash) !== d.id) return 'job id is not the hash of its tx';
    if (tx.type !== 'medical' && tx.type !== 'label') return `is a ${tx.type} tx, not a record tx`;
    if (tx.institution !== this.deps.institution.index) {
      return `is a tx of institution ${tx.institution}`;
    }
    return { id: d.id, hash, tx };
  }

  /** The jobs with their numbers in signing order (none: not in the own-tx table). */
  private async numbered(jobs: readonly Job[]): Promise<Job[]> {
    const numbers = await this.deps.txLog.numbersOf(jobs.map((j) => j.hash));
    return jobs.map((j, k) => ({ ...j, n: numbers[k] }));
  }

  /**
   * Goes through the own-tx table: forgets pinned txs, and submits again, in signing order, the
   * submitted ones that were unpinned at the previous sweep too (or all unpinned submitted ones
   * when `all`, e.g. after a restart, when the node's mempool is empty).
   */
  async sweep(all = false): Promise<{ forgotten: number; resubmitted: number }> {
    const { txLog, ledger } = this.deps;
    const entries = await txLog.entries();
    const pinned = await Promise.all(entries.map((e) => ledger.getTxLocation(e.hash)));
    const forget = entries.filter((_, k) => pinned[k] !== undefined);
    if (forget.length > 0) await txLog.forget(forget);
    const open = entries.filter((e, k) => pinned[k] === undefined && e.state === 'submitted');
    const again = all ? open : open.filter((e) => this.stuck.has(toHex(e.hash)));
    this.stuck = new Set(open.map((e) => toHex(e.hash)));
    const unsent = entries.filter((e, k) => pinned[k] === undefined && e.state !== 'submitted');
    this.refused = new Set(unsent.map((e) => e.n).filter((n) => this.refused.has(n)));
    const resubmitted = this.resubmit(again);
    return { forgotten: forget.length, resubmitted };
  }

  private resubmit(entries: readonly OwnTxEntry[]): number {
    const jobs = entries.flatMap((e) => jobOfEntry(e) ?? []);
    let taken = 0;
    for (let at = 0; at < jobs.length; at += this.opts.maxBundleTxs) {
      const chunk = jobs.slice(at, at + this.opts.maxBundleTxs);
      const offers = this.offer(chunk);
      taken += offers.filter((o) => o === 'ok').length;
      if (offers.includes('busy')) break;
    }
    return taken;
  }

  /** Where an own tx is on its way to the chain. */
  async status(hash: Bytes | string): Promise<AnchorStatus> {
    const bytes = typeof hash === 'string' ? fromHexHash(hash) : hash;
    const loc = await this.deps.ledger.getTxLocation(bytes);
    if (loc?.kind === 'batch') {
      const certificate = await this.deps.ledger.getCertificate('batch', loc.height);
      if (certificate !== undefined) {
        return { state: 'pinned', height: loc.height, index: loc.index, certificate };
      }
    }
    const state = await this.deps.txLog.stateOf(bytes);
    if (state === 'submitted') return { state: 'mempool' };
    if (state === undefined) return { state: 'unknown' };
    return { state: 'queued', handedOver: state === 'handed' };
  }
}

/** Jobs in the order their txs were signed (a leaf's txs by seq); unknown ones last. */
function inSigningOrder(jobs: readonly Job[]): Job[] {
  const order = (j: Job) => j.n ?? Number.MAX_SAFE_INTEGER;
  return jobs
    .map((j, k) => ({ j, k }))
    .sort((a, b) => order(a.j) - order(b.j) || a.k - b.k)
    .map(({ j }) => j);
}

/** The ids of the delivered jobs (not gap txs) from position `from` of `all` on. */
function inHandAfter(all: readonly Job[], from: number, gap: ReadonlySet<Job>): string[] {
  return all.slice(from).flatMap((j) => (gap.has(j) ? [] : [j.id]));
}

/** An own-tx table entry as a job to offer (undefined: not a record tx, never offered). */
function jobOfEntry(e: OwnTxEntry): Job | undefined {
  const tx = decodeTx(e.tx);
  if (tx.type !== 'medical' && tx.type !== 'label') return undefined;
  return { id: toHex(e.hash), hash: e.hash, tx, n: e.n };
}

function fromHexHash(hex: string): Bytes {
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new RangeError('tx hash must be 64 lowercase hex digits');
  return fromHex(hex, 'tx hash');
}
