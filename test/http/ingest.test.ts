/**
 * Ingest through the FHIR API on real LevelDB and a real ledger: a Synthea patient's transaction
 * bundle gets a transaction-response entry per request entry, in order; re-posting it changes
 * nothing; its records are anchored (history shows them pinned) and read back; concurrent
 * conditional creates make one resource; batches fail per entry; every read and write leaves an
 * AuditEvent; the logs carry no patient data; and the same API answers over a real socket.
 */
import type { AuditEvent, Bundle, Observation, OperationOutcome } from '@medplum/fhirtypes';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANCHORING_EXTENSION } from '../../src/fhir/service.ts';
import { anchorAll } from '../sidecar/harness.ts';
import {
  type ApiHarness,
  AUTH,
  closeSharedParts,
  FHIR,
  openApiHarness,
  SSN,
  type SyntheaBundle,
  smallTransaction,
  syntheaBundles,
} from './harness.ts';

const synthea = syntheaBundles();
const largest = synthea.at(-1)!;
const small = synthea[0]!;
const C = { system: SSN, value: '999-20-0003', birthDate: '1966-06-06' };

let h: ApiHarness;
let app: FastifyInstance;

beforeAll(async () => {
  h = await openApiHarness('ingest', { identities: [largest.identity, small.identity, C] });
  app = h.api.app;
}, 120_000);
afterAll(async () => {
  await h?.close();
  await closeSharedParts();
});

interface ResponseBundle {
  resourceType: string;
  type: string;
  entry: ResponseEntry[];
}

interface ResponseEntry {
  response: { status: string; location?: string; etag?: string; outcome?: OperationOutcome };
  resource?: Record<string, unknown>;
}

async function postText(text: string, headers: Record<string, string> = {}) {
  const res = await app.inject({
    method: 'POST',
    url: '/fhir',
    headers: { ...AUTH, ...FHIR, ...headers },
    payload: text,
  });
  return { res, json: JSON.parse(res.body) as ResponseBundle };
}

function requestTypes(b: SyntheaBundle): string[] {
  return (b.bundle.entry ?? []).map((e) => e.request!.url.split('?')[0]!);
}

