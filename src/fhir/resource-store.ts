/**
 * The sidecar's own copy of what its EHR sent, as FHIR: every resource version it accepted
 * (records, Patients, context), readable back by the EHR (`GET Type/id`, `_history`), and what
 * conditional creates, conditional updates and conditional references are matched against.
 *
 * Why a plain copy: the ledger-facing copy of a record is encrypted to the patient's PRE key, and
 * the sidecar never holds that key, so it cannot read its own ciphertexts back. The data is the
 * EHR's own, at its own hospital, in the same trust domain as the EHR's database; it never leaves
 * the institution except re-encrypted on the patient's grant (src/sidecar/share*). Protect the
 * data directory as the EHR's database is protected (disk encryption, file permissions). What
 * crosses institutions is only ever the PRE ciphertext.
 *
 * Layout, in the sidecar's LevelDB (writes are staged into the ingest's one atomic batch, so a copy
 * exists exactly when its record does):
 *
 *   fc  resourceKey(type, id)                  -> current: version, content hash, patient,
 *                                                identifiers (for the index)
 *   fv  resourceKey(type, id) || be32(version) -> that version: the resource, its record tx
 *   fx  (type, identifier value, system, id)   -> (empty): the identifier index
 *
 * Values are JSON, sealed (src/store/values.ts) under their sublevel's name and key.
 */
import type { Resource } from '@medplum/fhirtypes';
import { toHex } from '../crypto/bytes.ts';
import { decode, encode } from '../ledger/codec.ts';
import {
  lookupsFor,
  matchInBundle,
  type StoredResources,
  storedSnapshot,
} from '../mapping/stored.ts';
import { contentHash, type ParsedResource } from '../sidecar/canonical.ts';
import { resourceKey } from '../sidecar/entries.ts';
import type { Db, Sublevel, WriteOp } from '../store/db.ts';
import { openSublevel } from '../store/db.ts';
import { StoreError } from '../store/errors.ts';
import { be } from '../store/keys.ts';
import { openSeal, sealIn } from '../store/values.ts';
import { fail } from './outcome.ts';

export const RESOURCE_SPACES = { current: 'fc', version: 'fv', identifier: 'fx' } as const;

type Space = keyof typeof RESOURCE_SPACES;

/** A stored resource version. */
export interface StoredVersion {
  /** The resource with meta.versionId and meta.lastUpdated set. */
  readonly resource: Resource;
  readonly version: number;
  readonly lastUpdated: string;
  /** The record tx (hex) anchoring this version, for records. */
  readonly tx?: string;
  /** `Patient/id` of the patient the resource is about (records and Patients). */
  readonly patient?: string;
}

interface Current {
  readonly v: number;
  /** Content hash (hex) of the current version, without server meta (canonical.ts). */
  readonly h: string;
  readonly p?: string;
  /** Identifiers [system, value] of the current version, as indexed. */
  readonly ids: readonly (readonly [string, string])[];
}

/** The current entries of some resources by `Type/id` (ResourceStore.currents); undefined: none. */
export type Currents = ReadonlyMap<string, Current | undefined>;

export interface ResourceWrite {
  readonly resource: Record<string, unknown>;
  readonly lastUpdated: string;
  readonly tx?: string;
  readonly patient?: string;
}

export type WriteOutcome = 'created' | 'updated' | 'unchanged';

export interface StagedWrite {
  readonly outcome: WriteOutcome;
  readonly version: number;
  readonly lastUpdated: string;
  readonly resource: Resource;
}

const MAX_SEARCH_MATCHES = 1000;
const ENC = new TextEncoder();
const DEC = new TextDecoder();

export class ResourceStore {
  private readonly spaces: Record<Space, Sublevel>;

  constructor(db: Db) {
    this.spaces = {
      current: openSublevel(db, RESOURCE_SPACES.current),
      version: openSublevel(db, RESOURCE_SPACES.version),
      identifier: openSublevel(db, RESOURCE_SPACES.identifier),
    };
  }

  /** The current version of `type/id`, if stored. */
  async read(type: string, id: string): Promise<StoredVersion | undefined> {
    const cur = await this.current(type, id);
    return cur === undefined ? undefined : this.vread(type, id, cur.v);
  }

  /** Version `version` of `type/id`, if stored. */
  async vread(type: string, id: string, version: number): Promise<StoredVersion | undefined> {
    if (!Number.isSafeInteger(version) || version < 1 || version > 0xffffffff) return undefined;
    const key = versionKey(type, id, version);
    return this.get('version', key, (json) => json as StoredVersion);
  }

  /** Every version of `type/id`, newest first (empty if not stored). */
  async history(type: string, id: string): Promise<StoredVersion[]> {
    const cur = await this.current(type, id);
    if (cur === undefined) return [];
    const keys = Array.from({ length: cur.v }, (_, k) => versionKey(type, id, cur.v - k));
    const values = await this.spaces.version.getMany(keys);
    return values.map((v, k) => {
      if (v === undefined)
        throw corrupt('version', keys[k]!, 'a version below the current is missing');
      return this.open('version', keys[k]!, v) as StoredVersion;
    });
  }

