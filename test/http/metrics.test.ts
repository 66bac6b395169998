/**
 * Metrics (src/http/metrics.ts) through the real API (test/http/harness.ts: real LevelDB stores,
 * embedded queue, anchor worker, test ledger): a small transaction bundle is posted and read
 * back, the txs are anchored and pinned, and `GET /metrics` shows the counters moved, in an
 * exposition that parses line by line (Prometheus text format 0.0.4, as prom-client writes it),
 * with no label value taken from a URL (ids) or a query, and no patient identifier anywhere.
 * The pin-latency clock reads real pinned batches of the ledger store. `GET /metrics` needs the
 * EHR token unless `metricsPublic`.
 */
import type { Bundle } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { staticTokenAuthoriser } from '../../src/http/auth.ts';
import { PinClock, SidecarMetrics } from '../../src/http/metrics.ts';
import { buildHttpServer } from '../../src/http/server.ts';
import type { NodeEvent } from '../../src/node/events.ts';
import { anchorAll } from '../sidecar/harness.ts';
import {
  type ApiHarness,
  AUTH,
  closeSharedParts,
  FHIR,
  openApiHarness,
  SSN,
  smallTransaction,
  TOKEN,
} from './harness.ts';

// A synthetic test identity (not a real person).
const A = { system: SSN, value: '999-70-0007', birthDate: '1970-07-07' };

let h: ApiHarness;
let metrics: SidecarMetrics;
let clock: PinClock;

interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/**
 * Parses an exposition strictly: every line a HELP or TYPE comment or a sample, every sample's
 * family declared by a TYPE line before it; throws naming the first line that is neither.
 */
function parseExposition(text: string): { samples: Sample[]; types: Map<string, string> } {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
  const sample = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)$`);
  const label = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(?:,|$)/;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const help = new RegExp(`^# HELP (${NAME}) .+$`).exec(line);
    if (help) continue;
    const type = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`).exec(
      line,
    );
    if (type) {
      types.set(type[1]!, type[2]!);
      continue;
    }
    const m = sample.exec(line);
    if (!m) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    let rest = m[2] ?? '';
    while (rest !== '') {
      const l = label.exec(rest);
      if (!l) throw new Error(`bad labels in: ${line}`);
      labels[l[1]!] = l[2]!;
      rest = rest.slice(l[0].length);
    }
    const value = Number(m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : m[3]);
    // Go's ParseFloat, which Prometheus uses, takes NaN in any case (prom-client writes `Nan`).
    if (Number.isNaN(value) && !/^nan$/i.test(m[3]!)) throw new Error(`bad value in: ${line}`);
    const family = m[1]!.replace(/_(bucket|sum|count|total|created)$/, '');
    if (!types.has(m[1]!) && !types.has(family)) throw new Error(`no TYPE before: ${line}`);
    samples.push({ name: m[1]!, labels, value });
  }
  return { samples, types };
}

/** The one sample of `name` whose labels include `labels`. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  if (found.length !== 1) {
    throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}`);
  }
  return found[0]!.value;
}

async function scrape(): Promise<{ text: string; samples: Sample[] }> {
  const res = await h.api.app.inject({ method: 'GET', url: '/metrics', headers: AUTH });
  expect(res.statusCode).toBe(200);
  expect(res.headers['content-type']).toBe(metrics.registry.contentType);
  return { text: res.body, samples: parseExposition(res.body).samples };
}

/** The node's 'pinned' events for the test ledger's batches above `from`, from the batches. */
async function pinnedEvents(from: number): Promise<NodeEvent[]> {
  const to = h.sidecar.ledger.store.tip().batch?.height ?? 0;
  const out: NodeEvent[] = [];
  for (let height = from + 1; height <= to; height++) {
    const batch = (await h.sidecar.ledger.store.getBatch(height))!;
    const by: Record<string, number> = {};
    for (const b of batch.bundles) by[b.institution] = (by[b.institution] ?? 0) + b.txs.length;
    out.push({
      event: 'pinned',
      height,
      hash: '00',
      round: 0,
      proposer: batch.proposer,
      txs: Object.values(by).reduce((x, y) => x + y, 0),
      bundles: batch.bundles.length,
      by,
      via: 'consensus',
    });
  }
  return out;
}