describe('a Synthea patient bundle posted as a transaction', () => {
  let first: ResponseBundle;

  it('gets a transaction-response with every entry, in request order, created', async () => {
    const { res, json } = await postText(largest.text);
    expect(res.statusCode).toBe(200);
    expect(json.type).toBe('transaction-response');
    const types = requestTypes(largest);
    expect(json.entry).toHaveLength(types.length);
    json.entry.forEach((e, i) => {
      expect(e.response.status, `entry ${i}`).toBe('201 Created');
      expect(e.response.location).toMatch(
        new RegExp(`^${types[i]}/[A-Za-z0-9.-]{1,64}/_history/1$`),
      );
      expect(e.response.etag).toBe('W/"1"');
    });
    first = json;
    const locations = new Set(json.entry.map((e) => e.response.location));
    expect(locations.size).toBe(types.length);
  }, 180_000);

  it('stores the resources with their references rewritten, readable back', async () => {
    const types = requestTypes(largest);
    const k = types.indexOf('Observation');
    const [type, id] = first.entry[k]!.response.location!.split('/');
    const res = await app.inject({ method: 'GET', url: `/fhir/${type}/${id}`, headers: AUTH });
    expect(res.statusCode).toBe(200);
    expect(res.headers.etag).toBe('W/"1"');
    const obs = JSON.parse(res.body) as Observation;
    const sent = largest.bundle.entry![k]!.resource as Observation;
    expect(obs.id).toBe(id);
    expect(obs.meta?.versionId).toBe('1');
    expect(obs.code).toEqual(sent.code);
    expect(obs.valueQuantity ?? obs.valueCodeableConcept).toEqual(
      sent.valueQuantity ?? sent.valueCodeableConcept,
    );
    const patientId = first.entry[types.indexOf('Patient')]!.response.location!.split('/')[1];
    expect(obs.subject?.reference).toBe(`Patient/${patientId}`);
    expect(res.body).not.toContain('urn:uuid:');
  });

  it('is idempotent: the same bundle again answers 200 with the same locations, nothing new', async () => {
    const txs = (await h.sidecar.core.txLog.entries()).length;
    const { res, json } = await postText(largest.text);
    expect(res.statusCode).toBe(200);
    json.entry.forEach((e, i) => {
      expect(e.response.status, `entry ${i}`).toBe('200 OK');
      expect(e.response.location).toBe(first.entry[i]!.response.location);
    });
    expect((await h.sidecar.core.txLog.entries()).length).toBe(txs);
  }, 180_000);

  it('has its records anchored: history shows each version pinned with its tx and batch', async () => {
    await anchorAll(h.sidecar);
    const types = requestTypes(largest);
    const k = types.indexOf('Condition');
    const location = first.entry[k]!.response.location!.split('/_history')[0];
    const res = await app.inject({
      method: 'GET',
      url: `/fhir/${location}/_history`,
      headers: AUTH,
    });
    expect(res.statusCode).toBe(200);
    const history = JSON.parse(res.body) as Bundle;
    expect(history.type).toBe('history');
    expect(history.entry).toHaveLength(1);
    const anchoring = history.entry![0]!.extension?.find((e) => e.url === ANCHORING_EXTENSION);
    const part = (name: string) => anchoring?.extension?.find((e) => e.url === name);
    expect(part('state')?.valueCode).toBe('pinned');
    expect(part('tx')?.valueString).toMatch(/^[0-9a-f]{64}$/);
    expect(part('batch')?.valueUnsignedInt).toBeGreaterThanOrEqual(1);
    const tx = await app.inject({
      method: 'GET',
      url: `/spchain/tx/${part('tx')!.valueString}`,
      headers: AUTH,
    });
    expect(JSON.parse(tx.body)).toMatchObject({ state: 'pinned' });
  }, 180_000);

  it('a correction (PUT of a stored record) makes version 2, a label tx', async () => {
    const types = requestTypes(largest);
    const k = types.indexOf('Observation');
    const [type, id] = first.entry[k]!.response.location!.split('/');
    const read = await app.inject({ method: 'GET', url: `/fhir/${type}/${id}`, headers: AUTH });
    const obs = JSON.parse(read.body) as Observation;
    const res = await app.inject({
      method: 'PUT',
      url: `/fhir/${type}/${id}`,
      headers: { ...AUTH, ...FHIR, 'if-match': 'W/"1"' },
      payload: JSON.stringify({ ...obs, status: 'entered-in-error' }),
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers.etag).toBe('W/"2"');
    expect(res.headers.location).toMatch(new RegExp(`/fhir/${type}/${id}/_history/2$`));
    const v1 = await app.inject({
      method: 'GET',
      url: `/fhir/${type}/${id}/_history/1`,
      headers: AUTH,
    });
    expect((JSON.parse(v1.body) as Observation).status).toBe(obs.status);
    const history = JSON.parse(
      (await app.inject({ method: 'GET', url: `/fhir/${type}/${id}/_history`, headers: AUTH }))
        .body,
    ) as Bundle;
    expect(history.entry?.map((e) => e.response?.etag)).toEqual(['W/"2"', 'W/"1"']);
    const txOf = (n: number) =>
      history.entry![n]!.extension![0]!.extension!.find((e) => e.url === 'tx')!.valueString;
    expect(txOf(0)).not.toBe(txOf(1));
  });
});

describe('Prefer: return=', () => {
  const patient = (name: string) =>
    JSON.stringify({
      resourceType: 'Patient',
      identifier: [{ system: C.system, value: `${C.value}-${name}` }],
      name: [{ text: name }],
    });
  const create = (name: string, prefer?: string) =>
    app.inject({
      method: 'POST',
      url: '/fhir/Patient',
      headers: { ...AUTH, ...FHIR, ...(prefer ? { prefer } : {}) },
      payload: patient(name),
    });

  it('a single create answers the resource, no body, or an OperationOutcome, as preferred', async () => {
    const plain = await create('prefer-default');
    expect(plain.statusCode).toBe(201);
    expect(JSON.parse(plain.body).resourceType).toBe('Patient');
    const rep = await create('prefer-rep', 'return=representation');
    expect(JSON.parse(rep.body).name[0].text).toBe('prefer-rep');

    const minimal = await create('prefer-minimal', 'return=minimal');
    expect(minimal.statusCode).toBe(201);
    expect(minimal.body).toBe('');
    expect(minimal.headers.location).toMatch(/\/fhir\/Patient\/[\w-]+\/_history\/1$/);
    expect(minimal.headers.etag).toBe('W/"1"');

    const oo = await create('prefer-oo', 'respond-async, return=OperationOutcome');
    expect(oo.statusCode).toBe(201);
    const outcome = JSON.parse(oo.body) as OperationOutcome;
    expect(outcome.resourceType).toBe('OperationOutcome');
    expect(outcome.issue?.[0]).toMatchObject({ severity: 'information', code: 'informational' });
    expect(outcome.issue?.[0]?.details?.text).toMatch(/^created Patient\/[\w-]+, version 1$/);
    // What was stored is the same whatever the answer looked like.
    const id = String(minimal.headers.location).split('/').at(-3);
    const read = await app.inject({ method: 'GET', url: `/fhir/Patient/${id}`, headers: AUTH });
    expect(JSON.parse(read.body).name[0].text).toBe('prefer-minimal');
  });

  it('a transaction puts the resource or an outcome in each entry, or neither', async () => {
    const bundle = (tag: string) =>
      JSON.stringify({
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          { resource: JSON.parse(patient(tag)), request: { method: 'POST', url: 'Patient' } },
        ],
      });
    const entryOf = async (tag: string, prefer?: string) =>
      (await postText(bundle(tag), prefer ? { prefer } : {})).json.entry[0]!;
    const none = await entryOf('tx-none');
    expect(none.resource).toBeUndefined();
    expect(none.response.outcome).toBeUndefined();
    const rep = await entryOf('tx-rep', 'return=representation');
    expect(rep.resource?.resourceType).toBe('Patient');
    const oo = await entryOf('tx-oo', 'return=OperationOutcome');
    expect(oo.resource).toBeUndefined();
    expect(oo.response.outcome?.issue?.[0]?.details?.text).toMatch(/^created Patient\//);
    expect((await entryOf('tx-min', 'return=minimal')).resource).toBeUndefined();
  });
});

describe('conditional create under concurrency', () => {
  it('ten concurrent creates of one condition make one resource', async () => {
    const posts = Array.from({ length: 10 }, (_, k) =>
      app.inject({
        method: 'POST',
        url: '/fhir/Patient',
        headers: { ...AUTH, ...FHIR, 'if-none-exist': `identifier=${C.system}|${C.value}` },
        // Different bytes each: this is not the idempotent re-post, it is the condition at work.
        payload: JSON.stringify({
          resourceType: 'Patient',
          identifier: [{ system: C.system, value: C.value }],
          birthDate: C.birthDate,
          name: [{ text: `attempt ${k}` }],
        }),
      }),
    );
    const results = await Promise.all(posts);
    const statuses = results.map((r) => r.statusCode).sort();
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 200, 200, 200, 201]);
    const locations = new Set(results.map((r) => r.headers.location));
    expect(locations.size).toBe(1);
    const matches = await h.api.resources.search('Patient', `identifier=${C.system}|${C.value}`);
    expect(matches).toHaveLength(1);
  });

  it('ifNoneExist inside concurrent transactions makes one resource too', async () => {
    const bundle = (k: number): Bundle => ({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          fullUrl: 'urn:uuid:0e000000-0000-4000-8000-000000000001',
          resource: {
            resourceType: 'Organization',
            identifier: [{ system: 'urn:test:org', value: 'clinic-1' }],
            name: `Clinic ${k}`,
          },
          request: {
            method: 'POST',
            url: 'Organization',
            ifNoneExist: 'identifier=urn:test:org|clinic-1',
          },
        },
      ],
    });
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, k) => postText(JSON.stringify(bundle(k)))),
    );
    const statuses = results.map((r) => r.json.entry[0]!.response.status).sort();
    expect(statuses).toEqual(['200 OK', '200 OK', '200 OK', '200 OK', '200 OK', '201 Created']);
    expect(
      await h.api.resources.search('Organization', 'identifier=urn:test:org|clinic-1'),
    ).toHaveLength(1);
  });
});

