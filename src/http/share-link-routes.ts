/**
 * Share links over HTTP (authz/share-link.ts), both ends:
 *
 *   POST /spchain/share-links/redeem   public, at the link's issuer (a holder of the patient's
 *                                      grant): { link, institution, ts, signature }, where the
 *                                      signature is the grantee institution's (its genesis
 *                                      signing key) over (chainId, link nonce, institution, ts).
 *                                      Checks, in order: the link parses (400) and is the
 *                                      patient's for this network (403; the key from the pinned
 *                                      block, 404 unknown patient), the institution is the
 *                                      link's grantee (403), its signature verifies (403) and is
 *                                      fresh (403), the link has not expired (410), was not
 *                                      redeemed before (409: single use), and the Consent it
 *                                      names is held here, active, for that grantee (403).
 *                                      200 { idHash, block, consent, patient, holders }.
 *   POST /spchain/share-links/open     ehr, at the grantee's own sidecar (its clinicians' tools):
 *                                      { link } -> checks the link here first (the patient's
 *                                      signature, the grantee is this institution, not
 *                                      expired), so that only a patient-signed link makes this
 *                                      sidecar call out; then signs the redemption with this
 *                                      institution's signing secret and posts it to the issuer.
 *                                      200 { ...the issuer's answer, patient, everything: the
 *                                      $everything URL here }; the issuer's refusal is passed on
 *                                      with its status, naming the issuer's reason; 502 when the
 *                                      issuer cannot be reached or answers nonsense.
 *
 * Redeemed nonces are kept in sublevel `sl` (nonce -> the link's exp) until the link expires.
 * Both calls are audited (the Consent as entity, `Patient/<idHash>` as patient): the patient sees
 * who opened their link, and who tried.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import {
  parseShareLink,
  type ShareLinkPayload,
  signShareLinkRedemption,
  verifyShareLink,
  verifyShareLinkRedemption,
} from '../authz/share-link.ts';
import { fromHex } from '../crypto/bytes.ts';
import type { RandomBytes } from '../crypto/random.ts';
import type { AuditLog } from '../fhir/audit.ts';
import { audited } from '../fhir/audited.ts';
import { fail, type IssueType, OutcomeError } from '../fhir/outcome.ts';
import type { RequestContext } from '../fhir/transaction.ts';
import { decode, encode } from '../ledger/codec.ts';
import { rosterLookup } from '../ledger/membership.ts';
import type { Microblock } from '../ledger/microblock.ts';
import type { Bytes, InstitutionIndex, Member } from '../ledger/types.ts';
import type { PatientLedger } from '../sidecar/patients.ts';
import type { ConsentState } from '../sidecar/share-grants.ts';
import { type Db, openSublevel, type Sublevel } from '../store/db.ts';
import { openSeal, sealIn } from '../store/values.ts';
import { postToSidecar } from './forward.ts';
import { corsRoute, registerPreflight } from './patient-routes.ts';
import { contextOf } from './request.ts';

export const REDEEMED_SPACE = 'sl';
/** How far a redemption's timestamp may be from the issuer's clock. */
export const REDEEM_WINDOW_MS = 300_000;
/** How long the grantee's sidecar waits for the issuer. */
export const REDEEM_TIMEOUT_MS = 15_000;
const SWEEP_EVERY = 64;

export interface RedeemAnswer {
  readonly idHash: string;
  readonly block: { readonly i: number; readonly j: number };
  readonly consent: string;
  readonly patient: string;
  readonly holders: readonly InstitutionIndex[];
}

export interface ShareLinkRoutesDeps {
  readonly chainId: string;
  readonly institution: { readonly index: InstitutionIndex; readonly name: string };
  /** The members now: the genesis members and those admitted since. */
  readonly members: () => readonly Member[];
  readonly ledger: PatientLedger;
  readonly db: Db;
  readonly audit: AuditLog;
  /** The holder's view of a Consent (Sharing.consentState); without it, no redeem route. */
  readonly consentState?: (
    idHash: Bytes,
    consentId: string,
    grantee: InstitutionIndex,
  ) => Promise<ConsentState>;
  /** This institution's genesis signing secret; without it, no open route. */
  readonly signingSecret?: Bytes;
  /** This sidecar's FHIR base URL for a request. */
  readonly base: (req: FastifyRequest) => string;
  /** The HTTP client for the issuer (default: the global fetch). */
  readonly fetch?: typeof fetch;
  readonly now?: () => number;
  readonly random?: RandomBytes;
}

