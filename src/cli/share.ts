/**
 * What a patient does from their own device about sharing (the CLI for now; the portal of issue 6
 * will do the same in the browser). Every signature and the kfrag are made here, from the
 * patient's key file; the secrets never leave it. From the network's public genesis file come
 * the chain id and the institutions' public keys.
 *
 * - `allowUpload`: the patient's upload grant for institution B (ledger/tx.ts signGrant) goes to
 *   the home institution's sidecar (`POST /spchain/leaves`), which adds B's leaf to the patient's
 *   block; then B may write the patient's records. Waits until the leaf is pinned.
 * - `grantAccess`: a grant for institution D (authz/grant.ts makeGrant: a FHIR Consent signed by
 *   the patient, and a kfrag from the patient's PRE key to D's) goes to every holder of the
 *   patient's records (`POST /spchain/grants`). Before sending anything, each holder is asked who
 *   it is (`GET /spchain/institution`): a holder on another network, or D itself, stops the
 *   grant (the kfrag must never reach D: with D's secret key it yields the patient's).
 * - `revokeAccess`: the patient's signed revocation of a Consent goes to the holders
 *   (`POST /spchain/revocations`); they re-encrypt nothing under it from then on.
 *
 * Output names institutions, Consent ids and the idHash prefix, never the patient's identifier.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { parseFhirDateTime, revocationToJson, signRevocation } from '../authz/consent.ts';
import { grantToJson, makeGrant } from '../authz/grant.ts';
import { fromHex, toHex } from '../crypto/bytes.ts';
import { openKeyFileAsync } from '../crypto/keyfile.ts';
import { signingPublicKey } from '../crypto/sign.ts';
import { computeIdHashAsync, type IdHashCost } from '../ledger/idhash.ts';
import { signGrant } from '../ledger/tx.ts';
import type { Bytes, Genesis, Member } from '../ledger/types.ts';
import { parseGenesisFile } from '../node/genesis-file.ts';
import { describe, fetchJson, parseIdentifier } from './patient.ts';

/** The patient's keys, opened from their key file. */
export interface PatientSecrets {
  readonly preKey: Bytes;
  readonly preSecret: Bytes;
  readonly signingKey: Bytes;
  readonly signingSecret: Bytes;
}

export async function openPatientKeys(path: string, passphrase: string): Promise<PatientSecrets> {
  if (!existsSync(path)) throw new Error(`no key file at ${path} (register the patient first)`);
  const c = await openKeyFileAsync(await readFile(path, 'utf8'), passphrase);
  const { pre: preKey } = c.publicKeys;
  const { pre: preSecret, signing: signingSecret } = c.secretKeys;
  if (c.kind !== 'patient' || !preKey || !preSecret || !signingSecret) {
    throw new Error(`${path} is not a patient key file (kind ${c.kind})`);
  }
  return { preKey, preSecret, signingKey: signingPublicKey(signingSecret), signingSecret };
}

export async function readGenesis(path: string): Promise<Genesis> {
  const text = await readFile(path, 'utf8').catch(() => {
    throw new Error(`no genesis file at ${path}`);
  });
  return parseGenesisFile(text, path).genesis;
}

/** The patient's idHash: given as hex, or computed from identifier and birth date. */
export async function patientIdHash(o: {
  readonly idHash?: string;
  readonly identifier?: string;
  readonly birthDate?: string;
  readonly genesis: Pick<Genesis, 'idHashKey'>;
  readonly cost?: IdHashCost;
}): Promise<Bytes> {
  if (o.idHash !== undefined) {
    if (!/^[0-9a-f]{64}$/.test(o.idHash)) throw new Error('--id-hash must be 64 lowercase hex');
    return fromHex(o.idHash, 'idHash');
  }
  if (o.identifier === undefined || o.birthDate === undefined) {
    throw new Error('name the patient: --identifier system|value and --birth-date, or --id-hash');
  }
  if (!/^\d{4}-\d{2}-\d{2}$/.test(o.birthDate)) throw new Error('--birth-date must be YYYY-MM-DD');
  return computeIdHashAsync(
    o.genesis.idHashKey,
    { ...parseIdentifier(o.identifier), birthDate: o.birthDate },
    o.cost,
  );
}

/** A member by index (`2`) or name (`hospital-2`). */
export function memberOf(genesis: Pick<Genesis, 'members' | 'chainId'>, which: string): Member {
  const m = /^\d+$/.test(which)
    ? genesis.members.find((x) => x.index === Number(which))
    : genesis.members.find((x) => x.name === which);
  if (m === undefined) {
    throw new Error(`institution ${which} is not a member of ${genesis.chainId}`);
  }
  return m;
}

