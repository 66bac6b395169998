/**
 * Reading a shared record by id, and its Provenance by id, as a clinician's FHIR client does after
 * `$everything` (it follows an entry's fullUrl, or a Provenance's id). Three institutions in one
 * process (share-net.ts: real LevelDB stores, real libp2p on loopback, the real validator and
 * mapping): the patient's home A (hospital-0) and B (hospital-1) hold records, and both use the
 * id `dup-1` for an Observation of their own; C (hospital-2) is granted and reads. C runs a SMART
 * token service too, so that patient tokens can be tried.
 */
import type { Bundle, Observation, OperationOutcome, Provenance } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { revocationToJson, signRevocation } from '../../src/authz/consent.ts';
import { grantToJson, makeGrant } from '../../src/authz/grant.ts';
import { toHex } from '../../src/crypto/bytes.ts';
import { HOLDER_ID_EXTENSION } from '../../src/fhir/patient-records.ts';
import { ledgerValue } from '../../src/fhir/provenance.ts';
import { ClientRegistry, parseClients } from '../../src/smart/clients.ts';
import { newSigningKey, TokenService } from '../../src/smart/tokens.ts';
import { AUTH, closeSharedParts, SSN, smallTransaction } from './harness.ts';
import { call, getBundle, giveLeaf, openShareApiNet, type ShareApiNet } from './share-net.ts';

const A = 0;
const B = 1;
const C = 2;
const HOUR = 3_600_000;
const IDENTITY = { system: SSN, value: '999-41-0007', birthDate: '1968-02-29' };
/** An id both holders use too, so long that `{id}.{holder}` is no FHIR id. */
const LONG = `long-${'x'.repeat(59)}`;

let s: ShareApiNet;
let tokens: TokenService;
/** The patient's id at C: the ledger patient's idHash. */
let pid: string;
/** The Patient id at A and at B (their own copies), and the Observations each posted. */
const own: Record<number, string> = {};
const posted: Record<number, string[]> = { [A]: [], [B]: [] };

const matches = (b: Bundle) => (b.entry ?? []).filter((e) => e.search?.mode === 'match');
const provenances = (b: Bundle) =>
  (b.entry ?? [])
    .filter((e) => e.resource?.resourceType === 'Provenance')
    .map((e) => e.resource as Provenance);
const issues = (r: { json: Record<string, unknown> }) =>
  (r.json as unknown as OperationOutcome).issue ?? [];
const texts = (r: { json: Record<string, unknown> }) =>
  issues(r)
    .map((i) => i.details?.text ?? '')
    .join('\n');

/** C's AuditEvents about `ref` of one interaction (subtype). */
async function auditEvents(ref: string, subtype: string) {
  const events = await getBundle(s, C, `/fhir/AuditEvent?entity=${ref}&_count=100`);
  return matches(events)
    .map(
      (e) =>
        e.resource as unknown as {
          subtype?: { code?: string }[];
          outcome?: string;
          entity?: { what?: { reference?: string } }[];
        },
    )
    .filter((e) => e.subtype?.[0]?.code === subtype);
}

/** GET at `at` with a SMART access token instead of the EHR's. */
async function withToken(
  at: number,
  url: string,
  token: string,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await s.apis[at]!.app.inject({
    method: 'GET',
    url,
    headers: { authorization: `Bearer ${token}` },
  });
  return { status: res.statusCode, json: JSON.parse(res.body) as Record<string, unknown> };
}

/** An access token of C's for a patient launch of `patient` with `scope`. */
async function patientToken(patient: string, scope: string): Promise<string> {
  const { token } = await tokens.issueAccessToken(
    { clientId: 'chart-app', scope, patient, idHash: patient, sub: `Patient/${patient}` },
    600,
  );
  return token;
}

/** POST or PUT at `at` that must succeed; the answer's `Type/id`s. */
async function write(at: number, method: 'POST' | 'PUT', url: string, body: unknown) {
  const r = await call(s, at, method, url, body);
  expect(r.status, JSON.stringify(r.json).slice(0, 400)).toBeLessThan(300);
  return r.json;
}

