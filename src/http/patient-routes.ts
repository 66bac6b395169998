/**
 * The patient-facing API (issue 6): what the patient portal (or the CLI) calls on the patient's
 * own behalf, under `/spchain`. Bodies and answers are JSON; errors are OperationOutcomes.
 *
 *   POST /spchain/enrolments                 ehr: the front desk enrols a patient: { identifier:
 *                                            "system|value", birthDate } -> 201 { code, idHash,
 *                                            expires }; a single-use code valid for 24 h
 *   GET  /spchain/enrolments/:code           public: { idHash, home, chainId, expires } of a
 *                                            valid unused code, else 404 (so the browser never
 *                                            needs the identifier nor the slow idHash)
 *   POST /spchain/patients/self              patient-signed: { code, registerTx } -> 202, the
 *                                            checks of POST /spchain/patients (registration.ts
 *                                            submitRegistration) plus the code's: 404 unknown or
 *                                            used, 410 expired, 403 for another patient
 *   GET  /spchain/patients/:idHash/registration  public: { registered, block?, home?, leaves? }
 *   GET  /spchain/institutions               public: { self, chainId, minFee, institutions:
 *                                            [{ index, name, reputation, inGroup, preKey,
 *                                            signingKey, chameleonKey, url?, connected? }] }
 *                                            (connected: this node's live peers; a patient's
 *                                            device makes its register tx with the home's
 *                                            chameleon key and the network's minimum fee)
 *   GET  /spchain/patients/:idHash/consents  patient-signed: { consents: [{ id, state, consent
 *                                            (the signed FHIR Consent, null once revoked) }] }
 *   GET  /spchain/patients/:idHash/records   patient-signed (x-spchain-patient): the patient's
 *                                            records held here, as stored ciphertext (capsule +
 *                                            ciphertext, base64) for the patient to decrypt;
 *                                            `after` cursor, `count` <= 200. Audited. With
 *                                            `holder=<index>`: that holder's records, as below.
 *   GET  /spchain/blocks/:i/:j/records       patient-signed, the patient's whole history from any
 *                                            sidecar (paper 5.2 retrieval) by block number:
 *                                            without `holder`, { holders: [{ index, name,
 *                                            records: leafSeq }] } (the block's leaves with
 *                                            seq > 0); with `holder=<index>[&after][&count]`,
 *                                            { holder, records, next?, skipped? }: this
 *                                            institution's vault, or for another leaf the page
 *                                            that holder answers to the patient's relayed
 *                                            signature over p2p (sidecar/own-records.ts; the
 *                                            original ciphertexts, unreadable here). 404 for a
 *                                            holder that is not a leaf with records, 502 when it
 *                                            cannot be reached, 503 without a p2p relay.
 *   GET  /spchain/patients/:idHash/audit     patient-signed: the AuditEvents about the patient
 *                                            here, newest first (searchset Bundle), `count` <= 100
 *
 * Patient-signed GETs carry the header of authz/patient-request.ts: the signature over (network,
 * method, path with query, timestamp, body hash) by the patient's signing key from the pinned
 * block; 401 when missing, malformed, stale or wrong, 404 for an unregistered patient. The self
 * registration is authorised by the patient's signature on the register tx itself (the patient
 * is not pinned yet) and by the single-use enrolment code.
 *
 * CORS: these routes (and the share-link routes) answer browsers with `access-control-allow-origin:
 * *` and a 204 preflight. That is safe because nothing here rests on ambient credentials (no
 * cookies): patient routes are authorised by signatures, EHR routes by an explicit bearer token.
 *
 * Enrolment codes live in sublevel `pe` of the sidecar's LevelDB: SHA-256 of the code -> (idHash,
 * expires, used), sealed like every value. The identifier is never stored nor logged here.
 */

