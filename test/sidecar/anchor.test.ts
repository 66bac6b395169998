/**
 * From durable records to pinned txs: the outbox after a crash between the ingest's write and the
 * queue, resubmission after the node lost its mempool, at-least-once deliveries, bundling, a full
 * mempool and refusals. Real ledger (LedgerStore + replica), real embedded queue.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { fromHex } from '../../src/crypto/bytes.ts';
import { reject } from '../../src/ledger/errors.ts';
import { decodeTx, encodeTx, signBundle } from '../../src/ledger/tx.ts';
import type { Bundle } from '../../src/ledger/types.ts';
import type { EmbeddedQueue } from '../../src/queue/embedded.ts';
import { Anchorer } from '../../src/sidecar/anchor.ts';
import type { EnqueuePort, JobSource } from '../../src/sidecar/ports.ts';
import { anchorAll, type Harness, observation, openHarness, record, waitFor } from './harness.ts';
import { type LedgerFixture, makeLedgerFixture } from './ledger.ts';

let fixture: LedgerFixture;
let dir: string;
let h: Harness;

beforeAll(() => {
  fixture = makeLedgerFixture('sidecar-anchor', [0, 0]);
});

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'spchain-anchor-'));
});

afterEach(async () => {
  await h?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A queue whose enqueue fails while `down` is set (a queue outage, or a crash before it). */
function flakyQueue(q: EmbeddedQueue, state: { down: boolean }): EnqueuePort & JobSource {
  return {
    enqueue: (jobs) =>
      state.down ? Promise.reject(new Error('queue unavailable')) : q.enqueue(jobs),
    take: (max, opts) => q.take(max, opts),
    ack: (ids) => q.ack(ids),
    fail: (id, reason) => q.fail(id, reason),
    extend: (ids) => q.extend(ids),
  };
}

const bundleOf = (p: number, ids: readonly string[]) =>
  ids.map((id, k) => record(fixture.patients[p]!, observation(id, k)));

