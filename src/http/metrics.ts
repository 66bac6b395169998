/**
 * The sidecar's Prometheus metrics (prom-client), on a Registry of its own per sidecar (never the
 * process-wide default one: tests and several sidecars in one process stay apart), served by
 * `GET /metrics` (server.ts). Every name starts with `spchain_` and has HELP text.
 *
 * Labels are closed sets only: route templates (`/fhir/:type`, never the URL: no ids, no search
 * values), methods, status classes (`2xx`), outcome and reason codes, member indices of the
 * network. Nothing from a request body or a patient ever becomes a label.
 *
 * Sources:
 * - HTTP and ingest: server.ts calls `observeRequest` from its onResponse hook, and
 *   `observeIngest` for `POST /fhir` (transaction/batch bundles) and `POST /fhir/:type`.
 * - Node: `onNodeEvent` (node/events.ts): 'pinned' counts txs (the network's TPS is
 *   `rate(spchain_txs_pinned_total[1m])`), 'chunk' sets reputations and the consensus group; the
 *   chain height and connected peers are read at scrape time (`attach`).
 * - Pin latency: `PinClock` below, from the first hand-over of an own tx to the queue (right after
 *   it is signed and durable) to the node's 'pinned' event of the batch that holds it.
 * - Queue depth: read at scrape time: the outbox (signed, not yet handed to the queue) plus the
 *   queue's waiting and delayed jobs.
 * - Sharing: `observeShareFetch` per fetch of shared records: holders' outcomes and the records
 *   that failed verification, by reason code.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { txHashHex } from '../ledger/tx.ts';
import type { Bundle } from '../ledger/types.ts';
import type { NodeEvent } from '../node/events.ts';
import type { SharedFetch } from '../sidecar/share-receiver.ts';

/** What the queue-depth gauges read at scrape time. */
export interface QueueDepth {
  /** Signed txs in the outbox, not handed to the queue yet. */
  readonly outbox: number;
  readonly waiting: number;
  readonly active: number;
  readonly delayed: number;
  readonly failed: number;
}

/** What the metrics read from the running sidecar at scrape time. */
export interface MetricSources {
  readonly queue?: () => Promise<QueueDepth>;
  readonly node?: {
    tip(): { height: number; keyblockHeight: number };
    stats(): { peers: readonly number[] };
  };
}

export interface MetricsOpts {
  /** Process metrics (CPU, memory, event loop, GC) on the same registry; default true. */
  readonly processMetrics: boolean;
}

export const defaultMetricsOpts: MetricsOpts = { processMetrics: true };

/** The stages an ingest reports (fhir/transaction.ts, sidecar/ingest.ts): the label's closed set. */
const INGEST_STAGES: ReadonlySet<string> = new Set([
  'validate',
  'lock-bundle',
  'map',
  'bind',
  'check',
  'lock-patient',
  'plan',
  'seal',
  'index',
  'stage',
  'write',
]);

/** Seconds: HTTP requests and ingest (a large Synthea bundle takes seconds). */
const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Seconds: signed to pinned spans block intervals and retries. */
const PIN_BUCKETS = [0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300];

/** Codes of shared records that failed verification (ledger/shared-record.ts, and content checks). */
const VERIFICATION_CODES = new Set([
  'OTHER_PATIENT',
  'WRONG_HOLDER',
  'NOT_PINNED',
  'WRONG_CIPHERTEXT',
  'BAD_OPENING',
  'BAD_CAPSULE',
  'BAD_CFRAG',
  'DECRYPTION_FAILED',
  'BAD_CONTENT',
]);

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
/** A route template as fastify names it: literal segments and `:params` only. */
const ROUTE_TEMPLATE = /^\/[A-Za-z0-9_\-./:$*]{0,120}$/;

/** `2xx` .. `5xx`. */
export function statusClass(status: number): string {
  return Number.isInteger(status) && status >= 100 && status < 600
    ? `${Math.floor(status / 100)}xx`
    : 'other';
}

