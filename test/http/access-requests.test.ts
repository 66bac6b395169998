/**
 * Access requests (http/access-request-routes.ts, paper 5.2 "share") over real HTTP on 127.0.0.1,
 * between three institutions of the in-process network (test/sharing/network.ts: real LevelDB
 * stores, libp2p on loopback, one replica pinning for all): 0 is the patient's home and holds
 * their records, 1 asks with reputation above the patient's threshold, 2 below it.
 *
 * The reputations come from a ReputationView STUB (0: 0.75, 1: 0.62, 2: 0.31), in this test only:
 * a real network's reputations come from closed chunks of keyblocks, which the in-process test
 * network does not run. Everything else is real: signatures, the LevelDB state, the grant.
 *
 * The patient sets a threshold of 0.5 (signed); institution 1's staff send a request through
 * their own sidecar, which signs it and posts it to the home: pending. The patient lists it
 * (signed), makes a real grant for institution 1 and posts it to the holders, and approves with
 * its Consent id; institution 1 polls and sees it approved, then reads the records. Refusals:
 * no policy, below the threshold (naming both numbers), a forged institution signature, a stale
 * or replayed request, a request at a sidecar that is not the home, a second pending request,
 * and patient signatures that are missing or wrong.
 */
import type { AuditEvent, Bundle } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeAccessRequest } from '../../src/authz/access-request.ts';
import { grantToJson, makeGrant } from '../../src/authz/grant.ts';
import { PATIENT_REQUEST_HEADER, signPatientRequest } from '../../src/authz/patient-request.ts';
import { toHex } from '../../src/crypto/bytes.ts';
import { systemRandom } from '../../src/crypto/random.ts';
import { createFhirApi, type FhirApi } from '../../src/http/api.ts';
import { openShareNet, type ShareNet } from '../sharing/network.ts';
import { TEST_ID_COST, type TestPatient } from '../sidecar/ledger.ts';
import { type Answer, fetchJson } from './fetch-json.ts';
import { AUTH, closeSharedParts, SSN, sharedParts, smallTransaction, TOKEN } from './harness.ts';

const HOME = 0;
const ASKER = 1;
const LOW = 2;
const HOUR = 3_600_000;
const REPUTATIONS = new Map([
  [HOME, 0.75],
  [ASKER, 0.62],
  [LOW, 0.31],
]);
const IDENTITY = { system: SSN, value: '999-00-7788', birthDate: '1984-05-06' };

let net: ShareNet;
let apis: FhirApi[];
let urls: string[];
let P: TestPatient;
let Q: TestPatient;
let pid: string;
const logs: string[] = [];

/** A request over HTTP to institution `at`. */
const http = (
  at: number,
  method: string,
  path: string,
  opts: { body?: unknown; headers?: Record<string, string> } = {},
): Promise<Answer> => fetchJson(`${urls[at]}${path}`, method, opts);

/** A request signed as the patient (or by `signer`'s key, or for `idHash`). */
function asPatient(
  at: number,
  method: string,
  path: string,
  body?: unknown,
  opts: { signer?: Uint8Array; patient?: TestPatient } = {},
): Promise<Answer> {
  const patient = opts.patient ?? P;
  const text = body === undefined ? undefined : JSON.stringify(body);
  const header = signPatientRequest({
    chainId: net.fixture.genesis.chainId,
    method,
    path,
    ts: net.now,
    idHash: patient.idHash,
    signingSecret: opts.signer ?? patient.signingSecret,
    ...(text === undefined ? {} : { body: text }),
  });
  return http(at, method, path, {
    ...(body === undefined ? {} : { body }),
    headers: { [PATIENT_REQUEST_HEADER]: header },
  });
}

const issueText = (a: Answer) =>
  ((a.json.issue as { details?: { text?: string } }[] | undefined)?.[0]?.details?.text ??
    '') as string;
