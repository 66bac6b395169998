/**
 * What a patient's device sends to the institutions holding their records (issue 5 part 6; the
 * CLI's `patient grant`, `patient revoke` and `patient allow-upload` send them, the portal of
 * issue 6 will too), under `/spchain`:
 *
 *   GET  /spchain/institution   public: which institution and network this sidecar is, so a
 *                               patient's device can check where it is about to send a grant
 *   POST /spchain/grants        a grant (authz/grant.ts grantToJson: the patient-signed FHIR
 *                               Consent, its signature and the kfrag), for this institution to
 *                               re-encrypt the patient's records for the grantee: 201 stored;
 *                               a Consent whose status is not active revokes that Consent: 200
 *   POST /spchain/revocations   the patient's signed revocation of a Consent (authz/consent.ts
 *                               revocationToJson): 200; no re-encryption under it from then on
 *   POST /spchain/leaves        at the patient's home institution: the patient's signed upload
 *                               grant for another institution ({ idHash, institution, grant }),
 *                               which this institution turns into a leaf tx (leaf-author.ts):
 *                               202 submitted / pending, 200 present (pinned)
 *
 * Why not `POST /fhir/Consent`: the grant is a FHIR Consent plus a detached signature and a kfrag
 * that no FHIR element carries, and it must never reach the grantee (the kfrag with the grantee's
 * secret key yields the patient's key), whereas a FHIR Consent endpoint invites EHRs and clients
 * to post and read Consents. So grants travel as their own JSON documents, to holders only.
 *
 * The grant and revocation routes exist when the sidecar has sharing wired, the leaf route when it
 * can author leaf txs (both in the composition root, src/http/sidecar.ts).
 *
 * Authorisation: these routes need no EHR token (auth rule `patient-signed`): what authorises each
 * is the patient's signature in the body, checked here against the patient's keys from their
 * pinned register tx before anything is kept (Sharing.acceptGrant / revoke, LeafAuthor.add).
 * A grant naming this institution itself as grantee is refused before it is looked at further.
 * Every call leaves an AuditEvent (agent `patient`, the Consent as entity; no patient data).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { parseConsent, revocationFromJson } from '../authz/consent.ts';
import { isAuthzError } from '../authz/errors.ts';
import { type Grant, grantFromJson } from '../authz/grant.ts';
import { fromHex } from '../crypto/bytes.ts';
import type { AuditInteraction, AuditLog } from '../fhir/audit.ts';
import { audited } from '../fhir/audited.ts';
import { fail, type IssueType, OutcomeError } from '../fhir/outcome.ts';
import { isSidecarError } from '../sidecar/errors.ts';
import type { ConsentRevocation } from '../sidecar/share.ts';
import type { AcceptedGrant } from '../sidecar/share-grants.ts';
import type { LeafAuthor, LeafState } from './leaf-author.ts';
import { contextOf } from './request.ts';

export interface ShareRoutesDeps {
  readonly chainId: string;
  readonly institution: { readonly index: number; readonly name: string };
  /** The holder side of sharing (src/sidecar/share.ts Sharing). */
  readonly sharing?: {
    acceptGrant(grant: Grant): Promise<AcceptedGrant>;
    revoke(revocation: ConsentRevocation): Promise<void>;
  };
  readonly leaves?: Pick<LeafAuthor, 'add'>;
  readonly audit: AuditLog;
  readonly now?: () => number;
}

/** A holder's refusal reason (authz DenyReason, or UNREGISTERED) as an HTTP status. */
const REFUSAL: Record<string, [number, IssueType]> = {
  MALFORMED: [400, 'invalid'],
  UNREGISTERED: [404, 'not-found'],
  BAD_SIGNATURE: [403, 'forbidden'],
  WRONG_PATIENT: [403, 'forbidden'],
  BAD_KFRAG: [403, 'forbidden'],
  UNKNOWN_INSTITUTION: [422, 'business-rule'],
  REVOKED: [409, 'conflict'],
  EXPIRED: [422, 'business-rule'],
  NOT_YET_VALID: [422, 'business-rule'],
  INACTIVE: [422, 'business-rule'],
  WRONG_ACTOR: [422, 'business-rule'],
};

const HEX32 = /^[0-9a-f]{64}$/;
const HEX64 = /^[0-9a-f]{128}$/;

