/**
 * The FHIR REST routes of the sidecar's EHR-facing API, on fastify: thin adapters from HTTP to the
 * FhirService (service.ts), which does the work. Every route declares its authorisation rule
 * (`config.auth`); the server's one hook enforces it (src/http/auth.ts).
 *
 *   GET    /fhir/metadata                         CapabilityStatement (public)
 *   POST   /fhir                                  transaction / batch Bundle
 *   POST   /fhir/:type                            create (If-None-Exist: conditional create)
 *   PUT    /fhir/:type/:id                        update (If-Match: version check)
 *   PUT    /fhir/:type?query                      conditional update
 *   GET    /fhir/:type/:id                        read (own store first; then, of a record type,
 *                                                 a shared record served here: patient-reads.ts)
 *   GET    /fhir/Provenance/:id                   the Provenance of a record served here
 *   GET    /fhir/:type/:id/_history               history, with each version's anchoring
 *   GET    /fhir/:type/:id/_history/:vid          vread
 *   GET    /fhir/AuditEvent?patient=|entity=      AuditEvent search
 *   GET    /fhir/Patient/:id/$everything          the patient's records, own and shared (with
 *                                                 sharing wired: patient-reads.ts)
 *   GET    /fhir/:RecordType?patient=|subject=    a record type's records of a patient
 *   GET    /fhir/Patient?identifier=|birthdate=|_id=   this institution's name for a patient
 *   GET    /fhir/Patient/:idHash                  a ledger patient (registered elsewhere)
 *   DELETE, PATCH /fhir/:type/:id                 405: the ledger never forgets
 *
 * What a token may do (http/auth.ts requireAccess, authz/access.ts): writes need create/update
 * scopes on every type written (a patient's token writes nothing); searches need search on the
 * type and, for a patient's token, `patient=` (or `subject=`) naming its patient; `$everything`
 * needs the token's patient (or a system token); reads by id of a patient's token reach only its
 * Patient, and the shared records (and Provenance) served here for that patient: a shared record
 * read by id is checked as $everything checks it, in the compartment of the patient it was served
 * for. What a granular scope (`?category=`) does not cover is left out of the answers, and a read
 * by id of a shared record it does not cover is refused.
 */
import type { Bundle, CapabilityStatement, Resource } from '@medplum/fhirtypes';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { type Access, decide, permitted } from '../authz/access.ts';
import type { Interaction } from '../authz/scopes.ts';
import { accessOf, REALM, requireAccess, requireEverything } from '../http/auth.ts';
import { contextOf, entryHeaders, rawOf, sendEntry, sendFhir } from '../http/request.ts';
import { fail, issue, OutcomeError } from './outcome.ts';
import { notHeldHere, type PatientReads, type ReadGuard } from './patient-reads.ts';
import type { FhirService } from './service.ts';
import { responseBundle } from './transaction.ts';

export interface FhirRoutesDeps {
  readonly service: FhirService;
  /** The CapabilityStatement for this base URL. */
  readonly capability: (base: string) => CapabilityStatement;
  /** Resource types this sidecar stores (the mapping's, and Patient). */
  readonly types: ReadonlySet<string>;
  /** The FHIR base URL of a request (configured, or from its Host). */
  readonly base: (req: FastifyRequest) => string;
  /** Patient reads over own and shared records ($everything, searches by patient). */
  readonly reads?: PatientReads;
}

const TYPE = /^[A-Z][A-Za-z]{1,63}$/;
const ID = /^[A-Za-z0-9\-.]{1,64}$/;

type TypeParams = { type: string };
type IdParams = { type: string; id: string };
type VersionParams = IdParams & { vid: string };

