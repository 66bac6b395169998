/**
 * The FHIR API through HTTP (fastify.inject) on real LevelDB, a real ledger store and the real
 * validator: the CapabilityStatement, the authorisation hook, every kind of bad input with its
 * status and OperationOutcome, and that a failed transaction leaves no record and no tx behind.
 */
import type { Bundle, CapabilityStatement, OperationOutcome } from '@medplum/fhirtypes';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AUDIT_SPACES } from '../../src/fhir/audit.ts';
import { parseServerTiming } from '../../src/fhir/timings.ts';
import { staticTokenAuthoriser } from '../../src/http/auth.ts';
import { buildHttpServer } from '../../src/http/server.ts';
import { dumpDb } from '../sidecar/harness.ts';
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

// Synthetic test identities (not real people). B's home is institution 1: no upload grant here.
const A = { system: SSN, value: '999-10-0001', birthDate: '1980-01-01' };
const B = { system: SSN, value: '999-10-0002', birthDate: '1975-05-05' };
const UNREGISTERED = { system: SSN, value: '999-10-0099', birthDate: '1990-09-09' };

let h: ApiHarness;
let app: FastifyInstance;

beforeAll(async () => {
  h = await openApiHarness('api', { identities: [A, B], homes: [0, 1], members: 2 });
  app = h.api.app;
}, 120_000);
afterAll(async () => {
  await h?.close();
  await closeSharedParts();
});