import type { Bundle } from '@medplum/fhirtypes';
import { sha256 } from '@noble/hashes/sha2.js';
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteShorthandOptions } from 'fastify';
import {
  DEFAULT_OWN_RECORDS,
  parseRecordsPath,
  type RecordsCursor,
  type RecordsQuery,
} from '../authz/own-records.ts';
import {
  PATIENT_REQUEST_HEADER,
  type ParsedPatientRequest,
  parsePatientRequestHeader,
  verifyPatientRequest,
} from '../authz/patient-request.ts';
import { fromHex, toHex, utf8 } from '../crypto/bytes.ts';
import { type RandomBytes, systemRandom } from '../crypto/random.ts';
import type { AuditAgent, AuditLog } from '../fhir/audit.ts';
import { audited } from '../fhir/audited.ts';
import { fail, OutcomeError } from '../fhir/outcome.ts';
import type { ResourceStore } from '../fhir/resource-store.ts';
import type { RequestContext } from '../fhir/transaction.ts';
import { decode, encode } from '../ledger/codec.ts';
import { isLedgerError } from '../ledger/errors.ts';
import { computeIdHashAsync, type IdHashCost } from '../ledger/idhash.ts';
import type { Microblock } from '../ledger/microblock.ts';
import type { BlockRef, Bytes, InstitutionIndex, Member } from '../ledger/types.ts';
import type { AnchorStatus } from '../sidecar/anchor.ts';
import { decodeResourceKey } from '../sidecar/entries.ts';
import { type OwnRecordsRelay, readOwnRecords } from '../sidecar/own-records.ts';
import type { PatientLedger } from '../sidecar/patients.ts';
import { prefixRange } from '../sidecar/share-grants.ts';
import type { OwnSkipped } from '../sidecar/share-wire.ts';
import type { SidecarStore } from '../sidecar/store.ts';
import { type Db, openSublevel, type Sublevel } from '../store/db.ts';
import { openSeal, sealIn } from '../store/values.ts';
import type { AuthRule } from './auth.ts';
import { type RegistrationDeps, submitRegistration } from './registration.ts';
import { contextOf } from './request.ts';

// ---------------------------------------------------------------------------------------------
// CORS

export const CORS_HEADERS: Readonly<Record<string, string>> = {
  'access-control-allow-origin': '*',
  'access-control-allow-headers': `content-type, ${PATIENT_REQUEST_HEADER}`,
  'access-control-allow-methods': 'GET, PUT, POST, OPTIONS',
  'access-control-max-age': '600',
};

/** Route options with the auth rule and the CORS headers on every answer (errors included). */
export function corsRoute(auth: AuthRule, limit?: 'guess'): RouteShorthandOptions {
  return {
    config: { auth, ...(limit ? { limit } : {}) },
    onSend: async (_req: FastifyRequest, reply: FastifyReply, payload: unknown) => {
      reply.headers(CORS_HEADERS);
      return payload;
    },
  };
}

/** The 204 preflight answer for each path (public: a preflight carries no credentials). */
export function registerPreflight(app: FastifyInstance, paths: readonly string[]): void {
  for (const path of paths) {
    app.options(path, corsRoute('public'), async (_req, reply) => reply.code(204).send());
  }
}

// ---------------------------------------------------------------------------------------------
// Patient request signatures at the edge

/** Who a patient-signed request is, for the audit. */
export function patientAgent(req: FastifyRequest): AuditAgent {
  return { id: 'patient', method: 'patient-request-signature', address: req.ip };
}

export function patientContext(req: FastifyRequest): RequestContext {
  return { ...contextOf(req), agent: patientAgent(req) };
}

const HEX32 = /^[0-9a-f]{64}$/;

export function checkIdHashParam(idHash: string): Bytes {
  if (!HEX32.test(idHash)) throw fail(400, 'invalid', 'idHash must be 64 lowercase hex digits');
  return fromHex(idHash, 'idHash');
}

/**
 * Checks the x-spchain-patient header of `req` for the patient `idHash` (hex): 401 missing,
 * malformed, for another patient, stale or a bad signature; 404 when the patient has no pinned
 * block. Returns the patient's pinned block.
 */
export async function authenticatePatient(
  req: FastifyRequest,
  idHash: string,
  deps: { chainId: string; ledger: PatientLedger; now: () => number },
): Promise<Microblock> {
  const parsed = patientHeader(req);
  if (parsed.idHash !== idHash) {
    throw fail(401, 'login', `the ${PATIENT_REQUEST_HEADER} header is for another patient`);
  }
  const block = await deps.ledger.getMicroblockByIdHash(fromHex(idHash, 'idHash'));
  if (block === undefined) {
    throw fail(404, 'not-found', 'no patient with this idHash is registered on the ledger');
  }
  checkSignature(req, parsed, block, deps);
  return block;
}

/** The pinned ledger, with the lookup of a patient block by its number where the store has it. */
export type BlockLedger = PatientLedger & {
  getMicroblock?(ref: BlockRef): Promise<Microblock | undefined>;
};

