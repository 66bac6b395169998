/**
 * FHIR transaction and batch processing (http.html#transaction), framework-free: the HTTP routes
 * hand over the parsed bundle and its bytes, and get back the response bundle or an error that
 * outcome.ts translates.
 *
 * A transaction, all or nothing: validate (validate.ts, with every issue's expression) -> take the
 * locks of its conditions -> map it (src/mapping: ids, `urn:uuid` rewriting, records) against the
 * stored copies -> bind each record's patient to the ledger (patient-binding.ts) -> ingest every
 * record (src/sidecar: encrypt, store, sign and queue its tx) with the FHIR copies and the
 * AuditEvent staged into the same atomic LevelDB batch. Any failure leaves no record, no tx and no
 * copy behind (only the failure's AuditEvent). A batch runs each entry (each record with its own
 * entries) as such a unit of its own; a failed entry gets its own status and OperationOutcome.
 *
 * Idempotent re-posting: the id of a created resource is derived from the SHA-256 of the request's
 * bytes and the entry, so posting the same bundle again maps every resource to the ids it got the
 * first time, and the ingest finds each record unchanged: nothing new is stored or anchored, and
 * each entry answers 200 with the location it had. (Two posts are "the same" when their bytes are.)
 *
 * Concurrency: a request holds keyed locks on its bytes' digest, on each conditional query it
 * carries (`ifNoneExist`, conditional update URLs; in a canonical spelling) and on each `Type/id`
 * it PUTs, from before it reads stored matches until its write is durable; so two concurrent
 * conditional creates of one condition make one resource, and the second answers 200 with it.
 * The ingest core locks patients and records on its own.
 */
