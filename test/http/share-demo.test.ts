/**
 * `npm run demo` as the suite runs it: scripts/demo.ts runDemo with the smallest Synthea bundle,
 * four sidecar processes on loopback with a generated network, real consensus and mining. Passes
 * only if the third hospital served exactly the records both holders took, each verified with its
 * Provenance and no warning, and the fourth (no grant) got nothing but refusals. Then again with
 * the granted hospital admitted to the running network instead of named in the genesis.
 */
import { expect, it } from 'vitest';
import { runDemo } from '../../scripts/demo.ts';

it('four institutions: register, allow upload, post halves, grant, $everything', async () => {
  const lines: string[] = [];
  const result = await runDemo({ patients: 1, log: (line) => lines.push(line) });
  expect(result.ok, lines.join('\n')).toBe(true);
  const [p] = result.patients;
  expect(p!.warnings).toBe(0);
  expect(p!.served).toEqual(p!.posted);
  expect(Object.values(p!.posted).every((n) => n > 0)).toBe(true);
  expect(p!.provenance).toBe(Object.values(p!.posted).reduce((a, b) => a + b, 0));
  expect(p!.sharedToD).toBe(0);
  expect(p!.refusedToD).toEqual(['hospital-0 NO_GRANT', 'hospital-1 NO_GRANT']);
  expect(lines.at(-1)).toBe('demo: OK');
}, 300_000);

it('the same with the granted hospital admitted after genesis (init --index, approve, submit)', async () => {
  const lines: string[] = [];
  const result = await runDemo({ patients: 1, admitted: true, log: (line) => lines.push(line) });
  expect(result.ok, lines.join('\n')).toBe(true);
  const [p] = result.patients;
  expect(p!.warnings).toBe(0);
  expect(p!.served).toEqual(p!.posted);
  expect(p!.provenance).toBe(Object.values(p!.posted).reduce((a, b) => a + b, 0));
  expect(p!.sharedToD).toBe(0);
  expect(p!.refusedToD).toEqual(['hospital-0 NO_GRANT', 'hospital-1 NO_GRANT']);
  expect(lines.some((l) => /hospital-3 admitted by 3 of 3 members/.test(l))).toBe(true);
  expect(lines.at(-1)).toBe('demo: OK');
}, 300_000);
