/**
 * The portal's record handling without a browser (src/portal/records.ts): a holder's stored
 * ciphertext decrypts with the patient's PRE secret and nothing else, the record's own resource is
 * found in a content Bundle, and the one-line summaries a patient reads.
 */
import { describe, expect, it } from 'vitest';
import { utf8 } from '../../src/crypto/bytes.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';
import {
  encodeCapsule,
  encrypt,
  generateSecretKey,
  publicKeyOf,
} from '../../src/crypto/umbral/index.ts';
import {
  decryptRecord,
  recordResource,
  type StoredRecord,
  summarise,
  toBase64,
} from '../../src/portal/records.ts';

const random = deterministicRandom('portal-records');
const observation = {
  resourceType: 'Observation',
  id: 'o1',
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
  valueQuantity: { value: 72, unit: 'beats/minute' },
  effectiveDateTime: '2024-05-01',
};

function stored(content: unknown, preKey: Uint8Array): StoredRecord {
  const { capsule, ciphertext } = encrypt(preKey, utf8(JSON.stringify(content)), random);
  return {
    resourceType: 'Observation',
    id: 'o1',
    version: '1',
    kind: 'medical',
    txHash: '00'.repeat(32),
    capsule: toBase64(encodeCapsule(capsule)),
    ciphertext: toBase64(ciphertext),
  };
}

describe('portal records', () => {
  it('decrypts with the patient PRE secret only', () => {
    const secret = generateSecretKey(random);
    const record = stored(observation, publicKeyOf(secret));
    expect(decryptRecord(secret, record)).toEqual({ ok: true, resource: observation });
    const other = decryptRecord(generateSecretKey(random), record);
    expect(other.ok).toBe(false);
    if (!other.ok) expect(other.problem).toMatch(/^does not decrypt with your key/);
    const cut = { ...record, ciphertext: record.ciphertext.slice(0, 8) };
    expect(decryptRecord(secret, cut).ok).toBe(false);
  });

  it("finds the record's resource in a content Bundle and summarises it", () => {
    const bundle = {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [{ resource: { resourceType: 'Patient', id: 'p' } }, { resource: observation }],
    };
    const found = recordResource(bundle, { resourceType: 'Observation', id: 'o1' });
    expect(found).toBe(observation);
    expect(summarise(found)).toBe('Heart rate: 72 beats/minute (2024-05-01)');
    expect(
      summarise({
        resourceType: 'Condition',
        code: { text: 'Asthma' },
        status: 'entered-in-error',
      }),
    ).toBe('Asthma (entered in error)');
    expect(summarise({ resourceType: 'Patient', name: [{ given: ['Pat'], family: 'Doe' }] })).toBe(
      'Pat Doe',
    );
    expect(summarise({ resourceType: 'Encounter' })).toBe('Encounter');
  });
});
