/**
 * The tokens of this sidecar's authorisation server (issue 6 parts 1-2), on jose:
 *
 *   - access tokens: JWTs signed ES256 with the sidecar's own key (`smart-signing-key.json` in the
 *     data directory, made on first start, mode 0600; its public half at the JWKS URL). Claims: iss
 *     (this server), aud (the FHIR base), sub, client_id, scope, jti, iat, exp, and for a patient
 *     launch `patient` (the FHIR id the app reads) and `spchain_idhash` (the patient's ledger idHash,
 *     which is what enforcement compares: every sidecar names a shared patient by it).
 *   - refresh tokens: 32 random bytes (base64url), kept only as their SHA-256 in LevelDB, rotated
 *     on every use; presenting a rotated-out one revokes the whole family (OAuth 2.0 Security BCP,
 *     refresh token rotation).
 *   - authorisation codes: 32 random bytes, in memory, single use, 60 s.
 *   - revocation (RFC 7009): a refresh token is deleted with its family; an access token's jti is
 *     remembered as revoked until it would have expired anyway.
 *   - client assertions (private_key_jwt, RFC 7523 as SMART Backend Services profiles it): iss = sub
 *     = client_id, aud = the token URL, exp at most 5 minutes ahead, a jti never seen before (kept
 *     until the assertion expires), signed by a key of the client's registered JWK Set (ES256,
 *     ES384, RS384 or RS256).
 * Time comes from `now` (ms), so tests move the clock.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import {
  type CryptoKey,
  calculateJwkThumbprint,
  createLocalJWKSet,
  errors,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
  type JWTPayload,
  jwtVerify,
  SignJWT,
} from 'jose';
import type { Db } from '../store/db.ts';
import { openSublevel } from '../store/db.ts';
import type { SmartClient } from './clients.ts';

export const ACCESS_TOKEN_ALG = 'ES256';
export const CLIENT_ASSERTION_ALGS = ['ES256', 'ES384', 'RS384', 'RS256'];
export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

export interface TokenTimes {
  /** Access tokens of app launches (seconds). */
  readonly accessTokenSeconds: number;
  /** Access tokens of backend services (seconds; SMART recommends at most 300). */
  readonly backendTokenSeconds: number;
  readonly refreshTokenSeconds: number;
  readonly codeSeconds: number;
}

export const defaultTokenTimes: TokenTimes = {
  accessTokenSeconds: 3600,
  backendTokenSeconds: 300,
  refreshTokenSeconds: 30 * 86_400,
  codeSeconds: 60,
};

/** The sidecar's token signing key: made once, kept in the data directory. */
export interface SigningKey {
  readonly privateKey: CryptoKey;
  readonly publicJwk: JWK;
  readonly kid: string;
}

export async function loadOrCreateSigningKey(path: string): Promise<SigningKey> {
  let jwk: JWK;
  try {
    jwk = JSON.parse(await readFile(path, 'utf8')) as JWK;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new Error(`${path}: the token signing key cannot be read: ${(err as Error).message}`);
    }
    const pair = await generateKeyPair(ACCESS_TOKEN_ALG, { extractable: true });
    jwk = await exportJWK(pair.privateKey);
    await writeFile(path, `${JSON.stringify(jwk)}\n`, { mode: 0o600, flag: 'wx' });
    await chmod(path, 0o600);
  }
  return signingKeyOf(jwk, path);
}

/** A signing key from its private JWK (tests make one in memory). */
export async function signingKeyOf(jwk: JWK, where = 'the token signing key'): Promise<SigningKey> {
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || typeof jwk.d !== 'string') {
    throw new Error(`${where}: expected a private P-256 JWK`);
  }
  const privateKey = (await importJWK(jwk, ACCESS_TOKEN_ALG)) as CryptoKey;
  const { d: _d, ...pub } = jwk;
  const kid = await calculateJwkThumbprint(pub);
  return { privateKey, publicJwk: { ...pub, kid, alg: ACCESS_TOKEN_ALG, use: 'sig' }, kid };
}

export async function newSigningKey(): Promise<SigningKey> {
  const pair = await generateKeyPair(ACCESS_TOKEN_ALG, { extractable: true });
  return signingKeyOf(await exportJWK(pair.privateKey));
}

/** What a token grants: the principal every route decides on. */
export interface Grant {
  readonly clientId: string;
  /** Granted scopes, space separated. */
  readonly scope: string;
  /** The FHIR Patient id of a patient launch. */
  readonly patient?: string;
  /** The patient's idHash (hex) of a patient launch. */
  readonly idHash?: string;
  /** Who approved (a patient launch: `Patient/<idHash>`), or the client for backend services. */
  readonly sub: string;
}

