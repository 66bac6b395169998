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
 *   GET    /fhir/:type/:id                        read
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
 * Patient. What a granular scope (`?category=`) does not cover is left out of the answers.
 */
import type { Bundle, CapabilityStatement } from '@medplum/fhirtypes';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { type Access, permitted } from '../authz/access.ts';
import type { Interaction } from '../authz/scopes.ts';
import { requireAccess, requireEverything } from '../http/auth.ts';
import { contextOf, entryHeaders, rawOf, sendFhir } from '../http/request.ts';
import { fail, issue, OutcomeError } from './outcome.ts';
import type { PatientReads } from './patient-reads.ts';
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
    const r = await service.create(type, req.body, rawOf(req), ifNoneExist, contextOf(req));
    return sendFhir(reply, r.status, r.resource ?? {}, entryHeaders(deps.base(req), r));
  });

  const update = async (
    req: FastifyRequest<{ Params: TypeParams }>,
    reply: FastifyReply,
    target: { id: string } | { query: string },
  ) => {
    const type = storedType(req.params.type, true);
    requireAccess(req, { resourceType: type, interaction: 'u', compartment: false });
    const ifMatch = header(req, 'if-match');
    const r = await service.update(type, target, req.body, rawOf(req), ifMatch, contextOf(req));
    return sendFhir(reply, r.status, r.resource ?? {}, entryHeaders(deps.base(req), r));
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

  app.get<{ Params: IdParams }>('/fhir/:type/:id', ehr, async (req, reply) => {
    const type = storedType(req.params.type);
    const id = checkId(req.params.id);
    requireAccess(req, readRequest(type, id));
    const ctx = contextOf(req);
    try {
      const found = await service.read(type, id, ctx);
      return sendFhir(reply, 200, found.resource, versionHeaders(found));
    } catch (err) {
      // Not stored here: a Patient id may name a ledger patient (registered elsewhere).
      const ledger =
        type === 'Patient' && err instanceof OutcomeError && err.status === 404
          ? await deps.reads?.readLedgerPatient(id, ctx)
          : undefined;
      if (ledger === undefined) throw err;
      return sendFhir(reply, 200, ledger);
    }
  });

  app.get<{ Params: IdParams }>('/fhir/:type/:id/_history', ehr, async (req, reply) => {
    const type = storedType(req.params.type);
    requireAccess(req, readRequest(type, req.params.id));
    const bundle = await service.history(
      type,
      checkId(req.params.id),
      deps.base(req),
      contextOf(req),
    );
    return sendFhir(reply, 200, bundle);
  });

  app.get<{ Params: VersionParams }>('/fhir/:type/:id/_history/:vid', ehr, async (req, reply) => {
    const type = storedType(req.params.type);
    requireAccess(req, readRequest(type, req.params.id));
    const found = await service.vread(type, checkId(req.params.id), req.params.vid, contextOf(req));
    return sendFhir(reply, 200, found.resource, versionHeaders(found));
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
