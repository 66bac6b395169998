import type { Resource } from '@medplum/fhirtypes';
import canonicalize from 'canonicalize';
import { beforeAll, describe, expect, it } from 'vitest';
import { isMappingError, type MappingIssue } from '../../src/mapping/errors.ts';
import {
  type MapOpts,
  type MappedBundle,
  mapBundle,
  recordPayload,
} from '../../src/mapping/map-bundle.ts';
import { parseMapping } from '../../src/mapping/mapping.ts';
import { lookupsFor, storedSnapshot } from '../../src/mapping/stored.ts';
import {
  bundle,
  clinicalBundle,
  condition,
  counterIds,
  DEFAULT_MAPPING_JSON,
  defaultMapping,
  encounter,
  entry,
  type Json,
  MRN,
  observation,
  organization,
  patient,
  practitioner,
  SSN,
  urn,
} from './fixtures.ts';

const decode = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as Json;
const payloadResources = (b: Uint8Array) =>
  (decode(b).entry as { resource: Json }[]).map((e) => e.resource);

function map(b: unknown, opts: Partial<MapOpts> = {}, mapping = defaultMapping): MappedBundle {
  return mapBundle(b, mapping, { newId: counterIds(), ...opts });
}

/** The issues of a transaction that must fail. */
function issuesOf(b: unknown, opts: Partial<MapOpts> = {}, mapping = defaultMapping) {
  try {
    map(b, opts, mapping);
  } catch (err) {
    if (isMappingError(err, 'UNMAPPABLE_BUNDLE')) return err.issues;
    throw err;
  }
  throw new Error('the bundle mapped');
}

const stored = (...resources: Json[]) =>
  storedSnapshot({ resources: resources as unknown as Resource[] });

