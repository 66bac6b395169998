/**
 * Batches while a member is new (replica.ts takingPart, replica-batch.ts membersAt): in the chunk
 * that admits it, a bundle naming it (the home's leaf tx for it) waits in the mempool without being
 * eligible, and one signed by it is refused as too new, so the proposer's batch is the one
 * validators accept; from the next chunk on the waiting bundle fits and is pinned. Before, the mempool took the leaf tx, every honest proposer put it in its batch, and
 * every validator refused that batch (UNKNOWN_INSTITUTION) until the chunk closed.
 *
 * Real signed bundles on the simulation network (sim/ledger-network.ts: 4 institutions, chunks of
 * one keyblock).
 */
import { describe, expect, it } from 'vitest';
import { deterministicRandom } from '../../src/crypto/random.ts';
import { makeLeafTx } from '../../src/ledger/author.ts';
import { decodeBatch } from '../../src/ledger/batch.ts';
import { approveAdmission, signAdmitRequest } from '../../src/ledger/membership.ts';
import {
  pinKeyblock,
  proposeBatch,
  type Replica,
  receiveBundle,
  validateProposal,
} from '../../src/ledger/replica.ts';
import { signBundle } from '../../src/ledger/tx.ts';
import type { AdmitTx } from '../../src/ledger/types.ts';
import { makeNetwork } from '../helpers/ledger-fixtures.ts';
import { initialReplica, ledgerScenario, simNetwork } from './sim/ledger-network.ts';

const config = ledgerScenario(4, 0, { behaviours: ['honest', 'honest', 'honest', 'honest'] });
const net = simNetwork(4);
const { chainId } = net.genesis;
const newcomer = makeNetwork(5, 'membership-batches').institutions[4]!;
const random = deterministicRandom('membership-batches');

function admitNewcomer(): AdmitTx {
  const member = newcomer.member;
  const peer = {
    peerId: '12D3KooWNewcomer',
    multiaddr: '/ip4/127.0.0.1/tcp/4004',
    binding: random(64),
  };
  return {
    type: 'admit',
    member,
    peer,
    proof: signAdmitRequest(chainId, member, peer, newcomer.signingSecret, random),
    approvals: [0, 1, 2].map((a) =>
      approveAdmission(chainId, { member, peer }, a, net.institutions[a]!.signingSecret, random),
    ),
  };
}

describe('batches while a member is new', () => {
  it('keeps a leaf tx for it out of the mempool in its first chunk, and pins it in the next', () => {
    // Keyblock 3 admits member 4 (chunk 2 with chunks of one keyblock).
    let r: Replica = pinKeyblock(initialReplica(config), {
      height: 3,
      miner: 0,
      registers: [],
      admits: [admitNewcomer()],
    });
    expect(r.chain.roster.map((m) => m.index)).toEqual([0, 1, 2, 3, 4]);
    expect(r.chain.members(4)).toBeUndefined();

    // Institution 2, home of its patient 0, adds a leaf there for member 4.
    const patient = net.patients[2]![0]!;
    const leaf = makeLeafTx({
      chainId,
      block: patient.block,
      home: net.institutions[2]!,
      newcomer: newcomer.member,
      fee: 1,
      random,
      patientSigningSecret: patient.signingSecret,
    });
    const grant = signBundle(chainId, 2, [leaf], net.institutions[2]!.signingSecret, random);
    const early = receiveBundle(r, grant, 0);
    // Held, but waiting: it does not fit while member 4 does not take part.
    expect(early.verdict).toEqual({ ok: true });
    expect(early.misbehaviour).toEqual([]); // no fault of institution 2's
    r = early.replica;
    expect(r.mempool.eligible.get(2) ?? []).toEqual([]);
    // The proposer's batch leaves it out, and validators accept the batch.
    const first = proposeBatch(r, r.chain.height + 1, 1);
    expect(decodeBatch(first).bundles).toEqual([]);
    expect(validateProposal(r, first, 10_000)).toEqual({ ok: true });

    // Member 4's own bundle is refused as too new too, saying so (its sidecar offers it again).
    const own = signBundle(chainId, 4, [leaf], newcomer.signingSecret, random);
    const ownVerdict = receiveBundle(r, own, 0).verdict;
    expect(ownVerdict).toMatchObject({
      ok: false,
      error: { code: 'UNKNOWN_INSTITUTION', detail: { institution: 4, admitted: true } },
    });

    // Keyblock 4 completes the admitting chunk: member 4 takes part, the waiting leaf tx fits, and
    // the next batch carries it.
    r = pinKeyblock(r, { height: 4, miner: 1, registers: [] });
    expect(r.chain.members(4)?.index).toBe(4);
    expect(r.mempool.eligible.get(2)?.map((e) => e.bundle)).toEqual([grant]);
    const second = proposeBatch(r, r.chain.height + 1, 1);
    expect(decodeBatch(second).bundles).toEqual([grant]);
    expect(validateProposal(r, second, 10_000)).toEqual({ ok: true });
  });
});
