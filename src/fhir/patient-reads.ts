/**
 * The receiving side's FHIR reads (issue 5 parts 6-7), framework-free like service.ts:
 *
 *   GET /fhir/Patient/{id}/$everything   _type, _since, _count, _cursor (next links)
 *       the Patient, every record served for them (this institution's own, and those other
 *       institutions share with it, verified and decrypted: patient-records.ts), the context the
 *       records reference and a Provenance per record (search mode `include`), and an
 *       OperationOutcome (mode `outcome`) with every warning: a record that failed verification
 *       (named with its holder, never served), a holder that refused (revoked, expired, no
 *       grant) or could not be reached. A `searchset` Bundle with `total`.
 *   GET /fhir/{RecordType}?patient={id}  (or subject=, for types whose patient is their subject)
 *       the same records of one type; `_revinclude=Provenance:target` adds their Provenance.
 *   GET /fhir/Patient?identifier=system|value[&birthdate=YYYY-MM-DD] (or _id=)
 *       the patient as this institution names it (patient-lookup.ts): its own Patient, or the
 *       ledger patient `Patient/{idHash}` of someone registered elsewhere.
 *   GET /fhir/Patient/{idHash}           a ledger patient (own Patients are read by service.ts).
 *   GET /fhir/{RecordType}/{id}          a shared record served here before (own records are read
 *                                        by service.ts first): the served-id index of
 *                                        patient-records.ts names its patient, whose records are
 *                                        then fetched again, so that the holders decide as for
 *                                        $everything (a revoked grant serves nothing). A record
 *                                        never served here is not looked for: $everything fetches.
 *   GET /fhir/Provenance/{tx}            the Provenance of a record served here, the same way.
 *
 * Paging: the matches are in a fixed order (the Patient, then type, id, source institution), and
 * `_cursor` names the last match of the previous page, so a page is stable when records arrive
 * between requests. `_count` (1-1000, default 50) counts matches; includes ride along with the
 * matches that reference or target them. `_since` (a FHIR instant, or a date) keeps the records
 * whose meta.lastUpdated is at or after it; the Patient is always on the first page.
 *
 * Parameters are checked in read-params.ts. Every read leaves an AuditEvent naming the patient and
 * the records on the page (audited.ts).
 */
import type {
  Bundle,
  BundleEntry,
  OperationOutcomeIssue,
  Provenance,
  Resource,
} from '@medplum/fhirtypes';
import type { FhirMapping } from '../mapping/mapping.ts';
import { allReferences, parseRelative } from '../mapping/stored.ts';
import type { AuditLog } from './audit.ts';
import { audited } from './audited.ts';
import { fail, issue, OutcomeError, operationOutcome } from './outcome.ts';
import type { FoundPatient, PatientLookup } from './patient-lookup.ts';
import {
  type Collected,
  compareKeys,
  type PatientRecords,
  type ServedMatch,
} from './patient-records.ts';
import {
  canonical,
  encodeCursor,
  type Page,
  pageOf,
  patientId,
  readParams,
  sinceOf,
  typesOf,
} from './read-params.ts';
import type { RequestContext } from './transaction.ts';

export interface PatientReadsDeps {
  readonly lookup: Pick<PatientLookup, 'resolve' | 'search'>;
  readonly records: Pick<PatientRecords, 'collect' | 'servedAs' | 'provenanceFor'>;
  readonly audit: Pick<AuditLog, 'record'>;
  readonly mapping: Pick<FhirMapping, 'records'>;
  readonly now?: () => number;
}

/**
 * The access checks of a read by id, decided by the route (http/auth.ts) once the patient is
 * known; each throws the refusal (403).
 */
export interface ReadGuard {
  /** Before any holder is asked: may the caller read such records of this patient (Patient id)? */
  readonly patient: (patient: string) => void;
  /** The resources found (a Provenance's targets): may the caller see at least one of them? */
  readonly resources: (patient: string, found: readonly Resource[]) => void;
}

const ID = /^[A-Za-z0-9\-.]{1,64}$/;
const DATE = /^\d{4}-\d{2}-\d{2}$/;

/** The 404 of a record type's id that is neither this institution's nor served here. */
export function notHeldHere(type: string, id: string): OutcomeError {
  return new OutcomeError(404, [
    issue(
      'not-found',
      `${type}/${id} is not held here: it is not one of this institution's records, nor a shared record fetched here. Records other institutions share are fetched by the patient's GET Patient/{id}/$everything (or a search by patient), and can then be read by id`,
    ),
  ]);
}

