/**
 * The batch ledger as a whole: institutions running replicas (src/ledger/replica.ts) under
 * Tendermint in the seeded network simulation of sim/ledger-network.ts, with loss, delay,
 * reordering and partitions before GST, and a Byzantine minority. Each property is checked at
 * every honest replica over every run; the runs are shared between tests (memoised).
 */
import { describe, expect, it } from 'vitest';
import { toHex } from '../../src/crypto/bytes.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';
import { makeRecordTx } from '../../src/ledger/author.ts';
import { decodeBatch, encodeBatch } from '../../src/ledger/batch.ts';
import { makeSigner, signMessage } from '../../src/ledger/bft-messages.ts';
import { verifyCertificate } from '../../src/ledger/certificate.ts';
import { encodeEvidence, evidenceCulprit } from '../../src/ledger/evidence.ts';
import { totalSupply } from '../../src/ledger/fees.ts';
import { encodeMicroblock, nextRunning } from '../../src/ledger/microblock.ts';
import {
  applyDecision,
  applyEvidence,
  batchValueHash,
  completedChunks,
  consensusGroupAt,
  consensusGroupOf,
  hasPinnedEvidence,
  integrityOf,
  memoryLedgerView,
  pinKeyblock,
  pinnedReputations,
  proposeBatch,
  type Replica,
  receiveBundle,
  reputations,
  validateCertified,
  validateProposal,
} from '../../src/ledger/replica.ts';
import { integrityAt } from '../../src/ledger/reputation.ts';
import { signBundle, txHash } from '../../src/ledger/tx.ts';
import type { Bundle, Certificate, MedicalTx } from '../../src/ledger/types.ts';
import type { TestInstitution } from '../helpers/ledger-fixtures.ts';
import {
  initialReplica,
  type LedgerBehaviour,
  type LedgerSimConfig,
  type LedgerSimResult,
  ledgerScenario,
  runLedgerSim,
  simCapacity,
  simNetwork,
} from './sim/ledger-network.ts';

/** Seeds per network size: every Byzantine behaviour appears at each size. */
const SEEDS: Readonly<Record<number, number>> = { 4: 12, 7: 8, 10: 6 };
/**
 * Once the network is calm, an honest bundle is pinned everywhere within this much virtual time
 * of max(its creation, GST). The worst seen over these runs is about 1.5 s: a resend of a bundle
 * lost before GST (300 ms), the fairness grace (2x the delay bound), and up to f + 1 rounds led by
 * faulty leaders (withholding, selfish, forging) with growing timeouts.
 */
const LIVENESS_BOUND_MS = 3000;

const cache = new Map<string, LedgerSimResult>();

function run(n: number, seed: number, overrides: Partial<LedgerSimConfig> = {}): LedgerSimResult {
  const key = `${n}/${seed}/${JSON.stringify(overrides)}`;
  let r = cache.get(key);
  if (r === undefined) {
    r = runLedgerSim(ledgerScenario(n, seed, overrides));
    cache.set(key, r);
  }
  return r;
}

function allRuns(): LedgerSimResult[] {
  return Object.entries(SEEDS).flatMap(([n, count]) =>
    Array.from({ length: count }, (_, seed) => run(Number(n), seed)),
  );
}

const mix = (n: number, faulty: Record<number, LedgerBehaviour>) =>
  Array.from({ length: n }, (_, i): LedgerBehaviour => faulty[i] ?? 'honest');

/** The selfish and the withholding institution together, so that each leads some rounds. */
function leaderRuns(): LedgerSimResult[] {
  return [
    run(7, 101, { behaviours: mix(7, { 2: 'selfish', 5: 'withhold' }) }),
    run(7, 102, { behaviours: mix(7, { 0: 'withhold', 3: 'selfish' }), partition: undefined }),
    run(10, 103, { behaviours: mix(10, { 1: 'selfish', 4: 'withhold', 8: 'selfish' }) }),
  ];
}

const label = (r: LedgerSimResult) =>
  `n=${r.config.behaviours.length} seed=${r.config.seed} ${r.config.behaviours.join(',')}`;

