/**
 * Sharing served as FHIR, end to end through the HTTP API of four institutions in one process
 * (share-net.ts: real LevelDB stores, real libp2p on loopback, the real validator and mapping;
 * consensus stood in for by one replica pinning for all). A Synthea patient registered at A
 * (hospital-0); A adds B's leaf under the patient's signed upload grant (POST /spchain/leaves);
 * the patient's bundle is split between A and B and posted to each; the patient's grant for C
 * (hospital-2) goes to A and B (POST /spchain/grants). Then C reads the patient through
 * $everything and searches, D (hospital-3) has no grant, a holder tampers, forged grants are
 * refused, and after the revocation nothing is re-encrypted or served.
 */
import type { Bundle, Observation, OperationOutcome, Provenance } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { splitBundle } from '../../scripts/demo.ts';
import { revocationToJson, signRevocation } from '../../src/authz/consent.ts';
import { type Grant, grantToJson, makeGrant } from '../../src/authz/grant.ts';
import { toHex } from '../../src/crypto/bytes.ts';
import { generateSigningKey } from '../../src/crypto/sign.ts';
import { INSTITUTION_SYSTEM, ledgerValue } from '../../src/fhir/provenance.ts';
import { signGrant } from '../../src/ledger/tx.ts';
import {
  decodeShareResponse,
  encodeShareItem,
  encodeSharePage,
} from '../../src/sidecar/share-wire.ts';
import type { TestPatient } from '../sidecar/ledger.ts';
import { closeSharedParts, sharedParts, syntheaBundles } from './harness.ts';
import { call, getBundle, openShareApiNet, type ShareApiNet } from './share-net.ts';

const A = 0;
const B = 1;
const C = 2;
const D = 3;
const HOUR = 3_600_000;

let s: ShareApiNet;
let P: TestPatient;
/** The patient's id at C: the ledger patient's idHash. */
let pid: string;
/** The records each holder took (`Type/id`). */
const posted: Record<number, string[]> = { [A]: [], [B]: [] };
/** The Patient id at A and at B (their own copies). */
const own: Record<number, string> = {};

function grantFor(grantee: number, id: string, opts: { signer?: Uint8Array } = {}): Grant {
  const { genesis } = s.net.fixture;
  const grant = makeGrant({
    chainId: genesis.chainId,
    idHash: P.idHash,
    patientPreSecret: P.preSecret,
    patientSigningSecret: opts.signer ?? P.signingSecret,
    grantee: { index: grantee, preKey: genesis.members[grantee]!.preKey },
    consentId: id,
    start: s.net.now - HOUR,
    end: s.net.now + 24 * HOUR,
    now: s.net.now,
  });
  return grant;
}

const matches = (b: Bundle) =>
  (b.entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource!);
const refsOf = (b: Bundle) => matches(b).map((r) => `${r.resourceType}/${r.id}`);
const ofType = <T>(b: Bundle, type: string) =>
  (b.entry ?? []).filter((e) => e.resource?.resourceType === type).map((e) => e.resource as T);
const warnings = (b: Bundle) =>
  ofType<OperationOutcome>(b, 'OperationOutcome').flatMap((o) => o.issue ?? []);
const path = (url: string) => {
  const u = new URL(url);
  return `${u.pathname}${u.search}`;
};

/** Every page from `url` on, following next links. */
async function pages(at: number, url: string): Promise<Bundle[]> {
  const out: Bundle[] = [];
  for (let next: string | undefined = url; next !== undefined; ) {
    const b = await getBundle(s, at, next);
    out.push(b);
    const link = b.link?.find((l) => l.relation === 'next')?.url;
    next = link === undefined ? undefined : path(link);
    expect(out.length).toBeLessThan(100);
  }
  return out;
}

