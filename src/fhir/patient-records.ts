/**
 * Everything this institution can serve about one patient, as plain FHIR (issue 5 parts 6-7):
 *
 * - its own records: what its EHR posted for the patient (the record index `pr` of the sidecar
 *   store gives the resources, the FHIR copy `resource-store.ts` their current versions), with
 *   the context resources (Organization, Practitioner, ...) they reference, and a Provenance
 *   naming this institution, the record tx and where the tx is (queued, mempool, pinned);
 * - the records other institutions hold and share with it under the patient's grant
 *   (Sharing.fetchShared: fetched over p2p, each verified against this node's pinned chain,
 *   decrypted, corrections applied), flattened into their resources: the mapping's record types
 *   are the matches, the rest (the context each record carries) are includes. Each served
 *   resource gets meta.versionId (the record's version), meta.lastUpdated (when this institution
 *   first saw that version, below), meta.source `urn:spchain:institution:<holder>` and tags for
 *   `entered-in-error` and `corrected`; its references to the patient are rewritten to the
 *   patient's id here (the holder's Patient ids mean nothing at this institution). Each record
 *   has a Provenance (provenance.ts) naming the holder, tx, batch and block;
 * - every warning of the fetch (a record that failed verification, a holder that refused or could
 *   not be reached, ...) as an OperationOutcome issue naming the record and the holder. Such a
 *   record is never among the matches.
 *
 * lastUpdated of a shared record version: the time this institution first served it, kept in
 * sublevel `fs` (tx hash -> ms). The ledger has no clock for batches, and for a client of this
 * server "updated since T" means "new here since T", which is what `_since` then selects.
 *
 * Paging reads: a request with a cursor (the pages after the first) may reuse the fetch of the
 * same patient made less than `snapshotMs` ago, so that paging through a large history does not
 * fetch and decrypt it again for every page.
 *
 * Served ids: each shared resource is served under an id that is unique here and never changes
 * once given out (the rule and its index, sublevel `sx`, are in served-ids.ts, which also finds
 * the patient of a served `Type/id` or Provenance again for a read by id). One served under
 * another id than its holder's carries that id in meta (HOLDER_ID_EXTENSION), and the references
 * of the holder's other resources to it follow it.
 */
import type { Coding, OperationOutcomeIssue, Provenance, Resource } from '@medplum/fhirtypes';
import { fromHex, toHex } from '../crypto/bytes.ts';
import type { Bytes } from '../ledger/types.ts';
import type { FhirMapping } from '../mapping/mapping.ts';
import { allReferences, parseRelative } from '../mapping/stored.ts';
import type { AnchorStatus } from '../sidecar/anchor.ts';
import { decodeResourceKey } from '../sidecar/entries.ts';
import type { SharedFetch, SharedRecord, ShareWarning } from '../sidecar/share.ts';
import { prefixRange } from '../sidecar/share-grants.ts';
import type { SharedRecordVersion } from '../sidecar/share-receiver.ts';
import type { SidecarStore } from '../sidecar/store.ts';
import type { Db, Sublevel, WriteOp } from '../store/db.ts';
import { openSublevel } from '../store/db.ts';
import { be } from '../store/keys.ts';
import { openSeal, sealIn } from '../store/values.ts';
import type { FoundPatient } from './patient-lookup.ts';
import { ownProvenance, sharedProvenance } from './provenance.ts';
import type { ResourceStore, StoredVersion } from './resource-store.ts';
import { HOLDER_ID_EXTENSION, holderRef, moveTo, type ServedAs, ServedIds } from './served-ids.ts';

export { HOLDER_ID_EXTENSION } from './served-ids.ts';

export const SEEN_SPACE = 'fs';
export const RECORD_TAG_SYSTEM = 'urn:spchain:fhir:record';
export const SHARE_WARNING_SYSTEM = 'urn:spchain:share-warning';

/** The receiving side of sharing (Sharing.fetchShared). */
export interface SharedSource {
  fetchShared(idHash: Bytes, opts?: { signal?: AbortSignal }): Promise<SharedFetch>;
}

export interface PatientRecordsDeps {
  readonly resources: Pick<ResourceStore, 'read' | 'currents'>;
  /** The sidecar store: its record index (`pr`) names the patient's own records. */
  readonly store: Pick<SidecarStore, 'spaces'>;
  /** The database the first-seen and served-id indexes live in (the sidecar's). */
  readonly db: Db;
  readonly mapping: Pick<FhirMapping, 'records' | 'contextTypes'>;
  readonly shared?: SharedSource;
  readonly anchorStatus: (tx: string) => Promise<AnchorStatus>;
  readonly institution: { readonly index: number; readonly name: string };
  /** A member's name (genesis), for warnings about a holder. */
  readonly memberName?: (index: number) => string | undefined;
  readonly now?: () => number;
}