export function registerFhirRoutes(app: FastifyInstance, deps: FhirRoutesDeps): void {
  const { service } = deps;
  const storedType = (type: string, writing = false): string => {
    if (!TYPE.test(type) || !(deps.types.has(type) || (!writing && type === 'AuditEvent'))) {
      throw fail(404, 'not-supported', `resource type ${type.slice(0, 64)} is not served here`);
    }
    return type;
  };
  const checkId = (id: string): string => {
    if (!ID.test(id)) throw fail(400, 'invalid', 'the id in the URL is not a FHIR id');
    return id;
  };
  const query = (req: FastifyRequest): string => {
    const at = req.url.indexOf('?');
    return at < 0 ? '' : req.url.slice(at + 1);
  };
  const ehr = { config: { auth: 'ehr' as const } };

  app.get('/fhir/metadata', { config: { auth: 'public' } }, async (req, reply) =>
    sendFhir(reply, 200, deps.capability(deps.base(req))),
  );

  app.post('/fhir', ehr, async (req, reply) => {
    for (const [type, interaction] of bundleAccess(req.body)) {
      requireAccess(req, { resourceType: type, interaction, compartment: false });
    }
    const result = await service.postBundle(req.body, rawOf(req), contextOf(req));
    return sendFhir(reply, 200, responseBundle(result));
  });

  app.post<{ Params: TypeParams }>('/fhir/:type', ehr, async (req, reply) => {
    const type = storedType(req.params.type, true);
    requireAccess(req, { resourceType: type, interaction: 'c', compartment: false });
    const ifNoneExist = header(req, 'if-none-exist');
    const ctx = contextOf(req);
    const r = await service.create(type, req.body, rawOf(req), ifNoneExist, ctx);
    return sendEntry(reply, r, entryHeaders(deps.base(req), r), ctx.returns);
  });

  const update = async (
    req: FastifyRequest<{ Params: TypeParams }>,
    reply: FastifyReply,
    target: { id: string } | { query: string },
  ) => {
    const type = storedType(req.params.type, true);
    requireAccess(req, { resourceType: type, interaction: 'u', compartment: false });
    const ifMatch = header(req, 'if-match');
    const ctx = contextOf(req);
    const r = await service.update(type, target, req.body, rawOf(req), ifMatch, ctx);
    return sendEntry(reply, r, entryHeaders(deps.base(req), r), ctx.returns);
  };

  app.put<{ Params: IdParams }>('/fhir/:type/:id', ehr, (req, reply) =>
    update(req, reply, { id: checkId(req.params.id) }),
  );

  app.put<{ Params: TypeParams }>('/fhir/:type', ehr, (req, reply) => {
    const q = query(req)
      .split('&')
      .filter((p) => p !== '' && !p.startsWith('_format='))
      .join('&');
    if (q === '') {
      throw fail(
        400,
        'invalid',
        'PUT /fhir/Type needs an id, or a search query (conditional update)',
      );
    }
    return update(req, reply, { query: q });
  });

  app.get<{ Params: TypeParams }>('/fhir/:type', ehr, async (req, reply) => {
    const type = storedType(req.params.type);
    const { reads } = deps;
    const base = deps.base(req);
    if (type === 'AuditEvent' || type === 'Patient') {
      requireAccess(req, { resourceType: type, interaction: 's', compartment: false });
    }
    if (type === 'AuditEvent') {
      return sendFhir(reply, 200, await service.searchAudit(query(req), base, contextOf(req)));
    }
    if (reads !== undefined && type === 'Patient') {
      return sendFhir(reply, 200, await reads.searchPatients(query(req), base, contextOf(req)));
    }
    if (reads !== undefined) {
      const patient = patientParam(query(req));
      const access = requireAccess(req, {
        resourceType: type,
        interaction: 's',
        ...(patient !== undefined ? { patient } : {}),
      });
      const found = await reads.searchByPatient(type, query(req), base, contextOf(req));
      return sendFhir(reply, 200, visible(access, 'r', found));
    }
    throw fail(400, 'not-supported', `search on ${type} is not supported by this sidecar`);
  });

  app.get<{ Params: { id: string } }>('/fhir/Patient/:id/$everything', ehr, async (req, reply) => {
    const { reads } = deps;
    if (reads === undefined) {
      throw fail(400, 'not-supported', '$everything is not supported by this sidecar');
    }
    const id = checkId(req.params.id);
    const access = requireEverything(req, id);
    const found = await reads.everything(id, query(req), deps.base(req), contextOf(req));
    return sendFhir(reply, 200, visible(access, 'r', found));
  });

  /**
   * A read by id of a stored type (read, history, vread): this institution's own store first, then
   * what is served here from other holders. A patient's token reads no own record by id (as
   * before), but may read a shared record served here for its own patient; anything else is the
   * refusal it was. When the own store has nothing (404), `fallback` may answer instead.
   */
  const ownThenShared = async (
    req: FastifyRequest,
    reply: FastifyReply,
    type: string,
    id: string,
    own: () => Promise<Answer>,
    forPatient: (() => Promise<Answer | undefined>) | undefined,
    fallback: (notHere: OutcomeError) => Promise<Answer>,
  ) => {
    const request = readRequest(type, id);
    const access = accessOf(req);
    if (!decide(access, request).ok) {
      const patientToken = access.kind === 'token' && access.patient !== undefined;
      const found = patientToken ? await forPatient?.() : undefined;
      if (found !== undefined) return sendFhir(reply, 200, found.resource, found.headers);
      requireAccess(req, request);
    }
    let found: Answer;
    try {
      found = await own();
    } catch (err) {
      if (!(err instanceof OutcomeError && err.status === 404)) throw err;
      found = await fallback(err);
    }
    return sendFhir(reply, 200, found.resource, found.headers);
  };
  /** A stored version's answer, with its version headers. */
  const stored = (found: { resource: Resource; version: number; lastUpdated: string }): Answer => ({
    resource: found.resource,
    headers: versionHeaders(found),
  });
  /** A shared record's answer (undefined: nothing was served here under its id). */
  const served = (found: Resource | undefined): Answer | undefined =>
    found === undefined ? undefined : { resource: found, headers: servedHeaders(found) };
  /** The answer, or `otherwise` when there is none. */
  const orElse = (found: Answer | undefined, otherwise: OutcomeError): Answer => {
    if (found === undefined) throw otherwise;
    return found;
  };

  app.get<{ Params: IdParams }>('/fhir/:type/:id', ehr, async (req, reply) => {
    const type = storedType(req.params.type);
    const id = checkId(req.params.id);
    const ctx = contextOf(req);
    const shared = deps.reads?.sharesType(type) ? deps.reads : undefined;
    const sharedRecord = async () =>
      served(await shared?.readShared(type, id, ctx, readGuard(req, type)));
    return ownThenShared(
      req,
      reply,
      type,
      id,
      async () => stored(await service.read(type, id, ctx)),
      shared && sharedRecord,
      async (notHere) => {
        // Not stored here: a Patient id may name a ledger patient (registered elsewhere), a record
        // type's id a shared record served here.
        if (type === 'Patient') {
          const ledger = await deps.reads?.readLedgerPatient(id, ctx);
          if (ledger === undefined) throw notHere;
          return { resource: ledger };
        }
        if (shared === undefined) throw notHere;
        return orElse(await sharedRecord(), notHeldHere(type, id));
      },
    );
  });

  // Provenance is no stored type (the default mapping ignores it): this route serves the
  // Provenance of the records served here, by id (the record's tx hash). A mapping that stores
  // Provenance has its own read first.
  app.get<{ Params: { id: string } }>('/fhir/Provenance/:id', ehr, async (req, reply) => {
    const id = checkId(req.params.id);
    const ctx = contextOf(req);
    if (deps.types.has('Provenance') && decide(accessOf(req), readRequest('Provenance', id)).ok) {
      try {
        const found = await service.read('Provenance', id, ctx);
        return sendFhir(reply, 200, found.resource, versionHeaders(found));
      } catch (err) {
        if (!(err instanceof OutcomeError && err.status === 404)) throw err;
      }
    }
    const found = await deps.reads?.readProvenance(id, ctx, readGuard(req));
    if (found === undefined) {
      throw fail(
        404,
        'not-found',
        `Provenance/${id} is not known here: a Provenance is served with its record, by the patient's $everything or a search with _revinclude=Provenance:target`,
      );
    }
    return sendFhir(reply, 200, found);
  });

  app.get<{ Params: IdParams }>('/fhir/:type/:id/_history', ehr, async (req, reply) => {
    const type = storedType(req.params.type);
    const id = checkId(req.params.id);
    const ctx = contextOf(req);
    const shared = deps.reads?.sharesType(type) ? deps.reads : undefined;
    const history = async () => {
      const found = await shared?.readSharedHistory(
        type,
        id,
        deps.base(req),
        ctx,
        readGuard(req, type),
      );
      return found === undefined ? undefined : { resource: found };
    };
    return ownThenShared(
      req,
      reply,
      type,
      id,
      async () => ({ resource: await service.history(type, id, deps.base(req), ctx) }),
      shared && history,
      // Not stored here: a shared record served here has the versions its holder served.
      async (notHere) =>
        orElse(shared && (await history()), shared ? notHeldHere(type, id) : notHere),
    );
  });

  app.get<{ Params: VersionParams }>('/fhir/:type/:id/_history/:vid', ehr, async (req, reply) => {
    const type = storedType(req.params.type);
    const id = checkId(req.params.id);
    const { vid } = req.params;
    const ctx = contextOf(req);
    const shared = deps.reads?.sharesType(type) ? deps.reads : undefined;
    const version = async () =>
      served(await shared?.readSharedVersion(type, id, vid, ctx, readGuard(req, type)));
    return ownThenShared(
      req,
      reply,
      type,
      id,
      async () => stored(await service.vread(type, id, vid, ctx)),
      shared && version,
      // Not stored here: a version of a shared record served here; else the 404 it was.
      async (notHere) => orElse(shared && (await version()), notHere),
    );
  });

  for (const method of ['DELETE', 'PATCH'] as const) {
    app.route<{ Params: IdParams }>({
      method,
      url: '/fhir/:type/:id',
      config: { auth: 'ehr' },
      handler: async () => {
        throw new OutcomeError(
          405,
          [
            issue(
              'not-supported',
              `${method} is not supported: the ledger never forgets; send the corrected resource with PUT, or PUT it with its status set to entered-in-error`,
            ),
          ],
          { allow: 'GET, PUT' },
        );
      },
    });
  }
}

