/**
 * The SMART clients this sidecar knows (issue 6 parts 1-2): who may ask it for tokens, how each
 * proves who it is, where its users may be sent back to, and the most it may ever be given.
 *
 *   - `public` apps (a browser or native app): no secret; SMART App Launch with PKCE S256 only;
 *     redirect URIs registered exactly.
 *   - `confidential` apps: as `public`, and they authenticate at the token endpoint with
 *     private_key_jwt (their `jwks`), as SMART's asymmetric client authentication says.
 *   - `backend` services (the EHR writing bundles, a peer institution's sidecar): SMART Backend
 *     Services, client_credentials with private_key_jwt only; no redirect, no user. A backend
 *     client may be bound to a network member (`institution`): what it does is then on that
 *     institution's behalf.
 *
 * Clients come from the data directory's `smart-clients.json` (written by the CLI's `clients add`)
 * or from the caller; `parseClients` checks every field and names the one that is wrong. Only
 * public keys are kept here: a client's private key never leaves the client.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import { parseScopes } from '../authz/scopes.ts';

export type ClientKind = 'public' | 'confidential' | 'backend';
export const CLIENT_KINDS: readonly ClientKind[] = ['public', 'confidential', 'backend'];

/** A public JWK as RFC 7517 gives it (only the members jose needs are typed). */
export interface PublicJwk {
  readonly kty: string;
  readonly kid?: string;
  readonly alg?: string;
  readonly [member: string]: unknown;
}

export interface SmartClient {
  readonly clientId: string;
  /** What a person is shown (the approval page), never used to decide anything. */
  readonly name: string;
  readonly kind: ClientKind;
  /** Exact redirect URIs (apps); empty for backend clients. */
  readonly redirectUris: readonly string[];
  /** The widest scopes this client may be given, space separated (SMART v1 or v2 syntax). */
  readonly scope: string;
  /** Public keys for private_key_jwt (confidential and backend clients). */
  readonly jwks?: { readonly keys: readonly PublicJwk[] };
  /** The network member a backend client acts for. */
  readonly institution?: number;
}

const CLIENT_ID = /^[A-Za-z0-9._~-]{1,128}$/;
const MAX_CLIENTS = 1000;
const MAX_KEYS = 10;
/** The JWK members that make a key private: a registered key must not carry them. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

export class ClientConfigError extends Error {
  constructor(where: string, problem: string) {
    super(`${where}: ${problem}`);
    this.name = 'ClientConfigError';
  }
}

/** Checks a clients document (`{ "clients": [...] }`); `where` names its source in errors. */
export function parseClients(doc: unknown, where: string): SmartClient[] {
  const list = (doc as { clients?: unknown } | null)?.clients;
  if (!Array.isArray(list)) throw new ClientConfigError(where, '"clients" must be an array');
  if (list.length > MAX_CLIENTS) {
    throw new ClientConfigError(where, `at most ${MAX_CLIENTS} clients`);
  }
  const seen = new Set<string>();
  return list.map((c, n) => {
    const client = parseClient(c, `${where} clients[${n}]`);
    if (seen.has(client.clientId)) {
      throw new ClientConfigError(`${where} clients[${n}].clientId`, 'is registered twice');
    }
    seen.add(client.clientId);
    return client;
  });
}

export function parseClient(c: unknown, where: string): SmartClient {
  if (typeof c !== 'object' || c === null || Array.isArray(c)) {
    throw new ClientConfigError(where, 'must be an object');
  }
  const o = c as Record<string, unknown>;
  const at = (field: string) => `${where}.${field}`;
  if (typeof o.clientId !== 'string' || !CLIENT_ID.test(o.clientId)) {
    throw new ClientConfigError(at('clientId'), 'must be 1-128 characters of [A-Za-z0-9._~-]');
  }
  const name = o.name ?? o.clientId;
  if (typeof name !== 'string' || name.length === 0 || name.length > 200) {
    throw new ClientConfigError(at('name'), 'must be a string of 1-200 characters');
  }
  if (typeof o.kind !== 'string' || !CLIENT_KINDS.includes(o.kind as ClientKind)) {
    throw new ClientConfigError(at('kind'), `must be one of ${CLIENT_KINDS.join(', ')}`);
  }
  const kind = o.kind as ClientKind;
  if (typeof o.scope !== 'string') {
    throw new ClientConfigError(at('scope'), 'must be a space-separated scope string');
  }
  const scopes = parseScopes(o.scope);
  if (!scopes.ok) throw new ClientConfigError(at('scope'), scopes.problem);
  const redirectUris = parseRedirects(o.redirectUris, kind, at('redirectUris'));
  const jwks = o.jwks === undefined ? undefined : parseJwks(o.jwks, at('jwks'));
  if (kind !== 'public' && jwks === undefined) {
    throw new ClientConfigError(
      at('jwks'),
      `a ${kind} client authenticates with private_key_jwt: give its public keys`,
    );
  }
  let institution: number | undefined;
  if (o.institution !== undefined) {
    if (kind !== 'backend') {
      throw new ClientConfigError(
        at('institution'),
        'only a backend client acts for an institution',
      );
    }
    if (!Number.isSafeInteger(o.institution) || (o.institution as number) < 0) {
      throw new ClientConfigError(at('institution'), 'must be a member index');
    }
    institution = o.institution as number;
  }
  return {
    clientId: o.clientId,
    name,
    kind,
    redirectUris,
    scope: o.scope,
    ...(jwks ? { jwks } : {}),
    ...(institution !== undefined ? { institution } : {}),
  };
}