export interface PatientRecordsOpts {
  /** How long a fetch may be reused for the later pages of a paged read. */
  readonly snapshotMs: number;
  readonly maxSnapshots: number;
}

export const defaultPatientRecordsOpts: PatientRecordsOpts = {
  snapshotMs: 30_000,
  maxSnapshots: 64,
};

/** The order of served resources: the Patient first, then by type, id and source institution. */
export type SortKey = readonly [rank: number, type: string, id: string, source: number];

/** One resource served as a match, with its record's Provenance. */
export interface ServedMatch {
  readonly key: SortKey;
  readonly resource: Resource;
  /** meta.lastUpdated in ms (for _since). */
  readonly updated: number;
  /** `Type/id/_history/v`: what the AuditEvent and the Provenance name. */
  readonly reference: string;
  readonly provenance?: Provenance;
  /** The institution that holds a shared record (absent for this institution's own). */
  readonly holder?: number;
  /** A shared resource's earlier versions (corrected since), oldest first, served as it is. */
  readonly earlier?: readonly EarlierVersion[];
}

/** An earlier version of a shared resource, as `_history` serves it. */
export interface EarlierVersion {
  readonly resource: Resource;
  readonly updated: number;
  readonly reference: string;
  readonly provenance: Provenance;
}

export interface Collected {
  /** Sorted by key. */
  readonly matches: readonly ServedMatch[];
  /** Context resources by `Type/id`, for the matches that reference them. */
  readonly context: ReadonlyMap<string, Resource>;
  /** Warnings of the shared fetch, and notes (e.g. the patient is not on the ledger). */
  readonly issues: readonly OperationOutcomeIssue[];
}

export function compareKeys(a: SortKey, b: SortKey): number {
  for (let k = 0; k < 4; k++) {
    const x = a[k]!;
    const y = b[k]!;
    if (x < y) return -1;
    if (x > y) return 1;
  }
  return 0;
}

const iso = (ms: number) => new Date(ms).toISOString();
/** A resource's `Type/id` as its holder names it. */
const refOf = (res: Record<string, unknown>) => `${String(res.resourceType)}/${String(res.id)}`;

export class PatientRecords {
  private readonly deps: PatientRecordsDeps;
  private readonly opts: PatientRecordsOpts;
  private readonly now: () => number;
  private readonly seen: Sublevel;
  private readonly ids: ServedIds;
  private readonly snapshots = new Map<string, { at: number; fetch: SharedFetch }>();

  constructor(deps: PatientRecordsDeps, opts: Partial<PatientRecordsOpts> = {}) {
    this.deps = deps;
    this.opts = { ...defaultPatientRecordsOpts, ...opts };
    this.now = deps.now ?? Date.now;
    this.seen = openSublevel(deps.db, SEEN_SPACE);
    this.ids = new ServedIds({ db: deps.db, resources: deps.resources });
  }

  /** The patient and holder a shared resource served here as `type/id` was served for. */
  servedAs(type: string, id: string): Promise<ServedAs | undefined> {
    return this.ids.servedAs(type, id);
  }

  /** The Patient id here of the patient whose record's Provenance `tx` (hex) was served here. */
  provenanceFor(tx: string): Promise<string | undefined> {
    return this.ids.provenanceFor(tx);
  }

  /**
   * The patient's served resources (own and shared), their context, and the issues. `paging`:
   * a later page of a paged read, which may reuse a recent fetch.
   */
  async collect(patient: FoundPatient, paging = false): Promise<Collected> {
    const matches: ServedMatch[] = [];
    const context = new Map<string, Resource>();
    const issues: OperationOutcomeIssue[] = [];
    const meta = patient.resource.meta;
    matches.push({
      key: [0, 'Patient', patient.id, this.deps.institution.index],
      resource: patient.resource,
      updated: meta?.lastUpdated ? Date.parse(meta.lastUpdated) : 0,
      reference: `Patient/${patient.id}`,
    });
    if (patient.idHash === undefined) {
      issues.push(note('this Patient has no identifier and birth date that name a ledger patient'));
      return { matches, context, issues };
    }
    const own = await this.own(patient, patient.idHash, context);
    matches.push(...own);
    if (patient.block === undefined) {
      issues.push(note('the patient is not registered on the pinned ledger: nothing is shared'));
    } else if (this.deps.shared !== undefined) {
      const fetch = await this.fetch(patient.idHash, paging);
      await this.shared(patient, fetch, matches, context);
      issues.push(...fetch.warnings.map((w) => warningIssue(w, this.deps.memberName?.(w.holder))));
    }
    matches.sort((a, b) => compareKeys(a.key, b.key));
    await this.ids.indexProvenance(patient.id, matches);
    return { matches, context, issues };
  }