/** A read by id: of a Patient, in that patient's compartment; of anything else, by a non-patient token. */
function readRequest(type: string, id: string) {
  return type === 'Patient'
    ? { resourceType: type, interaction: 'r' as const, patient: id }
    : { resourceType: type, interaction: 'r' as const, compartment: false };
}

/**
 * The checks of a read by id of what was served for a patient, as $everything makes them: the
 * patient's compartment and the type's read scope (`type`), or for a Provenance any read scope of
 * the patient, then a granular scope on what was found (a Provenance: any one of its targets).
 */
/** What a read answers: the resource and its headers (ETag, Last-Modified). */
interface Answer {
  readonly resource: Resource;
  readonly headers?: Record<string, string>;
}

function readGuard(req: FastifyRequest, type?: string): ReadGuard {
  const access = accessOf(req);
  return {
    patient: (patient) => {
      if (type === undefined) requireEverything(req, patient);
      else requireAccess(req, { resourceType: type, interaction: 'r', patient });
    },
    resources: (patient, found) => {
      const seen = (r: Resource) =>
        decide(access, { resourceType: r.resourceType, interaction: 'r', patient }).ok &&
        permitted(access, 'r', [r]).length > 0;
      if (found.some(seen)) return;
      const reason = "the token's scopes do not cover this record";
      throw new OutcomeError(403, [issue('forbidden', reason)], {
        'www-authenticate': `Bearer realm="${REALM}", error="insufficient_scope", error_description="${reason}"`,
      });
    },
  };
}

