/**
 * The FHIR interactions of the sidecar for its own EHR, framework-free (the Medplum way: the HTTP
 * routes are a thin layer over this, and tests can call it without HTTP):
 *
 * - transaction / batch (`POST /fhir`): transaction.ts;
 * - create (`POST /fhir/Type`, `If-None-Exist`) and update (`PUT /fhir/Type/id`, `If-Match`;
 *   `PUT /fhir/Type?query` conditional update) run as a one-entry transaction, so they share its
 *   validation, mapping, locks, idempotency and atomicity; their issues name the resource
 *   (`Observation.status`) instead of the bundle entry;
 * - read, vread and history of what this sidecar stores (resource-store.ts), history entries
 *   carrying each version's anchoring: its record tx and where that tx is (queued, in the mempool,
 *   pinned in batch h at position k);
 * - AuditEvent search by patient or entity, and read.
 *
 * Every read and write leaves an AuditEvent (audit.ts).
 */
import type {
  Bundle,
  BundleEntry,
  Extension,
  OperationOutcomeIssue,
  Resource,
} from '@medplum/fhirtypes';
import { isMappingError } from '../mapping/errors.ts';
import type { AnchorStatus } from '../sidecar/anchor.ts';
import type { AuditInteraction } from './audit.ts';
import { fail, OutcomeError, outcomeOf } from './outcome.ts';
import { parseQuery, type StoredVersion } from './resource-store.ts';
import {
  type BundleResult,
  type EntryResult,
  type RequestContext,
  statusLine,
  type TransactionDeps,
  type TransactionOpts,
  TransactionProcessor,
} from './transaction.ts';

export interface FhirServiceDeps extends TransactionDeps {
  /** Where a record tx (hex) is on its way to the chain (the anchor worker knows). */
  readonly anchorStatus: (tx: string) => Promise<AnchorStatus>;
}

/** The extension on a history entry that says how its version is anchored. */
export const ANCHORING_EXTENSION = 'urn:spchain:fhir:anchoring';

const MAX_COUNT = 1000;
const DEFAULT_COUNT = 50;

export class FhirService {
  private readonly deps: FhirServiceDeps;
  private readonly transactions: TransactionProcessor;
  private readonly now: () => number;

  constructor(deps: FhirServiceDeps, opts: Partial<TransactionOpts> = {}) {
    this.deps = deps;
    this.transactions = new TransactionProcessor(deps, opts);
    this.now = deps.now ?? Date.now;
  }

  /** `POST /fhir` with a transaction or batch Bundle. */
  postBundle(bundle: unknown, raw: Uint8Array, ctx: RequestContext): Promise<BundleResult> {
    return this.transactions.process(bundle, raw, ctx);
  }

  /** `POST /fhir/Type`, with the `If-None-Exist` query if given. */
  create(
    type: string,
    resource: unknown,
    raw: Uint8Array,
    ifNoneExist: string | undefined,
    ctx: RequestContext,
  ): Promise<EntryResult> {
    checkBody(type, resource);
    const request = {
      method: 'POST',
      url: type,
      ...(ifNoneExist === undefined ? {} : { ifNoneExist }),
    };
    return this.single(type, resource, request, raw, ctx, 'create');
  }

  /** `PUT /fhir/Type/id` (or `PUT /fhir/Type?query`), with the `If-Match` ETag if given. */
  update(
    type: string,
    target: { id: string } | { query: string },
    resource: unknown,
    raw: Uint8Array,
    ifMatch: string | undefined,
    ctx: RequestContext,
  ): Promise<EntryResult> {
    checkBody(type, resource);
    const url = 'id' in target ? `${type}/${target.id}` : `${type}?${target.query}`;
    const request = { method: 'PUT', url, ...(ifMatch === undefined ? {} : { ifMatch }) };
    return this.single(type, resource, request, raw, ctx, 'update');
  }

