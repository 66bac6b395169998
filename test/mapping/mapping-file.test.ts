import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadMappingFile } from '../../src/fhir/mapping-file.ts';
import { isMappingError, type MappingError } from '../../src/mapping/errors.ts';
import { parseMapping, roleOf } from '../../src/mapping/mapping.ts';
import { DEFAULT_MAPPING_JSON, defaultMapping } from './fixtures.ts';

const FILE = 'fhir-mappings/x.json';

interface MappingJson {
  [field: string]: unknown;
  patient?: { identifierSystems: unknown[] };
  records: Record<string, { [field: string]: unknown; enteredInError: Record<string, unknown> }>;
  context: { types: string[]; handling?: unknown };
  ignored: string[];
}

/** The default mapping with `edit` applied to a deep copy. */
function edited(edit: (m: MappingJson) => void): unknown {
  const m = structuredClone(DEFAULT_MAPPING_JSON);
  edit(m);
  return m;
}

function parseError(json: unknown): MappingError {
  try {
    parseMapping(json, FILE);
  } catch (err) {
    if (isMappingError(err, 'BAD_MAPPING')) return err;
    throw err;
  }
  throw new Error('the mapping was accepted');
}

describe('parseMapping', () => {
  it('reads the default mapping', () => {
    const m = defaultMapping;
    expect(m.version).toBe(1);
    expect(m.splitBy).toBe('resource');
    expect(m.patientIdentifierSystems[0]).toBe('http://hl7.org/fhir/sid/us-ssn');
    expect(m.records.get('Observation')).toEqual({
      patient: 'subject',
      encounter: 'encounter',
      enteredInError: { element: 'status', code: 'entered-in-error' },
    });
    expect(m.records.get('Condition')?.enteredInError?.element).toBe('verificationStatus');
    expect(roleOf(m, 'Patient')).toBe('patient');
    expect(roleOf(m, 'Claim')).toBe('record');
    expect(roleOf(m, 'Organization')).toBe('context');
    expect(roleOf(m, 'Provenance')).toBe('ignored');
    expect(roleOf(m, 'Basic')).toBeUndefined();
  });

  it('applies defaults for the optional fields', () => {
    const m = parseMapping(
      {
        version: 1,
        patient: { identifierSystems: ['urn:a'] },
        records: { Observation: { patient: 'subject' } },
      },
      FILE,
    );
    expect(m).toMatchObject({
      name: 'unnamed',
      splitBy: 'resource',
      contextHandling: 'alongside',
      unmappedTypes: 'reject',
    });
    expect(m.contextTypes.size).toBe(0);
    expect(m.ignoredTypes.size).toBe(0);
  });

  const cases: [string, unknown, string][] = [
    ['not an object', [], 'the file must be a JSON object'],
    ['wrong version', edited((m) => (m.version = 2)), 'version must be 1'],
    ['missing version', edited((m) => delete m.version), 'version is missing'],
    [
      'bad splitBy',
      edited((m) => (m.splitBy = 'patient')),
      'splitBy must be "resource" or "encounter"',
    ],
    ['misspelt key', edited((m) => (m.splitby = 'resource')), 'splitby is not a known field'],
    ['no patient', edited((m) => delete m.patient), 'patient is missing'],
    [
      'empty identifier systems',
      edited((m) => (m.patient!.identifierSystems = [])),
      'patient.identifierSystems must be a non-empty JSON array',
    ],
    [
      'identifier system not a string',
      edited((m) => (m.patient!.identifierSystems = ['urn:a', 7])),
      'patient.identifierSystems[1] must be a non-empty string',
    ],
    [
      'repeated identifier system',
      edited((m) => (m.patient!.identifierSystems = ['urn:a', 'urn:a'])),
      'patient.identifierSystems[1] repeats urn:a',
    ],
    [
      'records not an object',
      edited((m) => Object.assign(m, { records: [] })),
      'records must be a JSON object',
    ],
    [
      'no record types',
      edited((m) => Object.assign(m, { records: {} })),
      'records must name at least one',
    ],
    [
      'record type not a type name',
      edited((m) => Object.assign(m.records, { observation: { patient: 'subject' } })),
      'records.observation must be keyed by a FHIR resource type name',
    ],
    [
      'Patient as a record',
      edited((m) => Object.assign(m.records, { Patient: { patient: 'link' } })),
      'records.Patient cannot be a record type',
    ],
    [
      'record without patient path',
      edited((m) => delete m.records.Observation!.patient),
      'records.Observation.patient is missing',
    ],
    [
      'bad patient path',
      edited((m) => (m.records.Observation!.patient = 'subject[0]')),
      'records.Observation.patient must be a dotted element path',
    ],
    [
      'bad encounter path',
      edited((m) => (m.records.Claim!.encounter = 'item..encounter')),
      'records.Claim.encounter must be a dotted element path',
    ],
    [
      'enteredInError without code',
      edited((m) => delete m.records.Goal!.enteredInError.code),
      'records.Goal.enteredInError.code is missing',
    ],
    [
      'unknown key in a record',
      edited((m) => (m.records.Goal!.status = 'x')),
      'records.Goal.status is not a known field',
    ],
    [
      'bad context handling',
      edited((m) => (m.context.handling = 'embed')),
      'context.handling must be "alongside" or "drop"',
    ],
    [
      'context type that is a record',
      edited((m) => m.context.types.push('Observation')),
      'context.types[5] lists Observation, which is already a record type',
    ],
    [
      'Patient as context',
      edited((m) => m.context.types.push('Patient')),
      'context.types[5] cannot list Patient',
    ],
    [
      'ignored type that is context',
      edited((m) => m.ignored.push('Organization')),
      'ignored[1] lists Organization, which is already context',
    ],
    [
      'repeated context type',
      edited((m) => m.context.types.push('Location')),
      'context.types[5] repeats Location',
    ],
    [
      'bad unmapped policy',
      edited((m) => (m.unmappedTypes = 'drop')),
      'unmappedTypes must be "reject" or "ignore"',
    ],
  ];
  it.each(cases)('rejects %s, naming the file and the field', (_name, json, message) => {
    const err = parseError(json);
    expect(err.message).toContain(`${FILE}: ${message}`);
    expect(err.detail.source).toBe(FILE);
  });
});

describe('loadMappingFile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'spchain-mapping-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('loads the shipped default mapping', async () => {
    const m = await loadMappingFile();
    expect(m.source).toMatch(/fhir-mappings\/default\.json$/);
    expect([...m.records.keys()]).toEqual([...defaultMapping.records.keys()]);
  });

  it('names the file when it is missing, not JSON, or has a bad field', async () => {
    const missing = join(dir, 'missing.json');
    await expect(loadMappingFile(missing)).rejects.toThrow(`${missing}: cannot be read (ENOENT)`);

    const broken = join(dir, 'broken.json');
    writeFileSync(broken, '{"version": 1,');
    await expect(loadMappingFile(broken)).rejects.toThrow(`${broken}: is not valid JSON`);

    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify(edited((m) => (m.splitBy = 'visit'))));
    await expect(loadMappingFile(bad)).rejects.toThrow(
      `${bad}: splitBy must be "resource" or "encounter"`,
    );
  });

  it('loads an edited mapping file', async () => {
    const file = join(dir, 'by-encounter.json');
    writeFileSync(file, JSON.stringify(edited((m) => (m.splitBy = 'encounter'))));
    const m = await loadMappingFile(file);
    expect(m.splitBy).toBe('encounter');
    expect(m.source).toBe(file);
  });
});