export class PatientReads {
  private readonly deps: PatientReadsDeps;
  private readonly now: () => number;

  constructor(deps: PatientReadsDeps) {
    this.deps = deps;
    this.now = deps.now ?? Date.now;
  }

  /** `GET /fhir/Patient/{id}/$everything?...`. */
  async everything(id: string, query: string, base: string, ctx: RequestContext): Promise<Bundle> {
    const params = readParams(query, ['_count', '_type', '_since', '_cursor']);
    const types = typesOf(params);
    const since = sinceOf(params);
    const page = pageOf(params);
    return this.readPatient('operation', id, page, ctx, (got) => {
      const matches = got.matches.filter(
        (m) =>
          (types === undefined || types.has(m.key[1])) &&
          (since === undefined || m.key[0] === 0 || m.updated >= since),
      );
      const self = `${base}/Patient/${id}/$everything?${canonical(params)}`;
      return bundleOf(got, matches, page, self, base, {
        context: (type) => types === undefined || types.has(type),
        provenance: true,
      });
    });
  }

  /** `GET /fhir/{type}?patient=...` (or `subject=`) for a record type. */
  async searchByPatient(
    type: string,
    query: string,
    base: string,
    ctx: RequestContext,
  ): Promise<Bundle> {
    const mapping = this.deps.mapping.records.get(type);
    if (mapping === undefined) {
      throw fail(
        400,
        'not-supported',
        `${type} is not a record type: search by patient is not supported`,
      );
    }
    const subject = mapping.patient === 'subject';
    const names = [
      'patient',
      '_count',
      '_cursor',
      '_revinclude',
      ...(subject ? ['subject', 'subject:Patient'] : []),
    ];
    const params = readParams(query, names);
    const refs = params.filter(([n]) => n === 'patient' || n.startsWith('subject'));
    if (refs.length !== 1) {
      throw fail(
        400,
        'required',
        `${type} search needs exactly one ${subject ? 'patient or subject' : 'patient'} parameter`,
      );
    }
    const id = patientId(refs[0]![1], refs[0]![0]);
    const revinclude = params.filter(([n]) => n === '_revinclude').map(([, v]) => v);
    if (revinclude.some((v) => v !== 'Provenance:target')) {
      throw fail(400, 'not-supported', '_revinclude supports Provenance:target only');
    }
    const page = pageOf(params);
    return this.readPatient('search-type', id, page, ctx, (got) => {
      const matches = got.matches.filter((m) => m.key[0] === 1 && m.key[1] === type);
      const self = `${base}/${type}?${canonical(params)}`;
      return bundleOf(got, matches, page, self, base, {
        context: () => false,
        provenance: revinclude.length > 0,
      });
    });
  }

  /**
   * One audited read of patient `id`'s records (own and shared): the page decides whether a
   * recent fetch may be reused, `answer` picks and pages the matches.
   */
  private readPatient(
    interaction: 'operation' | 'search-type',
    id: string,
    page: Page,
    ctx: RequestContext,
    answer: (got: Collected) => Bundle,
  ): Promise<Bundle> {
    return audited(
      this.deps.audit,
      {
        interaction,
        ctx,
        status: 200,
        entities: (b) => entitiesOf(b),
        patients: [`Patient/${id}`],
        now: this.now,
      },
      async () => {
        const patient = await this.patient(id);
        return answer(await this.deps.records.collect(patient, page.cursor !== undefined));
      },
    );
  }

