/**
 * A real Redis outage under the HTTP API (issue 5, "Bad input and faults"): the sidecar's queue is
 * a BullQueue on a redis-server this test starts itself (its own port below the ephemeral range,
 * appendonly + appendfsync always in a temp dir; the machine's server on 6379 is never touched).
 * Transaction bundles are posted while that server is SIGKILLed and later restarted on the same
 * port and directory. Every answer must be 200 (records durable, their txs in the outbox) or 503
 * with Retry-After and a `transient` OperationOutcome, and once Redis is back every acknowledged
 * record must be readable and pinned exactly once, while refused bundles leave nothing behind.
 *
 * The anchor worker and the periodic hand-over run throughout, so the consumer side goes through
 * the outage too: leases taken just before the kill, and fetches whose replies were lost, come
 * back after the restart and must not put any tx in the ledger twice.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Bundle, Extension, OperationOutcome } from '@medplum/fhirtypes';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ANCHORING_EXTENSION } from '../../src/fhir/service.ts';
import { deriveId } from '../../src/fhir/transaction.ts';
import { txHashHex } from '../../src/ledger/tx.ts';
import { BullQueue } from '../../src/queue/bull.ts';
import type { EnqueuePort, JobSource } from '../../src/sidecar/ports.ts';
import { freePort, OwnRedis } from '../queue/redis-helpers.ts';
import {
  type ApiHarness,
  AUTH,
  closeSharedParts,
  FHIR,
  openApiHarness,
  SSN,
  smallTransaction,
} from './harness.ts';

const P = { system: SSN, value: '999-31-0001', birthDate: '1951-04-04' };
/** Txs the outbox may hold before writes answer 503 (each bundle below signs 2 txs). */
const MAX_OUTBOX = 6;
const RETRY_AFTER_S = 3;
/** A generous bound on any one request or wait: a hang guard, not a timing check. */
const REQUEST_LIMIT_MS = 15_000;
const RECOVERY_LIMIT_MS = 30_000;

let redis: OwnRedis | undefined;
let bull: BullQueue | undefined;
let h: ApiHarness | undefined;

/**
 * The BullQueue as the sidecar core sees it. The test harness runs its anchor worker with
 * `takeWaitMs: 0`, which suits the embedded queue driven by hand; against Redis with the worker
 * running that would be a busy loop of fetches, so every `take` here waits up to 200 ms for a job.
 */
function queueView(q: BullQueue): EnqueuePort & JobSource {
  return {
    enqueue: (jobs) => q.enqueue(jobs),
    take: (max, opts) => q.take(max, { waitMs: Math.max(opts?.waitMs ?? 0, 200) }),
    ack: (ids) => q.ack(ids),
    fail: (id, reason) => q.fail(id, reason),
    extend: (ids) => q.extend(ids),
  };
}

beforeAll(async () => {
  redis = new OwnRedis(await freePort(), await mkdtemp(join(tmpdir(), 'spchain-redis-')));
  await redis.start();
  // Short leases and stall checks: jobs leased when Redis dies come back soon after it returns.
  // A short reconnect pause: the producer is back soon after the restart.
  bull = await BullQueue.open(redis.url, {
    prefix: 'redis-outage',
    leaseMs: 1000,
    stalledIntervalMs: 300,
    commandTimeoutMs: 2000,
    connectTimeoutMs: 5000,
    reconnectMaxMs: 200,
  });
  const queue = bull;
  h = await openApiHarness('redis-outage', {
    identities: [P],
    wrapQueue: () => queueView(queue),
    api: { transaction: { maxOutbox: MAX_OUTBOX, retryAfterSeconds: RETRY_AFTER_S } },
  });
  h.sidecar.core.start(100);
}, 120_000);

afterAll(async () => {
  // Every step runs, each within a bound, even when an earlier one fails or hangs (closing a
  // BullQueue while its Redis is down, after a failed assertion, must not keep the redis-server
  // alive); the first failure is reported after them.
  const steps: Array<[string, () => Promise<unknown> | undefined]> = [
    ['closing the API and sidecar', () => h?.close()],
    ['closing the BullQueue', () => bull?.close()],
    ['killing the redis-server', () => redis?.kill()],
    [
      'removing the Redis dir',
      () => (redis ? rm(redis.dir, { recursive: true, force: true }) : undefined),
    ],
    ['closing the validator', () => closeSharedParts()],
  ];
  const failures: unknown[] = [];
  for (const [what, step] of steps) {
    try {
      await bounded(Promise.resolve(step()), REQUEST_LIMIT_MS, what);
    } catch (err) {
      failures.push(err);
    }
  }
  if (failures.length > 0) throw failures[0];
}, 120_000);

