/**
 * A burst of 10x the rate limit: the receiver slows the sender down (paused stream, then the
 * sender's bounded queue drops its oldest messages), nothing grows without bound, nothing crashes,
 * and messages sent after the burst are still delivered. Gossip, which has no backpressure, sheds
 * the excess at the receiver instead.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { OK } from '../../src/ledger/errors.ts';
import type { Bundle } from '../../src/ledger/types.ts';
import { PROTOCOLS } from '../../src/p2p/messages.ts';
import type { P2pNode } from '../../src/p2p/node.ts';
import {
  makeTestNet,
  sleep,
  startNode,
  stopAll,
  tagOf,
  testBundle,
  testProposal,
  waitFor,
} from './helpers.ts';

const started: P2pNode[] = [];
afterEach(() => stopAll(started));

describe('p2p under a burst', () => {
  it('direct: rate limit and bounded queue hold, later messages still arrive', async () => {
    const net = await makeTestNet(2, 'burst-direct');
    const rate = { perSecond: 100, burst: 100 };
    const queueCap = 100;
    const heights: number[] = [];
    const receiver = await startNode(net, 0, started, {
      limits: { directRate: rate, streamWindowBytes: 256 * 1024 },
      direct: {
        bft: (m) => {
          heights.push(m.height);
          return OK;
        },
      },
    });
    const sender = await startNode(net, 1, started, {
      limits: {
        directQueueMessages: queueCap,
        directQueueBytes: 1024 * 1024,
        streamWindowBytes: 256 * 1024,
      },
    });
    await waitFor(() => sender.connectedMembers().includes(0), 'connect');

    // 10x the per-second limit, 4 KiB each (10x the 256 KiB stream window in total).
    const total = 10 * rate.perSecond;
    let maxQueued = 0;
    const outcomes = new Map<string, number>();
    for (let h = 1; h <= total; h++) {
      const outcome = sender.sendDirect(0, 'bft', testProposal(1, h, 4096));
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      const s = sender.stats();
      maxQueued = Math.max(maxQueued, s.queuedMessages);
      expect(s.queuedBytes).toBeLessThanOrEqual(1024 * 1024);
      // A producer over time, not one synchronous loop: let the writer drain into the stream.
      if (h % 20 === 0) await new Promise((r) => setImmediate(r));
    }
    // What the streams hold is bounded too: the sender's write buffer by the writer's low-water
    // mark (64 KiB) plus a frame, the receiver's paused stream by the yamux window.
    const directStreams = (n: P2pNode) =>
      n.libp2p
        .getConnections()
        .flatMap((c) => c.streams)
        .filter((st) => st.protocol === PROTOCOLS.direct);
    for (const st of directStreams(sender)) {
      expect(st.writeBufferLength).toBeLessThanOrEqual(64 * 1024 + 8 * 1024);
    }
    for (const st of directStreams(receiver)) {
      expect(st.readBufferLength).toBeLessThanOrEqual(256 * 1024);
    }
    expect(maxQueued).toBeLessThanOrEqual(queueCap);
    expect(outcomes.get('dropped-oldest') ?? 0).toBeGreaterThan(0);

    // With drop-oldest, the newest message survives the burst and is delivered.
    await waitFor(() => heights.includes(total), 'the last message of the burst', 25_000);
    expect(heights.length).toBeLessThan(total);
    expect(receiver.stats().throttledStreams).toBeGreaterThan(0);
    expect(sender.stats().droppedMessages).toBeGreaterThan(0);
    // Delivered in order, without repeats.
    expect([...heights].sort((x, y) => x - y)).toEqual(heights);
    expect(new Set(heights).size).toBe(heights.length);

    // After the burst the path is healthy.
    sender.sendDirect(0, 'bft', testProposal(1, total + 1));
    await waitFor(() => heights.includes(total + 1), 'a message sent after the burst');
    expect(sender.stats().queuedMessages).toBe(0);
    expect(receiver.misbehaviour(1)).toBe(0); // being fast is not misbehaving
  }, 40_000);

  it('gossip: the receiver sheds what is over the rate, takes new ones once it refills', async () => {
    const net = await makeTestNet(2, 'burst-gossip');
    const rate = { perSecond: 20, burst: 20 };
    const got: number[] = [];
    const receiver = await startNode(net, 0, started, {
      limits: { gossipRate: rate },
      gossip: {
        bundles: (b: Bundle) => {
          got.push(tagOf(b));
          return OK;
        },
      },
    });
    const sender = await startNode(net, 1, started);
    await waitFor(() => sender.topicPeers('bundles').includes(0), 'subscription');

    const total = 10 * rate.perSecond;
    for (let t = 1; t <= total; t++) await sender.publish('bundles', testBundle(1, t));
    await waitFor(
      () => got.length + receiver.stats().throttledGossip >= total,
      'the receiver to process the burst',
    );
    expect(got.length).toBeLessThan(total);
    expect(receiver.stats().throttledGossip).toBeGreaterThan(0);
    expect(receiver.misbehaviour(1)).toBe(0);

    await sleep(1_100); // the bucket refills at 20/s: at least 20 tokens by now
    await sender.publish('bundles', testBundle(1, 9999));
    await waitFor(() => got.includes(9999), 'a message published after the burst');
    expect(receiver.connectedMembers()).toEqual([1]);
  }, 40_000);
});