async function everything(at: number, id: string): Promise<Bundle> {
  return getBundle(s, at, `/fhir/Patient/${id}/$everything?_count=1000`);
}

function observation(patient: string, value: number): Observation {
  return {
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
    subject: { reference: `Patient/${patient}` },
    valueQuantity: { value, unit: 'beats/minute' },
  };
}

beforeAll(async () => {
  const clients = new ClientRegistry(
    parseClients(
      {
        clients: [
          {
            clientId: 'chart-app',
            name: 'Chart app',
            kind: 'public',
            redirectUris: ['http://127.0.0.1:9/callback'],
            scope: 'launch/patient patient/*.rs',
          },
        ],
      },
      'test clients',
    ),
  );
  const key = await newSigningKey();
  s = await openShareApiNet('shared-read', [IDENTITY], 3, (inst) => {
    if (inst.index !== C) return {};
    tokens = new TokenService({
      fhirBase: () => 'http://localhost/fhir',
      key,
      db: inst.core.store.db,
    });
    return { smart: { clients, tokens } };
  });
  const P = s.patients[0]!;
  pid = toHex(P.idHash);
  const { chainId, members } = s.net.fixture.genesis;

  // B gets a leaf under the patient's upload grant, sent to A (the home).
  await giveLeaf(s, P, B);

  // Each holder: its own Patient and two Observations, then two more under the ids `dup-1` and
  // LONG.
  for (const [at, tag] of [
    [A, 'aa'],
    [B, 'bb'],
  ] as const) {
    const bundle = (await write(
      at,
      'POST',
      '/fhir',
      smallTransaction(IDENTITY, 2, tag),
    )) as unknown as Bundle;
    for (const e of bundle.entry ?? []) {
      const ref = e.response!.location!.split('/_history')[0]!;
      if (ref.startsWith('Patient/')) own[at] = ref.split('/')[1]!;
      else posted[at]!.push(ref);
    }
    await write(at, 'PUT', '/fhir/Observation/dup-1', {
      ...observation(own[at]!, at === A ? 70 : 71),
      id: 'dup-1',
    });
    await write(at, 'PUT', `/fhir/Observation/${LONG}`, {
      ...observation(own[at]!, at === A ? 80 : 81),
      id: LONG,
    });
  }
  expect(await s.net.anchorAll()).toBe(8);

  // The patient's grant for C, to both holders.
  const grant = makeGrant({
    chainId,
    idHash: P.idHash,
    patientPreSecret: P.preSecret,
    patientSigningSecret: P.signingSecret,
    grantee: { index: C, preKey: members[C]!.preKey },
    consentId: 'consent-read',
    start: s.net.now - HOUR,
    end: s.net.now + 24 * HOUR,
    now: s.net.now,
  });
  for (const at of [A, B]) {
    const r = await call(s, at, 'POST', '/spchain/grants', grantToJson(grant), false);
    expect(r.status).toBe(201);
  }
}, 180_000);

afterAll(async () => {
  await s?.close();
  await closeSharedParts();
});

