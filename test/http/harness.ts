/**
 * The HTTP API over real parts for the tests: the sidecar harness (test ledger on LevelDB with
 * some Synthea patients registered in keyblock 1, the sidecar store, the embedded queue, the
 * sidecar core), the real FHIR validator and the default mapping file, wired by createFhirApi as
 * the composition root wires them. Logs are captured, so tests can look for patient data in them.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Bundle, Patient } from '@medplum/fhirtypes';
import { loadMappingFile } from '../../src/fhir/mapping-file.ts';
import { FhirValidator } from '../../src/fhir/validate.ts';
import { createFhirApi, type FhirApi, type FhirApiParts } from '../../src/http/api.ts';
import type { PatientIdentity } from '../../src/ledger/idhash.ts';
import type { FhirMapping } from '../../src/mapping/mapping.ts';
import { type Harness, type HarnessOpts, openHarness } from '../sidecar/harness.ts';
import { type LedgerFixture, makeLedgerFixture, TEST_ID_COST } from '../sidecar/ledger.ts';

export const TOKEN = 'test-token-0123456789abcdef0123456789abcdef';
export const AUTH = { authorization: `Bearer ${TOKEN}` };
export const FHIR = { 'content-type': 'application/fhir+json' };
export const SSN = 'http://hl7.org/fhir/sid/us-ssn';

const SYNTHEA = new URL('../../../shared/data/synthea/', import.meta.url).pathname;

export interface SyntheaBundle {
  readonly name: string;
  readonly text: string;
  readonly bundle: Bundle;
  readonly patient: Patient;
  readonly identity: PatientIdentity;
}

/** The Synthea bundles beside the project, smallest first; fails clearly if they are missing. */
export function syntheaBundles(): SyntheaBundle[] {
  let files: string[];
  try {
    files = readdirSync(SYNTHEA).filter((f) => f.endsWith('.json'));
  } catch {
    throw new Error(`the Synthea bundles are missing: expected them in ${SYNTHEA}`);
  }
  return files
    .map((name) => {
      const text = readFileSync(join(SYNTHEA, name), 'utf8');
      const bundle = JSON.parse(text) as Bundle;
      const patient = bundle.entry?.find((e) => e.resource?.resourceType === 'Patient')
        ?.resource as Patient;
      const ssn = patient.identifier?.find((i) => i.system === SSN)?.value;
      if (!ssn || !patient.birthDate)
        throw new Error(`${name}: the Patient has no SSN or birthDate`);
      return {
        name,
        text,
        bundle,
        patient,
        identity: { system: SSN, value: ssn, birthDate: patient.birthDate },
      };
    })
    .sort((a, b) => a.text.length - b.text.length);
}

let validator: FhirValidator | undefined;
let mapping: FhirMapping | undefined;

/** One validator for the test file (loading the definitions takes a second or two). */
export async function sharedParts(): Promise<{ validator: FhirValidator; mapping: FhirMapping }> {
  if (!validator) {
    validator = new FhirValidator();
    await validator.start();
  }
  mapping ??= await loadMappingFile();
  return { validator, mapping };
}

export async function closeSharedParts(): Promise<void> {
  await validator?.close();
  validator = undefined;
}

export interface ApiHarness {
  readonly dir: string;
  readonly sidecar: Harness;
  readonly api: FhirApi;
  readonly fixture: LedgerFixture;
  readonly logs: string[];
  close(): Promise<void>;
}

export interface ApiHarnessOpts extends HarnessOpts {
  /** Members of the test network (patients' homes come from `homes`). */
  readonly members?: number;
  /** Home institution of each registered patient (default: all at institution 0). */
  readonly homes?: readonly number[];
  readonly identities: readonly PatientIdentity[];
  readonly api?: Partial<FhirApiParts>;
}

export async function openApiHarness(seed: string, o: ApiHarnessOpts): Promise<ApiHarness> {
  const dir = await mkdtemp(join(tmpdir(), 'spchain-http-'));
  const homes = o.homes ?? o.identities.map(() => 0);
  const fixture = makeLedgerFixture(seed, homes, o.members ?? 1, o.identities);
  const sidecar = await openHarness(dir, fixture, o);
  const parts = await sharedParts();
  const logs: string[] = [];
  const api = createFhirApi({
    core: sidecar.core,
    ledger: sidecar.ledger.store,
    genesis: fixture.genesis,
    institution: { index: o.institution ?? 0, name: 'Test Hospital' },
    submitRegister: () => ({ ok: true }),
    mapping: parts.mapping,
    validator: parts.validator,
    ehrToken: TOKEN,
    idHashCost: TEST_ID_COST,
    http: { logLevel: 'info', logStream: { write: (line: string) => logs.push(line) } },
    ...o.api,
  });
  await api.app.ready();
  return {
    dir,
    sidecar,
    api,
    fixture,
    logs,
    async close() {
      await api.app.close();
      await sidecar.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A small transaction for a patient: the Patient and `n` Observations, by urn:uuid. */
export function smallTransaction(identity: PatientIdentity, n = 2, tag = 'a'): Bundle {
  const patientUrl = `urn:uuid:${tag.padEnd(8, '0').slice(0, 8)}-0000-4000-8000-000000000000`;
  return {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        fullUrl: patientUrl,
        resource: {
          resourceType: 'Patient',
          identifier: [{ system: identity.system, value: identity.value }],
          name: [{ family: 'Testperson', given: ['Pat'] }],
          birthDate: identity.birthDate,
        },
        request: { method: 'POST', url: 'Patient' },
      },
      ...Array.from({ length: n }, (_, k) => ({
        fullUrl: `urn:uuid:${tag.padEnd(8, '0').slice(0, 8)}-0000-4000-8000-${String(k + 1).padStart(12, '0')}`,
        resource: {
          resourceType: 'Observation' as const,
          status: 'final' as const,
          code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
          subject: { reference: patientUrl },
          valueQuantity: { value: 60 + k, unit: 'beats/minute' },
        },
        request: { method: 'POST' as const, url: 'Observation' },
      })),
    ],
  };
}
