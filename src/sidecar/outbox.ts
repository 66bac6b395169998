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
  private writes: Promise<unknown> = Promise.resolve();
  private handing: Promise<unknown> = Promise.resolve();

  private constructor(store: SidecarStore, next: number) {
    this.store = store;
    this.next = next;
  }

  /** Reads the table: the next number, and the outbox ('new' and 'handed' txs). */
  static async open(store: SidecarStore): Promise<TxLog> {
    const entries = await readEntries(store);
    const log = new TxLog(store, (entries.at(-1)?.n ?? -1) + 1);
    for (const e of entries) {
      if (e.state !== 'submitted') log.unhanded.set(e.n, { id: toHex(e.hash), tx: e.tx });
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
    for (const e of entries) this.unhanded.set(e.n, { id: toHex(e.hash), tx: e.tx });
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
    for (const n of numbers) if (n !== undefined) this.unhanded.delete(n);
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
