/**
 * The node's keyblock bookkeeping without a network: the register pool (keyblocks.ts), the orphan
 * pool, when the keyblock group is final, the miner's slices (miner.ts), and how KeyblockFlow
 * takes keyblocks in and mines (keyblock-flow.ts), on a real keyblock tree.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { toHex } from '../../src/crypto/bytes.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';
import { makeRegisterTx } from '../../src/ledger/author.ts';
import { OK } from '../../src/ledger/errors.ts';
import { genesisAccounts } from '../../src/ledger/fees.ts';
import { keyblockHash, MAX_TARGET, signKeyblock } from '../../src/ledger/keyblock.ts';
import {
  addKeyblock,
  createKeyblockTree,
  headNode,
  type KeyblockTree,
  mineKeyblock,
  pinKeyblock,
} from '../../src/ledger/keyblock-tree.ts';
import { approveAdmission, signAdmitRequest } from '../../src/ledger/membership.ts';
import type { AdmitTx, Keyblock, RegisterTx } from '../../src/ledger/types.ts';
import type { NodeEvent } from '../../src/node/events.ts';
import { KeyblockFlow } from '../../src/node/keyblock-flow.ts';
import {
  chunkOf,
  keyblockGroupSettled,
  OrphanPool,
  RegisterPool,
} from '../../src/node/keyblocks.ts';
import { defaultMiningOpts, Miner, type MiningJob, miningJob } from '../../src/node/miner.ts';
import { makeNetwork, makePatient } from '../helpers/ledger-fixtures.ts';

const { genesis, institutions, random } = makeNetwork(4, 'keyblock-flow', { chunkSize: 3 });
const T0 = genesis.time + 10_000;
const minerOf = (i: number) => ({
  index: i,
  signingKey: institutions[i]!.member.signingKey,
  signingSecret: institutions[i]!.signingSecret,
});

function register(home = 0, fee = 1): RegisterTx {
  return makeRegisterTx({
    chainId: genesis.chainId,
    idHash: random(32),
    home: institutions[home]!,
    patient: makePatient(random),
    fee,
    random,
  });
}

function mine(tree: KeyblockTree, by: number, parentId = tree.head, registers: RegisterTx[] = []) {
  const parent = tree.nodes.get(parentId)!;
  const kb = mineKeyblock(tree, {
    parentId,
    miner: minerOf(by),
    registers,
    time: parent.time + 1000,
    attempts: 1_000_000,
    random,
  });
  if (kb === null) throw new Error('no nonce found');
  return kb;
}

const codeOf = (v: { ok: boolean; error?: { code: string } }) => (v.ok ? 'ok' : v.error!.code);

describe('register pool', () => {
  const none = () => false;

  it('holds a valid register tx once and refuses what cannot be registered', () => {
    const pool = new RegisterPool({ maxPending: 3, maxPerKeyblock: 10 });
    const tx = register(1);
    expect(pool.add(tx, genesis, none)).toEqual(OK);
    expect(codeOf(pool.add(tx, genesis, none))).toBe('REPLAYED_TX');
    const sameId = register(1);
    expect(codeOf(pool.add({ ...sameId, idHash: tx.idHash }, genesis, none))).toBe(
      'DUPLICATE_PATIENT',
    );
    const known = register(2);
    expect(codeOf(pool.add(known, genesis, (id) => id === toHex(known.idHash)))).toBe(
      'DUPLICATE_PATIENT',
    );
    expect(codeOf(pool.add({ ...register(0), home: 9 }, genesis, none))).toBe(
      'UNKNOWN_INSTITUTION',
    );
    expect(codeOf(pool.add(register(0, 0), genesis, none))).toBe('FEE_TOO_LOW');
    const forged = register(0);
    expect(codeOf(pool.add({ ...forged, fee: 5 }, genesis, none))).toBe('BAD_SIGNATURE');
    expect(pool.add(register(0), genesis, none)).toEqual(OK);
    expect(pool.add(register(3), genesis, none)).toEqual(OK);
    expect(codeOf(pool.add(register(3), genesis, none))).toBe('TOO_LARGE');
    expect(pool.size).toBe(3);
    expect(pool.of(1)).toEqual([tx]);
  });

  it('selects the oldest payable txs not yet registered, within the per-keyblock cap', () => {
    const pool = new RegisterPool({ maxPending: 100, maxPerKeyblock: 3 });
    const txs = [register(0), register(1), register(1), register(2), register(3)];
    for (const tx of txs) expect(pool.add(tx, genesis, none)).toEqual(OK);
    const accounts = genesisAccounts(
      [0, 1, 2, 3],
      new Map([
        [0, 5],
        [1, 1],
        [2, 5],
        [3, 5],
      ]),
    );
    // Home 1 can pay one fee; tx 0 is registered on the branch already.
    const picked = pool.select(new Set([toHex(txs[0]!.idHash)]), none, accounts);
    expect(picked).toEqual([txs[1], txs[3], txs[4]]);
    pool.prune((id) => id === toHex(txs[1]!.idHash));
    expect(pool.size).toBe(4);
    expect(pool.select(new Set(), none, accounts)).toEqual([txs[0], txs[2], txs[3]]);
  });
});

describe('orphan pool', () => {
  it('keeps at most max keyblocks, gives back the children of a parent, drops pinned heights', () => {
    const tree = createKeyblockTree(genesis);
    const a = mine(tree, 0);
    const withA = addKeyblock(tree, a, T0, () => false).tree;
    const b1 = mine(withA, 1);
    const b2 = mine(withA, 2);
    const c = mine(addKeyblock(withA, b1, T0, () => false).tree, 3);
    const pool = new OrphanPool(2);
    pool.add(b1);
    pool.add(b1);
    expect(pool.size).toBe(1);
    pool.add(b2);
    pool.add(c); // over the bound: the oldest (b1) goes
    expect(pool.size).toBe(2);
    const idA = toHex(keyblockHash(a));
    expect(pool.takeChildren(idA)).toEqual([b2]);
    expect(pool.takeChildren(idA)).toEqual([]);
    pool.prune(c.height);
    expect(pool.size).toBe(0);
  });
});

describe('when the keyblock group is final', () => {
  it.each([
    // anchor, pinned keyblock height, chunk size 3 -> settled
    [0, 1, true],
    [1, 3, true],
    [3, 4, false],
    [4, 4, true],
    [4, 6, true],
    [6, 7, false],
    [7, 7, true],
  ])('anchor %i, keyblock %i: %s', (anchor, keyblock, settled) => {
    expect(keyblockGroupSettled(anchor, keyblock, 3)).toBe(settled);
  });

  it('counts height 0 as chunk 0', () => {
    expect([0, 1, 3, 4, 7].map((h) => chunkOf(h, 3))).toEqual([0, 0, 0, 1, 2]);
  });
});

describe('miner', () => {
  afterEach(() => vi.useRealTimers());

  it('searches in bounded slices, restarts on a new parent, and reports a nonce', () => {
    vi.useFakeTimers();
    const tree = createKeyblockTree(genesis);
    const job = miningJob(tree, 0, 2)!;
    const hard = { ...job, header: { ...job.header, target: 1n } };
    let current: MiningJob | null = hard;
    const found: [MiningJob, number][] = [];
    const opts = { ...defaultMiningOpts, hashesPerSecond: 400, sliceMs: 50 };
    const miner = new Miner(
      { job: () => current, found: (j, n) => found.push([j, n]) },
      minerOf(0).signingKey,
      opts,
    );
    miner.start();
    vi.advanceTimersByTime(1000);
    expect(found).toEqual([]);
    expect(miner.hashes).toBe(400); // 20 slices of 20
    current = { ...job, parentId: 'other', header: { ...job.header, target: MAX_TARGET } };
    vi.advanceTimersByTime(50);
    expect(found).toHaveLength(1);
    expect(found[0]![1]).toBe(0); // a new parent starts from nonce 0
    current = null;
    vi.advanceTimersByTime(1000);
    expect(found).toHaveLength(1);
    miner.stop();
    expect(
      () =>
        new Miner({ job: () => null, found: () => {} }, minerOf(0).signingKey, {
          ...opts,
          sliceMs: 0,
        }),
    ).toThrow(/sliceMs/);
  });

  it('mines nothing while the head is maxUnpinned above the pinned keyblock', () => {
    let tree = createKeyblockTree(genesis);
    const a = mine(tree, 0);
    tree = addKeyblock(tree, a, T0, () => false).tree;
    expect(miningJob(tree, 1, 2)?.header.height).toBe(2);
    tree = addKeyblock(tree, mine(tree, 1), T0, () => false).tree;
    expect(miningJob(tree, 1, 2)).toBeNull();
    tree = pinKeyblock(tree, toHex(keyblockHash(a))).tree;
    expect(miningJob(tree, 1, 2)?.header.height).toBe(3);
  });
});

describe('keyblock flow', () => {
  afterEach(() => vi.useRealTimers());

  function flowOn(start: KeyblockTree) {
    const state = { tree: start };
    const published: Keyblock[] = [];
    const events: NodeEvent[] = [];
    const sentAdmits: AdmitTx[] = [];
    let changed = 0;
    const chain = {
      genesis,
      get tree() {
        return state.tree;
      },
      addKeyblock: (kb: Keyblock, now: number) => {
        const out = addKeyblock(state.tree, kb, now, () => false);
        if (out.verdict.ok) state.tree = out.tree;
        return out.verdict;
      },
      isRegistered: () => false,
      replica: { chain: { accounts: genesisAccounts([0, 1, 2, 3], new Map([[1, 100]])) } },
    };
    const flow = new KeyblockFlow(
      {
        self: 1,
        chainId: genesis.chainId,
        signingKey: minerOf(1).signingKey,
        signingSecret: minerOf(1).signingSecret,
        random: deterministicRandom('flow'),
        chain: chain as unknown as ConstructorParameters<typeof KeyblockFlow>[0]['chain'],
        now: () => T0 + 60_000,
        publish: (kb) => published.push(kb),
        sendRegisters: () => {},
        sendAdmits: (txs) => sentAdmits.push(...txs),
        changed: () => changed++,
        emit: (e) => events.push(e),
      },
      {
        mining: { ...defaultMiningOpts, hashesPerSecond: 100_000, sliceMs: 10 },
        registers: { maxPending: 16, maxPerKeyblock: 16 },
        maxOrphans: 8,
        resendMs: 60_000,
      },
    );
    return { state, flow, published, events, sentAdmits, changed: () => changed };
  }

  it('adopts an orphan once its parent arrives, and rejects a height that skips its parent', () => {
    const base = createKeyblockTree(genesis);
    const a = mine(base, 0);
    const b = mine(addKeyblock(base, a, T0, () => false).tree, 2);
    const { state, flow, changed } = flowOn(base);
    expect(codeOf(flow.receive(b))).toBe('WRONG_PARENT'); // unknown parent: ignored, kept
    expect(flow.receive(a)).toEqual(OK);
    expect(headNode(state.tree).height).toBe(2); // b followed its parent in
    expect(changed()).toBeGreaterThan(0);
    const skip = signKeyblock(
      genesis.chainId,
      { ...mine(state.tree, 3), height: 4 },
      [],
      minerOf(3).signingSecret,
      random,
    );
    expect(codeOf(flow.receive(skip))).toBe('MALFORMED');
  });

  it('takes at most two keyblocks of one miner on one parent', () => {
    const base = createKeyblockTree(genesis);
    const { flow } = flowOn(base);
    const first = mine(base, 3);
    const variants = [0, 1, 2].map((k) =>
      signKeyblock(
        genesis.chainId,
        { ...first, time: first.time + k },
        [],
        minerOf(3).signingSecret,
        random,
      ),
    );
    expect(flow.receive(variants[0]!)).toEqual(OK);
    expect(flow.receive(variants[1]!)).toEqual(OK);
    expect(codeOf(flow.receive(variants[2]!))).toBe('REPLAYED_TX');
    expect(flow.receive(mine(base, 2))).toEqual(OK); // another miner is welcome
  });

  it('mines on the head with the pool txs, and refuses another home patient', async () => {
    vi.useFakeTimers();
    const base = createKeyblockTree(genesis);
    const { state, flow, published, events } = flowOn(base);
    const own = register(1);
    expect(flow.submitRegister(own)).toEqual(OK);
    expect(codeOf(flow.submitRegister(register(2)))).toBe('UNAUTHORISED_INSTITUTION');
    flow.start();
    for (let i = 0; i < 200 && published.length === 0; i++) vi.advanceTimersByTime(10);
    flow.stop();
    expect(published).toHaveLength(1);
    const kb = published[0]!;
    expect(kb.miner).toBe(1);
    expect(kb.registers).toEqual([own]);
    expect(headNode(state.tree).id).toBe(toHex(keyblockHash(kb)));
    expect(events.some((e) => e.event === 'mined' && e.height === 1)).toBe(true);
  });

  it('sends on an admit tx submitted here, takes one forwarded, and mines it into a keyblock', async () => {
    vi.useFakeTimers();
    const joining = makeNetwork(5, 'keyblock-flow-joining').institutions[4]!;
    const member = joining.member;
    const peer = {
      peerId: '12D3KooWJoining',
      multiaddr: '/ip4/127.0.0.1/tcp/4004',
      binding: random(64),
    };
    const approvals = [0, 1, 2].map((a) =>
      approveAdmission(
        genesis.chainId,
        { member, peer },
        a,
        institutions[a]!.signingSecret,
        random,
      ),
    );
    const tx: AdmitTx = {
      type: 'admit',
      member,
      peer,
      proof: signAdmitRequest(genesis.chainId, member, peer, joining.signingSecret, random),
      approvals,
    };
    const base = createKeyblockTree(genesis);
    const { flow, published, sentAdmits } = flowOn(base);
    const forged = {
      ...tx,
      approvals: [approvals[0]!, approvals[1]!, { ...approvals[2]!, member: 3 }],
    };
    expect(codeOf(flow.receiveAdmit(forged))).toBe('BAD_SIGNATURE');
    expect(flow.receiveAdmit(tx)).toEqual(OK);
    expect(sentAdmits).toEqual([]); // forwarded by another member: not sent on again
    expect(codeOf(flow.submitAdmit(tx))).toBe('REPLAYED_TX');
    expect(flow.admits.submitted()).toEqual([tx]); // the operator's now: re-sent until pinned
    flow.start();
    for (let i = 0; i < 200 && published.length === 0; i++) vi.advanceTimersByTime(10);
    flow.stop();
    expect(published).toHaveLength(1);
    expect(published[0]!.admits).toEqual([tx]);
    // Submitted first at another institution: held and sent to the others at once.
    const other = flowOn(base);
    expect(other.flow.submitAdmit(tx)).toEqual(OK);
    expect(other.sentAdmits).toEqual([tx]);
  });
});