import { createHash } from 'node:crypto';
import type { Bundle, BundleEntry, OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import { toHex } from '../crypto/bytes.ts';
import { MappingError } from '../mapping/errors.ts';
import {
  type MappedBundle,
  type MappedEntry,
  type MappedRecord,
  mapBundle,
  recordPayload,
} from '../mapping/map-bundle.ts';
import type { FhirMapping } from '../mapping/mapping.ts';
import { isJsonObject } from '../mapping/paths.ts';
import { parseConditional, parseRelative } from '../mapping/stored.ts';
import { isSidecarError } from '../sidecar/errors.ts';
import type { IngestHooks, IngestRecord, IngestResult } from '../sidecar/ingest.ts';
import { KeyedLocks } from '../sidecar/locks.ts';
import type { WriteOp } from '../store/db.ts';
import type { AuditAgent, AuditInteraction, AuditLog } from './audit.ts';
import {
  fail,
  issue,
  OutcomeError,
  operationOutcome,
  outcomeOf,
  sidecarStatus,
} from './outcome.ts';
import type { PatientBinder } from './patient-binding.ts';
import { normaliseQuery, type ResourceStore } from './resource-store.ts';
import type { Timings } from './timings.ts';
import type { ValidationResult } from './validate.ts';

export interface RequestContext {
  readonly agent: AuditAgent;
  readonly requestId: string;
  /**
   * `Prefer: return=...`: `representation` puts each resource in its response entry,
   * `OperationOutcome` an outcome saying what was done; otherwise entries carry neither.
   */
  readonly returns?: 'minimal' | 'representation' | 'OperationOutcome';
  /** Where the request's time goes, by stage (the `Server-Timing` header). */
  readonly timings?: Timings;
}

export interface TransactionDeps {
  readonly mapping: FhirMapping;
  readonly validator: { validate(resource: Resource, text?: string): Promise<ValidationResult> };
  readonly resources: ResourceStore;
  readonly audit: AuditLog;
  readonly binder: Pick<PatientBinder, 'bind'>;
  readonly ingestor: {
    ingest(records: readonly IngestRecord[], hooks?: IngestHooks): Promise<IngestResult[]>;
  };
  /** Writes a batch atomically and durably (when no record carries the writes). */
  readonly write: (ops: readonly WriteOp[]) => Promise<void>;
  /** Txs waiting for the queue (a queue outage fills it). */
  readonly outboxSize: () => number;
  readonly now?: () => number;
}

export interface TransactionOpts {
  /** Entries per bundle. */
  readonly maxEntries: number;
  /** Above this many txs waiting for the queue, writes answer 503 with Retry-After. */
  readonly maxOutbox: number;
  /** Retry-After for that 503, in seconds. */
  readonly retryAfterSeconds: number;
}

export const defaultTransactionOpts: TransactionOpts = {
  maxEntries: 20_000,
  maxOutbox: 100_000,
  retryAfterSeconds: 5,
};

/** One entry's answer. */
export interface EntryResult {
  readonly status: number;
  readonly location?: string;
  readonly etag?: string;
  readonly lastModified?: string;
  readonly resource?: Resource;
  readonly outcome?: OperationOutcomeIssue[];
}

/** What a bundle (or single-resource interaction) produced: one result per entry, in order. */
export interface BundleResult {
  readonly type: 'transaction' | 'batch';
  readonly entries: readonly EntryResult[];
}

const STATUS_TEXT: Record<number, string> = {
  200: 'OK',
  201: 'Created',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  409: 'Conflict',
  412: 'Precondition Failed',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Entity',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

export const statusLine = (status: number): string =>
  `${status} ${STATUS_TEXT[status] ?? 'Unknown'}`;

/** A unit written atomically: entries and the records they make. */
interface Unit {
  readonly entries: readonly number[];
  readonly records: readonly MappedRecord[];
}

const ENTRY_EXPRESSION = /^Bundle\.entry\[(\d+)\]/;

/** Times stages of the request into its Timings, when it has any. */
function timer(ctx: RequestContext): <T>(stage: string, work: () => Promise<T>) => Promise<T> {
  const t = ctx.timings;
  return t === undefined ? (_stage, work) => work() : (stage, work) => t.time(stage, work);
}

export class TransactionProcessor {
  private readonly deps: TransactionDeps;
  private readonly opts: TransactionOpts;
  private readonly locks = new KeyedLocks();
  private readonly now: () => number;

  constructor(deps: TransactionDeps, opts: Partial<TransactionOpts> = {}) {
    this.deps = deps;
    this.opts = { ...defaultTransactionOpts, ...opts };
    this.now = deps.now ?? Date.now;
  }

  /**
   * Processes a transaction or batch Bundle. `raw` is the request body as received (its digest
   * makes created ids idempotent); `interaction` names it in the AuditEvent.
   */
  async process(
    bundle: unknown,
    raw: Uint8Array,
    ctx: RequestContext,
    interaction?: AuditInteraction,
  ): Promise<BundleResult> {
    const type = checkBundle(bundle, this.opts.maxEntries);
    const audited = interaction ?? type;
    try {
      this.checkBackpressure();
      const time = timer(ctx);
      const validation = await time('validate', () => this.validate(bundle as Bundle, raw));
      const digest = createHash('sha256').update(`spchain/fhir/${audited}\n`).update(raw).digest();
      const started = performance.now();
      return await this.locks.with(lockKeys(bundle as Bundle, digest), () => {
        ctx.timings?.add('lock-bundle', performance.now() - started);
        return type === 'transaction'
          ? this.transaction(bundle as Bundle, digest, validation, ctx, audited)
          : this.batch(bundle as Bundle, digest, validation, ctx);
      });
    } catch (err) {
      const { status, outcome } = outcomeOf(err);
      await this.deps.audit.record({
        interaction: audited,
        agent: ctx.agent,
        status,
        entities: [],
        patients: [],
        requestId: ctx.requestId,
        failure: (outcome.issue ?? []).map((i) => i.code).join(', '),
        now: this.now(),
      });
      throw err;
    }
  }

  private checkBackpressure(): void {
    const waiting = this.deps.outboxSize();
    if (waiting > this.opts.maxOutbox) {
      throw new OutcomeError(
        503,
        [
          issue(
            'transient',
            `the tx queue is not taking txs: ${waiting} wait in the outbox; nothing was stored, try again later`,
          ),
        ],
        { 'retry-after': String(this.opts.retryAfterSeconds) },
      );
    }
  }

  /** Every validation issue, by entry (`-1`: the bundle itself). */
  private async validate(
    bundle: Bundle,
    raw: Uint8Array,
  ): Promise<Map<number, OperationOutcomeIssue[]>> {
    const result = await this.deps.validator.validate(bundle, new TextDecoder().decode(raw));
    const byEntry = new Map<number, OperationOutcomeIssue[]>();
    for (const i of result.issues) {
      if (i.severity !== 'error' && i.severity !== 'fatal') continue;
      const m = ENTRY_EXPRESSION.exec(i.expression?.[0] ?? '');
      const at = m ? Number(m[1]) : -1;
      byEntry.set(at, [...(byEntry.get(at) ?? []), i]);
    }
    return byEntry;
  }

  private async transaction(
    bundle: Bundle,
    digest: Uint8Array,
    validation: Map<number, OperationOutcomeIssue[]>,
    ctx: RequestContext,
    interaction: AuditInteraction,
  ): Promise<BundleResult> {
    if (validation.size > 0) {
      throw new OutcomeError(422, [...validation.values()].flat());
    }
    const time = timer(ctx);
    const mapped = await time('map', () => this.map(bundle, digest));
    await time('bind', async () => {
      for (const r of mapped.records)
        await this.deps.binder.bind(r.patient, patientExpression(mapped, r));
    });
    const all = mapped.entries.filter((e) => e.action !== 'read').map((e) => e.index);
    const results = await this.commit(
      bundle,
      mapped,
      { entries: all, records: mapped.records },
      ctx,
      interaction,
    );
    return { type: 'transaction', entries: await this.withReads(bundle, mapped, results, ctx) };
  }

  private async batch(
    bundle: Bundle,
    digest: Uint8Array,
    validation: Map<number, OperationOutcomeIssue[]>,
    ctx: RequestContext,
  ): Promise<BundleResult> {
    const whole = validation.get(-1);
    if (whole) throw new OutcomeError(422, whole);
    const mapped = await timer(ctx)('map', () => this.map(bundle, digest));
    const results = new Map<number, EntryResult>();
    for (const [at, issues] of validation) results.set(at, { status: 422, outcome: issues });
    for (const e of mapped.entries) {
      if (e.action === 'failed' && !results.has(e.index)) results.set(e.index, failedEntry(e));
    }
    const inRecord = new Set(mapped.records.flatMap((r) => r.resources.map((x) => x.entry)));
    const units: Unit[] = [];
    for (const e of mapped.entries) {
      if (!results.has(e.index) && e.action !== 'read' && !inRecord.has(e.index)) {
        units.push({ entries: [e.index], records: [] });
      }
    }
    for (const r of mapped.records) {
      const entries = r.resources.map((x) => x.entry);
      if (entries.some((i) => results.has(i))) continue;
      units.push({ entries, records: [r] });
    }
    for (const unit of units) {
      try {
        for (const r of unit.records)
          await this.deps.binder.bind(r.patient, patientExpression(mapped, r));
        const done = await this.commit(bundle, mapped, unit, ctx, 'batch');
        for (const [at, result] of done) results.set(at, result);
      } catch (err) {
        const { status, outcome, internal } = outcomeOf(err);
        if (internal) throw err;
        for (const at of unit.entries) results.set(at, { status, outcome: outcome.issue ?? [] });
      }
    }
    return { type: 'batch', entries: await this.withReads(bundle, mapped, results, ctx) };
  }

  /**
   * Maps the bundle with ids derived from its digest. Which entries ask for a new id depends, for
   * conditional entries, on what matches now (a conditional create that created the first time
   * matches the second), so for a bundle with conditions a first pass with marker ids learns which
   * entry each id goes to, and the ids are derived from the entry's index; without conditions the
   * entries asking are fixed by the bundle, and the ids follow their order.
   */
  private async map(bundle: Bundle, digest: Uint8Array): Promise<MappedBundle> {
    const stored = await this.deps.resources.snapshotFor(bundle);
    const lastUpdated = new Date(this.now()).toISOString();
    const run = (newId: () => string) =>
      mapBundle(bundle, this.deps.mapping, { newId, stored, lastUpdated });
    let calls = 0;
    if (!hasConditions(bundle)) return run(() => deriveId(digest, calls++));
    const probe = run(() => `probe-${calls++}`);
    const entryOfCall = new Map<number, number>();
    for (const e of probe.entries) {
      if (e.id?.startsWith('probe-')) entryOfCall.set(Number(e.id.slice(6)), e.index);
    }
    calls = 0;
    return run(() => {
      const call = calls++;
      return deriveId(digest, entryOfCall.get(call) ?? -1 - call);
    });
  }

  /**
   * Writes one unit atomically: its records through the ingest core, with the FHIR copies of its
   * entries and the AuditEvent in the same batch. Returns each entry's result.
   */
  private async commit(
    bundle: Bundle,
    mapped: MappedBundle,
    unit: Unit,
    ctx: RequestContext,
    interaction: AuditInteraction,
  ): Promise<Map<number, EntryResult>> {
    const { resources, audit } = this.deps;
    const results = new Map<number, EntryResult>();
    const recordIndex = new Map(unit.records.map((r, k) => [r, k] as const));
    const lastUpdated = new Date(this.now()).toISOString();
    const stage = async (ingested: readonly IngestResult[], ops: WriteOp[]): Promise<void> => {
      const entities: string[] = [];
      const patients = new Set<string>();
      const known = await resources.currents(
        unit.entries.flatMap((at) => {
          const e = mapped.entries[at]!;
          return e.action === 'existing' || e.role === 'ignored' || !e.resource
            ? []
            : [{ type: e.resourceType!, id: e.id! }];
        }),
      );
      for (const at of unit.entries) {
        const e = mapped.entries[at]!;
        const request = requestOf(bundle, at);
        if (e.action === 'existing') {
          const found = await resources.read(e.resourceType!, e.id!);
          if (found === undefined)
            throw fail(
              409,
              'conflict',
              `the match of Bundle.entry[${at}] was not found again`,
              `Bundle.entry[${at}]`,
            );
          results.set(at, located(found.resource, found.version, found.lastUpdated, 200));
          entities.push(versionRef(found.resource, found.version));
          if (found.patient) patients.add(found.patient);
          continue;
        }
        if (e.role === 'ignored') {
          results.set(at, {
            status: 200,
            outcome: [
              issue(
                'informational',
                `${e.resourceType} is ignored by the mapping ${this.deps.mapping.name}: not stored`,
                `Bundle.entry[${at}]`,
                'information',
              ),
            ],
          });
          continue;
        }
        const record = mapped.records[e.record ?? -1];
        const k = record === undefined ? undefined : recordIndex.get(record);
        const tx = k === undefined ? undefined : ingested[k]?.txHash;
        const patient =
          record !== undefined
            ? `Patient/${record.patient.id}`
            : e.role === 'patient'
              ? `Patient/${e.id}`
              : undefined;
        await checkIfMatch(resources, e, request.ifMatch, at);
        const staged = await resources.stage(
          ops,
          {
            resource: e.resource!,
            lastUpdated,
            ...(tx ? { tx } : {}),
            ...(patient ? { patient } : {}),
          },
          known,
        );
        if (request.method === 'POST' && e.action === 'create' && staged.outcome === 'updated') {
          throw fail(
            409,
            'conflict',
            `Bundle.entry[${at}]: these bytes were posted before, and now give ${e.resourceType}/${e.id} another content; post it as a new request`,
            `Bundle.entry[${at}]`,
          );
        }
        results.set(
          at,
          located(
            staged.resource,
            staged.version,
            staged.lastUpdated,
            staged.outcome === 'created' ? 201 : 200,
          ),
        );
        entities.push(versionRef(staged.resource, staged.version));
        if (patient) patients.add(patient);
      }
      audit.stage(ops, {
        interaction,
        agent: ctx.agent,
        status: 200,
        entities,
        patients: [...patients],
        requestId: ctx.requestId,
        now: this.now(),
      });
    };
    if (unit.records.length === 0) {
      const ops: WriteOp[] = [];
      await stage([], ops);
      await this.deps.write(ops);
      return results;
    }
    const records = unit.records.map(toIngestRecord);
    try {
      await this.deps.ingestor.ingest(records, {
        stage,
        ...(ctx.timings ? { timings: ctx.timings } : {}),
      });
    } catch (err) {
      throw sidecarToEntry(err, unit.records);
    }
    return results;
  }

  /** Adds the answers of the read entries (after the writes, as FHIR orders them). */
  private async withReads(
    bundle: Bundle,
    mapped: MappedBundle,
    results: Map<number, EntryResult>,
    ctx: RequestContext,
  ): Promise<EntryResult[]> {
    for (const e of mapped.entries) {
      if (e.action !== 'read') continue;
      const url = requestOf(bundle, e.index).url;
      const rel = parseRelative(url);
      if (!rel || url.includes('/_history/')) {
        results.set(e.index, {
          status: 400,
          outcome: [
            issue(
              'not-supported',
              'a read inside a bundle must be Type/id',
              `Bundle.entry[${e.index}].request.url`,
            ),
          ],
        });
        continue;
      }
      const found = await this.deps.resources.read(rel.resourceType, rel.id);
      results.set(
        e.index,
        found === undefined
          ? {
              status: 404,
              outcome: [
                issue(
                  'not-found',
                  `${rel.resourceType}/${rel.id} is not stored here`,
                  `Bundle.entry[${e.index}].request.url`,
                ),
              ],
            }
          : {
              ...located(found.resource, found.version, found.lastUpdated, 200),
              resource: found.resource,
            },
      );
      if (found) {
        await this.deps.audit.record({
          interaction: 'read',
          agent: ctx.agent,
          status: 200,
          entities: [versionRef(found.resource, found.version)],
          patients: found.patient ? [found.patient] : [],
          requestId: ctx.requestId,
          now: this.now(),
        });
      }
    }
    return mapped.entries.map((e) => {
      const r = results.get(e.index) ?? {
        status: 500,
        outcome: [issue('exception', 'entry not processed')],
      };
      if (r.status >= 400 || e.action === 'read' || ctx.returns === 'representation') return r;
      const bare = withoutResource(r);
      return ctx.returns === 'OperationOutcome' && bare.outcome === undefined
        ? { ...bare, outcome: [writeDone(bare)] }
        : bare;
    });
  }
}

/** The response Bundle of a processed bundle. */
export function responseBundle(result: BundleResult): Bundle {
  return {
    resourceType: 'Bundle',
    type: result.type === 'transaction' ? 'transaction-response' : 'batch-response',
    entry: result.entries.map(
      (r): BundleEntry => ({
        ...(r.resource ? { resource: r.resource } : {}),
        response: {
          status: statusLine(r.status),
          ...(r.location ? { location: r.location } : {}),
          ...(r.etag ? { etag: r.etag } : {}),
          ...(r.lastModified ? { lastModified: r.lastModified } : {}),
          ...(r.outcome ? { outcome: operationOutcome(r.outcome) } : {}),
        },
      }),
    ),
  };
}

/** The bundle's type, or a 400 saying why it is not a transaction or batch Bundle. */
function checkBundle(bundle: unknown, maxEntries: number): 'transaction' | 'batch' {
  if (!isJsonObject(bundle) || typeof bundle.resourceType !== 'string') {
    throw fail(400, 'structure', 'the body is not a FHIR resource (no resourceType)');
  }
  if (bundle.resourceType !== 'Bundle') {
    throw fail(
      400,
      'invalid',
      `POST /fhir takes a transaction or batch Bundle, not a ${bundle.resourceType}`,
      bundle.resourceType,
    );
  }
  if (bundle.type !== 'transaction' && bundle.type !== 'batch') {
    throw fail(400, 'invalid', 'Bundle.type must be transaction or batch', 'Bundle.type');
  }
  if (bundle.entry !== undefined && !Array.isArray(bundle.entry)) {
    throw fail(400, 'structure', 'Bundle.entry must be an array', 'Bundle.entry');
  }
  const n = (bundle.entry as unknown[] | undefined)?.length ?? 0;
  if (n > maxEntries) {
    throw fail(
      400,
      'too-costly',
      `the bundle has ${n} entries, above the limit ${maxEntries}`,
      'Bundle.entry',
    );
  }
  return bundle.type;
}

interface EntryRequest {
  readonly method: string;
  readonly url: string;
  readonly ifMatch?: string;
  readonly ifNoneExist?: string;
}

function requestOf(bundle: Bundle, at: number): EntryRequest {
  const r = bundle.entry?.[at]?.request as Record<string, unknown> | undefined;
  const s = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const ifMatch = s(r?.ifMatch);
  const ifNoneExist = s(r?.ifNoneExist);
  return {
    method: s(r?.method) ?? '',
    url: s(r?.url) ?? '',
    ...(ifMatch === undefined ? {} : { ifMatch }),
    ...(ifNoneExist === undefined ? {} : { ifNoneExist }),
  };
}

/** Lock keys: the digest, every conditional query, every `Type/id` PUT. */
function lockKeys(bundle: Bundle, digest: Uint8Array): string[] {
  const keys = [`d:${toHex(digest)}`];
  (bundle.entry ?? []).forEach((_, at) => {
    const req = requestOf(bundle, at);
    const type = (bundle.entry?.[at]?.resource as { resourceType?: unknown } | undefined)
      ?.resourceType;
    if (req.method === 'POST' && req.ifNoneExist !== undefined && typeof type === 'string') {
      keys.push(`c:${normaliseQuery(type, req.ifNoneExist)}`);
    }
    if (req.method === 'PUT') {
      const cond = parseConditional(req.url);
      if (cond) keys.push(`c:${normaliseQuery(cond.resourceType, cond.query)}`);
      const rel = parseRelative(req.url);
      if (rel) keys.push(`r:${rel.resourceType}/${rel.id}`);
    }
  });
  return keys;
}

/** Does any entry carry a condition whose match can change (ifNoneExist, conditional PUT)? */
function hasConditions(bundle: Bundle): boolean {
  return (bundle.entry ?? []).some((_, at) => {
    const r = requestOf(bundle, at);
    return (
      r.ifNoneExist !== undefined || (r.method === 'PUT' && parseConditional(r.url) !== undefined)
    );
  });
}

/** A created resource's id: from the request's digest and the entry, so a re-post maps alike. */
export function deriveId(digest: Uint8Array, n: number): string {
  const h = createHash('sha256')
    .update('spchain/fhir/id\n')
    .update(digest)
    .update(String(n))
    .digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

const ETAG = /^(?:W\/)?"([A-Za-z0-9\-.]{1,64})"$/;

/** `If-Match` (or `request.ifMatch`): the version the client expects, else 412. */
async function checkIfMatch(
  resources: ResourceStore,
  e: MappedEntry,
  ifMatch: string | undefined,
  at: number,
): Promise<void> {
  if (ifMatch === undefined) return;
  const m = ETAG.exec(ifMatch.trim());
  if (!m) {
    throw fail(
      400,
      'invalid',
      'ifMatch must be an ETag such as W/"3"',
      `Bundle.entry[${at}].request.ifMatch`,
    );
  }
  const current = await resources.read(e.resourceType!, e.id!);
  if (current === undefined || String(current.version) !== m[1]) {
    throw fail(
      412,
      'conflict',
      current === undefined
        ? `${e.resourceType}/${e.id} does not exist, so it cannot be version ${m[1]}`
        : `${e.resourceType}/${e.id} is at version ${current.version}, not ${m[1]}`,
      `Bundle.entry[${at}].request.ifMatch`,
    );
  }
}

function toIngestRecord(r: MappedRecord): IngestRecord {
  const head = r.resources[0]!;
  return {
    patient: r.patient.identifier,
    resourceType: head.resourceType,
    id: head.id,
    content: recordPayload(r),
  };
}

function patientExpression(mapped: MappedBundle, r: MappedRecord): string {
  const own = mapped.patients.find((p) => p.id === r.patient.id);
  return own
    ? `Bundle.entry[${own.entry}].resource`
    : `Bundle.entry[${r.resources[0]!.entry}].resource`;
}

/** A SidecarError names the record's place in the ingest; the client needs the bundle entry. */
function sidecarToEntry(err: unknown, records: readonly MappedRecord[]): unknown {
  if (!isSidecarError(err)) return err;
  const [status, code] = sidecarStatus(err.code);
  if (status >= 500) return err;
  const m = /^entry (\d+)(?: \([^)]*\))?/.exec(err.message);
  const entry = m ? records[Number(m[1])]?.resources[0]?.entry : undefined;
  if (entry === undefined) return new OutcomeError(status, [issue(code, err.message)]);
  const message = err.message.replace(m![0], `Bundle.entry[${entry}]`);
  return new OutcomeError(status, [issue(code, message, `Bundle.entry[${entry}]`)]);
}

/** A batch entry the mapper refused: the status and issues its MappingIssues give. */
function failedEntry(e: MappedEntry): EntryResult {
  const { status, outcome } = outcomeOf(
    new MappingError(
      'UNMAPPABLE_BUNDLE',
      `Bundle.entry[${e.index}] cannot be mapped`,
      {},
      e.issues,
    ),
  );
  return { status, outcome: outcome.issue ?? [] };
}

function located(
  resource: Resource,
  version: number,
  lastModified: string,
  status: number,
): EntryResult {
  return {
    status,
    location: `${resource.resourceType}/${resource.id}/_history/${version}`,
    etag: `W/"${version}"`,
    lastModified,
    resource,
  };
}

/** The informational issue of a successful write: what was written, and which version. */
export function writeDone(r: EntryResult): OperationOutcomeIssue {
  const what = r.location?.replace('/_history/', ', version ') ?? 'the resource';
  return issue(
    'informational',
    `${r.status === 201 ? 'created' : 'stored'} ${what}`,
    undefined,
    'information',
  );
}

function withoutResource(r: EntryResult): EntryResult {
  const { resource: _r, ...rest } = r;
  return rest;
}

function versionRef(resource: Resource, version: number): string {
  return `${resource.resourceType}/${resource.id}/_history/${version}`;
}
