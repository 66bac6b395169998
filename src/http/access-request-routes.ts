/**
 * Access requests over HTTP (paper 5.2 "share"; authz/access-request.ts), under `/spchain`:
 *
 *   PUT  /spchain/patients/:idHash/access-policy   patient-signed, at the patient's home:
 *                                          { minReputation: number >= 0 } -> 200; the threshold
 *                                          an institution's reputation must reach to ask
 *   GET  /spchain/patients/:idHash/access-policy   patient-signed: { minReputation } (null when
 *                                          none is set: then every request is refused, NO_POLICY)
 *   POST /spchain/access-requests          public, at the patient's home (409 NOT_HOME naming
 *                                          the home's index elsewhere): the institution's signed
 *                                          request { idHash, institution, purpose, ts, nonce,
 *                                          signature }. Checks, in order: the body (400 naming
 *                                          the field), the patient (404), home (409), the
 *                                          institution is a member (403 UNKNOWN_INSTITUTION), its
 *                                          signature (403 BAD_SIGNATURE), ts within 300 s (403
 *                                          STALE), the nonce unused (409 REPLAYED), the patient's
 *                                          threshold against the institution's reputation now
 *                                          (403 NO_POLICY, 403 BELOW_THRESHOLD naming both
 *                                          numbers), one pending request per institution (409
 *                                          ALREADY_PENDING) and at most MAX_PENDING per patient
 *                                          (429 TOO_MANY_PENDING) -> 201 { id, state: 'pending',
 *                                          reputation }
 *   GET  /spchain/patients/:idHash/access-requests  patient-signed: the requests, newest first,
 *                                          with the institution's index, name, reputation at the
 *                                          request and now, purpose, time and state
 *   POST /spchain/access-requests/:id/decision  patient-signed (the request's patient):
 *                                          { decision: 'approve', consentId } | { decision:
 *                                          'decline' } -> 200; 409 when already decided. The grant
 *                                          itself goes to the holders as always (POST
 *                                          /spchain/grants, by the portal or the CLI); approving
 *                                          records the Consent id the patient's device made
 *   GET  /spchain/access-requests/:id      public: { state, consentId? } for the requester to poll
 *                                          (the id is unguessable; nothing about the patient)
 *   POST /spchain/access-requests/send     ehr, at the requesting institution's own sidecar:
 *                                          { idHash, purpose, home? } -> signs the request with
 *                                          this institution's signing secret and posts it to the
 *                                          patient's home (`home`: its base URL; default: the
 *                                          directory's URL of the home the ledger names); the
 *                                          home's answer is passed on (forward.ts), + `poll`
 *
 * Reputations come from the node's ReputationView (an institution it does not list has 0; with no
 * view at all every institution has 0). Every route is audited: the request and the decision under
 * `Patient/<idHash>` (so the patient sees who asked), the poll without a patient.
 * CORS as in patient-routes.ts.
 *
 * Sublevel `ar` of the sidecar's LevelDB, sealed values, one-byte tags:
 *   0x01 idHash                      -> f64 minReputation, varint updated (ms)
 *   0x02 id                          -> the request (encodeRecord)
 *   0x03 idHash id                   -> (empty): the patient's requests; ids start with be48(ms)
 *   0x04 u16 institution, nonce      -> varint ts + window (swept once past)
 * Each patient keeps at most MAX_KEPT requests: the oldest decided ones go first.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import {
  ACCESS_REQUEST_WINDOW_MS,
  type AccessRequestDocument,
  checkAccessRequest,
  decideAccessRequest,
  MAX_PENDING_ACCESS_REQUESTS,
  makeAccessRequest,
  parseAccessRequest,
  purposeProblem,
  thresholdProblem,
} from '../authz/access-request.ts';
import { concatBytes, fromHex, toHex } from '../crypto/bytes.ts';
import { type RandomBytes, systemRandom } from '../crypto/random.ts';
import type { AuditInteraction, AuditLog } from '../fhir/audit.ts';
import { audited } from '../fhir/audited.ts';
import { fail, type IssueType, OutcomeError } from '../fhir/outcome.ts';
import type { RequestContext } from '../fhir/transaction.ts';
import { decode, encode, type Reader } from '../ledger/codec.ts';
import { rosterLookup } from '../ledger/membership.ts';
import type { Bytes, InstitutionIndex, Member } from '../ledger/types.ts';
import type { PatientLedger } from '../sidecar/patients.ts';
import { prefixRange } from '../sidecar/share-grants.ts';
import { type Db, openSublevel, type Sublevel, type WriteOp } from '../store/db.ts';
import { be } from '../store/keys.ts';
import { openSeal, sealIn } from '../store/values.ts';
import { postToSidecar } from './forward.ts';
import {
  authenticatePatient,
  checkIdHashParam,
  corsRoute,
  patientContext,
  type ReputationView,
} from './patient-routes.ts';
import { contextOf } from './request.ts';

export const ACCESS_SPACE = 'ar';
/** Requests kept per patient (pending ones are never dropped; at most MAX_PENDING of those). */
export const MAX_KEPT = 100;
const SWEEP_EVERY = 64;
const REFUSAL_SYSTEM = 'urn:spchain:access-request';
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const ID = /^[0-9a-f]{32}$/;

