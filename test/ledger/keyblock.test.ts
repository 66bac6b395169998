import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { toHex } from '../../src/crypto/bytes.ts';
import { makeRegisterTx } from '../../src/ledger/author.ts';
import { isLedgerError } from '../../src/ledger/errors.ts';
import {
  decodeKeyblock,
  encodeKeyblock,
  expectedTarget,
  genesisHash,
  keyblockHash,
  keyblockValueHash,
  MAX_CLOCK_DRIFT_MS,
  powValue,
  signKeyblock,
} from '../../src/ledger/keyblock.ts';
import {
  addKeyblock,
  adoptPinned,
  branchRegistrations,
  createKeyblockTree,
  headNode,
  type KeyblockTree,
  mineKeyblock,
  pinKeyblock,
} from '../../src/ledger/keyblock-tree.ts';
import { microblockHash } from '../../src/ledger/microblock.ts';
import { signRegister } from '../../src/ledger/tx.ts';
import type { Keyblock, RegisterTx } from '../../src/ledger/types.ts';
import { makeNetwork, makePatient, testParams } from '../helpers/ledger-fixtures.ts';

const { genesis, institutions, random } = makeNetwork(4, 'keyblocks');
const nobody = () => false;
const miner = (i: number) => {
  const inst = institutions[i]!;
  return { index: i, signingKey: inst.member.signingKey, signingSecret: inst.signingSecret };
};

function register(home = 0): RegisterTx {
  return makeRegisterTx({
    chainId: genesis.chainId,
    idHash: random(32),
    home: institutions[home]!,
    patient: makePatient(random),
    fee: 1,
    random,
  });
}

function mine(
  tree: KeyblockTree,
  parentId: string,
  opts: { by?: number; time?: number; registers?: RegisterTx[] } = {},
) {
  const parent = tree.nodes.get(parentId)!;
  const kb = mineKeyblock(tree, {
    parentId,
    miner: miner(opts.by ?? 0),
    registers: opts.registers ?? [],
    time: opts.time ?? parent.time + 1000,
    attempts: 1_000_000,
    random,
  });
  if (!kb) throw new Error('no nonce found');
  return kb;
}

function extend(tree: KeyblockTree, kb: Keyblock): KeyblockTree {
  const out = addKeyblock(tree, kb, kb.time, nobody);
  if (!out.verdict.ok) throw out.verdict.error;
  return out.tree;
}

function codeOf(tree: KeyblockTree, kb: Keyblock, now = kb.time) {
  const v = addKeyblock(tree, kb, now, nobody).verdict;
  return v.ok ? 'ok' : v.error.code;
}

/** Re-signs a modified keyblock so that only the modification is wrong. */
function resign(kb: Keyblock, by = 0): Keyblock {
  return signKeyblock(genesis.chainId, kb, kb.registers, institutions[by]!.signingSecret, random);
}

