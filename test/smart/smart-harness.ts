/**
 * A sidecar API with its SMART authorisation server (src/smart) on real LevelDB and a real ledger
 * (test/http/harness.ts), with three registered clients: a public app (standalone launch), the
 * EHR as a backend service (ES384 private_key_jwt), and a backend reader limited to
 * system/Observation.rs. The clock of the token service is the test's (`clock.now`).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import type { PatientIdentity } from '../../src/ledger/idhash.ts';
import { ClientRegistry, parseClients } from '../../src/smart/clients.ts';
import { newSigningKey, type SigningKey, TokenService } from '../../src/smart/tokens.ts';
import { openDb } from '../../src/store/db.ts';
import { type ApiHarness, openApiHarness } from '../http/harness.ts';

export const APP = { id: 'chart-app', redirect: 'http://127.0.0.1:7777/callback' };
export const EHR = 'ehr-backend';
export const READER = 'obs-reader';

export interface SmartHarness {
  readonly h: ApiHarness;
  readonly tokens: TokenService;
  /** The server's token signing key (tests sign tokens it would never issue). */
  readonly key: SigningKey;
  readonly clock: { now: number };
  /** A fresh client assertion (RFC 7523) of a backend client, for the token endpoint. */
  assertion(
    clientId: string,
    o?: { aud?: string; jti?: string; expSeconds?: number },
  ): Promise<string>;
  close(): Promise<void>;
}

export async function openSmartHarness(
  seed: string,
  identities: readonly PatientIdentity[],
  fhirBase = 'http://127.0.0.1:9/fhir',
): Promise<SmartHarness> {
  const clock = { now: Date.now() };
  const keys = new Map<string, { privateKey: CryptoKey; jwk: JWK }>();
  for (const id of [EHR, READER]) {
    const pair = await generateKeyPair('ES384', { extractable: true });
    keys.set(id, {
      privateKey: pair.privateKey,
      jwk: { ...(await exportJWK(pair.publicKey)), kid: `${id}-1` },
    });
  }
  const clients = new ClientRegistry(
    parseClients(
      {
        clients: [
          {
            clientId: APP.id,
            name: 'Chart app',
            kind: 'public',
            redirectUris: [APP.redirect],
            scope: 'launch/patient offline_access patient/*.rs patient/*.read',
          },
          {
            clientId: EHR,
            name: 'The EHR',
            kind: 'backend',
            scope: 'system/*.cruds',
            jwks: { keys: [keys.get(EHR)!.jwk] },
          },
          {
            clientId: READER,
            name: 'Observation reader',
            kind: 'backend',
            scope: 'system/Observation.rs',
            jwks: { keys: [keys.get(READER)!.jwk] },
          },
        ],
      },
      'test clients',
    ),
  );
  const dir = await mkdtemp(join(tmpdir(), 'spchain-smart-'));
  const db = await openDb(join(dir, 'tokens'));
  const key = await newSigningKey();
  const tokens = new TokenService({
    fhirBase: () => fhirBase,
    key,
    db,
    now: () => clock.now,
  });
  const h = await openApiHarness(seed, {
    identities,
    api: { smart: { tokens, clients }, baseUrl: fhirBase, now: () => clock.now },
  });
  return {
    h,
    tokens,
    key,
    clock,
    async assertion(clientId, o = {}) {
      const k = keys.get(clientId)!;
      const iat = Math.floor(clock.now / 1000);
      return new SignJWT({})
        .setProtectedHeader({ alg: 'ES384', kid: k.jwk.kid!, typ: 'JWT' })
        .setIssuer(clientId)
        .setSubject(clientId)
        .setAudience(o.aud ?? tokens.tokenUrl)
        .setJti(o.jti ?? crypto.randomUUID())
        .setIssuedAt(iat)
        .setExpirationTime(iat + (o.expSeconds ?? 120))
        .sign(k.privateKey);
    },
    async close() {
      await h.close();
      await db.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