describe('mapBundle: a transaction', () => {
  const b = clinicalBundle();
  const before = structuredClone(b);
  let out: MappedBundle;
  beforeAll(() => {
    out = map(b);
  });

  it('makes one record per clinical resource, and says what the other entries are', () => {
    expect(out.type).toBe('transaction');
    expect(out.records.map((r) => r.resources.map((x) => x.resourceType))).toEqual([
      ['Encounter'],
      ['Observation'],
      ['Observation'],
      ['Condition'],
    ]);
    expect(out.entries.map((e) => [e.role, e.action])).toEqual([
      ['patient', 'create'],
      ['context', 'create'],
      ['record', 'create'],
      ['record', 'create'],
      ['record', 'create'],
      ['record', 'create'],
    ]);
    expect(out.entries.map((e) => e.record)).toEqual([undefined, undefined, 0, 1, 2, 3]);
  });

  it('identifies the patient by the mapping identifier system', () => {
    expect(out.patients).toEqual([
      {
        entry: 0,
        id: 'id-1',
        identifier: { system: SSN, value: '999-00-1234' },
        birthDate: '1980-02-29',
      },
    ]);
    for (const r of out.records) expect(r.patient.identifier).toEqual(out.patients[0]!.identifier);
  });

  it('rewrites urn:uuid references to the assigned ids and returns the map', () => {
    expect([...out.rewrites]).toEqual([1, 2, 3, 4, 5, 6].map((n) => [urn(n), expect.any(String)]));
    expect(out.rewrites.get(urn(1))).toBe('Patient/id-1');
    expect(out.rewrites.get(urn(3))).toBe('Encounter/id-3');
    const obs = payloadResources(recordPayload(out.records[1]!))[0]!;
    expect(obs).toMatchObject({
      id: 'id-4',
      subject: { reference: 'Patient/id-1' },
      encounter: { reference: 'Encounter/id-3' },
    });
    for (const r of out.records) {
      expect(new TextDecoder().decode(recordPayload(r))).not.toContain('urn:uuid:');
    }
  });

  it('carries the referenced context resources alongside, and only those', () => {
    const enc = out.records[0]!;
    expect(enc.context).toEqual([
      { entry: 1, resourceType: 'Practitioner', id: 'id-2', json: expect.any(Uint8Array) },
    ]);
    expect(payloadResources(recordPayload(enc)).map((r) => r.resourceType)).toEqual([
      'Encounter',
      'Practitioner',
    ]);
    expect(out.records[1]!.context).toEqual([]);
  });

  it('encodes each resource as canonical JSON, and a record as a collection Bundle of them', () => {
    for (const r of out.records) {
      for (const x of [...r.resources, ...r.context]) {
        const text = new TextDecoder().decode(x.json);
        expect(text).toBe(canonicalize(JSON.parse(text)));
        expect(JSON.parse(text)).toMatchObject({ resourceType: x.resourceType, id: x.id });
      }
      const p = decode(recordPayload(r));
      expect(p).toMatchObject({ resourceType: 'Bundle', type: 'collection' });
      expect(new TextDecoder().decode(recordPayload(r))).toBe(canonicalize(p));
    }
  });

  it('refuses a string that cannot be encoded (a lone surrogate)', () => {
    const b2 = clinicalBundle();
    ((b2.entry as Json[])[3]!.resource as Json).status = 'final\ud800';
    expect(issuesOf(b2)).toEqual([
      expect.objectContaining({ code: 'MALFORMED', expression: 'Bundle.entry[3].resource' }),
    ]);
  });

  it('leaves its input untouched', () => {
    expect(b).toEqual(before);
  });

  it('gives the same payload bytes whatever the key order', () => {
    const reorder = (v: unknown): unknown =>
      Array.isArray(v)
        ? v.map(reorder)
        : v && typeof v === 'object'
          ? Object.fromEntries(
              Object.entries(v)
                .reverse()
                .map(([k, x]) => [k, reorder(x)]),
            )
          : v;
    const again = map(reorder(b));
    expect(again.records.map((r) => recordPayload(r))).toEqual(
      out.records.map((r) => recordPayload(r)),
    );
  });

  it('sets meta.lastUpdated when given the time', () => {
    const t = '2024-05-01T12:00:00.000Z';
    const stamped = map(b, { lastUpdated: t });
    for (const r of stamped.records) {
      for (const res of payloadResources(recordPayload(r)))
        expect(res.meta).toEqual({ lastUpdated: t });
    }
  });
});

