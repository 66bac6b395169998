/**
 * `patient register`: a patient registers at this institution (for now through the CLI; the portal
 * comes with issue 6). On the patient's side, from the network's public genesis file:
 *
 * 1. the patient's keys (Umbral PRE key pair, signing key pair) are made and sealed in a key file
 *    under the patient's passphrase (src/crypto/keyfile.ts, kind "patient"); an existing key file
 *    is opened and reused instead, so a registration can be retried. The secrets stay in that file;
 * 2. the idHash of (identifier, birth date) is computed (scrypt, keyed by the network's key);
 * 3. the register tx naming this institution as home is made and signed by the patient
 *    (src/ledger/author.ts makeRegisterTx; it needs only the institution's public keys);
 * 4. the signed tx goes to the sidecar (POST /spchain/patients), which hands it to its node for
 *    the next keyblock; the CLI then waits until the patient's block is pinned.
 *
 * Output names the key file and the patient block, never the identifier.
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { toHex } from '../crypto/bytes.ts';
import { openKeyFileAsync, type ScryptCost, sealKeyFileAsync } from '../crypto/keyfile.ts';
import { generateSigningKey, signingPublicKey } from '../crypto/sign.ts';
import { generateSecretKey, publicKeyOf } from '../crypto/umbral/index.ts';
import { makeRegisterTx, type PatientKeys } from '../ledger/author.ts';
import { computeIdHashAsync, type IdHashCost } from '../ledger/idhash.ts';
import { encodeTx } from '../ledger/tx.ts';
import type { Genesis } from '../ledger/types.ts';
import { parseGenesisFile } from '../node/genesis-file.ts';

export interface RegisterOpts {
  /** `system|value`, e.g. http://hl7.org/fhir/sid/us-ssn|999-82-1755. */
  readonly identifier: string;
  readonly birthDate: string;
  readonly keyFile: string;
  readonly passphrase: string;
  /** The sidecar's base URL, e.g. http://127.0.0.1:8080. */
  readonly sidecar: string;
  readonly token: string;
  /** The network's genesis file (the sidecar's `<data>/network/genesis.json`). */
  readonly genesisFile: string;
  /** The home institution's member index. */
  readonly home: number;
  /** Seconds to wait for the pinned registration (0: do not wait). */
  readonly waitSeconds: number;
  readonly kdf?: ScryptCost;
  readonly idHashCost?: IdHashCost;
  readonly print: (line: string) => void;
}

export interface Registered {
  readonly idHash: string;
  readonly block?: { readonly i: number; readonly j: number };
}

export function parseIdentifier(text: string): { system: string; value: string } {
  const bar = text.indexOf('|');
  if (bar <= 0 || bar === text.length - 1) {
    throw new Error(
      '--identifier must be system|value, e.g. http://hl7.org/fhir/sid/us-ssn|999-82-1755',
    );
  }
  return { system: text.slice(0, bar), value: text.slice(bar + 1) };
}

/** The patient's keys: opened from `path` if it exists, else made and sealed there. */
export async function patientKeys(
  path: string,
  passphrase: string,
  kdf: ScryptCost | undefined,
): Promise<{ keys: PatientKeys; created: boolean }> {
  if (existsSync(path)) {
    const c = await openKeyFileAsync(await readFile(path, 'utf8'), passphrase);
    const pre = c.publicKeys.pre;
    const signingSecret = c.secretKeys.signing;
    if (c.kind !== 'patient' || !pre || !signingSecret) {
      throw new Error(`${path} is not a patient key file (kind ${c.kind})`);
    }
    return {
      keys: { preKey: pre, signingKey: signingPublicKey(signingSecret), signingSecret },
      created: false,
    };
  }
  const preSecret = generateSecretKey();
  const signing = generateSigningKey();
  const keys = {
    preKey: publicKeyOf(preSecret),
    signingKey: signing.publicKey,
    signingSecret: signing.secretKey,
  };
  const sealed = await sealKeyFileAsync({
    kind: 'patient',
    label: 'SPChain patient keys',
    publicKeys: { pre: keys.preKey, signing: keys.signingKey },
    secretKeys: { pre: preSecret, signing: signing.secretKey },
    passphrase,
    ...(kdf ? { kdf } : {}),
  });
  await writeFile(path, sealed, { mode: 0o600, flag: 'wx' });
  return { keys, created: true };
}