export function registerShareRoutes(app: FastifyInstance, deps: ShareRoutesDeps): void {
  const now = deps.now ?? Date.now;
  const signed = { config: { auth: 'patient-signed' as const } };

  /** Runs `act` and records the call's AuditEvent, whether it succeeds or not. */
  const withAudit = <T>(
    req: FastifyRequest,
    interaction: AuditInteraction,
    entities: readonly string[],
    status: (result: T) => number,
    act: () => Promise<T>,
  ): Promise<T> =>
    audited(deps.audit, { interaction, ctx: contextOf(req), status, entities, now }, act);

  app.get('/spchain/institution', { config: { auth: 'public' } }, async (_req, reply) =>
    reply.send({
      chainId: deps.chainId,
      index: deps.institution.index,
      name: deps.institution.name,
    }),
  );

  const { sharing, leaves } = deps;
  if (sharing !== undefined) registerHolderRoutes(sharing);
  if (leaves !== undefined) registerLeafRoute(leaves);

  function registerHolderRoutes(sharing: NonNullable<ShareRoutesDeps['sharing']>): void {
    app.post('/spchain/grants', signed, async (req, reply) => {
      let grant: Grant;
      try {
        grant = grantFromJson(req.body);
      } catch (err) {
        throw asBadRequest(err);
      }
      const parsed = parseConsent(grant.consent);
      if (!parsed.ok) throw fail(400, 'invalid', `grant: ${parsed.problem}`, 'consent');
      const { id, grantee } = parsed.value;
      const status = (a: AcceptedGrant) => (a.outcome === 'stored' ? 201 : 200);
      const accepted = await withAudit(req, 'create', [`Consent/${id}`], status, async () => {
        if (grantee === deps.institution.index) {
          throw fail(
            422,
            'business-rule',
            'this institution is the grantee: a grant goes only to the institutions holding the records, never to the grantee (its kfrag with the grantee secret key would reveal the patient key)',
            'consent.provision.actor',
          );
        }
        return sharing.acceptGrant(grant).catch(refusal);
      });
      return reply.code(status(accepted)).send(accepted);
    });

    app.post('/spchain/revocations', signed, async (req, reply) => {
      let revocation: ConsentRevocation;
      try {
        revocation = revocationFromJson(req.body);
      } catch (err) {
        throw asBadRequest(err);
      }
      const entity = `Consent/${revocation.consentId}`;
      await withAudit(
        req,
        'update',
        [entity],
        () => 200,
        () => sharing.revoke(revocation).catch(refusal),
      );
      return reply.send({ consentId: revocation.consentId, state: 'revoked' });
    });
  }

  function registerLeafRoute(leaves: Pick<LeafAuthor, 'add'>): void {
    app.post('/spchain/leaves', signed, async (req, reply) => {
      const body = (req.body ?? {}) as Record<string, unknown>;
      if (typeof body.idHash !== 'string' || !HEX32.test(body.idHash)) {
        throw fail(400, 'invalid', 'idHash must be 32 bytes as lowercase hex', 'idHash');
      }
      const institution = body.institution;
      if (!Number.isSafeInteger(institution) || (institution as number) < 0) {
        throw fail(400, 'invalid', 'institution must be a member index', 'institution');
      }
      if (typeof body.grant !== 'string' || !HEX64.test(body.grant)) {
        throw fail(400, 'invalid', 'grant must be 64 bytes as lowercase hex', 'grant');
      }
      const request = {
        idHash: fromHex(body.idHash),
        institution: institution as number,
        grant: fromHex(body.grant),
      };
      const status = (state: LeafState) => (state === 'present' ? 200 : 202);
      const state = await withAudit(req, 'operation', [], status, () => leaves.add(request));
      return reply.code(status(state)).send({ idHash: body.idHash, state });
    });
  }
}

function asBadRequest(err: unknown): unknown {
  if (isAuthzError(err)) {
    const field = err.detail.field;
    return fail(400, 'invalid', err.message, typeof field === 'string' ? field : undefined);
  }
  return err;
}

/** A holder's GRANT_REFUSED as an OperationOutcome with its status; anything else unchanged. */
function refusal(err: unknown): never {
  if (isSidecarError(err, 'GRANT_REFUSED')) {
    const reason = String(err.detail.reason);
    const [status, code] = REFUSAL[reason] ?? [422, 'business-rule'];
    throw new OutcomeError(status, [
      {
        severity: 'error',
        code,
        details: {
          coding: [{ system: 'urn:spchain:grant-refusal', code: reason }],
          text: err.message,
        },
      },
    ]);
  }
  throw err;
}
