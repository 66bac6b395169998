/**
 * The patient-facing API (http/patient-routes.ts) and share links (http/share-link-routes.ts)
 * over real HTTP on 127.0.0.1, between three institutions of the in-process network
 * (test/sharing/network.ts: real LevelDB stores, libp2p on loopback, one replica pinning for all):
 * 0 is the patient's home, 1 another holder, 2 the grantee D. A Synthea patient's bundle is split
 * between 0 and 1. Then: the institutions list; an enrolment code and the self-registration it
 * allows; the patient's records as ciphertext that the patient's PRE secret opens; every refusal
 * of a patient request signature; the patient's audit; a share link made after a real grant,
 * opened at D (which then serves the records), and every refusal of a link (reused, for another
 * institution, tampered, expired, revoked).
 */
import type { AuditEvent, Bundle } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { splitBundle } from '../../scripts/demo.ts';
import { revocationToJson, signRevocation } from '../../src/authz/consent.ts';
import { grantToJson, makeGrant } from '../../src/authz/grant.ts';
import { PATIENT_REQUEST_HEADER, signPatientRequest } from '../../src/authz/patient-request.ts';
import {
  makeShareLink,
  SHARE_LINK_SCHEME,
  signShareLinkRedemption,
  toBase64Url,
} from '../../src/authz/share-link.ts';
import { toHex } from '../../src/crypto/bytes.ts';
import { deterministicRandom, systemRandom } from '../../src/crypto/random.ts';
import { decodeCapsule, decryptOriginal } from '../../src/crypto/umbral/index.ts';
import { createFhirApi, type FhirApi } from '../../src/http/api.ts';
import { ENROLMENT_ALPHABET, parseDirectory } from '../../src/http/patient-routes.ts';
import { makeRegisterTx } from '../../src/ledger/author.ts';
import { computeIdHash } from '../../src/ledger/idhash.ts';
import { encodeTx, signGrant } from '../../src/ledger/tx.ts';
import type { RegisterTx } from '../../src/ledger/types.ts';
import { makePatient } from '../helpers/ledger-fixtures.ts';
import { openShareNet, type ShareNet } from '../sharing/network.ts';
import { TEST_ID_COST, type TestPatient } from '../sidecar/ledger.ts';
import { type Answer, fetchJson } from './fetch-json.ts';
import { AUTH, closeSharedParts, SSN, sharedParts, syntheaBundles } from './harness.ts';

const HOME = 0;
const HOLDER = 1;
const D = 2;
const HOUR = 3_600_000;

let net: ShareNet;
let apis: FhirApi[];
let urls: string[];
let P: TestPatient;
let Q: TestPatient;
let pid: string;
const logs: string[] = [];
const submitted: RegisterTx[] = [];
/** The records each holder took (`Type/id`). */
const posted: Record<number, string[]> = { [HOME]: [], [HOLDER]: [] };

/** A request over HTTP to institution `at`. */
const http = (
  at: number,
  method: string,
  path: string,
  opts: { body?: unknown; headers?: Record<string, string> } = {},
): Promise<Answer> => fetchJson(`${urls[at]}${path}`, method, opts);

/** The x-spchain-patient header of `patient` (or `signer`) for one request. */
function signedBy(
  patient: TestPatient,
  method: string,
  path: string,
  opts: { ts?: number; signer?: Uint8Array; idHash?: Uint8Array } = {},
): Record<string, string> {
  return {
    [PATIENT_REQUEST_HEADER]: signPatientRequest({
      chainId: net.fixture.genesis.chainId,
      method,
      path,
      ts: opts.ts ?? net.now,
      idHash: opts.idHash ?? patient.idHash,
      signingSecret: opts.signer ?? patient.signingSecret,
    }),
  };
}

const patientGet = (at: number, path: string, patient = P) =>
  http(at, 'GET', path, { headers: signedBy(patient, 'GET', path) });

const issueText = (a: Answer) =>
  ((a.json.issue as { details?: { text?: string } }[] | undefined)?.[0]?.details?.text ??
    '') as string;