beforeAll(async () => {
  const bundles = syntheaBundles().slice(0, 1);
  s = await openShareApiNet(
    'share-http',
    bundles.map((x) => x.identity),
    4,
  );
  P = s.patients[0]!;
  const { chainId } = s.net.fixture.genesis;

  // B gets a leaf: the patient's upload grant, sent to A (the home), pinned.
  const leaf = {
    idHash: toHex(P.idHash),
    institution: B,
    grant: toHex(signGrant(chainId, P.idHash, B, P.signingSecret)),
  };
  const first = await call(s, A, 'POST', '/spchain/leaves', leaf, false);
  expect(first.status).toBe(202);
  expect(first.json.state).toBe('submitted');
  expect((await call(s, A, 'POST', '/spchain/leaves', leaf, false)).json.state).toBe('pending');
  await s.net.anchorAll();
  expect(await call(s, A, 'POST', '/spchain/leaves', leaf, false)).toMatchObject({
    status: 200,
    json: { state: 'present' },
  });

  // The bundle split between A and B, each half posted as a transaction.
  const { mapping } = await sharedParts();
  const halves = splitBundle(bundles[0]!.bundle, mapping);
  for (const [n, at] of [A, B].entries()) {
    const r = await call(s, at, 'POST', '/fhir', halves[n]);
    expect(r.status, JSON.stringify(r.json).slice(0, 400)).toBe(200);
    for (const e of (r.json as unknown as Bundle).entry ?? []) {
      const ref = e.response!.location!.split('/_history')[0]!;
      const type = ref.split('/')[0]!;
      if (mapping.records.has(type)) posted[at]!.push(ref);
      if (type === 'Patient') own[at] = ref.split('/')[1]!;
    }
  }
  expect(posted[A]!.length).toBeGreaterThan(5);
  expect(posted[B]!.length).toBeGreaterThan(5);
  expect(await s.net.anchorAll()).toBe(posted[A]!.length + posted[B]!.length);

  // The patient's grant for C, to both holders; no EHR token: the patient's signature is it.
  const grant = grantToJson(grantFor(C, 'consent-c'));
  for (const at of [A, B]) {
    const r = await call(s, at, 'POST', '/spchain/grants', grant, false);
    expect(r).toMatchObject({ status: 201, json: { outcome: 'stored', grantee: C } });
  }
}, 180_000);

afterAll(async () => {
  await s?.close();
  await closeSharedParts();
});

describe('the receiving institution names the patient', () => {
  it('finds a patient registered elsewhere by identifier and birth date: Patient/{idHash}', async () => {
    const { identity } = P;
    const q = `identifier=${encodeURIComponent(`${identity.system}|${identity.value}`)}`;
    const found = await getBundle(s, C, `/fhir/Patient?${q}&birthdate=${identity.birthDate}`);
    expect(found.total).toBe(1);
    pid = matches(found)[0]!.id!;
    expect(pid).toBe(toHex(P.idHash));
    // Read by id too; a wrong birth date or an unknown identifier finds nobody.
    const read = await call(s, C, 'GET', `/fhir/Patient/${pid}`);
    expect(read.status).toBe(200);
    expect(read.json.identifier).toEqual([{ system: 'urn:spchain:idhash', value: pid }]);
    const wrong = await getBundle(s, C, `/fhir/Patient?${q}&birthdate=1901-01-01`);
    expect(wrong.total).toBe(0);
    expect((await call(s, C, 'GET', `/fhir/Patient/${'ab'.repeat(32)}`)).status).toBe(404);
    expect((await call(s, C, 'GET', '/fhir/Patient?birthdate=2000-01-01')).status).toBe(400);
  });

  it("at a holder, its own Patient is the name: its own records and the other holder's refusal", async () => {
    const b = await getBundle(s, B, `/fhir/Patient/${own[B]}/$everything?_count=1000`);
    const refs = refsOf(b);
    expect(refs[0]).toBe(`Patient/${own[B]}`);
    expect(refs.slice(1).sort()).toEqual([...posted[B]!].sort());
    // Each own record's Provenance: this institution, its tx, pinned.
    const provs = ofType<Provenance>(b, 'Provenance');
    expect(provs).toHaveLength(posted[B]!.length);
    for (const p of provs) {
      expect(p.agent![0]!.who!.identifier).toEqual({
        system: INSTITUTION_SYSTEM,
        value: String(B),
      });
      expect(ledgerValue(p, 'state')).toBe('pinned');
      expect(ledgerValue(p, 'tx')).toBe(p.id);
    }
    // A holds no grant for B: a warning, nothing of A's.
    expect(warnings(b).map((i) => [i.code, i.details?.coding?.[0]?.code])).toEqual([
      ['forbidden', 'DENIED'],
    ]);
    expect(warnings(b)[0]!.details!.text).toMatch(/hospital-0 \(institution 0\).*NO_GRANT/);
  });
});