/** The route label: fastify's template, or `(no route)` (a 404 never names its URL). */
export function routeLabel(template: string | undefined): string {
  return template !== undefined && ROUTE_TEMPLATE.test(template) ? template : '(no route)';
}

/** An ingest request's outcome label, from its status. */
export function ingestOutcome(status: number): string {
  if (status >= 200 && status < 300) return 'accepted';
  if (status === 429 || status === 503) return 'unavailable';
  if (status >= 400 && status < 500) return 'rejected';
  return 'failed';
}

export class SidecarMetrics {
  readonly registry: Registry;
  private readonly http: Histogram<'route' | 'method' | 'status'>;
  private readonly resources: Counter;
  private readonly bundles: Counter<'kind' | 'outcome'>;
  private readonly ingestSeconds: Histogram<'kind' | 'outcome'>;
  private readonly stageSeconds: Histogram<'stage'>;
  private readonly pinned: Counter;
  private readonly pinSeconds: Histogram;
  private readonly reputation: Gauge<'member'>;
  private readonly group: Gauge<'member'>;
  private readonly verification: Counter<'reason'>;
  private readonly fetches: Counter<'status'>;
  private sources: MetricSources = {};
  private depthRead: Promise<QueueDepth | null> | null = null;

  constructor(options: Partial<MetricsOpts> = {}) {
    const opts = { ...defaultMetricsOpts, ...options };
    this.registry = new Registry();
    const registers = [this.registry];
    this.http = new Histogram({
      name: 'spchain_http_request_duration_seconds',
      help: 'HTTP requests by route template, method and status class',
      labelNames: ['route', 'method', 'status'],
      buckets: HTTP_BUCKETS,
      registers,
    });
    this.resources = new Counter({
      name: 'spchain_ingest_resources_total',
      help: 'FHIR resources accepted from the EHR (entries of accepted bundles, single creates)',
      registers,
    });
    this.bundles = new Counter({
      name: 'spchain_ingest_bundles_total',
      help: 'Ingest requests (POST /fhir bundles, POST /fhir/:type creates) by outcome',
      labelNames: ['kind', 'outcome'],
      registers,
    });
    this.ingestSeconds = new Histogram({
      name: 'spchain_ingest_duration_seconds',
      help: 'Time to answer an ingest request (POST /fhir, POST /fhir/:type)',
      labelNames: ['kind', 'outcome'],
      buckets: HTTP_BUCKETS,
      registers,
    });
    this.stageSeconds = new Histogram({
      name: 'spchain_ingest_stage_seconds',
      help: 'Time an ingest request spent in each stage (its Server-Timing): validate, map, check, plan, seal, stage, write, and waits for locks',
      labelNames: ['stage'],
      buckets: HTTP_BUCKETS,
      registers,
    });
    const self = this;
    new Gauge({
      name: 'spchain_queue_depth',
      help: 'Signed txs not yet taken by the anchor worker: outbox + queue waiting + delayed',
      registers,
      async collect() {
        const d = await self.queueDepth();
        if (d !== null) this.set(d.outbox + d.waiting + d.delayed);
      },
    });
    new Gauge({
      name: 'spchain_queue_jobs',
      help: 'Txs by stage: outbox (not handed to the queue), waiting, active, delayed, failed',
      labelNames: ['stage'],
      registers,
      async collect() {
        const d = await self.queueDepth();
        if (d === null) return;
        for (const stage of ['outbox', 'waiting', 'active', 'delayed', 'failed'] as const) {
          this.set({ stage }, d[stage]);
        }
      },
    });
    this.pinned = new Counter({
      name: 'spchain_txs_pinned_total',
      help: 'Txs pinned in batches (all institutions); TPS: rate(spchain_txs_pinned_total[1m])',
      registers,
    });
    this.pinSeconds = new Histogram({
      name: 'spchain_pin_latency_seconds',
      help: "This institution's txs: first hand-over to the queue (just signed) to pinned",
      buckets: PIN_BUCKETS,
      registers,
    });
    new Gauge({
      name: 'spchain_chain_height',
      help: 'Height of the pinned batch tip',
      registers,
      collect() {
        const node = self.sources.node;
        if (node !== undefined) this.set(node.tip().height);
      },
    });
    new Gauge({
      name: 'spchain_keyblock_height',
      help: 'Height of the pinned keyblock',
      registers,
      collect() {
        const node = self.sources.node;
        if (node !== undefined) this.set(node.tip().keyblockHeight);
      },
    });
    new Gauge({
      name: 'spchain_peers_connected',
      help: 'Network members this node has a libp2p connection to',
      registers,
      collect() {
        const node = self.sources.node;
        if (node !== undefined) this.set(node.stats().peers.length);
      },
    });
    this.reputation = new Gauge({
      name: 'spchain_reputation',
      help: 'Reputation R of each member (by index) at the last closed chunk',
      labelNames: ['member'],
      registers,
    });
    this.group = new Gauge({
      name: 'spchain_consensus_group_member',
      help: 'Whether the member (by index) is in the consensus group of the last closed chunk',
      labelNames: ['member'],
      registers,
    });
    this.verification = new Counter({
      name: 'spchain_share_verification_failures_total',
      help: 'Shared records from other institutions that failed verification, by reason code',
      labelNames: ['reason'],
      registers,
    });
    this.fetches = new Counter({
      name: 'spchain_share_fetches_total',
      help: 'Fetches of shared records from holders, by the holder outcome',
      labelNames: ['status'],
      registers,
    });
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'spchain_' });
  }

  /** The parts of the running sidecar the scrape-time gauges read. */
  attach(sources: MetricSources): void {
    this.sources = { ...this.sources, ...sources };
  }

  /** The exposition text, and its content type. */
  async scrape(): Promise<{ contentType: string; text: string }> {
    return { contentType: this.registry.contentType, text: await this.registry.metrics() };
  }

  /** One HTTP request (server.ts onResponse): its route template, never its URL. */
  observeRequest(route: string | undefined, method: string, status: number, ms: number): void {
    this.http.observe(
      {
        route: routeLabel(route),
        method: METHODS.has(method) ? method : 'other',
        status: statusClass(status),
      },
      ms / 1000,
    );
  }

  /**
   * One ingest request: `resources` accepted (0 unless it succeeded), and the time it spent by
   * stage (fhir/timings.ts; a stage name outside the known set is counted as `other`).
   */
  observeIngest(
    kind: 'bundle' | 'create',
    status: number,
    resources: number,
    ms: number,
    stages: ReadonlyMap<string, number> = new Map(),
  ): void {
    for (const [stage, stageMs] of stages) {
      this.stageSeconds.observe(
        { stage: INGEST_STAGES.has(stage) ? stage : 'other' },
        stageMs / 1000,
      );
    }
    const outcome = ingestOutcome(status);
    this.bundles.inc({ kind, outcome });
    this.ingestSeconds.observe({ kind, outcome }, ms / 1000);
    if (outcome === 'accepted' && Number.isSafeInteger(resources) && resources > 0) {
      this.resources.inc(resources);
    }
  }

  /** The node's events: pinned txs, reputations and the consensus group. */
  onNodeEvent(e: NodeEvent): void {
    if (e.event === 'pinned') {
      if (Number.isSafeInteger(e.txs) && e.txs > 0) this.pinned.inc(e.txs);
    } else if (e.event === 'chunk') {
      const group = new Set(e.group.map(String));
      for (const [member, r] of Object.entries(e.reputations)) {
        if (!/^\d{1,6}$/.test(member)) continue;
        this.reputation.set({ member }, r);
        this.group.set({ member }, group.has(member) ? 1 : 0);
      }
    }
  }

  /** Own txs pinned, `seconds` after they were signed. */
  observePinLatency(seconds: number): void {
    if (Number.isFinite(seconds) && seconds >= 0) this.pinSeconds.observe(seconds);
  }

  /** One fetch of a patient's shared records: holders' outcomes, verification failures. */
  observeShareFetch(f: Pick<SharedFetch, 'holders' | 'warnings'>): void {
    for (const h of f.holders) this.fetches.inc({ status: h.status });
    for (const w of f.warnings) {
      if (VERIFICATION_CODES.has(w.code)) this.verification.inc({ reason: w.code });
    }
  }

  /** One read per scrape, shared by the two queue gauges. */
  private queueDepth(): Promise<QueueDepth | null> {
    const read = this.sources.queue;
    if (read === undefined) return Promise.resolve(null);
    this.depthRead ??= withTimeout(read(), 1000)
      // A queue that does not answer leaves the gauges as they were; readiness reports it.
      .catch(() => null)
      .finally(() => {
        this.depthRead = null;
      });
    return this.depthRead;
  }
}