export function registerShareLinkRoutes(app: FastifyInstance, deps: ShareLinkRoutesDeps): void {
  const now = deps.now ?? Date.now;
  const memberOf = rosterLookup(deps.members);
  const { consentState, signingSecret } = deps;
  if (consentState !== undefined) registerRedeem(consentState);
  if (signingSecret !== undefined) registerOpen(signingSecret);

  /** The link of a body, parsed: 400 naming the problem. */
  function linkOf(text: unknown): ShareLinkPayload {
    const parsed = parseShareLink(text);
    if (!parsed.ok) throw fail(400, 'invalid', parsed.message, 'link');
    return parsed.payload;
  }

  /**
   * The patient's pinned block for a link, and the link checked against it and (unless `expiry`
   * is false: the caller checks it later) the clock.
   */
  async function checkLink(payload: ShareLinkPayload, expiry = true): Promise<Microblock> {
    const block = await deps.ledger.getMicroblockByIdHash(fromHex(payload.idHash, 'idHash'));
    if (block === undefined) {
      throw fail(404, 'not-found', 'the patient of this link is not registered on the ledger');
    }
    if (block.header.i !== payload.block.i || block.header.j !== payload.block.j) {
      throw fail(403, 'forbidden', "the link names another block than the patient's", 'link');
    }
    const checked = verifyShareLink(payload, {
      chainId: deps.chainId,
      signingKey: block.patientSigningKey,
      now: now(),
    });
    if (!checked.ok && (expiry || checked.reason !== 'EXPIRED')) {
      const [status, code]: [number, IssueType] =
        checked.reason === 'EXPIRED'
          ? [410, 'expired']
          : checked.reason === 'MALFORMED'
            ? [400, 'invalid']
            : [403, 'forbidden'];
      throw refusal(status, code, checked.reason, checked.message);
    }
    return block;
  }

  function registerRedeem(state: NonNullable<ShareLinkRoutesDeps['consentState']>): void {
    const redeemed = new RedeemedNonces(deps.db);
    const pending = new Set<string>();
    registerPreflight(app, ['/spchain/share-links/redeem']);
    app.post('/spchain/share-links/redeem', corsRoute('public', 'guess'), async (req, reply) => {
      const body = (req.body ?? {}) as Record<string, unknown>;
      const payload = linkOf(body.link);
      const { institution, ts, signature } = body;
      if (!Number.isSafeInteger(institution) || (institution as number) < 0) {
        throw fail(400, 'invalid', 'institution must be a member index', 'institution');
      }
      if (!Number.isSafeInteger(ts) || (ts as number) < 0) {
        throw fail(400, 'invalid', 'ts must be ms since epoch', 'ts');
      }
      if (typeof signature !== 'string' || !/^[0-9a-f]{128}$/.test(signature)) {
        throw fail(400, 'invalid', 'signature must be 64 bytes as lowercase hex', 'signature');
      }
      const by = institution as number;
      const ctx: RequestContext = {
        ...contextOf(req),
        agent: { id: `institution-${by}`, method: 'share-link-redeem', address: req.ip },
      };
      const answer = await audited(
        deps.audit,
        {
          interaction: 'operation',
          ctx,
          status: 200,
          entities: [`Consent/${payload.consent}`],
          patients: [`Patient/${payload.idHash}`],
          now,
        },
        async (): Promise<RedeemAnswer> => {
          const block = await checkLink(payload, false);
          if (by !== payload.grantee) {
            throw fail(403, 'forbidden', 'this link is for another institution', 'institution');
          }
          const member = memberOf(by);
          const r = {
            chainId: deps.chainId,
            nonce: payload.nonce,
            institution: by,
            ts: ts as number,
          };
          if (member === undefined || !verifyShareLinkRedemption(r, signature, member.signingKey)) {
            throw fail(403, 'forbidden', "the signature is not the institution's", 'signature');
          }
          if (Math.abs(now() - r.ts) > REDEEM_WINDOW_MS) {
            throw fail(
              403,
              'forbidden',
              `ts is more than ${REDEEM_WINDOW_MS / 1000} s from the issuer's clock`,
              'ts',
            );
          }
          if (now() >= payload.exp)
            throw refusal(410, 'expired', 'EXPIRED', 'the link has expired');
          if (pending.has(payload.nonce) || (await redeemed.has(payload.nonce))) {
            throw refusal(409, 'conflict', 'REDEEMED', 'the link was already used (single use)');
          }
          pending.add(payload.nonce);
          try {
            const s = await state(block.header.idHash, payload.consent, payload.grantee);
            if (s !== 'active') {
              throw refusal(
                403,
                'forbidden',
                s === 'revoked' ? 'REVOKED' : s,
                s === 'revoked'
                  ? 'the patient revoked this Consent'
                  : s === 'none'
                    ? 'no grant under this Consent is held here for this institution'
                    : `the Consent does not allow reading now (${s})`,
              );
            }
            await redeemed.add(payload.nonce, payload.exp, now());
          } finally {
            pending.delete(payload.nonce);
          }
          return {
            idHash: payload.idHash,
            block: payload.block,
            consent: payload.consent,
            patient: `Patient/${payload.idHash}`,
            holders: block.leaves.filter((l) => l.seq > 0).map((l) => l.institution),
          };
        },
      );
      return reply.send(answer);
    });
  }

  function registerOpen(secret: Bytes): void {
    registerPreflight(app, ['/spchain/share-links/open']);
    const http = deps.fetch ?? globalThis.fetch;
    app.post('/spchain/share-links/open', corsRoute('ehr'), async (req, reply) => {
      const body = (req.body ?? {}) as Record<string, unknown>;
      const payload = linkOf(body.link);
      const answer = await audited(
        deps.audit,
        {
          interaction: 'operation',
          ctx: contextOf(req),
          status: 200,
          entities: [`Consent/${payload.consent}`],
          patients: [`Patient/${payload.idHash}`],
          now,
        },
        async () => {
          if (payload.grantee !== deps.institution.index) {
            throw fail(403, 'forbidden', 'this link is for another institution', 'link');
          }
          await checkLink(payload);
          const ts = now();
          const redemption = {
            link: body.link,
            institution: deps.institution.index,
            ts,
            signature: signShareLinkRedemption(
              {
                chainId: deps.chainId,
                nonce: payload.nonce,
                institution: deps.institution.index,
                ts,
              },
              secret,
              deps.random,
            ),
          };
          return redeemAt(http, payload, redemption);
        },
      );
      const patient = `Patient/${payload.idHash}`;
      return reply.send({
        ...answer,
        patient,
        everything: `${deps.base(req)}/${patient}/$everything`,
      });
    });
  }
}

