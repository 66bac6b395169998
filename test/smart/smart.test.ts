/**
 * The SMART authorisation server and the FHIR routes' enforcement, on real LevelDB and a real
 * ledger: discovery; Backend Services (client_credentials + private_key_jwt) for the EHR's writes
 * and a scope-limited reader; a standalone patient launch approved by the patient's own signature,
 * PKCE S256, refresh rotation, revocation and introspection; and each refusal the issue names
 * (no token, expired, forged, wrong audience, scope not given, another patient, PKCE mismatch,
 * redirect URI not registered, replayed assertion) with the status and a body that says why.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Bundle, OperationOutcome } from '@medplum/fhirtypes';
import type { FastifyInstance } from 'fastify';

import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signApproval } from '../../src/authz/smart-approval.ts';
import { toHex } from '../../src/crypto/bytes.ts';
import { newSigningKey, TokenService } from '../../src/smart/tokens.ts';
import { AUTH, closeSharedParts, FHIR, SSN, smallTransaction } from '../http/harness.ts';
import { anchorAll } from '../sidecar/harness.ts';
import { APP, EHR, openSmartHarness, READER, type SmartHarness } from './smart-harness.ts';

const A = { system: SSN, value: '999-61-0001', birthDate: '1970-01-01' };
const B = { system: SSN, value: '999-61-0002', birthDate: '1980-02-02' };
const BASE = 'http://127.0.0.1:9/fhir';
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

let s: SmartHarness;
let app: FastifyInstance;
let idA: string;
let idB: string;

beforeAll(async () => {
  s = await openSmartHarness('smart', [A, B], BASE);
  app = s.h.api.app;
  idA = toHex(s.h.fixture.patients[0]!.idHash);
  idB = toHex(s.h.fixture.patients[1]!.idHash);
  for (const [who, tag] of [
    [A, 'a'],
    [B, 'b'],
  ] as const) {
    const res = await app.inject({
      method: 'POST',
      url: '/fhir',
      headers: { ...AUTH, ...FHIR },
      payload: JSON.stringify(smallTransaction(who, 2, tag)),
    });
    expect(res.statusCode).toBe(200);
  }
  await anchorAll(s.h.sidecar);
}, 120_000);
afterAll(async () => {
  await s?.close();
  await closeSharedParts();
});

const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();

async function token(fields: Record<string, string>) {
  const res = await app.inject({
    method: 'POST',
    url: '/smart/token',
    headers: FORM,
    payload: form(fields),
  });
  return { status: res.statusCode, body: JSON.parse(res.body) as Record<string, string>, res };
}

async function backendToken(clientId: string, scope: string) {
  return token({
    grant_type: 'client_credentials',
    scope,
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: await s.assertion(clientId),
  });
}

async function get(url: string, bearer?: string) {
  const res = await app.inject({
    method: 'GET',
    url,
    headers: bearer ? { authorization: `Bearer ${bearer}` } : {},
  });
  return { status: res.statusCode, body: JSON.parse(res.body) as Bundle, res };
}

const why = (b: unknown) =>
  (b as OperationOutcome).issue?.map((i) => i.diagnostics ?? i.details?.text).join(' ');

/**
 * An authorize URL: a valid standalone launch request, with `over` replacing parameters (or
 * removing them, when undefined).
 */
function authorizeUrl(over: Record<string, string | undefined> = {}): string {
  const params: Record<string, string | undefined> = {
    response_type: 'code',
    client_id: APP.id,
    redirect_uri: APP.redirect,
    scope: 'launch/patient patient/*.rs',
    state: 'st-123',
    aud: BASE,
    code_challenge: 'A'.repeat(43),
    code_challenge_method: 'S256',
    ...over,
  };
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, v);
  return `/smart/authorize?${q}`;
}