const TAG = { policy: 1, request: 2, byPatient: 3, nonce: 4 } as const;

export type AccessState = 'pending' | 'approved' | 'declined';
const STATES: readonly AccessState[] = ['pending', 'approved', 'declined'];

/** A request as kept at the home. */
export interface StoredAccessRequest {
  /** 16 bytes: be48(created ms) || 10 random bytes. */
  readonly id: Bytes;
  readonly idHash: Bytes;
  readonly institution: InstitutionIndex;
  readonly purpose: string;
  readonly ts: number;
  readonly created: number;
  /** The institution's reputation when it asked. */
  readonly reputation: number;
  readonly state: AccessState;
  /** When the patient decided (0 while pending). */
  readonly decided: number;
  /** The Consent of the grant, once approved ('' otherwise). */
  readonly consentId: string;
}

export interface AccessPolicy {
  readonly minReputation: number;
  readonly updated: number;
}

export interface AccessRequestRoutesDeps {
  readonly chainId: string;
  readonly institution: { readonly index: InstitutionIndex; readonly name: string };
  /** The members now: the genesis members and those admitted since. */
  readonly members: () => readonly Member[];
  readonly ledger: PatientLedger;
  readonly db: Db;
  readonly audit: AuditLog;
  readonly reputation?: () => ReputationView | Promise<ReputationView>;
  /** This institution's genesis signing secret; without it, no send route. */
  readonly signingSecret?: Bytes;
  /** Member index -> public base URL of its sidecar (the send route's default home). */
  readonly directory?: ReadonlyMap<InstitutionIndex, string>;
  /** The HTTP client the send route reaches the home with (default: the global fetch). */
  readonly fetch?: typeof fetch;
  readonly maxPending?: number;
  readonly now?: () => number;
  readonly random?: RandomBytes;
}

// ---------------------------------------------------------------------------------------------
// CORS: patient-routes' (corsRoute)

const cors = corsRoute;
// ---------------------------------------------------------------------------------------------
// Storage

const f64 = (x: number): Bytes => {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setFloat64(0, x);
  return out;
};
const readF64 = (r: Reader, field: string): number => {
  const b = r.fixed(8, field);
  return new DataView(b.buffer, b.byteOffset, 8).getFloat64(0);
};
const u16 = (n: number): Bytes => Uint8Array.of(n >> 8, n & 0xff);

function encodeRecord(a: StoredAccessRequest): Bytes {
  return encode((w) =>
    w
      .fixed(a.idHash, 32, 'idHash')
      .varint(a.institution)
      .string(a.purpose)
      .varint(a.ts)
      .varint(a.created)
      .fixed(f64(a.reputation), 8, 'reputation')
      .u8(STATES.indexOf(a.state))
      .varint(a.decided)
      .string(a.consentId),
  );
}