function parseRedirects(v: unknown, kind: ClientKind, where: string): string[] {
  if (kind === 'backend') {
    if (v !== undefined && (!Array.isArray(v) || v.length > 0)) {
      throw new ClientConfigError(where, 'a backend client has no redirect URIs');
    }
    return [];
  }
  if (!Array.isArray(v) || v.length === 0 || v.length > 20) {
    throw new ClientConfigError(where, 'an app needs 1-20 exact redirect URIs');
  }
  return v.map((u, n) => {
    if (typeof u !== 'string') throw new ClientConfigError(`${where}[${n}]`, 'must be a string');
    let url: URL;
    try {
      url = new URL(u);
    } catch {
      throw new ClientConfigError(`${where}[${n}]`, 'is not an absolute URL');
    }
    if (url.hash !== '') throw new ClientConfigError(`${where}[${n}]`, 'must not have a fragment');
    const loopback = ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) {
      throw new ClientConfigError(`${where}[${n}]`, 'must be https (http only on loopback)');
    }
    return u;
  });
}

function parseJwks(v: unknown, where: string): { keys: PublicJwk[] } {
  const keys = (v as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys) || keys.length === 0 || keys.length > MAX_KEYS) {
    throw new ClientConfigError(where, `must be a JWK Set with 1-${MAX_KEYS} keys`);
  }
  return {
    keys: keys.map((k, n) => {
      const w = `${where}.keys[${n}]`;
      if (typeof k !== 'object' || k === null || typeof (k as PublicJwk).kty !== 'string') {
        throw new ClientConfigError(w, 'must be a JWK with kty');
      }
      const key = k as PublicJwk;
      if (!['EC', 'RSA', 'OKP'].includes(key.kty)) {
        throw new ClientConfigError(w, `kty ${key.kty} is not an asymmetric key type`);
      }
      const secret = PRIVATE_MEMBERS.find((m) => key[m] !== undefined);
      if (secret !== undefined) {
        throw new ClientConfigError(
          w,
          `carries the private member "${secret}": register the public key only`,
        );
      }
      return key;
    }),
  };
}

/** The registered clients, by id. */
export class ClientRegistry {
  private readonly byId: Map<string, SmartClient>;

  constructor(clients: readonly SmartClient[]) {
    this.byId = new Map(clients.map((c) => [c.clientId, c]));
  }

  get(clientId: string): SmartClient | undefined {
    return this.byId.get(clientId);
  }

  get size(): number {
    return this.byId.size;
  }
}

/** The clients file of a data directory: `{ "clients": [...] }`; missing means none. */
export async function readClientsFile(path: string): Promise<SmartClient[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new ClientConfigError(path, `cannot be read: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new ClientConfigError(path, 'is not valid JSON');
  }
  return parseClients(doc, path);
}

/**
 * Registers (or replaces, with `replace`) a client in the clients file, atomically (a temporary
 * file renamed over it). The running sidecar reads the file at start.
 */
export async function addClientToFile(
  path: string,
  client: unknown,
  o: { replace?: boolean } = {},
): Promise<SmartClient> {
  const parsed = parseClient(client, 'client');
  const clients = await readClientsFile(path);
  const at = clients.findIndex((c) => c.clientId === parsed.clientId);
  if (at >= 0 && !o.replace) {
    throw new ClientConfigError(
      `client ${parsed.clientId}`,
      'is registered already (use --replace)',
    );
  }
  if (at >= 0) clients[at] = parsed;
  else clients.push(parsed);
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, `${JSON.stringify({ clients }, null, 2)}\n`, { mode: 0o600 });
  await rename(tmp, path);
  return parsed;
}