describe('re-posting a bundle with a conditional create', () => {
  it('maps every entry to the id it got the first time, though the condition now matches', async () => {
    const tx = smallTransaction(C, 2, 'cond');
    tx.entry!.unshift({
      fullUrl: 'urn:uuid:0c000000-0000-4000-8000-000000000009',
      resource: {
        resourceType: 'Organization',
        identifier: [{ system: 'urn:test:org', value: 'lab-9' }],
        name: 'Lab 9',
      },
      request: {
        method: 'POST',
        url: 'Organization',
        ifNoneExist: 'identifier=urn:test:org|lab-9',
      },
    });
    const text = JSON.stringify(tx);
    const first = await postText(text);
    expect(first.json.entry.map((e) => e.response.status)).toEqual(Array(4).fill('201 Created'));
    const txs = (await h.sidecar.core.txLog.entries()).length;
    const again = await postText(text);
    expect(again.json.entry.map((e) => e.response.status)).toEqual(Array(4).fill('200 OK'));
    expect(again.json.entry.map((e) => e.response.location)).toEqual(
      first.json.entry.map((e) => e.response.location),
    );
    expect((await h.sidecar.core.txLog.entries()).length).toBe(txs);
  });
});

describe('batch', () => {
  it('answers each entry on its own: good ones stored, a bad one gets its own status', async () => {
    const tx = smallTransaction(C, 0, 'batchp');
    const patient = await postText(JSON.stringify(tx));
    const patientRef = patient.json.entry[0]!.response.location!.split('/_history')[0]!;
    const obs = (value: number, extra: Record<string, unknown> = {}) => ({
      resource: {
        resourceType: 'Observation',
        status: 'final',
        code: { text: 'heart rate' },
        subject: { reference: patientRef },
        valueQuantity: { value, unit: 'beats/minute' },
        ...extra,
      },
      request: { method: 'POST', url: 'Observation' },
    });
    const batch = {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        obs(70),
        obs(71, { status: 'nonsense' }),
        obs(72, { subject: { reference: 'Patient/nobody' } }),
        obs(73),
      ],
    };
    const { res, json } = await postText(JSON.stringify(batch));
    expect(res.statusCode).toBe(200);
    expect(json.type).toBe('batch-response');
    expect(json.entry.map((e) => e.response.status)).toEqual([
      '201 Created',
      '422 Unprocessable Entity',
      '404 Not Found',
      '201 Created',
    ]);
    expect(json.entry[1]!.response.outcome?.issue?.[0]?.expression).toEqual([
      'Bundle.entry[1].resource.status',
    ]);
  });
});

