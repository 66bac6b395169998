/**
 * The sidecar core, wired: registry, ingest, outbox and anchor worker over one sidecar store, the
 * node's pinned ledger, the node and the tx queue. The HTTP API sits on top of it; the composition
 * root opens the store first (an embedded queue keeps its sublevel in the same database), then
 * the queue, then this.
 *
 * Opening recovers from a crash: the outbox (txs signed and durable but maybe never handed to the
 * queue) is handed over again, and txs the node's mempool had taken but did not pin before the
 * restart are submitted again.
 */
import type { RandomBytes } from '../crypto/random.ts';
import type { InstitutionSecrets } from '../ledger/author.ts';
import type { IdHashCost } from '../ledger/idhash.ts';
import type { Bytes, Genesis } from '../ledger/types.ts';
import { Anchorer, type AnchorOpts } from './anchor.ts';
import { type IngestOpts, Ingestor } from './ingest.ts';
import { TxLog } from './outbox.ts';
import { PatientRegistry } from './patients.ts';
import type { EnqueuePort, JobSource, NodePort, PinnedLedger, Warn } from './ports.ts';
import type { SidecarStore } from './store.ts';

export interface SidecarCoreOpts {
  readonly store: SidecarStore;
  readonly genesis: Pick<Genesis, 'chainId' | 'idHashKey' | 'params'>;
  /** This institution's keys: index, chameleon key and trapdoor, signing secret. */
  readonly keys: InstitutionSecrets & { readonly signingSecret: Bytes };
  readonly ledger: PinnedLedger;
  readonly node: NodePort;
  readonly queue: EnqueuePort & JobSource;
  readonly ingest?: Partial<IngestOpts>;
  readonly anchor?: Partial<AnchorOpts>;
  /** Default: the protocol's ID_HASH_COST (tests may lower it). */
  readonly idHashCost?: IdHashCost;
  readonly random?: RandomBytes;
  readonly warn?: Warn;
  readonly now?: () => number;
}

export class SidecarCore {
  readonly store: SidecarStore;
  readonly patients: PatientRegistry;
  readonly txLog: TxLog;
  readonly ingestor: Ingestor;
  readonly anchorer: Anchorer;
  private timer: ReturnType<typeof setInterval> | null = null;

  private constructor(parts: {
    store: SidecarStore;
    patients: PatientRegistry;
    txLog: TxLog;
    ingestor: Ingestor;
    anchorer: Anchorer;
  }) {
    this.store = parts.store;
    this.patients = parts.patients;
    this.txLog = parts.txLog;
    this.ingestor = parts.ingestor;
    this.anchorer = parts.anchorer;
  }

  /** Wires the parts and recovers (outbox hand-over, resubmission); does not start the worker. */
  static async open(o: SidecarCoreOpts): Promise<SidecarCore> {
    const { store, genesis, keys } = o;
    const txLog = await TxLog.open(store);
    const patients = new PatientRegistry(store, o.ledger, {
      idHashKey: genesis.idHashKey,
      ...(o.idHashCost === undefined ? {} : { cost: o.idHashCost }),
    });
    const ingestor = new Ingestor(
      { store, patients, txLog, queue: o.queue, institution: keys, random: o.random, warn: o.warn },
      { fee: genesis.params.minFee, ...o.ingest },
    );
    const anchorer = new Anchorer(
      {
        chainId: genesis.chainId,
        institution: keys,
        txLog,
        ledger: o.ledger,
        node: o.node,
        jobs: o.queue,
        random: o.random,
        warn: o.warn,
        now: o.now,
      },
      o.anchor,
    );
    await ingestor.handOver();
    await anchorer.sweep(true);
    return new SidecarCore({ store, patients, txLog, ingestor, anchorer });
  }

  /**
   * Starts the anchor worker, and a timer that hands the outbox to the queue again while it is
   * not empty (after a queue outage, ingest goes on and the txs wait in the outbox).
   */
  start(handoverEveryMs = 2000): void {
    this.anchorer.start();
    if (this.timer !== null) return;
    this.timer = setInterval(() => {
      if (this.txLog.outboxSize > 0 && !this.ingestor.handingOver) this.ingestor.handOverSoon();
    }, handoverEveryMs);
  }

  /** Stops the workers and the timer; the store, queue and node are the caller's to close. */
  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await this.ingestor.handedOver();
    await this.anchorer.stop();
    await this.ingestor.close();
  }
}