  /** `GET /fhir/Patient?identifier=system|value[&birthdate=...]` or `?_id=`. */
  async searchPatients(query: string, base: string, ctx: RequestContext): Promise<Bundle> {
    const params = readParams(query, ['identifier', 'birthdate', '_id']);
    const one = (name: string) => {
      const v = params.filter(([n]) => n === name).map(([, x]) => x);
      if (v.length > 1) throw fail(400, 'not-supported', `${name} may be given once`);
      return v[0];
    };
    const identifier = one('identifier');
    const birthdate = one('birthdate')?.replace(/^eq/, '');
    const id = one('_id');
    if (birthdate !== undefined && !DATE.test(birthdate)) {
      throw fail(400, 'invalid', 'birthdate must be a date, YYYY-MM-DD', 'birthdate');
    }
    if (id !== undefined && !ID.test(id))
      throw fail(400, 'invalid', '_id must be a FHIR id', '_id');
    if ((identifier === undefined) === (id === undefined)) {
      throw fail(
        400,
        'required',
        'Patient search needs identifier=system|value or _id (one of them)',
      );
    }
    const bar = identifier?.indexOf('|') ?? -1;
    const token =
      identifier === undefined
        ? undefined
        : bar < 0
          ? { value: identifier }
          : {
              ...(bar > 0 ? { system: identifier.slice(0, bar) } : {}),
              value: identifier.slice(bar + 1),
            };
    if (token !== undefined && token.value === '') {
      throw fail(400, 'invalid', 'identifier needs a value', 'identifier');
    }
    return audited(
      this.deps.audit,
      {
        interaction: 'search-type',
        ctx,
        status: 200,
        entities: (b) => entitiesOf(b),
        patients: (b) =>
          (b.entry ?? []).flatMap((e) =>
            e.resource?.resourceType === 'Patient' ? [`Patient/${e.resource.id}`] : [],
          ),
        now: this.now,
      },
      async () => {
        const found = await this.deps.lookup.search({
          ...(token === undefined ? {} : { identifier: token }),
          ...(birthdate === undefined ? {} : { birthDate: birthdate }),
          ...(id === undefined ? {} : { id }),
        });
        const entry: BundleEntry[] = found.map((p) => ({
          fullUrl: `${base}/Patient/${p.id}`,
          resource: p.resource,
          search: { mode: 'match' },
        }));
        if (
          found.length === 0 &&
          token !== undefined &&
          (token.system === undefined || birthdate === undefined)
        ) {
          entry.push(
            outcomeEntry([
              {
                severity: 'information',
                code: 'informational',
                details: {
                  text: 'no Patient here with this identifier; to find a patient registered at another institution, search with identifier=system|value and birthdate=YYYY-MM-DD',
                },
              },
            ]),
          );
        }
        return {
          resourceType: 'Bundle',
          type: 'searchset',
          total: found.length,
          link: [{ relation: 'self', url: `${base}/Patient?${canonical(params)}` }],
          entry,
        };
      },
    );
  }

  /** Whether `type` is a record type, whose shared records `readShared` may find. */
  sharesType(type: string): boolean {
    return this.deps.mapping.records.has(type);
  }

  /**
   * `GET /fhir/{type}/{id}` of a shared record served here before; undefined when nothing was
   * served under that id. The holders are asked again, so a record they no longer serve (a
   * revoked or expired grant, a record that now fails verification) is a 404 with their reasons.
   */
  readShared(
    type: string,
    id: string,
    ctx: RequestContext,
    guard: ReadGuard,
  ): Promise<Resource | undefined> {
    return this.readSharedMatch(type, id, ctx, guard, { kind: 'resource', type, id }, (found) => ({
      resource: found.resource,
    }));
  }

  /**
   * `GET /fhir/{type}/{id}/_history/{vid}` of a shared record served here before: that version,
   * current or earlier; undefined when nothing was served under that id. The holders are asked
   * again, so a version they no longer serve is a 404 with their reasons.
   */
  readSharedVersion(
    type: string,
    id: string,
    vid: string,
    ctx: RequestContext,
    guard: ReadGuard,
  ): Promise<Resource | undefined> {
    const what = { kind: 'resource', type, id: `${id}/_history/${vid}` } as const;
    return this.readSharedMatch(type, id, ctx, guard, what, (found) =>
      [found, ...(found.earlier ?? [])].find((v) => v.resource.meta?.versionId === vid),
    );
  }