const faultyOf = (r: LedgerSimResult, b: LedgerBehaviour) =>
  r.config.behaviours.flatMap((x, i) => (x === b ? [i] : []));

function honestReplicas(r: LedgerSimResult): Replica[] {
  return r.honest.map((i) => r.replicas[i]!);
}

describe('ledger network simulation', () => {
  it('SAFETY: honest replicas never pin different batches at one height and end with identical patient blocks', () => {
    for (const r of [...allRuns(), ...leaderRuns()]) {
      expect(r.finished, label(r)).toBe(true);
      const byHeight = new Map<number, string>();
      for (const i of r.honest) {
        for (const [h, d] of r.decisions.get(i)!) {
          const id = toHex(batchValueHash(d.value));
          expect(toHex(d.certificate.value)).toBe(id);
          const seen = byHeight.get(h);
          if (seen === undefined) byHeight.set(h, `${id}/${toHex(d.value)}`);
          else expect(`${id}/${toHex(d.value)}`, `${label(r)} height ${h}`).toBe(seen);
        }
      }
      // Every decided height carries a valid certificate of the group.
      const first = r.decisions.get(r.honest[0]!)!;
      for (const d of first.values()) {
        expect(verifyCertificate(d.certificate, r.group, r.genesis.chainId).ok).toBe(true);
      }
      const replicas = honestReplicas(r);
      const tip = replicas[0]!.chain;
      let appended = 0;
      for (const ref of r.refs) {
        const blocks = replicas.map((x) => x.chain.ledger.microblocks.get(ref)!);
        const bytes = blocks.map((b) => toHex(encodeMicroblock(b)));
        expect(new Set(bytes).size, `${label(r)} block ${ref.i}/${ref.j}`).toBe(1);
        appended += blocks[0]!.leaves.reduce((s, l) => s + l.seq, 0);
      }
      expect(appended, 'records were appended').toBeGreaterThan(r.honest.length * 4);
      for (const x of replicas) {
        expect(x.chain.height).toBe(tip.height);
        expect(toHex(x.chain.hash)).toBe(toHex(tip.hash));
      }
    }
  });

  it('VALIDITY: no forged tx is ever pinned, and no tx is pinned twice', () => {
    let forgeries = 0;
    const kinds = new Set<string>();
    for (const r of allRuns()) {
      forgeries += r.forgedTxIds.length;
      for (const x of honestReplicas(r)) {
        for (const id of r.forgedTxIds) expect(x.chain.ledger.isPinnedTx(id), label(r)).toBe(false);
      }
      const pinned: string[] = [];
      for (const d of r.decisions.get(r.honest[0]!)!.values()) {
        for (const b of decodeBatch(d.value).bundles) {
          for (const tx of b.txs) pinned.push(toHex(txHash(tx)));
        }
      }
      expect(new Set(pinned).size, `${label(r)}: a tx pinned twice`).toBe(pinned.length);
      const forged = new Set(r.forgedTxIds);
      expect(pinned.filter((id) => forged.has(id))).toEqual([]);
      for (const d of r.decisions.get(r.honest[0]!)!.values()) {
        for (const b of decodeBatch(d.value).bundles) for (const tx of b.txs) kinds.add(tx.type);
      }
    }
    expect(forgeries, 'forgers sent forged txs').toBeGreaterThan(0);
    expect([...kinds].sort()).toEqual(['label', 'leaf', 'medical']);
  });

  it('is deterministic: a seed replays to the same decisions', () => {
    const fingerprint = (r: LedgerSimResult) =>
      [...r.decisions.get(r.honest[0]!)!].map(([h, d]) => `${h}@${d.at}:${toHex(d.value)}`);
    const again = runLedgerSim(ledgerScenario(4, 3));
    expect(fingerprint(again)).toEqual(fingerprint(run(4, 3)));
    expect(again.endTime).toBe(run(4, 3).endTime);
  });

  it('LIVENESS: after GST every honest bundle is pinned at every honest replica within the bound', () => {
    let capped = 0;
    for (const r of [...allRuns(), ...leaderRuns()]) {
      const gst = r.config.gstMs;
      let checked = 0;
      for (const p of r.produced) {
        if (r.config.behaviours[p.institution] !== 'honest') continue;
        for (const i of r.honest) {
          for (const id of p.txIds) {
            const at = r.pinnedAt.get(i)!.get(id);
            expect(at, `${label(r)}: tx of ${p.institution} at ${i}`).toBeDefined();
            expect(at! - Math.max(p.at, gst), label(r)).toBeLessThanOrEqual(LIVENESS_BOUND_MS);
            checked++;
          }
        }
      }
      expect(checked).toBeGreaterThan(0);
      const capacity = simCapacity(r.config.behaviours.length);
      for (const d of r.decisions.get(r.honest[0]!)!.values()) {
        const txs = decodeBatch(d.value).bundles.reduce((s, b) => s + b.txs.length, 0);
        expect(txs).toBeLessThanOrEqual(capacity);
        if (txs > capacity - 4) capped++;
      }
    }
    // Algorithm 2's cap binds in some batches (the backlog from before GST).
    expect(capped).toBeGreaterThan(0);
  });

  it('LIVENESS: a selfish or withholding leader neither stalls the chain nor starves others', () => {
    let withheld = 0;
    let rejectedSelfish = 0;
    for (const r of leaderRuns()) {
      const selfish = new Set(faultyOf(r, 'selfish'));
      const withhold = new Set(faultyOf(r, 'withhold'));
      const sorted = r.group.map((m) => m.member).sort((a, b) => a - b);
      for (const [h, d] of r.decisions.get(r.honest[0]!)!) {
        const batch = decodeBatch(d.value);
        // A selfish leader's batch only ever carries its own bundles.
        if (selfish.has(batch.proposer)) {
          expect(batch.bundles.every((b) => b.institution === batch.proposer)).toBe(true);
        }
        expect(withhold.has(batch.proposer), 'a withholder proposes nothing').toBe(false);
        if (d.at < r.config.gstMs) continue;
        const leader = sorted[h % sorted.length]!;
        if (withhold.has(leader)) {
          withheld++;
          expect(d.certificate.round, `${label(r)} height ${h}`).toBeGreaterThan(0);
        }
        if (selfish.has(leader) && d.certificate.round > 0) rejectedSelfish++;
      }
    }
    expect(withheld, 'heights led by the withholder after GST').toBeGreaterThan(0);
    expect(rejectedSelfish, 'selfish round-0 proposals rejected as unfair').toBeGreaterThan(0);
  });

  it('REPUTATION: equivocators and forgers get H = 0 and R = 0 at every honest replica; nobody else loses R', () => {
    const punished = { equivocate: 0, forge: 0 };
    for (const r of [...allRuns(), ...leaderRuns()]) {
      const before = reputations(r.initial);
      for (const x of honestReplicas(r)) {
        const after = reputations(x);
        r.config.behaviours.forEach((b, i) => {
          const rb = before[i]!.reputation;
          const ra = after[i]!.reputation;
          if (b === 'equivocate' || b === 'forge') {
            expect(integrityOf(x, i), `${label(r)}: H of ${i}`).toBe(0);
            expect(rb).toBeGreaterThan(ra);
            expect(ra).toBe(0);
            const code = x.misbehaviour.get(i)!.code;
            if (b === 'equivocate') expect(code).toBe('EQUIVOCATION');
            else expect(['BAD_CHAMELEON_OPENING', 'UNAUTHORISED_INSTITUTION']).toContain(code);
            punished[b]++;
          } else {
            // Honest, withholding, selfish and replaying institutions prove nothing against them.
            expect(integrityOf(x, i), `${label(r)}: H of ${i}`).toBe(1);
            expect(ra).toBeGreaterThanOrEqual(rb);
          }
        });
        // What consensus reads is computed from pinned data alone: the same everywhere.
        expect(pinnedReputations(x)).toEqual(pinnedReputations(r.replicas[r.honest[0]!]!));
      }
    }
    expect(punished.equivocate).toBeGreaterThan(0);
    expect(punished.forge).toBeGreaterThan(0);
  });

  it('EVIDENCE: honest replicas pin the same evidence and agree on H and the group; culprits leave the group at the next chunk boundary, nobody else does', () => {
    // An equivocating and a forging institution in one run, besides the scenarios.
    const both = run(7, 201, { behaviours: mix(7, { 1: 'equivocate', 4: 'forge' }) });
    const pinnedEvidence = (r: LedgerSimResult, i: number) =>
      [...r.decisions.get(i)!.values()].flatMap((d) => decodeBatch(d.value).evidence);
    const out = { equivocate: 0, forge: 0 };
    for (const r of [both, ...allRuns(), ...leaderRuns()]) {
      const replicas = honestReplicas(r);
      const x0 = replicas[0]!;
      const evidence = pinnedEvidence(r, r.honest[0]!);
      const integrity = (x: Replica) => x.histories.map((h) => integrityAt(h, completedChunks(x)));
      const group = (x: Replica) => consensusGroupOf(x).map((m) => [m.member, m.reputation]);
      for (const i of r.honest) {
        const x = r.replicas[i]!;
        expect(
          pinnedEvidence(r, i).map((e) => toHex(encodeEvidence(e))),
          label(r),
        ).toEqual(evidence.map((e) => toHex(encodeEvidence(e))));
        expect(x.histories.map((h) => h.misbehaviourChunk)).toEqual(
          x0.histories.map((h) => h.misbehaviourChunk),
        );
        expect(integrity(x), label(r)).toEqual(integrity(x0));
        expect(group(x), label(r)).toEqual(group(x0));
      }
      const named = evidence.map(evidenceCulprit);
      const members = new Set(consensusGroupOf(x0).map((m) => m.member));
      r.config.behaviours.forEach((b, i) => {
        const m = x0.histories[i]!.misbehaviourChunk;
        if (b === 'equivocate' || b === 'forge') {
          // Pinned once, by the kind of proof its behaviour leaves.
          const against = evidence.filter((e) => evidenceCulprit(e) === i);
          expect(against, `${label(r)}: evidence against ${i}`).toHaveLength(1);
          expect(against[0]!.type).toBe(b === 'equivocate' ? 'equivocation' : 'bundle');
          // In the group through the chunk its evidence was pinned in, out from the next boundary.
          expect(m, label(r)).toBeDefined();
          expect(m!).toBeLessThan(completedChunks(x0));
          const membersAt = (kb: number) => consensusGroupAt(x0, kb).map((g) => g.member);
          expect(membersAt(m! + 1)).toContain(i); // chunkSize 1: keyblock k is in chunk k - 1
          expect(membersAt(m! + 2)).not.toContain(i);
          expect(members.has(i), `${label(r)}: ${i} in the group`).toBe(false);
          expect(integrity(x0)[i]).toBe(0);
          expect(pinnedReputations(x0)[i]!.reputation).toBe(0);
          out[b]++;
        } else {
          expect(named, `${label(r)}: evidence against ${i}`).not.toContain(i);
          expect(m).toBeUndefined();
          expect(members.has(i), `${label(r)}: ${i} in the group`).toBe(true);
          expect(integrity(x0)[i]).toBe(1);
        }
      });
      expect(x0.chain.keyblockHeight, 'keyblocks were pinned during the run').toBeGreaterThan(2);
    }
    expect(out.equivocate).toBeGreaterThan(1);
    expect(out.forge).toBeGreaterThan(1);
  });

  it('FEES: accounts balance; total supply grows by exactly the batch rewards', () => {
    for (const r of allRuns()) {
      const params = r.genesis.params;
      const start = r.initial.chain.accounts;
      const expected = new Map(start);
      const decisions = [...r.decisions.get(r.honest[0]!)!.values()];
      for (const d of decisions) {
        const batch = decodeBatch(d.value);
        let fees = 0;
        for (const b of batch.bundles) {
          for (const tx of b.txs) {
            expected.set(b.institution, expected.get(b.institution)! - tx.fee);
            fees += tx.fee;
          }
        }
        expected.set(batch.proposer, expected.get(batch.proposer)! + params.batchReward + fees);
      }
      for (const x of honestReplicas(r)) {
        const accounts = x.chain.accounts;
        expect(totalSupply(accounts)).toBe(
          totalSupply(start) + params.batchReward * x.chain.height,
        );
        expect(x.chain.height).toBe(decisions.length);
        expect(new Map(accounts)).toEqual(expected);
        for (const v of accounts.values()) expect(v).toBeGreaterThanOrEqual(0);
      }
    }
  });
});

