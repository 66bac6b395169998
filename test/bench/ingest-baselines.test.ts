/**
 * The baseline servers of `npm run bench:ingest` answer a transaction correctly (so the benchmark
 * compares the sidecar with servers that do the work): the smallest Synthea bundle, posted as the
 * benchmark posts it (a fresh copy), gets a transaction-response with every entry created, and
 * the stored resources point at each other by their new ids. No timings here.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildMedplumServer,
  buildPlainServer,
  type PlainServer,
} from '../../bench/lib/ingest-baselines.ts';
import {
  type BenchBundle,
  checkResponse,
  freshCopy,
  loadBundles,
} from '../../bench/lib/ingest-load.ts';

const FHIR = { 'content-type': 'application/fhir+json' };
let smallest: BenchBundle;

beforeAll(async () => {
  smallest = (await loadBundles())[0]!;
});

/** The Patient's id and every `reference` of the other resources, from stored resources. */
function referencesOf(resources: Resource[]) {
  const patient = resources.find((r) => r.resourceType === 'Patient')!;
  const refs = resources
    .filter((r) => r.resourceType !== 'Patient')
    .flatMap((r) => [...JSON.stringify(r).matchAll(/"reference":"([^"]+)"/g)].map((m) => m[1]!));
  return { patientId: patient.id!, refs };
}

describe('fresh copies', () => {
  it('replace every bundle UUID, keep the patient and the size', () => {
    const copy = freshCopy(smallest);
    expect(copy.length).toBe(smallest.text.length);
    for (const u of smallest.uuids) expect(copy).not.toContain(u);
    const bundle = JSON.parse(copy) as Bundle;
    expect(bundle.entry).toHaveLength(smallest.entries);
    expect(copy).toContain(smallest.patient.value);
    expect(freshCopy(smallest)).not.toBe(copy);
  });
});

describe('plain baseline', () => {
  let dir: string;
  let plain: PlainServer;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'spchain-bench-plain-'));
    plain = await buildPlainServer(join(dir, 'db'));
  });
  afterAll(async () => {
    await plain.app.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('stores every entry under its new id with references rewritten', async () => {
    const res = await plain.app.inject({
      method: 'POST',
      url: '/fhir',
      headers: FHIR,
      payload: freshCopy(smallest),
    });
    checkResponse(res.statusCode, res.body, smallest.entries, 'plain');
    const locations = (JSON.parse(res.body) as Bundle).entry!.map(
      (e) => e.response!.location!.split('/_history')[0]!,
    );
    expect(new Set(locations).size).toBe(smallest.entries);
    const stored = await Promise.all(
      locations.map(async (k) => JSON.parse((await plain.db.get(k))!) as Resource),
    );
    const { patientId, refs } = referencesOf(stored);
    expect(refs.some((r) => r === `Patient/${patientId}`)).toBe(true);
    expect(refs.filter((r) => r.startsWith('urn:uuid:'))).toEqual([]);
    // Every reference but to contained resources (#id) names a stored resource.
    for (const r of refs.filter((x) => !x.startsWith('#'))) expect(locations).toContain(r);
  });

  it('refuses what is not a transaction of POSTs with an OperationOutcome', async () => {
    const notBundle = await plain.app.inject({
      method: 'POST',
      url: '/fhir',
      headers: FHIR,
      payload: { resourceType: 'Patient' },
    });
    expect(notBundle.statusCode).toBe(400);
    expect(JSON.parse(notBundle.body).resourceType).toBe('OperationOutcome');
    const malformed = await plain.app.inject({
      method: 'POST',
      url: '/fhir',
      headers: FHIR,
      payload: '{"resourceType":',
    });
    expect(malformed.statusCode).toBe(400);
  });
});

describe('medplum baseline', () => {
  const medplum = buildMedplumServer();
  afterAll(() => medplum.close());

  it("creates every entry through Medplum's router with references rewritten", async () => {
    const res = await medplum.inject({
      method: 'POST',
      url: '/fhir',
      headers: FHIR,
      payload: freshCopy(smallest),
    });
    checkResponse(res.statusCode, res.body, smallest.entries, 'medplum');
    const entries = (JSON.parse(res.body) as Bundle).entry!;
    const created = entries.map((e) => e.resource!);
    const locations = entries.map((e) => e.response!.location!);
    expect(locations).toEqual(created.map((r) => `${r.resourceType}/${r.id}`));
    const { patientId, refs } = referencesOf(created);
    expect(refs.some((r) => r === `Patient/${patientId}`)).toBe(true);
    expect(refs.filter((r) => r.startsWith('urn:uuid:'))).toEqual([]);
  });

  it('answers a resource that is not a Bundle with an OperationOutcome', async () => {
    const res = await medplum.inject({
      method: 'POST',
      url: '/fhir',
      headers: FHIR,
      payload: { resourceType: 'Patient' },
    });
    expect(res.statusCode).toBe(400);
    expect(JSON.parse(res.body).resourceType).toBe('OperationOutcome');
  });
});
