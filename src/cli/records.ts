/**
 * What the patient reads about themselves from the command line, as the portal shows it:
 *
 * - `listRecords`: the patient's records held at each sidecar (`GET /spchain/patients/:idHash/
 *   records`, paged), as stored ciphertext decrypted here with the PRE secret of the key file
 *   (Umbral decryptOriginal of the record's own capsule). One line per record (type/id, version,
 *   kind, anchoring, a short summary from its code), or the decrypted resources written to a
 *   directory as JSON files readable by the owner only.
 * - `showAudit`: who read or wrote what about the patient at each sidecar (`.../audit`).
 * - `showInstitutions`: the network's institutions with reputation and consensus group (public).
 *
 * The two patient routes are signed per request (authz/patient-request.ts) with the signing key
 * of the key file. Output never shows the patient's identifier, name nor birth date: summaries
 * come from codes, and the patient's own reference is shown as "you".
 */
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AuditEvent, Bundle, Consent } from '@medplum/fhirtypes';
import { PATIENT_REQUEST_HEADER, signPatientRequest } from '../authz/patient-request.ts';
import { toHex } from '../crypto/bytes.ts';
import { decodeCapsule, decryptOriginal } from '../crypto/umbral/index.ts';
import type { Bytes } from '../ledger/types.ts';
import { describe, fetchJson } from './patient.ts';
import { baseUrl, identify, type PatientSecrets, type Print } from './share.ts';

/** Who signs the patient's requests, on which network. */
export interface PatientSession {
  readonly chainId: string;
  readonly idHash: Bytes;
  readonly keys: Pick<PatientSecrets, 'preSecret' | 'signingSecret'>;
}

/** A GET signed as the patient (x-spchain-patient). */
export async function signedGet(
  base: string,
  path: string,
  s: PatientSession,
): Promise<{ status: number; body: unknown }> {
  const header = signPatientRequest({
    chainId: s.chainId,
    method: 'GET',
    path,
    ts: Date.now(),
    idHash: s.idHash,
    signingSecret: s.keys.signingSecret,
  });
  return fetchJson(`${baseUrl(base)}${path}`, { headers: { [PATIENT_REQUEST_HEADER]: header } });
}

/** A sidecar as it says who it is, refused when it is on another network. */
async function sidecarOn(url: string, chainId: string) {
  const who = await identify(url);
  if (who.chainId !== chainId) {
    throw new Error(`${baseUrl(url)} is on network ${who.chainId}, not ${chainId}`);
  }
  return who;
}

// ---------------------------------------------------------------------------------------------
// Records

/** A record as GET /spchain/patients/:idHash/records lists it (http/patient-routes.ts). */
export interface StoredRecord {
  readonly resourceType: string;
  readonly id: string;
  readonly version: string;
  readonly kind: string;
  readonly capsule: string;
  readonly ciphertext: string;
  readonly anchoring?: { readonly state?: string; readonly batch?: number };
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json | undefined =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : undefined;
const str = (v: unknown): string | undefined =>
  typeof v === 'string' && v.trim() !== '' ? v.trim() : undefined;

const FHIR_TYPE = /^[A-Z][A-Za-z]{0,63}$/;
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const VERSION = /^[A-Za-z0-9\-.]{1,64}$/;
const B64 = /^[A-Za-z0-9+/]*={0,2}$/;
const MAX_PAGES = 10_000;

function checkRecord(v: unknown): StoredRecord {
  const r = obj(v);
  const ok =
    r !== undefined &&
    typeof r.resourceType === 'string' &&
    FHIR_TYPE.test(r.resourceType) &&
    typeof r.id === 'string' &&
    FHIR_ID.test(r.id) &&
    typeof r.version === 'string' &&
    VERSION.test(r.version) &&
    typeof r.kind === 'string' &&
    typeof r.capsule === 'string' &&
    B64.test(r.capsule) &&
    typeof r.ciphertext === 'string' &&
    B64.test(r.ciphertext);
  if (!ok) throw new Error('the sidecar answered a record that is not well formed');
  return r as unknown as StoredRecord;
}

/** Every record of the patient held at `url`, following the `next` cursor. */
export async function fetchRecords(url: string, s: PatientSession): Promise<StoredRecord[]> {
  const hex = toHex(s.idHash);
  const out: StoredRecord[] = [];
  let after: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    const query = `count=200${after === undefined ? '' : `&after=${encodeURIComponent(after)}`}`;
    const r = await signedGet(url, `/spchain/patients/${hex}/records?${query}`, s);
    if (r.status !== 200) throw new Error(`${baseUrl(url)} refused: ${describe(r)}`);
    const body = obj(r.body);
    if (body === undefined || !Array.isArray(body.records)) {
      throw new Error(`${baseUrl(url)} did not answer a page of records`);
    }
    out.push(...body.records.map(checkRecord));
    if (typeof body.next !== 'string') return out;
    after = body.next;
  }
  throw new Error(`${baseUrl(url)} kept answering more pages of records`);
}

