/**
 * Keyblocks on a live network: four institutions, three in node processes (src/node/main.ts) and
 * one in this process (startNode, so the test can call submitRegister), on 127.0.0.1, each mining
 * at the localnet rate (a keyblock about every 2 s in all, chunks of 3 keyblocks). They mine in
 * competition, the group pins every keyblock with Tendermint, a patient registered at one node
 * is pinned everywhere, and chunks close with the same reputations and group at every node. A
 * node killed for a few keyblocks gets them by sync when it restarts. Then one institution's process is stopped and its identity taken by a peer in this process
 * (a real libp2p node with that member's keys), which gossips invalid keyblocks: bad proof of
 * work, a bad signature, a height that does not follow its parent, an unknown parent. The honest
 * nodes reject (and penalise) the invalid ones, ignore the orphan, pin none of them, and go on.
 * Conditions are polled with generous bounds; the processes are killed in afterAll.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toHex } from '../../src/crypto/bytes.ts';
import { systemRandom } from '../../src/crypto/random.ts';
import { decodeBatch } from '../../src/ledger/batch.ts';
import { OK } from '../../src/ledger/errors.ts';
import { decodeKeyblock, keyblockHash, powValue, signKeyblock } from '../../src/ledger/keyblock.ts';
import {
  adoptPinned,
  createKeyblockTree,
  type KeyblockTree,
  mineKeyblock,
  pinnedNode,
} from '../../src/ledger/keyblock-tree.ts';
import type { Keyblock, RegisterTx } from '../../src/ledger/types.ts';
import type { NodeConfig } from '../../src/node/config.ts';
import type { NodeEvent } from '../../src/node/events.ts';
import { createLocalnet, type Localnet } from '../../src/node/localnet.ts';
import { type SpchainNode, startNode } from '../../src/node/node.ts';
import { decodeSyncItem } from '../../src/node/sync-items.ts';
import { createP2pNode, type P2pNode } from '../../src/p2p/index.ts';
import { LedgerStore } from '../../src/store/ledger-store.ts';
import { Cluster, type NodeLine, waitFor } from './cluster.ts';
import { localnetConfigs, newPatientRegister } from './keyblock-helpers.ts';

const N = 4;
const WAIT_MS = 120_000;
/** Nonces tried between yields to the event loop when the test mines. */
const SLICE = 100_000;

let dir: string;
let net: Localnet;
let configs: NodeConfig[];
let cluster: Cluster;
let local: SpchainNode | null = null;
let byzantine: P2pNode | null = null;
/** Events of the in-process node 0, as the processes' lines look. */
const localLines: NodeLine[] = [];
let patient: RegisterTx;
const killOnExit = () => cluster?.killAll();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'spchain-keyblocks-'));
  net = await createLocalnet({
    institutions: N,
    dir,
    patientsPerInstitution: 1,
    kdf: { N: 2 ** 10, r: 8, p: 1 },
    load: { txPerSecond: 4, txsPerBundle: 2 },
    params: { keyblockIntervalMs: 2000, chunkSize: 3 },
  });
  configs = await localnetConfigs(net);
  cluster = new Cluster(net.configPaths);
  process.once('exit', killOnExit);
}, 60_000);