describe('mapBundle: references', () => {
  it('fails a transaction on a urn:uuid that names no entry, naming the element', () => {
    const b = bundle([
      entry(patient(), { fullUrl: urn(1) }),
      entry(observation(urn(1), urn(9)), { fullUrl: urn(2) }),
    ]);
    expect(issuesOf(b)).toEqual([
      {
        code: 'UNRESOLVED_REFERENCE',
        expression: 'Bundle.entry[1].resource.encounter',
        message: `${urn(9)} is not the fullUrl of any entry in this transaction`,
      },
    ]);
  });

  it('collects every issue rather than stopping at the first', () => {
    const b = bundle([
      entry(patient(), { fullUrl: urn(1) }),
      entry(observation(urn(7)), { fullUrl: urn(2) }),
      entry(condition(urn(8)), { fullUrl: urn(3) }),
    ]);
    expect(issuesOf(b).map((i) => i.expression)).toEqual([
      'Bundle.entry[1].resource.subject',
      'Bundle.entry[2].resource.subject',
    ]);
  });

  it('resolves references inside contained resources and narrative links', () => {
    const obs = observation(urn(1));
    obs.contained = [{ resourceType: 'Specimen', id: 's1', subject: { reference: urn(1) } }];
    obs.specimen = { reference: '#s1' };
    obs.text = { status: 'generated', div: `<div><a href="${urn(1)}">patient</a></div>` };
    const out = map(
      bundle([entry(patient(), { fullUrl: urn(1) }), entry(obs, { fullUrl: urn(2) })]),
    );
    const written = payloadResources(recordPayload(out.records[0]!))[0]!;
    expect(written.contained).toEqual([
      { resourceType: 'Specimen', id: 's1', subject: { reference: 'Patient/id-1' } },
    ]);
    expect(written.specimen).toEqual({ reference: '#s1' });
    expect((written.text as Json).div).toBe('<div><a href="Patient/id-1">patient</a></div>');
  });

  it('resolves RESTful fullUrls and references relative to them', () => {
    const base = 'http://ehr.example.org/fhir/';
    const out = map(
      bundle([
        entry(patient(), { fullUrl: `${base}Patient/p7` }),
        entry(observation('Patient/p7'), { fullUrl: `${base}Observation/o1` }),
      ]),
    );
    expect(out.rewrites.get(`${base}Patient/p7`)).toBe('Patient/id-1');
    expect(payloadResources(recordPayload(out.records[0]!))[0]!.subject).toEqual({
      reference: 'Patient/id-1',
    });
  });

  it('resolves a conditional reference to a patient in the bundle', () => {
    const out = map(
      bundle([
        entry(patient({ ssn: '123' }), { fullUrl: urn(1) }),
        entry(observation(`Patient?identifier=${SSN}|123`), { fullUrl: urn(2) }),
      ]),
    );
    expect(out.records[0]!.patient).toMatchObject({ id: 'id-1', identifier: { value: '123' } });
    expect(payloadResources(recordPayload(out.records[0]!))[0]!.subject).toEqual({
      reference: 'Patient/id-1',
    });
  });

  it('resolves a conditional reference to a stored patient', () => {
    const query = `identifier=${SSN}|555`;
    const storedPatient = patient({ id: 'p-stored', ssn: '555' });
    const out = map(bundle([entry(observation(`Patient?${query}`), { fullUrl: urn(2) })]), {
      stored: storedSnapshot({
        searches: [[`Patient?${query}`, [storedPatient as unknown as Resource]]],
      }),
    });
    expect(out.records[0]!.patient).toEqual({
      id: 'p-stored',
      identifier: { system: SSN, value: '555' },
      birthDate: '1980-02-29',
    });
  });

  it('fails a conditional reference with no match or several', () => {
    const query = `identifier=${SSN}|555`;
    const b = bundle([entry(observation(`Patient?${query}`), { fullUrl: urn(2) })]);
    expect(issuesOf(b)[0]).toEqual({
      code: 'UNRESOLVED_REFERENCE',
      expression: 'Bundle.entry[0].resource.subject',
      // The identifier searched for is patient data: the message names the parameter only.
      message: 'Patient?identifier=... matches no resource',
    });
    const two = [patient({ id: 'a', ssn: '555' }), patient({ id: 'b', ssn: '555' })];
    const several = storedSnapshot({
      searches: [[`Patient?${query}`, two as unknown as Resource[]]],
    });
    expect(issuesOf(b, { stored: several })[0]).toMatchObject({
      code: 'MULTIPLE_MATCHES',
      expression: 'Bundle.entry[0].resource.subject',
    });
  });

  it('finds a record patient that is stored, and refuses one that is not', () => {
    const b = bundle([entry(observation('Patient/p-9'), { fullUrl: urn(2) })]);
    const out = map(b, { stored: stored(patient({ id: 'p-9', ssn: '42' })) });
    expect(out.records[0]!.patient.identifier.value).toBe('42');
    expect(issuesOf(b)).toEqual([
      {
        code: 'UNKNOWN_PATIENT',
        expression: 'Bundle.entry[0].resource.subject',
        message: 'Patient/p-9 is neither in the bundle nor stored',
      },
    ]);
  });

  it('refuses a record whose patient reference is missing or is not a Patient', () => {
    const noSubject = observation(urn(1));
    delete noSubject.subject;
    const b = bundle([
      entry(organization(), { fullUrl: urn(1) }),
      entry(noSubject, { fullUrl: urn(2) }),
      entry(observation(urn(1)), { fullUrl: urn(3) }),
    ]);
    expect(issuesOf(b).map((i) => [i.code, i.expression])).toEqual([
      ['MALFORMED', 'Bundle.entry[1].resource.subject'],
      ['MALFORMED', 'Bundle.entry[2].resource.subject'],
    ]);
  });

  it('lists the lookups an asynchronous store must make', () => {
    const b = bundle([
      entry(patient(), { fullUrl: urn(1), ifNoneExist: `identifier=${SSN}|1` }),
      entry(observation('Patient/p-1'), { method: 'PUT', url: 'Observation/o-1' }),
      entry(observation(`Patient?identifier=${SSN}|2`), {
        method: 'PUT',
        url: 'Observation?identifier=x|y',
      }),
    ]);
    (b.entry as Json[])[1]!.resource = { ...observation('Patient/p-1'), id: 'o-1' };
    expect(lookupsFor(b)).toEqual({
      searches: [
        `Patient?identifier=${SSN}|1`,
        'Observation?identifier=x|y',
        `Patient?identifier=${SSN}|2`,
      ],
      reads: ['Observation/o-1', 'Patient/p-1'],
    });
  });
});

