/**
 * The anchor worker fills seq gaps from the own-tx table (issue 5, robustness): when a job comes
 * back after later txs of its leaf (its lease held by a consumer that died, or lost in an outage),
 * the later txs are anchored at once, behind the earlier tx taken from the table, instead of
 * waiting in the mempool for the job or a sweep. Real ledger (LedgerStore + replica mempool), real
 * LevelDB, real embedded queue; the node port only records what it is offered (or refuses, or is
 * full, where a case says so). No test here sweeps before pinning or waits on a timer.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { reject } from '../../src/ledger/errors.ts';
import { txHashHex } from '../../src/ledger/tx.ts';
import type { Bundle } from '../../src/ledger/types.ts';
import { Anchorer, type AnchorOpts } from '../../src/sidecar/anchor.ts';
import { TxLog } from '../../src/sidecar/outbox.ts';
import type { NodePort } from '../../src/sidecar/ports.ts';
import { SidecarStore, type WriteOp } from '../../src/sidecar/store.ts';
import { type Harness, observation, openHarness, record } from './harness.ts';
import { type LedgerFixture, makeLedgerFixture } from './ledger.ts';

let fixture: LedgerFixture;
let dir: string;
let h: Harness | undefined;

beforeAll(() => {
  fixture = makeLedgerFixture('sidecar-anchor-gaps', [0, 0]);
});

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'spchain-anchor-gaps-'));
});

afterEach(async () => {
  await h?.close();
  h = undefined;
  rmSync(dir, { recursive: true, force: true });
});

/** The node port over the test ledger, recording the tx hashes of every bundle offered. */
interface RecordingNode extends NodePort {
  readonly offered: string[][];
}

/** `answer` may refuse a bundle (by its tx hashes) before the ledger's mempool sees it. */
function recordingNode(
  ledger: Harness['ledger'],
  answer: (ids: readonly string[]) => ReturnType<NodePort['submitBundle']> | undefined = () =>
    undefined,
): RecordingNode {
  const offered: string[][] = [];
  return {
    offered,
    submitBundle: (b: Bundle) => {
      const ids = b.txs.map(txHashHex);
      offered.push(ids);
      return answer(ids) ?? ledger.submitBundle(b);
    },
  };
}

/** An anchor worker of institution 0 over the harness's own-tx table, ledger and queue. */
function anchorerOf(
  harness: Harness,
  node: NodePort,
  warnings: string[],
  opts: Partial<AnchorOpts> = {},
): Anchorer {
  return new Anchorer(
    {
      chainId: fixture.genesis.chainId,
      institution: fixture.institutions[0]!,
      txLog: harness.core.txLog,
      ledger: harness.ledger.store,
      node,
      jobs: harness.queue,
      warn: (code, message) => warnings.push(`${code}: ${message}`),
    },
    { takeWaitMs: 0, busyRetryMs: 1, sweepEveryMs: Number.MAX_SAFE_INTEGER, ...opts },
  );
}

/** Ingests one record per id for patient `p` and hands the txs to the queue; their tx hashes. */
async function ingest(harness: Harness, p: number, ids: readonly string[]): Promise<string[]> {
  const records = ids.map((id, k) => record(fixture.patients[p]!, observation(id, k)));
  const results = await harness.core.ingestor.ingest(records);
  await harness.core.ingestor.handedOver();
  return results.map((r) => r.txHash);
}

/** Every tx hash in the pinned batches, in chain order (a tx pinned twice shows twice). */
async function pinnedTxs(harness: Harness): Promise<string[]> {
  const out: string[] = [];
  const height = harness.ledger.store.tip().batch?.height ?? 0;
  for (let n = 1; n <= height; n++) {
    const batch = await harness.ledger.store.getBatch(n);
    if (batch === undefined) throw new Error(`batch ${n} is missing`);
    for (const b of batch.bundles) for (const tx of b.txs) out.push(txHashHex(tx));
  }
  return out;
}

