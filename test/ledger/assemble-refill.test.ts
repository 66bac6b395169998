/**
 * The proposer's refill (replica-batch.ts assembleBatch): an institution whose next bundle the
 * proposer cannot pay for, or that does not fit on the batch so far, is left out, and the room its
 * bundles would have used goes to the others' bundles beyond the first selection (Algorithm 2 run
 * again over what is left, for the room that is left). Before, that room stayed empty while other
 * bundles waited, and validators holding them refused the honest batch (UNFAIR_BATCH), so the
 * height went to a view change; the same happened when the proposer could not pay for a bundle
 * that validators counted as waiting.
 *
 * Real signed bundles on the simulation network (sim/ledger-network.ts: 4 institutions of equal
 * reputation, batches of 14 txs), each test's case with numbers, then a property over random
 * mempools, accounts and reputations.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { deterministicRandom, type RandomBytes } from '../../src/crypto/random.ts';
import { advanceLeaf, makeLeafTx, makeRecordTx } from '../../src/ledger/author.ts';
import { decodeBatch, encodeBatch } from '../../src/ledger/batch.ts';
import { selectBatch } from '../../src/ledger/batching.ts';
import type { Accounts } from '../../src/ledger/fees.ts';
import { initialRunning } from '../../src/ledger/microblock.ts';
import {
  pinnedReputations,
  proposeBatch,
  type Replica,
  receiveBundle,
  validateProposal,
} from '../../src/ledger/replica.ts';
import { assembleBatch, checkBatch, checkFairness } from '../../src/ledger/replica-batch.ts';
import {
  admitBundle,
  EMPTY_MEMPOOL,
  fitBundle,
  heldBundles,
  type Mempool,
  makeEntry,
} from '../../src/ledger/replica-mempool.ts';
import { EMPTY_OVERLAY } from '../../src/ledger/replica-view.ts';
import type { InstitutionReputation } from '../../src/ledger/reputation.ts';
import { signBundle } from '../../src/ledger/tx.ts';
import type { Bundle, InstitutionIndex, TxBatch } from '../../src/ledger/types.ts';
import type { TestInstitution } from '../helpers/ledger-fixtures.ts';
import { initialReplica, ledgerScenario, simNetwork } from './sim/ledger-network.ts';

const config = ledgerScenario(4, 0, { behaviours: ['honest', 'honest', 'honest', 'honest'] });
const base = initialReplica(config);
const net = simNetwork(4);
const capacity = net.genesis.params.maxBatchTxs;
const grace = base.opts.fairnessGraceMs;
const [a, b, c, d] = net.institutions as [
  TestInstitution,
  TestInstitution,
  TestInstitution,
  TestInstitution,
];

/** Bundles of `who` on its patient `p` in seq order, one per entry of `sizes` (txs each). */
function chainOf(
  who: TestInstitution,
  p: number,
  sizes: readonly number[],
  random: RandomBytes,
  fee = 1,
): Bundle[] {
  let block = net.patients[who.index]![p]!.block;
  return sizes.map((size) => {
    const txs = Array.from({ length: size }, () => {
      const tx = makeRecordTx(block, who, { type: 'medical', pointer: random(32) }, fee, random);
      block = advanceLeaf(block, tx);
      return tx;
    });
    return signBundle(net.genesis.chainId, who.index, txs, who.signingSecret, random);
  });
}

function receiveAll(replica: Replica, bundles: readonly Bundle[], at: number): Replica {
  return bundles.reduce((r, x) => {
    const u = receiveBundle(r, x, at);
    expect(u.verdict.ok).toBe(true);
    return u.replica;
  }, replica);
}

const withAccounts = (r: Replica, accounts: Accounts): Replica => ({
  ...r,
  chain: { ...r.chain, accounts },
});

const txsOf = (batch: TxBatch, i?: InstitutionIndex) =>
  batch.bundles
    .filter((x) => i === undefined || x.institution === i)
    .reduce((s, x) => s + x.txs.length, 0);

