/**
 * The patient's consent to share: a FHIR R4 Consent, signed by the patient (a detached signature
 * over its RFC 8785 canonical JSON, `canonicalize`), and the patient's signed revocation of one.
 *
 * The Consent this project makes and accepts (and nothing looser, so what is signed is what is
 * enforced):
 *   resourceType  "Consent", id a FHIR id (the grant's name: revocations name it)
 *   status        active | inactive | ... (only `active` permits; any other status revokes)
 *   scope         consentscope#patient-privacy
 *   category      LOINC 59284-0 (Patient consent)
 *   patient       { identifier: { system: "urn:spchain:idhash", value: <idHash, 64 hex> } }
 *   policyRule    v3-ActCode#OPTIN (R4 invariant ppc-1 wants a policy or a policyRule)
 *   provision     { type: "permit", period: { start, end },
 *                   actor: [ exactly one: role v3-ParticipationType#IRCP, reference.identifier
 *                            { system: "urn:spchain:institution", value: <member index> } ],
 *                   action: [ consentaction#access ] }
 * Narrower provisions (class, code, data, dataPeriod, securityLabel, purpose, nested provisions)
 * are refused rather than ignored: a grant covers all of the patient's records, and a restriction
 * this code did not enforce must not look accepted.
 *
 * Period: FHIR dateTime at day precision or finer with a time zone; [start, end) in milliseconds,
 * a day-precision end meaning the whole of that day (UTC).
 *
 * Signature: sign(patientSigningSecret, "spchain/consent", encode(chainId, canonical JSON)); the
 * key is the one the patient's pinned register tx names. Pure: no IO, no clock, randomness passed in.
 */
import type { Consent } from '@medplum/fhirtypes';
import canonicalize from 'canonicalize';
import { fromHex, toHex, utf8 } from '../crypto/bytes.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { sign, verify } from '../crypto/sign.ts';
import { encode } from '../ledger/codec.ts';
import { HASH_BYTES } from '../ledger/hash.ts';
import type { Bytes, InstitutionIndex } from '../ledger/types.ts';
import { AuthzError } from './errors.ts';

export const CONSENT_DOMAINS = {
  consent: 'spchain/consent',
  revoke: 'spchain/consent-revoke',
} as const;

export const CONSENT_SYSTEMS = {
  scope: 'http://terminology.hl7.org/CodeSystem/consentscope',
  category: 'http://loinc.org',
  policyRule: 'http://terminology.hl7.org/CodeSystem/v3-ActCode',
  actorRole: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType',
  action: 'http://terminology.hl7.org/CodeSystem/consentaction',
  idHash: 'urn:spchain:idhash',
  institution: 'urn:spchain:institution',
} as const;

export const CONSENT_STATUSES = [
  'draft',
  'proposed',
  'active',
  'rejected',
  'inactive',
  'entered-in-error',
] as const;
export type ConsentStatus = (typeof CONSENT_STATUSES)[number];

/** Largest canonical Consent accepted (ours are about 900 bytes). */
export const MAX_CONSENT_BYTES = 16 * 1024;
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const MAX_INSTITUTION = 0xffff;
const DAY_MS = 86_400_000;

/** What a checked Consent says, in the terms the decisions use. */
export interface ParsedConsent {
  readonly id: string;
  readonly status: ConsentStatus;
  readonly idHash: Bytes;
  /** The one institution the provision permits. */
  readonly grantee: InstitutionIndex;
  /** [start, end) in milliseconds since the epoch. */
  readonly start: number;
  readonly end: number;
}

export type ConsentJson = Readonly<Record<string, unknown>>;

export interface ConsentDraft {
  readonly id: string;
  readonly idHash: Bytes;
  readonly grantee: InstitutionIndex;
  /** The grantee's name, shown to people (not checked). */
  readonly granteeName?: string;
  readonly start: number;
  readonly end: number;
  /** When the patient made it (ms). */
  readonly dateTime: number;
  readonly status?: ConsentStatus;
}

const coding = (system: string, code: string) => ({ coding: [{ system, code }] });