beforeAll(async () => {
  metrics = new SidecarMetrics();
  clock = new PinClock({
    self: 0,
    getBatch: (height) => h.sidecar.ledger.store.getBatch(height),
    observe: (s) => metrics.observePinLatency(s),
  });
  const logs: string[] = [];
  h = await openApiHarness('metrics', {
    identities: [A],
    wrapQueue: (q) => ({
      enqueue: (jobs) => {
        clock.handed(jobs.map((j) => j.id));
        return q.enqueue(jobs);
      },
      take: (max, o) => q.take(max, o),
      ack: (ids) => q.ack(ids),
      fail: (id, reason) => q.fail(id, reason),
      extend: (ids) => q.extend(ids),
    }),
    api: {
      http: {
        logLevel: 'info',
        logStream: { write: (line: string) => logs.push(line) },
        metrics,
      },
    },
  });
  metrics.attach({
    queue: async () => ({
      outbox: h.sidecar.core.txLog.outboxSize,
      ...(await h.sidecar.queue.stats()),
    }),
    node: {
      tip: () => ({
        height: h.sidecar.ledger.store.tip().batch?.height ?? 0,
        keyblockHeight: h.sidecar.ledger.store.tip().keyblock?.height ?? 0,
      }),
      stats: () => ({ peers: [] }),
    },
  });
}, 120_000);
afterAll(async () => {
  await h?.close();
  await closeSharedParts();
});

describe('GET /metrics', () => {
  it('refuses a scrape without the EHR token (401)', async () => {
    const res = await h.api.app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(401);
    expect(res.headers['www-authenticate']).toMatch(/^Bearer/);
  });

  it('counts an ingested bundle, its queue depth, the read, pinning and pin latency', async () => {
    const before = await scrape();
    expect(value(before.samples, 'spchain_ingest_resources_total')).toBe(0);
    const startHeight = h.sidecar.ledger.store.tip().batch?.height ?? 0;

    const post = await h.api.app.inject({
      method: 'POST',
      url: '/fhir',
      headers: { ...AUTH, ...FHIR },
      payload: JSON.stringify(smallTransaction(A, 2, 'metrics')),
    });
    expect(post.statusCode).toBe(200);
    const location = (JSON.parse(post.body) as Bundle).entry![1]!.response!.location!;
    const [type, id] = location.split('/');
    expect(type).toBe('Observation');
    const read = await h.api.app.inject({
      method: 'GET',
      url: `/fhir/Observation/${id}?_format=json`,
      headers: AUTH,
    });
    expect(read.statusCode).toBe(200);
    const refused = await h.api.app.inject({
      method: 'POST',
      url: '/fhir',
      headers: { ...AUTH, ...FHIR },
      payload: JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: [{}] }),
    });
    expect(refused.statusCode).toBe(422);

    const queued = await scrape();
    const s = queued.samples;
    expect(value(s, 'spchain_ingest_resources_total')).toBe(3);
    expect(value(s, 'spchain_ingest_bundles_total', { kind: 'bundle', outcome: 'accepted' })).toBe(
      1,
    );
    expect(value(s, 'spchain_ingest_bundles_total', { kind: 'bundle', outcome: 'rejected' })).toBe(
      1,
    );
    expect(
      value(s, 'spchain_ingest_duration_seconds_count', { kind: 'bundle', outcome: 'accepted' }),
    ).toBe(1);
    // Each stage of the accepted bundle once (the refused one stopped at validation: twice).
    for (const stage of ['map', 'check', 'plan', 'seal', 'stage', 'write']) {
      expect(value(s, 'spchain_ingest_stage_seconds_count', { stage }), stage).toBe(1);
    }
    expect(value(s, 'spchain_ingest_stage_seconds_count', { stage: 'validate' })).toBe(2);
    expect(
      value(s, 'spchain_http_request_duration_seconds_count', {
        route: '/fhir',
        method: 'POST',
        status: '2xx',
      }),
    ).toBe(1);
    expect(
      value(s, 'spchain_http_request_duration_seconds_count', {
        route: '/fhir/:type/:id',
        method: 'GET',
        status: '2xx',
      }),
    ).toBe(1);
    expect(value(s, 'spchain_queue_depth')).toBeGreaterThan(0);
    expect(value(s, 'spchain_queue_jobs', { stage: 'waiting' })).toBeGreaterThan(0);
    expect(clock.tracked).toBeGreaterThan(0);

    // Anchor and pin; the node would report each pinned batch.
    const pinned = await anchorAll(h.sidecar);
    expect(pinned).toBeGreaterThan(0);
    const events = await pinnedEvents(startHeight);
    expect(events.length).toBeGreaterThan(0);
    for (const e of events) {
      metrics.onNodeEvent(e);
      clock.onNodeEvent(e);
    }
    await clock.settled();

    const after = await scrape();
    const a = after.samples;
    expect(value(a, 'spchain_txs_pinned_total')).toBe(pinned);
    expect(value(a, 'spchain_pin_latency_seconds_count')).toBe(pinned);
    expect(clock.tracked).toBe(0);
    expect(value(a, 'spchain_queue_depth')).toBe(0);
    expect(value(a, 'spchain_chain_height')).toBe(h.sidecar.ledger.store.tip().batch!.height);
    expect(value(a, 'spchain_peers_connected')).toBe(0);
    expect(value(a, 'spchain_process_resident_memory_bytes')).toBeGreaterThan(0);

    // No label value carries an id from a URL, a query, or the patient's identifier.
    for (const sample of a) {
      for (const v of Object.values(sample.labels)) {
        expect(v).not.toContain(id!);
        expect(v).not.toContain('?');
        expect(v).not.toContain('_format');
      }
    }
    expect(after.text).not.toContain(A.value);
    expect(after.text).not.toContain(id!);
  });

  it('counts reputations, the consensus group and shared-record verification failures', async () => {
    metrics.onNodeEvent({
      event: 'chunk',
      completed: 3,
      height: 9,
      reputations: { '0': 0.75, '1': 0.5, '2': 0.25 },
      group: [0, 1],
    });
    metrics.observeShareFetch({
      holders: [
        { holder: 1, status: 'served', fetched: 2, cached: 0 },
        { holder: 2, status: 'unreachable', fetched: 0, cached: 0 },
      ],
      warnings: [
        { code: 'BAD_CFRAG', holder: 1, message: 'm' },
        { code: 'BAD_CFRAG', holder: 1, message: 'm' },
        { code: 'NOT_PINNED', holder: 1, message: 'm' },
        { code: 'UNREACHABLE', holder: 2, message: 'm' },
      ],
    });
    const { samples } = await scrape();
    expect(value(samples, 'spchain_reputation', { member: '1' })).toBe(0.5);
    expect(value(samples, 'spchain_consensus_group_member', { member: '1' })).toBe(1);
    expect(value(samples, 'spchain_consensus_group_member', { member: '2' })).toBe(0);
    expect(
      value(samples, 'spchain_share_verification_failures_total', { reason: 'BAD_CFRAG' }),
    ).toBe(2);
    expect(
      value(samples, 'spchain_share_verification_failures_total', { reason: 'NOT_PINNED' }),
    ).toBe(1);
    expect(
      samples.some(
        (x) =>
          x.name === 'spchain_share_verification_failures_total' &&
          x.labels.reason === 'UNREACHABLE',
      ),
    ).toBe(false);
    expect(value(samples, 'spchain_share_fetches_total', { status: 'unreachable' })).toBe(1);
  });

  it('labels a request for no route "(no route)", never by its URL', async () => {
    const res = await h.api.app.inject({
      method: 'GET',
      url: '/nothing/999-70-0007?name=Testperson',
      headers: AUTH,
    });
    expect(res.statusCode).toBe(404);
    const { text, samples } = await scrape();
    expect(
      value(samples, 'spchain_http_request_duration_seconds_count', {
        route: '(no route)',
        method: 'GET',
        status: '4xx',
      }),
    ).toBe(1);
    expect(text).not.toContain('999-70-0007');
    expect(text).not.toContain('Testperson');
  });
});