export async function registerPatient(o: RegisterOpts): Promise<Registered> {
  const identifier = parseIdentifier(o.identifier);
  if (!/^\d{4}-\d{2}-\d{2}$/.test(o.birthDate)) throw new Error('--birth-date must be YYYY-MM-DD');
  const { genesis } = parseGenesisFile(await readFile(o.genesisFile, 'utf8'), o.genesisFile);
  const home = homeOf(genesis, o.home);
  const { keys, created } = await patientKeys(o.keyFile, o.passphrase, o.kdf);
  o.print(
    created
      ? `keys made and sealed in ${o.keyFile} (keep it: it is the only copy)`
      : `keys read from ${o.keyFile}`,
  );
  const idHash = await computeIdHashAsync(
    genesis.idHashKey,
    { ...identifier, birthDate: o.birthDate },
    o.idHashCost,
  );
  const tx = makeRegisterTx({
    chainId: genesis.chainId,
    idHash,
    home,
    patient: keys,
    fee: genesis.params.minFee,
  });
  const hex = toHex(idHash);
  const base = o.sidecar.replace(/\/+$/, '');
  const headers = { authorization: `Bearer ${o.token}`, 'content-type': 'application/json' };
  const status = await fetchJson(`${base}/spchain/patients/${hex}`, { headers });
  if ((status.body as { registered?: boolean }).registered) {
    const block = (status.body as { block: { i: number; j: number } }).block;
    o.print(`already registered: patient block (${block.i}, ${block.j})`);
    return { idHash: hex, block };
  }
  const sent = await fetchJson(`${base}/spchain/patients`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ registerTx: Buffer.from(encodeTx(tx)).toString('base64') }),
  });
  if (sent.status !== 202)
    throw new Error(`the sidecar refused the registration: ${describe(sent)}`);
  o.print(`registration submitted to institution ${home.index}; idHash ${hex.slice(0, 16)}...`);
  const end = Date.now() + o.waitSeconds * 1000;
  while (Date.now() < end) {
    await new Promise((r) => setTimeout(r, 1000));
    const s = await fetchJson(`${base}/spchain/patients/${hex}`, { headers });
    const b = s.body as { registered?: boolean; block?: { i: number; j: number } };
    if (b.registered && b.block) {
      o.print(`registered: patient block (${b.block.i}, ${b.block.j}) is pinned`);
      return { idHash: hex, block: b.block };
    }
  }
  if (o.waitSeconds > 0)
    o.print(`not pinned after ${o.waitSeconds} s: run the same command again later to check`);
  return { idHash: hex };
}

function homeOf(genesis: Genesis, index: number) {
  const m = genesis.members.find((x) => x.index === index);
  if (!m) throw new Error(`institution ${index} is not a member of ${genesis.chainId}`);
  return { index: m.index, chameleonKey: m.chameleonKey };
}

/** A JSON request to a sidecar; an unreachable one is an error naming its origin. */
export async function fetchJson(
  url: string,
  init: RequestInit,
): Promise<{ status: number; body: unknown }> {
  let res: Response;
  try {
    res = await fetch(url, init);
  } catch (err) {
    throw new Error(
      `cannot reach the sidecar at ${new URL(url).origin}: ${(err as Error).message}`,
    );
  }
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: kept as text
  }
  return { status: res.status, body };
}

/** An answer's status and its OperationOutcome's texts, for messages. */
export function describe(r: { status: number; body: unknown }): string {
  const issues = (r.body as { issue?: { details?: { text?: string } }[] })?.issue;
  const text = issues?.map((i) => i.details?.text).join('; ');
  return `HTTP ${r.status}${text ? `: ${text}` : ''}`;
}

/** The sidecar's data directory layout the CLI reads (src/http/sidecar.ts makes it). */
export function dataPaths(dataDir: string) {
  return {
    genesis: join(dataDir, 'network', 'genesis.json'),
    config: join(dataDir, 'network', 'inst-0', 'config.json'),
    token: join(dataDir, 'ehr-token'),
  };
}
