/**
 * Properties of the pure mapping over random transaction bundles: patients, practitioners,
 * encounters and clinical resources in any order, linked by random urn:uuid fullUrls.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { mapBundle, recordPayload } from '../../src/mapping/map-bundle.ts';
import { parseMapping } from '../../src/mapping/mapping.ts';
import {
  bundle,
  condition,
  counterIds,
  DEFAULT_MAPPING_JSON,
  defaultMapping,
  encounter,
  entry,
  type Json,
  observation,
  patient,
  practitioner,
  SSN,
} from './fixtures.ts';

const byEncounter = parseMapping({ ...DEFAULT_MAPPING_JSON, splitBy: 'encounter' }, 'enc.json');
const RECORD_TYPES = ['Observation', 'Condition', 'Procedure', 'Immunization', 'Goal'] as const;

interface Spec {
  readonly patients: number;
  readonly practitioners: number;
  readonly encounters: { patient: number; practitioner: number | null }[];
  readonly records: {
    type: (typeof RECORD_TYPES)[number];
    patient: number;
    encounter: number | null;
    focus: number | null;
  }[];
}

const spec: fc.Arbitrary<Spec> = fc
  .record({
    patients: fc.integer({ min: 1, max: 3 }),
    practitioners: fc.integer({ min: 0, max: 2 }),
    encounters: fc.array(fc.record({ patient: fc.nat(), practitioner: fc.nat() }), {
      maxLength: 4,
    }),
    records: fc.array(
      fc.record({
        type: fc.constantFrom(...RECORD_TYPES),
        patient: fc.nat(),
        encounter: fc.option(fc.nat(), { nil: null }),
        focus: fc.option(fc.nat(), { nil: null }),
      }),
      { maxLength: 14 },
    ),
  })
  .map((s) => {
    const encounters = s.encounters.map((e) => ({
      patient: e.patient % s.patients,
      practitioner: s.practitioners > 0 ? e.practitioner % (s.practitioners + 1) : 0,
    }));
    return {
      patients: s.patients,
      practitioners: s.practitioners,
      encounters: encounters.map((e) => ({
        patient: e.patient,
        practitioner: e.practitioner < s.practitioners ? e.practitioner : null,
      })),
      records: s.records.map((r) => {
        const patient = r.patient % s.patients;
        // An encounter of the record's own patient, if it has any.
        const own = encounters.flatMap((e, i) => (e.patient === patient ? [i] : []));
        const encounterIndex =
          r.encounter === null || own.length === 0 ? null : own[r.encounter % own.length]!;
        return {
          type: r.type,
          patient,
          encounter: encounterIndex,
          focus: r.focus === null || s.records.length === 0 ? null : r.focus % s.records.length,
        };
      }),
    };
  });

interface Built {
  readonly bundle: Json;
  /** Per entry: the patient index it belongs to (records, encounters), its kind. */
  readonly kinds: { kind: string; patient?: number; encounterUrl?: string | null }[];
}

function build(s: Spec, urls: readonly string[], order: readonly number[]): Built {
  let next = 0;
  const patientUrls = Array.from({ length: s.patients }, () => urls[next++]!);
  const practitionerUrls = Array.from({ length: s.practitioners }, () => urls[next++]!);
  const encounterUrls = s.encounters.map(() => urls[next++]!);
  const recordUrls = s.records.map(() => urls[next++]!);
  const items: { entry: Json; kind: string; patient?: number; encounterUrl?: string | null }[] = [];
  patientUrls.forEach((u, i) => {
    items.push({ entry: entry(patient({ ssn: `ssn-${i}` }), { fullUrl: u }), kind: 'Patient' });
  });
  for (const u of practitionerUrls) {
    items.push({ entry: entry(practitioner(), { fullUrl: u }), kind: 'Practitioner' });
  }
  s.encounters.forEach((e, i) => {
    const prac = e.practitioner === null ? undefined : practitionerUrls[e.practitioner];
    items.push({
      entry: entry(encounter(patientUrls[e.patient]!, prac), { fullUrl: encounterUrls[i]! }),
      kind: 'Encounter',
      patient: e.patient,
      encounterUrl: encounterUrls[i]!,
    });
  });
  s.records.forEach((r, i) => {
    const subject = patientUrls[r.patient]!;
    const enc = r.encounter === null ? undefined : encounterUrls[r.encounter];
    let resource: Json;
    if (r.type === 'Observation') {
      resource = observation(subject, enc);
      if (r.focus !== null) resource.focus = [{ reference: recordUrls[r.focus]! }];
    } else if (r.type === 'Condition') {
      resource = condition(subject);
      if (enc) resource.encounter = { reference: enc };
    } else if (r.type === 'Immunization') {
      resource = {
        resourceType: 'Immunization',
        status: 'completed',
        vaccineCode: { text: 'flu' },
        patient: { reference: subject },
        ...(enc ? { encounter: { reference: enc } } : {}),
        occurrenceDateTime: '2020-01-01',
      };
    } else if (r.type === 'Procedure') {
      resource = {
        resourceType: 'Procedure',
        status: 'completed',
        subject: { reference: subject },
        ...(enc ? { encounter: { reference: enc } } : {}),
      };
    } else {
      resource = {
        resourceType: 'Goal',
        lifecycleStatus: 'active',
        description: { text: 'walk' },
        subject: { reference: subject },
      };
    }
    items.push({
      entry: entry(resource, { fullUrl: recordUrls[i]! }),
      kind: r.type,
      patient: r.patient,
      encounterUrl: r.type === 'Goal' ? null : (enc ?? null),
    });
  });
  const ordered = order.map((i) => items[i]!);
  return { bundle: bundle(ordered.map((x) => x.entry)), kinds: ordered };
}

