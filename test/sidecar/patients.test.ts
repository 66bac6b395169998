/**
 * The patient registry: identifier -> idHash computed once and kept, the pinned registration read
 * from the ledger store, and typed errors for unknown and unregistered patients.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { toHex } from '../../src/crypto/bytes.ts';
import { computeIdHash } from '../../src/ledger/idhash.ts';
import { isSidecarError } from '../../src/sidecar/errors.ts';
import { PatientRegistry } from '../../src/sidecar/patients.ts';
import { SidecarStore } from '../../src/sidecar/store.ts';
import { type Harness, observation, openHarness, record } from './harness.ts';
import { type LedgerFixture, makeLedgerFixture, TEST_ID_COST } from './ledger.ts';

let fixture: LedgerFixture;
let dir: string;
let h: Harness;

beforeAll(() => {
  fixture = makeLedgerFixture('sidecar-patients', [0, 0, 0]);
});

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'spchain-patients-'));
  h = await openHarness(dir, fixture);
});

afterEach(async () => {
  await h.close();
  rmSync(dir, { recursive: true, force: true });
});

async function codeOf(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  if (!isSidecarError(err)) throw new Error(`expected a SidecarError, got ${String(err)}`);
  return err.code;
}

describe('patient registry', () => {
  it('resolves an identifier (in any spelling) to the pinned registration', async () => {
    const { patients } = h.core;
    for (const [j, p] of fixture.patients.entries()) {
      const { system, value } = p.identity;
      const spelled = { system: ` ${system} `, value: value.toLowerCase().replace(/-/g, ' - ') };
      for (const id of [{ system, value }, spelled]) {
        const reg = await patients.resolve(id);
        expect(toHex(reg.idHash)).toBe(toHex(p.idHash));
        expect(reg.ref).toEqual({ i: 1, j });
        expect(toHex(reg.preKey)).toBe(toHex(p.preKey));
        expect(reg.block.leaves.map((l) => l.institution)).toEqual([0]);
      }
    }
  });

  it('keeps the idHash: a reopened registry finds it without recomputing', async () => {
    const p = fixture.patients[0]!;
    await h.close();
    const store = await SidecarStore.open(join(dir, 'sidecar'), { syncWrites: false });
    try {
      // Another idHash key would give another idHash if it were recomputed.
      const registry = new PatientRegistry(store, h.ledger.store, {
        idHashKey: new Uint8Array(32).fill(7),
        cost: TEST_ID_COST,
      });
      const found = await registry.idHashOf(p.identity);
      expect(toHex(found)).toBe(toHex(p.idHash));
    } finally {
      await store.close();
      h = await openHarness(dir, fixture);
    }
  });

  it('names unknown and unregistered patients with typed errors, without the identifier', async () => {
    const { patients, ingestor } = h.core;
    const stranger = { system: 'urn:test:national-id', value: 'UNSEEN-0001' };
    expect(await codeOf(patients.idHashOf(stranger))).toBe('UNKNOWN_PATIENT');
    const err = await patients.resolve(stranger).catch((e: Error) => e);
    expect(String((err as Error).message)).not.toMatch(/UNSEEN/);
    // Known here (added through the CLI), not yet in a pinned keyblock.
    const pending = { ...stranger, birthDate: '1999-12-31' };
    const idHash = await patients.add(pending);
    expect(toHex(idHash)).toBe(
      toHex(computeIdHash(fixture.genesis.idHashKey, pending, TEST_ID_COST)),
    );
    expect(await codeOf(patients.resolve(stranger))).toBe('UNREGISTERED_PATIENT');
    const rec = { ...record(fixture.patients[0]!, observation('o', 1)), patient: stranger };
    expect(await codeOf(ingestor.ingest([rec]))).toBe('UNREGISTERED_PATIENT');
  });

  it('links other identifiers to a patient, and refuses to move an identifier', async () => {
    const { patients } = h.core;
    const [a, b] = fixture.patients;
    const mrn = { system: 'urn:test:hospital-mrn', value: 'MRN-77' };
    await patients.link(mrn, a!.idHash);
    await patients.link(mrn, a!.idHash); // again: a no-op
    expect(toHex((await patients.resolve(mrn)).idHash)).toBe(toHex(a!.idHash));
    expect(await codeOf(patients.link(mrn, b!.idHash))).toBe('IDENTIFIER_CONFLICT');
    // The same identifier with another birth date is another idHash: refused.
    const other = { ...a!.identity, birthDate: '2001-02-03' };
    expect(await codeOf(patients.add(other))).toBe('IDENTIFIER_CONFLICT');
    expect(toHex(await patients.add(a!.identity))).toBe(toHex(a!.idHash));
    // Records may name the patient by the linked identifier.
    const [r] = await h.core.ingestor.ingest([
      { ...record(a!, observation('by-mrn', 5)), patient: mrn },
    ]);
    expect(r!.outcome).toBe('created');
  });

  it('checks identities and identifiers', async () => {
    const { patients } = h.core;
    const bad = [
      { system: '', value: 'X', birthDate: '1970-01-01' },
      { system: 'urn:x', value: ' - ', birthDate: '1970-01-01' },
      { system: 'urn:x', value: 'X', birthDate: '1970-02-30' },
      { system: 'urn:x', value: 'X'.repeat(2000), birthDate: '1970-01-01' },
    ];
    for (const id of bad) expect(await codeOf(patients.add(id))).toBe('INVALID_RECORD');
    expect(await codeOf(patients.link({ system: 'urn:x', value: 'Y' }, new Uint8Array(3)))).toBe(
      'INVALID_RECORD',
    );
  });
});
