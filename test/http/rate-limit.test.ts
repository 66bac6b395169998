/**
 * Routes whose answer tells whether a guess was right (an enrolment code here) allow each client
 * address `guessLimit.max` calls per window, then answer 429 with Retry-After and an
 * OperationOutcome; routes that are not marked stay unlimited.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ApiHarness, closeSharedParts, openApiHarness } from './harness.ts';

let h: ApiHarness;

beforeAll(async () => {
  h = await openApiHarness('rate-limit', {
    identities: [],
    api: { http: { logLevel: 'silent', guessLimit: { max: 5, windowMs: 60_000 } } },
  });
}, 60_000);
afterAll(async () => {
  await h?.close();
  await closeSharedParts();
});

it('refuses the sixth guess of an enrolment code from one address, not other routes', async () => {
  const guess = () => h.api.app.inject({ method: 'GET', url: '/spchain/enrolments/ABCDEFGHJK' });
  for (let k = 0; k < 5; k++) expect((await guess()).statusCode).toBe(404);
  const refused = await guess();
  expect(refused.statusCode).toBe(429);
  expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
  const outcome = JSON.parse(refused.body) as { issue: { code: string; diagnostics?: string }[] };
  expect(outcome.issue[0]!.code).toBe('throttled');
  // Another client address has its own allowance; an unmarked route has none.
  const other = await h.api.app.inject({
    method: 'GET',
    url: '/spchain/enrolments/ABCDEFGHJK',
    remoteAddress: '127.0.0.2',
  });
  expect(other.statusCode).toBe(404);
  for (let k = 0; k < 10; k++) {
    expect((await h.api.app.inject({ method: 'GET', url: '/fhir/metadata' })).statusCode).toBe(200);
  }
});