/**
 * Checks the x-spchain-patient header of `req` for the patient block (i, j): 401 missing,
 * malformed, for the patient of another block, stale or a bad signature; 404 when no patient
 * block (i, j) is pinned. Returns the block and the parsed header (the relay forwards it).
 */
export async function authenticateBlockPatient(
  req: FastifyRequest,
  ref: BlockRef,
  deps: { chainId: string; ledger: BlockLedger; now: () => number },
): Promise<{ block: Microblock; header: ParsedPatientRequest }> {
  const header = patientHeader(req);
  const { ledger } = deps;
  let block: Microblock | undefined;
  if (ledger.getMicroblock !== undefined) {
    block = await ledger.getMicroblock(ref);
    if (block !== undefined && toHex(block.header.idHash) !== header.idHash) {
      throw fail(401, 'login', `the ${PATIENT_REQUEST_HEADER} header is for another patient`);
    }
  } else {
    // O(1) all the same: the header's patient's block, which must be the one named.
    block = await ledger.getMicroblockByIdHash(fromHex(header.idHash, 'idHash'));
    if (block !== undefined && (block.header.i !== ref.i || block.header.j !== ref.j)) {
      block = undefined;
    }
  }
  if (block === undefined) {
    throw fail(404, 'not-found', `no patient block (${ref.i}, ${ref.j}) of this patient is pinned`);
  }
  checkSignature(req, header, block, deps);
  return { block, header };
}

function patientHeader(req: FastifyRequest): ParsedPatientRequest {
  const header = req.headers[PATIENT_REQUEST_HEADER];
  const parsed = parsePatientRequestHeader(typeof header === 'string' ? header : undefined);
  if (!parsed.ok) throw fail(401, 'login', parsed.message);
  return parsed.value;
}

function checkSignature(
  req: FastifyRequest,
  parsed: ParsedPatientRequest,
  block: Microblock,
  deps: { chainId: string; now: () => number },
): void {
  const checked = verifyPatientRequest(parsed, {
    chainId: deps.chainId,
    method: req.method,
    path: req.url,
    body: req.rawBody ?? new Uint8Array(0),
    now: deps.now(),
    signingKey: block.patientSigningKey,
  });
  if (!checked.ok) throw fail(401, 'login', checked.message);
}

// ---------------------------------------------------------------------------------------------
// Enrolment codes

export const ENROLMENT_SPACE = 'pe';
export const ENROLMENT_TTL_MS = 24 * 3_600_000;
/** A-Z and 2-9 without the look-alikes I, L and O (0 and 1 are not digits here). */
export const ENROLMENT_ALPHABET = 'ABCDEFGHJKMNPQRSTUVWXYZ23456789';
export const ENROLMENT_CODE_LENGTH = 10;
const CODE = new RegExp(`^[${ENROLMENT_ALPHABET}]{${ENROLMENT_CODE_LENGTH}}$`);

export interface Enrolment {
  readonly idHash: Bytes;
  readonly expires: number;
  readonly used: boolean;
}

/** A fresh code: uniform over the alphabet (rejection sampling of random bytes). */
export function newEnrolmentCode(random: RandomBytes): string {
  const n = ENROLMENT_ALPHABET.length;
  const limit = 256 - (256 % n);
  let code = '';
  while (code.length < ENROLMENT_CODE_LENGTH) {
    for (const b of random(ENROLMENT_CODE_LENGTH * 2)) {
      if (b < limit && code.length < ENROLMENT_CODE_LENGTH) code += ENROLMENT_ALPHABET[b % n];
    }
  }
  return code;
}

/** The code as typed (case and spaces forgiven), or undefined when it cannot be one. */
export function normaliseEnrolmentCode(text: unknown): string | undefined {
  if (typeof text !== 'string' || text.length > 32) return undefined;
  const code = text.replace(/[\s-]/g, '').toUpperCase();
  return CODE.test(code) ? code : undefined;
}

export class EnrolmentStore {
  private readonly space: Sublevel;
  private readonly db: Db;

  constructor(db: Db) {
    this.db = db;
    this.space = openSublevel(db, ENROLMENT_SPACE);
  }

  async get(code: string): Promise<Enrolment | undefined> {
    const key = codeKey(code);
    const stored = await this.space.get(key);
    if (stored === undefined) return undefined;
    const opened = openSeal(ENROLMENT_SPACE, key, stored);
    if (!opened.ok) throw new Error(`corrupt enrolment entry: ${opened.problem}`);
    return decode(opened.payload, 'enrolment', (r) => ({
      idHash: r.fixed(32, 'idHash'),
      expires: r.varint('expires'),
      used: r.bool('used'),
    }));
  }

