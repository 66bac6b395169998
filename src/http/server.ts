/**
 * The sidecar's HTTP server (fastify): FHIR R4 JSON in and out, one authorisation hook, one error
 * translation, logs without patient data.
 *
 * - Bodies: `application/fhir+json` and `application/json` (and the old `application/json+fhir`)
 *   are parsed here (as bytes first: the FHIR service needs them for idempotency, the validator
 *   worker gets the text as sent); any other content type is 415, a body over `bodyLimit` is 413,
 *   malformed JSON is 400. The default limit (32 MiB) admits the largest real patient bundles
 *   (Synthea patients reach 1,111 entries and 4 MB).
 * - Responses: `application/fhir+json` unless Accept or `_format` asks for `application/json`;
 *   a request that accepts neither (`_format=xml`) is 406.
 * - Authorisation: the first onRequest hook asks the authoriser (auth.ts) with the route's rule;
 *   a route without a rule cannot even be registered, and a request for no route at all is held
 *   to the strictest rule before it hears 404.
 * - Errors: every one is an OperationOutcome with its status (src/fhir/outcome.ts), headers such
 *   as Retry-After and WWW-Authenticate included.
 * - Logs (pino through fastify): one line per request with its id (X-Request-Id, echoed back),
 *   method, route pattern (never the URL: no ids or search values), status and time; no
 *   headers, no bodies, no identifiers. Server faults are logged with their error name and code.
 * - Observability (when given): each request's duration by route template, method and status
 *   class, and ingest counts (metrics.ts); `GET /metrics` for Prometheus (the EHR's token unless
 *   `metricsPublic`), `GET /health/live` and `GET /health/ready` (public, health.ts).
 */
import { randomUUID } from 'node:crypto';
import rateLimit from '@fastify/rate-limit';
import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from 'fastify';
import { fail, issue, OutcomeError, operationOutcome, outcomeOf } from '../fhir/outcome.ts';
import { AUTH_RULES, type Authoriser, type AuthRule } from './auth.ts';
import type { Health } from './health.ts';
import type { SidecarMetrics } from './metrics.ts';
import { FHIR_JSON, sendFhir } from './request.ts';

export interface HttpOpts {
  /** Largest request body in bytes (413 beyond). */
  readonly bodyLimit: number;
  /** pino level: 'info' logs every request, 'warn' only problems, 'silent' nothing. */
  readonly logLevel: string;
  /** Where logs go (default stdout); tests capture them. */
  readonly logStream?: { write(line: string): void };
  /** Calls per client address and window to the routes marked `limit: 'guess'`. */
  readonly guessLimit: { readonly max: number; readonly windowMs: number };
  /** Metrics (metrics.ts): requests and ingest are observed, `GET /metrics` serves them. */
  readonly metrics?: Pick<SidecarMetrics, 'observeRequest' | 'observeIngest' | 'scrape'>;
  /**
   * `GET /metrics` without a token (only where the port is not reachable from the internet);
   * default false: it needs the EHR's token like the FHIR API.
   */
  readonly metricsPublic: boolean;
  /** Readiness checks (health.ts): `GET /health/live` and `GET /health/ready`. */
  readonly health?: Health;
}

export const defaultHttpOpts: HttpOpts = {
  bodyLimit: 32 * 1024 * 1024,
  logLevel: 'info',
  guessLimit: { max: 300, windowMs: 60_000 },
  metricsPublic: false,
};