/**
 * A member by index or name: from the genesis file, else (an institution admitted since) as the
 * first of `sidecars` that answers lists it (GET /spchain/institutions, from its node's pinned
 * chain: what the patient portal reads too). A sidecar of another network is an error.
 */
export async function resolveMember(
  genesis: Pick<Genesis, 'members' | 'chainId'>,
  which: string,
  sidecars: readonly string[],
  print: Print,
): Promise<Member> {
  try {
    return memberOf(genesis, which);
  } catch (err) {
    if (sidecars.length === 0) throw err;
  }
  for (const url of sidecars) {
    const r = await fetchJson(`${baseUrl(url)}/spchain/institutions`, { method: 'GET' }).catch(
      () => undefined,
    );
    if (r?.status !== 200) continue;
    const body = r.body as { chainId?: unknown; institutions?: unknown };
    if (body.chainId !== genesis.chainId) {
      throw new Error(
        `${url} is a sidecar of network ${String(body.chainId)}, not ${genesis.chainId}`,
      );
    }
    const listed = Array.isArray(body.institutions) ? body.institutions : [];
    const found = listed.find((m: { index?: unknown; name?: unknown }) =>
      /^\d+$/.test(which) ? m.index === Number(which) : m.name === which,
    ) as Record<string, unknown> | undefined;
    if (found === undefined) continue;
    const key = (k: string) => {
      const hex = found[k];
      if (typeof hex !== 'string' || !/^[0-9a-f]{66}$/.test(hex)) {
        throw new Error(`${url} lists institution ${which} with a malformed ${k}`);
      }
      return fromHex(hex);
    };
    const member: Member = {
      index: Number(found.index),
      name: String(found.name),
      signingKey: key('signingKey'),
      chameleonKey: key('chameleonKey'),
      preKey: key('preKey'),
    };
    print(
      `${member.name} (member ${member.index}) joined after the genesis file: its keys as ${baseUrl(url)} lists them`,
    );
    return member;
  }
  throw new Error(
    `institution ${which} is neither in the genesis file of ${genesis.chainId} nor listed by ${sidecars.join(', ')}`,
  );
}

/** A base URL without its trailing slashes. */
export const baseUrl = (url: string) => url.replace(/\/+$/, '');
const JSON_HEADERS = { 'content-type': 'application/json' };

export type Print = (line: string) => void;