const issueCoding = (a: Answer) =>
  (a.json.issue as { details?: { coding?: { code?: string }[] } }[] | undefined)?.[0]?.details
    ?.coding?.[0]?.code;

/** Institution `from`'s staff ask through their own sidecar. */
const send = (from: number, body: Record<string, unknown> = {}) =>
  http(from, 'POST', '/spchain/access-requests/send', {
    body: { idHash: pid, home: urls[HOME], purpose: 'Referral: cardiology follow-up', ...body },
    headers: AUTH,
  });

/** A request signed by institution `signer`, claiming to be from `institution`. */
const signed = (institution: number, signer = institution, ts = net.now) =>
  makeAccessRequest(
    net.fixture.genesis.chainId,
    { idHash: pid, institution, purpose: 'Second opinion', ts },
    net.fixture.institutions[signer]!.signingSecret,
    systemRandom,
  );

const policyPath = () => `/spchain/patients/${pid}/access-policy`;
const listPath = () => `/spchain/patients/${pid}/access-requests`;

beforeAll(async () => {
  net = await openShareNet({
    seed: 'access-requests',
    homes: [HOME, HOME],
    members: 3,
    identities: [IDENTITY],
  });
  P = net.fixture.patients[0]!;
  Q = net.fixture.patients[1]!;
  pid = toHex(P.idHash);
  const parts = await sharedParts();
  const { genesis } = net.fixture;
  const primary = net.institutions[0]!.ledger;
  const directory = new Map<number, string>();
  apis = net.institutions.map((inst) =>
    createFhirApi({
      core: inst.core,
      ledger: inst.ledger.store,
      genesis,
      institution: { index: inst.index, name: genesis.members[inst.index]!.name },
      submitRegister: () => ({ ok: true }),
      sharing: inst.sharing,
      leafAuthor: {
        keys: net.fixture.institutions[inst.index]!,
        submitBundle: (b) => primary.submitBundle(b),
      },
      directory,
      // The stub: see the file's header.
      reputation: () => ({ reputations: REPUTATIONS, group: [HOME, ASKER] }),
      mapping: parts.mapping,
      validator: parts.validator,
      ehrToken: TOKEN,
      idHashCost: TEST_ID_COST,
      now: () => net.now,
      http: { logLevel: 'info', logStream: { write: (line: string) => logs.push(line) } },
    }),
  );
  urls = [];
  for (const api of apis) {
    await api.app.listen({ host: '127.0.0.1', port: 0 });
    urls.push(`http://127.0.0.1:${(api.app.server.address() as { port: number }).port}`);
  }
  for (const [k, u] of urls.entries()) directory.set(k, u);
  // The home holds a few of the patient's records, pinned.
  const r = await http(HOME, 'POST', '/fhir', {
    body: smallTransaction(IDENTITY, 3),
    headers: { ...AUTH, 'content-type': 'application/fhir+json' },
  });
  expect(r.status, JSON.stringify(r.json).slice(0, 300)).toBe(200);
  await net.anchorAll();
}, 120_000);

afterAll(async () => {
  for (const api of apis ?? []) await api.app.close();
  await net?.close();
  await closeSharedParts();
});