describe('mapBundle: patients', () => {
  it('prefers identifier systems in the mapping order, not the resource order', () => {
    const mapping = parseMapping(
      { ...DEFAULT_MAPPING_JSON, patient: { identifierSystems: [SSN, MRN] } },
      'm.json',
    );
    const out = map(
      bundle([entry(patient({ mrn: 'M1', ssn: 'S1' }), { fullUrl: urn(1) })]),
      {},
      mapping,
    );
    expect(out.patients[0]!.identifier).toEqual({ system: SSN, value: 'S1' });
    const mrnFirst = parseMapping(
      { ...DEFAULT_MAPPING_JSON, patient: { identifierSystems: [MRN, SSN] } },
      'm.json',
    );
    const out2 = map(
      bundle([entry(patient({ mrn: 'M1', ssn: 'S1' }), { fullUrl: urn(1) })]),
      {},
      mrnFirst,
    );
    expect(out2.patients[0]!.identifier).toEqual({ system: MRN, value: 'M1' });
  });

  it('refuses a patient with no identifier in the mapping systems', () => {
    const b = bundle([
      entry(patient({ ssn: null, mrn: 'M1' }), { fullUrl: urn(1) }),
      entry(observation(urn(1)), { fullUrl: urn(2) }),
    ]);
    const issues = issuesOf(b);
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({
      code: 'NO_PATIENT_IDENTIFIER',
      expression: 'Bundle.entry[0].resource.identifier',
    });
  });
});

