/**
 * Four institutions in four node processes on 127.0.0.1 (src/node/main.ts), made by the localnet
 * generator: each signs its own record txs, the group pins them in batches, and every node must
 * pin the same batch at every height, through a crash (SIGKILL) and restart of one node, and a
 * stop and restart of all of them. Conditions are polled with generous bounds; nothing depends on
 * how fast this machine is. The processes are killed in afterAll whatever happened, and the data
 * directory is removed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toHex } from '../../src/crypto/bytes.ts';
import { batchHash } from '../../src/ledger/batch.ts';
import { type Cluster, openTestNet, storedBatches, type TestNet, waitFor } from './cluster.ts';

const N = 4;
const WAIT_MS = 45_000;

let testNet: TestNet;
let cluster: Cluster;

beforeAll(async () => {
  testNet = await openTestNet({
    institutions: N,
    patientsPerInstitution: 2,
    load: { txPerSecond: 6, txsPerBundle: 3 },
  });
  cluster = testNet.cluster;
}, 60_000);

afterAll(() => testNet?.close());

const running = () => cluster.nodes.filter((n) => n.running);
const minHeight = (nodes = running()) => Math.min(...nodes.map((n) => n.height));
const maxHeight = (nodes = running()) => Math.max(...nodes.map((n) => n.height));

function expectAgreement(): void {
  expect(cluster.fatal).toEqual([]);
  expect(cluster.conflicts).toEqual([]);
  expect(cluster.misbehaviour).toEqual([]);
  // Honest peers never earn a penalty from each other.
  expect(cluster.warnings.filter((w) => /PENALISED|BANNED/.test(w))).toEqual([]);
}

/** Every height from 1 to `upTo` is reported by every node, with the same hash. */
function expectSameChain(upTo: number): void {
  for (let h = 1; h <= upTo; h++) {
    const hashes = new Set(cluster.nodes.map((n) => n.hashes.get(h)));
    expect(hashes.size, `height ${h}`).toBe(1);
    expect([...hashes][0], `height ${h}`).toBeDefined();
  }
}

/** The batch hashes in each node's LevelDB store (all nodes stopped). */
async function storedChains(): Promise<Map<number, string>[]> {
  const out: Map<number, string>[] = [];
  for (const dataDir of testNet.net.dataDirs) {
    const batches = await storedBatches(dataDir);
    out.push(new Map(batches.map((batch, k) => [k + 1, toHex(batchHash(batch))])));
  }
  return out;
}

describe('a local network of 4 institutions in 4 processes', () => {
  it('pins batches of the txs every institution signs, the same batch at every height', async () => {
    cluster.startAll();
    await waitFor(
      () => cluster.nodes.every((n) => n.started !== null),
      'every node to start',
      WAIT_MS,
      cluster,
    );
    for (const n of cluster.nodes) expect(n.started!.patients).toBe(2);
    const signedBy = () => {
      const by = new Set<string>();
      for (const l of cluster.nodes[0]!.lines) {
        if (l.event === 'pinned') for (const i of Object.keys(l.by as object)) by.add(i);
      }
      return by;
    };
    await waitFor(
      () => minHeight() >= 8 && signedBy().size === N,
      'every node to pin 8 batches, with txs of every institution',
      WAIT_MS,
      cluster,
    );
    expectAgreement();
    expectSameChain(8);
  }, 120_000);

  it('keeps pinning with one institution killed, and the restarted one catches up', async () => {
    const victim = cluster.nodes[3]!;
    const others = cluster.nodes.slice(0, 3);
    await victim.stop('SIGKILL');
    const before = maxHeight(others);
    await waitFor(
      () => minHeight(others) >= before + 5,
      'the other three to pin 5 more batches',
      WAIT_MS,
      cluster,
    );
    const behind = victim.height;
    const restartedAt = Date.now();
    cluster.start(3);
    await waitFor(() => victim.started !== null, 'the killed node to restart', WAIT_MS, cluster);
    expect(victim.started!.height).toBeGreaterThanOrEqual(behind);
    const target = maxHeight(others);
    await waitFor(
      () => victim.height >= target + 3 && victim.consensusPins > 0,
      'the restarted node to catch up and pin with the others again',
      WAIT_MS,
      cluster,
    );
    expectAgreement();
    expect(victim.lines.some((l) => l.event === 'synced' && l.t >= restartedAt)).toBe(true);
    expect(victim.hashes.get(target)).toBe(cluster.nodes[0]!.hashes.get(target));
    expectSameChain(target);
  }, 120_000);

  it('keeps the chain when every node is stopped and restarted', async () => {
    await cluster.stopAll('SIGTERM');
    const before = cluster.nodes.map((n) => n.height);
    const stored = await storedChains();
    stored.forEach((chain, i) => {
      expect(chain.size, `node ${i} store height`).toBeGreaterThanOrEqual(before[i]!);
      for (const [h, hash] of chain) {
        if (cluster.chain.has(h)) expect(hash, `node ${i} height ${h}`).toBe(cluster.chain.get(h));
      }
    });

    cluster.startAll();
    await waitFor(
      () => cluster.nodes.every((n) => n.started !== null),
      'every node to restart',
      WAIT_MS,
      cluster,
    );
    cluster.nodes.forEach((n, i) => {
      const started = n.started!;
      expect(started.height, `node ${i} restart height`).toBe(stored[i]!.size);
      expect(started.height, `node ${i} restart height`).toBeGreaterThanOrEqual(before[i]!);
      expect(started.hash, `node ${i} restart hash`).toBe(stored[i]!.get(started.height as number));
    });
    const target = Math.max(...before) + 5;
    await waitFor(
      () => minHeight() >= target,
      'every node to pin 5 more batches after the restart',
      WAIT_MS,
      cluster,
    );
    expectAgreement();
    expectSameChain(target);
  }, 120_000);
});
