/**
 * This institution's own signed txs on their way to the chain, in signing order (sublevels ot/oh,
 * entries.ts). A tx enters in the ingest's atomic batch, together with the ciphertext and the
 * record index that name it, in state 'new': that is the outbox. `handOver` then gives the 'new'
 * ones to the queue and marks them 'handed'; the anchor worker marks them 'submitted' once the
 * node's mempool took them; pinned ones are dropped (`forget`), since the ledger store then says
 * where they are.
 *
 * Recovery: on open, every tx not known to be in the mempool ('new', and also 'handed', in case the
 * queue lost it: enqueue is idempotent by tx hash) is in the outbox again, so a crash between the
 * ingest's write and the queue, or a queue that lost its data, loses nothing. States only move
 * forward, and state writes run one at a time.
 *
 * The numbers of the txs not yet submitted are also kept in memory, so that the anchor worker can
 * tell without reading the table whether a round of jobs leaves out an earlier own tx that the
 * mempool has not seen (`unsubmittedBefore`), and which of its jobs were submitted already.
 */
import { toHex } from '../crypto/bytes.ts';
import type { Bytes } from '../ledger/types.ts';
import { be } from '../store/keys.ts';
import {
  decodeCounter,
  decodeOwnTx,
  encodeCounter,
  encodeOwnTx,
  type OwnTx,
  type OwnTxState,
} from './entries.ts';
import type { EnqueuePort, TxJob } from './ports.ts';
import type { SidecarStore, WriteOp } from './store.ts';

/** An own tx with its place in signing order. */
export interface OwnTxEntry extends OwnTx {
  readonly n: number;
}

const RANK: Record<OwnTxState, number> = { new: 0, handed: 1, submitted: 2 };
/** Jobs per enqueue call. */
const HANDOVER_GROUP = 1000;

const txKey = (n: number): Bytes => be(n, 6, 'own tx number');

export class TxLog {
  private readonly store: SidecarStore;
  private next: number;
  /** The outbox: txs to hand to the queue, by number. */
  private readonly unhanded = new Map<number, TxJob>();
  /** Numbers of the txs in state 'new' or 'handed'. */
  private readonly unsubmitted = new Set<number>();
  /** No number below this is in `unsubmitted`: a lower bound, raised lazily by `lowest`. */
  private low: number;
  private writes: Promise<unknown> = Promise.resolve();
  private handing: Promise<unknown> = Promise.resolve();

  private constructor(store: SidecarStore, next: number) {
    this.store = store;
    this.next = next;
    this.low = next;
  }

  /** Reads the table: the next number, and the outbox ('new' and 'handed' txs). */
  static async open(store: SidecarStore): Promise<TxLog> {
    const entries = await readEntries(store);
    const log = new TxLog(store, (entries.at(-1)?.n ?? -1) + 1);
    for (const e of entries) {
      if (e.state === 'submitted') continue;
      log.unhanded.set(e.n, { id: toHex(e.hash), tx: e.tx });
      log.unsubmitted.add(e.n);
      log.low = Math.min(log.low, e.n);
    }
    return log;
  }

  /** Txs waiting to be handed to the queue. */
  get outboxSize(): number {
    return this.unhanded.size;
  }

  /** Stages a newly signed tx (state 'new') into the caller's atomic batch. */
  stage(ops: WriteOp[], hash: Bytes, tx: Bytes): OwnTxEntry {
    const n = this.next++;
    const entry: OwnTxEntry = { n, state: 'new', hash, tx };
    this.store.put(ops, 'tx', txKey(n), encodeOwnTx(entry));
    this.store.put(ops, 'txByHash', hash, encodeCounter(n));
    return entry;
  }

  /** After the caller's batch is written: its txs join the outbox. */
  committed(entries: readonly OwnTxEntry[]): void {
    for (const e of entries) {
      this.unhanded.set(e.n, { id: toHex(e.hash), tx: e.tx });
      this.unsubmitted.add(e.n);
      // Batches may commit out of signing order: the bound may have passed this number already.
      if (e.n < this.low) this.low = e.n;
    }
  }

  /**
   * Hands every tx in the outbox to the queue, in signing order, and marks them 'handed'. Passes
   * run one at a time; a failed enqueue leaves the txs in the outbox for the next pass. Returns
   * how many were handed over.
   */
  handOver(queue: EnqueuePort): Promise<number> {
    const run = this.handing.then(() => this.handOnce(queue));
    this.handing = run.catch(() => undefined);
    return run;
  }

  private async handOnce(queue: EnqueuePort): Promise<number> {
    const pending = [...this.unhanded].sort((a, b) => a[0] - b[0]);
    let handed = 0;
    for (let at = 0; at < pending.length; at += HANDOVER_GROUP) {
      const group = pending.slice(at, at + HANDOVER_GROUP);
      await queue.enqueue(group.map(([, job]) => job));
      const numbers = group.map(([n]) => n);
      await this.advance(numbers, 'handed');
      for (const n of numbers) this.unhanded.delete(n);
      handed += group.length;
    }
    return handed;
  }