/** A standalone launch up to the token response; `approve` signs as patient `k` of the fixture. */
async function launch(o: { scope?: string; verifier?: string; patient?: number } = {}) {
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const view = await app.inject({
    method: 'GET',
    url: authorizeUrl({
      scope: o.scope ?? 'launch/patient patient/*.rs offline_access',
      code_challenge: challenge,
    }),
    headers: { accept: 'application/json' },
  });
  expect(view.statusCode).toBe(200);
  const v = JSON.parse(view.body) as {
    request: string;
    scope: string;
    aud: string;
    chainId: string;
  };
  const patient = s.h.fixture.patients[o.patient ?? 0]!;
  const idHash = toHex(patient.idHash);
  const signature = signApproval(
    {
      chainId: v.chainId,
      request: v.request,
      clientId: APP.id,
      scope: v.scope,
      aud: v.aud,
      idHash,
    },
    patient.signingSecret,
  );
  const decided = await app.inject({
    method: 'POST',
    url: '/smart/authorize/decision',
    headers: { 'content-type': 'application/json' },
    payload: JSON.stringify({
      request: v.request,
      approve: true,
      idHash,
      signature: toHex(signature),
    }),
  });
  expect(decided.statusCode).toBe(200);
  const redirect = new URL((JSON.parse(decided.body) as { redirect: string }).redirect);
  expect(redirect.searchParams.get('state')).toBe('st-123');
  const code = redirect.searchParams.get('code')!;
  const t = await token({
    grant_type: 'authorization_code',
    code,
    redirect_uri: APP.redirect,
    client_id: APP.id,
    code_verifier: o.verifier ?? verifier,
  });
  return { ...t, code, verifier };
}

describe('discovery', () => {
  it('publishes the SMART configuration with S256 only, v1 and v2 permissions and the endpoints', async () => {
    const res = await app.inject({ method: 'GET', url: '/fhir/.well-known/smart-configuration' });
    expect(res.statusCode).toBe(200);
    const c = JSON.parse(res.body) as Record<string, unknown>;
    expect(c.code_challenge_methods_supported).toEqual(['S256']);
    expect(c.capabilities).toEqual(
      expect.arrayContaining([
        'launch-standalone',
        'permission-v1',
        'permission-v2',
        'client-confidential-asymmetric',
      ]),
    );
    expect(c.token_endpoint).toBe('http://127.0.0.1:9/smart/token');
    expect(c.authorization_endpoint).toBe('http://127.0.0.1:9/smart/authorize');
    const jwks = await app.inject({ method: 'GET', url: '/smart/jwks.json' });
    const keys = (JSON.parse(jwks.body) as { keys: Array<Record<string, unknown>> }).keys;
    expect(keys).toHaveLength(1);
    expect(keys[0]!.d).toBeUndefined();
  });
});

describe('Backend Services', () => {
  it('gives the EHR a 5-minute system token that writes a bundle', async () => {
    const t = await backendToken(EHR, 'system/*.cruds');
    expect(t.status).toBe(200);
    expect(t.res.headers['cache-control']).toBe('no-store');
    expect(t.body.token_type).toBe('Bearer');
    expect(Number(t.body.expires_in)).toBe(300);
    expect(t.body.refresh_token).toBeUndefined();
    const res = await app.inject({
      method: 'POST',
      url: '/fhir',
      headers: { authorization: `Bearer ${t.body.access_token}`, ...FHIR },
      payload: JSON.stringify(smallTransaction(A, 1, 'c')),
    });
    expect(res.statusCode).toBe(200);
    expect((JSON.parse(res.body) as Bundle).entry?.[1]?.response?.status).toMatch(/^201/);
  });

  it('downscopes to what the client is registered for, and refuses what it never may have', async () => {
    const t = await backendToken(READER, 'system/Observation.rs system/Patient.rs');
    expect(t.status).toBe(200);
    expect(t.body.scope).toBe('system/Observation.rs');
    const none = await backendToken(READER, 'system/Patient.cruds');
    expect(none.status).toBe(400);
    expect(none.body.error).toBe('invalid_scope');
  });

  it('lets a reader search Observations but not write, read Patients or AuditEvents (403 insufficient_scope)', async () => {
    const t = (await backendToken(READER, 'system/Observation.rs')).body.access_token!;
    const found = await get(`/fhir/Observation?patient=${idA}`, t);
    expect(found.status).toBe(200);
    expect(found.body.entry?.some((e) => e.resource?.resourceType === 'Observation')).toBe(true);
    const write = await app.inject({
      method: 'POST',
      url: '/fhir',
      headers: { authorization: `Bearer ${t}`, ...FHIR },
      payload: JSON.stringify(smallTransaction(A, 1, 'd')),
    });
    expect(write.statusCode).toBe(403);
    expect(write.headers['www-authenticate']).toMatch(/insufficient_scope/);
    expect(why(JSON.parse(write.body))).toMatch(/do not allow create (Patient|Observation)/);
    const audit = await get(`/fhir/AuditEvent?patient=Patient/${idA}`, t);
    expect(audit.status).toBe(403);
    const patient = await get(`/fhir/Patient?identifier=${SSN}|${A.value}`, t);
    expect(patient.status).toBe(403);
  });

  it('refuses a replayed assertion, one for another audience, an unknown client, and a public client', async () => {
    const assertion = await s.assertion(EHR);
    const fields = {
      grant_type: 'client_credentials',
      scope: 'system/*.rs',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
    };
    expect((await token(fields)).status).toBe(200);
    const replay = await token(fields);
    expect(replay.status).toBe(401);
    expect(replay.body.error).toBe('invalid_client');
    expect(replay.body.error_description).toMatch(/replay/);
    const foreign = await token({
      ...fields,
      client_assertion: await s.assertion(EHR, { aud: 'https://elsewhere/token' }),
    });
    expect(foreign.status).toBe(401);
    expect(foreign.body.error_description).toMatch(/aud/);
    const unknown = await token({
      ...fields,
      client_assertion: await s.assertion(EHR),
      client_id: 'nobody',
    });
    expect(unknown.status).toBe(401);
    const pub = await token({
      grant_type: 'client_credentials',
      client_id: APP.id,
      scope: 'system/*.rs',
    });
    expect(pub.status).toBe(400);
    expect(pub.body.error).toBe('unauthorized_client');
    const longLived = await token({
      ...fields,
      client_assertion: await s.assertion(EHR, { expSeconds: 3600 }),
    });
    expect(longLived.status).toBe(401);
  });
});