/** Posts the redemption to the link's issuer; its refusal becomes ours, naming its reason. */
async function redeemAt(
  http: typeof fetch,
  payload: ShareLinkPayload,
  redemption: Record<string, unknown>,
): Promise<RedeemAnswer> {
  const { json } = await postToSidecar(
    http,
    `${payload.issuer}/spchain/share-links/redeem`,
    redemption,
    { who: "the link's issuer", timeoutMs: REDEEM_TIMEOUT_MS },
  );
  const a = json as Partial<RedeemAnswer> | null;
  if (
    a === null ||
    typeof a !== 'object' ||
    a.idHash !== payload.idHash ||
    a.consent !== payload.consent ||
    a.block?.i !== payload.block.i ||
    a.block?.j !== payload.block.j ||
    !Array.isArray(a.holders) ||
    !a.holders.every((h) => Number.isSafeInteger(h) && h >= 0)
  ) {
    throw fail(502, 'transient', "the link's issuer answered something else than this link");
  }
  return {
    idHash: a.idHash,
    block: { i: a.block.i, j: a.block.j },
    consent: a.consent,
    patient: `Patient/${a.idHash}`,
    holders: a.holders,
  };
}

/** A refusal with its reason code (urn:spchain:share-link), so that callers can tell them apart. */
function refusal(status: number, code: IssueType, reason: string, text: string): OutcomeError {
  return new OutcomeError(status, [
    {
      severity: 'error',
      code,
      details: { coding: [{ system: 'urn:spchain:share-link', code: reason }], text },
    },
  ]);
}

/** The nonces of redeemed links, each until its link expires (then swept). */
class RedeemedNonces {
  private readonly space: Sublevel;
  private readonly db: Db;
  private added = 0;

  constructor(db: Db) {
    this.db = db;
    this.space = openSublevel(db, REDEEMED_SPACE);
  }

  has(nonce: string): Promise<boolean> {
    return this.space.has(fromHex(nonce, 'nonce'));
  }

  async add(nonce: string, exp: number, now: number): Promise<void> {
    const key = fromHex(nonce, 'nonce');
    const value = sealIn(
      REDEEMED_SPACE,
      key,
      encode((w) => w.varint(exp)),
    );
    await this.db.batch([{ type: 'put', sublevel: this.space, key, value }] as never, {
      sync: true,
    });
    if (++this.added % SWEEP_EVERY === 0) await this.sweep(now);
  }

  /** Drops the nonces of links that have expired: they cannot be redeemed anyway. */
  private async sweep(now: number): Promise<void> {
    const ops: { type: 'del'; sublevel: Sublevel; key: Bytes }[] = [];
    for await (const [key, stored] of this.space.iterator()) {
      const opened = openSeal(REDEEMED_SPACE, key, stored);
      const exp = opened.ok ? decode(opened.payload, 'redeemed', (r) => r.varint('exp')) : 0;
      if (exp <= now) ops.push({ type: 'del', sublevel: this.space, key });
    }
    if (ops.length > 0) await this.db.batch(ops as never);
  }
}