describe("the patient's threshold", () => {
  it('without one, every request is refused (NO_POLICY)', async () => {
    const policy = await asPatient(HOME, 'GET', policyPath());
    expect(policy.status, issueText(policy)).toBe(200);
    expect(policy.json).toEqual({ minReputation: null });
    const r = await send(ASKER);
    expect(r.status).toBe(403);
    expect(issueCoding(r)).toBe('NO_POLICY');
    expect(issueText(r)).toMatch(/^the patient's home refused it: .*not opened access requests/);
  });

  it('the patient sets it at the home (signed); it is checked and read back', async () => {
    const bad = await asPatient(HOME, 'PUT', policyPath(), { minReputation: -0.1 });
    expect(bad.status).toBe(400);
    expect((bad.json.issue as { expression?: string[] }[])[0]!.expression).toEqual([
      'minReputation',
    ]);
    expect((await asPatient(HOME, 'PUT', policyPath(), { minReputation: '0.5' })).status).toBe(400);
    // Unsigned, or signed by another key: 401, and nothing is set.
    const unsigned = await http(HOME, 'PUT', policyPath(), { body: { minReputation: 0 } });
    expect(unsigned.status).toBe(401);
    const forged = await asPatient(
      HOME,
      'PUT',
      policyPath(),
      { minReputation: 0 },
      {
        signer: Q.signingSecret,
      },
    );
    expect(forged.status).toBe(401);
    // Only the home keeps it (requests go there).
    const elsewhere = await asPatient(ASKER, 'PUT', policyPath(), { minReputation: 0.5 });
    expect(elsewhere.status).toBe(409);
    expect(issueCoding(elsewhere)).toBe('NOT_HOME');
    expect(issueText(elsewhere)).toMatch(/institution 0 is/);

    const set = await asPatient(HOME, 'PUT', policyPath(), { minReputation: 0.5 });
    expect(set.status, issueText(set)).toBe(200);
    expect(set.json).toEqual({
      minReputation: 0.5,
      updated: new Date(net.now).toISOString(),
    });
    expect(set.headers.get('access-control-allow-origin')).toBe('*');
    const read = await asPatient(HOME, 'GET', policyPath());
    expect(read.json).toMatchObject({ minReputation: 0.5 });
    // A browser may PUT it cross-origin.
    const pre = await fetch(`${urls[HOME]}${policyPath()}`, {
      method: 'OPTIONS',
      headers: {
        origin: 'http://portal.example',
        'access-control-request-method': 'PUT',
        'access-control-request-headers': PATIENT_REQUEST_HEADER,
      },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-methods')).toContain('PUT');
    expect(pre.headers.get('access-control-allow-headers')).toContain(PATIENT_REQUEST_HEADER);
  });
});

describe('asking, deciding, polling', () => {
  let id: string;
  let askedAt: number;
  const CONSENT = 'access-1';

  it('an institution above the threshold asks through its own sidecar: pending at the home', async () => {
    expect((await http(ASKER, 'POST', '/spchain/access-requests/send', { body: {} })).status).toBe(
      401,
    );
    askedAt = net.now;
    const r = await send(ASKER);
    expect(r.status, issueText(r)).toBe(201);
    id = r.json.id as string;
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    expect(r.json).toEqual({
      id,
      state: 'pending',
      reputation: 0.62,
      poll: `${urls[HOME]}/spchain/access-requests/${id}`,
    });
    // Without `home`, the directory's URL of the home the ledger names is used: a second
    // request while one is pending is refused there.
    const again = await send(ASKER, { home: undefined });
    expect(again.status).toBe(409);
    expect(issueCoding(again)).toBe('ALREADY_PENDING');
    expect(issueText(again)).toContain(id);
    // Bad input is named.
    for (const [body, field] of [
      [{ purpose: '' }, 'purpose'],
      [{ purpose: 'x'.repeat(201) }, 'purpose'],
      [{ home: 'ftp://x' }, 'home'],
    ] as const) {
      const b = await send(ASKER, body);
      expect(b.status, field).toBe(400);
      expect((b.json.issue as { expression?: string[] }[])[0]!.expression).toEqual([field]);
    }
    expect((await send(ASKER, { idHash: 'ab' })).status).toBe(400);
    expect((await send(ASKER, { idHash: 'ab'.repeat(32) })).status).toBe(404);
  });

  it('an institution below the threshold is refused, naming both numbers', async () => {
    const r = await send(LOW);
    expect(r.status).toBe(403);
    expect(issueCoding(r)).toBe('BELOW_THRESHOLD');
    expect(issueText(r)).toBe(
      "the patient's home refused it: institution 2 has reputation 0.31, below the 0.5 the patient set",
    );
  });

  it('refuses a forged signature (403), a stale one (403), a replay (409), the wrong sidecar (409)', async () => {
    const post = (body: unknown, at = HOME) =>
      http(at, 'POST', '/spchain/access-requests', { body });
    // Institution 2 signs a request claiming to be institution 1.
    const forged = await post(signed(ASKER, LOW));
    expect(forged.status).toBe(403);
    expect(issueCoding(forged)).toBe('BAD_SIGNATURE');
    const unknown = await post(signed(7, LOW));
    expect(unknown.status).toBe(403);
    expect(issueCoding(unknown)).toBe('UNKNOWN_INSTITUTION');
    const stale = await post(signed(ASKER, ASKER, net.now - 300_001));
    expect(stale.status).toBe(403);
    expect(issueCoding(stale)).toBe('STALE');
    // A good request from the home's own staff (reputation 0.75), a second later, then the
    // same bytes again.
    net.now += 1_000;
    const good = signed(HOME);
    const first = await post(good);
    expect(first.status, issueText(first)).toBe(201);
    const replay = await post(good);
    expect(replay.status).toBe(409);
    expect(issueCoding(replay)).toBe('REPLAYED');
    // At a sidecar that is not the patient's home.
    const wrong = await post(signed(ASKER), ASKER);
    expect(wrong.status).toBe(409);
    expect(issueCoding(wrong)).toBe('NOT_HOME');
    expect(issueText(wrong)).toBe("this sidecar is not the patient's home: institution 0 is");
    // Malformed bodies name the field.
    const bad = await post({ ...signed(ASKER), nonce: 'xyz' });
    expect(bad.status).toBe(400);
    expect((bad.json.issue as { expression?: string[] }[])[0]!.expression).toEqual(['nonce']);
  });

  it('the patient lists the requests (signed); a wrong signature is 401', async () => {
    const r = await asPatient(HOME, 'GET', listPath());
    expect(r.status, issueText(r)).toBe(200);
    const requests = r.json.requests as Record<string, unknown>[];
    // Newest first: the home's own request, then institution 1's.
    expect(requests.map((x) => [x.institution, x.state])).toEqual([
      [HOME, 'pending'],
      [ASKER, 'pending'],
    ]);
    expect(requests[1]).toEqual({
      id,
      institution: ASKER,
      name: net.fixture.genesis.members[ASKER]!.name,
      reputation: 0.62,
      reputationNow: 0.62,
      purpose: 'Referral: cardiology follow-up',
      time: new Date(askedAt).toISOString(),
      state: 'pending',
    });
    const wrongKey = await asPatient(HOME, 'GET', listPath(), undefined, {
      signer: Q.signingSecret,
    });
    expect(wrongKey.status).toBe(401);
    expect(issueText(wrongKey)).toMatch(/signature/);
    const otherPatient = await http(HOME, 'GET', listPath(), {
      headers: {
        [PATIENT_REQUEST_HEADER]: signPatientRequest({
          chainId: net.fixture.genesis.chainId,
          method: 'GET',
          path: listPath(),
          ts: net.now,
          idHash: Q.idHash,
          signingSecret: Q.signingSecret,
        }),
      },
    });
    expect(otherPatient.status).toBe(401);
    expect((await http(HOME, 'GET', listPath())).status).toBe(401);
  });

  it('the requester polls: pending, and nothing about the patient', async () => {
    const r = await http(HOME, 'GET', `/spchain/access-requests/${id}`);
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ state: 'pending' });
    expect((await http(HOME, 'GET', `/spchain/access-requests/${'0'.repeat(32)}`)).status).toBe(
      404,
    );
    expect((await http(HOME, 'GET', '/spchain/access-requests/nope')).status).toBe(400);
  });

  it('the patient grants (a real grant, posted to the holders) and approves', async () => {
    const { genesis } = net.fixture;
    const registration = await http(ASKER, 'GET', `/spchain/patients/${pid}/registration`);
    const holders = (registration.json.leaves as { institution: number; seq: number }[])
      .filter((l) => l.seq > 0)
      .map((l) => l.institution);
    expect(holders).toEqual([HOME]);
    const grant = grantToJson(
      makeGrant({
        chainId: genesis.chainId,
        idHash: P.idHash,
        patientPreSecret: P.preSecret,
        patientSigningSecret: P.signingSecret,
        grantee: { index: ASKER, preKey: genesis.members[ASKER]!.preKey },
        consentId: CONSENT,
        start: net.now - HOUR,
        end: net.now + 24 * HOUR,
        now: net.now,
      }),
    );
    for (const at of holders) {
      expect((await http(at, 'POST', '/spchain/grants', { body: grant })).status).toBe(201);
    }
    const path = `/spchain/access-requests/${id}/decision`;
    const approve = { decision: 'approve', consentId: CONSENT };
    // Refusals first: another patient's key, no Consent id, an unknown decision.
    expect((await asPatient(HOME, 'POST', path, approve, { signer: Q.signingSecret })).status).toBe(
      401,
    );
    const noConsent = await asPatient(HOME, 'POST', path, { decision: 'approve' });
    expect(noConsent.status).toBe(400);
    expect((await asPatient(HOME, 'POST', path, { decision: 'maybe' })).status).toBe(400);

    const r = await asPatient(HOME, 'POST', path, approve);
    expect(r.status, issueText(r)).toBe(200);
    expect(r.json).toEqual({ id, state: 'approved', consentId: CONSENT });
    const twice = await asPatient(HOME, 'POST', path, { decision: 'decline' });
    expect(twice.status).toBe(409);
    expect(issueCoding(twice)).toBe('DECIDED');
  });

  it('the requester polls and sees it approved with the Consent id; then reads the records', async () => {
    const r = await http(HOME, 'GET', `/spchain/access-requests/${id}`);
    expect(r.json).toEqual({ state: 'approved', consentId: CONSENT });
    const b = await http(ASKER, 'GET', `/fhir/Patient/${pid}/$everything?_count=100`, {
      headers: AUTH,
    });
    expect(b.status).toBe(200);
    const types = ((b.json as unknown as Bundle).entry ?? [])
      .filter((e) => e.search?.mode === 'match')
      .map((e) => e.resource!.resourceType);
    expect(types.filter((t) => t === 'Observation').length).toBe(3);
  });

  it('a declined request is closed with no Consent', async () => {
    const list = await asPatient(HOME, 'GET', listPath());
    const own = (list.json.requests as { id: string; institution: number }[]).find(
      (x) => x.institution === HOME,
    )!;
    const path = `/spchain/access-requests/${own.id}/decision`;
    const r = await asPatient(HOME, 'POST', path, { decision: 'decline' });
    expect(r.status, issueText(r)).toBe(200);
    expect(r.json).toEqual({ id: own.id, state: 'declined' });
    expect((await http(HOME, 'GET', `/spchain/access-requests/${own.id}`)).json).toEqual({
      state: 'declined',
    });
    const after = await asPatient(HOME, 'GET', listPath());
    expect(
      (after.json.requests as Record<string, unknown>[]).map((x) => [x.state, x.consentId]),
    ).toEqual([
      ['declined', undefined],
      ['approved', CONSENT],
    ]);
  });

  it('the patient sees who asked in their audit; no identifier in the logs', async () => {
    const r = await asPatient(HOME, 'GET', `/spchain/patients/${pid}/audit?count=100`);
    const events = ((r.json as unknown as Bundle).entry ?? []).map((e) => e.resource as AuditEvent);
    const by = (who: string) =>
      events.filter((e) => e.agent[0]!.who!.identifier!.value === who).map((e) => e.outcome);
    expect(by(`institution-${ASKER}`)).toContain('0');
    expect(by(`institution-${LOW}`)).toContain('4');
    expect(logs.join('\n')).not.toContain(IDENTITY.value);
  });
});