async function post(body: unknown, url = '/fhir', headers: Record<string, string> = {}) {
  const res = await app.inject({
    method: 'POST',
    url,
    headers: { ...AUTH, ...FHIR, ...headers },
    payload: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { res, json: JSON.parse(res.body) as Record<string, unknown> };
}

function outcome(json: unknown): OperationOutcome {
  const o = json as OperationOutcome;
  expect(o.resourceType).toBe('OperationOutcome');
  expect(o.issue?.length).toBeGreaterThan(0);
  return o;
}

function expressions(json: unknown): string[] {
  return (outcome(json).issue ?? []).flatMap((i) => i.expression ?? []);
}

/** Every key and value of the sidecar's database but the AuditEvents (a failure is audited). */
async function dumpWithoutAudit(): Promise<Map<string, string>> {
  const all = await dumpDb(h.sidecar.store);
  const prefixes = Object.values(AUDIT_SPACES).map((s) => Buffer.from(`!${s}!`).toString('hex'));
  return new Map([...all].filter(([k]) => !prefixes.some((p) => k.startsWith(p))));
}

describe('GET /fhir/metadata', () => {
  it('is a public FHIR R4 CapabilityStatement with the SMART extension and per-type interactions', async () => {
    const res = await app.inject({ method: 'GET', url: '/fhir/metadata' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('application/fhir+json; charset=utf-8');
    const cs = JSON.parse(res.body) as CapabilityStatement;
    expect(cs.resourceType).toBe('CapabilityStatement');
    expect(cs.fhirVersion).toBe('4.0.1');
    const rest = cs.rest![0]!;
    expect(rest.interaction?.map((i) => i.code).sort()).toEqual(['batch', 'transaction']);
    const obs = rest.resource!.find((r) => r.type === 'Observation')!;
    expect(obs.interaction?.map((i) => i.code)).toEqual(
      expect.arrayContaining(['read', 'vread', 'history-instance', 'create', 'update']),
    );
    expect(obs.conditionalCreate).toBe(true);
    const audit = rest.resource!.find((r) => r.type === 'AuditEvent')!;
    expect(audit.searchParam?.map((p) => p.name)).toEqual(
      expect.arrayContaining(['patient', 'entity']),
    );
    expect(rest.security?.service?.[0]?.coding?.[0]?.code).toBe('SMART-on-FHIR');
    const uris = rest.security?.extension?.find(
      (e) => e.url === 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
    );
    expect(uris?.extension?.map((e) => e.url).sort()).toEqual([
      'authorize',
      'introspect',
      'revoke',
      'token',
    ]);
    const token = uris?.extension?.find((e) => e.url === 'token')?.valueUri;
    expect(token).toMatch(/\/smart\/token$/);
    expect(rest.security?.description).toMatch(/Backend Services/);
  });

  it('answers application/json when that is all the client accepts, 406 for XML', async () => {
    const json = await app.inject({
      method: 'GET',
      url: '/fhir/metadata',
      headers: { accept: 'application/json' },
    });
    expect(json.headers['content-type']).toBe('application/json; charset=utf-8');
    const xml = await app.inject({ method: 'GET', url: '/fhir/metadata?_format=xml' });
    expect(xml.statusCode).toBe(406);
    expect(outcome(JSON.parse(xml.body)).issue![0]!.code).toBe('not-supported');
    const fmt = await app.inject({ method: 'GET', url: '/fhir/metadata?_format=json' });
    expect(fmt.statusCode).toBe(200);
  });
});

describe('the authorisation hook', () => {
  it('refuses a write without a token: 401, WWW-Authenticate Bearer, OperationOutcome', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/fhir',
      headers: FHIR,
      payload: JSON.stringify(smallTransaction(A)),
    });
    expect(res.statusCode).toBe(401);
    expect(res.headers['www-authenticate']).toBe('Bearer realm="spchain-sidecar"');
    expect(outcome(JSON.parse(res.body)).issue![0]!.code).toBe('login');
  });

  it('refuses a wrong token with error="invalid_token", and reads too', async () => {
    const res = await app.inject({
      method: 'GET',
      url: '/fhir/Observation/x',
      headers: { authorization: `Bearer ${TOKEN}x` },
    });
    expect(res.statusCode).toBe(401);
    expect(res.headers['www-authenticate']).toMatch(/error="invalid_token"/);
    const basic = await app.inject({
      method: 'GET',
      url: '/fhir/Observation/x',
      headers: { authorization: `Basic ${Buffer.from(`ehr:${TOKEN}`).toString('base64')}` },
    });
    expect(basic.statusCode).toBe(401);
  });

  it('holds an unknown route to the token before saying 404', async () => {
    const anon = await app.inject({ method: 'GET', url: '/nothing/here' });
    expect(anon.statusCode).toBe(401);
    const authed = await app.inject({ method: 'GET', url: '/nothing/here', headers: AUTH });
    expect(authed.statusCode).toBe(404);
    expect(outcome(JSON.parse(authed.body)).issue![0]!.code).toBe('not-found');
  });

  it('lets no route be registered without an authorisation rule: the server does not start', async () => {
    const app = buildHttpServer(staticTokenAuthoriser(TOKEN), (a) => {
      a.get('/unguarded', async () => 'open');
    });
    await expect(app.ready()).rejects.toThrow(/declares no authorisation rule/);
  });
});

describe('bad input', () => {
  it('malformed JSON is 400', async () => {
    const { res, json } = await post('{"resourceType": "Bundle", ');
    expect(res.statusCode).toBe(400);
    expect(outcome(json).issue![0]!.code).toBe('structure');
  });

  it('a content type other than FHIR JSON is 415', async () => {
    for (const type of ['text/plain', 'application/xml', 'application/fhir+xml']) {
      const { res, json } = await post('<Bundle/>', '/fhir', { 'content-type': type });
      expect(res.statusCode, type).toBe(415);
      expect(outcome(json).issue![0]!.code).toBe('not-supported');
    }
    const { res } = await post(smallTransaction(A, 0), '/fhir', {
      'content-type': 'application/json; charset=utf-8',
    });
    expect(res.statusCode).toBe(200);
  });

  it('a resource that is not a Bundle, or a Bundle that is no transaction or batch, is 400', async () => {
    const obs = { resourceType: 'Observation', status: 'final', code: { text: 'x' } };
    const a = await post(obs);
    expect(a.res.statusCode).toBe(400);
    expect(expressions(a.json)).toEqual(['Observation']);
    const b = await post({ resourceType: 'Bundle', type: 'collection', entry: [] });
    expect(b.res.statusCode).toBe(400);
    expect(expressions(b.json)).toEqual(['Bundle.type']);
  });

  it('invalid resources are 422 with every issue and its expression', async () => {
    const bundle = smallTransaction(A, 2, 'inv');
    const entries = bundle.entry!;
    (entries[1]!.resource as unknown as Record<string, unknown>).status = 'nonsense';
    delete (entries[2]!.resource as unknown as Record<string, unknown>).code;
    const { res, json } = await post(bundle);
    expect(res.statusCode).toBe(422);
    const ex = expressions(json);
    expect(ex).toContain('Bundle.entry[1].resource.status');
    expect(ex).toContain('Bundle.entry[2].resource.code');
  });

  it('a reference to a Patient this server does not have is 404, naming the element', async () => {
    const bundle: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          resource: {
            resourceType: 'Observation',
            status: 'final',
            code: { text: 'heart rate' },
            subject: { reference: 'Patient/not-here' },
          },
          request: { method: 'POST', url: 'Observation' },
        },
      ],
    };
    const { res, json } = await post(bundle);
    expect(res.statusCode).toBe(404);
    expect(expressions(json)).toEqual(['Bundle.entry[0].resource.subject']);
  });

  it('a Patient not registered on the ledger is 422 naming the Patient entry', async () => {
    const { res, json } = await post(smallTransaction(UNREGISTERED, 1, 'unreg'));
    expect(res.statusCode).toBe(422);
    const o = outcome(json);
    expect(o.issue![0]!.code).toBe('business-rule');
    expect(o.issue![0]!.details?.text).toMatch(/not registered/);
    expect(expressions(json)).toEqual(['Bundle.entry[0].resource']);
  });

  it('a urn:uuid reference that names no entry of the transaction is 400', async () => {
    const bundle = smallTransaction(A, 1, 'unres');
    (bundle.entry![1]!.resource as unknown as Record<string, unknown>).performer = [
      { reference: 'urn:uuid:11111111-2222-4333-8444-555555555555' },
    ];
    const { res, json } = await post(bundle);
    expect(res.statusCode).toBe(400);
    expect(expressions(json)[0]).toMatch(/^Bundle\.entry\[1\]\.resource\.performer/);
  });

  it('two entries writing one resource are 409', async () => {
    const put = (value: number) => ({
      resource: {
        resourceType: 'Patient',
        id: 'twice',
        identifier: [{ system: A.system, value: A.value }],
        birthDate: A.birthDate,
        multipleBirthInteger: value,
      },
      request: { method: 'PUT', url: 'Patient/twice' },
    });
    const { res, json } = await post({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [put(1), put(2)],
    });
    expect(res.statusCode).toBe(409);
    expect(expressions(json)).toEqual(['Bundle.entry[1]']);
  });

  it('If-Match with another version is 412', async () => {
    const created = await app.inject({
      method: 'PUT',
      url: '/fhir/Patient/pm',
      headers: { ...AUTH, ...FHIR },
      payload: JSON.stringify({
        resourceType: 'Patient',
        id: 'pm',
        identifier: [{ system: A.system, value: A.value }],
        birthDate: A.birthDate,
      }),
    });
    expect(created.statusCode).toBe(201);
    expect(created.headers.etag).toBe('W/"1"');
    const stale = await app.inject({
      method: 'PUT',
      url: '/fhir/Patient/pm',
      headers: { ...AUTH, ...FHIR, 'if-match': 'W/"7"' },
      payload: JSON.stringify({
        resourceType: 'Patient',
        id: 'pm',
        identifier: [{ system: A.system, value: A.value }],
        birthDate: A.birthDate,
        gender: 'female',
      }),
    });
    expect(stale.statusCode).toBe(412);
    expect(expressions(JSON.parse(stale.body))).toEqual(['request ifMatch']);
  });

  it('a conditional create matching several resources is 412', async () => {
    for (const id of ['dup-1', 'dup-2']) {
      const r = await app.inject({
        method: 'PUT',
        url: `/fhir/Patient/${id}`,
        headers: { ...AUTH, ...FHIR },
        payload: JSON.stringify({
          resourceType: 'Patient',
          id,
          identifier: [
            { system: 'http://hospital.example.org/mrn', value: 'MRN-SHARED' },
            { system: A.system, value: A.value },
          ],
          birthDate: A.birthDate,
        }),
      });
      expect(r.statusCode).toBe(201);
    }
    const { res, json } = await post(
      {
        resourceType: 'Patient',
        identifier: [{ system: A.system, value: A.value }],
        birthDate: A.birthDate,
      },
      '/fhir/Patient',
      { 'if-none-exist': 'identifier=http://hospital.example.org/mrn|MRN-SHARED' },
    );
    expect(res.statusCode).toBe(412);
    expect(outcome(json).issue![0]!.code).toBe('multiple-matches');
  });

  it('a body over the configured limit is 413; the default admits real bundle sizes', async () => {
    const big = JSON.stringify({ resourceType: 'Basic', padding: 'x'.repeat(5 * 1024 * 1024) });
    const admitted = await post(big);
    expect(admitted.res.statusCode).toBe(400); // read and judged: not a Bundle
    const small = await openApiHarness('api-limit', {
      identities: [],
      api: { http: { bodyLimit: 64 * 1024, logLevel: 'silent' } },
    });
    try {
      const res = await small.api.app.inject({
        method: 'POST',
        url: '/fhir',
        headers: { ...AUTH, ...FHIR },
        payload: JSON.stringify({ resourceType: 'Bundle', padding: 'x'.repeat(100_000) }),
      });
      expect(res.statusCode).toBe(413);
      expect(outcome(JSON.parse(res.body)).issue![0]!.code).toBe('too-long');
    } finally {
      await small.close();
    }
  }, 60_000);

  it('DELETE and PATCH are 405: the ledger never forgets', async () => {
    const del = await app.inject({ method: 'DELETE', url: '/fhir/Observation/x', headers: AUTH });
    expect(del.statusCode).toBe(405);
    expect(del.headers.allow).toBe('GET, PUT');
    expect(outcome(JSON.parse(del.body)).issue![0]!.code).toBe('not-supported');
  });

  it('a read of something not stored is 404', async () => {
    const res = await app.inject({ method: 'GET', url: '/fhir/Observation/nope', headers: AUTH });
    expect(res.statusCode).toBe(404);
    const unknown = await app.inject({ method: 'GET', url: '/fhir/Spaceship/1', headers: AUTH });
    expect(unknown.statusCode).toBe(404);
  });
});