const JSON_TYPES = ['application/fhir+json', 'application/json', 'application/json+fhir'];
const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** The server, with its parsers, hooks and error handling; `routes` adds the routes. */
export function buildHttpServer(
  authoriser: Authoriser,
  routes: (app: FastifyInstance) => void,
  options: Partial<HttpOpts> = {},
): FastifyInstance {
  const opts = { ...defaultHttpOpts, ...options };
  if (!Number.isSafeInteger(opts.bodyLimit) || opts.bodyLimit < 1024) {
    throw new RangeError(`bodyLimit must be an integer >= 1024 bytes, got ${opts.bodyLimit}`);
  }
  const { max, windowMs } = opts.guessLimit;
  if (!Number.isSafeInteger(max) || max < 1 || !Number.isSafeInteger(windowMs) || windowMs < 1) {
    throw new RangeError('guessLimit: max and windowMs must be integers >= 1');
  }
  const app = Fastify({
    bodyLimit: opts.bodyLimit,
    logger: {
      level: opts.logLevel,
      ...(opts.logStream ? { stream: opts.logStream } : {}),
      // Nothing from the request is logged but what the onResponse hook names.
      serializers: { req: () => ({}), res: () => ({}) },
    },
    logController: new LogController({ disableRequestLogging: true }),
    requestIdHeader: false,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
    return503OnClosing: true,
  });
  app.decorateRequest('principal', null);
  app.decorateRequest('rawBody', null);
  app.decorateRequest('responseType', '');
  app.decorateRequest('timings', null);

  app.removeAllContentTypeParsers();
  app.addContentTypeParser(JSON_TYPES, { parseAs: 'buffer' }, (req, body, done) => {
    const bytes = body as Buffer;
    req.rawBody = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (bytes.length === 0)
      return done(fail(400, 'structure', 'the request body is empty'), undefined);
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      return done(fail(400, 'structure', 'the request body is not valid UTF-8'), undefined);
    }
    try {
      // JSON.parse's own message quotes the input, which may be patient data: not passed on.
      done(null, JSON.parse(text));
    } catch {
      done(fail(400, 'structure', 'the request body is not valid JSON'), undefined);
    }
  });

  // OAuth 2.0 endpoints take forms (RFC 6749); nothing else here does.
  app.addContentTypeParser(
    'application/x-www-form-urlencoded',
    { parseAs: 'string', bodyLimit: 64 * 1024 },
    (req, body, done) => {
      if (!req.url.startsWith('/smart/')) {
        return done(
          fail(
            415,
            'not-supported',
            'Content-Type must be application/fhir+json or application/json',
          ),
          undefined,
        );
      }
      const params = new URLSearchParams(body as string);
      const form: Record<string, string> = Object.create(null);
      for (const [k, v] of params) {
        if (k in form) {
          return done(
            fail(400, 'invalid', `the form repeats the parameter ${k.slice(0, 64)}`),
            undefined,
          );
        }
        form[k] = v;
      }
      done(null, form);
    },
  );

  // Every route must say who may call it.
  app.addHook('onRoute', (route) => {
    const rule = route.config?.auth;
    if (rule === undefined || !AUTH_RULES.includes(rule)) {
      throw new Error(
        `route ${route.method} ${route.url} declares no authorisation rule (config.auth)`,
      );
    }
    // Runs before the rate limiter's own onRoute hook, which reads this.
    if (route.config?.limit === 'guess') {
      (route.config as Record<string, unknown>).rateLimit = {
        max: opts.guessLimit.max,
        timeWindow: opts.guessLimit.windowMs,
      };
    }
  });
  // Per client address, in memory (one sidecar process); only for the routes marked above.
  app.register(rateLimit, {
    global: false,
    errorResponseBuilder: (_req, ctx) =>
      new OutcomeError(ctx.statusCode, [
        issue('throttled', `too many attempts from this address: try again in ${ctx.after}`),
      ]),
  });

  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-request-id', req.id);
    const rule: AuthRule = req.routeOptions.config?.auth ?? 'ehr';
    req.principal = await authoriser.authorise(rule, req.headers.authorization, req.ip);
    // FHIR routes negotiate their JSON flavour; the others (portal pages, OAuth) answer in their
    // own media types, and in FHIR JSON only for errors.
    req.responseType = req.url.startsWith('/fhir') ? negotiate(req) : FHIR_JSON;
  });

  app.addHook('onResponse', async (req, reply) => {
    const line = {
      method: req.method,
      route: req.routeOptions.url ?? '(no route)',
      status: reply.statusCode,
      ms: Math.round(reply.elapsedTime),
    };
    if (reply.statusCode >= 500) req.log.error(line, 'request failed');
    else req.log.info(line, 'request');
    if (opts.metrics !== undefined) observe(opts.metrics, req, reply);
  });

  app.setErrorHandler((err: FastifyError, req, reply) => sendError(err, req, reply));
  app.setNotFoundHandler((req, reply) =>
    sendError(fail(404, 'not-found', `no ${req.method} route here`), req, reply),
  );
  // The routes load after the rate limiter (avvio loads plugins in order), so its hook sees them.
  app.register(async (scope) => {
    routes(scope);
    registerObservability(scope, opts);
  });
  return app;
}

