import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isLedgerError, type Verdict } from '../../src/ledger/errors.ts';
import {
  applyBatchRewards,
  applyKeyblockRewards,
  batchCharges,
  checkCharges,
  checkFee,
  checkPayable,
  genesisAccounts,
  keyblockCharges,
  totalSupply,
} from '../../src/ledger/fees.ts';

const params = { minFee: 10, keyblockReward: 1000, batchReward: 100 };
const accounts = () =>
  genesisAccounts(
    [0, 1, 2],
    new Map([
      [0, 500],
      [1, 50],
    ]),
  );
const code = (v: Verdict) => (v.ok ? 'OK' : v.error.code);

describe('fees', () => {
  it('starts every member at its genesis credit, or 0', () => {
    expect([...accounts()]).toEqual([
      [0, 500],
      [1, 50],
      [2, 0],
    ]);
    expect(() => genesisAccounts([0], new Map([[1, 5]]))).toThrow(/not a member/);
    expect(() => genesisAccounts([0], new Map([[0, -5]]))).toThrow(/genesis credit of 0/);
  });

  it('rejects a fee below minFee, and a fee that is not a non-negative integer', () => {
    expect(code(checkFee(10, params))).toBe('OK');
    expect(code(checkFee(11, params))).toBe('OK');
    expect(code(checkFee(9, params))).toBe('FEE_TOO_LOW');
    expect(code(checkFee(0, params))).toBe('FEE_TOO_LOW');
    expect(code(checkFee(10.5, params))).toBe('MALFORMED');
    expect(code(checkFee(-10, params))).toBe('MALFORMED');
    const v = checkFee(3, params);
    if (!v.ok) expect(v.error.detail).toEqual({ fee: 3, minFee: 10 });
  });

  it('requires balance >= fee, cumulatively per payer within a block', () => {
    expect(code(checkPayable(accounts(), 1, 50))).toBe('OK');
    expect(code(checkPayable(accounts(), 1, 51))).toBe('INSUFFICIENT_FUNDS');
    expect(code(checkPayable(accounts(), 9, 1))).toBe('UNKNOWN_INSTITUTION');
    const two = [
      { payer: 1, fee: 30 },
      { payer: 1, fee: 30 },
    ];
    expect(code(checkCharges(accounts(), two.slice(0, 1), params))).toBe('OK');
    expect(code(checkCharges(accounts(), two, params))).toBe('INSUFFICIENT_FUNDS');
    expect(code(checkCharges(accounts(), [{ payer: 0, fee: 5 }], params))).toBe('FEE_TOO_LOW');
  });
});

describe('keyblock rewards', () => {
  const kb = {
    miner: 2,
    registers: [
      { home: 0, fee: 10 },
      { home: 1, fee: 20 },
      { home: 0, fee: 15 },
    ],
  };

  it('pays the miner keyblockReward plus the register fees, debited from the home institutions', () => {
    const after = applyKeyblockRewards(accounts(), kb, params);
    expect([...after]).toEqual([
      [0, 475],
      [1, 30],
      [2, 1045],
    ]);
    expect(totalSupply(after)).toBe(totalSupply(accounts()) + params.keyblockReward);
    expect(keyblockCharges(kb)).toEqual([
      { payer: 0, fee: 10 },
      { payer: 1, fee: 20 },
      { payer: 0, fee: 15 },
    ]);
  });

  it('credits an empty keyblock with the reward alone, and a miner its own fees back', () => {
    expect(applyKeyblockRewards(accounts(), { miner: 1, registers: [] }, params).get(1)).toBe(1050);
    const own = applyKeyblockRewards(
      accounts(),
      { miner: 0, registers: [{ home: 0, fee: 40 }] },
      params,
    );
    expect(own.get(0)).toBe(1500);
  });

  it('throws the typed error for an unpaid fee and leaves the input untouched', () => {
    const before = accounts();
    const broke = { miner: 0, registers: [{ home: 2, fee: 10 }] };
    expect(() => applyKeyblockRewards(before, broke, params)).toThrow(
      expect.objectContaining({ code: 'INSUFFICIENT_FUNDS' }),
    );
    expect(() =>
      applyKeyblockRewards(before, { miner: 0, registers: [{ home: 0, fee: 1 }] }, params),
    ).toThrow(expect.objectContaining({ code: 'FEE_TOO_LOW' }));
    expect(() => applyKeyblockRewards(before, { miner: 7, registers: [] }, params)).toThrow(
      expect.objectContaining({ code: 'UNKNOWN_INSTITUTION' }),
    );
    expect([...before]).toEqual([...accounts()]);
  });
});

describe('batch rewards', () => {
  const batch = {
    proposer: 1,
    bundles: [
      { institution: 0, txs: [{ fee: 10 }, { fee: 12 }] },
      { institution: 2, txs: [] },
      { institution: 1, txs: [{ fee: 10 }] },
    ],
  };

  it('pays the proposer batchReward plus every fee, each bundle institution paying its own', () => {
    const after = applyBatchRewards(accounts(), batch, params);
    expect([...after]).toEqual([
      [0, 478],
      [1, 50 - 10 + 100 + 32],
      [2, 0],
    ]);
    expect(totalSupply(after)).toBe(totalSupply(accounts()) + params.batchReward);
    expect(batchCharges(batch)).toHaveLength(3);
  });

  it('rejects a batch whose institution cannot pay (zombie-patient records are not free)', () => {
    const zombie = { proposer: 0, bundles: [{ institution: 2, txs: [{ fee: 10 }] }] };
    const v = checkCharges(accounts(), batchCharges(zombie), params);
    expect(v.ok).toBe(false);
    if (!v.ok) expect(isLedgerError(v.error, 'INSUFFICIENT_FUNDS')).toBe(true);
    expect(() => applyBatchRewards(accounts(), zombie, params)).toThrow(
      expect.objectContaining({ code: 'INSUFFICIENT_FUNDS' }),
    );
  });

  it('property: balances stay non-negative integers and supply grows by exactly the reward', () => {
    fc.assert(
      fc.property(
        fc.array(fc.nat(1000), { minLength: 4, maxLength: 4 }),
        fc.array(
          fc.record({
            institution: fc.nat(3),
            fees: fc.array(fc.integer({ min: 10, max: 60 }), { maxLength: 5 }),
          }),
          { maxLength: 6 },
        ),
        fc.nat(3),
        (credits, bundles, proposer) => {
          const acc = genesisAccounts([0, 1, 2, 3], new Map(credits.map((c, i) => [i, c])));
          const b = {
            proposer,
            bundles: bundles.map((x) => ({
              institution: x.institution,
              txs: x.fees.map((fee) => ({ fee })),
            })),
          };
          const v = checkCharges(acc, batchCharges(b), params);
          if (!v.ok) {
            expect(() => applyBatchRewards(acc, b, params)).toThrow();
            return;
          }
          const after = applyBatchRewards(acc, b, params);
          for (const bal of after.values()) {
            expect(Number.isSafeInteger(bal)).toBe(true);
            expect(bal).toBeGreaterThanOrEqual(0);
          }
          expect(totalSupply(after)).toBe(totalSupply(acc) + params.batchReward);
        },
      ),
    );
  });
});
