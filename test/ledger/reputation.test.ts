import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  createWorld,
  defaultSimOpts,
  runHonest,
  type SimOpts,
  simulateAttack,
} from '../../bench/reputation-sim.ts';
import {
  addChunk,
  type ChunkContribution,
  chunkOfHeight,
  computeReputation,
  consensusGroup,
  groupForHeight,
  type InstitutionHistory,
  NO_CONTRIBUTION,
  reputationCurve,
  reputationsAt,
  summariseChunks,
} from '../../src/ledger/reputation.ts';

const PAPER = { reputationA: 5000, reputationLambda: 20000 };
const chunk = (keyblocks: number, records: number): ChunkContribution => ({ keyblocks, records });

describe('f(x) = (1 + (x - a) / (λ + |x - a|)) / 2', () => {
  it('matches hand-computed values at the paper parameters', () => {
    expect(reputationCurve(5000, PAPER)).toBe(0.5); // f(a) = 1/2
    expect(reputationCurve(0, PAPER)).toBeCloseTo(0.4, 15); // λ / (2(λ + a)) = 20000 / 50000
    expect(reputationCurve(25000, PAPER)).toBeCloseTo(0.75, 15); // f(a + λ) = 3/4
    expect(reputationCurve(85000, PAPER)).toBeCloseTo(0.9, 15); // f(a + 4λ) = 9/10
    expect(reputationCurve(1e15, PAPER)).toBeGreaterThan(0.999999); // → 1
    expect(reputationCurve(1e15, PAPER)).toBeLessThan(1);
  });

  it('is 1/4 at a - λ and tends to 0 far below a (a > λ)', () => {
    const p = { reputationA: 30000, reputationLambda: 20000 };
    expect(reputationCurve(10000, p)).toBeCloseTo(0.25, 15);
    expect(reputationCurve(0, p)).toBeCloseTo(0.2, 15); // 20000 / (2 · 50000)
  });

  it('is strictly increasing, in (0, 1), and point-symmetric about (a, 1/2)', () => {
    fc.assert(
      fc.property(fc.nat(1e9), fc.nat(1e9), (x, y) => {
        const fx = reputationCurve(x, PAPER);
        expect(fx).toBeGreaterThan(0);
        expect(fx).toBeLessThan(1);
        if (x < y) expect(fx).toBeLessThan(reputationCurve(y, PAPER));
        if (x <= 5000) {
          expect(fx + reputationCurve(10000 - x, PAPER)).toBeCloseTo(1, 12);
        }
      }),
    );
  });

  it('names the bad argument', () => {
    expect(() => reputationCurve(-1, PAPER)).toThrow(/x:/);
    expect(() => reputationCurve(Number.NaN, PAPER)).toThrow(/x:/);
    expect(() => reputationCurve(1, { reputationA: 1, reputationLambda: 0 })).toThrow(/Lambda/);
  });
});