  private async single(
    type: string,
    resource: unknown,
    request: Record<string, string>,
    raw: Uint8Array,
    ctx: RequestContext,
    interaction: AuditInteraction,
  ): Promise<EntryResult> {
    const bundle = { resourceType: 'Bundle', type: 'transaction', entry: [{ resource, request }] };
    try {
      const result = await this.transactions.process(
        bundle,
        raw,
        { ...ctx, returns: 'representation' },
        interaction,
      );
      return result.entries[0]!;
    } catch (err) {
      throw asSingle(err, type);
    }
  }

  /** `GET /fhir/Type/id`. */
  async read(type: string, id: string, ctx: RequestContext): Promise<StoredVersion> {
    const found = await this.deps.resources.read(type, id);
    if (found === undefined) throw notFound(type, id);
    await this.audit('read', ctx, [found]);
    return found;
  }

  /** `GET /fhir/Type/id/_history/vid`. */
  async vread(type: string, id: string, vid: string, ctx: RequestContext): Promise<StoredVersion> {
    const version = /^[1-9][0-9]{0,9}$/.test(vid) ? Number(vid) : Number.NaN;
    const found = Number.isNaN(version)
      ? undefined
      : await this.deps.resources.vread(type, id, version);
    if (found === undefined) {
      throw fail(404, 'not-found', `${type}/${id} has no version ${vid} here`);
    }
    await this.audit('vread', ctx, [found]);
    return found;
  }

  /** `GET /fhir/Type/id/_history`: every version, newest first, with its anchoring. */
  async history(type: string, id: string, base: string, ctx: RequestContext): Promise<Bundle> {
    const versions = await this.deps.resources.history(type, id);
    if (versions.length === 0) throw notFound(type, id);
    const entry = await Promise.all(
      versions.map(async (v): Promise<BundleEntry> => {
        const anchoring =
          v.tx === undefined ? [] : [anchoringExtension(v.tx, await this.deps.anchorStatus(v.tx))];
        return {
          fullUrl: `${base}/${type}/${id}`,
          resource: v.resource,
          request:
            v.version === 1
              ? { method: 'POST', url: type }
              : { method: 'PUT', url: `${type}/${id}` },
          response: {
            status: statusLine(v.version === 1 ? 201 : 200),
            etag: `W/"${v.version}"`,
            lastModified: v.lastUpdated,
          },
          ...(anchoring.length > 0 ? { extension: anchoring } : {}),
        };
      }),
    );
    await this.audit('history-instance', ctx, versions);
    return { resourceType: 'Bundle', type: 'history', total: versions.length, entry };
  }

  /**
   * `GET /fhir/AuditEvent?patient=Patient/x` (or `?entity=Type/id`), `_count`, `_cursor`: newest
   * first, with a next link while there are more.
   */
  async searchAudit(query: string, base: string, ctx: RequestContext): Promise<Bundle> {
    const params = parseQuery(query).filter(([name]) => name !== '_format');
    const get = (name: string) => params.filter(([n]) => n === name).map(([, v]) => v);
    const unknown = params.filter(([n]) => !['patient', 'entity', '_count', '_cursor'].includes(n));
    if (unknown.length > 0) {
      throw fail(
        400,
        'not-supported',
        `AuditEvent search supports patient, entity, _count and _cursor, not ${unknown.map(([n]) => n).join(', ')}`,
      );
    }
    const patient = get('patient');
    const entity = get('entity');
    if (patient.length + entity.length !== 1) {
      throw fail(
        400,
        'required',
        'AuditEvent search needs exactly one patient or entity parameter',
      );
    }
    const countText = get('_count')[0];
    const count = countText === undefined ? DEFAULT_COUNT : Number(countText);
    if (!Number.isInteger(count) || count < 1 || count > MAX_COUNT) {
      throw fail(400, 'invalid', `_count must be an integer in [1, ${MAX_COUNT}]`);
    }
    const name = patient.length === 1 ? 'patient' : 'entity';
    const value =
      patient.length === 1
        ? reference('Patient', patient[0]!, 'patient')
        : reference(undefined, entity[0]!, 'entity');
    const by = name === 'patient' ? { patient: value } : { entity: value };
    const page = await this.deps.audit.search(by, count, get('_cursor')[0]);
    const self = `${base}/AuditEvent?${name}=${encodeURIComponent(value)}&_count=${count}`;
    await this.deps.audit.record({
      interaction: 'search-type',
      agent: ctx.agent,
      status: 200,
      entities: [],
      patients: name === 'patient' ? [value] : [],
      requestId: ctx.requestId,
      now: this.now(),
    });
    return {
      resourceType: 'Bundle',
      type: 'searchset',
      link: [
        { relation: 'self', url: self },
        ...(page.next ? [{ relation: 'next', url: `${self}&_cursor=${page.next}` }] : []),
      ],
      entry: page.events.map((e) => ({
        fullUrl: `${base}/AuditEvent/${e.id}`,
        resource: e,
        search: { mode: 'match' },
      })),
    };
  }