const sorted = (ids: readonly string[]) => [...ids].sort();

/** `ids` cut where they pass between held-back and delivered ones: the bundles expected. */
function stretches(ids: readonly string[], held: readonly number[]): string[][] {
  const out: string[][] = [];
  for (const [k, id] of ids.entries()) {
    if (k > 0 && held.includes(k) === held.includes(k - 1)) out.at(-1)!.push(id);
    else out.push([id]);
  }
  return out;
}
const QUEUE_EMPTY = { waiting: 0, active: 0, delayed: 0, failed: 0 };

describe('anchoring fills seq gaps from the own-tx table', () => {
  const cases = [
    { held: [0], what: 'the first job' },
    { held: [2], what: 'a job in the middle' },
    { held: [0, 3], what: 'two jobs apart' },
  ];
  for (const { held, what } of cases) {
    for (const late of ['after', 'before'] as const) {
      it(`pins the later txs at once when ${what} is held back, its job coming ${late} the pin`, async () => {
        h = await openHarness(dir, fixture);
        const ids = await ingest(h, 0, ['g1', 'g2', 'g3', 'g4', 'g5']);
        const node = recordingNode(h.ledger);
        const warnings: string[] = [];
        const anchorer = anchorerOf(h, node, warnings);
        const deliveries = await h.queue.take(10);
        expect(deliveries.map((d) => d.id)).toEqual(ids);
        const heldBack = deliveries.filter((_, k) => held.includes(k));
        // The later jobs come first, in reverse: the worker orders a round by signing number.
        await anchorer.process(deliveries.filter((_, k) => !held.includes(k)).reverse());
        // The held-back txs were taken from the table and offered in signing order, in bundles of
        // their own between the delivered ones' (a bundle waits whole for its earliest missing seq).
        const bundles = stretches(ids, held);
        expect(node.offered).toEqual(bundles);
        if (late === 'before') await anchorer.process(heldBack);
        // Every tx is eligible now: no sweep, no wait for the held-back jobs' leases.
        expect(await h.ledger.pinAll()).toBe(ids.length);
        if (late === 'after') await anchorer.process(heldBack);
        // The late jobs were acked without being offered again; each tx was offered once.
        expect(node.offered.length).toBe(bundles.length);
        expect(sorted(node.offered.flat())).toEqual(sorted(ids));
        expect(await h.queue.stats()).toEqual(QUEUE_EMPTY);
        // Each tx pinned exactly once, and the leaf is whole.
        expect(sorted(await pinnedTxs(h))).toEqual(sorted(ids));
        expect((await h.ledger.leaf(fixture.patients[0]!.idHash))?.seq).toBe(ids.length);
        for (const id of ids) expect((await anchorer.status(id)).state).toBe('pinned');
        expect(warnings).toEqual([]);
        await anchorer.sweep();
        expect(await h.core.txLog.entries()).toEqual([]);
      });
    }
  }

  it('takes what a consumer that died holds, across patients, in the worker loop', async () => {
    h = await openHarness(dir, fixture);
    const a = await ingest(h, 0, ['w1', 'w2']);
    const b = await ingest(h, 1, ['w3']);
    const c = await ingest(h, 0, ['w4']);
    // A consumer leases the first two jobs and dies: its leases run out only later.
    const dead = await h.queue.take(2);
    expect(dead.map((d) => d.id)).toEqual(a);
    const node = recordingNode(h.ledger);
    const warnings: string[] = [];
    const anchorer = anchorerOf(h, node, warnings);
    expect(await anchorer.runOnce()).toBe(2);
    expect(await anchorer.runOnce()).toBe(0);
    expect(node.offered).toEqual([a, [...b, ...c]]);
    expect(await h.ledger.pinAll()).toBe(4);
    expect(sorted(await pinnedTxs(h))).toEqual(sorted([...a, ...b, ...c]));
    // The dead consumer's jobs, delivered again, are acked as pinned.
    await anchorer.process(dead);
    expect(node.offered.length).toBe(2);
    expect(await h.queue.stats()).toEqual(QUEUE_EMPTY);
    expect(warnings).toEqual([]);
  });

  it('reads nothing more of the own-tx table on the in-order path', async () => {
    h = await openHarness(dir, fixture, { maxBundleTxs: 2 });
    const log = h.core.txLog;
    const wholeTable = vi.spyOn(log, 'entries');
    const gapReads = vi.spyOn(log, 'entriesAt');
    const node = recordingNode(h.ledger);
    const warnings: string[] = [];
    const anchorer = anchorerOf(h, node, warnings, { maxBundleTxs: 2 });
    const ids = [
      ...(await ingest(h, 0, ['i1', 'i2', 'i3'])),
      ...(await ingest(h, 1, ['i4', 'i5'])),
    ];
    let rounds = 0;
    while ((await anchorer.runOnce()) > 0) rounds++;
    expect(rounds).toBe(3);
    expect(await h.ledger.pinAll()).toBe(5);
    // A late ingest after pinning: the numbers below it were forgotten or submitted.
    ids.push(...(await ingest(h, 0, ['i6'])));
    expect(await anchorer.runOnce()).toBe(1);
    expect(await h.ledger.pinAll()).toBe(1);
    expect(node.offered).toEqual([ids.slice(0, 2), ids.slice(2, 4), [ids[4]], [ids[5]]]);
    expect(wholeTable).not.toHaveBeenCalled();
    expect(gapReads).not.toHaveBeenCalled();
    // The counting can see a read: a held-back job makes the next round read its gap, once.
    const more = await ingest(h, 1, ['i7', 'i8']);
    const dead = await h.queue.take(1);
    expect(dead.map((d) => d.id)).toEqual([more[0]]);
    expect(await anchorer.runOnce()).toBe(1);
    expect(gapReads).toHaveBeenCalledTimes(1);
    expect(wholeTable).not.toHaveBeenCalled();
    expect(await h.ledger.pinAll()).toBe(2);
    expect(warnings).toEqual([]);
  });

  it('keeps a refused earlier tx out of the round, and does not offer it again', async () => {
    h = await openHarness(dir, fixture);
    const ids = await ingest(h, 0, ['x1', 'x2', 'x3']);
    const bad = ids[0]!;
    const node = recordingNode(h.ledger, (offered) =>
      offered.includes(bad) ? reject('BAD_CHAMELEON_OPENING', 'refused by the test') : undefined,
    );
    const warnings: string[] = [];
    const anchorer = anchorerOf(h, node, warnings);
    const [first, ...later] = await h.queue.take(10);
    await anchorer.process(later);
    expect(node.offered).toEqual([[bad], ids.slice(1)]);
    expect(warnings.map((w) => w.split(':')[0])).toEqual(['GAP_REFUSED']);
    expect(warnings[0]).toContain(bad.slice(0, 16));
    // The round was taken (it waits in the mempool for its seq 1) and its jobs acked, not failed.
    expect(h.ledger.mempool()).toEqual({ held: 1, eligible: 0 });
    expect(await h.queue.stats()).toEqual({ ...QUEUE_EMPTY, active: 1 });
    // A later round does not offer the refused tx again: its own job is the queue's to retry.
    const next = await ingest(h, 1, ['x4']);
    expect(await anchorer.runOnce()).toBe(1);
    expect(node.offered.slice(2)).toEqual([next]);
    await anchorer.process([first!]);
    expect(node.offered.slice(3)).toEqual([[bad]]);
    expect(warnings.map((w) => w.split(':')[0])).toEqual(['GAP_REFUSED', 'NODE_REFUSED']);
    expect(await h.queue.stats()).toEqual({ ...QUEUE_EMPTY, delayed: 1 });
    expect(await h.ledger.pinAll()).toBe(1);
    expect(await pinnedTxs(h)).toEqual(next);
  });

  it('leaves the round to redelivery when the mempool stays full for its gap', async () => {
    h = await openHarness(dir, fixture);
    const ids = await ingest(h, 0, ['f1', 'f2', 'f3']);
    const node = recordingNode(h.ledger, () => reject('TOO_LARGE', 'mempool full', { held: 1 }));
    const warnings: string[] = [];
    const anchorer = anchorerOf(h, node, warnings, { maxBusyRetries: 2 });
    const deliveries = await h.queue.take(10);
    await anchorer.process(deliveries.slice(1));
    // Only the gap was offered (three times); the round, which depends on it, was not.
    expect(node.offered).toEqual([[ids[0]], [ids[0]], [ids[0]]]);
    expect(warnings.map((w) => w.split(':')[0])).toEqual(['NODE_BUSY']);
    expect(await h.queue.stats()).toEqual({ ...QUEUE_EMPTY, active: 3 });
    for (const id of ids) {
      expect(await anchorer.status(id)).toEqual({ state: 'queued', handedOver: true });
    }
  });
});