describe('R1, R2 and R', () => {
  // With a = λ = 10 the values are small fractions that can be checked by hand.
  const SMALL = { reputationA: 10, reputationLambda: 10 };

  it('sums chunks into K, q2, L1 and L2', () => {
    const c = summariseChunks([chunk(2, 3), chunk(0, 5), chunk(0, 0), chunk(1, 0)]);
    expect(c).toEqual({ keyblocks: 3, records: 8, miningChunks: 2, activeChunks: 3 });
    expect(summariseChunks([chunk(2, 3), chunk(0, 5)], 1)).toEqual(
      addChunk(NO_CONTRIBUTION, chunk(2, 3)),
    );
    expect(() => addChunk(NO_CONTRIBUTION, chunk(-1, 0))).toThrow(/keyblocks/);
    expect(() => addChunk(NO_CONTRIBUTION, chunk(0, 1.5))).toThrow(/records/);
  });

  it('matches a hand-computed case', () => {
    const c = summariseChunks([chunk(2, 3), chunk(0, 5), chunk(0, 0), chunk(1, 0)]);
    // x1 = K · L1 = 3 · 2 = 6: f = (1 - 4/14)/2 = 5/14.
    // x2 = q1 · q2 · L2 = 3 · 8 · 3 = 72: f = (1 + 62/72)/2 = 67/72.
    const r = computeReputation(c, 1, SMALL);
    expect(r.r1).toBeCloseTo(5 / 14, 15);
    expect(r.r2).toBeCloseTo(67 / 72, 15);
    expect(r.r).toBeCloseTo((5 / 14 + 67 / 72) / 2, 15);
  });

  it('gives f(0) = 0.4, not 0, where the formula has x = 0 (no history; a pure miner has q2 = 0)', () => {
    expect(computeReputation(NO_CONTRIBUTION, 1, PAPER)).toEqual({
      r1: reputationCurve(0, PAPER),
      r2: reputationCurve(0, PAPER),
      r: reputationCurve(0, PAPER),
    });
    const miner = summariseChunks([chunk(50, 0), chunk(60, 0)]); // x1 = 110 · 2 = 220
    const r = computeReputation(miner, 1, PAPER);
    expect(r.r1).toBeCloseTo(reputationCurve(220, PAPER), 15);
    expect(r.r2).toBeCloseTo(0.4, 15);
  });

  it('is 0 with H = 0, whatever the work', () => {
    const c = summariseChunks([chunk(1000, 1000), chunk(1000, 1000)]);
    expect(computeReputation(c, 0, PAPER)).toEqual({ r1: 0, r2: 0, r: 0 });
  });

  const chunks = fc.array(fc.record({ keyblocks: fc.nat(200), records: fc.nat(5000) }), {
    maxLength: 40,
  });

  it('property: R in [0, 1]; H = 0 gives 0', () => {
    fc.assert(
      fc.property(chunks, (cs) => {
        const c = summariseChunks(cs);
        const r = computeReputation(c, 1, PAPER);
        for (const v of [r.r1, r.r2, r.r]) {
          expect(v).toBeGreaterThanOrEqual(0);
          expect(v).toBeLessThanOrEqual(1);
        }
        expect(computeReputation(c, 0, PAPER).r).toBe(0);
      }),
    );
  });

  it('property: monotone in work (more keyblocks or records, or one more chunk, never lowers R)', () => {
    fc.assert(
      fc.property(
        chunks.filter((cs) => cs.length > 0),
        fc.nat(),
        fc.nat(50),
        fc.nat(500),
        fc.record({ keyblocks: fc.nat(200), records: fc.nat(5000) }),
        (cs, at, moreBlocks, moreRecords, next) => {
          const before = computeReputation(summariseChunks(cs), 1, PAPER);
          const i = at % cs.length;
          const more = cs.map((c, j) =>
            j === i ? chunk(c.keyblocks + moreBlocks, c.records + moreRecords) : c,
          );
          for (const after of [
            computeReputation(summariseChunks(more), 1, PAPER),
            computeReputation(summariseChunks([...cs, next]), 1, PAPER),
          ]) {
            expect(after.r1).toBeGreaterThanOrEqual(before.r1);
            expect(after.r2).toBeGreaterThanOrEqual(before.r2);
            expect(after.r).toBeGreaterThanOrEqual(before.r);
          }
        },
      ),
    );
  });

  it('rewards regularity: the same keyblocks spread over more chunks weigh more', () => {
    const burst = computeReputation(summariseChunks([chunk(100, 10), chunk(0, 10)]), 1, PAPER);
    const steady = computeReputation(summariseChunks([chunk(50, 10), chunk(50, 10)]), 1, PAPER);
    expect(steady.r1).toBeGreaterThan(burst.r1);
    expect(steady.r).toBeGreaterThan(burst.r);
  });
});