  private async audit(
    interaction: AuditInteraction,
    ctx: RequestContext,
    versions: readonly StoredVersion[],
  ): Promise<void> {
    const patients = new Set(versions.flatMap((v) => (v.patient ? [v.patient] : [])));
    await this.deps.audit.record({
      interaction,
      agent: ctx.agent,
      status: 200,
      entities: versions.map(
        (v) => `${v.resource.resourceType}/${v.resource.id}/_history/${v.version}`,
      ),
      patients: [...patients],
      requestId: ctx.requestId,
      now: this.now(),
    });
  }
}

/** The body of a single-resource interaction must be a resource of the URL's type. */
function checkBody(type: string, resource: unknown): asserts resource is Resource {
  const r = resource as { resourceType?: unknown } | null;
  if (
    typeof r !== 'object' ||
    r === null ||
    Array.isArray(r) ||
    typeof r.resourceType !== 'string'
  ) {
    throw fail(400, 'structure', 'the body is not a FHIR resource (no resourceType)');
  }
  if (r.resourceType !== type) {
    throw fail(
      400,
      'invalid',
      `the body is a ${r.resourceType}, the URL names ${type}`,
      'resourceType',
    );
  }
}

const ENTRY_RESOURCE = /Bundle\.entry\[0\]\.resource/g;
const ENTRY_REQUEST = /Bundle\.entry\[0\]\.request\.?/g;

/** A one-entry transaction's issues, renamed for the resource the client sent. */
function asSingle(err: unknown, type: string): unknown {
  if (!(err instanceof OutcomeError) && !isMappingError(err)) return err;
  const { status, outcome, headers } = outcomeOf(err);
  const rename = (s: string) => s.replace(ENTRY_RESOURCE, type).replace(ENTRY_REQUEST, 'request ');
  const issues = (outcome.issue ?? []).map(
    (i): OperationOutcomeIssue => ({
      ...i,
      ...(i.details?.text ? { details: { ...i.details, text: rename(i.details.text) } } : {}),
      ...(i.expression ? { expression: i.expression.map((e) => rename(e).trim()) } : {}),
    }),
  );
  return new OutcomeError(status, issues, { ...headers });
}

function notFound(type: string, id: string): OutcomeError {
  return fail(404, 'not-found', `${type}/${id} is not stored here`);
}

/** A search reference: `Type/id`, or a bare id when the type is implied. */
function reference(type: string | undefined, value: string, param: string): string {
  const m = /^(?:([A-Z][A-Za-z]{1,63})\/)?([A-Za-z0-9\-.]{1,64})$/.exec(value);
  if (!m || (type === undefined && m[1] === undefined) || (type && m[1] && m[1] !== type)) {
    throw fail(400, 'invalid', `${param} must be ${type ? `${type}/id or an id` : 'Type/id'}`);
  }
  return `${m[1] ?? type}/${m[2]}`;
}

function anchoringExtension(tx: string, s: AnchorStatus): Extension {
  const parts: Extension[] = [
    { url: 'tx', valueString: tx },
    { url: 'state', valueCode: s.state },
  ];
  if (s.state === 'pinned') {
    parts.push(
      { url: 'batch', valueUnsignedInt: s.height },
      { url: 'index', valueUnsignedInt: s.index },
    );
  }
  if (s.state === 'queued') parts.push({ url: 'handedOver', valueBoolean: s.handedOver });
  return { url: ANCHORING_EXTENSION, extension: parts };
}