/** The Consent of a grant, as the patient's device makes it. */
export function makeConsent(d: ConsentDraft): Consent {
  if (!FHIR_ID.test(d.id)) throw new AuthzError('INVALID_ARGUMENT', 'consent id must be a FHIR id');
  if (!(d.idHash instanceof Uint8Array) || d.idHash.length !== HASH_BYTES) {
    throw new AuthzError('INVALID_ARGUMENT', `idHash must be ${HASH_BYTES} bytes`);
  }
  if (!Number.isInteger(d.grantee) || d.grantee < 0 || d.grantee > MAX_INSTITUTION) {
    throw new AuthzError('INVALID_ARGUMENT', 'grantee must be a member index (0-65535)');
  }
  for (const [name, ms] of [
    ['start', d.start],
    ['end', d.end],
    ['dateTime', d.dateTime],
  ] as const) {
    if (!Number.isSafeInteger(ms) || Number.isNaN(new Date(ms).getTime())) {
      throw new AuthzError('INVALID_ARGUMENT', `${name} must be a time in milliseconds`);
    }
  }
  if (d.start >= d.end) throw new AuthzError('INVALID_ARGUMENT', 'start must be before end');
  const actor = {
    identifier: { system: CONSENT_SYSTEMS.institution, value: String(d.grantee) },
    ...(d.granteeName === undefined ? {} : { display: d.granteeName }),
  };
  return {
    resourceType: 'Consent',
    id: d.id,
    status: d.status ?? 'active',
    scope: coding(CONSENT_SYSTEMS.scope, 'patient-privacy'),
    category: [coding(CONSENT_SYSTEMS.category, '59284-0')],
    patient: { identifier: { system: CONSENT_SYSTEMS.idHash, value: toHex(d.idHash) } },
    dateTime: new Date(d.dateTime).toISOString(),
    policyRule: coding(CONSENT_SYSTEMS.policyRule, 'OPTIN'),
    provision: {
      type: 'permit',
      period: { start: new Date(d.start).toISOString(), end: new Date(d.end).toISOString() },
      actor: [{ role: coding(CONSENT_SYSTEMS.actorRole, 'IRCP'), reference: actor }],
      action: [coding(CONSENT_SYSTEMS.action, 'access')],
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Checking

type Parse<T> = { ok: true; value: T } | { ok: false; problem: string };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function hasCoding(v: unknown, system: string, code: string): boolean {
  return (
    isObject(v) &&
    Array.isArray(v.coding) &&
    v.coding.some((c) => isObject(c) && c.system === system && c.code === code)
  );
}

const DATE_TIME =
  /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2}))?$/;

/**
 * A FHIR dateTime of day precision or finer (with a zone when it has a time) in milliseconds:
 * the instant, or for a date the start of that day (`endOfDay`: the start of the next day, as a
 * period's end date includes the whole day). Undefined when it is not one.
 */
export function parseFhirDateTime(text: unknown, endOfDay = false): number | undefined {
  if (typeof text !== 'string') return undefined;
  const m = DATE_TIME.exec(text);
  if (m === null) return undefined;
  const [y, mo, d, h, mi, s, frac, zone] = [
    Number(m[1]),
    Number(m[2]),
    Number(m[3]),
    Number(m[4] ?? 0),
    Number(m[5] ?? 0),
    Number(m[6] ?? 0),
    m[7],
    m[8],
  ];
  if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 59) return undefined;
  const day = Date.UTC(y, mo - 1, d);
  if (new Date(day).getUTCDate() !== d || y < 1) return undefined; // 2025-02-30
  if (m[4] === undefined) return endOfDay ? day + DAY_MS : day;
  const ms = frac === undefined ? 0 : Math.floor(Number(`0.${frac}`) * 1000);
  let offset = 0;
  if (zone !== undefined && zone !== 'Z') {
    const zh = Number(zone.slice(1, 3));
    const zm = Number(zone.slice(4, 6));
    if (zh > 14 || zm > 59) return undefined;
    offset = (zone[0] === '-' ? -1 : 1) * (zh * 60 + zm) * 60_000;
  }
  return day + ((h * 60 + mi) * 60 + s) * 1000 + ms - offset;
}

const UNSUPPORTED_PROVISION = [
  'class',
  'code',
  'data',
  'dataPeriod',
  'securityLabel',
  'purpose',
  'provision',
] as const;