/** `p`, or a rejection after `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

export interface PinClockOpts {
  /** Own txs remembered at most (the oldest are dropped first). */
  readonly maxTracked: number;
}

export const defaultPinClockOpts: PinClockOpts = { maxTracked: 100_000 };

/**
 * Pin latency of this institution's txs: `handed(ids)` when the ingest hands txs to the queue
 * (the first time only: a retried hand-over keeps the first time), and `pinnedBatch(height)` on
 * the node's 'pinned' event when the batch holds txs of this institution: it reads the batch,
 * hashes this institution's txs and observes each one it remembers.
 */
export interface PinClockDeps {
  /** This institution's member index. */
  readonly self: number;
  /** The pinned batch at a height (the node's LedgerStore). */
  readonly getBatch: (
    height: number,
  ) => Promise<{ readonly bundles: readonly Bundle[] } | undefined>;
  readonly observe: (seconds: number) => void;
  /** Milliseconds since the epoch; default Date.now. */
  readonly now?: () => number;
}

export class PinClock {
  private readonly handedAt = new Map<string, number>();
  private readonly deps: PinClockDeps;
  private readonly opts: PinClockOpts;
  private chain: Promise<void> = Promise.resolve();

  constructor(deps: PinClockDeps, opts: Partial<PinClockOpts> = {}) {
    this.deps = deps;
    this.opts = { ...defaultPinClockOpts, ...opts };
    if (!Number.isSafeInteger(this.opts.maxTracked) || this.opts.maxTracked < 1) {
      throw new RangeError(`maxTracked must be an integer >= 1, got ${this.opts.maxTracked}`);
    }
  }