  async put(code: string, e: Enrolment): Promise<void> {
    const key = codeKey(code);
    const payload = encode((w) => w.fixed(e.idHash, 32, 'idHash').varint(e.expires).bool(e.used));
    await this.db.batch(
      [
        { type: 'put', sublevel: this.space, key, value: sealIn(ENROLMENT_SPACE, key, payload) },
      ] as never,
      { sync: true },
    );
  }
}

const codeKey = (code: string): Bytes => sha256(utf8(`spchain/enrolment/${code}`));

// ---------------------------------------------------------------------------------------------
// Routes

/** Reputation and consensus group as the node sees them now. */
export interface ReputationView {
  readonly reputations: ReadonlyMap<InstitutionIndex, number>;
  readonly group: readonly InstitutionIndex[];
}

/** A record as the patient gets it: stored ciphertext for their PRE secret. */
export interface PatientRecordJson {
  readonly resourceType: string;
  readonly id: string;
  readonly version: string;
  readonly kind: 'medical' | 'label';
  readonly txHash: string;
  readonly target?: string;
  readonly capsule: string;
  readonly ciphertext: string;
  readonly anchoring: Record<string, unknown>;
}

export interface PatientRoutesDeps {
  readonly chainId: string;
  readonly institution: { readonly index: InstitutionIndex; readonly name: string };
  /** The members now: the genesis members and those admitted since. */
  readonly members: () => readonly Member[];
  /** The network's minimum tx fee (genesis params), which a register tx must offer. */
  readonly minFee: number;
  readonly idHashKey: Bytes;
  readonly idHashCost?: IdHashCost;
  readonly store: Pick<SidecarStore, 'db' | 'spaces' | 'vault' | 'read'>;
  readonly resources: Pick<ResourceStore, 'read'>;
  readonly ledger: BlockLedger;
  /**
   * Asks another holder for a page of the patient's own records on the patient's relayed
   * signature (sidecar/own-records.ts relayOwnRecords over the p2p record service). Without it,
   * only this institution's records are served (503 for another holder).
   */
  readonly ownRecords?: OwnRecordsRelay;
  readonly registration: RegistrationDeps;
  readonly anchorStatus: (tx: string) => Promise<AnchorStatus>;
  readonly audit: AuditLog;
  /** The patient's Consent ids known here (Sharing.consentIds), to find their audit events. */
  readonly consentIds?: (idHash: Bytes) => Promise<string[]>;
  /** The patient's signed Consents held here, with their state now (Sharing.consents). */
  readonly consents?: (
    idHash: Bytes,
  ) => Promise<readonly { consent: unknown; id: string; state: string }[]>;
  /** Member index -> public base URL of its sidecar. */
  readonly directory?: ReadonlyMap<InstitutionIndex, string>;
  readonly reputation?: () => ReputationView | Promise<ReputationView>;
  /** The members this institution's node is connected to now (node stats), when known. */
  readonly connectedPeers?: () => readonly InstitutionIndex[];
  /** This sidecar's FHIR base URL for a request. */
  readonly base: (req: FastifyRequest) => string;
  readonly now?: () => number;
  readonly random?: RandomBytes;
}

const MAX_AUDIT = 100;
const DEFAULT_AUDIT = 50;
const MAX_IDENTIFIER_CHARS = 1024;
/** Records read to learn the EHR's Patient ids of a patient (for the audit view). */
const MAX_RECORDS_SCANNED = 10_000;