describe('TxLog: the unsubmitted txs below a round', () => {
  const hash = (k: number) => new Uint8Array(32).fill(k + 1);

  it('tracks out-of-order commits, submissions and restarts, and finds both ways the same', async () => {
    const store = await SidecarStore.open(join(dir, 'log'), { syncWrites: false });
    try {
      let log = await TxLog.open(store);
      const stage = (from: number, to: number) => {
        const ops: WriteOp[] = [];
        const staged = [];
        for (let k = from; k < to; k++) staged.push(log.stage(ops, hash(k), Uint8Array.of(k)));
        return { ops, staged };
      };
      const first = stage(0, 3);
      const second = stage(3, 6);
      // The later batch commits first: its numbers are found, the earlier ones not yet.
      await store.write(second.ops);
      log.committed(second.staged);
      expect(log.unsubmittedBefore(6, new Set(), 10)).toEqual([3, 4, 5]);
      await store.write(first.ops);
      log.committed(first.staged);
      expect(log.unsubmittedBefore(6, new Set(), 10)).toEqual([0, 1, 2, 3, 4, 5]);
      expect(log.unsubmittedBefore(4, new Set([0, 2]), 10)).toEqual([1, 3]);
      expect(log.unsubmittedBefore(6, new Set(), 2)).toEqual([0, 1]);
      await log.markSubmitted([hash(0), hash(1)]);
      expect(log.isUnsubmitted(1)).toBe(false);
      expect(log.isUnsubmitted(2)).toBe(true);
      expect(log.unsubmittedBefore(6, new Set([3]), 10)).toEqual([2, 4, 5]);
      expect(log.unsubmittedBefore(2, new Set(), 10)).toEqual([]);
      // Far more numbers than unsubmitted txs: 2 stays unsubmitted while 40 more come and go.
      const many = stage(6, 46);
      await store.write(many.ops);
      log.committed(many.staged);
      await log.markSubmitted([3, 4, 5, ...Array.from({ length: 39 }, (_, k) => 6 + k)].map(hash));
      expect(log.unsubmittedBefore(46, new Set(), 10)).toEqual([2, 45]);
      expect(log.unsubmittedBefore(45, new Set(), 10)).toEqual([2]);
      expect(log.unsubmittedBefore(46, new Set([2]), 10)).toEqual([45]);
      // Reopened, the table gives the same answers.
      log = await TxLog.open(store);
      expect(log.unsubmittedBefore(46, new Set(), 10)).toEqual([2, 45]);
      const read = await log.entriesAt([45, 2, 99]);
      expect(read.map((e) => [e.n, e.state, e.tx[0]])).toEqual([
        [45, 'new', 45],
        [2, 'new', 2],
      ]);
      await log.forget(read);
      expect(log.unsubmittedBefore(46, new Set(), 10)).toEqual([]);
    } finally {
      await store.close();
    }
  });
});