describe('before anything was fetched', () => {
  it('a shared record never fetched here is a 404 that says so, and names $everything', async () => {
    const r = await call(s, C, 'GET', `/fhir/${posted[B]![0]}`);
    expect(r.status).toBe(404);
    expect(r.json.resourceType).toBe('OperationOutcome');
    expect(issues(r)[0]!.code).toBe('not-found');
    expect(texts(r)).toMatch(/is not held here/);
    expect(texts(r)).toMatch(/\$everything/);
    // The same for a Provenance id nobody served here, and for one that is not even a tx hash.
    for (const id of ['ab'.repeat(32), 'no-such-tx']) {
      const p = await call(s, C, 'GET', `/fhir/Provenance/${id}`);
      expect(p.status, id).toBe(404);
      expect(issues(p)[0]!.code).toBe('not-found');
    }
  });

  it('a holder reads its own records as before: own store, version headers, its Provenance', async () => {
    const ref = posted[A]![0]!;
    const res = await s.apis[A]!.app.inject({
      method: 'GET',
      url: `/fhir/${ref}`,
      headers: AUTH,
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers.etag).toBe('W/"1"');
    const body = JSON.parse(res.body) as Observation;
    expect(`Observation/${body.id}`).toBe(ref);
    expect(body.subject?.reference).toBe(`Patient/${own[A]}`);
    expect(body.meta?.source).toBeUndefined();

    // Its own record's Provenance, once served by $everything, is read by id too (the tx hash).
    const b = await everything(A, own[A]!);
    const prov = provenances(b).find((p) =>
      p.target?.some((t) => t.reference?.startsWith(`${ref}/_history/`)),
    )!;
    expect(prov.id).toMatch(/^[0-9a-f]{64}$/);
    expect(ledgerValue(prov, 'tx')).toBe(prov.id);
    const read = await call(s, A, 'GET', `/fhir/Provenance/${prov.id}`);
    expect(read.status).toBe(200);
    expect(read.json).toEqual(prov);
  });
});

describe('after $everything at the granted institution', () => {
  let bundle: Bundle;

  it('serves the shared Observation by id: the same resource as $everything, and an AuditEvent', async () => {
    bundle = await everything(C, pid);
    const ref = posted[B]![0]!;
    const entry = matches(bundle).find((e) => e.fullUrl?.endsWith(`/${ref}`))!;
    expect(entry).toBeDefined();
    const r = await call(s, C, 'GET', `/fhir/${ref}`);
    expect(r.status, JSON.stringify(r.json).slice(0, 300)).toBe(200);
    expect(r.json).toEqual(entry.resource);
    const obs = r.json as unknown as Observation;
    expect(obs.subject?.reference).toBe(`Patient/${pid}`);
    expect(obs.meta?.source).toBe(`urn:spchain:institution:${B}`);
    expect(obs.meta?.versionId).toBe('1');
    // The holder's content, decrypted.
    const atB = (await call(s, B, 'GET', `/fhir/${ref}`)).json as unknown as Observation;
    expect(obs.valueQuantity).toEqual(atB.valueQuantity);
    expect(obs.code).toEqual(atB.code);

    // The read left an AuditEvent naming the record version and the patient.
    const reads = await auditEvents(ref, 'read');
    expect(reads).toHaveLength(1);
    expect(reads[0]!.outcome).toBe('0');
    expect(reads[0]!.entity?.map((x) => x.what?.reference)).toEqual([
      `Patient/${pid}`,
      `${ref}/_history/1`,
    ]);
  });

  it('serves the Provenance by id (its tx hash), pointing at the record', async () => {
    const ref = posted[B]![0]!;
    const prov = provenances(bundle).find((p) =>
      p.target?.some((t) => t.reference === `${ref}/_history/1`),
    )!;
    expect(prov).toBeDefined();
    expect(ledgerValue(prov, 'tx')).toBe(prov.id);
    const r = await call(s, C, 'GET', `/fhir/Provenance/${prov.id}`);
    expect(r.status, JSON.stringify(r.json).slice(0, 300)).toBe(200);
    const read = r.json as unknown as Provenance;
    expect(read.id).toBe(prov.id);
    expect(read.target).toEqual([{ reference: `${ref}/_history/1` }]);
    expect(read.agent?.[0]?.who?.identifier?.value).toBe(String(B));
    expect(ledgerValue(read, 'verified')).toBe(true);
    // The same Provenance again: its id does not depend on when it is served.
    const again = await everything(C, pid);
    expect(
      provenances(again)
        .map((p) => p.id)
        .sort(),
    ).toEqual(
      provenances(bundle)
        .map((p) => p.id)
        .sort(),
    );
    const events = await getBundle(s, C, `/fhir/AuditEvent?entity=Provenance/${prov.id}`);
    expect(matches(events)).toHaveLength(1);
  });

  it("gives the two holders' `dup-1` two distinct, stable ids, each read by id", async () => {
    const dups = matches(bundle).filter((e) => {
      const o = e.resource as Observation;
      return o.resourceType === 'Observation' && [70, 71].includes(o.valueQuantity?.value ?? 0);
    });
    expect(dups).toHaveLength(2);
    const urls = dups.map((e) => e.fullUrl!);
    expect(new Set(urls).size).toBe(2);
    const byHolder = new Map(
      dups.map((e) => [e.resource!.meta!.source, e.resource as Observation]),
    );
    const atA = byHolder.get(`urn:spchain:institution:${A}`)!;
    const atB = byHolder.get(`urn:spchain:institution:${B}`)!;
    // The lower institution index kept the holder's id; the other is qualified by its holder,
    // and says which id its holder gave it.
    expect(atA.id).toBe('dup-1');
    expect(atA.meta?.extension).toBeUndefined();
    expect(atB.id).toBe(`dup-1.${B}`);
    expect(atB.meta?.extension).toEqual([{ url: HOLDER_ID_EXTENSION, valueString: 'dup-1' }]);
    for (const o of [atA, atB]) {
      expect(urls.filter((u) => u.endsWith(`/fhir/Observation/${o.id}`))).toHaveLength(1);
      const r = await call(s, C, 'GET', `/fhir/Observation/${o.id}`);
      expect(r.status).toBe(200);
      expect(r.json).toEqual(o);
      // Its Provenance names the served id.
      const prov = provenances(bundle).find((p) =>
        p.target?.some((t) => t.reference === `Observation/${o.id}/_history/1`),
      );
      expect(prov?.agent?.[0]?.who?.identifier?.value).toBe(o.meta!.source!.split(':').at(-1));
    }
    // An id too long to qualify: the second holder's is served under a digest of it.
    const long = matches(bundle)
      .map((e) => e.resource as Observation)
      .filter((o) => [80, 81].includes(o.valueQuantity?.value ?? 0))
      .sort((x, y) => x.valueQuantity!.value! - y.valueQuantity!.value!);
    expect(long.map((o) => o.id)).toEqual([LONG, expect.stringMatching(/^s[0-9a-f]{40}$/)]);
    expect(long[1]!.meta?.extension).toEqual([{ url: HOLDER_ID_EXTENSION, valueString: LONG }]);
    const hashed = await call(s, C, 'GET', `/fhir/Observation/${long[1]!.id}`);
    expect(hashed.json).toEqual(long[1]);
    // Stable: the next fetch serves them under the same ids.
    const again = await everything(C, pid);
    expect(
      matches(again)
        .map((e) => e.fullUrl)
        .sort(),
    ).toEqual(
      matches(bundle)
        .map((e) => e.fullUrl)
        .sort(),
    );
  });
});

describe('history of a shared record', () => {
  it('serves the versions its holder served, newest first, the correction tagged, and audits it', async () => {
    const ref = posted[B]![1]!;
    const before = (await call(s, B, 'GET', `/fhir/${ref}`)).json as unknown as Observation;
    // B corrects its record (an update: a label tx over the first version).
    await write(B, 'PUT', `/fhir/${ref}`, {
      ...before,
      valueQuantity: { value: 99, unit: 'beats/minute' },
    });
    expect(await s.net.anchorAll()).toBeGreaterThan(0);
    await everything(C, pid);

    const r = await call(s, C, 'GET', `/fhir/${ref}/_history`);
    expect(r.status, JSON.stringify(r.json).slice(0, 400)).toBe(200);
    const history = r.json as unknown as Bundle;
    expect(history.type).toBe('history');
    expect(history.total).toBe(2);
    const [newer, older] = (history.entry ?? []).map((e) => e.resource as Observation);
    expect([newer?.valueQuantity?.value, older?.valueQuantity?.value]).toEqual([
      99,
      before.valueQuantity?.value,
    ]);
    expect(newer!.meta?.versionId).not.toBe(older!.meta?.versionId);
    expect(newer!.meta?.tag?.map((t) => t.code)).toContain('corrected');
    expect(older!.meta?.tag?.map((t) => t.code) ?? []).not.toContain('corrected');
    for (const e of history.entry ?? []) {
      expect(e.fullUrl).toMatch(new RegExp(`/fhir/${ref}$`));
      expect((e.resource as Observation).subject?.reference).toBe(`Patient/${pid}`);
      expect((e.resource as Observation).meta?.source).toBe(`urn:spchain:institution:${B}`);
    }
    expect(history.entry!.map((e) => e.request?.method)).toEqual(['PUT', 'POST']);
    // The read by id is the newest version; each version is read by its versionId.
    const current = await call(s, C, 'GET', `/fhir/${ref}`);
    expect(current.json).toEqual(history.entry![0]!.resource);
    for (const version of [newer!, older!]) {
      const v = await call(s, C, 'GET', `/fhir/${ref}/_history/${version.meta?.versionId}`);
      expect(v.status).toBe(200);
      expect(v.json).toEqual(version);
    }
    const gone = await call(s, C, 'GET', `/fhir/${ref}/_history/no-such-version`);
    expect(gone.status).toBe(404);

    // One AuditEvent of the history read, naming both versions.
    const reads = await auditEvents(ref, 'history-instance');
    expect(reads).toHaveLength(1);
    expect(reads[0]!.entity?.map((x) => x.what?.reference)).toEqual([
      `Patient/${pid}`,
      `${ref}/_history/${newer!.meta?.versionId}`,
      `${ref}/_history/${older!.meta?.versionId}`,
    ]);

    // The patient's own token reads it; another patient's does not; an unknown id is a 404.
    const mine = await patientToken(pid, 'launch/patient patient/*.rs');
    expect((await withToken(C, `/fhir/${ref}/_history`, mine)).status).toBe(200);
    const other = await patientToken('cd'.repeat(32), 'launch/patient patient/*.rs');
    expect((await withToken(C, `/fhir/${ref}/_history`, other)).status).toBe(403);
    // A granular scope is checked on every version it would answer.
    const lab = await patientToken(
      pid,
      'launch/patient patient/Observation.rs?category=laboratory',
    );
    expect((await withToken(C, `/fhir/${ref}/_history`, lab)).status).toBe(403);
    const vid = older!.meta?.versionId;
    expect((await withToken(C, `/fhir/${ref}/_history/${vid}`, lab)).status).toBe(403);
    expect((await withToken(C, `/fhir/${ref}/_history/${vid}`, mine)).status).toBe(200);
    const unknown = await call(s, C, 'GET', '/fhir/Observation/never-served/_history');
    expect(unknown.status).toBe(404);
    expect(texts(unknown)).toMatch(/is not held here/);
  });
});

describe('patient tokens', () => {
  it("reach the shared records and Provenance of the token's patient, and nobody else's", async () => {
    const ref = posted[A]![1]!;
    const prov = provenances(await everything(C, pid)).find((p) =>
      p.target?.some((t) => t.reference === `${ref}/_history/1`),
    )!;
    const mine = await patientToken(pid, 'launch/patient patient/*.rs');
    const ok = await withToken(C, `/fhir/${ref}`, mine);
    expect(ok.status, JSON.stringify(ok.json).slice(0, 300)).toBe(200);
    expect(`Observation/${ok.json.id}`).toBe(ref);
    expect((await withToken(C, `/fhir/Provenance/${prov.id}`, mine)).status).toBe(200);

    const other = await patientToken('cd'.repeat(32), 'launch/patient patient/*.rs');
    const refused = await withToken(C, `/fhir/${ref}`, other);
    expect(refused.status).toBe(403);
    expect(issues(refused)[0]!.code).toBe('forbidden');
    expect(texts(refused)).toMatch(/another patient/);
    expect((await withToken(C, `/fhir/Provenance/${prov.id}`, other)).status).toBe(403);
    // The refusal is audited too: the patient, and that it failed.
    const events = await getBundle(s, C, `/fhir/AuditEvent?patient=Patient/${pid}&_count=1000`);
    expect(matches(events).some((e) => (e.resource as { outcome?: string }).outcome === '4')).toBe(
      true,
    );
  });

  it('a granular scope that does not cover the record is refused', async () => {
    const ref = posted[A]![1]!;
    const lab = await patientToken(
      pid,
      'launch/patient patient/Observation.rs?category=laboratory',
    );
    const r = await withToken(C, `/fhir/${ref}`, lab);
    expect(r.status).toBe(403);
    expect(texts(r)).toMatch(/do not cover/);
    // A token without any Observation scope is refused before the holders are asked.
    const conditions = await patientToken(pid, 'launch/patient patient/Condition.rs');
    expect((await withToken(C, `/fhir/${ref}`, conditions)).status).toBe(403);
  });
});

describe("this institution's own resource under a shared id", () => {
  it('wins GET Type/id; the shared one moves to its qualified id', async () => {
    const P = s.patients[0]!;
    // C gets a leaf, its own Patient, and an Observation of its own under `dup-1`.
    await giveLeaf(s, P, C);
    const patient = await write(C, 'POST', '/fhir/Patient', {
      resourceType: 'Patient',
      identifier: [{ system: IDENTITY.system, value: IDENTITY.value }],
      birthDate: IDENTITY.birthDate,
    });
    await write(C, 'PUT', '/fhir/Observation/dup-1', {
      ...observation(String(patient.id), 72),
      id: 'dup-1',
    });
    await s.net.anchorAll();

    const b = await everything(C, pid);
    const dups = matches(b)
      .map((e) => ({ url: e.fullUrl!, o: e.resource as Observation }))
      .filter(({ o }) => [70, 71, 72].includes(o.valueQuantity?.value ?? 0));
    expect(dups.map(({ o }) => [o.id, o.valueQuantity?.value]).sort()).toEqual([
      ['dup-1', 72],
      [`dup-1.${A}`, 70],
      [`dup-1.${B}`, 71],
    ]);
    expect(new Set(dups.map((d) => d.url)).size).toBe(3);
    const own = await call(s, C, 'GET', '/fhir/Observation/dup-1');
    expect((own.json as unknown as Observation).valueQuantity?.value).toBe(72);
    const moved = await call(s, C, 'GET', `/fhir/Observation/dup-1.${A}`);
    expect(moved.status).toBe(200);
    expect((moved.json as unknown as Observation).valueQuantity?.value).toBe(70);
    expect((moved.json as unknown as Observation).meta?.extension).toEqual([
      { url: HOLDER_ID_EXTENSION, valueString: 'dup-1' },
    ]);
    // A patient's token still reads no own record by id, as before.
    const mine = await patientToken(pid, 'launch/patient patient/*.rs');
    expect((await withToken(C, '/fhir/Observation/dup-1', mine)).status).toBe(403);
    expect((await withToken(C, `/fhir/Observation/dup-1.${A}`, mine)).status).toBe(200);
  });
});

describe('after the revocation', () => {
  it('the read by id serves nothing any more, and says why', async () => {
    const ref = posted[B]![0]!;
    const prov = provenances(await everything(C, pid)).find((p) =>
      p.target?.some((t) => t.reference === `${ref}/_history/1`),
    )!;
    expect((await call(s, C, 'GET', `/fhir/${ref}`)).status).toBe(200);

    const P = s.patients[0]!;
    const { chainId } = s.net.fixture.genesis;
    const revocation = revocationToJson(
      signRevocation(chainId, P.idHash, 'consent-read', P.signingSecret),
    );
    for (const at of [A, B]) {
      const r = await call(s, at, 'POST', '/spchain/revocations', revocation, false);
      expect(r.status).toBe(200);
    }
    const r = await call(s, C, 'GET', `/fhir/${ref}`);
    expect(r.status).toBe(404);
    expect(r.json).not.toHaveProperty('valueQuantity');
    expect(issues(r)[0]!.code).toBe('not-found');
    expect(texts(r)).toMatch(/no longer served here/);
    expect(texts(r)).toMatch(/refused: REVOKED/);
    const p = await call(s, C, 'GET', `/fhir/Provenance/${prov.id}`);
    expect(p.status).toBe(404);
    expect(texts(p)).toMatch(/refused: REVOKED/);
    // C's own record is read as before.
    expect((await call(s, C, 'GET', '/fhir/Observation/dup-1')).status).toBe(200);
  });
});