  /**
   * The current versions of `type` matching a FHIR search query; only `_id` and `identifier`
   * (token: `system|value`, `|value`, `value`) are supported, anything else is a 400.
   */
  async search(type: string, query: string): Promise<Resource[]> {
    const params = parseQuery(query);
    const first = params.find(([name]) => name === '_id' || name === 'identifier');
    if (first === undefined || params.some(([n]) => n !== '_id' && n !== 'identifier')) {
      throw fail(
        400,
        'not-supported',
        `conditional query ${type}?${params.map(([n]) => `${n}=...`).join('&')}: only _id and identifier are supported`,
      );
    }
    const ids = first[0] === '_id' ? [first[1]] : await this.byIdentifier(type, first[1]);
    const found = await Promise.all(ids.map((id) => this.read(type, id)));
    const candidates = found.flatMap((v) =>
      v === undefined
        ? []
        : [{ id: v.resource.id!, resource: v.resource as unknown as Record<string, unknown> }],
    );
    const matched = new Set(matchInBundle(query, candidates) ?? []);
    return candidates
      .filter((c) => matched.has(c.id))
      .map((c) => c.resource as unknown as Resource);
  }

  /** What the mapper may need of stored resources for `bundle` (mapping/stored.ts). */
  async snapshotFor(bundle: unknown): Promise<StoredResources> {
    const { searches, reads } = lookupsFor(bundle);
    const found = await Promise.all(
      searches.map(async (s) => {
        const q = s.indexOf('?');
        return [s, await this.search(s.slice(0, q), s.slice(q + 1))] as const;
      }),
    );
    const resources = await Promise.all(
      reads.map((r) => {
        const slash = r.indexOf('/');
        return this.read(r.slice(0, slash), r.slice(slash + 1));
      }),
    );
    return storedSnapshot({
      searches: found,
      resources: resources.flatMap((v) => (v === undefined ? [] : [v.resource])),
    });
  }

  /**
   * Stages a write of `w.resource` (its resourceType and id set) into `ops`: a new version when its
   * content differs from the current one (server meta aside), nothing when it is the same.
   */
  async stage(ops: WriteOp[], w: ResourceWrite, known?: Currents): Promise<StagedWrite> {
    const type = w.resource.resourceType as string;
    const id = w.resource.id as string;
    const hash = toHex(contentHash(w.resource as ParsedResource));
    const ref = `${type}/${id}`;
    const cur = known?.has(ref) ? known.get(ref) : await this.current(type, id);
    if (cur !== undefined && cur.h === hash) {
      const stored = await this.vread(type, id, cur.v);
      if (stored === undefined) throw corrupt('version', versionKey(type, id, cur.v), 'missing');
      return {
        outcome: 'unchanged',
        version: cur.v,
        lastUpdated: stored.lastUpdated,
        resource: stored.resource,
      };
    }
    const version = (cur?.v ?? 0) + 1;
    const meta = (w.resource.meta as Record<string, unknown> | undefined) ?? {};
    const resource = {
      ...w.resource,
      meta: { ...meta, versionId: String(version), lastUpdated: w.lastUpdated },
    } as unknown as Resource;
    const ids = identifiersOf(w.resource);
    const key = resourceKey(type, id);
    for (const [system, value] of cur?.ids ?? []) {
      ops.push({
        type: 'del',
        sublevel: this.spaces.identifier,
        key: identifierKey(type, value, system, id),
      });
    }
    for (const [system, value] of ids) {
      this.put(ops, 'identifier', identifierKey(type, value, system, id), new Uint8Array(0), true);
    }
    const current: Current = { v: version, h: hash, ids, ...(w.patient ? { p: w.patient } : {}) };
    this.put(ops, 'current', key, current);
    const stored: StoredVersion = {
      resource,
      version,
      lastUpdated: w.lastUpdated,
      ...(w.tx ? { tx: w.tx } : {}),
      ...(w.patient ? { patient: w.patient } : {}),
    };
    this.put(ops, 'version', versionKey(type, id, version), stored);
    return {
      outcome: cur === undefined ? 'created' : 'updated',
      version,
      lastUpdated: w.lastUpdated,
      resource,
    };
  }

  /**
   * What `stage` reads first, for many resources in one LevelDB read: a bundle's entries are
   * staged one after another, and a read each would wait on the disk once per entry.
   */
  async currents(
    refs: readonly { readonly type: string; readonly id: string }[],
  ): Promise<Currents> {
    const keys = refs.map((r) => resourceKey(r.type, r.id));
    const values = await this.spaces.current.getMany(keys);
    return new Map(
      refs.map((r, n) => {
        const v = values[n];
        const cur = v === undefined ? undefined : (this.open('current', keys[n]!, v) as Current);
        return [`${r.type}/${r.id}`, cur] as const;
      }),
    );
  }