describe('GET /fhir/Patient/{id}/$everything at the granted institution', () => {
  let everything: Bundle;

  it('serves every record of both holders, decrypted, each with its Provenance', async () => {
    everything = await getBundle(s, C, `/fhir/Patient/${pid}/$everything?_count=1000`);
    const want = [...posted[A]!, ...posted[B]!].sort();
    const refs = refsOf(everything);
    expect(refs[0]).toBe(`Patient/${pid}`);
    expect(refs.slice(1).sort()).toEqual(want);
    expect(everything.total).toBe(want.length + 1);
    expect(warnings(everything)).toEqual([]);
    expect(everything.link?.some((l) => l.relation === 'next')).toBe(false);

    // One Provenance per record, naming the holder that wrote it, the tx, batch and block.
    const provs = ofType<Provenance>(everything, 'Provenance');
    expect(provs).toHaveLength(want.length);
    const holderOf = new Map<string, string>();
    for (const p of provs) {
      expect(ledgerValue(p, 'verified')).toBe(true);
      expect(typeof ledgerValue(p, 'batch')).toBe('number');
      expect(ledgerValue(p, 'block')).toBe('1/0');
      for (const t of p.target ?? []) {
        holderOf.set(t.reference!.split('/_history')[0]!, p.agent![0]!.who!.identifier!.value!);
      }
    }
    for (const [at, refs] of Object.entries(posted)) {
      for (const r of refs) expect(holderOf.get(r)).toBe(at);
    }
    // The content is the holder's, decrypted; the patient reference is C's.
    const ref = posted[B]!.find((r) => r.startsWith('Observation/'))!;
    const atB = (await call(s, B, 'GET', `/fhir/${ref}`)).json as unknown as Observation;
    const atC = matches(everything).find((r) => `${r.resourceType}/${r.id}` === ref) as Observation;
    expect(atC.code).toEqual(atB.code);
    expect(atC.valueQuantity ?? atC.valueCodeableConcept).toEqual(
      atB.valueQuantity ?? atB.valueCodeableConcept,
    );
    expect(atB.subject?.reference).toBe(`Patient/${own[B]}`);
    expect(atC.subject?.reference).toBe(`Patient/${pid}`);
    expect(atC.meta?.source).toBe(`urn:spchain:institution:${B}`);
    // The context the records carry comes along once.
    const orgs = ofType<{ id: string }>(everything, 'Organization');
    expect(orgs.length).toBeGreaterThan(0);
    expect(new Set(orgs.map((o) => o.id)).size).toBe(orgs.length);
  });

  it('pages with next links: every record once, in the same order', async () => {
    const all = await pages(C, `/fhir/Patient/${pid}/$everything?_count=7`);
    expect(all.length).toBe(Math.ceil(everything.total! / 7));
    const refs = all.flatMap(refsOf);
    expect(refs).toEqual(refsOf(everything));
    for (const page of all) {
      expect(matches(page).length).toBeLessThanOrEqual(7);
      expect(page.total).toBe(everything.total);
      // Each page carries the Provenance of its records.
      const targets = ofType<Provenance>(page, 'Provenance').flatMap((p) =>
        (p.target ?? []).map((t) => t.reference!.split('/_history')[0]),
      );
      for (const r of refsOf(page).filter((x) => !x.startsWith('Patient/'))) {
        expect(targets).toContain(r);
      }
    }
  });

  it('filters by _type', async () => {
    const obs = await getBundle(
      s,
      C,
      `/fhir/Patient/${pid}/$everything?_type=Observation&_count=1000`,
    );
    const want = [...posted[A]!, ...posted[B]!].filter((r) => r.startsWith('Observation/')).sort();
    expect(refsOf(obs).sort()).toEqual(want);
    expect(ofType(obs, 'Organization')).toEqual([]);
    const two = await getBundle(
      s,
      C,
      `/fhir/Patient/${pid}/$everything?_type=Patient,Encounter&_count=1000`,
    );
    expect(new Set(matches(two).map((r) => r.resourceType))).toEqual(
      new Set(['Patient', 'Encounter']),
    );
  });

  it('_since: only what changed after; a correction replaces the record and says so', async () => {
    const since = new Date(Date.now() + 2).toISOString();
    await new Promise((r) => setTimeout(r, 10));
    // At A: one Observation marked entered in error (a label tx), one new Observation.
    const target = posted[A]!.find((r) => r.startsWith('Observation/'))!;
    const stored = (await call(s, A, 'GET', `/fhir/${target}`)).json;
    const { meta: _meta, ...body } = stored;
    const put = await call(s, A, 'PUT', `/fhir/${target}`, { ...body, status: 'entered-in-error' });
    expect(put.status).toBe(200);
    const created = await call(s, A, 'POST', '/fhir/Observation', {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
      subject: { reference: `Patient/${own[A]}` },
      valueQuantity: { value: 64, unit: 'beats/minute' },
    });
    expect(created.status).toBe(201);
    const fresh = `Observation/${created.json.id}`;
    expect(await s.net.anchorAll()).toBe(2);

    const b = await getBundle(
      s,
      C,
      `/fhir/Patient/${pid}/$everything?_since=${encodeURIComponent(since)}&_count=1000`,
    );
    expect(refsOf(b).sort()).toEqual([`Patient/${pid}`, fresh, target].sort());
    const corrected = matches(b).find((r) => `${r.resourceType}/${r.id}` === target) as Observation;
    expect(corrected.status).toBe('entered-in-error');
    expect(corrected.meta?.versionId).toBe('2');
    expect(corrected.meta?.tag).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ code: 'entered-in-error' }),
        expect.objectContaining({ code: 'corrected' }),
      ]),
    );
    const prov = ofType<Provenance>(b, 'Provenance').find((p) =>
      p.target?.some((t) => t.reference === `${target}/_history/2`),
    )!;
    expect(ledgerValue(prov, 'kind')).toBe('label');
    expect(prov.entity?.[0]?.role).toBe('revision');
    // Without _since the corrected version replaces the first: one entry, version 2.
    const all = await getBundle(s, C, `/fhir/Patient/${pid}/$everything?_count=1000`);
    const versions = matches(all).filter((r) => `${r.resourceType}/${r.id}` === target);
    expect(versions.map((v) => v.meta?.versionId)).toEqual(['2']);
    posted[A]!.push(fresh);
  });

  it('refuses bad parameters and unknown patients with an OperationOutcome', async () => {
    for (const [url, status] of [
      [`/fhir/Patient/${pid}/$everything?_count=0`, 400],
      [`/fhir/Patient/${pid}/$everything?_cursor=bm9wZQ`, 400],
      [`/fhir/Patient/${pid}/$everything?_since=yesterday`, 400],
      [`/fhir/Patient/${pid}/$everything?start=2020-01-01`, 400],
      [`/fhir/Patient/${'cd'.repeat(32)}/$everything`, 404],
      ['/fhir/Patient/nobody/$everything', 404],
    ] as const) {
      const r = await call(s, C, 'GET', url);
      expect(r.status, url).toBe(status);
      expect(r.json.resourceType).toBe('OperationOutcome');
    }
    expect(
      (await call(s, C, 'GET', `/fhir/Patient/${pid}/$everything`, undefined, false)).status,
    ).toBe(401);
  });
});

