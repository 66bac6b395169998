/**
 * The mempool judges a bundle that fit before from its last fit (replica-mempool.ts refit) instead
 * of validating it again. These tests drive two mempools through the same random histories, one
 * with that memory and one validating every bundle in full, and require identical results after
 * every step: what each admission says, which bundles are held and eligible in which order, what
 * the eligible bundles do to every patient block, which txs and records they hold, and who is
 * blamed. The histories mix in-order and reordered arrivals, duplicates, labels, new leaves (a
 * newcomer's records wait for the home's leaf tx), conflicting txs for one seq, txs signed again
 * in other bundles, forged openings, pins of batches proposed from either mempool or from a peer
 * that saw the bundles in another order, and keyblocks. The persistent structures under both
 * (ledger view, overlay) are checked for branching as well.
 */
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { toHex } from '../../src/crypto/bytes.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';
import { advanceLeaf, makeLeafTx, makeRecordTx, makeRegisterTx } from '../../src/ledger/author.ts';
import { refKey } from '../../src/ledger/batch.ts';
import { applyKeyblockRewards, genesisAccounts } from '../../src/ledger/fees.ts';
import {
  createMicroblock,
  encodeMicroblock,
  initialRunning,
  type Microblock,
} from '../../src/ledger/microblock.ts';
import {
  applyDecision,
  batchValueHash,
  createReplica,
  memoryLedgerView,
  pinKeyblock,
  proposeBatch,
  type Replica,
  validateCertified,
} from '../../src/ledger/replica.ts';
import {
  admitBundle,
  type Blame,
  EMPTY_MEMPOOL,
  type Mempool,
  type MempoolLimits,
  makeEntry,
  rebuildMempool,
} from '../../src/ledger/replica-mempool.ts';
import { EMPTY_OVERLAY, extendOverlay, overlayReads } from '../../src/ledger/replica-view.ts';
import { decodeBundle, encodeBundle, signBundle, txHash, txHashHex } from '../../src/ledger/tx.ts';
import type {
  BatchTx,
  BlockRef,
  Bundle,
  Genesis,
  MedicalTx,
  RegisterTx,
} from '../../src/ledger/types.ts';
import { makeNetwork, makePatient, type TestInstitution } from '../helpers/ledger-fixtures.ts';
import { prng } from './sim/bft-network.ts';

const N = 4;
const PATIENTS = 2;
const LIMITS: MempoolLimits = { maxBundlesPerInstitution: 12, maxBundlesTotal: 40 };

interface Setup {
  readonly genesis: Genesis;
  readonly institutions: readonly TestInstitution[];
  readonly blocks: readonly Microblock[];
  readonly patientSecrets: readonly Uint8Array[];
  readonly base: Replica;
}

let setup: Setup;

beforeAll(() => {
  const { genesis, institutions, random } = makeNetwork(N, 'replica-mempool', {
    groupSize: N,
    chunkSize: 1000,
    maxBatchTxs: 10,
  });
  const members = (i: number) => genesis.members[i];
  const registers: RegisterTx[] = [];
  const blocks: Microblock[] = [];
  const patientSecrets: Uint8Array[] = [];
  for (const home of institutions) {
    for (let p = 0; p < PATIENTS; p++) {
      const patient = makePatient(random);
      const tx = makeRegisterTx({
        chainId: genesis.chainId,
        idHash: random(32),
        home,
        patient,
        fee: 1,
        random,
      });
      const made = createMicroblock(tx, { i: 1, j: registers.length }, members);
      if (!made.ok) throw new Error('setup: register tx rejected');
      registers.push(tx);
      blocks.push(made.block);
      patientSecrets.push(patient.signingSecret);
    }
  }
  const indices = institutions.map((x) => x.index);
  const credits = new Map(indices.map((i) => [i, 1_000_000]));
  const accounts = applyKeyblockRewards(
    genesisAccounts(indices, credits),
    { miner: 0, registers },
    genesis.params,
  );
  const base = createReplica({
    genesis,
    ledger: memoryLedgerView(blocks),
    keyblockHeight: 1,
    accounts,
    opts: LIMITS,
  });
  setup = { genesis, institutions, blocks, patientSecrets, base };
});