  /**
   * `GET /fhir/{type}/{id}/_history` of a shared record served here before: its current version
   * and the earlier ones its holder served (corrected since), newest first (each version's
   * meta.source names the holder, and its tags mark a corrected or entered-in-error version);
   * undefined when nothing was served under that id. As readShared, the holders are asked again.
   */
  async readSharedHistory(
    type: string,
    id: string,
    base: string,
    ctx: RequestContext,
    guard: ReadGuard,
  ): Promise<Bundle | undefined> {
    const what = { kind: 'history', type, id } as const;
    const history = await this.readSharedMatch(type, id, ctx, guard, what, (found) => {
      const versions = [found, ...[...(found.earlier ?? [])].reverse()];
      const entry = versions.map(
        (v, n): BundleEntry => ({
          fullUrl: `${base}/${type}/${id}`,
          resource: v.resource,
          request:
            n === versions.length - 1
              ? { method: 'POST', url: type }
              : { method: 'PUT', url: `${type}/${id}` },
          response: {
            status: n === versions.length - 1 ? '201 Created' : '200 OK',
            etag: `W/"${v.resource.meta?.versionId ?? ''}"`,
            ...(v.resource.meta?.lastUpdated ? { lastModified: v.resource.meta.lastUpdated } : {}),
          },
        }),
      );
      const bundle: Bundle = {
        resourceType: 'Bundle',
        type: 'history',
        total: entry.length,
        entry,
      };
      return { resource: bundle, versions: versions.map((v) => v.reference) };
    });
    return history as Bundle | undefined;
  }

  /**
   * One read of a shared resource served here as `type/id`: undefined when nothing was served
   * under that id; else readServed with what `pick` makes of the resource's served match (a 404
   * when the holders no longer serve it, or `pick` finds nothing).
   */
  private async readSharedMatch(
    type: string,
    id: string,
    ctx: RequestContext,
    guard: ReadGuard,
    what: { kind: 'resource' | 'history'; type: string; id: string },
    pick: (found: ServedMatch) => { resource: Resource; versions?: readonly string[] } | undefined,
  ): Promise<Resource | undefined> {
    const served = await this.deps.records.servedAs(type, id);
    if (served === undefined) return undefined;
    return this.readServed(served.patient, ctx, what, guard, (got) => {
      const found = got.matches.find(
        (m) => m.holder !== undefined && m.key[0] === 1 && m.key[1] === type && m.key[2] === id,
      );
      const picked = found === undefined ? undefined : pick(found);
      if (picked === undefined) return undefined;
      // The scopes are checked on what is answered: each version of a history, the version read.
      const checked =
        what.kind === 'history'
          ? [found!, ...(found!.earlier ?? [])].map((v) => v.resource)
          : [picked.resource];
      return { ...picked, targets: [found!], checked };
    });
  }

  /**
   * `GET /fhir/Provenance/{id}` of a record served here (its id is the record's tx hash, so the
   * same version always has the same one); undefined when no such Provenance was served here.
   * It goes with its targets: the caller must be allowed to read at least one of them.
   */
  async readProvenance(
    id: string,
    ctx: RequestContext,
    guard: ReadGuard,
  ): Promise<Provenance | undefined> {
    const patient = await this.deps.records.provenanceFor(id);
    if (patient === undefined) return undefined;
    return this.readServed(patient, ctx, { kind: 'provenance', id }, guard, (got) => {
      const targets = got.matches.filter((m) => m.provenance?.id === id);
      return targets.length === 0 ? undefined : { resource: targets[0]!.provenance!, targets };
    }) as Promise<Provenance>;
  }

  /**
   * One audited read by id of something served for `patientId`: the guard's patient check, a
   * fresh fetch of the patient's records (never a snapshot: the holders decide now), `pick`,
   * and the guard's check of what was picked.
   */
  private readServed(
    patientId: string,
    ctx: RequestContext,
    what:
      | { kind: 'resource' | 'history'; type: string; id: string }
      | { kind: 'provenance'; id: string },
    guard: ReadGuard,
    pick: (got: Collected) =>
      | {
          resource: Resource;
          targets: readonly ServedMatch[];
          versions?: readonly string[];
          /** What the guard checks the scopes of (default: the targets' resources). */
          checked?: readonly Resource[];
        }
      | undefined,
  ): Promise<Resource> {
    const name = what.kind === 'provenance' ? `Provenance/${what.id}` : `${what.type}/${what.id}`;
    const read = audited(
      this.deps.audit,
      {
        interaction: what.kind === 'history' ? 'history-instance' : 'read',
        ctx,
        status: 200,
        entities: (found) =>
          what.kind === 'resource'
            ? [versioned(found.resource)]
            : what.kind === 'history'
              ? [...(found.versions ?? [])]
              : [name, ...found.targets.map((m) => m.reference)],
        patients: [`Patient/${patientId}`],
        now: this.now,
      },
      async () => {
        guard.patient(patientId);
        const got = await this.deps.records.collect(await this.patient(patientId));
        const found = pick(got);
        if (found === undefined) {
          throw new OutcomeError(404, [
            issue(
              'not-found',
              `${name} is no longer served here: the records of its patient were fetched again just now, and it was not among them (the other issues say why: e.g. a grant revoked or expired, a holder out of reach, a record that failed verification)`,
            ),
            ...got.issues,
          ]);
        }
        guard.resources(patientId, found.checked ?? found.targets.map((m) => m.resource));
        return found;
      },
    );
    return read.then((found) => found.resource);
  }