describe('keyblocks', () => {
  const tree0 = createKeyblockTree(genesis);

  it('a mined keyblock is valid, survives encoding, and meets its target', () => {
    const kb = mine(tree0, tree0.head, { registers: [register(), register(1)] });
    expect(decodeKeyblock(encodeKeyblock(kb))).toEqual(kb);
    expect(powValue(kb, institutions[0]!.member.signingKey) < kb.target).toBe(true);
    expect(codeOf(tree0, kb)).toBe('ok');
  });

  it('rejects each broken rule with its own reason', () => {
    const kb = mine(tree0, tree0.head, { registers: [register()] });
    let badNonce = kb.nonce + 1;
    while (powValue({ ...kb, nonce: badNonce }, institutions[0]!.member.signingKey) < kb.target)
      badNonce++;
    expect(codeOf(tree0, resign({ ...kb, nonce: badNonce }))).toBe('BAD_POW');
    expect(codeOf(tree0, resign({ ...kb, target: kb.target / 2n }))).toBe('BAD_DIFFICULTY');
    expect(codeOf(tree0, resign({ ...kb, i2Link: new Uint8Array(32).fill(1) }))).toBe(
      'WRONG_I2_LINK',
    );
    expect(codeOf(tree0, kb, kb.time - MAX_CLOCK_DRIFT_MS - 1)).toBe('BAD_TIMESTAMP');
    expect(codeOf(tree0, resign({ ...kb, time: genesis.time }))).toBe('BAD_TIMESTAMP');
    expect(codeOf(tree0, resign({ ...kb, registers: [register()] }))).toBe('BAD_TX_ROOT');
    expect(codeOf(tree0, { ...kb, signature: resign(kb, 1).signature })).toBe('BAD_SIGNATURE');
    expect(codeOf(tree0, resign({ ...kb, miner: 9 }))).toBe('UNKNOWN_INSTITUTION');
    expect(codeOf(tree0, resign({ ...kb, prev: new Uint8Array(32) }))).toBe('WRONG_PARENT');
  });

  it('rejects bad register txs: duplicate patient, forged patient signature, fee below minimum', () => {
    const tx = register();
    const dup = mine(tree0, tree0.head, { registers: [tx, tx] });
    expect(codeOf(tree0, dup)).toBe('DUPLICATE_PATIENT');
    const already = addKeyblock(
      tree0,
      mine(tree0, tree0.head, { registers: [tx] }),
      Date.now(),
      (id) => id === toHex(tx.idHash),
    );
    expect(already.verdict.ok ? 'ok' : already.verdict.error.code).toBe('DUPLICATE_PATIENT');
    const forged = mine(tree0, tree0.head, { registers: [{ ...tx, home: 1 }] });
    expect(codeOf(tree0, forged)).toBe('BAD_SIGNATURE');
    const cheap = mine(tree0, tree0.head, { registers: [{ ...tx, fee: 0 }] });
    expect(codeOf(tree0, cheap)).toBe('FEE_TOO_LOW');
    // The same patient on an unpinned ancestor counts too.
    let tree = extend(tree0, mine(tree0, tree0.head, { registers: [tx] }));
    expect(codeOf(tree, mine(tree, tree.head, { registers: [tx] }))).toBe('DUPLICATE_PATIENT');
    tree = pinKeyblock(tree, tree.head).tree;
    expect(tree.pinned).toBe(tree.head);
  });

  it('links the last microblock of round i-2', () => {
    const tx = register();
    let tree = extend(tree0, mine(tree0, tree0.head, { registers: [register(), tx] })); // height 1
    tree = extend(tree, mine(tree, tree.head)); // height 2
    const kb3 = mine(tree, tree.head); // height 3 links the last microblock of height 1
    expect(kb3.i2Link).toEqual(
      microblockHash({ i: 1, j: 1, idHash: tx.idHash, home: tx.home, rootDigest: tx.rootDigest }),
    );
    expect(codeOf(tree, kb3)).toBe('ok');
  });

  it('fork choice: most work wins; a pinned keyblock is final and conflicts are invalid', () => {
    const a1 = mine(tree0, tree0.head, { by: 0 });
    const b1 = mine(tree0, tree0.head, { by: 1, time: genesis.time + 1500 });
    let tree = extend(extend(tree0, a1), b1);
    const a2 = mine(tree, toHex(keyblockHash(a1)), { by: 0 });
    tree = extend(tree, a2);
    expect(tree.head).toBe(toHex(keyblockHash(a2)));
    const pinned = pinKeyblock(tree, toHex(keyblockHash(a1)));
    expect(pinned.verdict.ok).toBe(true);
    expect(pinned.finalised.map((k) => k.height)).toEqual([1]);
    tree = pinned.tree;
    expect(tree.nodes.has(toHex(keyblockHash(b1)))).toBe(false);
    // A block on the losing branch can no longer be added, however much work it carries.
    const onB = mine(extend(tree0, b1), toHex(keyblockHash(b1)), { by: 1 });
    expect(codeOf(tree, onB)).toBe('WRONG_PARENT');
    expect(codeOf(tree, b1)).toBe('CONFLICTS_WITH_PINNED');
    // Pinning cannot go backwards.
    expect(pinKeyblock(tree, toHex(keyblockHash(a2))).verdict.ok).toBe(true);
  });

  it('retargets toward the configured interval', () => {
    const interval = testParams.keyblockIntervalMs;
    const window = testParams.retargetWindow;
    const t = 2n ** 240n;
    const timeAt = (speed: number) => (h: number) => genesis.time + h * interval * speed;
    expect(expectedTarget(testParams, window + 1, t, timeAt(0.5))).toBe(t / 2n); // twice as fast: harder
    expect(expectedTarget(testParams, window + 1, t, timeAt(2))).toBe(t * 2n); // twice as slow: easier
    expect(expectedTarget(testParams, window + 1, t, timeAt(0.01))).toBe(t / 4n); // clamped
    expect(expectedTarget(testParams, window + 2, t, timeAt(0.5))).toBe(t); // only at boundaries
    // Simulated mining: block time ~ target^-1; the interval converges toward the configured one.
    let target = testParams.initialTarget;
    const times = [0];
    const hashRate = (Number(2n ** 256n / target) / interval) * 8; // hashes/ms: 8x too fast at first
    for (let h = 1; h <= window * 12; h++) {
      target = expectedTarget(testParams, h, target, (x) => times[x]!);
      times.push(times[h - 1]! + Number(2n ** 256n / target) / hashRate);
    }
    const lastWindow = (times[times.length - 1]! - times[times.length - 1 - window]!) / window;
    expect(Math.abs(lastWindow - interval) / interval).toBeLessThan(0.3);
  });

  it('decoding rejects random mutations with a typed error', () => {
    const bytes = encodeKeyblock(mine(tree0, tree0.head, { registers: [register()] }));
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: bytes.length - 1 }),
        fc.integer({ min: 1, max: 255 }),
        (i, x) => {
          const bad = Uint8Array.from(bytes);
          bad[i] = bad[i]! ^ x;
          try {
            const kb = decodeKeyblock(bad);
            return codeOf(tree0, kb) !== 'ok';
          } catch (err) {
            return isLedgerError(err);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('the head follows the longest chain of work', () => {
    let tree = tree0;
    for (let i = 0; i < 6; i++) tree = extend(tree, mine(tree, tree.head, { by: i % 4 }));
    expect(headNode(tree).height).toBe(6);
  });
});

describe('keyblock helpers for the node', () => {
  const tree0 = createKeyblockTree(genesis);
  const idOf = (kb: Keyblock) => toHex(keyblockHash(kb));
  const kb1 = mine(tree0, tree0.pinned, { by: 0 });
  const kb2 = mine(extend(tree0, kb1), idOf(kb1), { by: 1 });
  const kb3 = mine(extend(extend(tree0, kb1), kb2), idOf(kb2), { by: 2 });

  it('genesisHash is unchanged without credits and binds every credit when given', () => {
    expect(toHex(genesisHash({ ...genesis, credits: undefined }))).toBe(
      toHex(genesisHash(genesis)),
    );
    fc.assert(
      fc.property(
        fc.array(fc.nat({ max: 2 ** 40 }), { minLength: 4, maxLength: 4 }),
        fc.integer({ min: 0, max: 3 }),
        (amounts, changed) => {
          const credits = new Map(amounts.map((a, i) => [i, a]));
          const reversed = new Map([...credits].reverse());
          const other = new Map(credits).set(changed, credits.get(changed)! + 1);
          const h = (c: Map<number, number>) => toHex(genesisHash({ ...genesis, credits: c }));
          expect(h(reversed)).toBe(h(credits));
          expect(h(other)).not.toBe(h(credits));
          expect(h(credits)).not.toBe(toHex(genesisHash(genesis)));
        },
      ),
      { numRuns: 30 },
    );
  });

  it('id(v) of keyblock consensus is the keyblock hash', () => {
    for (const kb of [kb1, kb2, kb3]) {
      expect(toHex(keyblockValueHash(encodeKeyblock(kb)))).toBe(idOf(kb));
    }
  });

  it('adopts a stored pinned chain as validating and pinning it would', () => {
    let validated = tree0;
    let adopted = tree0;
    for (const kb of [kb1, kb2, kb3]) {
      validated = pinKeyblock(extend(validated, kb), idOf(kb)).tree;
      adopted = adoptPinned(adopted, kb);
      expect(adopted.pinned).toBe(validated.pinned);
      expect(adopted.head).toBe(validated.head);
      expect([...adopted.nodes.keys()].sort()).toEqual([...validated.nodes.keys()].sort());
    }
    expect(() => adoptPinned(adopted, kb2)).toThrow(/does not extend pinned keyblock 3/);
    const kb4 = mine(adopted, adopted.pinned, { by: 3 });
    expect(codeOf(adopted, kb4)).toBe('ok');
  });

  it('lists the patients registered on a branch above the pinned keyblock', () => {
    const a = register(0);
    const b = register(1);
    let tree = extend(tree0, mine(tree0, tree0.pinned, { registers: [a] }));
    const first = tree.head;
    tree = extend(tree, mine(tree, first, { by: 1, registers: [b] }));
    const hex = (tx: RegisterTx) => toHex(tx.idHash);
    expect(branchRegistrations(tree, headNode(tree))).toEqual(new Set([hex(a), hex(b)]));
    tree = pinKeyblock(tree, first).tree;
    expect(branchRegistrations(tree, headNode(tree))).toEqual(new Set([hex(b)]));
    // A sibling branch may register b: it does not hold the other branch's registrations.
    expect(codeOf(tree, mine(tree, first, { by: 2, registers: [b] }))).toBe('ok');
  });

  it('refuses a register tx whose root opening fails, though the patient signed it', () => {
    const patient = makePatient(random);
    const tx = makeRegisterTx({
      chainId: genesis.chainId,
      idHash: random(32),
      home: institutions[2]!,
      patient,
      fee: 1,
      random,
    });
    const { signature: _, ...body } = tx;
    const moved = { ...body, rootDigest: random(32) };
    const bad = signRegister(genesis.chainId, moved, patient.signingSecret, random);
    expect(codeOf(tree0, mine(tree0, tree0.pinned, { registers: [bad] }))).toBe(
      'BAD_CHAMELEON_OPENING',
    );
  });
});
