/**
 * Fees and rewards (paper 5.1, reward mechanism): every tx carries a fee; mining rewards and fees
 * are accounted per institution, for keyblocks and for pinned tx batches. A tx without its fee is
 * rejected, which puts a price on reputation fraud: R2 grows with pinned records, so an institution
 * that invents zombie patients to pump its records pays at least minFee for each of them (and one
 * for each register tx) and never gets that back unless it is the block's miner or the batch's
 * proposer.
 *
 * Who pays: a register tx's fee is paid by the patient's home institution (patients hold no
 * accounts); a batch tx's fee by the institution whose signed bundle carries it (for a leaf tx, the
 * home institution that submits it).
 *
 * Who is paid: the keyblock's miner gets keyblockReward plus the fees of the register txs in it;
 * the proposer of a pinned batch gets batchReward plus every fee in the batch. We did not find the
 * paper's split rule, so this is OUR READING: all of a block's fees to its producer, as in Bitcoin.
 * (Bitcoin-NG, on which RepuCoin builds, pays 40% of microblock fees to the leader and 60% to the
 * next one; we have no next leader for a BFT-pinned batch, so we do not split.)
 *
 * Accounts are integers (fee units) held as JS numbers; every amount must be a safe integer, and
 * arithmetic that would leave the safe range is refused rather than rounded.
 */
import { LedgerError, OK, reject, type Verdict } from './errors.ts';
import type { ChainParams, InstitutionIndex } from './types.ts';

export type Accounts = ReadonlyMap<InstitutionIndex, number>;

/** A fee owed by `payer`. */
export interface FeeCharge {
  readonly payer: InstitutionIndex;
  readonly fee: number;
}

/** What fee accounting needs of a keyblock (a `Keyblock` fits). */
export interface KeyblockFees {
  readonly miner: InstitutionIndex;
  readonly registers: readonly { readonly home: InstitutionIndex; readonly fee: number }[];
}

/** What fee accounting needs of a pinned batch (a `TxBatch` fits). */
export interface BatchFees {
  readonly proposer: InstitutionIndex;
  readonly bundles: readonly {
    readonly institution: InstitutionIndex;
    readonly txs: readonly { readonly fee: number }[];
  }[];
}

function isAmount(v: number): boolean {
  return Number.isSafeInteger(v) && v >= 0;
}

function sum(a: number, b: number): number {
  const s = a + b;
  if (!Number.isSafeInteger(s)) throw new RangeError(`amount overflow: ${a} + ${b}`);
  return s;
}

/** Accounts at genesis: the genesis credit of each member (members without one start at 0). */
export function genesisAccounts(
  members: readonly InstitutionIndex[],
  credits: ReadonlyMap<InstitutionIndex, number> = new Map(),
): Accounts {
  const accounts = new Map<InstitutionIndex, number>();
  for (const i of members) accounts.set(i, 0);
  for (const [i, credit] of credits) {
    if (!accounts.has(i)) throw new RangeError(`genesis credit for ${i}, which is not a member`);
    if (!isAmount(credit))
      throw new RangeError(`genesis credit of ${i}: expected a safe integer >= 0`);
    accounts.set(i, credit);
  }
  return accounts;
}

/** A fee must be an integer of at least minFee. */
export function checkFee(fee: number, params: Pick<ChainParams, 'minFee'>): Verdict {
  if (!isAmount(fee)) {
    return reject('MALFORMED', `fee ${fee} is not a non-negative integer`, { fee });
  }
  if (fee < params.minFee) {
    return reject('FEE_TOO_LOW', `fee ${fee} is below the minimum ${params.minFee}`, {
      fee,
      minFee: params.minFee,
    });
  }
  return OK;
}

/** The payer must be a member whose balance covers the amount. */
export function checkPayable(accounts: Accounts, payer: InstitutionIndex, amount: number): Verdict {
  const balance = accounts.get(payer);
  if (balance === undefined) {
    return reject('UNKNOWN_INSTITUTION', `institution ${payer} has no account`, { payer });
  }
  if (balance < amount) {
    return reject('INSUFFICIENT_FUNDS', `institution ${payer} holds ${balance}, owes ${amount}`, {
      payer,
      balance,
      amount,
    });
  }
  return OK;
}

/**
 * Checks a block's fees in order: each fee is valid and each payer can cover all of its fees in
 * the block together (two txs of one institution cannot both spend the same balance).
 */
export function checkCharges(
  accounts: Accounts,
  charges: readonly FeeCharge[],
  params: Pick<ChainParams, 'minFee'>,
): Verdict {
  const owed = new Map<InstitutionIndex, number>();
  for (const { payer, fee } of charges) {
    const v = checkFee(fee, params);
    if (!v.ok) return v;
    const total = sum(owed.get(payer) ?? 0, fee);
    const p = checkPayable(accounts, payer, total);
    if (!p.ok) return p;
    owed.set(payer, total);
  }
  return OK;
}

export function keyblockCharges(block: KeyblockFees): FeeCharge[] {
  return block.registers.map((tx) => ({ payer: tx.home, fee: tx.fee }));
}

export function batchCharges(batch: BatchFees): FeeCharge[] {
  return batch.bundles.flatMap((b) => b.txs.map((tx) => ({ payer: b.institution, fee: tx.fee })));
}

/** Debits every charge and credits `payee` with `reward` plus the fees; throws if not payable. */
function settle(
  accounts: Accounts,
  charges: readonly FeeCharge[],
  payee: InstitutionIndex,
  reward: number,
  params: Pick<ChainParams, 'minFee'>,
): Accounts {
  if (!isAmount(reward))
    throw new RangeError(`reward: expected a safe integer >= 0, got ${reward}`);
  const v = checkCharges(accounts, charges, params);
  if (!v.ok) throw v.error;
  if (!accounts.has(payee)) {
    throw new LedgerError('UNKNOWN_INSTITUTION', `institution ${payee} has no account`, { payee });
  }
  const next = new Map(accounts);
  let fees = 0;
  for (const { payer, fee } of charges) {
    next.set(payer, next.get(payer)! - fee);
    fees = sum(fees, fee);
  }
  next.set(payee, sum(next.get(payee)!, sum(reward, fees)));
  return next;
}

/**
 * The accounts after a keyblock: each register tx's home institution pays its fee, and the miner
 * gets keyblockReward plus those fees. Throws the LedgerError that `checkCharges` would report
 * (FEE_TOO_LOW, INSUFFICIENT_FUNDS, ...): validate first with `checkCharges(keyblockCharges(kb))`.
 */
export function applyKeyblockRewards(
  accounts: Accounts,
  block: KeyblockFees,
  params: Pick<ChainParams, 'minFee' | 'keyblockReward'>,
): Accounts {
  return settle(accounts, keyblockCharges(block), block.miner, params.keyblockReward, params);
}

/**
 * The accounts after a pinned batch: each bundle's institution pays the fees of its txs, and the
 * proposer gets batchReward plus every fee in the batch. Throws like `applyKeyblockRewards`.
 */
export function applyBatchRewards(
  accounts: Accounts,
  batch: BatchFees,
  params: Pick<ChainParams, 'minFee' | 'batchReward'>,
): Accounts {
  return settle(accounts, batchCharges(batch), batch.proposer, params.batchReward, params);
}

/** Total of all balances (conserved by fees, raised by rewards): handy for invariants. */
export function totalSupply(accounts: Accounts): number {
  let total = 0;
  for (const v of accounts.values()) total = sum(total, v);
  return total;
}