describe('a failed transaction', () => {
  it('leaves no record, no tx and no copy behind when a later record fails in the ingest', async () => {
    // A's records are fine; B has no leaf of this institution, so the ingest fails after it has
    // encrypted and signed A's records.
    await h.sidecar.core.ingestor.handedOver();
    const before = await dumpWithoutAudit();
    const outbox = h.sidecar.core.txLog.outboxSize;
    const txs = (await h.sidecar.core.txLog.entries()).length;
    const bundle = smallTransaction(A, 3, 'atom');
    const other = smallTransaction(B, 1, 'atomb');
    bundle.entry!.push(...other.entry!);
    const { res, json } = await post(bundle);
    expect(res.statusCode).toBe(422);
    expect(outcome(json).issue![0]!.details?.text).toMatch(/no leaf/);
    expect(expressions(json)).toEqual(['Bundle.entry[5]']);
    expect(await dumpWithoutAudit()).toEqual(before);
    expect(h.sidecar.core.txLog.outboxSize).toBe(outbox);
    expect((await h.sidecar.core.txLog.entries()).length).toBe(txs);
    // The failure itself is audited.
    const [last] = await h.api.audit.recent(1);
    expect(last?.outcome).toBe('4');
    expect(last?.outcomeDesc).toMatch(/^HTTP 422/);
  });

  it('leaves nothing behind when a precondition fails after the records are encrypted', async () => {
    const first = await post(smallTransaction(A, 1, 'pre'));
    expect(first.res.statusCode).toBe(200);
    // Where the time went, by stage, and nothing else.
    const stages = parseServerTiming(String(first.res.headers['server-timing']));
    for (const stage of ['validate', 'map', 'seal', 'stage', 'write']) {
      expect(stages.get(stage), stage).toBeGreaterThanOrEqual(0);
    }
    expect(String(first.res.headers['server-timing'])).toMatch(
      /^([a-z-]+;dur=\d+\.\d, )*[a-z-]+;dur=\d+\.\d$/,
    );
    await h.sidecar.core.ingestor.handedOver();
    const location = (first.json.entry as { response: { location: string } }[])[1]!.response
      .location;
    const [type, id] = location.split('/');
    const before = await dumpWithoutAudit();
    const txs = (await h.sidecar.core.txLog.entries()).length;
    const bundle = smallTransaction(A, 2, 'pre2');
    bundle.entry!.push({
      resource: {
        resourceType: 'Observation',
        id,
        status: 'amended',
        code: { text: 'heart rate' },
        subject: { reference: bundle.entry![0]!.fullUrl! },
      },
      request: { method: 'PUT', url: `${type}/${id}`, ifMatch: 'W/"9"' },
    });
    const { res, json } = await post(bundle);
    expect(res.statusCode).toBe(412);
    expect(expressions(json)).toEqual(['Bundle.entry[3].request.ifMatch']);
    expect(await dumpWithoutAudit()).toEqual(before);
    expect((await h.sidecar.core.txLog.entries()).length).toBe(txs);
  });
});