export type Decrypted =
  | { readonly ok: true; readonly resource: Json }
  | { readonly ok: false; readonly problem: string };

/** The record's own resource, decrypted with the patient's PRE secret; a failure says why. */
export function decryptRecord(preSecret: Bytes, record: StoredRecord): Decrypted {
  let plain: Uint8Array;
  try {
    plain = decryptOriginal(
      preSecret,
      decodeCapsule(Buffer.from(record.capsule, 'base64')),
      Buffer.from(record.ciphertext, 'base64'),
    );
  } catch (err) {
    return { ok: false, problem: `does not decrypt with your key (${(err as Error).message})` };
  }
  let content: Json | undefined;
  try {
    content = obj(JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(plain)));
  } catch {
    content = undefined;
  } finally {
    plain.fill(0);
  }
  if (content === undefined) return { ok: false, problem: 'is not FHIR JSON' };
  return { ok: true, resource: recordResource(content, record) };
}

/**
 * The record's resource in its decrypted content: the content itself, or the entry with the
 * record's type and id of the collection Bundle the mapping stores a record in with its context.
 */
export function recordResource(content: Json, r: Pick<StoredRecord, 'resourceType' | 'id'>) {
  if (content.resourceType !== 'Bundle' || r.resourceType === 'Bundle') return content;
  const entries = Array.isArray(content.entry) ? content.entry : [];
  const inside = entries.map((e) => obj(obj(e)?.resource)).filter((x) => x !== undefined);
  return inside.find((x) => x.resourceType === r.resourceType && x.id === r.id) ?? content;
}

/** A CodeableConcept's text, else its first coding's display, else its first code. */
function conceptText(value: unknown): string | undefined {
  const c = obj(Array.isArray(value) ? value[0] : value);
  if (c === undefined) return undefined;
  const codings = Array.isArray(c.coding) ? c.coding.map(obj) : [];
  return (
    str(c.text) ??
    codings.map((x) => str(x?.display)).find((d) => d !== undefined) ??
    codings.map((x) => str(x?.code)).find((d) => d !== undefined)
  );
}

/**
 * A short summary from the resource's code (text or display) and value: never a name, an
 * identifier or an address, whatever the resource type.
 */
export function summarise(resource: Json): string {
  const what =
    conceptText(resource.code) ??
    conceptText(resource.medicationCodeableConcept) ??
    conceptText(resource.vaccineCode) ??
    conceptText(resource.type) ??
    conceptText(resource.category);
  const q = obj(resource.valueQuantity);
  const value =
    q !== undefined && typeof q.value === 'number'
      ? `${q.value}${str(q.unit) ? ` ${str(q.unit)}` : ''}`
      : conceptText(resource.valueCodeableConcept);
  const when =
    str(resource.effectiveDateTime) ??
    str(resource.onsetDateTime) ??
    str(resource.authoredOn) ??
    str(resource.occurrenceDateTime) ??
    str(obj(resource.period)?.start);
  const head = [what, value].filter(Boolean).join(': ');
  return [head, when ? `(${when})` : ''].filter(Boolean).join(' ') || '-';
}