describe('metricsPublic', () => {
  it('serves /metrics without a token only when the option says so', async () => {
    for (const metricsPublic of [false, true]) {
      const m = new SidecarMetrics({ processMetrics: false });
      const app = buildHttpServer(staticTokenAuthoriser(TOKEN), () => undefined, {
        logLevel: 'silent',
        metrics: m,
        metricsPublic,
      });
      const res = await app.inject({ method: 'GET', url: '/metrics' });
      expect(res.statusCode).toBe(metricsPublic ? 200 : 401);
      if (metricsPublic) {
        expect(res.headers['content-type']).toBe(m.registry.contentType);
        parseExposition(res.body);
        expect(res.body).toContain('# HELP spchain_txs_pinned_total');
      }
      await app.close();
    }
  });

  it('keeps each sidecar on its own registry, not the global default', async () => {
    const { register } = await import('prom-client');
    const one = new SidecarMetrics({ processMetrics: false });
    const two = new SidecarMetrics({ processMetrics: false });
    one.observeIngest('create', 201, 1, 5);
    const text = (await two.scrape()).text;
    expect(value(parseExposition(text).samples, 'spchain_ingest_resources_total')).toBe(0);
    expect(register.getSingleMetric('spchain_ingest_resources_total')).toBeUndefined();
  });
});