describe('AuditEvents', () => {
  it('records every write and read, searchable by patient and by entity', async () => {
    const { json } = await postText(JSON.stringify(smallTransaction(C, 1, 'audit')));
    const patientRef = json.entry[0]!.response.location!.split('/_history')[0]!;
    const obsRef = json.entry[1]!.response.location!.split('/_history')[0]!;
    await app.inject({ method: 'GET', url: `/fhir/${obsRef}`, headers: AUTH });
    const byPatient = await app.inject({
      method: 'GET',
      url: `/fhir/AuditEvent?patient=${patientRef}`,
      headers: AUTH,
    });
    expect(byPatient.statusCode).toBe(200);
    const events = (JSON.parse(byPatient.body) as Bundle).entry!.map(
      (e) => e.resource as AuditEvent,
    );
    const kinds = events.map((e) => `${e.subtype?.[0]?.code}:${e.action}:${e.outcome}`);
    expect(kinds).toContain('transaction:E:0');
    expect(kinds).toContain('read:R:0');
    for (const e of events) {
      expect(e.agent[0]!.who?.identifier?.value).toBe('ehr');
      expect(e.entity?.some((x) => x.what?.reference === patientRef)).toBe(true);
    }
    const byEntity = await app.inject({
      method: 'GET',
      url: `/fhir/AuditEvent?entity=${obsRef}&_count=1`,
      headers: AUTH,
    });
    const page = JSON.parse(byEntity.body) as Bundle;
    expect(page.entry).toHaveLength(1);
    expect((page.entry![0]!.resource as AuditEvent).subtype?.[0]?.code).toBe('read');
    const next = page.link?.find((l) => l.relation === 'next')?.url;
    expect(next).toBeDefined();
    const older = await app.inject({
      method: 'GET',
      url: new URL(next!).pathname + new URL(next!).search,
      headers: AUTH,
    });
    expect((JSON.parse(older.body) as Bundle).entry?.[0]?.resource).toMatchObject({
      subtype: [{ code: 'transaction' }],
    });
  });
});

describe('logs', () => {
  it('carry request ids but no patient data: no identifier, name or birth date', () => {
    const text = h.logs.join('');
    expect(text).toContain('"reqId"');
    const name = largest.patient.name?.[0];
    for (const secret of [
      largest.identity.value,
      small.identity.value,
      C.value,
      largest.identity.birthDate,
      name?.family ?? 'never',
      ...(name?.given ?? []),
    ]) {
      expect(text).not.toContain(secret);
    }
    expect(text).not.toContain('Bearer');
  });
});

describe('over a real socket', () => {
  it('serves metadata and takes a bundle', async () => {
    const other = await openApiHarness('socket', { identities: [small.identity] });
    try {
      const url = await other.api.app.listen({ host: '127.0.0.1', port: 0 });
      const meta = await fetch(`${url}/fhir/metadata`);
      expect(meta.status).toBe(200);
      expect(meta.headers.get('content-type')).toMatch(/^application\/fhir\+json/);
      const res = await fetch(`${url}/fhir`, {
        method: 'POST',
        headers: { ...AUTH, ...FHIR },
        body: small.text,
      });
      expect(res.status).toBe(200);
      expect(res.headers.get('x-request-id')).toMatch(/./);
      const json = (await res.json()) as { entry: ResponseEntry[] };
      expect(json.entry).toHaveLength(small.bundle.entry!.length);
      expect(json.entry.every((e) => e.response.status === '201 Created')).toBe(true);
    } finally {
      await other.close();
    }
  }, 120_000);
});