describe('outbox and anchoring', () => {
  it('hands over after a crash between the durable write and the queue', async () => {
    const state = { down: true };
    h = await openHarness(dir, fixture, { wrapQueue: (q) => flakyQueue(q, state) });
    const ingested = async (records: ReturnType<typeof bundleOf>) => {
      const results = await h.core.ingestor.ingest(records);
      await h.core.ingestor.handedOver();
      return results;
    };
    const acked = [
      ...(await ingested(bundleOf(0, ['r1', 'r2']))),
      ...(await ingested(bundleOf(1, ['r3']))),
    ];
    expect(h.warnings.filter((w) => w.startsWith('HANDOVER_FAILED')).length).toBe(2);
    expect(h.core.txLog.outboxSize).toBe(3);
    expect(await h.core.anchorer.status(acked[0]!.txHash)).toEqual({
      state: 'queued',
      handedOver: false,
    });
    expect((await h.queue.stats()).waiting).toBe(0);
    // The process dies here; on restart the outbox is handed over again.
    await h.close();
    h = await openHarness(dir, fixture);
    expect(h.core.txLog.outboxSize).toBe(0);
    expect((await h.queue.stats()).waiting).toBe(3);
    expect(await anchorAll(h)).toBe(3);
    for (const r of acked) expect((await h.core.anchorer.status(r.txHash)).state).toBe('pinned');
    expect((await h.ledger.leaf(fixture.patients[0]!.idHash))?.seq).toBe(2);
    // Forgotten once pinned; nothing is left to anchor, and nothing was anchored twice.
    expect(await h.core.txLog.entries()).toEqual([]);
    expect(await anchorAll(h)).toBe(0);
  });

  it('hands the outbox over in signing order once the queue is back', async () => {
    const state = { down: true };
    h = await openHarness(dir, fixture, { wrapQueue: (q) => flakyQueue(q, state) });
    const first = await h.core.ingestor.ingest(bundleOf(0, ['o1', 'o2']));
    await h.core.ingestor.handedOver();
    expect(h.core.txLog.outboxSize).toBe(2);
    state.down = false;
    const second = await h.core.ingestor.ingest(bundleOf(0, ['o3']));
    await h.core.ingestor.handedOver();
    expect(h.core.txLog.outboxSize).toBe(0);
    const taken = await h.queue.take(10);
    expect(taken.map((d) => d.id)).toEqual([...first, ...second].map((r) => r.txHash));
    await h.core.anchorer.process(taken);
    expect(await h.ledger.pinAll()).toBe(3);
  });

  it('keeps ingesting through a queue outage and hands over once the queue is back', async () => {
    const state = { down: true };
    h = await openHarness(dir, fixture, { wrapQueue: (q) => flakyQueue(q, state) });
    h.core.start(10);
    const acked = await h.core.ingestor.ingest(bundleOf(1, ['q1', 'q2']));
    await new Promise((r) => setTimeout(r, 50));
    expect(h.core.txLog.outboxSize).toBe(2);
    state.down = false;
    await waitFor(() => h.ledger.mempool().eligible > 0, 'the txs in the mempool');
    await h.core.stop();
    expect(h.core.txLog.outboxSize).toBe(0);
    expect(await h.ledger.pinAll()).toBe(2);
    for (const r of acked) expect((await h.core.anchorer.status(r.txHash)).state).toBe('pinned');
  });

  it('submits again what the node held in its mempool when it restarted', async () => {
    h = await openHarness(dir, fixture);
    const acked = await h.core.ingestor.ingest(bundleOf(0, ['m1', 'm2', 'm3']));
    await h.core.anchorer.runOnce();
    expect(h.ledger.mempool().held).toBe(1);
    expect(await h.core.anchorer.status(acked[1]!.txHash)).toEqual({ state: 'mempool' });
    await h.close(); // nothing pinned: the node's mempool is gone
    h = await openHarness(dir, fixture);
    expect(h.ledger.mempool().held).toBe(1); // opening resubmitted them
    expect((await h.queue.stats()).waiting).toBe(0);
    expect(await h.ledger.pinAll()).toBe(3);
    await h.core.anchorer.sweep();
    expect(await h.core.txLog.entries()).toEqual([]);
  });

  it('a periodic sweep resubmits txs that stay unpinned, and leaves held ones alone', async () => {
    h = await openHarness(dir, fixture);
    await h.core.ingestor.ingest(bundleOf(0, ['s1']));
    await h.core.anchorer.runOnce();
    // First sweep notes it as unpinned; the mempool still holds it, so the second sweep's
    // resubmission is answered REPLAYED_TX and nothing changes.
    expect((await h.core.anchorer.sweep()).resubmitted).toBe(0);
    expect((await h.core.anchorer.sweep()).resubmitted).toBe(1);
    expect(h.ledger.mempool().held).toBe(1);
    expect(await h.ledger.pinAll()).toBe(1);
  });

  it('acks redelivered jobs of pinned txs without submitting, and fails jobs that are not ours', async () => {
    h = await openHarness(dir, fixture);
    const [r] = await h.core.ingestor.ingest(bundleOf(0, ['d1']));
    await anchorAll(h);
    const own = {
      id: r!.txHash,
      tx: (await h.ledger.store.getRecordProof(fromHex(r!.txHash)))!.tx,
    };
    const job = { id: own.id, tx: encodeTx(own.tx) };
    const calls: string[] = [];
    const source: JobSource = {
      take: async () => [],
      ack: async (ids) => calls.push(`ack ${ids.join(',')}`),
      fail: async (id, reason) => calls.push(`fail ${id.slice(0, 8)} ${reason.split(':')[0]}`),
      extend: async () => undefined,
    };
    const anchorer = new Anchorer({
      chainId: fixture.genesis.chainId,
      institution: fixture.institutions[0]!,
      txLog: h.core.txLog,
      ledger: h.ledger.store,
      node: {
        submitBundle: () => {
          throw new Error('a pinned tx must not be submitted');
        },
      },
      jobs: source,
    });
    await anchorer.process([
      job,
      { id: '00'.repeat(32), tx: job.tx },
      { id: job.id, tx: Uint8Array.of(9, 9) },
    ]);
    expect(calls).toEqual([
      `fail 00000000 BAD_JOB`,
      `fail ${job.id.slice(0, 8)} BAD_JOB`,
      `ack ${job.id}`,
    ]);
  });

  it('bundles at most maxBundleTxs txs, and splits a bundle the mempool half holds', async () => {
    h = await openHarness(dir, fixture, { maxBundleTxs: 2 });
    const acked = await h.core.ingestor.ingest(bundleOf(0, ['b1', 'b2', 'b3', 'b4', 'b5']));
    // The node already holds the first tx (e.g. submitted before a crash, then redelivered).
    const entries = await h.core.txLog.entries();
    const first = decodeTx(entries[0]!.tx);
    if (first.type !== 'medical') throw new Error('expected a medical tx');
    const inst = fixture.institutions[0]!;
    expect(
      h.ledger.submitBundle(signBundle(fixture.genesis.chainId, 0, [first], inst.signingSecret)).ok,
    ).toBe(true);
    expect(await anchorAll(h)).toBe(5);
    const batch = await h.ledger.store.getBatch(1);
    const sizes = batch!.bundles.map((b: Bundle) => b.txs.length);
    expect(sizes.every((n) => n <= 2)).toBe(true);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(5);
    for (const r of acked) expect((await h.core.anchorer.status(r.txHash)).state).toBe('pinned');
  });

  it('waits out a full mempool (or its own admission chunk), and fails jobs the node refuses', async () => {
    h = await openHarness(dir, fixture);
    let busy = 3;
    let refuse = false;
    const submitted: Bundle[] = [];
    const node = {
      submitBundle: (b: Bundle) => {
        if (busy > 0) {
          busy--;
          // The last refusal: this institution was admitted in a chunk not complete yet.
          return busy === 0
            ? reject('UNKNOWN_INSTITUTION', 'takes part from the next chunk', {
                institution: 0,
                admitted: true,
              })
            : reject('TOO_LARGE', 'mempool full', { held: 256 });
        }
        if (refuse) return reject('BAD_CHAMELEON_OPENING', 'forged');
        submitted.push(b);
        return h.ledger.submitBundle(b);
      },
    };
    const warnings: string[] = [];
    const anchorer = new Anchorer(
      {
        chainId: fixture.genesis.chainId,
        institution: fixture.institutions[0]!,
        txLog: h.core.txLog,
        ledger: h.ledger.store,
        node,
        jobs: h.queue,
        warn: (code) => warnings.push(code),
      },
      { takeWaitMs: 0, busyRetryMs: 1 },
    );
    const acked = await h.core.ingestor.ingest(bundleOf(0, ['f1', 'f2']));
    await anchorer.runOnce();
    expect(busy).toBe(0);
    expect(submitted.length).toBe(1);
    expect(await h.ledger.pinAll()).toBe(2);
    refuse = true;
    const [r3] = await h.core.ingestor.ingest(bundleOf(0, ['f3']));
    await anchorer.runOnce();
    expect(warnings).toEqual(['NODE_REFUSED']);
    expect(await anchorer.status(r3!.txHash)).toEqual({ state: 'queued', handedOver: true });
    expect((await h.queue.stats()).delayed + (await h.queue.stats()).waiting).toBe(1);
    expect(acked.length).toBe(2);
  });

  it('runs as a loop: started, it anchors what is ingested until stopped', async () => {
    h = await openHarness(dir, fixture);
    h.core.start();
    const acked = await h.core.ingestor.ingest(bundleOf(1, ['l1', 'l2']));
    await waitFor(() => h.ledger.mempool().eligible > 0, 'the txs in the mempool');
    await h.core.stop();
    expect(await h.ledger.pinAll()).toBe(2);
    for (const r of acked) expect((await h.core.anchorer.status(r.txHash)).state).toBe('pinned');
  });
});
