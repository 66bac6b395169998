/**
 * Load for a local network: what the institution's sidecar will do once it exists. It signs record
 * txs for the institution's own registered patients at a configured rate (makeRecordTx, with the
 * institution's chameleon trapdoor), bundles and signs them, writes each bundle to a durable outbox
 * BEFORE submitting it, and on restart re-submits the outbox bundles that are not pinned yet.
 *
 * The outbox matters for more than delivery: a leaf's txs form a chain (seq, running hash), and a
 * signed tx that peers hold must never be replaced by a different tx with the same seq, or the
 * next one would open the leaf wrongly, which validators treat as forgery. So after a restart the
 * author continues from its own last signed tx, not from the pinned state.
 *
 * No patient data here: pointers are random 32-byte addresses, patients are (i, j) block refs.
 */
import { type FileHandle, open, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { toHex } from '../crypto/bytes.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { makeRecordTx } from '../ledger/author.ts';
import { refKey } from '../ledger/batch.ts';
import { type Microblock, nextRunning } from '../ledger/microblock.ts';
import type { Replica } from '../ledger/replica.ts';
import { decodeBundle, encodeBundle, signBundle, txHash } from '../ledger/tx.ts';
import type { BlockRef, Bundle, MedicalTx, RecordTx } from '../ledger/types.ts';
import type { InstitutionKeys } from './keys.ts';

export interface LoadOpts {
  /** Record txs per second this institution signs. */
  readonly txPerSecond: number;
  readonly txsPerBundle: number;
  /** Signing pauses while this many of its txs wait to be pinned. */
  readonly maxPendingTxs: number;
  /** Every n-th bundle also corrects its first record (a label tx); 0: never. */
  readonly labelEvery: number;
}

export const defaultLoadOpts: LoadOpts = {
  txPerSecond: 10,
  txsPerBundle: 4,
  maxPendingTxs: 2000,
  labelEvery: 5,
};

const OUTBOX = 'outbox.log';
const MAX_BUNDLE_BYTES = 4 * 1024 * 1024;

/** An append-only file of signed bundles, each written and flushed before it is submitted. */
export class Outbox {
  private readonly path: string;
  private file: FileHandle;
  private count: number;

  private constructor(path: string, file: FileHandle, count: number) {
    this.path = path;
    this.file = file;
    this.count = count;
  }

  /** Opens the outbox in `dir` and returns the bundles in it (a torn last record is dropped). */
  static async open(dir: string): Promise<{ outbox: Outbox; bundles: Bundle[] }> {
    const path = join(dir, OUTBOX);
    let bytes = new Uint8Array(0);
    try {
      bytes = new Uint8Array(await readFile(path));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const bundles: Bundle[] = [];
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let at = 0;
    while (at + 4 <= bytes.length) {
      const length = view.getUint32(at);
      if (length > MAX_BUNDLE_BYTES || at + 4 + length > bytes.length) break;
      try {
        bundles.push(decodeBundle(bytes.subarray(at + 4, at + 4 + length)));
      } catch {
        break; // a record torn by a crash mid-write: nothing after it was submitted
      }
      at += 4 + length;
    }
    const outbox = new Outbox(path, await open(path, 'a', 0o600), bundles.length);
    if (at !== bytes.length) await outbox.rewrite(bundles);
    return { outbox, bundles };
  }

  /** Records written since the last rewrite. */
  get records(): number {
    return this.count;
  }

  async append(bundle: Bundle): Promise<void> {
    await this.file.write(frame(bundle));
    await this.file.datasync();
    this.count++;
  }

  /** Replaces the file with `bundles` (the ones not pinned yet): keeps the outbox bounded. */
  async rewrite(bundles: readonly Bundle[]): Promise<void> {
    const tmp = `${this.path}.tmp`;
    const out = await open(tmp, 'w', 0o600);
    try {
      for (const b of bundles) await out.write(frame(b));
      await out.datasync();
    } finally {
      await out.close();
    }
    await this.file.close();
    await rename(tmp, this.path);
    this.file = await open(this.path, 'a', 0o600);
    this.count = bundles.length;
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}

function frame(bundle: Bundle): Uint8Array {
  const body = encodeBundle(bundle);
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}

interface PendingTx {
  readonly tx: RecordTx;
  readonly id: string;
  /** The patient block as it is once this tx is appended. */
  readonly after: Microblock;
}

/** The patient block with `tx` appended to its writer's leaf (what the chain will hold). */
function advance(block: Microblock, tx: RecordTx): Microblock {
  const leaves = block.leaves.map((l) =>
    l.institution === tx.institution
      ? { ...l, seq: tx.seq, running: nextRunning(l.running, tx) }
      : l,
  );
  return { ...block, leaves };
}

/**
 * The institution's authoring state: per patient, its signed txs not pinned yet, in order. A new
 * tx extends the last of them (or the pinned block when there is none).
 */
export class Author {
  private readonly keys: InstitutionKeys;
  private readonly chainId: string;
  private readonly patients: readonly BlockRef[];
  private readonly fee: number;
  private readonly random: RandomBytes;
  private readonly pending = new Map<string, PendingTx[]>();
  private turn = 0;
  private made = 0;
  /** Times a pending chain was found broken by the pinned state and restarted from it. */
  resets = 0;

  constructor(opts: {
    keys: InstitutionKeys;
    chainId: string;
    patients: readonly BlockRef[];
    fee: number;
    random: RandomBytes;
  }) {
    this.keys = opts.keys;
    this.chainId = opts.chainId;
    this.patients = opts.patients;
    this.fee = opts.fee;
    this.random = opts.random;
  }

  /** Takes back the txs of bundles signed before a restart; returns the bundles not pinned yet. */
  restore(bundles: readonly Bundle[], replica: Replica): Bundle[] {
    const ledger = replica.chain.ledger;
    const unpinned: Bundle[] = [];
    for (const bundle of bundles) {
      if (bundle.institution !== this.keys.index) continue;
      let open = false;
      for (const tx of bundle.txs) {
        if (tx.type === 'leaf') continue;
        const id = toHex(txHash(tx));
        if (ledger.isPinnedTx(id)) continue;
        open = true;
        const list = this.pending.get(refKey(tx.block)) ?? [];
        const base = list.at(-1)?.after ?? this.base(tx.block, replica);
        if (base === undefined) continue;
        list.push({ tx, id, after: advance(base, tx) });
        this.pending.set(refKey(tx.block), list);
      }
      if (open) unpinned.push(bundle);
    }
    return unpinned;
  }

  /** Pending txs, after dropping the pinned ones. */
  pendingCount(replica: Replica): number {
    let n = 0;
    for (const ref of this.patients) n += this.prune(ref, replica).length;
    return n;
  }

  /** Signs the next bundle: txsPerBundle medical txs round the patients, sometimes a label. */
  makeBundle(replica: Replica, opts: LoadOpts): Bundle | null {
    if (this.patients.length === 0) return null;
    const txs: RecordTx[] = [];
    for (let k = 0; k < opts.txsPerBundle; k++) {
      const ref = this.patients[this.turn++ % this.patients.length]!;
      const tx = this.append(ref, replica, { type: 'medical', pointer: this.random(32) });
      if (tx !== null) txs.push(tx);
    }
    this.made++;
    const first = txs[0] as MedicalTx | undefined;
    if (first !== undefined && opts.labelEvery > 0 && this.made % opts.labelEvery === 0) {
      const fields = { type: 'label' as const, pointer: this.random(32), target: txHash(first) };
      const label = this.append(first.block, replica, fields);
      if (label !== null) txs.push(label);
    }
    if (txs.length === 0) return null;
    return signBundle(this.chainId, this.keys.index, txs, this.keys.signingSecret, this.random);
  }

  private append(
    ref: BlockRef,
    replica: Replica,
    fields: Parameters<typeof makeRecordTx>[2],
  ): RecordTx | null {
    const list = this.prune(ref, replica);
    const base = list.at(-1)?.after ?? this.base(ref, replica);
    if (base === undefined) return null;
    const tx = makeRecordTx(base, this.keys, fields, this.fee, this.random);
    list.push({ tx, id: toHex(txHash(tx)), after: advance(base, tx) });
    this.pending.set(refKey(ref), list);
    return tx;
  }

  private base(ref: BlockRef, replica: Replica): Microblock | undefined {
    const block = replica.chain.ledger.microblocks.get(ref);
    const leaf = block?.leaves.find((l) => l.institution === this.keys.index);
    return leaf === undefined ? undefined : block;
  }

  /**
   * This patient's pending txs without the pinned ones. If the pinned leaf has moved past a tx
   * that is not pinned, the chain of pending txs can never be pinned (it was built on something
   * else): it is dropped and authoring restarts from the pinned block.
   */
  private prune(ref: BlockRef, replica: Replica): PendingTx[] {
    const key = refKey(ref);
    const ledger = replica.chain.ledger;
    let list = this.pending.get(key) ?? [];
    let cut = 0;
    while (cut < list.length && ledger.isPinnedTx(list[cut]!.id)) cut++;
    if (cut > 0) list = list.slice(cut);
    const first = list[0];
    if (first !== undefined) {
      const pinned = this.base(ref, replica)?.leaves.find((l) => l.institution === this.keys.index);
      if (pinned !== undefined && pinned.seq >= first.tx.seq) {
        list = [];
        this.resets++;
      }
    }
    this.pending.set(key, list);
    return list;
  }
}