  private async fetch(idHash: Bytes, paging: boolean): Promise<SharedFetch> {
    const key = toHex(idHash);
    const t = this.now();
    const snap = this.snapshots.get(key);
    if (paging && snap !== undefined && t - snap.at < this.opts.snapshotMs) return snap.fetch;
    const fetch = await this.deps.shared!.fetchShared(idHash);
    this.snapshots.delete(key);
    if (this.snapshots.size >= this.opts.maxSnapshots) {
      this.snapshots.delete(this.snapshots.keys().next().value!);
    }
    this.snapshots.set(key, { at: t, fetch });
    return fetch;
  }

  /** This institution's own records of the patient (current versions) and their context. */
  private async own(
    patient: FoundPatient,
    idHash: Bytes,
    context: Map<string, Resource>,
  ): Promise<ServedMatch[]> {
    const { store, resources, mapping, institution } = this.deps;
    const refs: { type: string; id: string }[] = [];
    for await (const key of store.spaces.patientRecord.keys(prefixRange(idHash))) {
      const { resourceType, id } = decodeResourceKey(key.subarray(idHash.length));
      if (mapping.records.has(resourceType)) refs.push({ type: resourceType, id });
    }
    const versions = await Promise.all(refs.map((r) => resources.read(r.type, r.id)));
    const out: ServedMatch[] = [];
    for (const v of versions) {
      if (v === undefined) continue;
      const type = v.resource.resourceType;
      const id = String(v.resource.id);
      const reference = `${type}/${id}/_history/${v.version}`;
      out.push({
        key: [1, type, id, institution.index],
        resource: v.resource,
        updated: Date.parse(v.lastUpdated),
        reference,
        ...(v.tx === undefined
          ? {}
          : { provenance: await this.ownProvenance(v, v.tx, reference, patient) }),
      });
      await this.ownContext(v, context);
    }
    return out;
  }

  private async ownProvenance(
    v: StoredVersion,
    tx: string,
    reference: string,
    patient: FoundPatient,
  ): Promise<Provenance> {
    const block = patient.block?.header;
    return ownProvenance({
      tx,
      targets: [reference],
      recorded: v.lastUpdated,
      institution: this.deps.institution,
      ...(block ? { block: { i: block.i, j: block.j } } : {}),
      status: await this.deps.anchorStatus(tx),
      version: v.version,
    });
  }

  /** The stored context resources an own record references. */
  private async ownContext(v: StoredVersion, context: Map<string, Resource>): Promise<void> {
    for (const ref of allReferences(v.resource)) {
      const rel = parseRelative(ref);
      if (rel === undefined || !this.deps.mapping.contextTypes.has(rel.resourceType)) continue;
      const key = `${rel.resourceType}/${rel.id}`;
      if (context.has(key)) continue;
      const found = await this.deps.resources.read(rel.resourceType, rel.id);
      if (found !== undefined) context.set(key, found.resource);
    }
  }

  /** The shared records as served resources: matches, context, Provenance. */
  private async shared(
    patient: FoundPatient,
    fetch: SharedFetch,
    matches: ServedMatch[],
    context: Map<string, Resource>,
  ): Promise<void> {
    const records = [...fetch.records].sort((a, b) => a.provenance.holder - b.provenance.holder);
    const seen = await this.firstSeen(
      records.flatMap((r) => [r, ...r.earlier].map((v) => v.provenance.txHash)),
    );
    const parts = records.map((r) => ({ r, ...this.split(r) }));
    const ids = await this.ids.assign(
      patient.id,
      patient.idHash!,
      parts.flatMap(({ r, own }) => own.map((res) => holderRef(r.provenance.holder, res))),
    );
    for (const { r, own, others } of parts) {
      const holder = r.provenance.holder;
      const updated = seen.get(r.provenance.txHash)!;
      const refs = ids.moved.get(holder);
      const served = own.map((res) =>
        this.served(res, r, updated, patient.id, ids.idOf(holderRef(holder, res)), refs),
      );
      const targets = served.map((s) => `${s.resourceType}/${String(s.id)}/_history/${r.version}`);
      const provenance = sharedProvenance(r.provenance, targets, iso(updated));
      const earlier = this.earlierVersions(r, own, seen, patient.id, refs, (res) =>
        ids.idOf(holderRef(holder, res)),
      );
      served.forEach((resource, n) => {
        const versions = earlier.get(refOf(own[n]!));
        matches.push({
          key: [1, resource.resourceType, String(resource.id), holder],
          resource,
          updated,
          reference: targets[n]!,
          provenance,
          holder,
          ...(versions === undefined ? {} : { earlier: versions }),
        });
      });
      for (const res of others) {
        const key = `${res.resourceType}/${String(res.id)}`;
        if (context.has(key)) continue;
        const followed =
          refs === undefined ? res : (rewriteReferences(res, moveTo(refs)) as Resource);
        context.set(key, withSource(followed, holder));
      }
    }
  }

