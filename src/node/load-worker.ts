/**
 * The load's signing side on a worker thread (load-runner.ts starts it): the sidecar's stand-in
 * signs record txs and bundles (a chameleon collision per tx, a signature per bundle) and flushes
 * them to the outbox here, so none of that runs on the node's event loop, and the load keeps its
 * rate however busy the node is.
 *
 * Bundles are due at the configured rate (a token bucket: a late tick signs the bundles it owes,
 * up to MAX_BURST, and flushes them to the outbox together). Every bundle is in the outbox before it
 * is posted to the node thread, which submits it. The node thread tells this one which of its txs
 * it saw pinned (and the pinned state of its patients' blocks), and when to hold: until the node
 * pins, and while its own bundles fill its mempool quota or wait to be re-submitted. Signing also
 * pauses while maxPendingTxs of its txs wait to be pinned.
 *
 * The outbox was compacted by the node thread before this thread starts: it holds only bundles that
 * are not pinned, which the author takes back (load.ts Author.restore).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { systemRandom } from '../crypto/random.ts';
import { refKey } from '../ledger/batch.ts';
import type { Microblock } from '../ledger/microblock.ts';
import { encodeBundle, txHashHex } from '../ledger/tx.ts';
import type { BlockRef, Bundle } from '../ledger/types.ts';
import { Author, type AuthorKeys, type AuthorView, type LoadOpts, Outbox } from './load.ts';

/** What the node thread gives the worker (structured-cloned). */
export interface LoadWorkerInit {
  readonly dir: string;
  readonly keys: AuthorKeys;
  readonly chainId: string;
  readonly patients: readonly BlockRef[];
  readonly fee: number;
  readonly opts: LoadOpts;
  /** The pinned state of the patients' blocks. */
  readonly blocks: readonly Microblock[];
}

/** Node thread -> worker. */
export type ToLoadWorker =
  | {
      readonly type: 'pinned';
      /** Own txs (hex hashes) seen pinned since the last message. */
      readonly ids: readonly string[];
      /** The pinned state of the patients' blocks. */
      readonly blocks: readonly Microblock[];
    }
  | { readonly type: 'hold'; readonly held: boolean }
  | { readonly type: 'stop' };

/** Worker -> node thread. */
export type FromLoadWorker =
  | { readonly type: 'ready'; readonly pending: number }
  | {
      readonly type: 'bundles';
      /** Encoded bundles, in signing order, each already in the outbox. */
      readonly bundles: readonly Uint8Array[];
      /** When each was made (ms since the epoch). */
      readonly signedAt: readonly number[];
      readonly pending: number;
    }
  | { readonly type: 'pending'; readonly pending: number }
  | { readonly type: 'warn'; readonly code: string; readonly message: string }
  | { readonly type: 'stopped' };

/** Most bundles one tick signs to catch up with the rate. */
const MAX_BURST = 16;
const TICK_MS = 5;
/** Rewrite the outbox once it holds this many records more than are unpinned. */
const COMPACT_SLACK = 512;

async function run(init: LoadWorkerInit, port: NonNullable<typeof parentPort>): Promise<void> {
  const post = (m: FromLoadWorker) => port.postMessage(m);
  const pinned = new Set<string>();
  const blocks = new Map(init.blocks.map((b) => [refKey(b.header), b]));
  const view: AuthorView = {
    chain: {
      ledger: {
        isPinnedTx: (id) => pinned.has(id),
        microblocks: { get: (ref) => blocks.get(refKey(ref)) },
      },
    },
  };
  const author = new Author({
    keys: init.keys,
    chainId: init.chainId,
    patients: init.patients,
    fee: init.fee,
    random: systemRandom,
  });
  const { outbox, bundles } = await Outbox.open(init.dir);
  let unpinned: Bundle[] = author.restore(bundles, view);
  const { opts } = init;
  const bundlesPerMs = opts.txPerSecond / opts.txsPerBundle / 1000;
  // Held until the node thread has seen this node pin (load-runner.ts).
  let held = true;
  let paused = false;
  let stopping = false;
  let credit = 0;
  let last = Date.now();
  let busy: Promise<void> | null = null;

  const isPinned = (b: Bundle) => b.txs.every((tx) => pinned.has(txHashHex(tx)));

  const produce = async (): Promise<void> => {
    const now = Date.now();
    credit = Math.min(MAX_BURST, credit + (now - last) * bundlesPerMs);
    last = now;
    if (held || stopping || credit < 1) return;
    const made: Bundle[] = [];
    const signedAt: number[] = [];
    while (credit >= 1 && made.length < MAX_BURST) {
      if (author.pendingCount(view) >= opts.maxPendingTxs) {
        if (!paused)
          post({
            type: 'warn',
            code: 'LOAD_PAUSED',
            message: 'too many own txs wait to be pinned',
          });
        paused = true;
        credit = 0;
        break;
      }
      paused = false;
      const at = Date.now();
      const bundle = author.makeBundle(view, opts);
      credit -= 1;
      if (bundle === null) break;
      made.push(bundle);
      signedAt.push(at);
    }
    if (made.length === 0) return;
    await outbox.append(...made);
    unpinned.push(...made);
    post({
      type: 'bundles',
      bundles: made.map(encodeBundle),
      signedAt,
      pending: author.pendingCount(view),
    });
    if (outbox.records > 2 * unpinned.length + COMPACT_SLACK) await outbox.rewrite(unpinned);
  };

  const tick = () => {
    if (busy !== null) return;
    busy = produce()
      .catch((err: unknown) => {
        post({ type: 'warn', code: 'LOAD_FAILED', message: (err as Error).message });
      })
      .finally(() => {
        busy = null;
      });
  };
  const timer = setInterval(tick, TICK_MS);

  port.on('message', (m: ToLoadWorker) => {
    if (m.type === 'hold') {
      held = m.held;
    } else if (m.type === 'pinned') {
      for (const id of m.ids) pinned.add(id);
      for (const b of m.blocks) blocks.set(refKey(b.header), b);
      unpinned = unpinned.filter((b) => !isPinned(b));
      const pending = author.pendingCount(view);
      // The author has dropped the pinned txs it held: only ids still pending matter.
      const still = author.pendingIds();
      for (const id of pinned) if (!still.has(id)) pinned.delete(id);
      post({ type: 'pending', pending });
    } else if (m.type === 'stop') {
      stopping = true;
      clearInterval(timer);
      void (async () => {
        await busy;
        await outbox.close();
        post({ type: 'stopped' });
        port.close();
      })();
    }
  });
  post({ type: 'ready', pending: author.pendingCount(view) });
}

if (parentPort !== null) {
  const port = parentPort;
  run(workerData as LoadWorkerInit, port).catch((err: unknown) => {
    port.postMessage({
      type: 'warn',
      code: 'LOAD_FAILED',
      message: `load worker: ${(err as Error).message}`,
    } satisfies FromLoadWorker);
    port.close();
  });
}