function anchoringText(a: StoredRecord['anchoring']): string {
  const state = str(a?.state) ?? 'unknown';
  return state === 'pinned' && typeof a?.batch === 'number' ? `pinned@${a.batch}` : state;
}

/**
 * Prints (or, with `out`, writes) the patient's records at each sidecar. Returns whether every
 * sidecar answered and every record decrypted.
 */
export async function listRecords(o: {
  readonly sidecars: readonly string[];
  readonly session: PatientSession;
  /** A directory for the decrypted resources (created, mode 0700), instead of summaries. */
  readonly out?: string;
  readonly print: Print;
}): Promise<{ ok: boolean; records: number }> {
  let ok = true;
  let count = 0;
  if (o.out !== undefined) await mkdir(o.out, { recursive: true, mode: 0o700 });
  for (const url of o.sidecars) {
    const who = await sidecarOn(url, o.session.chainId);
    let records: StoredRecord[];
    try {
      records = await fetchRecords(url, o.session);
    } catch (err) {
      o.print(`${who.name}: ${(err as Error).message}`);
      ok = false;
      continue;
    }
    o.print(`${who.name} (${baseUrl(url)}): ${records.length} record(s)`);
    for (const r of records) {
      const label = `${r.resourceType}/${r.id} v${r.version}`;
      const d = decryptRecord(o.session.keys.preSecret, r);
      if (!d.ok) {
        o.print(`  ${label} ${r.kind}: ${d.problem}`);
        ok = false;
        continue;
      }
      count++;
      if (o.out === undefined) {
        o.print(`  ${label} ${r.kind} ${anchoringText(r.anchoring)} ${summarise(d.resource)}`);
        continue;
      }
      // Type, id and version were checked against FHIR's id syntax: no path separators.
      const file = join(o.out, `${who.index}-${r.resourceType}-${r.id}-v${r.version}.json`);
      await writeFile(file, `${JSON.stringify(d.resource, null, 2)}\n`, { mode: 0o600 });
      await chmod(file, 0o600);
      o.print(`  ${label} ${r.kind} -> ${file}`);
    }
  }
  return { ok, records: count };
}

// ---------------------------------------------------------------------------------------------
// Audit

/** One line of an AuditEvent: date, agent, action, entities (the patient's own as "you"). */
export function auditLine(e: AuditEvent, idHash: string): string {
  const agent = e.agent?.[0];
  const who = agent?.who?.identifier?.value ?? agent?.who?.display ?? 'unknown';
  const how = agent?.policy?.[0]?.replace(/^urn:spchain:authorisation:/, '');
  const action = e.subtype?.[0]?.code ?? e.action ?? '?';
  const failed = e.outcome !== undefined && e.outcome !== '0' ? ' FAILED' : '';
  const entities = (e.entity ?? [])
    .map((x) => x.what?.reference)
    .filter((r): r is string => r !== undefined)
    .map((r) => (r === `Patient/${idHash}` ? 'you' : r));
  return `${e.recorded ?? '?'}  ${who}${how ? ` (${how})` : ''}  ${action}${failed}  ${
    entities.length > 0 ? entities.join(', ') : '-'
  }`;
}

interface PatientView {
  readonly sidecars: readonly string[];
  readonly session: PatientSession;
  readonly print: Print;
}

/**
 * Asks each sidecar for `path` (under /spchain/patients/{idHash}) with the patient's signed
 * request and prints what `show` makes of an answer; an answer it cannot read (undefined) is
 * printed as a refusal. True when every sidecar answered.
 */
