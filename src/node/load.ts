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
 * The author reads the pinned chain through a narrow port (AuthorView: is a tx pinned, what is a
 * patient block's pinned state; a Replica is one), so it can run where the replica is not:
 * load-worker.ts runs it on a worker thread, off the node's event loop.
 *
 * No patient data here: pointers are random 32-byte addresses, patients are (i, j) block refs.
 */
import { type FileHandle, open, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { RandomBytes } from '../crypto/random.ts';
import { advanceLeaf, type InstitutionSecrets, makeRecordTx } from '../ledger/author.ts';
import { refKey } from '../ledger/batch.ts';
import type { Microblock } from '../ledger/microblock.ts';
import type { LedgerReads } from '../ledger/replica-view.ts';
import { decodeBundle, encodeBundle, signBundle, txHash, txHashHex } from '../ledger/tx.ts';
import type { BlockRef, Bundle, MedicalTx, RecordTx } from '../ledger/types.ts';

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

  /** Appends the bundles and flushes them to disk (one write and one flush for all of them). */
  async append(...bundles: Bundle[]): Promise<void> {
    if (bundles.length === 0) return;
    const frames = bundles.map(frame);
    const out = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    let at = 0;
    for (const f of frames) {
      out.set(f, at);
      at += f.length;
    }
    await this.file.write(out);
    await this.file.datasync();
    this.count += bundles.length;
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

/** What the author reads of the pinned chain (a Replica is one). */
export interface AuthorView {
  readonly chain: { readonly ledger: Pick<LedgerReads, 'isPinnedTx' | 'microblocks'> };
}

/** The keys an author signs with. */
export interface AuthorKeys extends InstitutionSecrets {
  readonly signingSecret: Uint8Array;
}

/**
 * The institution's authoring state: per patient, its signed txs not pinned yet, in order. A new
 * tx extends the last of them (or the pinned block when there is none).
 */
export class Author {
  private readonly keys: AuthorKeys;
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
    keys: AuthorKeys;
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
  restore(bundles: readonly Bundle[], view: AuthorView): Bundle[] {
    const unpinned: Bundle[] = [];
    for (const bundle of bundles) {
      if (bundle.institution !== this.keys.index) continue;
      let open = false;
      for (const tx of bundle.txs) {
        if (tx.type === 'leaf') continue;
        const id = txHashHex(tx);
        if (view.chain.ledger.isPinnedTx(id)) continue;
        open = true;
        const list = this.pending.get(refKey(tx.block)) ?? [];
        const base = list.at(-1)?.after ?? this.base(tx.block, view);
        if (base === undefined) continue;
        list.push({ tx, id, after: advanceLeaf(base, tx) });
        this.pending.set(refKey(tx.block), list);
      }
      if (open) unpinned.push(bundle);
    }
    return unpinned;
  }

  /** The hex hashes of the pending txs (signed and not seen pinned yet). */
  pendingIds(): Set<string> {
    const ids = new Set<string>();
    for (const list of this.pending.values()) for (const p of list) ids.add(p.id);
    return ids;
  }

  /** Pending txs, after dropping the pinned ones. */
  pendingCount(view: AuthorView): number {
    let n = 0;
    for (const ref of this.patients) n += this.prune(ref, view).length;
    return n;
  }

  /** Signs the next bundle: txsPerBundle medical txs round the patients, sometimes a label. */
  makeBundle(view: AuthorView, opts: LoadOpts): Bundle | null {
    if (this.patients.length === 0) return null;
    const txs: RecordTx[] = [];
    for (let k = 0; k < opts.txsPerBundle; k++) {
      const ref = this.patients[this.turn++ % this.patients.length]!;
      const tx = this.append(ref, view, { type: 'medical', pointer: this.random(32) });
      if (tx !== null) txs.push(tx);
    }
    this.made++;
    const first = txs[0] as MedicalTx | undefined;
    if (first !== undefined && opts.labelEvery > 0 && this.made % opts.labelEvery === 0) {
      const fields = { type: 'label' as const, pointer: this.random(32), target: txHash(first) };
      const label = this.append(first.block, view, fields);
      if (label !== null) txs.push(label);
    }
    if (txs.length === 0) return null;
    return signBundle(this.chainId, this.keys.index, txs, this.keys.signingSecret, this.random);
  }

  private append(
    ref: BlockRef,
    view: AuthorView,
    fields: Parameters<typeof makeRecordTx>[2],
  ): RecordTx | null {
    const list = this.prune(ref, view);
    const base = list.at(-1)?.after ?? this.base(ref, view);
    if (base === undefined) return null;
    const tx = makeRecordTx(base, this.keys, fields, this.fee, this.random);
    list.push({ tx, id: txHashHex(tx), after: advanceLeaf(base, tx) });
    this.pending.set(refKey(ref), list);
    return tx;
  }

  private base(ref: BlockRef, view: AuthorView): Microblock | undefined {
    const block = view.chain.ledger.microblocks.get(ref);
    const leaf = block?.leaves.find((l) => l.institution === this.keys.index);
    return leaf === undefined ? undefined : block;
  }

  /**
   * This patient's pending txs without the pinned ones. If the pinned leaf has moved past a tx
   * that is not pinned, the chain of pending txs can never be pinned (it was built on something
   * else): it is dropped and authoring restarts from the pinned block.
   */
  private prune(ref: BlockRef, view: AuthorView): PendingTx[] {
    const key = refKey(ref);
    let list = this.pending.get(key) ?? [];
    let cut = 0;
    while (cut < list.length && view.chain.ledger.isPinnedTx(list[cut]!.id)) cut++;
    if (cut > 0) list = list.slice(cut);
    const first = list[0];
    if (first !== undefined) {
      const pinned = this.base(ref, view)?.leaves.find((l) => l.institution === this.keys.index);
      if (pinned !== undefined && pinned.seq >= first.tx.seq) {
        list = [];
        this.resets++;
      }
    }
    this.pending.set(key, list);
    return list;
  }
}
