/**
 * The authorisation server's routes (SMART App Launch 2 and Backend Services, issue 6 parts 1-2):
 *
 *   GET  /fhir/.well-known/smart-configuration   discovery (also at /.well-known/...)
 *   GET  /smart/jwks.json                         the public key access tokens are signed with
 *   GET  /smart/authorize                         a standalone launch's authorisation request
 *   GET  /smart/authorize/requests/:id            what a pending request asks (portal, CLI)
 *   POST /smart/authorize/decision                the patient's signed approval (or refusal)
 *   POST /smart/token                             authorization_code (PKCE S256), refresh_token,
 *                                                 client_credentials (private_key_jwt)
 *   POST /smart/revoke                            RFC 7009
 *   POST /smart/introspect                        RFC 7662 (the caller authenticates)
 *
 * Authorize: errors about the client or its redirect URI are shown, never redirected (RFC 6749
 * 4.1.2.1: a redirect to an unregistered URI would be an open redirector); every other error goes
 * back to the registered redirect URI with `error` and `state`. A valid request becomes a pending
 * request (10 minutes, in memory) that the patient approves by signing it
 * (authz/smart-approval.ts) with the key of their pinned register tx: in the portal, or with the
 * CLI. There are no passwords and no sessions. `user/` scopes are never granted: this server has
 * no user directory, only patients (who approve) and backend clients (who hold keys).
 *
 * Token endpoint errors are RFC 6749 5.2 JSON (`error`, `error_description`), 400, or 401 for a
 * client that failed to authenticate; every token answer is `Cache-Control: no-store`.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { grantScopes, parseScopes, type Scope } from '../authz/scopes.ts';
import { verifyApproval } from '../authz/smart-approval.ts';
import { fromHex } from '../crypto/bytes.ts';
import type { AuditLog } from '../fhir/audit.ts';
import { fail } from '../fhir/outcome.ts';
import type { PatientLedger } from '../sidecar/patients.ts';
import type { ClientRegistry, SmartClient } from './clients.ts';
import { CLIENT_ASSERTION_TYPE, type Grant, TokenError, type TokenService } from './tokens.ts';

export interface SmartRoutesDeps {
  readonly chainId: string;
  readonly clients: ClientRegistry;
  readonly tokens: TokenService;
  /** Patients' pinned blocks: an approval is verified against the register tx's signing key. */
  readonly ledger: PatientLedger;
  /** The FHIR Patient id an app is given for a patient (default: the idHash, a ledger patient). */
  readonly patientIdOf?: (idHash: string) => Promise<string>;
  readonly audit: AuditLog;
  readonly now?: () => number;
}

/** What SMART's discovery document says this server supports. */
export const SMART_CAPABILITIES = [
  'launch-standalone',
  'client-public',
  'client-confidential-asymmetric',
  'context-standalone-patient',
  'permission-patient',
  'permission-v1',
  'permission-v2',
  'permission-offline',
  'authorize-post',
];

const SCOPES_SUPPORTED = [
  'openid',
  'fhirUser',
  'launch/patient',
  'offline_access',
  'online_access',
  'patient/*.rs',
  'patient/*.read',
  'system/*.cruds',
  'system/*.read',
  'system/*.write',
];

const PENDING_MS = 10 * 60_000;
const MAX_PENDING = 10_000;

interface Pending {
  readonly client: SmartClient;
  readonly redirectUri: string;
  readonly state: string;
  readonly challenge: string;
  readonly scope: string;
  readonly aud: string;
  readonly offline: boolean;
  readonly expires: number;
}

/** An RFC 6749 error answer. */
class OAuthError extends Error {
  readonly error: string;
  readonly status: number;
  constructor(error: string, description: string, status = 400) {
    super(description);
    this.error = error;
    this.status = status;
  }
}

