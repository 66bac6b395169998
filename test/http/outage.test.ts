/**
 * The tx queue going away (as Redis does when it is down: every enqueue fails with QueueError
 * UNAVAILABLE): ingest goes on while the outbox holds the txs, answers 503 with Retry-After once
 * the outbox is over its bound (nothing stored for those), and when the queue is back every
 * acknowledged record is handed over and anchored.
 */
import type { Bundle, OperationOutcome } from '@medplum/fhirtypes';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { outcomeOf } from '../../src/fhir/outcome.ts';
import type { EmbeddedQueue } from '../../src/queue/embedded.ts';
import { QueueError } from '../../src/queue/errors.ts';
import type { EnqueuePort, JobSource } from '../../src/sidecar/ports.ts';
import { anchorAll } from '../sidecar/harness.ts';
import {
  type ApiHarness,
  AUTH,
  closeSharedParts,
  FHIR,
  openApiHarness,
  SSN,
  smallTransaction,
} from './harness.ts';

const P = { system: SSN, value: '999-30-0001', birthDate: '1950-03-03' };
let down = false;
let h: ApiHarness;

/** The embedded queue, unreachable while `down`. */
function flaky(q: EmbeddedQueue): EnqueuePort & JobSource {
  return {
    enqueue: (jobs) => {
      if (down) {
        return Promise.reject(
          new QueueError('UNAVAILABLE', 'redis is unreachable (test)', {}, { retryAfterMs: 2000 }),
        );
      }
      return q.enqueue(jobs);
    },
    take: (max, opts) => q.take(max, opts),
    ack: (ids) => q.ack(ids),
    fail: (id, reason) => q.fail(id, reason),
    extend: (ids) => q.extend(ids),
  };
}

beforeAll(async () => {
  h = await openApiHarness('outage', {
    identities: [P],
    wrapQueue: flaky,
    api: { transaction: { maxOutbox: 3, retryAfterSeconds: 7 } },
  });
}, 120_000);
afterAll(async () => {
  await h?.close();
  await closeSharedParts();
});

async function post(bundle: Bundle) {
  const res = await h.api.app.inject({
    method: 'POST',
    url: '/fhir',
    headers: { ...AUTH, ...FHIR },
    payload: JSON.stringify(bundle),
  });
  return { res, json: JSON.parse(res.body) as Record<string, unknown> };
}

it('keeps ingesting into the outbox, then answers 503 with Retry-After, and loses nothing', async () => {
  down = true;
  const acked: string[] = [];
  for (const tag of ['out1', 'out2']) {
    const { res, json } = await post(smallTransaction(P, 2, tag));
    expect(res.statusCode).toBe(200);
    for (const e of json.entry as { response: { location: string } }[]) {
      acked.push(e.response.location.split('/_history')[0]!);
    }
  }
  await h.sidecar.core.ingestor.handedOver();
  expect(h.sidecar.core.txLog.outboxSize).toBe(4);
  expect(h.sidecar.warnings.some((w) => w.startsWith('HANDOVER_FAILED'))).toBe(true);

  const refused = await post(smallTransaction(P, 2, 'out3'));
  expect(refused.res.statusCode).toBe(503);
  expect(refused.res.headers['retry-after']).toBe('7');
  expect((refused.json as unknown as OperationOutcome).issue?.[0]?.code).toBe('transient');
  expect(h.sidecar.core.txLog.outboxSize).toBe(4);

  down = false;
  await h.sidecar.core.ingestor.handOver();
  expect(h.sidecar.core.txLog.outboxSize).toBe(0);
  const again = await post(smallTransaction(P, 2, 'out3'));
  expect(again.res.statusCode).toBe(200);

  await anchorAll(h.sidecar);
  for (const ref of acked.filter((r) => r.startsWith('Observation/'))) {
    const res = await h.api.app.inject({
      method: 'GET',
      url: `/fhir/${ref}/_history`,
      headers: AUTH,
    });
    const bundle = JSON.parse(res.body) as Bundle;
    const state = bundle.entry![0]!.extension![0]!.extension!.find((e) => e.url === 'state');
    expect(state?.valueCode, ref).toBe('pinned');
  }
});

it('translates a queue outage anywhere into 503 with its Retry-After', () => {
  const o = outcomeOf(new QueueError('UNAVAILABLE', 'down', {}, { retryAfterMs: 2500 }));
  expect(o.status).toBe(503);
  expect(o.headers['retry-after']).toBe('3');
  expect(o.outcome.issue?.[0]?.code).toBe('transient');
});