/** Everything a mempool decides, in comparable form. */
function snapshot(pool: Mempool, replica: Replica, txIds: readonly string[], refs: BlockRef[]) {
  const lists = (m: ReadonlyMap<number, readonly { id: string }[]>) =>
    [...m].sort((a, b) => a[0] - b[0]).map(([i, es]) => [i, es.map((e) => e.id)]);
  const reads = overlayReads(replica.chain.ledger, pool.overlay);
  const held = [...pool.queues.values()].flat();
  return {
    queues: lists(pool.queues),
    eligible: lists(pool.eligible),
    size: pool.size,
    ids: held.map((e) => [pool.ids.has(e.id), pool.eligibleIds.has(e.id)]),
    counts: [pool.ids.size, pool.eligibleIds.size],
    blocks: refs.map((ref) => {
      const b = reads.microblocks.get(ref);
      return b === undefined ? null : toHex(encodeMicroblock(b));
    }),
    txs: txIds.map((id) => reads.isPinnedTx(id)),
  };
}

const blameKeys = (blamed: readonly Blame[]) =>
  blamed.map((b) => `${b.institution}:${b.index}:${b.code}:${makeEntry(b.bundle, 0).id}`);

/** One random history; throws (via expect) at the first step where the two mempools differ. */
function runHistory(seed: number, steps: number): { pins: number; held: number } {
  const { genesis, institutions, patientSecrets } = setup;
  const rand = prng(seed);
  const random = deterministicRandom(`history-${seed}`);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const refs: BlockRef[] = setup.blocks.map((b) => ({ i: b.header.i, j: b.header.j }));

  // What the authors have signed so far, per patient block (every institution's leaf).
  const authoring = new Map(setup.blocks.map((b) => [refKey(b.header), b]));
  const medical = new Map<string, MedicalTx[]>(); // `${ref}/${institution}` -> its medical txs
  const undelivered: Bundle[] = [];
  const delivered: Bundle[] = [];
  const allTxIds: string[] = [];

  let replica = setup.base;
  let fast: Mempool = EMPTY_MEMPOOL;
  let full: Mempool = EMPTY_MEMPOOL;
  let peer: Mempool = EMPTY_MEMPOOL;
  let now = 0;
  let pins = 0;

  const sign = (who: TestInstitution, txs: BatchTx[]): Bundle => {
    for (const tx of txs) allTxIds.push(txHashHex(tx));
    return signBundle(genesis.chainId, who.index, txs, who.signingSecret, random);
  };
  const record = (who: TestInstitution, ref: BlockRef, label: boolean) => {
    const key = refKey(ref);
    const block = authoring.get(key)!;
    const mine = medical.get(`${key}/${who.index}`) ?? [];
    const target = label && mine.length > 0 ? pick(mine) : null;
    const fields =
      target === null
        ? { type: 'medical' as const, pointer: random(32) }
        : { type: 'label' as const, pointer: random(32), target: txHash(target) };
    return makeRecordTx(block, who, fields, 1, random);
  };
  const commit = (who: TestInstitution, tx: ReturnType<typeof record>) => {
    const key = refKey(tx.block);
    authoring.set(key, advanceLeaf(authoring.get(key)!, tx));
    if (tx.type === 'medical') {
      const k = `${key}/${who.index}`;
      medical.set(k, [...(medical.get(k) ?? []), tx]);
    }
  };
  const writable = (who: TestInstitution) =>
    refs.filter((ref) =>
      authoring.get(refKey(ref))!.leaves.some((l) => l.institution === who.index),
    );

  const compare = (step: string) => {
    const a = snapshot(fast, replica, allTxIds, refs);
    const b = snapshot(full, replica, allTxIds, refs);
    expect(a, `seed ${seed}, ${step}`).toEqual(b);
  };

  for (let s = 0; s < steps; s++) {
    now += 100;
    const r = rand();
    const who = pick(institutions);
    if (r < 0.3) {
      // An honest bundle of 1-3 record txs (sometimes a label).
      const txs: BatchTx[] = [];
      const count = 1 + Math.floor(rand() * 3);
      for (let k = 0; k < count; k++) {
        const tx = record(who, pick(writable(who)), rand() < 0.2);
        commit(who, tx);
        txs.push(tx);
      }
      undelivered.push(sign(who, txs));
    } else if (r < 0.34) {
      // The home adds a leaf for an institution without one, then that institution writes there.
      const mine = refs.filter((ref) => authoring.get(refKey(ref))!.header.home === who.index);
      const ref = pick(mine);
      const block = authoring.get(refKey(ref))!;
      const newcomer = institutions.find(
        (x) => !block.leaves.some((l) => l.institution === x.index),
      );
      if (newcomer === undefined) continue;
      const leaf = makeLeafTx({
        chainId: genesis.chainId,
        block,
        home: who,
        newcomer: newcomer.member,
        fee: 1,
        random,
        patientSigningSecret: patientSecrets[refs.findIndex((x) => refKey(x) === refKey(ref))]!,
      });
      const leaves = [
        ...block.leaves,
        {
          institution: newcomer.index,
          digest: leaf.leafDigest,
          seq: 0,
          running: initialRunning(block.header.idHash, newcomer.index),
        },
      ];
      authoring.set(refKey(ref), { ...block, leaves });
      undelivered.push(sign(who, [leaf]));
    } else if (r < 0.38) {
      // Two bundles for one seq (other content): whichever is judged first fits, the other waits.
      const ref = pick(writable(who));
      const a = record(who, ref, false);
      const b = record(who, ref, false);
      commit(who, a);
      undelivered.push(sign(who, [a]), sign(who, [b]));
    } else if (r < 0.41) {
      // A forged opening for the next seq: blamed once its seq is next in line.
      const ref = pick(writable(who));
      const good = record(who, ref, false);
      const other = record(who, ref, false);
      const forged = { ...good, opening: { r: other.opening.s, s: other.opening.r } };
      undelivered.push(sign(who, [forged]));
    } else if (r < 0.44 && delivered.length > 0) {
      // A tx signed again in another bundle: once either is held or pinned, the other is stale.
      const earlier = pick(delivered);
      const signer = institutions[earlier.institution]!;
      undelivered.push(
        sign(signer, earlier.txs.slice(0, 1 + Math.floor(rand() * earlier.txs.length))),
      );
    } else if (r < 0.75 && undelivered.length > 0) {
      // Delivery, out of order (a random undelivered bundle), as a wire copy; sometimes a repeat.
      const at = Math.floor(rand() * undelivered.length);
      const bundle =
        rand() < 0.1 && delivered.length > 0 ? pick(delivered) : undelivered.splice(at, 1)[0]!;
      delivered.push(bundle);
      const entry = makeEntry(decodeBundle(encodeBundle(bundle)), now);
      const x = admitBundle(replica.chain, fast, entry, LIMITS);
      const y = admitBundle(replica.chain, full, entry, LIMITS, true);
      expect(
        [x.verdict.ok || x.verdict.error.code, blameKeys(x.blamed)],
        `seed ${seed}, admit`,
      ).toEqual([y.verdict.ok || y.verdict.error.code, blameKeys(y.blamed)]);
      fast = x.pool;
      full = y.pool;
      compare(`step ${s} admit`);
      // The peer sees some bundles, in its own order.
      if (rand() < 0.7) {
        const late = delivered.length > 1 ? pick(delivered) : bundle;
        peer = admitBundle(replica.chain, peer, makeEntry(late, now), LIMITS).pool;
      }
    } else if (r < 0.95) {
      // A pin: a batch proposed from our mempool or the peer's.
      const height = replica.chain.height + 1;
      const from = rand() < 0.6 ? fast : peer;
      const bytes = proposeBatch({ ...replica, mempool: from }, height, who.index);
      if (!validateCertified(replica, bytes).ok) continue;
      const certificate = {
        kind: 'batch' as const,
        height,
        round: 0,
        value: batchValueHash(bytes),
        signatures: [],
      };
      replica = applyDecision({ ...replica, mempool: EMPTY_MEMPOOL }, bytes, certificate);
      pins++;
      const x = rebuildMempool(replica.chain, fast);
      const y = rebuildMempool(replica.chain, full, true);
      expect(blameKeys(x.blamed), `seed ${seed}, rebuild blame`).toEqual(blameKeys(y.blamed));
      fast = x.pool;
      full = y.pool;
      peer = rebuildMempool(replica.chain, peer).pool;
      compare(`step ${s} pin`);
    } else {
      // A keyblock: the mempools are judged again against it.
      const kb = { height: replica.chain.keyblockHeight + 1, miner: who.index, registers: [] };
      replica = pinKeyblock({ ...replica, mempool: EMPTY_MEMPOOL }, kb);
      fast = rebuildMempool(replica.chain, fast).pool;
      full = rebuildMempool(replica.chain, full, true).pool;
      peer = rebuildMempool(replica.chain, peer).pool;
      compare(`step ${s} keyblock`);
    }
  }
  return { pins, held: fast.size };
}