/**
 * Checks a Consent's shape and reads what the decisions need; the problem names the field
 * (FHIRPath-like) and never quotes values.
 */
export function parseConsent(value: unknown): Parse<ParsedConsent> {
  const bad = (problem: string): Parse<ParsedConsent> => ({ ok: false, problem });
  if (!isObject(value)) return bad('Consent must be a JSON object');
  if (value.resourceType !== 'Consent') return bad('resourceType must be "Consent"');
  if (typeof value.id !== 'string' || !FHIR_ID.test(value.id)) {
    return bad('Consent.id must be a FHIR id ([A-Za-z0-9-.]{1,64})');
  }
  const status = value.status as ConsentStatus;
  if (!CONSENT_STATUSES.includes(status)) {
    return bad(`Consent.status must be one of ${CONSENT_STATUSES.join(', ')}`);
  }
  if (!hasCoding(value.scope, CONSENT_SYSTEMS.scope, 'patient-privacy')) {
    return bad(`Consent.scope must be ${CONSENT_SYSTEMS.scope}#patient-privacy`);
  }
  const patient = value.patient;
  const pid = isObject(patient) ? patient.identifier : undefined;
  if (
    !isObject(pid) ||
    pid.system !== CONSENT_SYSTEMS.idHash ||
    typeof pid.value !== 'string' ||
    !/^[0-9a-f]{64}$/.test(pid.value)
  ) {
    return bad(
      `Consent.patient.identifier must be { system: "${CONSENT_SYSTEMS.idHash}", value: 64 lowercase hex }`,
    );
  }
  const p = value.provision;
  if (!isObject(p)) return bad('Consent.provision must be an object');
  if (p.type !== 'permit') return bad('Consent.provision.type must be "permit"');
  for (const field of UNSUPPORTED_PROVISION) {
    if (p[field] !== undefined) {
      return bad(
        `Consent.provision.${field} is not supported: a grant covers all of the patient's records`,
      );
    }
  }
  const period = p.period;
  if (!isObject(period)) return bad('Consent.provision.period must have a start and an end');
  const start = parseFhirDateTime(period.start);
  if (start === undefined) {
    return bad('Consent.provision.period.start must be a FHIR dateTime of at least day precision');
  }
  const end = parseFhirDateTime(period.end, true);
  if (end === undefined) {
    return bad('Consent.provision.period.end must be a FHIR dateTime of at least day precision');
  }
  if (start >= end) return bad('Consent.provision.period.start must be before its end');
  const actors = p.actor;
  if (!Array.isArray(actors) || actors.length !== 1) {
    return bad('Consent.provision.actor must name exactly one institution');
  }
  const ref = isObject(actors[0]) ? actors[0].reference : undefined;
  const rid = isObject(ref) ? ref.identifier : undefined;
  if (
    !isObject(rid) ||
    rid.system !== CONSENT_SYSTEMS.institution ||
    typeof rid.value !== 'string' ||
    !/^(0|[1-9][0-9]{0,4})$/.test(rid.value) ||
    Number(rid.value) > MAX_INSTITUTION
  ) {
    return bad(
      `Consent.provision.actor[0].reference.identifier must be { system: "${CONSENT_SYSTEMS.institution}", value: a member index }`,
    );
  }
  const actions = p.action;
  if (
    actions !== undefined &&
    !(
      Array.isArray(actions) && actions.every((a) => hasCoding(a, CONSENT_SYSTEMS.action, 'access'))
    )
  ) {
    return bad('Consent.provision.action may only be consentaction#access');
  }
  return {
    ok: true,
    value: {
      id: value.id,
      status,
      idHash: fromHex(pid.value),
      grantee: Number(rid.value),
      start,
      end,
    },
  };
}

/** RFC 8785 canonical JSON of the Consent, as UTF-8; AuthzError if it has no JSON form or is too big. */
export function canonicalConsent(consent: ConsentJson): Bytes {
  let text: string | undefined;
  try {
    text = canonicalize(consent);
  } catch {
    text = undefined;
  }
  if (text === undefined) throw new AuthzError('MALFORMED', 'the Consent has no JSON form');
  const bytes = utf8(text);
  if (bytes.length > MAX_CONSENT_BYTES) {
    throw new AuthzError('MALFORMED', `the Consent exceeds ${MAX_CONSENT_BYTES} bytes`);
  }
  return bytes;
}

