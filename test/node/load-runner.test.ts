/**
 * The load runner (src/node/load-runner.ts) with its signing worker (load-worker.ts), in process
 * against a real replica standing in for the node: it holds until the node pins, then every bundle
 * it submits is signed by the institution and accepted by the mempool; the pins of its bundles come
 * back as `own-pinned` events with one latency sample per tx; the outbox keeps exactly the unpinned
 * bundles, and a runner started again on the same directory takes them back and submits them
 * again, continuing their leaf chains (its new bundles are accepted after them).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeRegisterTx } from '../../src/ledger/author.ts';
import { applyKeyblockRewards, genesisAccounts } from '../../src/ledger/fees.ts';
import { createMicroblock, type Microblock } from '../../src/ledger/microblock.ts';
import {
  applyDecision,
  batchValueHash,
  createReplica,
  memoryLedgerView,
  proposeBatch,
  type Replica,
  receiveBundle,
} from '../../src/ledger/replica.ts';
import { txHashHex, verifyBundleSignature } from '../../src/ledger/tx.ts';
import type { BlockRef, Bundle, Genesis, RegisterTx } from '../../src/ledger/types.ts';
import type { InstitutionKeys } from '../../src/node/keys.ts';
import { Outbox } from '../../src/node/load.ts';
import { type LoadEvent, LoadRunner } from '../../src/node/load-runner.ts';
import { makeNetwork, makePatient, type TestInstitution } from '../helpers/ledger-fixtures.ts';

const WAIT_MS = 20_000;

async function waitFor(cond: () => boolean, what: string, ms = WAIT_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

let dir: string;
let genesis: Genesis;
let me: TestInstitution;
let keys: InstitutionKeys;
let patients: BlockRef[];
let replica: Replica;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'spchain-load-runner-'));
  const net = makeNetwork(2, 'load-runner', { groupSize: 2, chunkSize: 1000, maxBatchTxs: 40 });
  genesis = net.genesis;
  me = net.institutions[0]!;
  const random = net.random;
  const members = (i: number) => genesis.members[i];
  const registers: RegisterTx[] = [];
  const blocks: Microblock[] = [];
  for (let p = 0; p < 3; p++) {
    const tx = makeRegisterTx({
      chainId: genesis.chainId,
      idHash: random(32),
      home: me,
      patient: makePatient(random),
      fee: 1,
      random,
    });
    const made = createMicroblock(tx, { i: 1, j: p }, members);
    if (!made.ok) throw new Error('setup: register tx rejected');
    registers.push(tx);
    blocks.push(made.block);
  }
  patients = blocks.map((b) => ({ i: b.header.i, j: b.header.j }));
  const indices = [0, 1];
  const accounts = applyKeyblockRewards(
    genesisAccounts(indices, new Map(indices.map((i) => [i, 1_000_000]))),
    { miner: 0, registers },
    genesis.params,
  );
  replica = createReplica({
    genesis,
    ledger: memoryLedgerView(blocks),
    keyblockHeight: 1,
    accounts,
    opts: { maxBundlesPerInstitution: 16, maxBundlesTotal: 64 },
  });
  keys = {
    index: me.index,
    signingKey: me.member.signingKey,
    signingSecret: me.signingSecret,
    chameleonKey: me.chameleonKey,
    chameleonTrapdoor: me.chameleonTrapdoor,
    preKey: me.member.preKey,
    preSecret: new Uint8Array(32).fill(1),
    peerSeed: new Uint8Array(32).fill(2),
  };
});

afterAll(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

/** Pins the next batch from the replica's mempool (the node's consensus, in one step). */
function pinNext(): number {
  const height = replica.chain.height + 1;
  const bytes = proposeBatch(replica, height, me.index);
  const certificate = {
    kind: 'batch' as const,
    height,
    round: 0,
    value: batchValueHash(bytes),
    signatures: [],
  };
  const before = replica.mempool.size;
  replica = applyDecision(replica, bytes, certificate);
  return before - replica.mempool.size;
}

function startRunner(submitted: Bundle[], events: LoadEvent[], warnings: string[]) {
  return LoadRunner.start({
    dir,
    keys,
    chainId: genesis.chainId,
    patients,
    fee: 1,
    opts: { txPerSecond: 120, txsPerBundle: 2, maxPendingTxs: 60, labelEvery: 3 },
    replica: () => replica,
    submit: (bundle) => {
      submitted.push(bundle);
      const u = receiveBundle(replica, bundle, Date.now());
      replica = u.replica;
      return u.verdict;
    },
    warn: (code, message) => warnings.push(`${code}: ${message}`),
    report: (e) => events.push(e),
  });
}

describe('load runner with its signing worker', () => {
  it('holds until the node pins, signs valid bundles, reports pins with latencies, and resumes from its outbox', async () => {
    const submitted: Bundle[] = [];
    const events: LoadEvent[] = [];
    const warnings: string[] = [];
    const runner = await startRunner(submitted, events, warnings);
    try {
      await new Promise((r) => setTimeout(r, 300));
      expect(submitted).toEqual([]); // nothing pinned since start: held
      pinNext(); // an empty batch: the node is pinning
      await waitFor(() => submitted.length >= 6, 'bundles after the first pin');
      for (const b of submitted) {
        expect(b.institution).toBe(me.index);
        expect(verifyBundleSignature(genesis.chainId, b, me.member.signingKey)).toBe(true);
      }
      expect(replica.mempool.eligible.get(me.index)?.length).toBe(replica.mempool.size);

      const pinnedBundles = pinNext();
      expect(pinnedBundles).toBeGreaterThan(0);
      await waitFor(() => events.length > 0, 'an own-pinned event');
      const e = events[0]!;
      expect(e.event).toBe('own-pinned');
      expect(e.height).toBe(replica.chain.height);
      expect(e.bundles).toBeGreaterThanOrEqual(pinnedBundles);
      expect(e.latencyMs).toHaveLength(e.txs);
      for (const ms of e.latencyMs) expect(ms).toBeGreaterThanOrEqual(0);
      await waitFor(() => runner.pending() > 0, 'pending count from the worker');
    } finally {
      await runner.stop();
    }
    expect(warnings.filter((w) => !w.startsWith('LOAD_PAUSED'))).toEqual([]);

    // The outbox holds at least the bundles not pinned yet; a new runner takes them back.
    const ledger = replica.chain.ledger;
    // (A bundle the full mempool refused is submitted again: count each once.)
    const open = [...new Set(submitted)].filter(
      (b) => !b.txs.every((tx) => ledger.isPinnedTx(txHashHex(tx))),
    );
    const { outbox, bundles } = await Outbox.open(dir);
    await outbox.close();
    expect(bundles.length).toBeGreaterThanOrEqual(open.length);

    const again: Bundle[] = [];
    const warnings2: string[] = [];
    const restarted = await startRunner(again, [], warnings2);
    try {
      // The unpinned bundles are submitted again first (the mempool holds them already).
      await waitFor(
        () => new Set(again.map((b) => b.signature.join())).size >= open.length,
        `the ${open.length} unpinned bundles submitted again`,
      );
      pinNext();
      await waitFor(() => again.length > open.length, 'new bundles after the restart');
      // New bundles extend the restored chains: the mempool finds them eligible, not waiting.
      await waitFor(
        () =>
          replica.mempool.size > 0 &&
          replica.mempool.eligible.get(me.index)?.length === replica.mempool.size,
        'every held bundle eligible',
      );
    } finally {
      await restarted.stop();
    }
    expect(warnings2.filter((w) => !w.startsWith('LOAD_PAUSED'))).toEqual([]);
  }, 60_000);
});