describe('replica', () => {
  const config = ledgerScenario(4, 0, { behaviours: ['honest', 'honest', 'honest', 'honest'] });
  const base = initialReplica(config);
  const net = simNetwork(4);
  const { genesis } = net;
  const random = deterministicRandom('replica-unit');
  const grace = base.opts.fairnessGraceMs;
  const [, b, c] = net.institutions;

  /** Medical txs seq 1..count by `who` for its patient `p`, each in its own signed bundle. */
  function bundlesOf(who: TestInstitution, p: number, count: number, fee = 1): Bundle[] {
    let block = net.patients[who.index]![p]!.block;
    const out: Bundle[] = [];
    for (let k = 0; k < count; k++) {
      const tx = makeRecordTx(block, who, { type: 'medical', pointer: random(32) }, fee, random);
      block = {
        ...block,
        leaves: block.leaves.map((l) =>
          l.institution === who.index
            ? { ...l, seq: tx.seq, running: nextRunning(l.running, tx) }
            : l,
        ),
      };
      out.push(signBundle(genesis.chainId, who.index, [tx], who.signingSecret, random));
    }
    return out;
  }

  function receiveAll(replica: Replica, bundles: readonly Bundle[], at: number): Replica {
    return bundles.reduce((r, x) => receiveBundle(r, x, at).replica, replica);
  }

  const certify = (bytes: Uint8Array, height: number): Certificate => ({
    kind: 'batch',
    height,
    round: 0,
    value: batchValueHash(bytes),
    signatures: [],
  });

  it('starts from the pinned keyblocks with an empty mempool; an empty batch is a valid proposal', () => {
    expect(base.chain.keyblockHeight).toBe(2);
    expect(base.chain.height).toBe(0);
    expect(base.mempool.size).toBe(0);
    const empty = proposeBatch(base, 1, 0);
    expect(decodeBatch(empty).bundles).toEqual([]);
    expect(validateProposal(base, empty, 0).ok).toBe(true);
    expect(() => proposeBatch(base, 2, 0)).toThrow(/cannot propose batch 2/);
  });

  it('holds a bundle that arrives before its predecessor until the predecessor fits', () => {
    const [one, two, three] = bundlesOf(b!, 0, 3);
    let r = receiveAll(base, [three!, two!], 0);
    expect(r.mempool.size).toBe(2);
    expect(r.mempool.eligible.size).toBe(0);
    r = receiveBundle(r, one!, 5).replica;
    expect(r.mempool.eligible.get(b!.index)!.map((e) => e.bundle)).toEqual([one, two, three]);
    const batch = decodeBatch(proposeBatch(r, 1, 0));
    expect(batch.bundles).toEqual([one, two, three]);
  });

  it('refuses bad signatures without blame, and blames a signer for a low fee or a forged opening', () => {
    const [good] = bundlesOf(b!, 0, 1);
    const forgedSig = { ...good!, signature: bundlesOf(c!, 0, 1)[0]!.signature };
    const u1 = receiveBundle(base, forgedSig, 0);
    expect(u1.verdict).toMatchObject({ ok: false, error: { code: 'BAD_SIGNATURE' } });
    expect(u1.misbehaviour).toEqual([]);
    expect(u1.replica.mempool.size).toBe(0);

    const cheap = bundlesOf(b!, 0, 1, 0)[0]!;
    const u2 = receiveBundle(base, cheap, 0);
    expect(u2.verdict).toMatchObject({ ok: false, error: { code: 'FEE_TOO_LOW' } });
    expect(u2.misbehaviour.map((m) => m.institution)).toEqual([b!.index]);
    expect(integrityOf(u2.replica, b!.index)).toBe(0);
    expect(reputations(u2.replica)[b!.index]!.reputation).toBe(0);
    expect(reputations(base)[b!.index]!.reputation).toBeGreaterThan(0);

    const tx = bundlesOf(c!, 1, 1)[0]!.txs[0] as MedicalTx;
    const forged = signBundle(
      genesis.chainId,
      c!.index,
      [{ ...tx, pointer: random(32) }],
      c!.signingSecret,
      random,
    );
    const u3 = receiveBundle(base, forged, 0);
    expect(u3.verdict).toMatchObject({ ok: false, error: { code: 'BAD_CHAMELEON_OPENING' } });
    expect(u3.misbehaviour.map((m) => m.institution)).toEqual([c!.index]);
    // A bundle that does not fit yet (seq 2 first) proves nothing and is held.
    const later = bundlesOf(c!, 2, 2)[1]!;
    const u4 = receiveBundle(base, later, 0);
    expect(u4.verdict.ok).toBe(true);
    expect(u4.misbehaviour).toEqual([]);
  });

  it('bounds the mempool per institution and in total, dropping the newest', () => {
    const small = {
      ...base,
      opts: { ...base.opts, maxBundlesPerInstitution: 2, maxBundlesTotal: 3 },
    };
    const mine = bundlesOf(b!, 0, 3);
    let r = receiveAll(small, mine.slice(0, 2), 0);
    const full = receiveBundle(r, mine[2]!, 0);
    expect(full.verdict).toMatchObject({ ok: false, error: { code: 'TOO_LARGE' } });
    expect(full.replica.mempool.size).toBe(2);
    const theirs = bundlesOf(c!, 0, 2);
    r = receiveBundle(r, theirs[0]!, 0).replica;
    expect(r.mempool.size).toBe(3);
    expect(receiveBundle(r, theirs[1]!, 0).verdict).toMatchObject({
      ok: false,
      error: { code: 'TOO_LARGE' },
    });
    // The oldest are kept: they are the ones the next batch can take.
    expect(r.mempool.queues.get(b!.index)!.map((e) => e.bundle)).toEqual(mine.slice(0, 2));
  });

  it('judges fairness against bundles held past the grace period, as of the proposal', () => {
    const mine = bundlesOf(b!, 0, 2);
    const theirs = bundlesOf(c!, 0, 1);
    const r = receiveAll(base, [...mine, ...theirs], 0);
    const all = proposeBatch(r, 1, 0);
    expect(decodeBatch(all).bundles).toHaveLength(3);
    const only = (who: number) => {
      const batch = decodeBatch(all);
      return encodeBatch({ ...batch, bundles: batch.bundles.filter((x) => x.institution === who) });
    };
    expect(validateProposal(r, all, grace).ok).toBe(true);
    // Leaving out c's bundle is unfair once c's bundle has been held for the grace period...
    expect(validateProposal(r, only(b!.index), grace)).toMatchObject({
      ok: false,
      error: { code: 'UNFAIR_BATCH' },
    });
    // ...but not before: the leader may not have had it yet.
    expect(validateProposal(r, only(b!.index), grace - 1).ok).toBe(true);
  });

  it('pins a decided batch: blocks, txs, fees, record counts; its bundles leave the mempool', () => {
    const mine = bundlesOf(b!, 0, 2);
    const r = receiveAll(base, mine, 0);
    const bytes = proposeBatch(r, 1, c!.index);
    expect(() => applyDecision(r, bytes, certify(proposeBatch(base, 1, 0), 1))).toThrow(
      /does not sign this batch/,
    );
    expect(() => applyDecision(r, bytes, certify(bytes, 2))).toThrow(/certificate for batch 2/);
    const next = applyDecision(r, bytes, certify(bytes, 1));
    expect(next.chain.height).toBe(1);
    expect(next.mempool.size).toBe(0);
    const ref = net.patients[b!.index]![0]!.block.header;
    expect(next.chain.ledger.microblocks.get(ref)!.leaves[0]!.seq).toBe(2);
    for (const x of mine) expect(next.chain.ledger.isPinnedTx(toHex(txHash(x.txs[0]!)))).toBe(true);
    const fees = mine.reduce((s, x) => s + x.txs[0]!.fee, 0);
    expect(next.chain.accounts.get(c!.index)).toBe(
      base.chain.accounts.get(c!.index)! + genesis.params.batchReward + fees,
    );
    expect(next.histories[b!.index]!.chunks.at(-1)!.records).toBe(2);
    // A replayed bundle is stale now, and the base replica is unchanged.
    expect(receiveBundle(next, mine[0]!, 10).verdict).toMatchObject({
      ok: false,
      error: { code: 'REPLAYED_TX' },
    });
    expect(r.chain.height).toBe(0);
    expect(r.mempool.size).toBe(2);
  });

  it('memoryLedgerView is persistent across pins, and stays so past the flattening depth', () => {
    const blocks = net.patients.flat().map((p) => p.block);
    const ref = blocks[0]!.header;
    const views = [memoryLedgerView(blocks)];
    for (let k = 1; k <= 40; k++) {
      const block = { ...blocks[0]!, leaves: [{ ...blocks[0]!.leaves[0]!, seq: k }] };
      const write = {
        microblocks: new Map([[`${ref.i}/${ref.j}`, block]]),
        txHashes: [`tx${k}`],
        records: [`rec${k}`],
      };
      views.push(views.at(-1)!.pin(write));
    }
    views.forEach((v, k) => {
      expect(v.microblocks.get(ref)!.leaves[0]!.seq).toBe(k);
      expect(v.microblocks.get(blocks[1]!.header)).toBe(blocks[1]);
      expect(v.isPinnedTx(`tx${k}`)).toBe(k > 0);
      expect(v.isPinnedTx(`tx${k + 1}`)).toBe(false);
    });
    expect(views[40]!.isPinnedTx('tx1')).toBe(true);
    expect(views[40]!.microblocks.get({ i: 9, j: 9 })).toBeUndefined();
  });

  it('pins the evidence it holds; H = 0 from the next chunk boundary, at every replica, once', () => {
    const cheap = bundlesOf(b!, 0, 1, 0)[0]!;
    const proven = receiveBundle(base, cheap, 0).replica;
    expect(integrityOf(proven, b!.index)).toBe(0);
    expect(hasPinnedEvidence(proven, b!.index)).toBe(false);
    const bytes = proposeBatch(proven, 1, c!.index);
    const batch = decodeBatch(bytes);
    expect(batch.evidence).toEqual([
      { type: 'bundle', bundle: cheap, index: 0, reason: 'FEE_TOO_LOW' },
    ]);
    // A replica that never saw the bundle checks the evidence from the batch alone, and pins it.
    expect(validateProposal(base, bytes, 0).ok).toBe(true);
    const pinned = applyDecision(base, bytes, certify(bytes, 1));
    expect(pinned.histories[b!.index]!.misbehaviourChunk).toBe(1); // the chunk of keyblock 2
    expect(hasPinnedEvidence(pinned, b!.index)).toBe(true);
    expect(pinned.misbehaviour.get(b!.index)).toMatchObject({ code: 'FEE_TOO_LOW' });
    expect(integrityOf(pinned, b!.index)).toBe(0);
    // Consensus reads completed chunks: b stays in the group until the boundary...
    const everyone = [0, 1, 2, 3];
    expect(
      consensusGroupOf(pinned)
        .map((m) => m.member)
        .sort(),
    ).toEqual(everyone);
    expect(pinnedReputations(pinned)[b!.index]!.reputation).toBeGreaterThan(0);
    // ...and is out of it, with R = 0 and no Algorithm 2 quota, from the next keyblock on.
    const next = pinKeyblock(pinned, { height: 3, miner: 0, registers: [] });
    expect(
      consensusGroupOf(next)
        .map((m) => m.member)
        .sort(),
    ).toEqual([0, 2, 3]);
    expect(pinnedReputations(next)[b!.index]!.reputation).toBe(0);
    const waiting = receiveAll(next, [...bundlesOf(b!, 1, 1), ...bundlesOf(c!, 1, 1)], 0);
    const later = decodeBatch(proposeBatch(waiting, 2, c!.index));
    expect(later.bundles.map((x) => x.institution)).toEqual([c!.index]);
    // Never pinned twice: the proposer leaves it out, and a batch that carries it is invalid.
    expect(later.evidence).toEqual([]);
    const again = encodeBatch({ ...later, evidence: batch.evidence });
    expect(validateCertified(next, again)).toMatchObject({
      ok: false,
      error: { code: 'CONFLICTS_WITH_PINNED' },
    });
    // Evidence that proves nothing makes the proposal invalid.
    const framed = encodeBatch({
      ...decodeBatch(proposeBatch(base, 1, c!.index)),
      evidence: [
        { type: 'bundle', bundle: bundlesOf(b!, 0, 1)[0]!, index: 0, reason: 'FEE_TOO_LOW' },
      ],
    });
    expect(validateProposal(base, framed, 0)).toMatchObject({
      ok: false,
      error: { code: 'INVALID_VALUE' },
    });
  });

  it('pins equivocation evidence it verified, under the group of the batch anchor', () => {
    const group = consensusGroupOf(base);
    const signer = makeSigner(b!.index, b!.signingSecret, random);
    const vote = (value: Uint8Array | null) =>
      signMessage(
        genesis.chainId,
        { type: 'prevote', kind: 'batch', height: 1, round: 0, value },
        signer,
      );
    const e = { member: b!.index, first: vote(new Uint8Array(32).fill(7)), second: vote(null) };
    const held = applyEvidence(base, e, group).replica;
    const bytes = proposeBatch(held, 1, 0);
    expect(decodeBatch(bytes).evidence).toEqual([
      { type: 'equivocation', kind: 'batch', first: e.first, second: e.second },
    ]);
    const pinned = applyDecision(base, bytes, certify(bytes, 1));
    expect(pinned.misbehaviour.get(b!.index)).toMatchObject({ code: 'EQUIVOCATION' });
    expect(hasPinnedEvidence(pinned, b!.index)).toBe(true);
    // A replica that pinned more keyblocks judges the batch the same way.
    const ahead = pinKeyblock(base, { height: 3, miner: 0, registers: [] });
    expect(validateCertified(ahead, bytes).ok).toBe(true);
  });

  it('accepts equivocation evidence only when it verifies', () => {
    const group = consensusGroupOf(base);
    const signer = makeSigner(b!.index, b!.signingSecret, random);
    const vote = (value: Uint8Array | null) =>
      signMessage(
        genesis.chainId,
        { type: 'prevote', kind: 'batch', height: 1, round: 0, value },
        signer,
      );
    const v1 = vote(new Uint8Array(32).fill(1));
    const same = applyEvidence(base, { member: b!.index, first: v1, second: v1 }, group);
    expect(same.verdict).toMatchObject({ ok: false, error: { code: 'MALFORMED' } });
    expect(integrityOf(same.replica, b!.index)).toBe(1);
    const framed = applyEvidence(base, { member: c!.index, first: v1, second: vote(null) }, group);
    expect(framed.verdict.ok).toBe(false);
    const real = applyEvidence(base, { member: b!.index, first: v1, second: vote(null) }, group);
    expect(real.verdict.ok).toBe(true);
    expect(integrityOf(real.replica, b!.index)).toBe(0);
    // Two conflicting proposals are checked under the batch commitment hash.
    const propose = (bytes: Uint8Array) =>
      signMessage(
        genesis.chainId,
        { type: 'proposal', kind: 'batch', height: 1, round: 0, validRound: -1, value: bytes },
        signer,
        batchValueHash,
      );
    const p1 = propose(proposeBatch(base, 1, b!.index));
    const p2 = propose(proposeBatch(receiveAll(base, bundlesOf(c!, 0, 1), 0), 1, b!.index));
    const both = applyEvidence(base, { member: b!.index, first: p1, second: p2 }, group);
    expect(both.verdict.ok).toBe(true);
  });
});