  get tracked(): number {
    return this.handedAt.size;
  }

  handed(ids: readonly string[]): void {
    const t = (this.deps.now ?? Date.now)();
    for (const id of ids) {
      if (this.handedAt.has(id)) continue;
      this.handedAt.set(id, t);
      if (this.handedAt.size > this.opts.maxTracked) {
        const oldest = this.handedAt.keys().next().value;
        if (oldest !== undefined) this.handedAt.delete(oldest);
      }
    }
  }

  /** The node event's hook: serialised, and never throws (a closing store just ends it). */
  onNodeEvent(e: NodeEvent): void {
    if (e.event !== 'pinned' || (e.by[String(this.deps.self)] ?? 0) === 0) return;
    if (this.handedAt.size === 0) return;
    const at = (this.deps.now ?? Date.now)();
    this.chain = this.chain.then(() => this.pinnedBatch(e.height, at)).catch(() => undefined);
  }

  /** Resolves once the pinned batches seen so far are accounted for. */
  settled(): Promise<void> {
    return this.chain;
  }

  private async pinnedBatch(height: number, at: number): Promise<void> {
    const batch = await this.deps.getBatch(height);
    if (batch === undefined) return;
    for (const bundle of batch.bundles) {
      if (bundle.institution !== this.deps.self) continue;
      for (const tx of bundle.txs) {
        const id = txHashHex(tx);
        const t = this.handedAt.get(id);
        if (t === undefined) continue;
        this.handedAt.delete(id);
        this.deps.observe((at - t) / 1000);
      }
    }
  }
}