/** The home institution adds `institution`'s leaf under the patient's signed upload grant. */
export async function allowUpload(o: {
  readonly genesis: Pick<Genesis, 'chainId' | 'members'>;
  readonly keys: Pick<PatientSecrets, 'signingSecret'>;
  readonly idHash: Bytes;
  readonly institution: Member;
  /** The home institution's sidecar, e.g. http://127.0.0.1:8080. */
  readonly home: string;
  readonly waitSeconds: number;
  readonly print: Print;
}): Promise<'present' | 'pending'> {
  const grant = signGrant(o.genesis.chainId, o.idHash, o.institution.index, o.keys.signingSecret);
  const body = JSON.stringify({
    idHash: toHex(o.idHash),
    institution: o.institution.index,
    grant: toHex(grant),
  });
  const url = `${baseUrl(o.home)}/spchain/leaves`;
  const end = Date.now() + o.waitSeconds * 1000;
  let said = false;
  for (;;) {
    const r = await fetchJson(url, { method: 'POST', headers: JSON_HEADERS, body });
    const retry = r.status === 409 || r.status === 503;
    if (r.status !== 200 && r.status !== 202 && !retry) {
      throw new Error(`the home institution refused the upload grant: ${describe(r)}`);
    }
    const state = (r.body as { state?: string }).state;
    if (state === 'present') {
      o.print(`${o.institution.name} may now upload records of this patient (its leaf is pinned)`);
      return 'present';
    }
    if (!said && !retry) {
      o.print(
        `upload grant for ${o.institution.name} submitted; waiting for its leaf to be pinned`,
      );
      said = true;
    }
    if (Date.now() >= end) {
      if (retry) throw new Error(`the home institution is busy: ${describe(r)}`);
      o.print(`not pinned after ${o.waitSeconds} s: run the same command again later to check`);
      return 'pending';
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** Who a sidecar says it is (public). */
export async function identify(
  url: string,
): Promise<{ chainId: string; index: number; name: string }> {
  const r = await fetchJson(`${baseUrl(url)}/spchain/institution`, {});
  const b = r.body as { chainId?: unknown; index?: unknown; name?: unknown };
  if (r.status !== 200 || typeof b.chainId !== 'string' || typeof b.index !== 'number') {
    throw new Error(`${new URL(url).origin} does not say which institution it is: ${describe(r)}`);
  }
  return { chainId: b.chainId, index: b.index, name: String(b.name) };
}

/** The holders as they identify themselves, refusing the grantee and other networks. */
async function checkHolders(
  holders: readonly string[],
  chainId: string,
  grantee: number | undefined,
): Promise<{ url: string; index: number; name: string }[]> {
  if (holders.length === 0) throw new Error('name at least one holder (--holder URL)');
  const out = [];
  for (const url of holders) {
    const who = await identify(url);
    if (who.chainId !== chainId) {
      throw new Error(`${url} is on network ${who.chainId}, not ${chainId}: nothing was sent`);
    }
    if (who.index === grantee) {
      throw new Error(
        `${url} is ${who.name}, the grantee itself: a grant goes only to the holders of the records (nothing was sent)`,
      );
    }
    out.push({ url, index: who.index, name: who.name });
  }
  return out;
}

export interface Delivery {
  readonly holder: string;
  readonly ok: boolean;
  readonly status: number;
  readonly detail: string;
}

/** Makes the grant for `grantee` and delivers it to every holder. */
export async function grantAccess(o: {
  readonly genesis: Pick<Genesis, 'chainId' | 'members'>;
  readonly keys: PatientSecrets;
  readonly idHash: Bytes;
  readonly grantee: Member;
  /** ms; default now less 5 minutes (for clocks a little behind). */
  readonly start?: number;
  readonly end: number;
  readonly holders: readonly string[];
  readonly consentId?: string;
  readonly now?: number;
  readonly print: Print;
}): Promise<{ consentId: string; deliveries: Delivery[] }> {
  const now = o.now ?? Date.now();
  const holders = await checkHolders(o.holders, o.genesis.chainId, o.grantee.index);
  const consentId = o.consentId ?? `consent-${randomBytes(8).toString('hex')}`;
  const grant = makeGrant({
    chainId: o.genesis.chainId,
    idHash: o.idHash,
    patientPreSecret: o.keys.preSecret,
    patientSigningSecret: o.keys.signingSecret,
    grantee: { index: o.grantee.index, preKey: o.grantee.preKey, name: o.grantee.name },
    consentId,
    start: o.start ?? now - 5 * 60_000,
    end: o.end,
    now,
  });
  const body = JSON.stringify(grantToJson(grant));
  const deliveries: Delivery[] = [];
  for (const h of holders) {
    const r = await fetchJson(`${baseUrl(h.url)}/spchain/grants`, {
      method: 'POST',
      headers: JSON_HEADERS,
      body,
    });
    const ok = r.status === 201 || r.status === 200;
    deliveries.push({ holder: h.name, ok, status: r.status, detail: describe(r) });
    o.print(
      ok
        ? `grant ${consentId} for ${o.grantee.name} kept by ${h.name}`
        : `grant ${consentId} refused by ${h.name}: ${describe(r)}`,
    );
  }
  return { consentId, deliveries };
}

/** Sends the patient's signed revocation of `consentId` to every holder. */
export async function revokeAccess(o: {
  readonly genesis: Pick<Genesis, 'chainId'>;
  readonly keys: Pick<PatientSecrets, 'signingSecret'>;
  readonly idHash: Bytes;
  readonly consentId: string;
  readonly holders: readonly string[];
  readonly print: Print;
}): Promise<Delivery[]> {
  const holders = await checkHolders(o.holders, o.genesis.chainId, undefined);
  const revocation = signRevocation(o.genesis.chainId, o.idHash, o.consentId, o.keys.signingSecret);
  const body = JSON.stringify(revocationToJson(revocation));
  const out: Delivery[] = [];
  for (const h of holders) {
    const r = await fetchJson(`${baseUrl(h.url)}/spchain/revocations`, {
      method: 'POST',
      headers: JSON_HEADERS,
      body,
    });
    const ok = r.status === 200;
    out.push({ holder: h.name, ok, status: r.status, detail: describe(r) });
    o.print(
      ok
        ? `consent ${o.consentId} revoked at ${h.name}`
        : `revocation refused by ${h.name}: ${describe(r)}`,
    );
  }
  return out;
}

/** A date (YYYY-MM-DD: the whole day) or dateTime as ms; `end` includes the whole day. */
export function parseWhen(text: string, name: string, end: boolean): number {
  const ms = parseFhirDateTime(text, end);
  if (ms === undefined) {
    throw new Error(`${name} must be a date (YYYY-MM-DD) or a date-time with a time zone`);
  }
  return ms;
}
