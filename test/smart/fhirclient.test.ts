/**
 * A real SMART client against the sidecar: smart-on-fhir's `fhirclient` (its Node adapter, as a
 * clinician's app server would run it) completes a standalone launch at institution D's sidecar,
 * over real HTTP on loopback, and reads a shared patient's records with `client.patient.request`.
 *
 * Two institutions in one process (test/http/share-net.ts): 0 holds the patient's records (its
 * EHR posted them, anchored on the ledger), 1 is D, which the patient grants. The patient approves
 * the app's request at D with the key of their registration (what the portal does in a browser),
 * and fhirclient does the rest: discovery, PKCE S256, the code exchange, then the FHIR search with
 * the token, which D answers from the records it fetches from 0, verifies and decrypts.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Bundle } from '@medplum/fhirtypes';
import smart from 'fhirclient';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grantToJson, makeGrant } from '../../src/authz/grant.ts';
import { signApproval } from '../../src/authz/smart-approval.ts';
import { toHex } from '../../src/crypto/bytes.ts';
import { ClientRegistry, parseClients } from '../../src/smart/clients.ts';
import { newSigningKey, TokenService } from '../../src/smart/tokens.ts';
import { closeSharedParts, SSN, smallTransaction } from '../http/harness.ts';
import { call, openShareApiNet, type ShareApiNet } from '../http/share-net.ts';

const P = { system: SSN, value: '999-62-0001', birthDate: '1975-05-05' };
const HOLDER = 0;
const D = 1;
const HOUR = 3_600_000;

let s: ShareApiNet;
let app: Server;
let appOrigin: string;
let fhirBase = '';
/** What the app's callback read, by the launch's state. */
const store = new Map<string, unknown>();
const storage = {
  get: async (k: string) => store.get(k),
  set: async (k: string, v: unknown) => {
    store.set(k, v);
    return v;
  },
  unset: async (k: string) => store.delete(k),
};

beforeAll(async () => {
  // The clinician app's own server: /launch starts a standalone launch, /callback finishes it and
  // reads the patient's Observations.
  app = createServer((req, res) => {
    const url = new URL(req.url ?? '/', appOrigin);
    const api = smart(req, res, storage);
    if (url.pathname === '/launch') {
      api
        .authorize({
          clientId: 'clinic-app',
          scope: 'launch/patient patient/*.read',
          redirectUri: '/callback',
          iss: fhirBase,
          pkceMode: 'required',
        })
        .catch((err: Error) => {
          res.writeHead(500).end(err.message);
        });
      return;
    }
    api
      .ready()
      .then(async (client) => {
        const bundle = (await client.patient.request('Observation')) as Bundle;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ patient: client.patient.id, bundle }));
      })
      .catch((err: Error) => {
        res.writeHead(500).end(err.message);
      });
  });
  await new Promise<void>((ok) => app.listen(0, '127.0.0.1', ok));
  appOrigin = `http://127.0.0.1:${(app.address() as AddressInfo).port}`;

  const clients = new ClientRegistry(
    parseClients(
      {
        clients: [
          {
            clientId: 'clinic-app',
            name: 'Clinic app',
            kind: 'public',
            redirectUris: [`${appOrigin}/callback`],
            scope: 'launch/patient patient/*.read',
          },
        ],
      },
      'test clients',
    ),
  );
  const key = await newSigningKey();
  s = await openShareApiNet('fhirclient', [P], 2, (inst) =>
    inst.index === D
      ? {
          smart: {
            clients,
            tokens: new TokenService({ fhirBase: () => fhirBase, key, db: inst.core.store.db }),
          },
        }
      : {},
  );
  await s.apis[D]!.app.listen({ port: 0, host: '127.0.0.1' });
  fhirBase = `http://127.0.0.1:${(s.apis[D]!.app.server.address() as AddressInfo).port}/fhir`;

  // The holder's EHR writes the patient's records; they are anchored; the patient grants D.
  const posted = await call(s, HOLDER, 'POST', '/fhir', smallTransaction(P, 3, 'fc'));
  expect(posted.status).toBe(200);
  await s.net.anchorAll();
  const patient = s.patients[0]!;
  const { genesis } = s.net.fixture;
  const grant = makeGrant({
    chainId: genesis.chainId,
    idHash: patient.idHash,
    patientPreSecret: patient.preSecret,
    patientSigningSecret: patient.signingSecret,
    grantee: { index: D, preKey: genesis.members[D]!.preKey },
    consentId: 'fhirclient-grant',
    start: s.net.now - HOUR,
    end: s.net.now + 24 * HOUR,
    now: s.net.now,
  });
  const granted = await call(s, HOLDER, 'POST', '/spchain/grants', grantToJson(grant), false);
  expect(granted.status).toBe(201);
}, 120_000);

afterAll(async () => {
  await new Promise((ok) => app?.close(ok));
  await s?.close();
  await closeSharedParts();
});

describe('fhirclient standalone launch', () => {
  it('reads the shared patient through client.patient.request after the patient approves', async () => {
    const launch = await fetch(`${appOrigin}/launch`, { redirect: 'manual' });
    expect(launch.status).toBe(302);
    const authorize = new URL(launch.headers.get('location')!);
    expect(`${authorize.origin}${authorize.pathname}`).toBe(
      fhirBase.replace(/\/fhir$/, '/smart/authorize'),
    );
    expect(authorize.searchParams.get('code_challenge_method')).toBe('S256');
    expect(authorize.searchParams.get('aud')).toBe(fhirBase);

    // The patient sees the request (in the portal; here as JSON) and approves it with their key.
    const view = (await (
      await fetch(authorize, { headers: { accept: 'application/json' } })
    ).json()) as { request: string; scope: string; aud: string; chainId: string; decision: string };
    expect(view.scope.split(' ')).toEqual(
      expect.arrayContaining(['launch/patient', 'patient/*.read']),
    );
    const patient = s.patients[0]!;
    const idHash = toHex(patient.idHash);
    const signature = signApproval(
      {
        chainId: view.chainId,
        request: view.request,
        clientId: 'clinic-app',
        scope: view.scope,
        aud: view.aud,
        idHash,
      },
      patient.signingSecret,
    );
    const decided = await fetch(view.decision, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        request: view.request,
        approve: true,
        idHash,
        signature: toHex(signature),
      }),
    });
    expect(decided.status).toBe(200);
    const { redirect } = (await decided.json()) as { redirect: string };
    expect(redirect.startsWith(`${appOrigin}/callback?`)).toBe(true);

    // Back at the app: fhirclient exchanges the code and reads the patient's Observations at D.
    const done = await fetch(redirect);
    const text = await done.text();
    expect(done.status, text.slice(0, 300)).toBe(200);
    const { patient: id, bundle } = JSON.parse(text) as { patient: string; bundle: Bundle };
    expect(id).toBe(idHash);
    const observations = (bundle.entry ?? []).filter(
      (e) => e.resource?.resourceType === 'Observation',
    );
    expect(observations).toHaveLength(3);
    expect(
      observations
        .map((e) => (e.resource as { valueQuantity?: { value?: number } }).valueQuantity?.value)
        .sort(),
    ).toEqual([60, 61, 62]);
    const warnings = (bundle.entry ?? []).filter(
      (e) => e.resource?.resourceType === 'OperationOutcome',
    );
    expect(warnings).toHaveLength(0);
  });
});
