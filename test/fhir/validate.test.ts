import { threadId } from 'node:worker_threads';
import type { Bundle, OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFhirError } from '../../src/fhir/errors.ts';
import { FhirValidator } from '../../src/fhir/validate.ts';
import { nameChoices } from '../../src/fhir/validate-core.ts';
import {
  bundle,
  clinicalBundle,
  type Json,
  observation,
  organization,
  syntheaBundles,
  urn,
} from '../mapping/fixtures.ts';

const SLOW = 180_000;

/** The clinical bundle (Patient, Practitioner, Encounter, Observation x2, Condition) mutated. */
function mutated(edit: (entries: Json[]) => void): Bundle {
  const b = clinicalBundle();
  edit((b.entry as Json[]).map((e) => e.resource as Json));
  return b as unknown as Bundle;
}

const brief = (issues: readonly OperationOutcomeIssue[]) =>
  issues.map((i) => ({
    severity: i.severity,
    expression: i.expression?.[0],
    text: i.details?.text,
  }));

describe('FhirValidator', () => {
  // Everything with at most 3 entries inline; larger bundles in one worker.
  const validator = new FhirValidator({ inlineMaxEntries: 3, threads: 1 });
  beforeAll(() => validator.start(), SLOW);
  afterAll(() => validator.close());

  it('accepts a valid bundle with no issue', async () => {
    const r = await validator.validate(clinicalBundle() as unknown as Bundle);
    expect(brief(r.issues)).toEqual([]);
    expect(r.ok).toBe(true);
  });

  const invalid: [string, (r: Json[]) => void, string, string | RegExp][] = [
    [
      'a status outside its required value set',
      (r) => (r[3]!.status = 'nonsense'),
      'Bundle.entry[3].resource.status',
      'Value "nonsense" is not in the required value set http://hl7.org/fhir/ValueSet/observation-status|4.0.1',
    ],
    [
      'a CodeableConcept outside its required value set',
      (r) => {
        ((r[5]!.verificationStatus as Json).coding as Json[])[0]!.code = 'maybe';
      },
      'Bundle.entry[5].resource.verificationStatus',
      /condition-ver-status\|maybe is not in the required value set/,
    ],
    [
      'a number given as a string',
      (r) => ((r[3]!.valueQuantity as Json).value = '170'),
      'Bundle.entry[3].resource.valueQuantity.value',
      'Invalid JSON type: expected number, but got string',
    ],
    [
      'an unknown element',
      (r) => (r[4]!.colour = 'red'),
      'Bundle.entry[4].resource.colour',
      'Invalid additional property "colour"',
    ],
    [
      'a missing required element',
      (r) => delete r[4]!.code,
      'Bundle.entry[4].resource.code',
      'Missing required property',
    ],
    [
      'a malformed dateTime',
      (r) => (r[3]!.effectiveDateTime = 'yesterday'),
      'Bundle.entry[3].resource.effectiveDateTime',
      'Invalid dateTime format',
    ],
    [
      'an array where one value is expected',
      (r) => (r[2]!.subject = [r[2]!.subject]),
      'Bundle.entry[2].resource.subject',
      'Expected single value for property',
    ],
  ];
  it.each(invalid)(
    'reports %s as an error at its expression',
    async (_n, edit, expression, text) => {
      const r = await validator.validate(mutated(edit));
      expect(r.ok).toBe(false);
      const errors = brief(r.issues).filter((i) => i.severity === 'error');
      expect(errors).toEqual([
        { severity: 'error', expression, text: expect.stringMatching(text) },
      ]);
    },
  );

  it('warns, without failing, about a reference to a type the element does not allow', async () => {
    const b = bundle([
      {
        fullUrl: urn(1),
        resource: organization(),
        request: { method: 'POST', url: 'Organization' },
      },
      {
        fullUrl: urn(2),
        resource: observation(urn(1)),
        request: { method: 'POST', url: 'Observation' },
      },
    ]) as unknown as Bundle;
    const r = await validator.validate(b);
    expect(r.ok).toBe(true);
    expect(brief(r.issues)).toEqual([
      {
        severity: 'warning',
        expression: 'Bundle.entry[1].resource.subject',
        text: expect.stringContaining(`got "${urn(1)}"`),
      },
    ]);
  });

  it('validates single resources inline too', async () => {
    const bad = { ...observation('Patient/p'), status: 'done' } as unknown as Resource;
    const r = await validator.validate(bad);
    expect(r.ranIn).toBe('inline');
    expect(brief(r.issues)).toEqual([
      expect.objectContaining({ severity: 'error', expression: 'Observation.status' }),
    ]);
  });

  it('validates a large bundle in the worker, with the same issues as inline', async () => {
    const b = mutated((r) => {
      r[3]!.status = 'nonsense';
      r[4]!.colour = 'red';
    });
    expect(b.entry!.length).toBeGreaterThan(3);
    const inWorker = await validator.validate(b);
    expect(inWorker.ranIn).toBe('worker');
    expect(inWorker.threadId).not.toBe(threadId);
    const inline = new FhirValidator({ inlineMaxEntries: 1000 });
    const here = await inline.validate(b);
    expect(here.ranIn).toBe('inline');
    expect(here.threadId).toBe(threadId);
    expect(inWorker.issues).toEqual(here.issues);
    expect(inWorker.ok).toBe(false);
    await inline.close();
  });

  it(
    'accepts every Synthea bundle, the large ones validated in the worker',
    async () => {
      for (const { name, bundle: b, text } of syntheaBundles()) {
        const r = await validator.validate(b, text);
        expect({ name, issues: brief(r.issues) }).toEqual({ name, issues: [] });
        expect(r.ranIn).toBe((b.entry?.length ?? 0) > 3 ? 'worker' : 'inline');
      }
    },
    SLOW,
  );
});

describe('FhirValidator: a full queue', () => {
  it(
    'answers BUSY at once instead of queueing without limit',
    async () => {
      const validator = new FhirValidator({ inlineMaxEntries: 0, threads: 1, maxQueue: 1 });
      try {
        await validator.start();
        const [big] = syntheaBundles().sort((a, b) => b.text.length - a.text.length);
        const runs = [0, 1, 2, 3].map(() => validator.validate(big!.bundle, big!.text));
        const settled = await Promise.allSettled(runs);
        const busy = settled.filter(
          (s) => s.status === 'rejected' && isFhirError(s.reason, 'BUSY'),
        );
        const done = settled.filter((s) => s.status === 'fulfilled');
        // One runs, one waits, the others are refused.
        expect(done).toHaveLength(2);
        expect(busy).toHaveLength(2);
      } finally {
        await validator.close();
      }
    },
    SLOW,
  );

  it('refuses bad options', () => {
    expect(() => new FhirValidator({ threads: 3 })).toThrow(/threads must be 1 or 2/);
    expect(() => new FhirValidator({ maxQueue: -1 })).toThrow(/maxQueue/);
  });
});

describe('nameChoices', () => {
  it('names a choice element as the JSON has it', () => {
    const root = { entry: [{ resource: { component: [{ valueQuantity: { value: 1 } }] } }] };
    expect(nameChoices(root, 'Bundle.entry[0].resource.component[0].value[x].value')).toBe(
      'Bundle.entry[0].resource.component[0].valueQuantity.value',
    );
    expect(nameChoices(root, 'Bundle.entry[0].resource.effective[x]')).toBe(
      'Bundle.entry[0].resource.effective[x]',
    );
  });
});