describe('mapBundle: updates and corrections', () => {
  const put = (resource: Json, id: string) =>
    entry({ ...resource, id }, { method: 'PUT', url: `${resource.resourceType}/${id}` });
  const storedObs = { ...observation('Patient/p-1'), id: 'o-1' };
  const store = stored(patient({ id: 'p-1' }), storedObs, {
    ...condition('Patient/p-1'),
    id: 'c-1',
  });

  it('an update of a stored record is a correction', () => {
    const out = map(bundle([put(observation('Patient/p-1'), 'o-1')]), { stored: store });
    expect(out.entries[0]).toMatchObject({ action: 'update', id: 'o-1', role: 'record' });
    expect(out.records[0]!.correction).toEqual({
      of: { resourceType: 'Observation', id: 'o-1' },
      kind: 'update',
    });
  });

  it('status entered-in-error makes the correction a retraction, by the mapping rule', () => {
    const out = map(
      bundle([
        put(observation('Patient/p-1', undefined, 'entered-in-error'), 'o-1'),
        put(condition('Patient/p-1', 'entered-in-error'), 'c-1'),
      ]),
      { stored: store },
    );
    expect(out.records.map((r) => r.correction?.kind)).toEqual([
      'entered-in-error',
      'entered-in-error',
    ]);
  });

  it('a PUT of a resource not stored creates it with its id: not a correction', () => {
    const out = map(bundle([put(observation('Patient/p-1'), 'o-new')]), { stored: store });
    expect(out.entries[0]).toMatchObject({ action: 'create', id: 'o-new' });
    expect(out.records[0]!.correction).toBeUndefined();
  });

  it('a conditional update with one stored match corrects it', () => {
    const b = bundle([
      entry(observation('Patient/p-1'), { method: 'PUT', url: 'Observation?identifier=lab|77' }),
    ]);
    const snapshot = storedSnapshot({
      searches: [['Observation?identifier=lab|77', [storedObs as unknown as Resource]]],
      resources: [patient({ id: 'p-1' }) as unknown as Resource],
    });
    const out = map(b, { stored: snapshot });
    expect(out.records[0]!.correction?.of).toEqual({ resourceType: 'Observation', id: 'o-1' });
    expect(payloadResources(recordPayload(out.records[0]!))[0]!.id).toBe('o-1');
  });

  it('refuses a PUT whose resource id differs from the URL', () => {
    const e = put(observation('Patient/p-1'), 'o-1');
    (e.request as Json).url = 'Observation/o-2';
    expect(issuesOf(bundle([e]), { stored: store })[0]).toMatchObject({
      code: 'MALFORMED',
      expression: 'Bundle.entry[0].resource.id',
    });
  });

  it('refuses two entries writing one resource', () => {
    const b = bundle([
      put(observation('Patient/p-1'), 'o-1'),
      put(observation('Patient/p-1'), 'o-1'),
    ]);
    expect(issuesOf(b, { stored: store })[0]).toMatchObject({
      code: 'CONFLICT',
      expression: 'Bundle.entry[1]',
    });
  });
});

describe('mapBundle: conditional create and other interactions', () => {
  it('a conditional create that matches uses the stored resource and makes no record', () => {
    const query = `identifier=${SSN}|999-00-1234`;
    const existing = patient({ id: 'p-old' });
    const out = map(
      bundle([
        entry(patient(), { fullUrl: urn(1), ifNoneExist: query }),
        entry(observation(urn(1)), { fullUrl: urn(2) }),
      ]),
      {
        stored: storedSnapshot({
          searches: [[`Patient?${query}`, [existing as unknown as Resource]]],
        }),
      },
    );
    expect(out.entries[0]).toMatchObject({ action: 'existing', id: 'p-old', role: 'patient' });
    expect(out.rewrites.get(urn(1))).toBe('Patient/p-old');
    expect(out.records[0]!.patient.id).toBe('p-old');
  });

  it('refuses DELETE and PATCH, and leaves reads to the caller', () => {
    const b = bundle([
      { request: { method: 'DELETE', url: 'Observation/o-1' } },
      { request: { method: 'GET', url: 'Patient?identifier=x|y' } },
    ]);
    expect(issuesOf(b)).toEqual([
      expect.objectContaining({
        code: 'UNSUPPORTED',
        expression: 'Bundle.entry[0].request.method',
      }),
    ]);
    const reads = map(bundle([{ request: { method: 'GET', url: 'Patient/p' } }]));
    expect(reads.entries[0]).toMatchObject({ role: 'read', action: 'read' });
    expect(reads.records).toEqual([]);
  });

  it('refuses a type the mapping does not name, unless told to ignore such types', () => {
    const basic = { resourceType: 'Basic', code: { text: 'x' } };
    const b = bundle([entry(basic, { fullUrl: urn(1) })]);
    expect(issuesOf(b)[0]).toMatchObject({
      code: 'UNMAPPED_TYPE',
      expression: 'Bundle.entry[0].resource',
    });
    const lenient = parseMapping({ ...DEFAULT_MAPPING_JSON, unmappedTypes: 'ignore' }, 'm.json');
    expect(map(b, {}, lenient).entries[0]).toMatchObject({ role: 'ignored', action: 'create' });
  });

  it('refuses what is not a transaction or batch Bundle', () => {
    expect(issuesOf({ resourceType: 'Patient' })[0]!.expression).toBe('Bundle');
    expect(issuesOf({ resourceType: 'Bundle', type: 'collection' })[0]).toMatchObject({
      expression: 'Bundle.type',
      message: 'must be transaction or batch',
    });
  });

  it('refuses ids from the generator that are not FHIR ids or repeat', () => {
    expect(() => map(clinicalBundle(), { newId: () => 'not an id' })).toThrow(TypeError);
    expect(() => map(clinicalBundle(), { newId: () => 'same' })).toThrow(/twice/);
  });
});