describe('mempool: judging from the last fit', () => {
  it('gives the same mempool as validating every bundle in full, over random histories', () => {
    let pins = 0;
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 30 }), (seed) => {
        pins += runHistory(seed, 70).pins;
      }),
      { numRuns: 25 },
    );
    // The histories must have pinned something, or the comparison proved little.
    expect(pins).toBeGreaterThan(25);
  }, 120_000);
});

describe('persistent views', () => {
  it('the ledger view: pins on one view branch without seeing each other', () => {
    const base = memoryLedgerView();
    const write = (tx: string) => ({ microblocks: new Map(), txHashes: [tx], records: [] });
    const a = base.pin(write('a'));
    const b = base.pin(write('b'));
    const a2 = a.pin(write('a2'));
    const a3 = a.pin(write('a3'));
    expect(['a', 'b', 'a2', 'a3'].map((t) => base.isPinnedTx(t))).toEqual([
      false,
      false,
      false,
      false,
    ]);
    expect(['a', 'b', 'a2', 'a3'].map((t) => a.isPinnedTx(t))).toEqual([true, false, false, false]);
    expect(['a', 'b', 'a2', 'a3'].map((t) => b.isPinnedTx(t))).toEqual([false, true, false, false]);
    expect(['a', 'b', 'a2', 'a3'].map((t) => a2.isPinnedTx(t))).toEqual([true, false, true, false]);
    expect(['a', 'b', 'a2', 'a3'].map((t) => a3.isPinnedTx(t))).toEqual([true, false, false, true]);
  });

  it('the overlay: extending an older overlay never changes what a newer one reads', () => {
    const view = memoryLedgerView(setup.blocks);
    const block = setup.blocks[0]!;
    const key = refKey(block.header);
    const changed = { ...block, leaves: block.leaves.map((l) => ({ ...l, seq: l.seq + 7 })) };
    const o1 = extendOverlay(EMPTY_OVERLAY, {
      microblocks: new Map(),
      txHashes: ['t1'],
      records: ['r1'],
    });
    const o2 = extendOverlay(o1, {
      microblocks: new Map([[key, changed]]),
      txHashes: ['t2'],
      records: [],
    });
    const o3 = extendOverlay(o1, { microblocks: new Map(), txHashes: ['t3'], records: [] });
    const o4 = extendOverlay(o2, { microblocks: new Map(), txHashes: ['t4'], records: [] });
    const seen = (o: typeof o1) => {
      const r = overlayReads(view, o);
      return [
        ['t1', 't2', 't3', 't4'].filter((t) => r.isPinnedTx(t)),
        r.microblocks.get(block.header)!.leaves[0]!.seq,
      ];
    };
    expect(seen(EMPTY_OVERLAY)).toEqual([[], 0]);
    expect(seen(o1)).toEqual([['t1'], 0]);
    expect(seen(o2)).toEqual([['t1', 't2'], 7]);
    expect(seen(o3)).toEqual([['t1', 't3'], 0]);
    expect(seen(o4)).toEqual([['t1', 't2', 't4'], 7]);
  });
});