const total = (s: Spec) => s.patients + s.practitioners + s.encounters.length + s.records.length;

const built: fc.Arbitrary<Built> = spec.chain((s) =>
  fc
    .tuple(
      fc.uniqueArray(fc.uuid(), { minLength: total(s), maxLength: total(s) }),
      fc.shuffledSubarray(
        Array.from({ length: total(s) }, (_, i) => i),
        { minLength: total(s), maxLength: total(s) },
      ),
    )
    .map(([uuids, order]) =>
      build(
        s,
        uuids.map((u) => `urn:uuid:${u}`),
        order,
      ),
    ),
);

const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe('mapping properties', () => {
  it('urn:uuid rewriting leaves no urn:uuid behind and is a bijection onto the entries', () => {
    fc.assert(
      fc.property(built, ({ bundle: b }) => {
        const out = mapBundle(b, defaultMapping, { newId: counterIds() });
        const entries = b.entry as Json[];
        // Every fullUrl maps, to its own entry's Type/id, and no two to the same one.
        expect(out.rewrites.size).toBe(entries.length);
        entries.forEach((e, i) => {
          const m = out.entries[i]!;
          expect(out.rewrites.get(e.fullUrl as string)).toBe(`${m.resourceType}/${m.id}`);
        });
        expect(new Set(out.rewrites.values()).size).toBe(out.rewrites.size);
        for (const r of out.records) expect(text(recordPayload(r))).not.toContain('urn:uuid:');
        for (const e of out.entries) expect(JSON.stringify(e.resource)).not.toContain('urn:uuid:');
      }),
      { numRuns: 150 },
    );
  });

  it('one record per record resource, each with the identifier of its own patient', () => {
    fc.assert(
      fc.property(built, ({ bundle: b, kinds }) => {
        const out = mapBundle(b, defaultMapping, { newId: counterIds() });
        const recordEntries = kinds.flatMap((k, i) =>
          k.kind !== 'Patient' && k.kind !== 'Practitioner' ? [i] : [],
        );
        expect(out.records.map((r) => r.resources[0]!.entry)).toEqual(recordEntries);
        for (const r of out.records) {
          const k = kinds[r.resources[0]!.entry]!;
          expect(r.patient.identifier).toEqual({ system: SSN, value: `ssn-${k.patient}` });
        }
      }),
      { numRuns: 150 },
    );
  });

  it('splitting by encounter partitions the record resources by their encounter', () => {
    fc.assert(
      fc.property(built, ({ bundle: b, kinds }) => {
        const out = mapBundle(b, byEncounter, { newId: counterIds() });
        const all = out.records.flatMap((r) => r.resources.map((x) => x.entry));
        const recordEntries = kinds.flatMap((k, i) =>
          k.kind !== 'Patient' && k.kind !== 'Practitioner' ? [i] : [],
        );
        expect([...all].sort((x, y) => x - y)).toEqual(recordEntries);
        for (const r of out.records) {
          const groups = new Set(r.resources.map((x) => kinds[x.entry]!.encounterUrl ?? null));
          expect(groups.size).toBe(1);
          const [url] = groups;
          if (url === null) {
            expect(r.resources).toHaveLength(1);
            expect(r.encounter).toBeUndefined();
          } else {
            expect(r.encounter).toBe(out.rewrites.get(url!));
          }
          const patients = new Set(r.resources.map((x) => kinds[x.entry]!.patient));
          expect(patients.size).toBe(1);
        }
      }),
      { numRuns: 150 },
    );
  });

  it('is deterministic: the same bundle and ids give the same payload bytes', () => {
    fc.assert(
      fc.property(built, ({ bundle: b }) => {
        const one = mapBundle(b, byEncounter, { newId: counterIds('x') });
        const two = mapBundle(structuredClone(b), byEncounter, { newId: counterIds('x') });
        expect(two.records.map((r) => text(recordPayload(r)))).toEqual(
          one.records.map((r) => text(recordPayload(r))),
        );
      }),
      { numRuns: 50 },
    );
  });
});