function decodeRecord(id: Bytes, bytes: Bytes): StoredAccessRequest {
  return decode(bytes, 'access request', (r) => {
    const idHash = r.fixed(32, 'idHash');
    const institution = r.varint('institution', 0xffff);
    const purpose = r.string('purpose', 4 * 200);
    const ts = r.varint('ts');
    const created = r.varint('created');
    const reputation = readF64(r, 'reputation');
    const state = STATES[r.u8('state')] ?? r.fail('state', 'unknown state');
    const decided = r.varint('decided');
    const consentId = r.string('consentId', 64);
    return {
      id,
      idHash,
      institution,
      purpose,
      ts,
      created,
      reputation,
      state,
      decided,
      consentId,
    };
  });
}

/** The requests, policies and used nonces of this sidecar's patients. */
export class AccessRequestStore {
  private readonly space: Sublevel;
  private readonly db: Db;
  private added = 0;

  constructor(db: Db) {
    this.db = db;
    this.space = openSublevel(db, ACCESS_SPACE);
  }

  private async read<T>(key: Bytes, f: (payload: Bytes) => T): Promise<T | undefined> {
    const stored = await this.space.get(key);
    if (stored === undefined) return undefined;
    const opened = openSeal(ACCESS_SPACE, key, stored);
    if (!opened.ok) throw new Error(`corrupt access-request entry: ${opened.problem}`);
    return f(opened.payload);
  }

  private put(ops: WriteOp[], key: Bytes, payload: Bytes): void {
    ops.push({ type: 'put', sublevel: this.space, key, value: sealIn(ACCESS_SPACE, key, payload) });
  }

  private write(ops: WriteOp[]): Promise<void> {
    return this.db.batch(ops as never, { sync: true });
  }

  policy(idHash: Bytes): Promise<AccessPolicy | undefined> {
    return this.read(concatBytes(Uint8Array.of(TAG.policy), idHash), (p) =>
      decode(p, 'access policy', (r) => ({
        minReputation: readF64(r, 'minReputation'),
        updated: r.varint('updated'),
      })),
    );
  }

  async setPolicy(idHash: Bytes, policy: AccessPolicy): Promise<void> {
    const ops: WriteOp[] = [];
    const payload = encode((w) =>
      w.fixed(f64(policy.minReputation), 8, 'minReputation').varint(policy.updated),
    );
    this.put(ops, concatBytes(Uint8Array.of(TAG.policy), idHash), payload);
    await this.write(ops);
  }

  get(id: Bytes): Promise<StoredAccessRequest | undefined> {
    return this.read(concatBytes(Uint8Array.of(TAG.request), id), (p) => decodeRecord(id, p));
  }

  /** The patient's requests, oldest first (at most MAX_KEPT + MAX_PENDING are ever kept). */
  async list(idHash: Bytes): Promise<StoredAccessRequest[]> {
    const prefix = concatBytes(Uint8Array.of(TAG.byPatient), idHash);
    const out: StoredAccessRequest[] = [];
    for await (const key of this.space.keys(prefixRange(prefix))) {
      const found = await this.get(key.subarray(prefix.length));
      if (found !== undefined) out.push(found);
    }
    return out;
  }

  /** Keeps a request (new or decided); a new one may push the patient's oldest decided out. */
  async save(a: StoredAccessRequest, existing: readonly StoredAccessRequest[] = []): Promise<void> {
    const ops: WriteOp[] = [];
    this.put(ops, concatBytes(Uint8Array.of(TAG.request), a.id), encodeRecord(a));
    const index = concatBytes(Uint8Array.of(TAG.byPatient), a.idHash, a.id);
    ops.push({ type: 'put', sublevel: this.space, key: index, value: new Uint8Array(0) });
    let excess = existing.length + 1 - MAX_KEPT;
    for (const old of existing) {
      if (excess <= 0) break;
      if (old.state === 'pending') continue;
      ops.push({
        type: 'del',
        sublevel: this.space,
        key: concatBytes(Uint8Array.of(TAG.request), old.id),
      });
      ops.push({
        type: 'del',
        sublevel: this.space,
        key: concatBytes(Uint8Array.of(TAG.byPatient), old.idHash, old.id),
      });
      excess--;
    }
    await this.write(ops);
  }