afterAll(async () => {
  if (process.env.SPCHAIN_TEST_VERBOSE) console.log(cluster?.warnings.join('\n'));
  cluster?.killAll();
  await Promise.all(cluster?.nodes.map((n) => n.stop('SIGKILL', 1000)) ?? []);
  await byzantine?.stop().catch(() => {});
  await local?.stop().catch(() => {});
  process.removeListener('exit', killOnExit);
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

/** Every node's lines: node 0's from this process, the others' from their processes. */
function linesOf(i: number): readonly NodeLine[] {
  return i === 0 ? localLines : cluster.nodes[i]!.lines;
}

/** height -> hash of the keyblocks node i pinned. */
function keyblocksOf(i: number): Map<number, NodeLine> {
  const out = new Map<number, NodeLine>();
  for (const l of linesOf(i)) if (l.event === 'keyblock') out.set(l.height as number, l);
  return out;
}

const chunks = (i: number) => linesOf(i).filter((l) => l.event === 'chunk');
const pinnedKeyblockHeight = (i: number) => Math.max(1, ...keyblocksOf(i).keys());
const penalties = (code: string) =>
  [
    ...cluster.warnings,
    ...localLines.filter((l) => l.event === 'warn').map((l) => `node 0: ${l.code}: ${l.message}`),
  ].filter((w) => w.includes('PENALISED') && w.includes(`keyblocks: ${code}`));

/** Heights at which two different keyblocks were reported pinned (by one node or two). */
function keyblockConflicts(): string[] {
  const seen = new Map<number, Set<string>>();
  for (let i = 0; i < N; i++) {
    for (const l of linesOf(i)) {
      if (l.event !== 'keyblock') continue;
      const hashes = seen.get(l.height as number) ?? new Set<string>();
      hashes.add(l.hash as string);
      seen.set(l.height as number, hashes);
    }
  }
  return [...seen].filter(([, h]) => h.size > 1).map(([height]) => `keyblock ${height}`);
}

function expectNoFailures(): void {
  expect(keyblockConflicts()).toEqual([]);
  expect(cluster.fatal).toEqual([]);
  expect(localLines.filter((l) => l.event === 'fatal')).toEqual([]);
  expect(cluster.conflicts).toEqual([]);
  expect(cluster.misbehaviour).toEqual([]);
}

describe('keyblocks on a network of 4 institutions', () => {
  it('are mined in competition and pinned alike, with a patient registered at one node', async () => {
    for (let i = 1; i < N; i++) cluster.start(i);
    local = await startNode({
      config: configs[0]!,
      onEvent: (e: NodeEvent) => {
        if (localLines.length > 20_000) localLines.splice(0, 1000);
        localLines.push({ t: Date.now(), node: 0, ...e });
      },
    });
    await waitFor(
      () => cluster.nodes.slice(1).every((n) => n.started !== null),
      'every node to start',
      WAIT_MS,
      cluster,
    );

    const { genesis } = configs[0]!.genesisFile;
    patient = newPatientRegister(genesis, configs[0]!.keys, 'keyblocks-test-patient');
    expect(local.submitRegister(patient)).toEqual(OK);
    const codeOf = (tx: RegisterTx) => {
      const v = local!.submitRegister(tx);
      return v.ok ? 'ok' : v.error.code;
    };
    expect(codeOf(patient)).toBe('REPLAYED_TX');
    const atGenesis = configs[0]!.genesisFile.keyblock.registers.find((tx) => tx.home === 0)!;
    expect(codeOf(atGenesis)).toBe('DUPLICATE_PATIENT');
    const elsewhere = newPatientRegister(genesis, configs[1]!.keys, 'registered-at-its-home');
    expect(codeOf(elsewhere)).toBe('UNAUTHORISED_INSTITUTION');

    const registeredIn = (i: number) =>
      [...keyblocksOf(i).values()].find((l) => (l.registers as number) > 0);
    const miners = () => new Set([...keyblocksOf(1).values()].map((l) => l.miner));
    await waitFor(
      () =>
        [0, 1, 2, 3].every((i) => registeredIn(i) !== undefined && chunks(i).length >= 2) &&
        miners().size > 1,
      'a keyblock with the new patient at every node, two chunks closed, two miners',
      WAIT_MS,
      cluster,
    );
    expectNoFailures();
    expect(cluster.warnings.filter((w) => /PENALISED|BANNED/.test(w))).toEqual([]);

    // Every node pinned the same keyblock at every height all of them reached.
    const upTo = Math.min(...[0, 1, 2, 3].map(pinnedKeyblockHeight));
    expect(upTo).toBeGreaterThanOrEqual(7);
    for (let h = 2; h <= upTo; h++) {
      const hashes = new Set([0, 1, 2, 3].map((i) => keyblocksOf(i).get(h)?.hash));
      expect(hashes.size, `keyblock ${h}`).toBe(1);
      expect([...hashes][0], `keyblock ${h}`).toBeDefined();
    }
    // The new patient is in one keyblock, the same everywhere, mined by someone (any miner
    // carries the register txs the patient's home sent it).
    const where = new Set([0, 1, 2, 3].map((i) => registeredIn(i)!.hash));
    expect(where.size).toBe(1);
    // Each closed chunk: the same reputations and group at every node.
    for (const completed of [1, 2]) {
      const seen = [0, 1, 2, 3].map((i) => {
        const c = chunks(i).find((l) => l.completed === completed)!;
        return JSON.stringify([c.reputations, c.group]);
      });
      expect(new Set(seen).size, `chunk ${completed}`).toBe(1);
    }
    const first = chunks(1).find((l) => l.completed === 1)!;
    expect(first.group).toHaveLength(N);
    const reputations = Object.values(first.reputations as Record<string, number>);
    expect(new Set(reputations).size).toBeGreaterThan(1); // miners earned more than the others
    expect(local.keyblocks().pinned.height).toBeGreaterThanOrEqual(upTo);
  }, 300_000);

  it('syncs the keyblocks pinned while a node was down, after it restarts', async () => {
    const victim = cluster.nodes[2]!;
    await victim.stop('SIGKILL');
    // What the victim pinned is what its store holds: its last line may not have been written.
    const store = await LedgerStore.open(join(net.dataDirs[2]!, 'ledger'));
    const stored = store.tip().keyblock?.height ?? 1;
    await store.close();
    const before = Math.max(pinnedKeyblockHeight(1), pinnedKeyblockHeight(2), stored);
    await waitFor(
      () => [0, 1].every((i) => pinnedKeyblockHeight(i) >= before + 2),
      'two keyblocks pinned while node 2 is down',
      WAIT_MS,
      cluster,
    );
    const target = pinnedKeyblockHeight(1);
    const restartedAt = Date.now();
    cluster.start(2);
    await waitFor(
      () => pinnedKeyblockHeight(2) >= target,
      'the restarted node to pin every keyblock it missed',
      WAIT_MS,
      cluster,
    );
    const synced = victim.lines.filter(
      (l) => l.event === 'keyblock' && l.via === 'sync' && l.t >= restartedAt,
    );
    expect(synced.map((l) => l.height)).toEqual(expect.arrayContaining([before + 1, before + 2]));
    // (A line may be missing just before the kill: the store had the keyblock, stdout not yet.)
    for (let h = 2; h <= target; h++) {
      const hash = keyblocksOf(2).get(h)?.hash;
      if (h > before || hash !== undefined) {
        expect(hash, `keyblock ${h}`).toBe(keyblocksOf(1).get(h)?.hash);
      }
    }
    expectNoFailures();
  }, 300_000);

  it('rejects invalid keyblocks a peer gossips, and never pins them', async () => {
    const victim = cluster.nodes[3]!;
    await victim.stop('SIGTERM');
    const config = configs[3]!;
    const { genesis } = config.genesisFile;
    const net3 = await createP2pNode({
      chain: genesis,
      self: 3,
      peerKeySeed: config.keys.peerSeed,
      peers: config.peers,
      listen: config.listen,
      gossip: { bundles: () => OK, keyblocks: () => OK, bft: () => OK },
    });
    byzantine = net3;
    await waitFor(
      () => net3.connectedMembers().length === 3 && net3.topicPeers('keyblocks').length === 3,
      'the impostor to join the keyblock gossip mesh',
      WAIT_MS,
      cluster,
    );

    /** The pinned keyblocks, fetched from member 1 like any peer would, as a keyblock tree. */
    const pinnedTree = async (): Promise<KeyblockTree> => {
      let tree = adoptPinned(createKeyblockTree(genesis), config.genesisFile.keyblock);
      let batches = 0;
      for (let page = 0; page < 100; page++) {
        const fromKeyblock = pinnedNode(tree).height + 1;
        const p = await net3.syncPage(1, batches + 1, { fromKeyblock });
        for (const bytes of p.items) {
          const item = decodeSyncItem(bytes, 1 << 24);
          if (item.kind === 'batch') batches = decodeBatch(item.value).height;
          else tree = adoptPinned(tree, decodeKeyblock(item.value));
        }
        if (p.nextHeight === null) break;
      }
      return tree;
    };
    const me = {
      index: 3,
      signingKey: config.keys.signingKey,
      signingSecret: config.keys.signingSecret,
    };
    const forged = new Set<string>();
    const publish = async (kb: Keyblock) => {
      forged.add(toHex(keyblockHash(kb)));
      await net3.publish('keyblocks', kb);
    };
    const wanted = ['BAD_POW', 'BAD_SIGNATURE', 'MALFORMED'];
    const heightBefore = pinnedKeyblockHeight(1);
    for (
      let attempt = 0;
      attempt < 10 && wanted.some((c) => penalties(c).length === 0);
      attempt++
    ) {
      const tree = await pinnedTree();
      // Mined in slices: node 0 runs in this process, and a long synchronous search would keep
      // it from voting (with node 3 stopped, the group needs it).
      const time = Date.now();
      let valid: Keyblock | null = null;
      for (let start = 0; valid === null && start < 50_000_000; start += SLICE) {
        valid = mineKeyblock(tree, {
          parentId: tree.pinned,
          miner: me,
          registers: [],
          time,
          startNonce: start,
          attempts: SLICE,
        });
        await new Promise((r) => setImmediate(r));
      }
      if (valid === null) throw new Error('no nonce below the target');
      let nonce = valid.nonce + 1;
      while (powValue({ ...valid, nonce }, me.signingKey) < valid.target) nonce++;
      const resign = (kb: Omit<Keyblock, 'signature'>, secret = me.signingSecret) =>
        signKeyblock(genesis.chainId, kb, kb.registers, secret, systemRandom);
      await publish(resign({ ...valid, nonce })); // bad proof of work
      await publish(resign(valid, configs[0]!.keys.signingSecret)); // signed by another member
      await publish(resign({ ...valid, height: valid.height + 1 })); // height skips its parent
      await publish(resign({ ...valid, prev: systemRandom(32) })); // an unknown parent
      await new Promise((r) => setTimeout(r, 1500));
    }
    for (const code of wanted) expect(penalties(code).length, code).toBeGreaterThan(0);

    // The honest nodes go on pinning keyblocks, none of the forged ones.
    await waitFor(
      () => [0, 1, 2].every((i) => pinnedKeyblockHeight(i) >= heightBefore + 2),
      'two more keyblocks pinned by the honest nodes',
      WAIT_MS,
      cluster,
    );
    for (const i of [0, 1, 2]) {
      for (const l of keyblocksOf(i).values()) {
        expect(forged.has(l.hash as string), `node ${i} pinned a forged keyblock`).toBe(false);
      }
    }
    expectNoFailures();
  }, 300_000);

  it('keeps the registered patient in every store', async () => {
    await local?.stop();
    local = null;
    await byzantine?.stop();
    byzantine = null;
    await cluster.stopAll('SIGTERM');
    for (const dataDir of net.dataDirs) {
      const store = await LedgerStore.open(join(dataDir, 'ledger'));
      try {
        const block = await store.getMicroblockByIdHash(patient.idHash);
        expect(block?.header.home, dataDir).toBe(0);
        expect(block!.header.i).toBeGreaterThan(1);
      } finally {
        await store.close();
      }
    }
  }, 120_000);
});