export interface AccessClaims extends Grant {
  readonly jti: string;
  /** Expiry, seconds since the epoch. */
  readonly exp: number;
}

export interface IssuedTokens {
  readonly access_token: string;
  readonly token_type: 'Bearer';
  readonly expires_in: number;
  readonly scope: string;
  readonly patient?: string;
  readonly refresh_token?: string;
}

/** Why a token is refused (RFC 6750 `invalid_token` with this description). */
export class TokenError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'TokenError';
    this.code = code;
  }
}

interface PendingCode {
  readonly grant: Grant;
  readonly redirectUri: string;
  readonly codeChallenge: string;
  readonly expires: number;
  readonly offline: boolean;
}

interface RefreshRecord {
  readonly grant: Grant;
  readonly family: string;
  readonly expires: number;
  /** Rotated out: presenting it again means theft, and revokes the family. */
  readonly used: boolean;
}

const sha256 = (s: string): Uint8Array => new Uint8Array(createHash('sha256').update(s).digest());
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();
const randomToken = (): string => randomBytes(32).toString('base64url');

export interface TokenServiceOpts {
  /**
   * The FHIR base URL (`.../fhir`): the audience of every access token. A function, because a
   * server learns its own URL only once it listens; it must not change afterwards. The issuer is
   * the same origin's `/smart`, the token endpoint `/smart/token` (the audience of client
   * assertions).
   */
  readonly fhirBase: () => string;
  readonly key: SigningKey;
  readonly db: Db;
  readonly times?: Partial<TokenTimes>;
  readonly now?: () => number;
}

export class TokenService {
  private readonly fhirBase: () => string;
  private readonly key: SigningKey;
  private readonly times: TokenTimes;
  private readonly now: () => number;
  private readonly codes = new Map<string, PendingCode>();
  private readonly assertionJtis = new Map<string, number>();
  private readonly refresh;
  private readonly revoked;

  constructor(o: TokenServiceOpts) {
    this.fhirBase = o.fhirBase;
    this.key = o.key;
    this.times = { ...defaultTokenTimes, ...o.times };
    this.now = o.now ?? Date.now;
    this.refresh = openSublevel(o.db, 'smart-refresh');
    this.revoked = openSublevel(o.db, 'smart-revoked');
  }

  get audience(): string {
    return this.fhirBase().replace(/\/+$/, '');
  }

  get issuer(): string {
    return `${this.audience.replace(/\/fhir$/, '')}/smart`;
  }

  get tokenUrl(): string {
    return `${this.issuer}/token`;
  }

  /** The public key set clients and resource servers verify tokens with. */
  get jwks(): { keys: JWK[] } {
    return { keys: [this.key.publicJwk] };
  }

  async issueAccessToken(grant: Grant, seconds: number): Promise<{ token: string; jti: string }> {
    const jti = randomToken();
    const iat = Math.floor(this.now() / 1000);
    const token = await new SignJWT({
      client_id: grant.clientId,
      scope: grant.scope,
      ...(grant.patient ? { patient: grant.patient } : {}),
      ...(grant.idHash ? { spchain_idhash: grant.idHash } : {}),
    })
      .setProtectedHeader({ alg: ACCESS_TOKEN_ALG, kid: this.key.kid, typ: 'at+jwt' })
      .setIssuer(this.issuer)
      .setAudience(this.audience)
      .setSubject(grant.sub)
      .setJti(jti)
      .setIssuedAt(iat)
      .setExpirationTime(iat + seconds)
      .sign(this.key.privateKey);
    return { token, jti };
  }