  nonceUsed(institution: InstitutionIndex, nonce: string): Promise<boolean> {
    return this.space.has(nonceKey(institution, nonce));
  }

  /** Marks a nonce used until `until` (ms), sweeping expired ones now and then. */
  async useNonce(
    institution: InstitutionIndex,
    nonce: string,
    until: number,
    now: number,
  ): Promise<void> {
    const ops: WriteOp[] = [];
    this.put(
      ops,
      nonceKey(institution, nonce),
      encode((w) => w.varint(until)),
    );
    await this.write(ops);
    if (++this.added % SWEEP_EVERY === 0) await this.sweep(now);
  }

  private async sweep(now: number): Promise<void> {
    const ops: WriteOp[] = [];
    for await (const [key, stored] of this.space.iterator(prefixRange(Uint8Array.of(TAG.nonce)))) {
      const opened = openSeal(ACCESS_SPACE, key, stored);
      const until = opened.ok ? decode(opened.payload, 'nonce', (r) => r.varint('until')) : 0;
      if (until <= now) ops.push({ type: 'del', sublevel: this.space, key });
    }
    if (ops.length > 0) await this.db.batch(ops as never);
  }
}

const nonceKey = (institution: InstitutionIndex, nonce: string): Bytes =>
  concatBytes(Uint8Array.of(TAG.nonce), u16(institution), fromHex(nonce, 'nonce'));

// ---------------------------------------------------------------------------------------------
// Routes

/** A refusal with its reason code, so that callers (and the sending sidecar) can tell them apart. */
function refusal(status: number, code: IssueType, reason: string, text: string, field?: string) {
  return new OutcomeError(status, [
    {
      severity: 'error',
      code,
      details: { coding: [{ system: REFUSAL_SYSTEM, code: reason }], text },
      ...(field === undefined ? {} : { expression: [field] }),
    },
  ]);
}

/** Runs `f` after every earlier call for the same key has finished (one patient at a time). */
function serialiser(): <T>(key: string, f: () => Promise<T>) => Promise<T> {
  const tails = new Map<string, Promise<unknown>>();
  return (key, f) => {
    const before = tails.get(key) ?? Promise.resolve();
    const run = before.then(f, f);
    const tail = run.catch(() => undefined);
    tails.set(key, tail);
    void tail.then(() => {
      if (tails.get(key) === tail) tails.delete(key);
    });
    return run;
  };
}