  private current(type: string, id: string): Promise<Current | undefined> {
    return this.get('current', resourceKey(type, id), (json) => json as Current);
  }

  private async byIdentifier(type: string, token: string): Promise<string[]> {
    const bar = token.indexOf('|');
    const value = bar < 0 ? token : token.slice(bar + 1);
    const prefix = encode((w) => w.string(type).string(value));
    const ids: string[] = [];
    for await (const key of this.spaces.identifier.keys({ gte: prefix, lt: upperBound(prefix) })) {
      const { id } = decodeIdentifierKey(key);
      if (!ids.includes(id)) ids.push(id);
      if (ids.length > MAX_SEARCH_MATCHES) break;
    }
    return ids;
  }

  private put(ops: WriteOp[], space: Space, key: Uint8Array, value: unknown, raw = false): void {
    const payload = raw ? (value as Uint8Array) : ENC.encode(JSON.stringify(value));
    ops.push({
      type: 'put',
      sublevel: this.spaces[space],
      key,
      value: sealIn(RESOURCE_SPACES[space], key, payload),
    });
  }

  private async get<T>(
    space: Space,
    key: Uint8Array,
    f: (json: unknown) => T,
  ): Promise<T | undefined> {
    const stored = await this.spaces[space].get(key);
    return stored === undefined ? undefined : f(this.open(space, key, stored));
  }

  private open(space: Space, key: Uint8Array, stored: Uint8Array): unknown {
    const opened = openSeal(RESOURCE_SPACES[space], key, stored);
    if (!opened.ok) throw corrupt(space, key, opened.problem);
    try {
      return JSON.parse(DEC.decode(opened.payload));
    } catch {
      throw corrupt(space, key, 'is not JSON');
    }
  }
}

function versionKey(type: string, id: string, version: number): Uint8Array {
  const base = resourceKey(type, id);
  const out = new Uint8Array(base.length + 4);
  out.set(base);
  out.set(be(version, 4, 'version'), base.length);
  return out;
}

function identifierKey(type: string, value: string, system: string, id: string): Uint8Array {
  return encode((w) => w.string(type).string(value).string(system).string(id));
}

function decodeIdentifierKey(key: Uint8Array): { id: string } {
  return decode(key, 'identifier key', (r) => {
    r.string('type', 1024);
    r.string('value', 4096);
    r.string('system', 4096);
    return { id: r.string('id', 1024) };
  });
}

/** The least key above every key that starts with `prefix` (the prefix plus one, big-endian). */
export function upperBound(prefix: Uint8Array): Uint8Array {
  for (let at = prefix.length - 1; at >= 0; at--) {
    if (prefix[at]! < 0xff) {
      const out = prefix.slice(0, at + 1);
      out[at]! += 1;
      return out;
    }
  }
  return new Uint8Array(prefix.length + 1).fill(0xff);
}

function identifiersOf(resource: Record<string, unknown>): [string, string][] {
  const list = Array.isArray(resource.identifier) ? resource.identifier : [];
  const out: [string, string][] = [];
  for (const i of list) {
    if (typeof i !== 'object' || i === null) continue;
    const { system, value } = i as { system?: unknown; value?: unknown };
    if (typeof value !== 'string' || value === '') continue;
    const pair: [string, string] = [typeof system === 'string' ? system : '', value];
    if (!out.some(([s, v]) => s === pair[0] && v === pair[1])) out.push(pair);
  }
  return out;
}

/** `a=1&b=x%7Cy` as decoded pairs; a malformed query is a 400. */
export function parseQuery(query: string): [string, string][] {
  const out: [string, string][] = [];
  for (const part of query.replace(/^\?/, '').split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) throw fail(400, 'invalid', 'a search parameter has no name=value form');
    try {
      out.push([decodeURIComponent(part.slice(0, eq)), decodeURIComponent(part.slice(eq + 1))]);
    } catch {
      throw fail(400, 'invalid', 'a search parameter is not validly percent-encoded');
    }
  }
  return out;
}

function corrupt(space: string, key: Uint8Array, problem: string): StoreError {
  const where = toHex(key.subarray(0, 8));
  return new StoreError('CORRUPT', `corrupt FHIR ${space} entry (${where}): ${problem}`, { space });
}

/** The query in one canonical spelling (parameters sorted, one encoding), for locks. */
export function normaliseQuery(type: string, query: string): string {
  const params = parseQuery(query).sort(([a, x], [b, y]) =>
    a === b ? (x < y ? -1 : 1) : a < b ? -1 : 1,
  );
  return `${type}?${params.map(([n, v]) => `${n}=${encodeURIComponent(v)}`).join('&')}`;
}