const issueCoding = (a: Answer) =>
  (a.json.issue as { details?: { coding?: { code?: string }[] } }[] | undefined)?.[0]?.details
    ?.coding?.[0]?.code;

beforeAll(async () => {
  const bundles = syntheaBundles().slice(0, 1);
  net = await openShareNet({
    seed: 'patient-api',
    homes: [HOME, HOME],
    members: 3,
    identities: [bundles[0]!.identity],
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
      submitRegister: (tx) => {
        submitted.push(tx);
        return { ok: true };
      },
      sharing: inst.sharing,
      leafAuthor: {
        keys: net.fixture.institutions[inst.index]!,
        submitBundle: (b) => primary.submitBundle(b),
      },
      directory,
      reputation: () => ({
        reputations: new Map([
          [0, 0.75],
          [1, 0.5],
        ]),
        group: [0, 1],
      }),
      mapping: parts.mapping,
      validator: parts.validator,
      ehrToken: 'test-token-0123456789abcdef0123456789abcdef',
      idHashCost: TEST_ID_COST,
      now: () => net.now,
      http: { logLevel: 'info', logStream: { write: (line: string) => logs.push(line) } },
    }),
  );
  urls = [];
  for (const api of apis) {
    await api.app.listen({ host: '127.0.0.1', port: 0 });
    const address = api.app.server.address() as { port: number };
    urls.push(`http://127.0.0.1:${address.port}`);
  }
  for (const [k, u] of urls.entries()) directory.set(k, u);

  // The holder gets a leaf (the patient's upload grant, at the home), pinned.
  const leaf = {
    idHash: pid,
    institution: HOLDER,
    grant: toHex(signGrant(genesis.chainId, P.idHash, HOLDER, P.signingSecret)),
  };
  expect((await http(HOME, 'POST', '/spchain/leaves', { body: leaf })).status).toBe(202);
  await net.anchorAll();
  // The patient's bundle split between the home and the holder.
  const halves = splitBundle(bundles[0]!.bundle, parts.mapping);
  for (const [n, at] of [HOME, HOLDER].entries()) {
    const r = await http(at, 'POST', '/fhir', {
      body: halves[n],
      headers: { ...AUTH, 'content-type': 'application/fhir+json' },
    });
    expect(r.status, JSON.stringify(r.json).slice(0, 300)).toBe(200);
    for (const e of (r.json as unknown as Bundle).entry ?? []) {
      const ref = e.response!.location!.split('/_history')[0]!;
      if (parts.mapping.records.has(ref.split('/')[0]!)) posted[at]!.push(ref);
    }
  }
  expect(posted[HOME]!.length).toBeGreaterThan(3);
  expect(posted[HOLDER]!.length).toBeGreaterThan(3);
  await net.anchorAll();
}, 180_000);

afterAll(async () => {
  for (const api of apis ?? []) await api.app.close();
  await net?.close();
  await closeSharedParts();
});