function consentMessage(chainId: string, canonical: Bytes): Bytes {
  return encode((w) => w.string(chainId).bytes(canonical));
}

/** The patient's detached signature over the Consent's canonical JSON (on chain `chainId`). */
export function signConsent(
  chainId: string,
  consent: ConsentJson,
  patientSigningSecret: Bytes,
  random?: RandomBytes,
): Bytes {
  const message = consentMessage(chainId, canonicalConsent(consent));
  return sign(patientSigningSecret, CONSENT_DOMAINS.consent, message, random);
}

/** Whether the patient's key signed exactly this Consent (any re-ordering of keys is the same). */
export function verifyConsentSignature(
  chainId: string,
  consent: ConsentJson,
  patientSigningKey: Bytes,
  signature: Bytes,
): boolean {
  let canonical: Bytes;
  try {
    canonical = canonicalConsent(consent);
  } catch {
    return false;
  }
  return verify(
    patientSigningKey,
    CONSENT_DOMAINS.consent,
    consentMessage(chainId, canonical),
    signature,
  );
}

// ---------------------------------------------------------------------------------------------
// Revocation

/** The patient withdraws Consent `consentId`: from then on no holder re-encrypts under it. */
export interface ConsentRevocation {
  readonly idHash: Bytes;
  readonly consentId: string;
  readonly signature: Bytes;
}

function revocationMessage(chainId: string, idHash: Bytes, consentId: string): Bytes {
  return encode((w) => w.string(chainId).fixed(idHash, HASH_BYTES, 'idHash').string(consentId));
}

export function signRevocation(
  chainId: string,
  idHash: Bytes,
  consentId: string,
  patientSigningSecret: Bytes,
  random?: RandomBytes,
): ConsentRevocation {
  if (!FHIR_ID.test(consentId)) {
    throw new AuthzError('INVALID_ARGUMENT', 'consentId must be a FHIR id');
  }
  const message = revocationMessage(chainId, idHash, consentId);
  return {
    idHash,
    consentId,
    signature: sign(patientSigningSecret, CONSENT_DOMAINS.revoke, message, random),
  };
}

export function verifyRevocation(
  chainId: string,
  revocation: ConsentRevocation,
  patientSigningKey: Bytes,
): boolean {
  const { idHash, consentId, signature } = revocation;
  if (!(idHash instanceof Uint8Array) || idHash.length !== HASH_BYTES) return false;
  if (typeof consentId !== 'string' || !FHIR_ID.test(consentId)) return false;
  return verify(
    patientSigningKey,
    CONSENT_DOMAINS.revoke,
    revocationMessage(chainId, idHash, consentId),
    signature,
  );
}

export interface RevocationJson {
  readonly idHash: string;
  readonly consentId: string;
  readonly signature: string;
}

export function revocationToJson(r: ConsentRevocation): RevocationJson {
  return { idHash: toHex(r.idHash), consentId: r.consentId, signature: toHex(r.signature) };
}

/** A revocation from its JSON form; AuthzError MALFORMED naming the field. */
export function revocationFromJson(value: unknown): ConsentRevocation {
  const v = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  if (typeof v.idHash !== 'string' || !/^[0-9a-f]{64}$/.test(v.idHash)) {
    throw new AuthzError('MALFORMED', 'revocation.idHash must be 32 bytes as lowercase hex');
  }
  if (typeof v.consentId !== 'string' || !FHIR_ID.test(v.consentId)) {
    throw new AuthzError('MALFORMED', 'revocation.consentId must be a FHIR id');
  }
  if (typeof v.signature !== 'string' || !/^[0-9a-f]{128}$/.test(v.signature)) {
    throw new AuthzError('MALFORMED', 'revocation.signature must be 64 bytes as lowercase hex');
  }
  return {
    idHash: fromHex(v.idHash),
    consentId: v.consentId,
    signature: fromHex(v.signature),
  };
}