describe('tokens that are not valid here (401 invalid_token, with the reason)', () => {
  it('no token, a forged one, an expired one, one for another server, one this server never signed', async () => {
    const none = await get(`/fhir/Patient/${idA}/$everything`);
    expect(none.status).toBe(401);
    expect(none.res.headers['www-authenticate']).toBe('Bearer realm="spchain-sidecar"');
    const good = (await backendToken(EHR, 'system/*.rs')).body.access_token!;
    const [h, p, sig] = good.split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>;
    const widened = Buffer.from(JSON.stringify({ ...claims, scope: 'system/*.cruds' })).toString(
      'base64url',
    );
    const forged = await get(`/fhir/Patient/${idA}/$everything`, `${h}.${widened}.${sig}`);
    expect(forged.status).toBe(401);
    expect(why(forged.body)).toMatch(/signature/);
    const other = new TokenService({
      fhirBase: () => BASE,
      key: await newSigningKey(),
      db: s.h.sidecar.core.store.db,
      now: () => s.clock.now,
    });
    const stranger = await other.issueAccessToken(
      { clientId: EHR, scope: 'system/*.rs', sub: EHR },
      300,
    );
    const strange = await get(`/fhir/Patient/${idA}/$everything`, stranger.token);
    expect(strange.status).toBe(401);
    // This server's key and issuer, another audience: only the audience check can refuse it.
    const iat = Math.floor(s.clock.now / 1000);
    const wrongAud = await new SignJWT({ client_id: EHR, scope: 'system/*.rs' })
      .setProtectedHeader({ alg: 'ES256', kid: s.key.kid, typ: 'at+jwt' })
      .setIssuer(s.tokens.issuer)
      .setAudience('https://other.example/fhir')
      .setSubject(EHR)
      .setJti('x1')
      .setIssuedAt(iat)
      .setExpirationTime(iat + 300)
      .sign(s.key.privateKey);
    const aud = await get(`/fhir/Patient/${idA}/$everything`, wrongAud);
    expect(aud.status).toBe(401);
    expect(why(aud.body)).toMatch(/aud/);
    s.clock.now += 301_000;
    try {
      const expired = await get(`/fhir/Patient/${idA}/$everything`, good);
      expect(expired.status).toBe(401);
      expect(why(expired.body)).toMatch(/expired/);
    } finally {
      s.clock.now -= 301_000;
    }
    const unsigned = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${p}.`;
    expect((await get(`/fhir/Patient/${idA}/$everything`, unsigned)).status).toBe(401);
  });
});

describe('standalone patient launch', () => {
  it('refuses an unregistered redirect URI or client without redirecting, and redirects other errors', async () => {
    const bad = await app.inject({
      method: 'GET',
      url: `/smart/authorize?response_type=code&client_id=${APP.id}&redirect_uri=${encodeURIComponent('http://127.0.0.1:7777/evil')}&state=x`,
    });
    expect(bad.statusCode).toBe(400);
    expect(bad.headers.location).toBeUndefined();
    expect(bad.body).toMatch(/redirect_uri is not registered/);
    const unknown = await app.inject({
      method: 'GET',
      url: `/smart/authorize?client_id=nobody&redirect_uri=${encodeURIComponent(APP.redirect)}`,
    });
    expect(unknown.statusCode).toBe(400);
    const noPkce = await app.inject({
      method: 'GET',
      url: authorizeUrl({
        state: 's1',
        code_challenge: undefined,
        code_challenge_method: undefined,
      }),
    });
    expect(noPkce.statusCode).toBe(302);
    const to = new URL(noPkce.headers.location as string);
    expect(to.origin + to.pathname).toBe(APP.redirect);
    expect(to.searchParams.get('error')).toBe('invalid_request');
    expect(to.searchParams.get('error_description')).toMatch(/S256/);
    expect(to.searchParams.get('state')).toBe('s1');
    const plain = await app.inject({
      method: 'GET',
      url: authorizeUrl({ code_challenge_method: 'plain' }),
    });
    expect(new URL(plain.headers.location as string).searchParams.get('error')).toBe(
      'invalid_request',
    );
    const aud = await app.inject({
      method: 'GET',
      url: authorizeUrl({ aud: 'https://other/fhir' }),
    });
    expect(new URL(aud.headers.location as string).searchParams.get('error_description')).toMatch(
      /aud/,
    );
  });

  it("issues a code only for the patient's own signature, and a token for their compartment only", async () => {
    const verifier = randomBytes(32).toString('base64url');
    const url = authorizeUrl({
      state: 'z',
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    });
    const html = await app.inject({ method: 'GET', url });
    expect(html.headers['content-type']).toMatch(/text\/html/);
    expect(html.body).toMatch(/Chart app asks to read your records/);
    const view = JSON.parse(
      (
        await app.inject({
          method: 'GET',
          url,
          headers: { accept: 'application/json' },
        })
      ).body,
    ) as { request: string; scope: string; aud: string; chainId: string };
    // Patient B signs A's approval: refused.
    const forged = signApproval(
      {
        chainId: view.chainId,
        request: view.request,
        clientId: APP.id,
        scope: view.scope,
        aud: view.aud,
        idHash: idA,
      },
      s.h.fixture.patients[1]!.signingSecret,
    );
    const refused = await app.inject({
      method: 'POST',
      url: '/smart/authorize/decision',
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({
        request: view.request,
        approve: true,
        idHash: idA,
        signature: toHex(forged),
      }),
    });
    expect(refused.statusCode).toBe(403);
    expect(why(JSON.parse(refused.body))).toMatch(/does not verify/);

    const t = await launch();
    expect(t.status).toBe(200);
    expect(t.body.patient).toBe(idA);
    expect(t.body.scope).toBe('launch/patient patient/*.rs offline_access');
    expect(t.body.refresh_token).toBeDefined();
    const bearer = t.body.access_token!;
    const everything = await get(`/fhir/Patient/${idA}/$everything`, bearer);
    expect(everything.status).toBe(200);
    expect(
      everything.body.entry?.filter((e) => e.resource?.resourceType === 'Observation').length,
    ).toBeGreaterThanOrEqual(2);
    const search = await get(`/fhir/Observation?patient=${idA}`, bearer);
    expect(search.status).toBe(200);
    const other = await get(`/fhir/Patient/${idB}/$everything`, bearer);
    expect(other.status).toBe(403);
    expect(why(other.body)).toMatch(/another patient/);
    expect((await get(`/fhir/Observation?patient=${idB}`, bearer)).status).toBe(403);
    expect((await get('/fhir/Observation', bearer)).status).toBe(403);
    expect((await get(`/fhir/AuditEvent?patient=Patient/${idA}`, bearer)).status).toBe(403);
    const write = await app.inject({
      method: 'POST',
      url: '/fhir',
      headers: { authorization: `Bearer ${bearer}`, ...FHIR },
      payload: JSON.stringify(smallTransaction(A, 1, 'e')),
    });
    expect(write.statusCode).toBe(403);
    // The code is single use.
    const again = await token({
      grant_type: 'authorization_code',
      code: t.code,
      redirect_uri: APP.redirect,
      client_id: APP.id,
      code_verifier: t.verifier,
    });
    expect(again.status).toBe(400);
    expect(again.body.error).toBe('invalid_grant');
  });

  it('refuses a PKCE mismatch and uses the code up', async () => {
    const t = await launch({ verifier: randomBytes(32).toString('base64url') });
    expect(t.status).toBe(400);
    expect(t.body.error).toBe('invalid_grant');
    expect(t.body.error_description).toMatch(/PKCE/);
  });

  it('filters by a granular v2 scope: patient/Observation.rs?category=... sees no uncategorised Observation', async () => {
    const t = await launch({
      scope:
        'launch/patient patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory',
    });
    // The app is registered for patient/*.rs, which does not cover a granular ask narrower than it? It does: granted.
    expect(t.status).toBe(200);
    const found = await get(`/fhir/Observation?patient=${idA}`, t.body.access_token!);
    expect(found.status).toBe(200);
    expect(
      found.body.entry?.filter((e) => e.resource?.resourceType === 'Observation') ?? [],
    ).toHaveLength(0);
    const patientRead = await get(`/fhir/Patient/${idA}/$everything`, t.body.access_token!);
    expect(patientRead.status).toBe(200);
    expect(patientRead.body.entry?.some((e) => e.resource?.resourceType === 'Observation')).toBe(
      false,
    );
  });

  it('rotates refresh tokens; a reused one revokes its family; revocation and introspection', async () => {
    const t = await launch();
    const first = t.body.refresh_token!;
    const r1 = await token({
      grant_type: 'refresh_token',
      refresh_token: first,
      client_id: APP.id,
    });
    expect(r1.status).toBe(200);
    expect(r1.body.patient).toBe(idA);
    const second = r1.body.refresh_token!;
    expect(second).not.toBe(first);
    const reuse = await token({
      grant_type: 'refresh_token',
      refresh_token: first,
      client_id: APP.id,
    });
    expect(reuse.status).toBe(400);
    expect(reuse.body.error_description).toMatch(/family is revoked/);
    const dead = await token({
      grant_type: 'refresh_token',
      refresh_token: second,
      client_id: APP.id,
    });
    expect(dead.status).toBe(400);

    const access = r1.body.access_token!;
    const intro = async (tok: string) => {
      const res = await app.inject({
        method: 'POST',
        url: '/smart/introspect',
        headers: FORM,
        payload: form({
          token: tok,
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: await s.assertion(EHR),
        }),
      });
      expect(res.statusCode).toBe(200);
      return JSON.parse(res.body) as { active: boolean; patient?: string; scope?: string };
    };
    const active = await intro(access);
    expect(active.active).toBe(true);
    expect(active.patient).toBe(idA);
    const revoke = await app.inject({
      method: 'POST',
      url: '/smart/revoke',
      headers: FORM,
      payload: form({ token: access, client_id: APP.id }),
    });
    expect(revoke.statusCode).toBe(200);
    expect((await get(`/fhir/Patient/${idA}/$everything`, access)).status).toBe(401);
    expect((await intro(access)).active).toBe(false);
    const anonymous = await app.inject({
      method: 'POST',
      url: '/smart/introspect',
      headers: FORM,
      payload: form({ token: access, client_id: APP.id }),
    });
    expect(anonymous.statusCode).toBe(401);
  });

  it('a declined request goes back with access_denied', async () => {
    const url = authorizeUrl({ scope: 'patient/*.rs', state: 'n' });
    const view = JSON.parse(
      (
        await app.inject({
          method: 'GET',
          url,
          headers: { accept: 'application/json' },
        })
      ).body,
    ) as { request: string };
    const res = await app.inject({
      method: 'POST',
      url: '/smart/authorize/decision',
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({ request: view.request, approve: false }),
    });
    expect(
      new URL((JSON.parse(res.body) as { redirect: string }).redirect).searchParams.get('error'),
    ).toBe('access_denied');
  });
});