  /**
   * The earlier versions of a record's own resources, by the holder's `Type/id` of each: every verified
   * earlier version of the record that still holds a resource of that id, served under the id the
   * current one has here, oldest first.
   */
  private earlierVersions(
    r: SharedRecord,
    own: readonly Record<string, unknown>[],
    seen: ReadonlyMap<string, number>,
    patientId: string,
    refs: ReadonlyMap<string, string> | undefined,
    idOf: (res: Record<string, unknown>) => string,
  ): Map<string, EarlierVersion[]> {
    const out = new Map<string, EarlierVersion[]>();
    if (r.earlier.length === 0) return out;
    const current = new Map(own.map((res) => [refOf(res), res]));
    for (const v of r.earlier) {
      const updated = seen.get(v.provenance.txHash)!;
      const found = this.split(v).own.filter((res) => current.has(refOf(res)));
      const served = found.map((res) =>
        this.served(res, v, updated, patientId, idOf(current.get(refOf(res))!), refs),
      );
      const targets = served.map((x) => `${x.resourceType}/${String(x.id)}/_history/${v.version}`);
      const provenance = sharedProvenance(v.provenance, targets, iso(updated));
      found.forEach((res, n) => {
        const list = out.get(refOf(res)) ?? [];
        list.push({ resource: served[n]!, updated, reference: targets[n]!, provenance });
        out.set(refOf(res), list);
      });
    }
    return out;
  }

  /** A record's resources: those of the mapping's record types, and the rest (its context). */
  private split(r: SharedRecordVersion): { own: Record<string, unknown>[]; others: Resource[] } {
    const content = r.resource as Record<string, unknown>;
    const all =
      content.resourceType === 'Bundle' && Array.isArray(content.entry)
        ? content.entry.flatMap((e) => {
            const res = (e as { resource?: unknown } | null)?.resource;
            return typeof res === 'object' && res !== null && !Array.isArray(res)
              ? [res as Record<string, unknown>]
              : [];
          })
        : [content];
    const own: Record<string, unknown>[] = [];
    const others: Resource[] = [];
    for (const res of all) {
      const type = res.resourceType;
      if (typeof type !== 'string' || typeof res.id !== 'string' || type === 'Patient') continue;
      if (this.deps.mapping.records.has(type)) own.push(res);
      else others.push(res as unknown as Resource);
    }
    return { own, others };
  }

  /**
   * A shared record resource as served here: its served id, meta, tags, patient references
   * rewritten, and references to the holder's resources that moved (`moved`) followed.
   */
  private served(
    res: Record<string, unknown>,
    r: SharedRecordVersion,
    updated: number,
    patientId: string,
    id: string,
    moved: ReadonlyMap<string, string> | undefined,
  ): Resource {
    const tags: Coding[] = [];
    if (r.enteredInError) {
      tags.push({
        system: RECORD_TAG_SYSTEM,
        code: 'entered-in-error',
        display: 'entered in error',
      });
    }
    if (r.provenance.supersedes.length > 0) {
      tags.push({ system: RECORD_TAG_SYSTEM, code: 'corrected', display: 'corrected version' });
    }
    const meta = (res.meta as Record<string, unknown> | undefined) ?? {};
    const oldTags = Array.isArray(meta.tag) ? (meta.tag as Coding[]) : [];
    const patient = `Patient/${patientId}`;
    const follow = moved === undefined ? () => undefined : moveTo(moved);
    const rewritten = rewriteReferences(res, (ref) =>
      PATIENT_REFERENCE.test(ref) ? patient : follow(ref),
    ) as Record<string, unknown>;
    const holderId = String(res.id);
    const oldExtensions = Array.isArray(meta.extension) ? meta.extension : [];
    return {
      ...rewritten,
      id,
      meta: {
        ...meta,
        versionId: r.version,
        lastUpdated: iso(updated),
        source: `urn:spchain:institution:${r.provenance.holder}`,
        ...(oldTags.length + tags.length > 0 ? { tag: [...oldTags, ...tags] } : {}),
        ...(id === holderId
          ? {}
          : {
              extension: [...oldExtensions, { url: HOLDER_ID_EXTENSION, valueString: holderId }],
            }),
      },
    } as unknown as Resource;
  }