describe('mapBundle: batches', () => {
  it('maps the entries that can be mapped and fails the others, each on its own', () => {
    const b = bundle(
      [
        entry(observation('Patient/p-1'), { fullUrl: urn(2) }),
        entry(observation(urn(1)), { fullUrl: urn(3) }),
        entry(condition('Patient/p-404'), { fullUrl: urn(4) }),
      ],
      'batch',
    );
    const out = map(b, { stored: stored(patient({ id: 'p-1' })) });
    expect(out.type).toBe('batch');
    expect(out.rewrites.size).toBe(0);
    expect(out.entries.map((e) => e.action)).toEqual(['create', 'failed', 'failed']);
    const codes = (issues: readonly MappingIssue[]) => issues.map((i) => i.code);
    expect(codes(out.entries[1]!.issues)).toEqual(['UNRESOLVED_REFERENCE']);
    expect(codes(out.entries[2]!.issues)).toEqual(['UNKNOWN_PATIENT']);
    expect(out.records).toHaveLength(1);
    expect(out.records[0]!.resources[0]!.entry).toBe(0);
  });
});

describe('mapBundle: split by encounter', () => {
  const byEncounter = parseMapping({ ...DEFAULT_MAPPING_JSON, splitBy: 'encounter' }, 'enc.json');

  it('makes one record per encounter with its resources; others stay on their own', () => {
    const b = bundle([
      entry(patient(), { fullUrl: urn(1) }),
      entry(practitioner(), { fullUrl: urn(2) }),
      entry(encounter(urn(1), urn(2)), { fullUrl: urn(3) }),
      entry(observation(urn(1), urn(3)), { fullUrl: urn(4) }),
      entry(condition(urn(1)), { fullUrl: urn(5) }),
      entry(encounter(urn(1)), { fullUrl: urn(6) }),
      entry(observation(urn(1), urn(6)), { fullUrl: urn(7) }),
      entry(observation(urn(1), urn(3)), { fullUrl: urn(8) }),
    ]);
    const out = map(b, {}, byEncounter);
    expect(out.records.map((r) => [r.encounter, r.resources.map((x) => x.entry)])).toEqual([
      ['Encounter/id-3', [2, 3, 7]],
      [undefined, [4]],
      ['Encounter/id-6', [5, 6]],
    ]);
    expect(out.records[0]!.context.map((c) => c.resourceType)).toEqual(['Practitioner']);
    expect(payloadResources(recordPayload(out.records[0]!)).map((r) => r.resourceType)).toEqual([
      'Encounter',
      'Observation',
      'Observation',
      'Practitioner',
    ]);
    expect(out.entries.map((e) => e.record)).toEqual([undefined, undefined, 0, 0, 1, 2, 2, 0]);
  });

  it('refuses an encounter whose resources belong to two patients', () => {
    const b = bundle([
      entry(patient({ ssn: '1' }), { fullUrl: urn(1) }),
      entry(patient({ ssn: '2' }), { fullUrl: urn(2) }),
      entry(encounter(urn(1)), { fullUrl: urn(3) }),
      entry(observation(urn(2), urn(3)), { fullUrl: urn(4) }),
    ]);
    expect(issuesOf(b, {}, byEncounter)).toEqual([
      expect.objectContaining({ code: 'CONFLICT', expression: 'Bundle.entry[3].resource.subject' }),
    ]);
  });
});