  /** Verifies an access token of this server: signature, issuer, audience, expiry, revocation. */
  async verifyAccessToken(token: string): Promise<AccessClaims> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, createLocalJWKSet(this.jwks), {
        issuer: this.issuer,
        audience: this.audience,
        algorithms: [ACCESS_TOKEN_ALG],
        typ: 'at+jwt',
        currentDate: new Date(this.now()),
        clockTolerance: 0,
      }));
    } catch (err) {
      throw asTokenError(err);
    }
    const claims = accessClaimsOf(payload);
    if ((await this.revoked.get(utf8.encode(claims.jti))) !== undefined) {
      throw new TokenError('revoked', 'the access token was revoked');
    }
    return claims;
  }

  /** Backend services and refresh: the token response for `grant`. */
  async tokensFor(
    grant: Grant,
    o: { backend: boolean; offline: boolean; family?: string },
  ): Promise<IssuedTokens> {
    const seconds = o.backend ? this.times.backendTokenSeconds : this.times.accessTokenSeconds;
    const { token } = await this.issueAccessToken(grant, seconds);
    let refresh_token: string | undefined;
    if (o.offline && !o.backend) {
      refresh_token = randomToken();
      const record: RefreshRecord = {
        grant,
        family: o.family ?? randomToken(),
        expires: this.now() + this.times.refreshTokenSeconds * 1000,
        used: false,
      };
      await this.refresh.put(sha256(refresh_token), utf8.encode(JSON.stringify(record)));
    }
    return {
      access_token: token,
      token_type: 'Bearer',
      expires_in: seconds,
      scope: grant.scope,
      ...(grant.patient ? { patient: grant.patient } : {}),
      ...(refresh_token ? { refresh_token } : {}),
    };
  }

  /** A new authorisation code for an approved request. */
  issueCode(grant: Grant, redirectUri: string, codeChallenge: string, offline: boolean): string {
    this.sweep();
    const code = randomToken();
    this.codes.set(code, {
      grant,
      redirectUri,
      codeChallenge,
      offline,
      expires: this.now() + this.times.codeSeconds * 1000,
    });
    return code;
  }

  /**
   * Redeems a code once: the same client, the same redirect URI, and the PKCE verifier whose
   * S256 is the challenge. Any failure uses the code up (a code is never tried twice).
   */
  async redeemCode(o: {
    code: string;
    clientId: string;
    redirectUri: string;
    codeVerifier: string;
  }): Promise<IssuedTokens> {
    const pending = this.codes.get(o.code);
    this.codes.delete(o.code);
    if (pending === undefined || pending.expires <= this.now()) {
      throw new TokenError('invalid_grant', 'the authorisation code is unknown, used or expired');
    }
    if (pending.grant.clientId !== o.clientId) {
      throw new TokenError('invalid_grant', 'the code was issued to another client');
    }
    if (pending.redirectUri !== o.redirectUri) {
      throw new TokenError('invalid_grant', 'redirect_uri differs from the authorisation request');
    }
    if (!/^[A-Za-z0-9._~-]{43,128}$/.test(o.codeVerifier)) {
      throw new TokenError(
        'invalid_grant',
        'code_verifier must be 43-128 characters of [A-Za-z0-9._~-]',
      );
    }
    const challenge = createHash('sha256').update(o.codeVerifier).digest('base64url');
    if (challenge !== pending.codeChallenge) {
      throw new TokenError(
        'invalid_grant',
        'code_verifier does not match the code_challenge (PKCE S256)',
      );
    }
    return this.tokensFor(pending.grant, { backend: false, offline: pending.offline });
  }

  /** Rotates a refresh token: the old one is used up; reusing a used one revokes the family. */
  async useRefreshToken(token: string, clientId: string, scope?: string): Promise<IssuedTokens> {
    const key = sha256(token);
    const raw = await this.refresh.get(key);
    if (raw === undefined) throw new TokenError('invalid_grant', 'the refresh token is not valid');
    const record = JSON.parse(fromUtf8.decode(raw)) as RefreshRecord;
    if (record.used) {
      await this.revokeFamily(record.family);
      throw new TokenError(
        'invalid_grant',
        'the refresh token was used before: its family is revoked',
      );
    }
    if (record.expires <= this.now()) {
      await this.refresh.del(key);
      throw new TokenError('invalid_grant', 'the refresh token expired');
    }
    if (record.grant.clientId !== clientId) {
      throw new TokenError('invalid_grant', 'the refresh token was issued to another client');
    }
    let grant = record.grant;
    if (scope !== undefined) {
      const held = new Set(record.grant.scope.split(' '));
      const asked = scope.split(' ').filter((s) => s !== '');
      const extra = asked.find((s) => !held.has(s));
      if (extra !== undefined) {
        throw new TokenError('invalid_scope', `${extra} was not granted to this refresh token`);
      }
      grant = { ...grant, scope: asked.join(' ') };
    }
    await this.refresh.put(key, utf8.encode(JSON.stringify({ ...record, used: true })));
    return this.tokensFor(grant, { backend: false, offline: true, family: record.family });
  }

  /**
   * RFC 7009: revokes a refresh token (and its family) or an access token of `clientId`. Unknown
   * or foreign tokens are ignored, as the RFC says (the answer is 200 either way).
   */
  async revoke(token: string, clientId: string): Promise<void> {
    const raw = await this.refresh.get(sha256(token));
    if (raw !== undefined) {
      const record = JSON.parse(fromUtf8.decode(raw)) as RefreshRecord;
      if (record.grant.clientId === clientId) await this.revokeFamily(record.family);
      return;
    }
    let claims: AccessClaims;
    try {
      claims = await this.verifyAccessToken(token);
    } catch {
      return;
    }
    if (claims.clientId !== clientId) return;
    await this.revoked.put(utf8.encode(claims.jti), utf8.encode(String(claims.exp)));
  }

  private async revokeFamily(family: string): Promise<void> {
    const dead: Uint8Array[] = [];
    for await (const [k, v] of this.refresh.iterator()) {
      if ((JSON.parse(fromUtf8.decode(v)) as RefreshRecord).family === family) dead.push(k);
    }
    await this.refresh.batch(dead.map((key) => ({ type: 'del' as const, key })));
  }

  /** Verifies a private_key_jwt client assertion for `client`; returns nothing or throws. */
  async verifyClientAssertion(client: SmartClient, assertion: string): Promise<void> {
    if (client.jwks === undefined) {
      throw new TokenError('invalid_client', `client ${client.clientId} has no registered keys`);
    }
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(
        assertion,
        createLocalJWKSet({ keys: client.jwks.keys as JWK[] }),
        {
          issuer: client.clientId,
          subject: client.clientId,
          audience: this.tokenUrl,
          algorithms: CLIENT_ASSERTION_ALGS,
          currentDate: new Date(this.now()),
          requiredClaims: ['exp', 'jti'],
        },
      ));
    } catch (err) {
      const e = asTokenError(err);
      throw new TokenError('invalid_client', `client assertion: ${e.message}`);
    }
    const exp = (payload.exp ?? 0) * 1000;
    if (exp > this.now() + 5 * 60_000) {
      throw new TokenError('invalid_client', 'client assertion: exp is more than 5 minutes ahead');
    }
    this.sweep();
    const jti = `${client.clientId}\n${payload.jti}`;
    if (this.assertionJtis.has(jti)) {
      throw new TokenError('invalid_client', 'client assertion: its jti was used before (replay)');
    }
    this.assertionJtis.set(jti, exp);
  }

  /** Drops expired codes and assertion ids. */
  private sweep(): void {
    const now = this.now();
    for (const [c, p] of this.codes) if (p.expires <= now) this.codes.delete(c);
    for (const [j, exp] of this.assertionJtis) if (exp <= now) this.assertionJtis.delete(j);
  }
}