/** A request's duration, and for the ingest routes its outcome and resources (onResponse). */
function observe(
  metrics: NonNullable<HttpOpts['metrics']>,
  req: FastifyRequest,
  reply: FastifyReply,
): void {
  const route = req.routeOptions.url;
  const ms = reply.elapsedTime;
  metrics.observeRequest(route, req.method, reply.statusCode, ms);
  if (req.method !== 'POST') return;
  if (route === '/fhir') {
    const entry = (req.body as { entry?: unknown } | null | undefined)?.entry;
    const resources = Array.isArray(entry) ? entry.length : 0;
    metrics.observeIngest('bundle', reply.statusCode, resources, ms, req.timings?.stages);
  } else if (route === '/fhir/:type') {
    metrics.observeIngest('create', reply.statusCode, 1, ms, req.timings?.stages);
  }
}

/** `GET /metrics`, `GET /health/live`, `GET /health/ready`, when their parts are given. */
function registerObservability(app: FastifyInstance, opts: HttpOpts): void {
  const { metrics, health } = opts;
  if (metrics !== undefined) {
    const auth: AuthRule = opts.metricsPublic ? 'public' : 'ehr';
    app.get('/metrics', { config: { auth } }, async (_req, reply) => {
      const { contentType, text } = await metrics.scrape();
      return reply.code(200).type(contentType).send(text);
    });
  }
  if (health !== undefined) {
    app.get('/health/live', { config: { auth: 'public' } }, async (_req, reply) =>
      reply.code(200).type('application/json').send({ status: 'live' }),
    );
    app.get('/health/ready', { config: { auth: 'public' } }, async (_req, reply) => {
      const r = await health.readiness();
      return reply
        .code(r.status === 'ready' ? 200 : 503)
        .header('cache-control', 'no-store')
        .type('application/json')
        .send(r);
    });
  }
}

/** The response media type from `_format` and Accept, or 406. */
function negotiate(req: FastifyRequest): string {
  const format = (req.query as Record<string, unknown> | undefined)?._format;
  if (format !== undefined) {
    const f = String(format).toLowerCase().split(';')[0]!.trim();
    if (f === 'json' || f === FHIR_JSON || f === 'application/json+fhir') return FHIR_JSON;
    if (f === 'application/json') return 'application/json';
    throw fail(
      406,
      'not-supported',
      '_format: this server speaks FHIR JSON only (json, application/fhir+json)',
    );
  }
  const accept = String(req.headers.accept ?? '').toLowerCase();
  if (accept === '') return FHIR_JSON;
  const types = accept.split(',').map((t) => t.split(';')[0]!.trim());
  if (
    types.some(
      (t) =>
        t === FHIR_JSON || t === 'application/json+fhir' || t === '*/*' || t === 'application/*',
    )
  ) {
    return FHIR_JSON;
  }
  if (types.includes('application/json')) return 'application/json';
  throw fail(
    406,
    'not-supported',
    'Accept: this server answers application/fhir+json or application/json only',
  );
}

/** fastify's own errors (body limits, media types) as OutcomeErrors. */
function fromFastify(err: FastifyError): unknown {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return fail(413, 'too-long', 'the request body is larger than this server accepts');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return fail(
        415,
        'not-supported',
        'Content-Type must be application/fhir+json or application/json',
      );
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return fail(400, 'structure', 'the request body is not valid JSON');
    default:
      if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
        return new OutcomeError(err.statusCode, [
          issue('invalid', err.code ? `request refused (${err.code})` : 'request refused'),
        ]);
      }
      return err;
  }
}

function sendError(err: unknown, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  const e =
    typeof (err as FastifyError)?.code === 'string' && (err as FastifyError).code.startsWith('FST_')
      ? fromFastify(err as FastifyError)
      : err;
  const { status, outcome, headers, internal } = outcomeOf(e);
  if (internal) {
    const x = err as Error & { code?: unknown };
    req.log.error(
      { error: x?.name, code: x?.code, message: x?.message, stack: x?.stack },
      'server fault',
    );
  }
  if (!req.responseType) req.responseType = FHIR_JSON;
  return sendFhir(reply, status, outcome.issue ? outcome : operationOutcome([]), headers);
}