export function registerSmartRoutes(app: FastifyInstance, deps: SmartRoutesDeps): void {
  const now = deps.now ?? Date.now;
  const { tokens, clients } = deps;
  const pending = new Map<string, Pending>();
  const pub = { config: { auth: 'public' as const } };
  /** Routes whose answer tells whether a guessed code, id or token was right: rate-limited. */
  const guarded = { config: { auth: 'public' as const, limit: 'guess' as const } };

  const configuration = () => {
    const issuer = tokens.issuer;
    return {
      issuer,
      jwks_uri: `${issuer}/jwks.json`,
      authorization_endpoint: `${issuer}/authorize`,
      token_endpoint: tokens.tokenUrl,
      revocation_endpoint: `${issuer}/revoke`,
      introspection_endpoint: `${issuer}/introspect`,
      grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials'],
      token_endpoint_auth_methods_supported: ['none', 'private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: ['ES256', 'ES384', 'RS384', 'RS256'],
      scopes_supported: SCOPES_SUPPORTED,
      response_types_supported: ['code'],
      code_challenge_methods_supported: ['S256'],
      capabilities: SMART_CAPABILITIES,
    };
  };
  for (const path of [
    '/fhir/.well-known/smart-configuration',
    '/.well-known/smart-configuration',
  ]) {
    app.get(path, pub, async (_req, reply) =>
      reply
        .header('cache-control', 'public, max-age=300')
        .type('application/json')
        .send(configuration()),
    );
  }
  app.get('/smart/jwks.json', pub, async (_req, reply) =>
    reply.type('application/json').send(tokens.jwks),
  );

  const sweep = () => {
    const t = now();
    for (const [id, p] of pending) if (p.expires <= t) pending.delete(id);
  };

  const authorize = async (
    req: FastifyRequest,
    reply: FastifyReply,
    q: Record<string, unknown>,
  ) => {
    const str = (k: string): string | undefined =>
      typeof q[k] === 'string' ? (q[k] as string) : undefined;
    const clientId = str('client_id');
    const client = clientId === undefined ? undefined : clients.get(clientId);
    if (client === undefined || client.kind === 'backend') {
      throw fail(
        400,
        'security',
        'client_id is not a registered app: nothing is redirected',
        'client_id',
      );
    }
    const redirectUri = str('redirect_uri');
    if (redirectUri === undefined || !client.redirectUris.includes(redirectUri)) {
      throw fail(
        400,
        'security',
        'redirect_uri is not registered for this client: nothing is redirected',
        'redirect_uri',
      );
    }
    const state = str('state') ?? '';
    const back = (error: string, description: string) =>
      reply.redirect(
        withQuery(redirectUri, {
          error,
          error_description: description,
          ...(state ? { state } : {}),
        }),
        302,
      );
    if (str('response_type') !== 'code')
      return back('unsupported_response_type', 'response_type must be code');
    if (state === '' || state.length > 512)
      return back('invalid_request', 'state is required (at most 512 characters)');
    if (str('code_challenge_method') !== 'S256') {
      return back('invalid_request', 'PKCE is required: code_challenge_method must be S256');
    }
    const challenge = str('code_challenge') ?? '';
    if (!/^[A-Za-z0-9_-]{43}$/.test(challenge)) {
      return back(
        'invalid_request',
        'code_challenge must be the base64url SHA-256 of the code verifier',
      );
    }
    const aud = str('aud');
    if (aud === undefined || trimSlash(aud) !== trimSlash(tokens.audience)) {
      return back('invalid_request', `aud must be this FHIR server (${tokens.audience})`);
    }
    if (str('launch') !== undefined) {
      return back('invalid_request', 'EHR launch is not supported here: use a standalone launch');
    }
    const asked = parseScopes(str('scope') ?? '');
    if (!asked.ok) return back('invalid_scope', asked.problem);
    const scope = grantedTexts(asked.scopes, client).filter(
      (s) => !s.startsWith('user/') && !s.startsWith('system/'),
    );
    if (!scope.some((s) => s.startsWith('patient/'))) {
      return back('invalid_scope', 'no patient/ scope that this client may have was asked for');
    }
    if (!scope.includes('launch/patient')) scope.unshift('launch/patient');
    sweep();
    if (pending.size >= MAX_PENDING)
      return back('temporarily_unavailable', 'too many pending requests');
    const id = randomBytes(16).toString('hex');
    const p: Pending = {
      client,
      redirectUri,
      state,
      challenge,
      scope: scope.join(' '),
      aud: tokens.audience,
      offline: scope.includes('offline_access'),
      expires: now() + PENDING_MS,
    };
    pending.set(id, p);
    const view = viewOf(id, p);
    if (wantsJson(req)) return reply.type('application/json').send(view);
    return reply
      .header('content-security-policy', "default-src 'none'; style-src 'unsafe-inline'")
      .type('text/html; charset=utf-8')
      .send(approvalPage(view));
  };

  app.get('/smart/authorize', pub, async (req, reply) =>
    authorize(req, reply, (req.query ?? {}) as Record<string, unknown>),
  );
  app.post('/smart/authorize', pub, async (req, reply) =>
    authorize(req, reply, (req.body ?? {}) as Record<string, unknown>),
  );

  /** What a pending request asks, for the patient's device (portal, CLI) to show and sign. */
  const viewOf = (id: string, p: Pending) => ({
    request: id,
    chainId: deps.chainId,
    client: { id: p.client.clientId, name: p.client.name },
    scope: p.scope,
    aud: p.aud,
    expires: new Date(p.expires).toISOString(),
    decision: `${tokens.issuer}/authorize/decision`,
  });

  app.get<{ Params: { id: string } }>(
    '/smart/authorize/requests/:id',
    guarded,
    async (req, reply) => {
      sweep();
      const p = pending.get(req.params.id);
      if (p === undefined) {
        throw fail(404, 'not-found', 'no such pending authorisation request (it may have expired)');
      }
      return reply.type('application/json').send(viewOf(req.params.id, p));
    },
  );

  app.post('/smart/authorize/decision', guarded, async (req, reply) => {
    const b = (req.body ?? {}) as Record<string, unknown>;
    sweep();
    const id = typeof b.request === 'string' ? b.request : '';
    const p = pending.get(id);
    if (p === undefined)
      throw fail(
        404,
        'not-found',
        'no such pending authorisation request (it may have expired)',
        'request',
      );
    if (b.approve !== true) {
      pending.delete(id);
      return reply.send({
        redirect: withQuery(p.redirectUri, {
          error: 'access_denied',
          error_description: 'the patient declined',
          state: p.state,
        }),
      });
    }
    const idHash =
      typeof b.idHash === 'string' && /^[0-9a-f]{64}$/.test(b.idHash) ? b.idHash : undefined;
    if (idHash === undefined)
      throw fail(400, 'invalid', 'idHash must be 64 lowercase hex digits', 'idHash');
    const signature =
      typeof b.signature === 'string' && /^[0-9a-f]{128}$/.test(b.signature)
        ? b.signature
        : undefined;
    if (signature === undefined)
      throw fail(400, 'invalid', 'signature must be 64 bytes as lowercase hex', 'signature');
    const block = await deps.ledger.getMicroblockByIdHash(fromHex(idHash));
    if (block === undefined)
      throw fail(404, 'not-found', 'no pinned patient block for this idHash', 'idHash');
    const subject = {
      chainId: deps.chainId,
      request: id,
      clientId: p.client.clientId,
      scope: p.scope,
      aud: p.aud,
      idHash,
    };
    if (!verifyApproval(subject, fromHex(signature), block.patientSigningKey)) {
      throw fail(
        403,
        'security',
        "the approval's signature does not verify with the patient's registered key",
        'signature',
      );
    }
    pending.delete(id);
    const patient = deps.patientIdOf ? await deps.patientIdOf(idHash) : idHash;
    const grant: Grant = {
      clientId: p.client.clientId,
      scope: p.scope,
      patient,
      idHash,
      sub: `Patient/${idHash}`,
    };
    const code = tokens.issueCode(grant, p.redirectUri, p.challenge, p.offline);
    await deps.audit.record({
      interaction: 'operation',
      agent: { id: p.client.clientId, method: 'smart-approval', address: req.ip },
      status: 200,
      entities: [],
      patients: [`Patient/${patient}`],
      requestId: req.id,
      now: now(),
    });
    return reply.send({ redirect: withQuery(p.redirectUri, { code, state: p.state }) });
  });

  const oauth =
    (handler: (form: Record<string, string>, req: FastifyRequest) => Promise<unknown>) =>
    async (req: FastifyRequest, reply: FastifyReply) => {
      reply.header('cache-control', 'no-store').header('pragma', 'no-cache');
      try {
        const body = await handler(formOf(req.body), req);
        return reply.type('application/json').send(body);
      } catch (err) {
        const e = asOAuth(err);
        if (e.status === 401) reply.header('www-authenticate', 'Bearer realm="spchain-sidecar"');
        return reply
          .code(e.status)
          .type('application/json')
          .send({ error: e.error, error_description: e.message });
      }
    };

  /** The client of a token-endpoint call, authenticated as its kind requires. */
  const authenticate = async (form: Record<string, string>): Promise<SmartClient> => {
    let clientId = form.client_id;
    const assertion = form.client_assertion;
    if (assertion !== undefined) {
      if (form.client_assertion_type !== CLIENT_ASSERTION_TYPE) {
        throw new OAuthError(
          'invalid_client',
          `client_assertion_type must be ${CLIENT_ASSERTION_TYPE}`,
          401,
        );
      }
      const iss = issuerOf(assertion);
      if (clientId !== undefined && clientId !== iss) {
        throw new OAuthError('invalid_client', 'client_id differs from the assertion issuer', 401);
      }
      clientId = iss;
    }
    const client = clientId === undefined ? undefined : clients.get(clientId);
    if (client === undefined) throw new OAuthError('invalid_client', 'unknown client', 401);
    if (client.kind === 'public') {
      if (assertion !== undefined)
        throw new OAuthError('invalid_client', 'a public client has no keys', 401);
      return client;
    }
    if (assertion === undefined) {
      throw new OAuthError(
        'invalid_client',
        `a ${client.kind} client authenticates with private_key_jwt (client_assertion)`,
        401,
      );
    }
    await tokens.verifyClientAssertion(client, assertion);
    return client;
  };

  app.post(
    '/smart/token',
    guarded,
    oauth(async (form, req) => {
      const grantType = form.grant_type;
      if (grantType === 'client_credentials') {
        const client = await authenticate(form);
        if (client.kind !== 'backend') {
          throw new OAuthError('unauthorized_client', 'client_credentials is for backend clients');
        }
        const asked = parseScopes(form.scope ?? '');
        if (!asked.ok) throw new OAuthError('invalid_scope', asked.problem);
        const scope = grantedTexts(asked.scopes, client).filter((s) => s.startsWith('system/'));
        if (scope.length === 0)
          throw new OAuthError(
            'invalid_scope',
            'none of the asked system/ scopes is allowed for this client',
          );
        const grant: Grant = {
          clientId: client.clientId,
          scope: scope.join(' '),
          sub: client.clientId,
        };
        const issued = await tokens.tokensFor(grant, { backend: true, offline: false });
        await auditToken(req, client.clientId, 'client_credentials');
        return issued;
      }
      if (grantType === 'authorization_code') {
        const client = await authenticate(form);
        const missing = ['code', 'redirect_uri', 'code_verifier'].find((k) => !form[k]);
        if (missing) throw new OAuthError('invalid_request', `${missing} is required`);
        const issued = await tokens.redeemCode({
          code: form.code!,
          clientId: client.clientId,
          redirectUri: form.redirect_uri!,
          codeVerifier: form.code_verifier!,
        });
        await auditToken(req, client.clientId, 'authorization_code');
        return issued;
      }
      if (grantType === 'refresh_token') {
        const client = await authenticate(form);
        if (!form.refresh_token)
          throw new OAuthError('invalid_request', 'refresh_token is required');
        return tokens.useRefreshToken(form.refresh_token, client.clientId, form.scope);
      }
      throw new OAuthError(
        'unsupported_grant_type',
        'grant_type must be authorization_code, refresh_token or client_credentials',
      );
    }),
  );

  app.post(
    '/smart/revoke',
    guarded,
    oauth(async (form) => {
      const client = await authenticate(form);
      if (!form.token) throw new OAuthError('invalid_request', 'token is required');
      await tokens.revoke(form.token, client.clientId);
      return {};
    }),
  );

  app.post(
    '/smart/introspect',
    guarded,
    oauth(async (form) => {
      const client = await authenticate(form);
      if (client.kind === 'public')
        throw new OAuthError('invalid_client', 'introspection needs an authenticated client', 401);
      if (!form.token) throw new OAuthError('invalid_request', 'token is required');
      try {
        const c = await tokens.verifyAccessToken(form.token);
        return {
          active: true,
          scope: c.scope,
          client_id: c.clientId,
          sub: c.sub,
          exp: c.exp,
          iss: tokens.issuer,
          aud: tokens.audience,
          token_type: 'Bearer',
          ...(c.patient ? { patient: c.patient } : {}),
        };
      } catch (err) {
        if (err instanceof TokenError) return { active: false };
        throw err;
      }
    }),
  );

  async function auditToken(req: FastifyRequest, clientId: string, how: string): Promise<void> {
    await deps.audit.record({
      interaction: 'operation',
      agent: { id: clientId, method: `smart-${how}`, address: req.ip },
      status: 200,
      entities: [],
      patients: [],
      requestId: req.id,
      now: now(),
    });
  }
}

/** The texts of the asked scopes that the client's registered scopes cover. */
function grantedTexts(asked: readonly Scope[], client: SmartClient): string[] {
  const allowed = parseScopes(client.scope);
  if (!allowed.ok) return [];
  return grantScopes(asked, allowed.scopes).granted.map((s) => s.text);
}

function asOAuth(err: unknown): OAuthError {
  if (err instanceof OAuthError) return err;
  if (err instanceof TokenError) {
    const status = err.code === 'invalid_client' ? 401 : 400;
    const code = ['invalid_client', 'invalid_grant', 'invalid_scope'].includes(err.code)
      ? err.code
      : 'invalid_grant';
    return new OAuthError(code, err.message, status);
  }
  throw err;
}

/** The form body of a token-endpoint call (application/x-www-form-urlencoded, parsed by the server). */
function formOf(body: unknown): Record<string, string> {
  if (typeof body !== 'object' || body === null) {
    throw new OAuthError('invalid_request', 'the body must be application/x-www-form-urlencoded');
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(body)) if (typeof v === 'string') out[k] = v;
  return out;
}

/** The `iss` of an unverified JWT (to find the client whose keys verify it). */
function issuerOf(jwt: string): string {
  const part = jwt.split('.')[1];
  try {
    const iss = (
      JSON.parse(Buffer.from(part ?? '', 'base64url').toString('utf8')) as { iss?: unknown }
    ).iss;
    if (typeof iss === 'string') return iss;
  } catch {}
  throw new OAuthError('invalid_client', 'client_assertion is not a JWT with an iss', 401);
}

function withQuery(uri: string, params: Record<string, string>): string {
  const url = new URL(uri);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return url.toString();
}

const trimSlash = (s: string) => s.replace(/\/+$/, '');

function wantsJson(req: FastifyRequest): boolean {
  const accept = String(req.headers.accept ?? '');
  return /application\/json/.test(accept) && !/text\/html/.test(accept);
}

const esc = (s: string) =>
  s.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!,
  );

/** The page a person sees at the authorize URL: what is asked, and where to approve it. */
function approvalPage(v: {
  request: string;
  client: { name: string };
  scope: string;
  expires: string;
}): string {
  const scopes = v.scope
    .split(' ')
    .map((s) => `<li><code>${esc(s)}</code></li>`)
    .join('');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Approve access</title></head><body>
<main><h1>${esc(v.client.name)} asks to read your records</h1>
<p>It asks for:</p><ul>${scopes}</ul>
<p>Approve it with your own keys: open your patient portal and enter this request code, or run
<code>spchain patient approve ${esc(v.request)}</code>. The request expires at ${esc(v.expires)}.</p>
<p><a href="/portal/#approve=${esc(v.request)}">Open the patient portal to approve or decline</a></p>
<p>Request code: <output>${esc(v.request)}</output></p></main></body></html>`;
}