describe('searches by patient', () => {
  it('Observation?patient= serves the shared Observations; _revinclude adds their Provenance', async () => {
    const want = [...posted[A]!, ...posted[B]!].filter((r) => r.startsWith('Observation/')).sort();
    const b = await getBundle(s, C, `/fhir/Observation?patient=${pid}&_count=1000`);
    expect(refsOf(b).sort()).toEqual(want);
    expect(ofType(b, 'Provenance')).toEqual([]);
    const rev = await getBundle(
      s,
      C,
      `/fhir/Observation?patient=Patient/${pid}&_revinclude=Provenance:target&_count=1000`,
    );
    expect(ofType(rev, 'Provenance')).toHaveLength(want.length);
    const subj = await getBundle(s, C, `/fhir/Encounter?subject=Patient/${pid}&_count=1000`);
    expect(refsOf(subj).sort()).toEqual(
      [...posted[A]!, ...posted[B]!].filter((r) => r.startsWith('Encounter/')).sort(),
    );
    // Paged like $everything.
    const paged = await pages(C, `/fhir/Observation?patient=${pid}&_count=10`);
    expect(paged.flatMap(refsOf)).toEqual(refsOf(b));
    for (const [url, status] of [
      [`/fhir/Observation?patient=${pid}&code=8867-4`, 400],
      ['/fhir/Observation', 400],
      [`/fhir/Organization?patient=${pid}`, 400],
      [`/fhir/Immunization?subject=${pid}`, 400],
      [`/fhir/Observation?patient=Encounter/${pid}`, 400],
    ] as const) {
      expect((await call(s, C, 'GET', url)).status, url).toBe(status);
    }
  });

  it('every read is audited: the patient, the records read', async () => {
    const b = await getBundle(s, C, `/fhir/AuditEvent?patient=Patient/${pid}&_count=1000`);
    const events = matches(b) as unknown as {
      action: string;
      entity?: { what?: { reference?: string } }[];
    }[];
    expect(events.length).toBeGreaterThanOrEqual(8);
    const read = events.flatMap((e) => e.entity ?? []).map((x) => x.what?.reference ?? '');
    expect(read.some((r) => r.startsWith(posted[B]![0]!))).toBe(true);
  });
});