  /** When each tx's record version was first served here (now, for the ones never seen). */
  private async firstSeen(txs: readonly string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    if (txs.length === 0) return out;
    const keys = txs.map((t) => fromHex(t, 'tx'));
    const stored = await this.seen.getMany(keys);
    const t = this.now();
    const ops: WriteOp[] = [];
    txs.forEach((tx, n) => {
      const value = stored[n];
      const opened = value === undefined ? undefined : openSeal(SEEN_SPACE, keys[n]!, value);
      if (opened?.ok && opened.payload.length === 6) {
        out.set(tx, readBe48(opened.payload));
        return;
      }
      out.set(tx, t);
      const key = keys[n]!;
      ops.push({
        type: 'put',
        sublevel: this.seen,
        key,
        value: sealIn(SEEN_SPACE, key, be(t, 6, 'first seen')),
      });
    });
    // Bookkeeping: losing it in a crash only makes those versions look newer.
    if (ops.length > 0) await this.deps.db.batch(ops as WriteOp[], { sync: false });
    return out;
  }
}

function readBe48(b: Uint8Array): number {
  let n = 0;
  for (const x of b) n = n * 256 + x;
  return n;
}

function withSource(res: Resource, holder: number): Resource {
  return { ...res, meta: { ...res.meta, source: `urn:spchain:institution:${holder}` } };
}

const PATIENT_REFERENCE =
  /^(?:[a-z]+:\/\/[^?#]*\/)?Patient\/[A-Za-z0-9\-.]{1,64}(?:\/_history\/[^/]+)?$/;

/** A deep copy of `value` with every Reference to a Patient pointing at `to`. */
export function rewritePatientReferences(value: unknown, to: string): unknown {
  return rewriteReferences(value, (ref) => (PATIENT_REFERENCE.test(ref) ? to : undefined));
}

/** A deep copy of `value` with each `reference` replaced by `to(reference)`, where it gives one. */
function rewriteReferences(value: unknown, to: (ref: string) => string | undefined): unknown {
  if (Array.isArray(value)) return value.map((v) => rewriteReferences(v, to));
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = k === 'reference' && typeof v === 'string' ? (to(v) ?? v) : rewriteReferences(v, to);
  }
  return out;
}

function note(text: string): OperationOutcomeIssue {
  return { severity: 'information', code: 'informational', details: { text } };
}

const WARNING_TYPE: Record<string, OperationOutcomeIssue['code']> = {
  DENIED: 'forbidden',
  UNREACHABLE: 'transient',
  BAD_RESPONSE: 'transient',
  UNKNOWN_HOLDER: 'security',
  SKIPPED: 'incomplete',
  WITHHELD: 'incomplete',
};

/** A fetch warning as an issue naming the holder and the record (never its content). */
export function warningIssue(w: ShareWarning, holderName?: string): OperationOutcomeIssue {
  const rec = w.record;
  const name =
    rec === undefined
      ? undefined
      : [
          rec.resourceType && rec.id ? `${rec.resourceType}/${rec.id}` : undefined,
          rec.version ? `version ${rec.version}` : undefined,
          rec.txHash ? `tx ${rec.txHash.slice(0, 16)}` : undefined,
          rec.seq !== undefined ? `seq ${rec.seq}` : undefined,
        ]
          .filter((x) => x !== undefined)
          .join(', ');
  const verification = WARNING_TYPE[w.code] === undefined;
  const holder =
    holderName === undefined
      ? `institution ${w.holder}`
      : `${holderName} (institution ${w.holder})`;
  const text = `${holder}${name ? `, record ${name}` : ''}: ${w.code}: ${w.message}${
    verification ? ' (failed verification: not served)' : ''
  }`;
  return {
    severity: 'warning',
    code: WARNING_TYPE[w.code] ?? 'processing',
    details: { coding: [{ system: SHARE_WARNING_SYSTEM, code: w.code }], text },
  };
}
