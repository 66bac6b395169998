/**
 * The sidecar's own (non-FHIR) routes for the ledger side, under `/spchain`, behind the same
 * authorisation hook:
 *
 *   POST /spchain/patients          a patient's signed register tx (made by the CLI from the
 *                                   patient's own keys; the patient's secrets never come here),
 *                                   handed to this institution's node for the next keyblock: 202
 *                                   (submitRegistration; the portal's own route with an
 *                                   enrolment code, POST /spchain/patients/self, shares it)
 *   GET  /spchain/patients/:idHash  whether the patient's block is pinned, and where (i, j), its
 *                                   leaves and the pinned records on each (leafSeqs)
 *   GET  /spchain/tx/:hash          where a record tx of this institution is: queued, mempool,
 *                                   pinned (batch height and position)
 *
 * Bodies and answers are JSON; errors are OperationOutcomes like everywhere else.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { fromHex, toHex } from '../crypto/bytes.ts';
import type { AuditLog } from '../fhir/audit.ts';
import { fail } from '../fhir/outcome.ts';
import type { Verdict } from '../ledger/errors.ts';
import { decodeTx, verifyRegisterSignature } from '../ledger/tx.ts';
import type { RegisterTx } from '../ledger/types.ts';
import type { AnchorStatus } from '../sidecar/anchor.ts';
import type { PatientLedger } from '../sidecar/patients.ts';
import { contextOf } from './request.ts';

export interface RegistrationDeps {
  readonly chainId: string;
  /** This institution's member index: registrations here name it as home. */
  readonly self: number;
  readonly submitRegister: (tx: RegisterTx) => Verdict;
  readonly ledger: PatientLedger;
  readonly anchorStatus: (tx: string) => Promise<AnchorStatus>;
  readonly audit: AuditLog;
  readonly now?: () => number;
}

const HEX32 = /^[0-9a-f]{64}$/;
const MAX_TX_BASE64 = 8192;

/**
 * The one path of a patient's register tx into this institution's node, for `POST
 * /spchain/patients` (the EHR's) and `POST /spchain/patients/self` (the patient's portal, with an
 * enrolment code: patient-routes.ts): decode `text` (base64), check that it names this
 * institution as home and that the patient's signature verifies for this network, then
 * `beforeSubmit(tx)` (the caller's own checks, which throw an OutcomeError to refuse), submit it
 * to the node and audit the call. 400 undecodable, 422 wrong home or signature, 409 refused by
 * the node.
 */
export async function submitRegistration(
  deps: RegistrationDeps,
  req: FastifyRequest,
  text: unknown,
  beforeSubmit?: (tx: RegisterTx) => Promise<void>,
): Promise<{ idHash: string; tx: RegisterTx }> {
  const now = deps.now ?? Date.now;
  if (typeof text !== 'string' || text.length > MAX_TX_BASE64 || !/^[A-Za-z0-9+/]+=*$/.test(text)) {
    throw fail(
      400,
      'required',
      'registerTx must be the base64 of an encoded register tx',
      'registerTx',
    );
  }
  let tx: RegisterTx;
  try {
    const decoded = decodeTx(Uint8Array.from(Buffer.from(text, 'base64')));
    if (decoded.type !== 'register') throw new Error(`is a ${decoded.type} tx`);
    tx = decoded;
  } catch (err) {
    throw fail(
      400,
      'invalid',
      `registerTx does not decode: ${(err as Error).message}`,
      'registerTx',
    );
  }
  if (tx.home !== deps.self) {
    throw fail(
      422,
      'business-rule',
      `the register tx names institution ${tx.home} as home, not this one (${deps.self})`,
      'registerTx',
    );
  }
  if (!verifyRegisterSignature(deps.chainId, tx)) {
    throw fail(
      422,
      'invalid',
      "the patient's signature on the register tx does not verify for this network",
      'registerTx',
    );
  }
  if (beforeSubmit !== undefined) await beforeSubmit(tx);
  const idHash = toHex(tx.idHash);
  const verdict = deps.submitRegister(tx);
  const ctx = contextOf(req);
  await deps.audit.record({
    interaction: 'operation',
    agent: ctx.agent,
    status: verdict.ok ? 202 : 409,
    entities: [],
    patients: [`Patient/${idHash}`],
    requestId: ctx.requestId,
    ...(verdict.ok ? {} : { failure: verdict.error.code }),
    now: now(),
  });
  if (!verdict.ok) {
    throw fail(
      409,
      'conflict',
      `the node refused the registration: ${verdict.error.code}: ${verdict.error.message}`,
    );
  }
  return { idHash, tx };
}

export function registerSpchainRoutes(app: FastifyInstance, deps: RegistrationDeps): void {
  const ehr = { config: { auth: 'ehr' as const } };

  app.post('/spchain/patients', ehr, async (req, reply) => {
    const body = req.body as { registerTx?: unknown } | null;
    const { idHash } = await submitRegistration(deps, req, body?.registerTx);
    return reply.code(202).send({ idHash, state: 'submitted' });
  });

  app.get<{ Params: { idHash: string } }>('/spchain/patients/:idHash', ehr, async (req, reply) => {
    const { idHash } = req.params;
    if (!HEX32.test(idHash)) throw fail(400, 'invalid', 'idHash must be 64 lowercase hex digits');
    const block = await deps.ledger.getMicroblockByIdHash(fromHex(idHash, 'idHash'));
    return reply.send(
      block === undefined
        ? { idHash, registered: false }
        : {
            idHash,
            registered: true,
            block: { i: block.header.i, j: block.header.j },
            home: block.header.home,
            leaves: block.leaves.map((l) => l.institution),
            /** Pinned records (medical and label txs) per leaf, by institution index. */
            leafSeqs: Object.fromEntries(block.leaves.map((l) => [l.institution, l.seq])),
          },
    );
  });

  app.get<{ Params: { hash: string } }>('/spchain/tx/:hash', ehr, async (req, reply) => {
    const { hash } = req.params;
    if (!HEX32.test(hash))
      throw fail(400, 'invalid', 'the tx hash must be 64 lowercase hex digits');
    const s = await deps.anchorStatus(hash);
    return reply.send(
      s.state === 'pinned'
        ? { tx: hash, state: s.state, batch: s.height, index: s.index, round: s.certificate.round }
        : { tx: hash, ...s },
    );
  });
}
