/**
 * What "the same record version" means for idempotent ingest: the SHA-256 of the record's
 * canonical JSON (RFC 8785, the `canonicalize` package, as the mapper's payloads: sorted keys,
 * fixed number and string forms), after dropping, in every resource it holds (the record itself,
 * the resources of a collection Bundle, contained resources), the two fields a FHIR server
 * assigns itself: `meta.versionId` and `meta.lastUpdated` (the mapper stamps lastUpdated on every
 * write, and an EHR re-posting a resource it read back carries ours). So whitespace, key order,
 * number spelling and those stamps do not make a new version; any change of content does.
 */
import canonicalize from 'canonicalize';
import { utf8 } from '../crypto/bytes.ts';
import { sha256 } from '../crypto/sha256.ts';
import type { Bytes } from '../ledger/types.ts';

export type ParsedResource = { resourceType: string; id?: unknown } & Record<string, unknown>;

/**
 * Parses FHIR JSON bytes into a resource object, or says what is wrong without quoting the
 * content (JSON.parse's own messages quote the input, which may be patient data).
 */
export function parseResource(
  bytes: Bytes,
): { ok: true; resource: ParsedResource } | { ok: false; problem: string } {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return { ok: false, problem: 'is not valid UTF-8' };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, problem: 'is not valid JSON' };
  }
  if (!isObject(value)) return { ok: false, problem: 'is not a JSON object' };
  if (typeof value.resourceType !== 'string') {
    return { ok: false, problem: 'has no resourceType string' };
  }
  return { ok: true, resource: value as ParsedResource };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A copy of `value` without meta.versionId / meta.lastUpdated in any resource it holds. */
function withoutServerMeta(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutServerMeta);
  if (!isObject(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = withoutServerMeta(v);
  if (typeof value.resourceType === 'string' && isObject(out.meta)) {
    const { versionId: _v, lastUpdated: _l, ...rest } = out.meta;
    if (Object.keys(rest).length === 0) delete out.meta;
    else out.meta = rest;
  }
  return out;
}

/** SHA-256 of the canonical JSON of `resource` without server-assigned meta fields. */
export function contentHash(resource: ParsedResource): Bytes {
  const text = canonicalize(withoutServerMeta(resource));
  if (text === undefined) throw new TypeError('resource has no JSON form');
  return sha256(utf8(text));
}