  /** `GET /fhir/Patient/{idHash}` for a ledger patient; undefined when there is none. */
  async readLedgerPatient(id: string, ctx: RequestContext): Promise<Resource | undefined> {
    if (!/^[0-9a-f]{64}$/.test(id)) return undefined;
    const found = await this.deps.lookup.resolve(id);
    if (found === undefined || found.own) return undefined;
    await audited(
      this.deps.audit,
      {
        interaction: 'read',
        ctx,
        status: 200,
        entities: [`Patient/${id}`],
        patients: [`Patient/${id}`],
        now: this.now,
      },
      async () => found,
    );
    return found.resource;
  }

  private async patient(id: string): Promise<FoundPatient> {
    if (!ID.test(id)) throw fail(400, 'invalid', 'the Patient id is not a FHIR id');
    const found = await this.deps.lookup.resolve(id);
    if (found === undefined) {
      throw fail(
        404,
        'not-found',
        `Patient/${id} is not known here: find a patient registered elsewhere with Patient?identifier=system|value&birthdate=YYYY-MM-DD`,
      );
    }
    return found;
  }
}

// ---------------------------------------------------------------------------------------------
// Bundles

function outcomeEntry(issues: readonly OperationOutcomeIssue[]): BundleEntry {
  return { resource: operationOutcome(issues), search: { mode: 'outcome' } };
}

function bundleOf(
  got: Collected,
  matches: readonly ServedMatch[],
  page: Page,
  self: string,
  base: string,
  include: { context: (type: string) => boolean; provenance: boolean },
): Bundle {
  const from =
    page.cursor === undefined ? 0 : matches.findIndex((m) => compareKeys(m.key, page.cursor!) > 0);
  const start = from < 0 ? matches.length : from;
  const slice = matches.slice(start, start + page.count);
  const more = start + page.count < matches.length;
  const entry: BundleEntry[] = slice.map((m) => ({
    fullUrl: `${base}/${m.key[1]}/${m.key[2]}`,
    resource: m.resource,
    search: { mode: 'match' },
  }));
  const included = new Set<string>();
  for (const m of slice) {
    for (const ref of allReferences(m.resource)) {
      const rel = parseRelative(ref);
      if (rel === undefined || !include.context(rel.resourceType)) continue;
      const key = `${rel.resourceType}/${rel.id}`;
      const res = got.context.get(key);
      if (res === undefined || included.has(key)) continue;
      included.add(key);
      entry.push({ fullUrl: `${base}/${key}`, resource: res, search: { mode: 'include' } });
    }
  }
  if (include.provenance) {
    for (const m of slice) {
      const p = m.provenance;
      if (p === undefined || included.has(`Provenance/${p.id}`)) continue;
      included.add(`Provenance/${p.id}`);
      entry.push({
        fullUrl: `${base}/Provenance/${p.id}`,
        resource: p,
        search: { mode: 'include' },
      });
    }
  }
  if (got.issues.length > 0) entry.push(outcomeEntry(got.issues));
  const last = slice.at(-1);
  return {
    resourceType: 'Bundle',
    type: 'searchset',
    total: matches.length,
    link: [
      { relation: 'self', url: self },
      ...(more && last !== undefined
        ? [
            {
              relation: 'next',
              url: `${self}${self.endsWith('?') ? '' : '&'}_cursor=${encodeCursor(last.key)}`,
            },
          ]
        : []),
    ],
    entry,
  };
}

/** The matches of a Bundle as AuditEvent entities (`Type/id/_history/v`, or `Type/id`). */
function entitiesOf(b: Bundle): string[] {
  return (b.entry ?? [])
    .filter((e) => e.search?.mode === 'match' && e.resource !== undefined)
    .map((e) => versioned(e.resource!));
}

function versioned(r: Resource): string {
  const v = r.meta?.versionId;
  return v === undefined ? `${r.resourceType}/${r.id}` : `${r.resourceType}/${r.id}/_history/${v}`;
}