describe('what is never served', () => {
  it('a tampered record: a warning naming the record and the holder, the record left out', async () => {
    const victim = posted[B]!.find((r) => r.startsWith('Observation/'))!;
    const id = victim.split('/')[1]!;
    s.net.institutions[B]!.tamper = (answer, request) => {
      const res = decodeShareResponse(answer, request);
      if (res.type !== 'page') return answer;
      const items = res.items.map((i) => {
        if (i.meta.id !== id) return i;
        const ciphertext = i.ciphertext.slice();
        ciphertext[20]! ^= 0x01;
        return { ...i, ciphertext };
      });
      return encodeSharePage({ ...res, items: items.map(encodeShareItem) });
    };
    try {
      await s.net.institutions[C]!.sharing.forget(P.idHash);
      const b = await getBundle(s, C, `/fhir/Patient/${pid}/$everything?_count=1000`);
      expect(refsOf(b)).not.toContain(victim);
      expect(refsOf(b).length).toBe(posted[A]!.length + posted[B]!.length); // + Patient - victim
      const w = warnings(b);
      expect(w).toHaveLength(1);
      expect(w[0]!.severity).toBe('warning');
      expect(w[0]!.details!.coding![0]!.code).toBe('WRONG_CIPHERTEXT');
      expect(w[0]!.details!.text).toContain('hospital-1 (institution 1)');
      expect(w[0]!.details!.text).toContain(victim);
      expect(w[0]!.details!.text).toContain('not served');
    } finally {
      s.net.institutions[B]!.tamper = null;
    }
    const again = await getBundle(s, C, `/fhir/Patient/${pid}/$everything?_count=1000`);
    expect(refsOf(again)).toContain(victim);
    expect(warnings(again)).toEqual([]);
  });

  it("to an institution without a grant: nothing, and each holder's refusal", async () => {
    const before = reencrypted();
    const b = await getBundle(s, D, `/fhir/Patient/${pid}/$everything`);
    expect(refsOf(b)).toEqual([`Patient/${pid}`]);
    expect(warnings(b).map((i) => i.details?.text?.match(/NO_GRANT/)?.[0])).toEqual([
      'NO_GRANT',
      'NO_GRANT',
    ]);
    expect(reencrypted()).toBe(before);
  });
});

function reencrypted(): number {
  return s.net.institutions.reduce((n, i) => n + i.sharing.holder.reencrypted, 0);
}