describe('the network and the patient’s registration (public)', () => {
  it('lists the institutions with reputation, group, keys and URL; CORS for browsers', async () => {
    const r = await http(D, 'GET', '/spchain/institutions');
    expect(r.status).toBe(200);
    expect(r.headers.get('access-control-allow-origin')).toBe('*');
    const { genesis } = net.fixture;
    expect(r.json).toEqual({
      self: D,
      chainId: genesis.chainId,
      minFee: genesis.params.minFee,
      institutions: genesis.members.map((m) => ({
        index: m.index,
        name: m.name,
        reputation: m.index === 0 ? 0.75 : m.index === 1 ? 0.5 : 0,
        inGroup: m.index < 2,
        preKey: toHex(m.preKey),
        signingKey: toHex(m.signingKey),
        chameleonKey: toHex(m.chameleonKey),
        url: urls[m.index],
      })),
    });
    const pre = await fetch(`${urls[HOME]}/spchain/patients/${pid}/records`, {
      method: 'OPTIONS',
      headers: {
        origin: 'http://portal.example',
        'access-control-request-method': 'GET',
        'access-control-request-headers': PATIENT_REQUEST_HEADER,
      },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe('*');
    expect(pre.headers.get('access-control-allow-headers')).toContain(PATIENT_REQUEST_HEADER);
    expect(pre.headers.get('access-control-allow-headers')).toContain('content-type');
  });

  it('tells whether a patient is registered, and where: nothing else', async () => {
    const r = await http(HOLDER, 'GET', `/spchain/patients/${pid}/registration`);
    expect(r.status).toBe(200);
    expect(Object.keys(r.json).sort()).toEqual(['block', 'home', 'leaves', 'registered']);
    expect(r.json).toMatchObject({ registered: true, block: { i: 1, j: 0 }, home: HOME });
    const leaves = r.json.leaves as { institution: number; seq: number }[];
    expect(leaves.map((l) => l.institution)).toEqual([HOME, HOLDER]);
    expect(leaves.map((l) => l.seq)).toEqual([posted[HOME]!.length, posted[HOLDER]!.length]);
    expect(await http(0, 'GET', `/spchain/patients/${'ab'.repeat(32)}/registration`)).toMatchObject(
      { status: 200, json: { registered: false } },
    );
    expect((await http(0, 'GET', '/spchain/patients/XYZ/registration')).status).toBe(400);
  });

  it('parses a directory from its JSON and names a bad entry', () => {
    expect(parseDirectory('{"0":"http://a.example/","2":"https://b.example"}')).toEqual(
      new Map([
        [0, 'http://a.example'],
        [2, 'https://b.example'],
      ]),
    );
    expect(() => parseDirectory('{"x":"http://a"}')).toThrow(/member index/);
    expect(() => parseDirectory('{"1":"ftp://a"}')).toThrow(/member 1/);
    expect(() => parseDirectory('[')).toThrow(/JSON/);
  });
});

describe('enrolment and self-registration', () => {
  const identity = { system: SSN, value: '999-00-4321', birthDate: '1990-02-03' };
  const keys = makePatient(deterministicRandom('patient-api/newcomer'));
  const enrol = (body: unknown, headers: Record<string, string> = AUTH) =>
    http(HOME, 'POST', '/spchain/enrolments', { body, headers });
  const registerTx = (idHash: Uint8Array, home = HOME) =>
    Buffer.from(
      encodeTx(
        makeRegisterTx({
          chainId: net.fixture.genesis.chainId,
          idHash,
          home: net.fixture.institutions[home]!,
          patient: keys,
          fee: 1,
        }),
      ),
    ).toString('base64');

  it('the front desk gets a code for the idHash; the portal reads it; the patient registers once', async () => {
    const idHash = computeIdHash(net.fixture.genesis.idHashKey, identity, TEST_ID_COST);
    const made = await enrol({
      identifier: `${SSN}|${identity.value}`,
      birthDate: identity.birthDate,
    });
    expect(made.status).toBe(201);
    const code = made.json.code as string;
    expect(code).toMatch(new RegExp(`^[${ENROLMENT_ALPHABET}]{10}$`));
    expect(code).not.toMatch(/[01ILO]/);
    expect(made.json.idHash).toBe(toHex(idHash));
    expect(Date.parse(made.json.expires as string)).toBe(net.now + 24 * HOUR);

    const read = await http(HOME, 'GET', `/spchain/enrolments/${code}`);
    expect(read).toMatchObject({
      status: 200,
      json: {
        idHash: toHex(idHash),
        home: HOME,
        chainId: net.fixture.genesis.chainId,
        expires: made.json.expires,
      },
    });
    expect(read.headers.get('access-control-allow-origin')).toBe('*');

    const before = submitted.length;
    const self = await http(HOME, 'POST', '/spchain/patients/self', {
      body: { code: code.toLowerCase(), registerTx: registerTx(idHash) },
    });
    expect(self).toMatchObject({
      status: 202,
      json: { idHash: toHex(idHash), state: 'submitted' },
    });
    expect(submitted.length).toBe(before + 1);
    expect(toHex(submitted.at(-1)!.idHash)).toBe(toHex(idHash));
    expect(toHex(submitted.at(-1)!.patientSigningKey)).toBe(toHex(keys.signingKey));

    // Single use: the code is gone for everyone.
    expect((await http(HOME, 'GET', `/spchain/enrolments/${code}`)).status).toBe(404);
    const again = await http(HOME, 'POST', '/spchain/patients/self', {
      body: { code, registerTx: registerTx(idHash) },
    });
    expect(again.status).toBe(404);
    expect(submitted.length).toBe(before + 1);
    // The identifier is in no log line.
    expect(logs.join('\n')).not.toContain(identity.value);
  });

  it('refuses a wrong, unknown, expired or malformed code, and a tx for another home', async () => {
    const idHash = computeIdHash(net.fixture.genesis.idHashKey, identity, TEST_ID_COST);
    const forQ = await enrol({
      identifier: `${Q.identity.system}|${Q.identity.value}`,
      birthDate: Q.identity.birthDate,
    });
    expect(forQ.json.idHash).toBe(toHex(Q.idHash));
    const post = (code: unknown, tx = registerTx(idHash)) =>
      http(HOME, 'POST', '/spchain/patients/self', { body: { code, registerTx: tx } });
    const before = submitted.length;

    const wrong = await post(forQ.json.code);
    expect(wrong.status).toBe(403);
    expect(issueText(wrong)).toBe('the enrolment code is not for this patient');
    expect((await post('ABCDEFGHJK')).status).toBe(404);
    expect((await post('not a code!')).status).toBe(404);
    expect((await post(42)).status).toBe(400);
    // A tx naming another institution as home: the register checks come first (422).
    expect((await post(forQ.json.code, registerTx(idHash, HOLDER))).status).toBe(422);
    expect((await post(forQ.json.code, 'AAAA')).status).toBe(400);

    const fresh = await enrol({
      identifier: `${SSN}|${identity.value}`,
      birthDate: identity.birthDate,
    });
    const saved = net.now;
    net.now += 24 * HOUR;
    try {
      expect((await post(fresh.json.code)).status).toBe(410);
      expect((await http(HOME, 'GET', `/spchain/enrolments/${fresh.json.code}`)).status).toBe(404);
    } finally {
      net.now = saved;
    }
    expect(submitted.length).toBe(before);
    // Still good afterwards: refusals do not use the code up.
    expect((await post(fresh.json.code)).status).toBe(202);
  });

  it('enrolment needs the EHR and a well-formed identifier and birth date', async () => {
    const body = { identifier: `${SSN}|123`, birthDate: '1990-01-01' };
    expect((await enrol(body, {})).status).toBe(401);
    for (const [bad, field] of [
      [{ ...body, identifier: 'no-bar' }, 'identifier'],
      [{ ...body, identifier: '|value' }, 'identifier'],
      [{ ...body, birthDate: '1990-13-01' }, undefined],
      [{ ...body, birthDate: 19900101 }, 'birthDate'],
    ] as const) {
      const r = await enrol(bad);
      expect(r.status, JSON.stringify(bad)).toBe(400);
      if (field !== undefined) {
        expect((r.json.issue as { expression?: string[] }[])[0]!.expression).toEqual([field]);
      }
    }
  });
});

describe('the patient’s own records and audit (patient-signed)', () => {
  it('pages the records held here as ciphertext that the patient’s PRE secret opens', async () => {
    const seen: string[] = [];
    let path: string | undefined = `/spchain/patients/${pid}/records?count=4`;
    let pages = 0;
    while (path !== undefined) {
      const r = await patientGet(HOME, path);
      expect(r.status, issueText(r)).toBe(200);
      expect(r.headers.get('access-control-allow-origin')).toBe('*');
      const records = r.json.records as Record<string, string | Record<string, unknown>>[];
      expect(records.length).toBeLessThanOrEqual(4);
      for (const rec of records) {
        const plain = decryptOriginal(
          P.preSecret,
          decodeCapsule(Buffer.from(rec.capsule as string, 'base64')),
          Buffer.from(rec.ciphertext as string, 'base64'),
        );
        // The stored record: the resource itself, or a Bundle of it with its context.
        const content = JSON.parse(new TextDecoder().decode(plain)) as Bundle;
        const inside =
          content.resourceType === 'Bundle'
            ? (content.entry ?? []).map((e) => e.resource!)
            : [content as unknown as { resourceType: string; id: string }];
        expect(inside.some((x) => x.resourceType === rec.resourceType && x.id === rec.id)).toBe(
          true,
        );
        expect(rec.kind).toBe('medical');
        expect(rec.txHash).toMatch(/^[0-9a-f]{64}$/);
        expect((rec.anchoring as { state: string }).state).toBe('pinned');
        seen.push(`${rec.resourceType}/${rec.id}`);
      }
      const next = r.json.next as string | undefined;
      path =
        next === undefined
          ? undefined
          : `/spchain/patients/${pid}/records?count=4&after=${encodeURIComponent(next)}`;
      expect(++pages).toBeLessThan(100);
    }
    expect(seen.sort()).toEqual([...posted[HOME]!].sort());
    // The holder serves its own share only.
    const atHolder = await patientGet(HOLDER, `/spchain/patients/${pid}/records?count=200`);
    expect(
      (atHolder.json.records as { resourceType: string; id: string }[])
        .map((x) => `${x.resourceType}/${x.id}`)
        .sort(),
    ).toEqual([...posted[HOLDER]!].sort());
  });

  it('refuses a missing, malformed, stale, foreign or wrong signature (401), an unknown patient (404)', async () => {
    const path = `/spchain/patients/${pid}/records`;
    const at = (headers: Record<string, string>, p = path) => http(HOME, 'GET', p, { headers });
    const cases: [string, Record<string, string>, number, RegExp][] = [
      ['none', {}, 401, /missing/],
      ['malformed', { [PATIENT_REQUEST_HEADER]: 'idHash=1, ts=2' }, 401, /must be|idHash/],
      ['stale', signedBy(P, 'GET', path, { ts: net.now - 300_001 }), 401, /timestamp/],
      ['future', signedBy(P, 'GET', path, { ts: net.now + 300_001 }), 401, /timestamp/],
      ['another key', signedBy(P, 'GET', path, { signer: Q.signingSecret }), 401, /signature/],
      ['another path', signedBy(P, 'GET', `${path}?count=5`), 401, /signature/],
      ['another method', signedBy(P, 'POST', path), 401, /signature/],
      ['another patient', signedBy(Q, 'GET', path), 401, /another patient/],
    ];
    for (const [name, headers, status, why] of cases) {
      const r = await at(headers);
      expect(r.status, name).toBe(status);
      expect(issueText(r), name).toMatch(why);
      expect(r.headers.get('access-control-allow-origin'), name).toBe('*');
    }
    // At the edge of the window it still holds.
    expect((await at(signedBy(P, 'GET', path, { ts: net.now - 300_000 }))).status).toBe(200);
    const nobody = `/spchain/patients/${'cd'.repeat(32)}/records`;
    const unknown = await at(
      signedBy(P, 'GET', nobody, { idHash: Uint8Array.from({ length: 32 }, () => 0xcd) }),
      nobody,
    );
    expect(unknown.status).toBe(404);
    expect((await patientGet(HOME, `${path}?count=201`)).status).toBe(400);
    expect((await patientGet(HOME, `${path}?after=zz`)).status).toBe(400);
  });

  it('shows the patient the AuditEvents about them here, newest first', async () => {
    const path = `/spchain/patients/${pid}/audit?count=100`;
    const r = await patientGet(HOME, path);
    expect(r.status, issueText(r)).toBe(200);
    expect(r.json).toMatchObject({ resourceType: 'Bundle', type: 'searchset' });
    const events = ((r.json as unknown as Bundle).entry ?? []).map((e) => e.resource as AuditEvent);
    const recorded = events.map((e) => e.recorded!);
    expect([...recorded].sort().reverse()).toEqual(recorded);
    const clients = new Set(events.map((e) => e.agent[0]!.who!.identifier!.value));
    // The EHR's writes (under its own Patient id) and the patient's own reads (Patient/<idHash>).
    expect(clients).toContain('ehr');
    expect(clients).toContain('patient');
    const subtypes = new Set(events.map((e) => e.subtype![0]!.code));
    expect(subtypes).toContain('transaction');
    expect(subtypes).toContain('read');
    expect((await patientGet(HOME, `/spchain/patients/${pid}/audit?count=0`)).status).toBe(400);
    expect((await http(HOME, 'GET', path)).status).toBe(401);
  });
});

describe('share links', () => {
  const CONSENT = 'consent-d';
  let link: string;

  const makeLink = (
    over: Partial<{ grantee: number; exp: number; consent: string; issuer: string }> = {},
  ) =>
    makeShareLink(
      {
        chainId: net.fixture.genesis.chainId,
        idHash: P.idHash,
        block: { i: 1, j: 0 },
        consent: CONSENT,
        grantee: D,
        issuer: urls[HOME]!,
        exp: net.now + HOUR,
        ...over,
      },
      P.signingSecret,
      systemRandom,
    );
  const open = (text: string, at = D) =>
    http(at, 'POST', '/spchain/share-links/open', { body: { link: text }, headers: AUTH });
  /** A redemption signed by institution `by` (claiming `institution`), posted to the issuer. */
  const redeem = (text: string, nonce: string, by = D, institution = D, ts = net.now) =>
    http(HOME, 'POST', '/spchain/share-links/redeem', {
      body: {
        link: text,
        institution,
        ts,
        signature: signShareLinkRedemption(
          { chainId: net.fixture.genesis.chainId, nonce, institution, ts },
          net.fixture.institutions[by]!.signingSecret,
        ),
      },
    });

  beforeAll(async () => {
    // The patient's grant for D, posted to every holder as the CLI does.
    const { genesis } = net.fixture;
    const grant = grantToJson(
      makeGrant({
        chainId: genesis.chainId,
        idHash: P.idHash,
        patientPreSecret: P.preSecret,
        patientSigningSecret: P.signingSecret,
        grantee: { index: D, preKey: genesis.members[D]!.preKey },
        consentId: CONSENT,
        start: net.now - HOUR,
        end: net.now + 24 * HOUR,
        now: net.now,
      }),
    );
    for (const at of [HOME, HOLDER]) {
      const r = await http(at, 'POST', '/spchain/grants', { body: grant });
      expect(r.status).toBe(201);
    }
    link = makeLink().link;
  });

  it('D opens the link at its own sidecar; then D’s $everything serves the records', async () => {
    expect(link.startsWith(`${urls[HOME]}/portal/#share=`)).toBe(true);
    const r = await open(link);
    expect(r.status, issueText(r)).toBe(200);
    expect(r.json).toEqual({
      idHash: pid,
      block: { i: 1, j: 0 },
      consent: CONSENT,
      patient: `Patient/${pid}`,
      holders: [HOME, HOLDER],
      everything: `${urls[D]}/fhir/Patient/${pid}/$everything`,
    });
    const url = new URL(r.json.everything as string);
    const b = await http(D, 'GET', `${url.pathname}?_count=1000`, { headers: AUTH });
    expect(b.status).toBe(200);
    const refs = ((b.json as unknown as Bundle).entry ?? [])
      .filter((e) => e.search?.mode === 'match')
      .map((e) => `${e.resource!.resourceType}/${e.resource!.id}`);
    expect(refs.slice(1).sort()).toEqual([...posted[HOME]!, ...posted[HOLDER]!].sort());
  });

  it('a link is single use: the same link again is 409, from the issuer', async () => {
    const again = await open(link);
    expect(again.status).toBe(409);
    expect(issueCoding(again)).toBe('REDEEMED');
    expect(issueText(again)).toMatch(/issuer refused it: .*single use/);
    // The spchain+share: form of the same payload is the same link.
    const same = `${SHARE_LINK_SCHEME}${link.slice(link.indexOf('#share=') + 7)}`;
    expect((await open(same)).status).toBe(409);
  });

  it('a link for another institution is 403, at the grantee and at the issuer', async () => {
    const { link: forHolder, payload } = makeLink({ grantee: HOLDER });
    const atD = await open(forHolder);
    expect(atD.status).toBe(403);
    expect(issueText(atD)).toBe('this link is for another institution');
    // D presents it to the issuer itself: refused there too.
    const atIssuer = await redeem(forHolder, payload.nonce);
    expect(atIssuer.status).toBe(403);
    expect(issueText(atIssuer)).toBe('this link is for another institution');
    // An institution signing for another is refused.
    const { link: forD, payload: p2 } = makeLink();
    const forged = await redeem(forD, p2.nonce, HOLDER, D);
    expect(forged.status).toBe(403);
    expect(issueText(forged)).toMatch(/signature/);
    // A redemption signed too long ago.
    const stale = await redeem(forD, p2.nonce, D, D, net.now - 300_001);
    expect(stale.status).toBe(403);
    expect(issueText(stale)).toMatch(/ts is more than/);
    // None of those used the link up.
    expect((await open(forD)).status).toBe(200);
  });

  it('a tampered link is refused: 403 for a changed field, 400 for garbage', async () => {
    const { payload } = makeLink({ grantee: HOLDER });
    const tampered = { ...payload, grantee: D };
    const text = `${urls[HOME]}/portal/#share=${toBase64Url(new TextEncoder().encode(JSON.stringify(tampered)))}`;
    const r = await open(text);
    expect(r.status).toBe(403);
    expect(issueCoding(r)).toBe('BAD_SIGNATURE');
    expect((await redeem(text, payload.nonce)).status).toBe(403);
    expect((await open(`${urls[HOME]}/portal/#share=%%%`)).status).toBe(400);
    expect((await open(`${link}x`)).status).toBe(400);
    expect((await open('')).status).toBe(400);
  });

  it('an expired link is 410, at the grantee and at the issuer', async () => {
    const { link: old, payload } = makeLink({ exp: net.now });
    const atD = await open(old);
    expect(atD.status).toBe(410);
    expect(issueCoding(atD)).toBe('EXPIRED');
    expect((await redeem(old, payload.nonce)).status).toBe(410);
  });

  it('after the patient revokes the Consent, a link under it is 403', async () => {
    const fresh = makeLink();
    type Consents = {
      consents: { id: string; state: string; consent: { resourceType?: string } | null }[];
    };
    const before = (await patientGet(HOME, `/spchain/patients/${pid}/consents`))
      .json as unknown as Consents;
    expect(before.consents.find((c) => c.id === CONSENT)).toMatchObject({
      state: 'active',
      consent: { resourceType: 'Consent', id: CONSENT, status: 'active' },
    });
    const revocation = revocationToJson(
      signRevocation(net.fixture.genesis.chainId, P.idHash, CONSENT, P.signingSecret),
    );
    for (const at of [HOME, HOLDER]) {
      expect((await http(at, 'POST', '/spchain/revocations', { body: revocation })).status).toBe(
        200,
      );
    }
    const after = (await patientGet(HOME, `/spchain/patients/${pid}/consents`))
      .json as unknown as Consents;
    expect(after.consents.find((c) => c.id === CONSENT)).toEqual({
      id: CONSENT,
      state: 'revoked',
      consent: null,
    });
    const r = await open(fresh.link);
    expect(r.status).toBe(403);
    expect(issueCoding(r)).toBe('REVOKED');
    expect(issueText(r)).toMatch(/revoked/);
    // A Consent the issuer never held is refused the same way.
    const other = await open(makeLink({ consent: 'never-granted' }).link);
    expect(other.status).toBe(403);
    expect(issueCoding(other)).toBe('none');
  });

  it('the patient sees at the issuer who redeemed their link, and who tried', async () => {
    const r = await patientGet(HOME, `/spchain/patients/${pid}/audit?count=100`);
    const events = ((r.json as unknown as Bundle).entry ?? []).map((e) => e.resource as AuditEvent);
    const redeems = events.filter((e) =>
      (e.entity ?? []).some((x) => x.what?.reference === `Consent/${CONSENT}`),
    );
    const byD = redeems.filter((e) => e.agent[0]!.who!.identifier!.value === `institution-${D}`);
    expect(byD.filter((e) => e.outcome === '0').length).toBe(2);
    expect(byD.some((e) => e.outcomeDesc?.startsWith('HTTP 409'))).toBe(true);
    expect(byD.some((e) => e.outcomeDesc?.startsWith('HTTP 403'))).toBe(true);
  });
});