export function registerPatientRoutes(app: FastifyInstance, deps: PatientRoutesDeps): void {
  const now = deps.now ?? Date.now;
  const random = deps.random ?? systemRandom;
  const enrolments = new EnrolmentStore(deps.store.db);
  /** Codes being redeemed right now: a code is used once even by concurrent requests. */
  const redeeming = new Set<string>();
  const auth = { chainId: deps.chainId, ledger: deps.ledger, now };

  registerPreflight(app, [
    '/spchain/enrolments',
    '/spchain/enrolments/:code',
    '/spchain/patients/self',
    '/spchain/patients/:idHash/registration',
    '/spchain/institutions',
    '/spchain/patients/:idHash/records',
    '/spchain/blocks/:i/:j/records',
    '/spchain/patients/:idHash/audit',
    '/spchain/patients/:idHash/consents',
  ]);

  app.post('/spchain/enrolments', corsRoute('ehr'), async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const identifier = body.identifier;
    const bar = typeof identifier === 'string' ? identifier.indexOf('|') : -1;
    if (
      typeof identifier !== 'string' ||
      identifier.length > MAX_IDENTIFIER_CHARS ||
      bar <= 0 ||
      bar === identifier.length - 1
    ) {
      throw fail(400, 'invalid', 'identifier must be "system|value"', 'identifier');
    }
    if (typeof body.birthDate !== 'string' || !/^\d{4}-\d{2}-\d{2}$/.test(body.birthDate)) {
      throw fail(400, 'invalid', 'birthDate must be a date as YYYY-MM-DD', 'birthDate');
    }
    const identity = {
      system: identifier.slice(0, bar),
      value: identifier.slice(bar + 1),
      birthDate: body.birthDate,
    };
    let idHash: Bytes;
    try {
      idHash = await computeIdHashAsync(deps.idHashKey, identity, deps.idHashCost);
    } catch (err) {
      // The ledger's message names the part that is wrong, never its value.
      if (isLedgerError(err)) throw fail(400, 'invalid', err.message);
      throw err;
    }
    const hex = toHex(idHash);
    const expires = now() + ENROLMENT_TTL_MS;
    const code = newEnrolmentCode(random);
    await audited(
      deps.audit,
      {
        interaction: 'create',
        ctx: contextOf(req),
        status: 201,
        patients: [`Patient/${hex}`],
        now,
      },
      () => enrolments.put(code, { idHash, expires, used: false }),
    );
    return reply.code(201).send({ code, idHash: hex, expires: new Date(expires).toISOString() });
  });

  /** The enrolment of a code that is valid, unused and unexpired; the refusal otherwise. */
  async function usable(text: unknown): Promise<{ code: string; enrolment: Enrolment }> {
    const code = normaliseEnrolmentCode(text);
    if (code === undefined) {
      throw fail(404, 'not-found', 'no such enrolment code (or it was used)', 'code');
    }
    const enrolment = await enrolments.get(code);
    if (enrolment === undefined || enrolment.used) {
      throw fail(404, 'not-found', 'no such enrolment code (or it was used)', 'code');
    }
    if (now() >= enrolment.expires)
      throw fail(410, 'expired', 'the enrolment code has expired', 'code');
    return { code, enrolment };
  }

  app.get<{ Params: { code: string } }>(
    '/spchain/enrolments/:code',
    corsRoute('public', 'guess'),
    async (req, reply) => {
      let found: { enrolment: Enrolment };
      try {
        found = await usable(req.params.code);
      } catch (err) {
        if (!(err instanceof OutcomeError)) throw err;
        // Expired and unknown look the same to an anonymous caller.
        throw fail(404, 'not-found', 'no such enrolment code (or it was used or expired)');
      }
      const { enrolment } = found;
      return reply.send({
        idHash: toHex(enrolment.idHash),
        home: deps.institution.index,
        chainId: deps.chainId,
        expires: new Date(enrolment.expires).toISOString(),
      });
    },
  );

  app.post('/spchain/patients/self', corsRoute('patient-signed', 'guess'), async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    if (typeof body.code !== 'string') {
      throw fail(400, 'required', 'code must be the enrolment code', 'code');
    }
    let claimed: string | undefined;
    try {
      const { idHash } = await submitRegistration(
        deps.registration,
        req,
        body.registerTx,
        async (tx) => {
          const { code, enrolment } = await usable(body.code);
          if (toHex(enrolment.idHash) !== toHex(tx.idHash)) {
            throw fail(403, 'forbidden', 'the enrolment code is not for this patient', 'code');
          }
          if (redeeming.has(code)) {
            throw fail(404, 'not-found', 'no such enrolment code (or it was used)', 'code');
          }
          redeeming.add(code);
          claimed = code;
        },
      );
      const code = claimed!;
      const enrolment = (await enrolments.get(code))!;
      await enrolments.put(code, { ...enrolment, used: true });
      return reply.code(202).send({ idHash, state: 'submitted' });
    } finally {
      if (claimed !== undefined) redeeming.delete(claimed);
    }
  });

  app.get<{ Params: { idHash: string } }>(
    '/spchain/patients/:idHash/registration',
    corsRoute('public'),
    async (req, reply) => {
      const block = await deps.ledger.getMicroblockByIdHash(checkIdHashParam(req.params.idHash));
      return reply.send(
        block === undefined
          ? { registered: false }
          : {
              registered: true,
              block: { i: block.header.i, j: block.header.j },
              home: block.header.home,
              leaves: block.leaves.map((l) => ({ institution: l.institution, seq: l.seq })),
            },
      );
    },
  );

  app.get('/spchain/institutions', corsRoute('public'), async (_req, reply) => {
    const view = deps.reputation === undefined ? undefined : await deps.reputation();
    const group = new Set(view?.group ?? []);
    const connected =
      deps.connectedPeers === undefined ? undefined : new Set(deps.connectedPeers());
    return reply.send({
      self: deps.institution.index,
      chainId: deps.chainId,
      minFee: deps.minFee,
      institutions: deps.members().map((m) => {
        const url = deps.directory?.get(m.index);
        return {
          index: m.index,
          name: m.name,
          reputation: view?.reputations.get(m.index) ?? 0,
          inGroup: group.has(m.index),
          preKey: toHex(m.preKey),
          signingKey: toHex(m.signingKey),
          chameleonKey: toHex(m.chameleonKey),
          ...(url === undefined ? {} : { url }),
          ...(connected === undefined || m.index === deps.institution.index
            ? {}
            : { connected: connected.has(m.index) }),
        };
      }),
    });
  });

  app.get<{ Params: { idHash: string } }>(
    '/spchain/patients/:idHash/records',
    corsRoute('patient-signed'),
    async (req, reply) => {
      checkIdHashParam(req.params.idHash);
      const block = await authenticatePatient(req, req.params.idHash, auth);
      const query = recordsQuery(req.url);
      return reply.send(await recordsPage(req, block, patientHeader(req), query));
    },
  );

  app.get<{ Params: { i: string; j: string } }>(
    '/spchain/blocks/:i/:j/records',
    corsRoute('patient-signed'),
    async (req, reply) => {
      const ref = { i: blockParam(req.params.i, 'i'), j: blockParam(req.params.j, 'j') };
      const { block, header } = await authenticateBlockPatient(req, ref, auth);
      const query = recordsQuery(req.url);
      if (query.holder !== undefined) {
        return reply.send(await recordsPage(req, block, header, query));
      }
      if (query.after !== undefined || query.count !== undefined) {
        throw fail(400, 'required', 'after and count page the records of one holder', 'holder');
      }
      const names = new Map(deps.members().map((m) => [m.index, m.name]));
      return reply.send({
        holders: block.leaves
          .filter((l) => l.seq > 0)
          .map((l) => ({
            index: l.institution,
            name: names.get(l.institution) ?? `institution ${l.institution}`,
            records: l.seq,
          })),
      });
    },
  );

  /** One page of the patient's records at `query.holder` (default: here). */
  async function recordsPage(
    req: FastifyRequest,
    block: Microblock,
    header: ParsedPatientRequest,
    query: RecordsQuery,
  ): Promise<RecordsPage> {
    const self = deps.institution.index;
    const holder = query.holder ?? self;
    const idHash = block.header.idHash;
    const patients = [`Patient/${toHex(idHash)}`];
    const count = query.count ?? DEFAULT_OWN_RECORDS;
    if (holder === self) {
      const page = await audited(
        deps.audit,
        {
          interaction: 'read',
          ctx: patientContext(req),
          status: 200,
          entities: (p: RecordsPage) =>
            p.records.map((r) => `${r.resourceType}/${r.id}/_history/${r.version}`),
          patients,
          now,
        },
        () => readRecords(deps, idHash, count, query.after),
      );
      return query.holder === undefined ? page : { holder, ...page };
    }
    if (!block.leaves.some((l) => l.institution === holder && l.seq > 0)) {
      throw fail(
        404,
        'not-found',
        `institution ${holder} holds no records in this patient block`,
        'holder',
      );
    }
    const relay = deps.ownRecords;
    if (relay === undefined) {
      throw fail(503, 'not-supported', 'this sidecar cannot ask other institutions', 'holder');
    }
    // The holder's records are not this institution's: the read is logged under the patient only.
    const page = await audited(
      deps.audit,
      { interaction: 'read', ctx: patientContext(req), status: 200, patients, now },
      () => relayPage(relay, holder, { ...header, path: req.url }, idHash),
    );
    return { holder, ...page };
  }

  // The patient's grants as this holder keeps them: each signed FHIR Consent and whether it lets
  // its institution read now (active, revoked, expired, ...).
  app.get<{ Params: { idHash: string } }>(
    '/spchain/patients/:idHash/consents',
    corsRoute('patient-signed'),
    async (req, reply) => {
      const idHash = checkIdHashParam(req.params.idHash);
      await authenticatePatient(req, req.params.idHash, auth);
      const consents = deps.consents === undefined ? [] : await deps.consents(idHash);
      return reply.send({ consents });
    },
  );

  app.get<{ Params: { idHash: string }; Querystring: Record<string, unknown> }>(
    '/spchain/patients/:idHash/audit',
    corsRoute('patient-signed'),
    async (req, reply) => {
      const idHash = checkIdHashParam(req.params.idHash);
      await authenticatePatient(req, req.params.idHash, auth);
      const count = countParam(req.query.count, DEFAULT_AUDIT, MAX_AUDIT);
      const refs = await patientRefs(deps, idHash);
      const pages = await Promise.all(refs.map((by) => deps.audit.search(by, count)));
      const byId = new Map(pages.flatMap((p) => p.events).map((e) => [e.id!, e]));
      // Event ids begin with their time (big-endian ms), so id order is time order.
      const events = [...byId.values()].sort((a, b) => (a.id! < b.id! ? 1 : -1)).slice(0, count);
      const base = deps.base(req);
      // Reading the log is logged too, but not under the patient (it would crowd their view).
      await deps.audit.record({
        interaction: 'search-type',
        agent: patientAgent(req),
        status: 200,
        entities: [],
        patients: [],
        requestId: req.id,
        now: now(),
      });
      const bundle: Bundle = {
        resourceType: 'Bundle',
        type: 'searchset',
        entry: events.map((e) => ({
          fullUrl: `${base}/AuditEvent/${e.id}`,
          resource: e,
          search: { mode: 'match' },
        })),
      };
      return reply.send(bundle);
    },
  );
}

