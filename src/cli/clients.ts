/**
 * `clients add` and `clients list`: the SMART clients of a sidecar (issue 6 part 2), kept in its
 * data directory's `smart-clients.json` (src/http/sidecar.ts smartPaths), which the sidecar reads
 * at start. A client file is one client as src/smart/clients.ts parseClient checks it: a `public`
 * app with its exact redirect URIs, or a `backend` service with its public JWK Set (and optionally
 * the network member it acts for). A bad field is refused with its name; nothing is written then.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  addClientToFile,
  ClientConfigError,
  parseClient,
  readClientsFile,
  type SmartClient,
} from '../smart/clients.ts';
import type { Print } from './share.ts';

/** As src/http/sidecar.ts smartPaths names it. */
export const clientsFile = (dataDir: string) => join(dataDir, 'smart-clients.json');

function describeClient(c: SmartClient): string {
  const parts = [`${c.kind} client ${c.clientId} ("${c.name}")`, `scope ${c.scope}`];
  if (c.redirectUris.length > 0) parts.push(`redirect ${c.redirectUris.join(' ')}`);
  if (c.jwks !== undefined) parts.push(`${c.jwks.keys.length} public key(s)`);
  if (c.institution !== undefined) parts.push(`for institution ${c.institution}`);
  return parts.join(', ');
}

function checkDataDir(dataDir: string): void {
  if (!existsSync(dataDir)) throw new Error(`no data directory at ${dataDir}`);
}

/** Registers the client of `clientFile` in the data directory's clients file. */
export async function addClient(o: {
  readonly dataDir: string;
  readonly clientFile: string;
  readonly replace: boolean;
  readonly print: Print;
}): Promise<SmartClient> {
  checkDataDir(o.dataDir);
  const text = await readFile(o.clientFile, 'utf8').catch(() => {
    throw new Error(`cannot read the client file ${o.clientFile}`);
  });
  let client: unknown;
  try {
    client = JSON.parse(text);
  } catch {
    throw new Error(`${o.clientFile} is not JSON`);
  }
  const path = clientsFile(o.dataDir);
  try {
    parseClient(client, 'client');
  } catch (err) {
    // The message names the field (`client.redirectUris: ...`); say which file it is from.
    if (err instanceof ClientConfigError) throw new Error(`${o.clientFile}: ${err.message}`);
    throw err;
  }
  const added = await addClientToFile(path, client, { replace: o.replace });
  o.print(`registered ${describeClient(added)} in ${path}`);
  o.print('the sidecar reads this file at start: restart it to use the client');
  return added;
}

/** Prints the clients registered in the data directory. */
export async function listClients(o: {
  readonly dataDir: string;
  readonly print: Print;
}): Promise<SmartClient[]> {
  checkDataDir(o.dataDir);
  const path = clientsFile(o.dataDir);
  const clients = await readClientsFile(path);
  o.print(`${clients.length} SMART client(s) in ${path}`);
  for (const c of clients) o.print(`  ${describeClient(c)}`);
  return clients;
}
