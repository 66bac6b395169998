/**
 * What the HTTP layer adds to fastify's requests and replies for the FHIR routes: the route's
 * authorisation rule (route config `auth`), the principal the authorisation hook found, the raw
 * body bytes, the negotiated response type; and the helpers that answer in FHIR JSON.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { AuditAgent } from '../fhir/audit.ts';
import { operationOutcome } from '../fhir/outcome.ts';
import { Timings } from '../fhir/timings.ts';
import { type EntryResult, type RequestContext, writeDone } from '../fhir/transaction.ts';
import type { AuthRule } from './auth.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route (auth.ts); every route must say. */
    auth?: AuthRule;
    /**
     * 'guess': the route's answer tells a caller whether a guess was right (an enrolment code, a
     * pending request id, a token): each client address gets `HttpOpts.guessLimit` calls of
     * such routes per window (server.ts), then 429 with Retry-After.
     */
    limit?: 'guess';
  }
  interface FastifyRequest {
    /** Set by the authorisation hook before any handler runs. */
    principal: AuditAgent | null;
    /** The request body as received (FHIR JSON routes). */
    rawBody: Uint8Array | null;
    /** The response media type negotiated from Accept and _format. */
    responseType: string;
    /** Where the request's time went (set by contextOf; sent as Server-Timing). */
    timings: Timings | null;
  }
}

export const FHIR_JSON = 'application/fhir+json';

/** The FHIR service's view of a request: who, which request, and the Prefer header. */
export function contextOf(req: FastifyRequest): RequestContext {
  if (req.principal === null) throw new Error('a handler ran without the authorisation hook');
  const prefer = String(req.headers.prefer ?? '');
  req.timings ??= new Timings();
  return {
    agent: req.principal,
    requestId: req.id,
    ...returnPreference(prefer),
    timings: req.timings,
  };
}

/**
 * `Prefer: return=minimal | representation | OperationOutcome` (FHIR RESTful API, "Managing
 * Return Content"); another value, or none, leaves the choice to the server.
 */
export function returnPreference(prefer: string): Pick<RequestContext, 'returns'> {
  const m = /(?:^|[\s,;])return=(minimal|representation|OperationOutcome)\b/.exec(prefer);
  return m ? { returns: m[1] as RequestContext['returns'] & string } : {};
}

/**
 * Answers a single create or update (an entry result holding the resource) as the client preferred:
 * the resource (the default), no body (`minimal`), or an OperationOutcome saying what happened.
 */
export function sendEntry(
  reply: FastifyReply,
  r: EntryResult,
  headers: Readonly<Record<string, string>>,
  returns: RequestContext['returns'],
): FastifyReply {
  if (returns === 'minimal') {
    const timing = reply.request.timings?.header();
    if (timing) reply.header('server-timing', timing);
    return reply.code(r.status).headers(headers).send();
  }
  if (returns === 'OperationOutcome') {
    return sendFhir(reply, r.status, operationOutcome(r.outcome ?? [writeDone(r)]), headers);
  }
  return sendFhir(reply, r.status, r.resource ?? {}, headers);
}

/** The raw body of a FHIR JSON request. */
export function rawOf(req: FastifyRequest): Uint8Array {
  return req.rawBody ?? new Uint8Array(0);
}

/** Sends a FHIR resource with `status`, in the negotiated JSON media type. */
export function sendFhir(
  reply: FastifyReply,
  status: number,
  body: unknown,
  headers: Readonly<Record<string, string>> = {},
): FastifyReply {
  const timing = reply.request.timings?.header();
  if (timing) reply.header('server-timing', timing);
  return reply
    .code(status)
    .headers(headers)
    .type(`${reply.request.responseType || FHIR_JSON}; charset=utf-8`)
    .send(JSON.stringify(body));
}

/** The headers of an entry result: Location, ETag, Last-Modified. */
export function entryHeaders(
  base: string,
  r: { location?: string; etag?: string; lastModified?: string },
): Record<string, string> {
  return {
    ...(r.location ? { location: `${base}/${r.location}` } : {}),
    ...(r.etag ? { etag: r.etag } : {}),
    ...(r.lastModified ? { 'last-modified': new Date(r.lastModified).toUTCString() } : {}),
  };
}