function blockParam(value: string, field: 'i' | 'j'): number {
  if (!/^(?:0|[1-9][0-9]{0,8})$/.test(value)) {
    throw fail(400, 'invalid', `${field} must be a block number (a non-negative integer)`, field);
  }
  return Number(value);
}

/** The records query of the request's path (authz/own-records.ts: the holder reads it too). */
function recordsQuery(url: string): RecordsQuery {
  const parsed = parseRecordsPath(url);
  if (!parsed.ok) throw fail(400, 'invalid', `${parsed.field} ${parsed.message}`, parsed.field);
  return parsed.value;
}

/** HTTP answers to a holder's refusal (authz OwnRecordsDenial); its own text is not passed on. */
const DENIALS: Readonly<Record<string, [number, string]>> = {
  STALE: [401, "the request's timestamp is too far from the holder's clock"],
  BAD_SIGNATURE: [401, "the holder finds the request's signature is not the patient's"],
  UNREGISTERED: [404, 'the holder has no pinned block of this patient yet'],
  MALFORMED: [400, 'the holder cannot read the request'],
};

/** A page from another holder, relayed on the patient's signature. */
async function relayPage(
  relay: OwnRecordsRelay,
  holder: InstitutionIndex,
  signed: ParsedPatientRequest & { path: string },
  idHash: Bytes,
): Promise<RecordsPage> {
  let answer: Awaited<ReturnType<OwnRecordsRelay>>;
  try {
    answer = await relay(holder, {
      idHash,
      ts: signed.ts,
      sig: signed.sig,
      path: signed.path,
    });
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    const why = typeof code === 'string' && /^[A-Z_]{1,32}$/.test(code) ? ` (${code})` : '';
    throw fail(502, 'transient', `institution ${holder} could not be asked${why}`, 'holder');
  }
  if (answer.type === 'denied') {
    const [status, message] = DENIALS[answer.reason] ?? [
      502,
      `institution ${holder} refused the request`,
    ];
    throw fail(status, status === 401 ? 'login' : 'processing', message, 'holder');
  }
  const records: PatientRecordJson[] = answer.records.map((r) => ({
    resourceType: r.resourceType,
    id: r.id,
    version: r.version,
    kind: r.kind,
    txHash: toHex(r.txHash),
    ...(r.target === null ? {} : { target: toHex(r.target) }),
    capsule: b64(r.capsule),
    ciphertext: b64(r.ciphertext),
    anchoring: { ...r.anchoring },
  }));
  return {
    records,
    ...(answer.next === undefined ? {} : { next: answer.next }),
    ...(answer.skipped.length === 0 ? {} : { skipped: answer.skipped.map(skippedJson) }),
  };
}