async function eachSidecar<T>(
  o: PatientView,
  path: string,
  read: (body: unknown) => T | undefined,
  show: (value: T, heading: string, hex: string) => void,
): Promise<boolean> {
  const hex = toHex(o.session.idHash);
  let ok = true;
  for (const url of o.sidecars) {
    const who = await sidecarOn(url, o.session.chainId);
    const r = await signedGet(url, `/spchain/patients/${hex}${path}`, o.session);
    const value = r.status === 200 ? read(r.body) : undefined;
    if (value === undefined) {
      o.print(`${who.name}: refused: ${describe(r)}`);
      ok = false;
      continue;
    }
    show(value, `${who.name} (${baseUrl(url)})`, hex);
  }
  return ok;
}

/** Prints who read or wrote what about the patient at each sidecar, newest first. */
export function showAudit(o: PatientView): Promise<boolean> {
  return eachSidecar(
    o,
    '/audit?count=100',
    (body) => ((body as Bundle)?.resourceType === 'Bundle' ? (body as Bundle) : undefined),
    (bundle, heading, hex) => {
      const events = (bundle.entry ?? [])
        .map((x) => x.resource)
        .filter((x): x is AuditEvent => x?.resourceType === 'AuditEvent');
      o.print(`${heading}: ${events.length} event(s), newest first`);
      for (const e of events) o.print(`  ${auditLine(e, hex)}`);
    },
  );
}

type HeldConsent = { id: string; state: string; consent: Consent | null };

/** Prints the patient's grants each sidecar holds: Consent id, grantee, period, state now. */
export function showConsents(o: PatientView): Promise<boolean> {
  return eachSidecar(
    o,
    '/consents',
    (body) => {
      const list = (body as { consents?: unknown })?.consents;
      return Array.isArray(list) ? (list as HeldConsent[]) : undefined;
    },
    (list, heading) => {
      o.print(`${heading}: ${list.length} consent(s)`);
      for (const c of list) {
        const provision = c.consent?.provision;
        const actor = provision?.actor?.[0]?.reference?.identifier?.value;
        const period = provision?.period;
        o.print(
          `  ${c.id}  ${c.state}${actor === undefined ? '' : `  institution ${actor}`}${
            period ? `  ${period.start ?? '?'} .. ${period.end ?? '?'}` : ''
          }`,
        );
      }
    },
  );
}

// ---------------------------------------------------------------------------------------------
// Institutions

export interface InstitutionRow {
  readonly index: number;
  readonly name: string;
  readonly reputation: number;
  readonly inGroup: boolean;
  readonly url?: string;
  /** Whether the asked sidecar's node is connected to it now (absent for itself, or unknown). */
  readonly connected?: boolean;
}

/** The network's institutions as a sidecar lists them (public). */
export async function showInstitutions(o: {
  readonly sidecar: string;
  readonly print: Print;
}): Promise<InstitutionRow[]> {
  const r = await fetchJson(`${baseUrl(o.sidecar)}/spchain/institutions`, {});
  const b = obj(r.body);
  if (r.status !== 200 || b === undefined || !Array.isArray(b.institutions)) {
    throw new Error(`${baseUrl(o.sidecar)} did not list the institutions: ${describe(r)}`);
  }
  const rows = b.institutions.map((v): InstitutionRow => {
    const x = obj(v) ?? {};
    return {
      index: Number(x.index),
      name: String(x.name),
      reputation: typeof x.reputation === 'number' ? x.reputation : 0,
      inGroup: x.inGroup === true,
      ...(typeof x.url === 'string' ? { url: x.url } : {}),
      ...(typeof x.connected === 'boolean' ? { connected: x.connected } : {}),
    };
  });
  o.print(`network ${String(b.chainId)}, as ${baseUrl(o.sidecar)} sees it (* = this sidecar):`);
  o.print('  index  name  reputation  group  url  peer');
  for (const x of rows) {
    const self = x.index === b.self ? '*' : ' ';
    const peer = x.connected === undefined ? '' : x.connected ? '  connected' : '  not connected';
    o.print(
      `${self} ${x.index}  ${x.name}  ${x.reputation.toFixed(3)}  ${x.inGroup ? 'in group' : '-'}  ${x.url ?? '-'}${peer}`,
    );
  }
  return rows;
}