export function registerAccessRequestRoutes(
  app: FastifyInstance,
  deps: AccessRequestRoutesDeps,
): void {
  const now = deps.now ?? Date.now;
  const random = deps.random ?? systemRandom;
  const store = new AccessRequestStore(deps.db);
  const memberOf = rosterLookup(deps.members);
  const auth = { chainId: deps.chainId, ledger: deps.ledger, now };
  const maxPending = deps.maxPending ?? MAX_PENDING_ACCESS_REQUESTS;
  /** One request or decision per patient at a time (the pending bound, single use of nonces). */
  const oneAtATime = serialiser();
  /** A patient-signed call about `:idHash`: checked, authenticated, then `act` run audited. */
  const asPatient = async <T>(
    req: FastifyRequest<{ Params: { idHash: string } }>,
    interaction: AuditInteraction,
    act: (idHash: Bytes) => Promise<T>,
  ): Promise<T> => {
    const idHash = checkIdHashParam(req.params.idHash);
    await authenticatePatient(req, req.params.idHash, auth);
    const ctx = patientContext(req);
    const patients = [`Patient/${req.params.idHash}`];
    return audited(deps.audit, { interaction, ctx, status: 200, patients, now }, () => act(idHash));
  };

  const reputations = async (): Promise<ReadonlyMap<InstitutionIndex, number>> =>
    deps.reputation === undefined ? new Map() : (await deps.reputation()).reputations;

  /** 409 unless this sidecar is the patient's home (the block's home). */
  async function requireHome(idHash: Bytes): Promise<void> {
    const block = await deps.ledger.getMicroblockByIdHash(idHash);
    if (block === undefined) {
      throw fail(404, 'not-found', 'no patient with this idHash is registered on the ledger');
    }
    const home = block.header.home;
    if (home !== deps.institution.index) {
      throw refusal(
        409,
        'conflict',
        'NOT_HOME',
        `this sidecar is not the patient's home: institution ${home} is`,
      );
    }
  }

  for (const path of [
    '/spchain/patients/:idHash/access-policy',
    '/spchain/patients/:idHash/access-requests',
    '/spchain/access-requests',
    '/spchain/access-requests/:id',
    '/spchain/access-requests/:id/decision',
    '/spchain/access-requests/send',
  ]) {
    app.options(path, cors('public'), async (_req, reply) => reply.code(204).send());
  }

  // --- the patient's policy ------------------------------------------------------------------

  app.put<{ Params: { idHash: string } }>(
    '/spchain/patients/:idHash/access-policy',
    cors('patient-signed'),
    async (req, reply) => {
      const policy = await asPatient(req, 'update', async (idHash) => {
        const body = (req.body ?? {}) as Record<string, unknown>;
        const problem = thresholdProblem(body.minReputation);
        if (problem !== undefined) throw fail(400, 'invalid', problem, 'minReputation');
        await requireHome(idHash);
        const p: AccessPolicy = { minReputation: body.minReputation as number, updated: now() };
        await store.setPolicy(idHash, p);
        return p;
      });
      return reply.send(policyJson(policy));
    },
  );

  app.get<{ Params: { idHash: string } }>(
    '/spchain/patients/:idHash/access-policy',
    cors('patient-signed'),
    async (req, reply) => {
      const policy = await asPatient(req, 'read', (idHash) => store.policy(idHash));
      return reply.send(policyJson(policy));
    },
  );

  // --- an institution asks (at the home) ------------------------------------------------------

  app.post('/spchain/access-requests', cors('public'), async (req, reply) => {
    const parsed = parseAccessRequest(req.body);
    if (!parsed.ok) throw fail(400, 'invalid', parsed.message, parsed.field);
    const doc = parsed.value;
    const ctx: RequestContext = {
      ...contextOf(req),
      agent: {
        id: `institution-${doc.institution}`,
        method: 'access-request-signature',
        address: req.ip,
      },
    };
    const answer = await audited(
      deps.audit,
      {
        interaction: 'create',
        ctx,
        status: 201,
        patients: [`Patient/${doc.idHash}`],
        now,
      },
      () => oneAtATime(doc.idHash, () => take(doc)),
    );
    return reply.code(201).send(answer);
  });

  /** The checks of POST /spchain/access-requests, then the new pending request. */
  async function take(doc: AccessRequestDocument) {
    const idHash = fromHex(doc.idHash, 'idHash');
    await requireHome(idHash);
    const checked = checkAccessRequest(doc, {
      chainId: deps.chainId,
      now: now(),
      signingKeyOf: (i) => memberOf(i)?.signingKey,
    });
    if (!checked.ok) {
      const field =
        checked.reason === 'STALE'
          ? 'ts'
          : checked.reason === 'BAD_SIGNATURE'
            ? 'signature'
            : 'institution';
      throw refusal(403, 'forbidden', checked.reason, checked.message, field);
    }
    // A valid signature binds the nonce to this patient, so the per-patient queue serialises
    // every use of it.
    if (await store.nonceUsed(doc.institution, doc.nonce)) {
      throw refusal(
        409,
        'conflict',
        'REPLAYED',
        'this request was sent before (nonce used)',
        'nonce',
      );
    }
    await store.useNonce(doc.institution, doc.nonce, doc.ts + ACCESS_REQUEST_WINDOW_MS, now());
    const policy = await store.policy(idHash);
    const reputation = (await reputations()).get(doc.institution) ?? 0;
    const existing = await store.list(idHash);
    const pending = existing.filter((a) => a.state === 'pending');
    const mine = pending.find((a) => a.institution === doc.institution);
    const decision = decideAccessRequest({
      institution: doc.institution,
      reputation,
      threshold: policy?.minReputation,
      pending: pending.length,
      maxPending,
    });
    if (!decision.ok && decision.reason !== 'TOO_MANY_PENDING') {
      throw refusal(403, 'forbidden', decision.reason, decision.message);
    }
    if (mine !== undefined) {
      throw refusal(
        409,
        'conflict',
        'ALREADY_PENDING',
        `institution ${doc.institution} already has a request waiting for this patient: ${toHex(mine.id)}`,
      );
    }
    if (!decision.ok) throw refusal(429, 'throttled', decision.reason, decision.message);
    const created = now();
    const record: StoredAccessRequest = {
      id: concatBytes(be(created, 6, 'created'), random(10)),
      idHash,
      institution: doc.institution,
      purpose: doc.purpose,
      ts: doc.ts,
      created,
      reputation,
      state: 'pending',
      decided: 0,
      consentId: '',
    };
    await store.save(record, existing);
    return { id: toHex(record.id), state: record.state, reputation };
  }

  // --- the patient's view and decision --------------------------------------------------------

  app.get<{ Params: { idHash: string } }>(
    '/spchain/patients/:idHash/access-requests',
    cors('patient-signed'),
    async (req, reply) => {
      const requests = await asPatient(req, 'search-type', (idHash) => store.list(idHash));
      const current = await reputations();
      return reply.send({
        requests: requests.reverse().map((a) => ({
          id: toHex(a.id),
          institution: a.institution,
          name: memberOf(a.institution)?.name ?? `institution ${a.institution}`,
          reputation: a.reputation,
          reputationNow: current.get(a.institution) ?? 0,
          purpose: a.purpose,
          time: new Date(a.created).toISOString(),
          state: a.state,
          ...(a.decided === 0 ? {} : { decided: new Date(a.decided).toISOString() }),
          ...(a.consentId === '' ? {} : { consentId: a.consentId }),
        })),
      });
    },
  );

  /** The request of an `:id` parameter: 400 malformed, 404 unknown. */
  async function requestOf(id: string): Promise<StoredAccessRequest> {
    if (!ID.test(id)) throw fail(400, 'invalid', 'id must be 32 lowercase hex digits', 'id');
    const found = await store.get(fromHex(id, 'id'));
    if (found === undefined) throw fail(404, 'not-found', 'no such access request');
    return found;
  }

  app.post<{ Params: { id: string } }>(
    '/spchain/access-requests/:id/decision',
    cors('patient-signed'),
    async (req, reply) => {
      const found = await requestOf(req.params.id);
      const patient = toHex(found.idHash);
      await authenticatePatient(req, patient, auth);
      const body = (req.body ?? {}) as Record<string, unknown>;
      const decided = await audited(
        deps.audit,
        {
          interaction: 'update',
          ctx: patientContext(req),
          status: 200,
          entities: (a: StoredAccessRequest) =>
            a.consentId === '' ? [] : [`Consent/${a.consentId}`],
          patients: [`Patient/${patient}`],
          now,
        },
        async () => {
          const decision = body.decision;
          if (decision !== 'approve' && decision !== 'decline') {
            throw fail(400, 'invalid', 'decision must be "approve" or "decline"', 'decision');
          }
          const consentId = body.consentId;
          if (
            decision === 'approve' &&
            (typeof consentId !== 'string' || !FHIR_ID.test(consentId))
          ) {
            throw fail(
              400,
              'invalid',
              'consentId must be the id of the Consent granted ([A-Za-z0-9-.]{1,64})',
              'consentId',
            );
          }
          if (decision === 'decline' && consentId !== undefined) {
            throw fail(400, 'invalid', 'a decline carries no consentId', 'consentId');
          }
          return oneAtATime(patient, async () => {
            const current = (await store.get(found.id))!;
            if (current.state !== 'pending') {
              throw refusal(409, 'conflict', 'DECIDED', `the request was already ${current.state}`);
            }
            const next: StoredAccessRequest = {
              ...current,
              state: decision === 'approve' ? 'approved' : 'declined',
              decided: now(),
              consentId: decision === 'approve' ? (consentId as string) : '',
            };
            await store.save(next);
            return next;
          });
        },
      );
      return reply.send({
        id: req.params.id,
        state: decided.state,
        ...(decided.consentId === '' ? {} : { consentId: decided.consentId }),
      });
    },
  );

  app.get<{ Params: { id: string } }>(
    '/spchain/access-requests/:id',
    cors('public', 'guess'),
    async (req, reply) => {
      const found = await audited(
        deps.audit,
        { interaction: 'read', ctx: contextOf(req), status: 200, now },
        () => requestOf(req.params.id),
      );
      return reply.send({
        state: found.state,
        ...(found.consentId === '' ? {} : { consentId: found.consentId }),
      });
    },
  );

  // --- the requesting institution's own staff --------------------------------------------------

  const secret = deps.signingSecret;
  if (secret !== undefined) {
    const http = deps.fetch ?? globalThis.fetch;
    app.post('/spchain/access-requests/send', cors('ehr'), async (req, reply) => {
      const body = (req.body ?? {}) as Record<string, unknown>;
      const idHashHex = typeof body.idHash === 'string' ? body.idHash : '';
      const idHash = checkIdHashParam(idHashHex);
      const problem = purposeProblem(body.purpose);
      if (problem !== undefined) throw fail(400, 'invalid', problem, 'purpose');
      if (body.home !== undefined && homeProblem(body.home) !== undefined) {
        throw fail(400, 'invalid', homeProblem(body.home)!, 'home');
      }
      const answer = await audited(
        deps.audit,
        {
          interaction: 'operation',
          ctx: contextOf(req),
          status: 201,
          patients: [`Patient/${idHashHex}`],
          now,
        },
        async () => {
          const block = await deps.ledger.getMicroblockByIdHash(idHash);
          if (block === undefined) {
            throw fail(404, 'not-found', 'no patient with this idHash is registered on the ledger');
          }
          const home =
            (body.home as string | undefined)?.replace(/\/+$/, '') ??
            deps.directory?.get(block.header.home);
          if (home === undefined) {
            throw fail(
              400,
              'required',
              `home is required: the directory has no URL for institution ${block.header.home}`,
              'home',
            );
          }
          const doc = makeAccessRequest(
            deps.chainId,
            {
              idHash: idHashHex,
              institution: deps.institution.index,
              purpose: body.purpose as string,
              ts: now(),
            },
            secret,
            random,
          );
          const { json } = await postToSidecar(http, `${home}/spchain/access-requests`, doc, {
            who: "the patient's home",
          });
          const a = json as { id?: unknown; state?: unknown; reputation?: unknown } | null;
          if (
            a === null ||
            typeof a !== 'object' ||
            typeof a.id !== 'string' ||
            !ID.test(a.id) ||
            a.state !== 'pending' ||
            typeof a.reputation !== 'number'
          ) {
            throw fail(
              502,
              'transient',
              "the patient's home answered something else than a request",
            );
          }
          return {
            id: a.id,
            state: a.state,
            reputation: a.reputation,
            poll: `${home}/spchain/access-requests/${a.id}`,
          };
        },
      );
      return reply.code(201).send(answer);
    });
  }
}

function policyJson(p: AccessPolicy | undefined): Record<string, unknown> {
  return p === undefined
    ? { minReputation: null }
    : { minReputation: p.minReputation, updated: new Date(p.updated).toISOString() };
}

function homeProblem(home: unknown): string | undefined {
  if (typeof home !== 'string' || home.length === 0 || home.length > 1024) {
    return 'home must be the base URL of the patient home sidecar';
  }
  let url: URL;
  try {
    url = new URL(home);
  } catch {
    return 'home must be an absolute http(s) URL';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return 'home must be an absolute http(s) URL';
  }
  if (url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    return 'home must be a base URL without query, fragment or credentials';
  }
  return undefined;
}