const skippedJson = (s: OwnSkipped): SkippedJson => ({
  resourceType: s.resourceType,
  id: s.id,
  version: s.version,
  txHash: toHex(s.txHash),
  reason: s.reason,
});

function countParam(value: unknown, def: number, max: number): number {
  if (value === undefined) return def;
  const n = typeof value === 'string' && /^[0-9]{1,4}$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isInteger(n) || n < 1 || n > max) {
    throw fail(400, 'invalid', `count must be an integer in [1, ${max}]`, 'count');
  }
  return n;
}

interface SkippedJson {
  readonly resourceType: string;
  readonly id: string;
  readonly version: string;
  readonly txHash: string;
  readonly reason: string;
}

interface RecordsPage {
  readonly holder?: InstitutionIndex;
  readonly records: PatientRecordJson[];
  readonly next?: string;
  readonly skipped?: SkippedJson[];
}

const b64 = (bytes: Bytes) => Buffer.from(bytes).toString('base64');

function anchoringJson(s: AnchorStatus): Record<string, unknown> {
  return s.state === 'pinned'
    ? { state: s.state, batch: s.height, index: s.index, round: s.certificate.round }
    : { ...s };
}

/** A page of the patient's records held here: every version, in resource-key order. */
async function readRecords(
  deps: PatientRoutesDeps,
  idHash: Bytes,
  count: number,
  after: RecordsCursor | undefined,
): Promise<RecordsPage> {
  const page = await readOwnRecords(deps.store, idHash, {
    count,
    ...(after === undefined ? {} : { after }),
  });
  const records: PatientRecordJson[] = [];
  for (const r of page.records) {
    const txHash = toHex(r.txHash);
    records.push({
      resourceType: r.resourceType,
      id: r.id,
      version: r.version,
      kind: r.kind,
      txHash,
      ...(r.target === null ? {} : { target: toHex(r.target) }),
      capsule: b64(r.capsule),
      ciphertext: b64(r.ciphertext),
      anchoring: anchoringJson(await deps.anchorStatus(txHash)),
    });
  }
  return page.next === undefined ? { records } : { records, next: page.next };
}

