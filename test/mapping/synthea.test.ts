/**
 * The default mapping on every Synthea bundle in ../shared/data/synthea. Nothing here depends on
 * those exact files: counts are derived from each bundle and the mapping, so other bundles of the
 * same format (larger ones too) must pass as well.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { mapBundle, recordPayload } from '../../src/mapping/map-bundle.ts';
import { parseMapping, roleOf } from '../../src/mapping/mapping.ts';
import { DEFAULT_MAPPING_JSON, defaultMapping, syntheaBundles } from './fixtures.ts';

const bundles = syntheaBundles();
const byEncounter = parseMapping({ ...DEFAULT_MAPPING_JSON, splitBy: 'encounter' }, 'enc.json');

function countBy<T>(items: readonly T[], key: (t: T) => string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const item of items) out[key(item)] = (out[key(item)] ?? 0) + 1;
  return out;
}

describe.each(bundles.map((b) => [b.name, b.bundle] as const))('Synthea %s', (_name, bundle) => {
  const entries = bundle.entry ?? [];
  const types = entries.map((e) => e.resource!.resourceType);
  const patientRefs = new Set(
    entries.filter((e) => e.resource?.resourceType === 'Patient').map((e) => e.fullUrl),
  );

  it('maps with the default mapping: one record per record resource, by type', () => {
    const out = mapBundle(bundle, defaultMapping, { newId: randomUUID });
    const recordTypes = types.filter((t) => roleOf(defaultMapping, t) === 'record');
    expect(recordTypes.length).toBeGreaterThan(0);
    expect(countBy(out.records, (r) => r.resources[0]!.resourceType)).toEqual(
      countBy(recordTypes, (t) => t),
    );
    for (const r of out.records) expect(r.resources).toHaveLength(1);
    // Every other entry is a patient or context, said so.
    const others = out.entries.filter((e) => e.role !== 'record');
    expect(others.map((e) => e.role).sort()).toEqual(
      types
        .filter((t) => roleOf(defaultMapping, t) !== 'record')
        .map((t) => roleOf(defaultMapping, t))
        .sort(),
    );
    expect(out.patients).toHaveLength(patientRefs.size);
  });

  it('gives every record its patient identifier, and leaves no urn:uuid behind', () => {
    const out = mapBundle(bundle, defaultMapping, { newId: randomUUID });
    expect(out.rewrites.size).toBe(entries.length);
    for (const r of out.records) {
      expect(defaultMapping.patientIdentifierSystems).toContain(r.patient.identifier.system);
      expect(r.patient.identifier.value.length).toBeGreaterThan(0);
      expect(r.patient.birthDate).toMatch(/^\d{4}-\d{2}-\d{2}$/);
      expect(out.patients.map((p) => p.id)).toContain(r.patient.id);
      const text = new TextDecoder().decode(recordPayload(r));
      expect(text).not.toContain('urn:uuid:');
      const payload = JSON.parse(text);
      expect(payload.entry[0].resource.id).toBe(r.resources[0]!.id);
    }
  });

  it('split by encounter, partitions the same record resources', () => {
    const out = mapBundle(bundle, byEncounter, { newId: randomUUID });
    const mapped = out.records.flatMap((r) => r.resources.map((x) => x.entry));
    const recordEntries = types.flatMap((t, i) => (roleOf(byEncounter, t) === 'record' ? [i] : []));
    expect([...mapped].sort((a, b) => a - b)).toEqual(recordEntries);
    const encounters = types.filter((t) => t === 'Encounter').length;
    expect(out.records.filter((r) => r.encounter !== undefined).length).toBe(encounters);
  });
});