/** ETag and Last-Modified of a served resource, from its meta. */
function servedHeaders(r: Resource): Record<string, string> {
  const v = r.meta?.versionId;
  const at = r.meta?.lastUpdated;
  return {
    ...(v === undefined ? {} : { etag: `W/"${v}"` }),
    ...(at === undefined ? {} : { 'last-modified': new Date(at).toUTCString() }),
  };
}

/** The patient a search names: `patient=id`, `patient=Patient/id` or `subject=Patient/id`. */
function patientParam(q: string): string | undefined {
  const params = new URLSearchParams(q);
  const named = [...params.getAll('patient'), ...params.getAll('subject')].map((v) =>
    v.startsWith('Patient/') ? v.slice('Patient/'.length) : v,
  );
  const distinct = new Set(named);
  return distinct.size === 1 ? [...distinct][0] : undefined;
}

/** The types and interactions a transaction or batch Bundle's entries ask for. */
function bundleAccess(body: unknown): Array<[string, Interaction]> {
  const entries = (body as Bundle | null)?.entry;
  if (!Array.isArray(entries)) return [];
  const out = new Map<string, [string, Interaction]>();
  for (const e of entries) {
    const method = e?.request?.method;
    const type = e?.resource?.resourceType ?? String(e?.request?.url ?? '').split(/[/?]/)[0];
    if (typeof type !== 'string' || !/^[A-Z][A-Za-z]{1,63}$/.test(type)) continue;
    const interaction: Interaction =
      method === 'PUT' ? 'u' : method === 'GET' ? 's' : method === 'DELETE' ? 'd' : 'c';
    out.set(`${type} ${interaction}`, [type, interaction]);
  }
  return [...out.values()];
}

/**
 * A searchset with what a granular scope does not cover left out: matches the token may not see,
 * and Provenance whose targets were all left out. OperationOutcomes stay.
 */
function visible(access: Access, interaction: Interaction, bundle: Bundle): Bundle {
  if (access.kind === 'ehr' || bundle.entry === undefined) return bundle;
  const resources = bundle.entry.map((e) => e.resource).filter((r) => r !== undefined);
  const plain = resources.filter(
    (r) => r.resourceType !== 'OperationOutcome' && r.resourceType !== 'Provenance',
  );
  const kept = new Set(permitted(access, interaction, plain));
  const keptRefs = new Set([...kept].map((r) => `${r.resourceType}/${r.id}`));
  const entry = bundle.entry.filter((e) => {
    const r = e.resource;
    if (r === undefined || r.resourceType === 'OperationOutcome') return true;
    if (r.resourceType === 'Provenance') {
      return (r.target ?? []).some((t) =>
        keptRefs.has(String(t.reference ?? '').split('/_history')[0] ?? ''),
      );
    }
    return kept.has(r);
  });
  const dropped = bundle.entry.length - entry.length;
  return {
    ...bundle,
    entry,
    ...(bundle.total !== undefined ? { total: Math.max(0, bundle.total - dropped) } : {}),
  };
}

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === 'string' ? v : undefined;
}

function versionHeaders(v: { version: number; lastUpdated: string }): Record<string, string> {
  return { etag: `W/"${v.version}"`, 'last-modified': new Date(v.lastUpdated).toUTCString() };
}