/** The references this institution's audit log may name the patient by. */
async function patientRefs(
  deps: PatientRoutesDeps,
  idHash: Bytes,
): Promise<({ patient: string } | { entity: string })[]> {
  const patients = new Set([`Patient/${toHex(idHash)}`]);
  // The EHR's own Patient ids for this person: the `patient` of the records written here.
  let n = 0;
  for await (const key of deps.store.spaces.patientRecord.keys(prefixRange(idHash))) {
    if (++n > MAX_RECORDS_SCANNED) break;
    const { resourceType, id } = decodeResourceKey(key.subarray(idHash.length));
    const current = await deps.resources.read(resourceType, id);
    if (current?.patient !== undefined) patients.add(current.patient);
  }
  const consents = deps.consentIds === undefined ? [] : await deps.consentIds(idHash);
  return [
    ...[...patients].map((patient) => ({ patient })),
    ...consents.map((id) => ({ entity: `Consent/${id}` })),
  ];
}

/**
 * A directory from its JSON text (e.g. the environment's SPCHAIN_DIRECTORY): an object
 * `{ "<member index>": "<public base URL>" }`. A bad entry is a RangeError naming it.
 */
export function parseDirectory(text: string): Map<InstitutionIndex, string> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new RangeError('the directory must be JSON: { "<member index>": "<base URL>" }');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new RangeError('the directory must be a JSON object: { "<member index>": "<base URL>" }');
  }
  const out = new Map<InstitutionIndex, string>();
  for (const [k, url] of Object.entries(value)) {
    if (!/^(?:0|[1-9][0-9]{0,5})$/.test(k)) {
      throw new RangeError(`directory: ${JSON.stringify(k.slice(0, 16))} is not a member index`);
    }
    let ok = false;
    try {
      const u = new URL(String(url));
      ok = typeof url === 'string' && (u.protocol === 'http:' || u.protocol === 'https:');
    } catch {}
    if (!ok) throw new RangeError(`directory: the URL of member ${k} must be an http(s) URL`);
    out.set(Number(k), (url as string).replace(/\/+$/, ''));
  }
  return out;
}