describe('assembleBatch refills the room that skipped institutions leave', () => {
  it('gives the room of a bundle its institution cannot pay for to bundles beyond the cap', () => {
    const random = deterministicRandom('refill-fees');
    const ones = (n: number) => Array(n).fill(1);
    const bundles = [
      ...chainOf(a, 0, ones(13), random),
      ...chainOf(b, 0, ones(6), random),
      ...chainOf(c, 0, ones(1), random),
      ...chainOf(d, 0, ones(1), random),
    ];
    // b can pay for two txs; everyone else for anything.
    const accounts = new Map([...base.chain.accounts].map(([i, v]) => [i, i === b.index ? 2 : v]));
    const r = withAccounts(receiveAll(base, bundles, 0), accounts);
    const reps = pinnedReputations(r);
    expect(new Set(reps.map((x) => x.reputation)).size).toBe(1);

    const batch = decodeBatch(proposeBatch(r, 1, a.index));
    // Quotas of 14 over pending 13, 6, 1, 1: c and d settle at 1, b at 6, a gets 6. b pays for 2
    // of its 6; before, the batch stopped there: 6 + 2 + 1 + 1 = 10 txs, 4 of room left empty.
    // Now the 4 go to a's next bundles.
    expect([0, 1, 2, 3].map((i) => txsOf(batch, i))).toEqual([10, 2, 1, 1]);
    expect(txsOf(batch)).toBe(capacity);
    // The first selection comes first, in institution order; the refill after it.
    expect(batch.bundles.map((x) => x.institution)).toEqual([
      ...Array(6).fill(0),
      1,
      1,
      2,
      3,
      ...Array(4).fill(0),
    ]);
    // Each institution's bundles are a prefix of its eligible list.
    for (const [i, list] of r.mempool.eligible) {
      const mine = batch.bundles.filter((x) => x.institution === i);
      expect(mine).toEqual(list.slice(0, mine.length).map((e) => e.bundle));
    }

    // A validator holding what the proposer held: the batch is valid and fair. b, which cannot
    // pay for another bundle, does not count as waiting (the validator knows the pinned accounts).
    expect(checkBatch(r, encodeBatch(batch)).verdict).toEqual({ ok: true });
    const held = heldBundles(r.mempool, grace, grace);
    expect(checkFairness(batch, held, reps, capacity, accounts)).toEqual({ ok: true });
    // Without the accounts, b looks starved (2 txs and a waiting one within its share of 3).
    expect(checkFairness(batch, held, reps, capacity)).toMatchObject({
      ok: false,
      error: { code: 'UNFAIR_BATCH', detail: { underServed: [1] } },
    });
    // The batch of the first selection alone is refused: a's next bundle fits in the room left.
    const first = { ...batch, bundles: batch.bundles.slice(0, 10) };
    expect(checkFairness(first, held, reps, capacity, accounts)).toMatchObject({
      ok: false,
      error: { code: 'UNFAIR_BATCH', detail: { underServed: [0], batchFull: false } },
    });
  });

  it('retries an institution whose bundle did not fit once the batch holds what it needs', () => {
    // c (home of its patient 2) adds a leaf there for a; a then writes to that patient. a's
    // bundle fits only after c's, but Algorithm 2 lists institutions in index order: before, a
    // was skipped for the batch and every validator holding its bundle refused it.
    const random = deterministicRandom('refill-fit');
    const patient = net.patients[c.index]![2]!;
    const leaf = makeLeafTx({
      chainId: net.genesis.chainId,
      block: patient.block,
      home: c,
      newcomer: a.member,
      fee: 1,
      random,
      patientSigningSecret: patient.signingSecret,
    });
    const granted = {
      ...patient.block,
      leaves: [
        ...patient.block.leaves,
        {
          institution: a.index,
          digest: leaf.leafDigest,
          seq: 0,
          running: initialRunning(patient.block.header.idHash, a.index),
        },
      ],
    };
    const record = makeRecordTx(granted, a, { type: 'medical', pointer: random(32) }, 1, random);
    const grant = signBundle(net.genesis.chainId, c.index, [leaf], c.signingSecret, random);
    const write = signBundle(net.genesis.chainId, a.index, [record], a.signingSecret, random);
    const r = receiveAll(base, [grant, write], 0);
    expect(r.mempool.eligible.get(a.index)!.map((e) => e.bundle)).toEqual([write]);

    const bytes = proposeBatch(r, 1, b.index);
    expect(decodeBatch(bytes).bundles).toEqual([grant, write]);
    expect(validateProposal(r, bytes, grace)).toEqual({ ok: true });
    // The batch of the first walk alone (c's bundle) leaves a waiting: refused.
    const first = encodeBatch({ ...decodeBatch(bytes), bundles: [grant] });
    expect(validateProposal(r, first, grace)).toMatchObject({
      ok: false,
      error: { code: 'UNFAIR_BATCH', detail: { underServed: [0] } },
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Property: random mempools (prefixes of each institution's chains on each of its patients,
// arriving in a random order), accounts and reputations.

const PATIENTS = 3;
const CHAIN = 4;
/** Per institution and patient, CHAIN bundles of 1-3 txs, fee 1 or 2 per tx (made once). */
const chains: Bundle[][][] = (() => {
  const random = deterministicRandom('refill-property');
  return net.institutions.map((who) =>
    Array.from({ length: PATIENTS }, (_, p) =>
      chainOf(
        who,
        p,
        Array.from({ length: CHAIN }, (_, k) => 1 + ((who.index + 2 * p + k) % 3)),
        random,
        1 + ((who.index + p) % 2),
      ),
    ),
  );
})();

const LIMITS = { maxBundlesPerInstitution: 64, maxBundlesTotal: 256 };

const worlds = fc.record({
  prefixes: fc.array(fc.array(fc.nat(CHAIN), { minLength: PATIENTS, maxLength: PATIENTS }), {
    minLength: 4,
    maxLength: 4,
  }),
  order: fc.array(fc.nat(1000), {
    minLength: 4 * PATIENTS * CHAIN,
    maxLength: 4 * PATIENTS * CHAIN,
  }),
  balances: fc.array(fc.nat(24), { minLength: 4, maxLength: 4 }),
  ws: fc.array(fc.nat(4), { minLength: 4, maxLength: 4 }),
  /** How many of each institution's eligible bundles a validator has held for the grace. */
  cuts: fc.array(fc.nat(PATIENTS * CHAIN), { minLength: 4, maxLength: 4 }),
});

describe('property', () => {
  it('the assembled batch is valid and fair for its own waiting set, and leaves no room a payable bundle fits in', () => {
    // How often the cases of interest came up: bundles beyond the first selection taken, and an
    // institution left with eligible bundles it cannot pay for.
    let refilled = 0;
    let unpaid = 0;
    fc.assert(
      fc.property(worlds, ({ prefixes, order, balances, ws, cuts }) => {
        const accounts = new Map(balances.map((v, i) => [i, v] as const));
        const chain = { ...base.chain, accounts };
        const reps: InstitutionReputation[] = ws.map((w, index) => ({
          index,
          reputation: w / 4,
        }));
        const chosen = chains.flatMap((ps, i) =>
          ps.flatMap((bs, p) => bs.slice(0, prefixes[i]![p])),
        );
        const arrival = chosen
          .map((x, k) => [order[k]!, k, x] as const)
          .sort((x, y) => x[0] - y[0] || x[1] - y[1])
          .map(([, , x]) => x);
        const pool = arrival.reduce<Mempool>(
          (m, x) => admitBundle(chain, m, makeEntry(x, 0), LIMITS).pool,
          EMPTY_MEMPOOL,
        );
        const batch = assembleBatch(chain, pool, reps, 1, 0);

        expect(checkBatch({ ...base, chain }, encodeBatch(batch)).verdict).toEqual({ ok: true });
        expect(checkFairness(batch, pool.eligible, reps, capacity, accounts)).toEqual({ ok: true });
        // A validator that has held less of it (a prefix of each institution's list) agrees.
        const held = new Map([...pool.eligible].map(([i, list]) => [i, list.slice(0, cuts[i])]));
        expect(checkFairness(batch, held, reps, capacity, accounts)).toEqual({ ok: true });
        const first = new Set(
          selectBatch(pool.eligible, reps, capacity, (e) => e.bundle.txs.length).entries.map(
            (e) => e.item.bundle,
          ),
        );
        if (batch.bundles.some((x) => !first.has(x))) refilled++;

        const total = txsOf(batch);
        let overlay = EMPTY_OVERLAY;
        for (const x of batch.bundles) overlay = fitBundle(chain, overlay, makeEntry(x, 0)).overlay;
        for (const [i, list] of pool.eligible) {
          const mine = batch.bundles.filter((x) => x.institution === i);
          expect(mine).toEqual(list.slice(0, mine.length).map((e) => e.bundle));
          const next = list[mine.length];
          if (next === undefined || reps[i]!.reputation === 0) continue;
          const size = next.bundle.txs.length;
          const charged = mine.reduce((s, x) => s + x.txs.reduce((t, tx) => t + tx.fee, 0), 0);
          const fee = next.bundle.txs.reduce((s, tx) => s + tx.fee, 0);
          const payable = charged + fee <= accounts.get(i)!;
          if (!payable) unpaid++;
          const fits = fitBundle(chain, overlay, next).verdict.ok;
          expect(payable && fits && total + size <= capacity, `institution ${i}`).toBe(false);
        }
      }),
      { numRuns: 300 },
    );
    expect(refilled).toBeGreaterThan(50);
    expect(unpaid).toBeGreaterThan(50);
  });
});