function accessClaimsOf(p: JWTPayload): AccessClaims {
  const str = (v: unknown, name: string): string => {
    if (typeof v !== 'string' || v === '')
      throw new TokenError('invalid_token', `the token has no ${name}`);
    return v;
  };
  const patient = p.patient === undefined ? undefined : str(p.patient, 'valid patient');
  const idHash = p.spchain_idhash === undefined ? undefined : str(p.spchain_idhash, 'valid idHash');
  return {
    clientId: str(p.client_id, 'client_id'),
    scope: str(p.scope, 'scope'),
    sub: str(p.sub, 'sub'),
    jti: str(p.jti, 'jti'),
    exp: typeof p.exp === 'number' ? p.exp : 0,
    ...(patient ? { patient } : {}),
    ...(idHash ? { idHash } : {}),
  };
}

/** jose's verification errors as the reasons a client is told. */
function asTokenError(err: unknown): TokenError {
  if (err instanceof TokenError) return err;
  if (err instanceof errors.JWTExpired) return new TokenError('expired', 'the token expired');
  if (err instanceof errors.JWSSignatureVerificationFailed) {
    return new TokenError('bad_signature', 'the token signature does not verify');
  }
  if (err instanceof errors.JWTClaimValidationFailed) {
    return new TokenError(
      'bad_claim',
      `the token's ${err.claim} claim is not valid here (${err.reason})`,
    );
  }
  if (err instanceof errors.JWKSNoMatchingKey) {
    return new TokenError('unknown_key', 'the token is signed by a key that is not registered');
  }
  if (err instanceof errors.JOSEAlgNotAllowed) {
    return new TokenError('bad_alg', 'the token is signed with an algorithm that is not accepted');
  }
  if (err instanceof errors.JOSEError) return new TokenError('malformed', 'the token is malformed');
  throw err;
}
