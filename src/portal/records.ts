/**
 * The patient's own records as a holder sends them (GET /spchain/patients/:idHash/records: the
 * stored Umbral capsule and ciphertext, encrypted to the patient's PRE key), decrypted here with
 * the patient's PRE secret, and a short readable summary of each. Plaintext stays in the page.
 */
import { decodeCapsule, decryptOriginal } from '../crypto/umbral/index.ts';

/** One record as the holder's records route lists it. */
export interface StoredRecord {
  readonly resourceType: string;
  readonly id: string;
  readonly version: string | number;
  readonly kind: 'medical' | 'label';
  readonly txHash: string;
  readonly target?: string;
  readonly capsule: string;
  readonly ciphertext: string;
  readonly anchoring?: unknown;
}

export type Decrypted =
  | { readonly ok: true; readonly resource: Record<string, unknown> }
  | { readonly ok: false; readonly problem: string };

export function fromBase64(text: string, field: string): Uint8Array {
  if (typeof text !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) {
    throw new Error(`${field} is not base64`);
  }
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

export function toBase64(bytes: Uint8Array): string {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** Decrypts one record with the patient's PRE secret; a failure says why, without content. */
export function decryptRecord(preSecret: Uint8Array, record: StoredRecord): Decrypted {
  let plaintext: Uint8Array;
  try {
    const capsule = decodeCapsule(fromBase64(record.capsule, 'capsule'));
    plaintext = decryptOriginal(preSecret, capsule, fromBase64(record.ciphertext, 'ciphertext'));
  } catch (err) {
    return { ok: false, problem: `does not decrypt with your key (${(err as Error).message})` };
  }
  try {
    const value: unknown = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(plaintext));
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      return { ok: false, problem: 'is not a FHIR resource' };
    }
    return { ok: true, resource: value as Record<string, unknown> };
  } catch {
    return { ok: false, problem: 'is not FHIR JSON' };
  } finally {
    plaintext.fill(0);
  }
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json | undefined =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : undefined;
const str = (v: unknown): string | undefined =>
  typeof v === 'string' && v.trim() !== '' ? v.trim() : undefined;

/** A CodeableConcept's text, else its first coding's display, else its first code. */
export function conceptText(value: unknown): string | undefined {
  const c = obj(value);
  if (!c) return undefined;
  const codings = Array.isArray(c.coding) ? c.coding.map(obj) : [];
  return (
    str(c.text) ??
    codings.map((x) => str(x?.display)).find((d) => d !== undefined) ??
    codings.map((x) => str(x?.code)).find((d) => d !== undefined)
  );
}

function quantityText(value: unknown): string | undefined {
  const q = obj(value);
  if (!q || typeof q.value !== 'number') return undefined;
  const unit = str(q.unit) ?? str(q.code);
  return unit ? `${q.value} ${unit}` : String(q.value);
}

function valueText(r: Json): string | undefined {
  return (
    quantityText(r.valueQuantity) ??
    conceptText(r.valueCodeableConcept) ??
    str(r.valueString) ??
    (typeof r.valueBoolean === 'boolean' ? String(r.valueBoolean) : undefined) ??
    (typeof r.valueInteger === 'number' ? String(r.valueInteger) : undefined)
  );
}

function humanName(value: unknown): string | undefined {
  const names = Array.isArray(value) ? value.map(obj) : [];
  const n = names[0];
  if (!n) return undefined;
  const given = Array.isArray(n.given) ? n.given.filter((g) => typeof g === 'string') : [];
  return str(n.text) ?? str([...given, str(n.family) ?? ''].join(' '));
}

/**
 * The record's own resource in its decrypted content: the content itself, or (when the mapping
 * stores a record with the context it references) the entry of a collection Bundle with the
 * record's type and id.
 */
export function recordResource(
  content: Json,
  record: Pick<StoredRecord, 'resourceType' | 'id'>,
): Json {
  if (content.resourceType === record.resourceType) return content;
  if (content.resourceType !== 'Bundle' || !Array.isArray(content.entry)) return content;
  const resources = content.entry.map((e) => obj(obj(e)?.resource)).filter((r) => r !== undefined);
  return (
    resources.find((r) => r.resourceType === record.resourceType && r.id === record.id) ??
    resources.find((r) => r.resourceType === record.resourceType) ??
    content
  );
}

/** A one-line summary of a FHIR resource for the patient to recognise it. */
export function summarise(resource: Json): string {
  const type = str(resource.resourceType) ?? 'resource';
  if (type === 'Patient') {
    const name = humanName(resource.name);
    const born = str(resource.birthDate);
    return [name, born ? `born ${born}` : undefined].filter(Boolean).join(', ') || 'Patient';
  }
  if (type === 'Bundle') {
    const entries = Array.isArray(resource.entry) ? resource.entry.length : 0;
    return `${entries} resource${entries === 1 ? '' : 's'}`;
  }
  const what =
    conceptText(resource.code) ??
    conceptText(resource.medicationCodeableConcept) ??
    conceptText(resource.vaccineCode) ??
    conceptText(Array.isArray(resource.type) ? resource.type[0] : resource.type) ??
    conceptText(Array.isArray(resource.class) ? resource.class[0] : resource.class) ??
    str(resource.description);
  const value = valueText(resource);
  const when =
    str(resource.effectiveDateTime) ??
    str(resource.onsetDateTime) ??
    str(resource.authoredOn) ??
    str(resource.occurrenceDateTime) ??
    str(resource.date) ??
    str(obj(resource.period)?.start);
  const status = str(resource.status);
  const head = [what, value].filter(Boolean).join(': ');
  const tail = [when, status === 'entered-in-error' ? 'entered in error' : undefined]
    .filter(Boolean)
    .join(', ');
  return [head || type, tail ? `(${tail})` : ''].filter(Boolean).join(' ');
}