describe('consensus group', () => {
  it('takes the top n by R, ties to the lower index, never R = 0', () => {
    const reps = [
      { index: 4, reputation: 0.7 },
      { index: 2, reputation: 0.9 },
      { index: 3, reputation: 0.7 },
      { index: 0, reputation: 0 },
      { index: 1, reputation: 0.4 },
    ];
    expect(consensusGroup(reps, 3)).toEqual([2, 3, 4]);
    expect(consensusGroup(reps, 10)).toEqual([2, 3, 4, 1]);
    expect(() => consensusGroup(reps, 0)).toThrow(/n:/);
    expect(() => consensusGroup([...reps, { index: 4, reputation: 0.1 }], 2)).toThrow(/twice/);
  });

  const reputations = fc.uniqueArray(
    fc.record({
      index: fc.nat(200),
      // Few distinct values so that ties are common.
      reputation: fc.constantFrom(0, 0.25, 0.4, 0.5, 0.7, 1),
    }),
    { selector: (r) => r.index, maxLength: 40 },
  );

  it('property: deterministic under any input order, size min(n, eligible), ranked', () => {
    fc.assert(
      fc.property(reputations, fc.integer({ min: 1, max: 50 }), fc.nat(), (reps, n, seed) => {
        const group = consensusGroup(reps, n);
        const shuffled = [...reps].sort(
          (x, y) => ((x.index * 7919 + seed) % 101) - ((y.index * 7919 + seed) % 101),
        );
        expect(consensusGroup(shuffled, n)).toEqual(group);
        const eligible = reps.filter((r) => r.reputation > 0);
        expect(group.length).toBe(Math.min(n, eligible.length));
        const r = new Map(reps.map((x) => [x.index, x.reputation]));
        for (const out of eligible.filter((x) => !group.includes(x.index))) {
          for (const member of group) {
            const better = r.get(member)! > out.reputation;
            const tieWin = r.get(member) === out.reputation && member < out.index;
            expect(better || tieWin).toBe(true);
          }
        }
      }),
    );
  });

  it('is recomputed only at chunk boundaries, from completed chunks', () => {
    const params = { ...PAPER, chunkSize: 10, groupSize: 2 };
    const histories: InstitutionHistory[] = [
      { index: 0, chunks: [chunk(0, 0), chunk(0, 0)] },
      { index: 1, chunks: [chunk(0, 0), chunk(9, 100)] },
      { index: 2, chunks: [chunk(8, 100), chunk(1, 0)] },
    ];
    expect(chunkOfHeight(1, 10)).toBe(0);
    expect(chunkOfHeight(10, 10)).toBe(0);
    expect(chunkOfHeight(11, 10)).toBe(1);
    // Heights 1..10: no completed chunk, everyone at f(0): the first n by index.
    expect(groupForHeight(1, histories, params)).toEqual([0, 1]);
    expect(groupForHeight(10, histories, params)).toEqual([0, 1]);
    // Heights 11..20 see chunk 0 only (entries for chunk 1 are ignored).
    expect(groupForHeight(11, histories, params)).toEqual([2, 0]);
    expect(groupForHeight(20, histories, params)).toEqual([2, 0]);
    expect(groupForHeight(21, histories, params)).toEqual([2, 1]);
    // Misbehaviour proven in chunk 1: H = 0 from the boundary after it, not before.
    const convicted = histories.map((h) => (h.index === 2 ? { ...h, misbehaviourChunk: 1 } : h));
    expect(groupForHeight(20, convicted, params)).toEqual([2, 0]);
    expect(groupForHeight(21, convicted, params)).toEqual([1, 0]);
    expect(reputationsAt(convicted, 2, params).find((r) => r.index === 2)!.reputation).toBe(0);
  });
});

describe('attacker simulation (small, seeded)', () => {
  const opts: SimOpts = { ...defaultSimOpts, seed: 7, groupSize: 10 };
  const history = runHonest(opts, 30);

  it('a fresh 65% attacker does not control the group after one chunk; the big pools stay in it', () => {
    for (const identities of [1, 4, 10]) {
      const r = simulateAttack(
        history,
        { power: 0.65, identities, fakeData: 'steady', capDays: 1 },
        opts,
      );
      expect(r.shareAfterFirstChunk).toBeLessThanOrEqual(1 / 3);
      expect(r.days13).toBeNull();
      for (const pool of [0, 1, 2, 3]) expect(r.groupAfterFirstChunk).toContain(pool);
    }
  });

  it('without data contributions, even 90% never reaches 1/3 in 60 days; with them it does, later', () => {
    const none = simulateAttack(
      history,
      { power: 0.9, identities: 4, fakeData: 'none', capDays: 60 },
      opts,
    );
    expect(none.days13).toBeNull();
    const fake = simulateAttack(
      history,
      { power: 0.9, identities: 4, fakeData: 'steady', capDays: 120 },
      opts,
    );
    expect(fake.days13).not.toBeNull();
    expect(fake.days13!).toBeGreaterThan(7);
    expect(fake.feeCost).toBe(fake.fakeRecords * opts.minFee);
  });

  it('is reproducible from its seed', () => {
    const spec = { power: 0.65, identities: 4, fakeData: 'minimal' as const, capDays: 20 };
    expect(simulateAttack(history, spec, opts)).toEqual(simulateAttack(history, spec, opts));
    expect(createWorld(opts).ids).toHaveLength(26);
  });
});