  /** Marks txs (by hash) as taken by the node's mempool. */
  async markSubmitted(hashes: readonly Bytes[]): Promise<void> {
    const numbers = await this.numbersOf(hashes);
    await this.advance(
      numbers.filter((n): n is number => n !== undefined),
      'submitted',
    );
    for (const n of numbers) {
      if (n === undefined) continue;
      this.unhanded.delete(n);
      this.unsubmitted.delete(n);
    }
  }

  /** Whether the tx numbered `n` is in the table in state 'new' or 'handed' (from memory). */
  isUnsubmitted(n: number): boolean {
    return this.unsubmitted.has(n);
  }

  /**
   * The numbers of the txs not yet submitted that were signed before number `before`, leaving out
   * `except`, lowest first and at most `limit` of them. From memory, in time bounded by the
   * smaller of the distance from the lowest unsubmitted number to `before` and the count of
   * unsubmitted txs: when a round of jobs starts at the lowest unsubmitted number and its numbers
   * follow one another (the usual case), that is the round's own size.
   */
  unsubmittedBefore(before: number, except: ReadonlySet<number>, limit: number): number[] {
    const low = this.lowest();
    if (low >= before || limit <= 0) return [];
    const out: number[] = [];
    if (before - low <= this.unsubmitted.size) {
      for (let n = low; n < before && out.length < limit; n++) {
        if (this.unsubmitted.has(n) && !except.has(n)) out.push(n);
      }
      return out;
    }
    for (const n of this.unsubmitted) if (n < before && !except.has(n)) out.push(n);
    return out.sort((a, b) => a - b).slice(0, limit);
  }

  /** The entries with these numbers that are still in the table, in the order given. */
  async entriesAt(numbers: readonly number[]): Promise<OwnTxEntry[]> {
    const keys = numbers.map(txKey);
    const stored = await this.store.spaces.tx.getMany(keys);
    const out: OwnTxEntry[] = [];
    for (const [k, v] of stored.entries()) {
      if (v === undefined) continue;
      const e = this.store.decodeStored('tx', keys[k]!, v, decodeOwnTx);
      out.push({ ...e, n: numbers[k]! });
    }
    return out;
  }

  /** The state of an own tx, or undefined when it is not in the table (pinned, or not ours). */
  async stateOf(hash: Bytes): Promise<OwnTxState | undefined> {
    const [n] = await this.numbersOf([hash]);
    if (n === undefined) return undefined;
    return (await this.read(n))?.state;
  }

  /** Every tx in the table, in signing order. */
  entries(): Promise<OwnTxEntry[]> {
    return readEntries(this.store);
  }

  /** The signing-order number of each tx (undefined: not in the table). */
  async numbersOf(hashes: readonly Bytes[]): Promise<(number | undefined)[]> {
    const stored = await this.store.spaces.txByHash.getMany([...hashes]);
    return stored.map((v, k) =>
      v === undefined
        ? undefined
        : this.store.decodeStored('txByHash', hashes[k]!, v, decodeCounter),
    );
  }

  /** Drops pinned txs from the table (the ledger store's tx index has them now). */
  forget(entries: readonly OwnTxEntry[]): Promise<void> {
    return this.serial(async () => {
      const ops: WriteOp[] = [];
      for (const e of entries) {
        this.store.del(ops, 'tx', txKey(e.n));
        this.store.del(ops, 'txByHash', e.hash);
        this.unhanded.delete(e.n);
        this.unsubmitted.delete(e.n);
      }
      await this.store.write(ops, false);
    });
  }

  /** Moves txs forward to `state` (never back: a late 'handed' does not undo 'submitted'). */
  private advance(numbers: readonly number[], state: OwnTxState): Promise<void> {
    return this.serial(async () => {
      const ops: WriteOp[] = [];
      for (const n of numbers) {
        const e = await this.read(n);
        if (e === undefined || RANK[e.state] >= RANK[state]) continue;
        this.store.put(ops, 'tx', txKey(n), encodeOwnTx({ ...e, state }));
      }
      await this.store.write(ops, false);
    });
  }

  /** The lowest unsubmitted number (`next` when there is none); amortised O(1). */
  private lowest(): number {
    while (this.low < this.next && !this.unsubmitted.has(this.low)) this.low++;
    return this.low;
  }

  private read(n: number): Promise<OwnTx | undefined> {
    return this.store.read('tx', txKey(n), decodeOwnTx);
  }

  private serial<T>(f: () => Promise<T>): Promise<T> {
    const run = this.writes.then(f, f);
    this.writes = run.catch(() => undefined);
    return run;
  }
}

async function readEntries(store: SidecarStore): Promise<OwnTxEntry[]> {
  const out: OwnTxEntry[] = [];
  for await (const [key, value] of store.spaces.tx.iterator()) {
    const e = store.decodeStored('tx', key, value, decodeOwnTx);
    let n = 0;
    for (const b of key) n = n * 256 + b;
    out.push({ ...e, n });
  }
  return out;
}