/** Rejects naming `what` when `p` has not settled within `ms`. */
async function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `cond` every 50 ms; fails naming `what` after `limitMs`. */
async function waitUntil(cond: () => Promise<boolean>, what: string, limitMs: number) {
  const end = Date.now() + limitMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${limitMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface Posted {
  readonly tag: string;
  /** The exact request body: the created ids are derived from its digest. */
  readonly text: string;
  readonly entries: number;
  readonly status: number;
  /** `Type/id` of every entry, for a 200. */
  readonly refs: readonly string[];
}

async function post(tag: string): Promise<Posted> {
  const api = h!.api;
  const bundle = smallTransaction(P, 2, tag);
  const text = JSON.stringify(bundle);
  const res = await bounded(
    api.app.inject({
      method: 'POST',
      url: '/fhir',
      headers: { ...AUTH, ...FHIR },
      payload: text,
    }),
    REQUEST_LIMIT_MS,
    `POST /fhir of bundle ${tag}`,
  );
  const json = JSON.parse(res.body) as Record<string, unknown>;
  const entries = bundle.entry!.length;
  if (res.statusCode === 200) {
    const response = json as unknown as Bundle;
    expect(response.type, tag).toBe('transaction-response');
    expect(response.entry, tag).toHaveLength(entries);
    const refs = response.entry!.map((e) => {
      expect(e.response?.status, tag).toBe('201 Created');
      return e.response!.location!.split('/_history/')[0]!;
    });
    return { tag, text, entries, status: 200, refs };
  }
  expect(res.statusCode, `${tag}: ${res.body}`).toBe(503);
  expect(res.headers['retry-after'], tag).toMatch(/^[1-9]\d*$/);
  const outcome = json as unknown as OperationOutcome;
  expect(outcome.resourceType, tag).toBe('OperationOutcome');
  expect(outcome.issue?.[0]?.code, tag).toBe('transient');
  return { tag, text, entries, status: 503, refs: [] };
}

/** The ids the API derives for a transaction's created resources (transaction.ts deriveId). */
function derivedIds(p: Posted): string[] {
  const digest = createHash('sha256')
    .update('spchain/fhir/transaction\n')
    .update(Buffer.from(p.text))
    .digest();
  return Array.from({ length: p.entries }, (_, n) => deriveId(digest, n));
}

async function get(url: string) {
  return bounded(
    h!.api.app.inject({ method: 'GET', url, headers: AUTH }),
    REQUEST_LIMIT_MS,
    `GET ${url}`,
  );
}

/** The anchoring of a resource's current version: its record tx and state (from `_history`). */
async function anchoringOf(ref: string): Promise<{ tx: string; state: string }> {
  const res = await get(`/fhir/${ref}/_history`);
  expect(res.statusCode, ref).toBe(200);
  const bundle = JSON.parse(res.body) as Bundle;
  const ext = bundle.entry?.[0]?.extension?.find((e) => e.url === ANCHORING_EXTENSION);
  const part = (url: string) => ext?.extension?.find((e: Extension) => e.url === url);
  const tx = part('tx')?.valueString;
  const state = part('state')?.valueCode;
  if (tx === undefined || state === undefined) throw new Error(`${ref}: no anchoring extension`);
  return { tx, state };
}

it('answers 200 or 503 with Retry-After while Redis is SIGKILLed, and pins every acknowledged record once', async () => {
  const own = redis!;
  const core = h!.sidecar.core;
  const ledger = h!.sidecar.ledger;
  const posted: Posted[] = [];

  // Redis up: a few bundles go through, and their txs reach the queue.
  for (let k = 0; k < 2; k++) posted.push(await post(`up${k}`));
  // A consumer that dies holding leases: with the worker paused, the next bundle's txs are taken
  // here and never acked, so they come back only when their leases end (maybe across the outage),
  // after the worker has submitted later txs of the same leaf.
  await bounded(core.anchorer.stop(), REQUEST_LIMIT_MS, 'the anchor worker to pause');
  for (let k = 2; k < 4; k++) posted.push(await post(`up${k}`));
  expect(posted.map((p) => p.status)).toEqual([200, 200, 200, 200]);
  await bounded(core.ingestor.handedOver(), REQUEST_LIMIT_MS, 'the hand-over before the kill');
  const held = await bounded(bull!.take(2), REQUEST_LIMIT_MS, 'leases held across the kill');
  expect(held).toHaveLength(2);
  core.anchorer.start();

  // SIGKILL while a bundle is being ingested (its hand-over may or may not reach Redis).
  const anchorFailures = () =>
    h!.sidecar.warnings.filter((w) => w.startsWith('ANCHOR_FAILED')).length;
  const failuresBefore = anchorFailures();
  const [during] = await Promise.all([post('kill'), own.kill()]);
  posted.push(during);
  expect(during.status).toBe(200);

  // Redis down: the outbox takes the txs until it is over its bound, then writes answer 503.
  const outage: Posted[] = [];
  for (let k = 0; k < 7; k++) outage.push(await post(`down${k}`));
  posted.push(...outage);
  const statuses = outage.map((p) => p.status);
  expect(statuses[0], 'the first write after the kill lands in the outbox').toBe(200);
  expect(statuses, 'writes are refused once the outbox is over its bound').toContain(503);
  // Once refused, refused until the queue takes txs again: the outbox only grows while Redis is down.
  expect(
    statuses.slice(statuses.indexOf(503)).every((s) => s === 503),
    String(statuses),
  ).toBe(true);
  expect(core.txLog.outboxSize).toBeGreaterThan(MAX_OUTBOX);
  expect(h!.sidecar.warnings.some((w) => w.startsWith('HANDOVER_FAILED'))).toBe(true);
  // Redis stays down until the anchor worker's fetches have timed out as well, so that the
  // consumer side goes through the outage too (a fetch whose reply is lost may still lease a job
  // once Redis is back: that job, too, must come back and be pinned once).
  await waitUntil(
    async () => anchorFailures() > failuresBefore,
    'the anchor worker to report the outage',
    RECOVERY_LIMIT_MS,
  );

  // Redis back on the same port and directory: the periodic hand-over empties the outbox.
  await own.start();
  await waitUntil(
    async () => core.txLog.outboxSize === 0,
    'the periodic hand-over to empty the outbox after the restart',
    RECOVERY_LIMIT_MS,
  );
  for (let k = 0; k < 2; k++) {
    const again = await post(`back${k}`);
    posted.push(again);
    expect(again.status, `bundle back${k} after the restart`).toBe(200);
  }

  const acked = posted.filter((p) => p.status === 200);
  const refused = posted.filter((p) => p.status === 503);
  const records = acked.flatMap((p) => p.refs.filter((r) => r.startsWith('Observation/')));
  expect(records.length).toBe(acked.length * 2);

  // The anchor worker submits everything to the mempool; pin until every record is pinned. A
  // redelivered job can trail later txs of its leaf: the worker then takes the missing txs from
  // the outbox and offers them first (anchor.ts, gaps), so no sweep is needed to unblock them.
  await waitUntil(
    async () => {
      await ledger.pinAll();
      for (const ref of records) {
        if ((await anchoringOf(ref)).state !== 'pinned') return false;
      }
      return true;
    },
    'every acknowledged record to be submitted by the anchor worker and pinned',
    RECOVERY_LIMIT_MS,
  );
  // Deliveries lost in the outage come back when their leases end, and are acked as pinned.
  await waitUntil(
    async () => {
      const s = await bull!.stats();
      return s.waiting + s.active + s.delayed === 0;
    },
    'the queue to drain (redelivered jobs acked)',
    RECOVERY_LIMIT_MS,
  );
  expect(await bull!.stats()).toEqual({ waiting: 0, active: 0, delayed: 0, failed: 0 });
  await core.anchorer.sweep();
  expect(await core.txLog.entries(), 'no own tx left unpinned').toEqual([]);

  // Every acknowledged resource reads back, and the ids are the ones derived from the request.
  for (const p of acked) {
    expect(new Set(p.refs.map((r) => r.split('/')[1]))).toEqual(new Set(derivedIds(p)));
    for (const ref of p.refs) expect((await get(`/fhir/${ref}`)).statusCode, ref).toBe(200);
  }
  // Refused bundles left nothing behind, under any of the ids they would have got.
  for (const p of refused) {
    for (const id of derivedIds(p)) {
      for (const type of ['Patient', 'Observation']) {
        expect((await get(`/fhir/${type}/${id}`)).statusCode, `${p.tag}: ${type}/${id}`).toBe(404);
      }
    }
  }

  // The ledger holds each acknowledged record's tx exactly once, and nothing else.
  const pinned: string[] = [];
  const seqs: string[] = [];
  const height = ledger.store.tip().batch?.height ?? 0;
  for (let n = 1; n <= height; n++) {
    const batch = await ledger.store.getBatch(n);
    if (batch === undefined) throw new Error(`batch ${n} is missing from the ledger store`);
    for (const bundle of batch.bundles) {
      for (const tx of bundle.txs) {
        pinned.push(txHashHex(tx));
        if (tx.type !== 'leaf')
          seqs.push(`${tx.block.i}.${tx.block.j}/${tx.institution}#${tx.seq}`);
      }
    }
  }
  const txs = await Promise.all(records.map(async (ref) => (await anchoringOf(ref)).tx));
  expect(new Set(pinned).size, 'no tx pinned twice').toBe(pinned.length);
  expect(new Set(seqs).size, 'no leaf seq pinned twice').toBe(seqs.length);
  expect(new Set(txs).size, 'one tx per acknowledged record').toBe(records.length);
  expect(pinned.length, 'pinned txs = acknowledged records').toBe(records.length);
  expect(new Set(pinned)).toEqual(new Set(txs));

  // Nothing of the patient's in the logs or warnings.
  const said = [...h!.logs, ...h!.sidecar.warnings].join('\n');
  expect(said).not.toContain(P.value);
  expect(said).not.toContain(P.birthDate);
}, 120_000);