describe('grants and revocations: the patient signature is what authorises them', () => {
  it('refuses a forged grant, a malformed one, and one given to the grantee itself', async () => {
    const forged = grantToJson(
      grantFor(D, 'consent-forged', { signer: generateSigningKey().secretKey }),
    );
    const r = await call(s, A, 'POST', '/spchain/grants', forged, false);
    expect(r.status).toBe(403);
    const issue = (r.json as unknown as OperationOutcome).issue![0]!;
    expect(issue.details?.coding?.[0]?.code).toBe('BAD_SIGNATURE');
    // Nothing kept: D still gets nothing.
    const d = await getBundle(s, D, `/fhir/Patient/${pid}/$everything`);
    expect(refsOf(d)).toEqual([`Patient/${pid}`]);

    const good = grantToJson(grantFor(D, 'consent-d'));
    const tampered = { ...good, consent: { ...good.consent, id: 'consent-other' } };
    expect((await call(s, A, 'POST', '/spchain/grants', tampered, false)).status).toBe(403);
    expect((await call(s, A, 'POST', '/spchain/grants', { consent: {} }, false)).status).toBe(400);
    const toSelf = grantToJson(grantFor(A, 'consent-a'));
    expect((await call(s, A, 'POST', '/spchain/grants', toSelf, false)).status).toBe(422);
    const stranger = {
      ...good,
      consent: {
        ...good.consent,
        patient: { identifier: { system: 'urn:spchain:idhash', value: 'ef'.repeat(32) } },
      },
    };
    expect((await call(s, A, 'POST', '/spchain/grants', stranger, false)).status).toBe(404);
  });

  it('refuses a forged upload grant and one sent to an institution that is not home', async () => {
    const { chainId } = s.net.fixture.genesis;
    const forged = {
      idHash: toHex(P.idHash),
      institution: D,
      grant: toHex(signGrant(chainId, P.idHash, D, generateSigningKey().secretKey)),
    };
    const r = await call(s, A, 'POST', '/spchain/leaves', forged, false);
    expect(r.status).toBe(403);
    const notHome = { ...forged, grant: toHex(signGrant(chainId, P.idHash, D, P.signingSecret)) };
    expect((await call(s, B, 'POST', '/spchain/leaves', notHome, false)).status).toBe(422);
    expect((await call(s, A, 'POST', '/spchain/leaves', { idHash: 'x' }, false)).status).toBe(400);
  });

  it("refuses a forged revocation; the patient's stops every holder, and C gets a clear refusal", async () => {
    const { chainId } = s.net.fixture.genesis;
    const forged = revocationToJson(
      signRevocation(chainId, P.idHash, 'consent-c', generateSigningKey().secretKey),
    );
    expect((await call(s, A, 'POST', '/spchain/revocations', forged, false)).status).toBe(403);
    const still = await getBundle(s, C, `/fhir/Patient/${pid}/$everything?_count=1000`);
    expect(refsOf(still).length).toBe(posted[A]!.length + posted[B]!.length + 1);

    const revocation = revocationToJson(
      signRevocation(chainId, P.idHash, 'consent-c', P.signingSecret),
    );
    for (const at of [A, B]) {
      const r = await call(s, at, 'POST', '/spchain/revocations', revocation, false);
      expect(r).toMatchObject({ status: 200, json: { consentId: 'consent-c', state: 'revoked' } });
    }
    const before = reencrypted();
    const b = await getBundle(s, C, `/fhir/Patient/${pid}/$everything?_count=1000`);
    expect(refsOf(b)).toEqual([`Patient/${pid}`]);
    const w = warnings(b);
    expect(w.map((i) => [i.code, i.details?.coding?.[0]?.code])).toEqual([
      ['forbidden', 'DENIED'],
      ['forbidden', 'DENIED'],
    ]);
    for (const i of w) expect(i.details?.text).toMatch(/refused: REVOKED/);
    expect(reencrypted()).toBe(before);
    // And the search serves nothing either; the old grant cannot be sent again.
    const obs = await getBundle(s, C, `/fhir/Observation?patient=${pid}`);
    expect(refsOf(obs)).toEqual([]);
    const replay = grantToJson(grantFor(C, 'consent-c'));
    expect((await call(s, A, 'POST', '/spchain/grants', replay, false)).status).toBe(409);
  });
});
