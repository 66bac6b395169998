/**
 * Who may talk, and what happens to bad data: unknown peers and peers with a binding by the wrong
 * member key are refused; a rejected gossip message is not forwarded and penalises its sender (and
 * enough of them get it banned); oversize messages are refused locally and remotely.
 */
import { peerIdFromString } from '@libp2p/peer-id';
import { lpStream } from '@libp2p/utils';
import { multiaddr } from '@multiformats/multiaddr';
import { afterEach, describe, expect, it } from 'vitest';
import { OK, reject } from '../../src/ledger/errors.ts';
import type { Bundle } from '../../src/ledger/types.ts';
import { makePeerBinding } from '../../src/p2p/binding.ts';
import type { P2pEvent } from '../../src/p2p/context.ts';
import { PROTOCOLS, topicId } from '../../src/p2p/messages.ts';
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

function hasConnection(from: P2pNode, to: P2pNode): boolean {
  return from.libp2p.getConnections(peerIdFromString(to.peerId)).length > 0;
}

/**
 * Samples for `ms` (several redial rounds of the refused peer, whose backoff is 100 ms .. 1 s)
 * that `node` never holds a connection to `other`. Only the refusing side is checked: the dialler
 * may see its own half of a connection for an instant before the refusal reaches it.
 */
async function neverConnected(node: P2pNode, other: P2pNode, ms = 600): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    expect(hasConnection(node, other)).toBe(false);
    await sleep(10);
  }
}

describe('p2p admission', () => {
  it('refuses a peer that is not in the peers list', async () => {
    const net = await makeTestNet(3, 'unknown');
    const heard: number[] = [];
    // Nodes 0 and 1 list only each other; node 2 (a genesis member, validly bound) is unknown.
    const listed = net.entries.slice(0, 2);
    const a = await startNode(net, 0, started, {
      peers: listed,
      direct: {
        bundle: (_b, from) => {
          heard.push(from);
          return OK;
        },
      },
    });
    const b = await startNode(net, 1, started, { peers: listed });
    const outsider = await startNode(net, 2, started); // knows everyone, dials everyone
    await waitFor(() => a.connectedMembers().includes(1), 'the listed pair to connect');

    // Dial it by hand as well: whether libp2p reports the refusal or a connection that dies at
    // once depends on who finishes the Noise handshake first; either way none survives.
    await outsider.libp2p
      .dial(multiaddr(`${net.peers[0]!.listen}/p2p/${a.peerId}`))
      .catch(() => undefined);
    outsider.sendDirect(0, 'bundle', testBundle(2, 1));
    await neverConnected(a, outsider);
    await neverConnected(b, outsider, 100);
    expect(heard).toEqual([]);
    expect(a.connectedMembers()).toEqual([1]);
  }, 30_000);

  it('refuses a peer whose binding is signed by another member’s key', async () => {
    const net = await makeTestNet(3, 'binding');
    const events: P2pEvent[] = [];
    // Node 2's entry carries a binding made with member 1's key.
    const forged = {
      ...net.entries[2]!,
      binding: makePeerBinding(
        net.genesis.chainId,
        net.peers[2]!.peerId,
        2,
        net.institutions[1]!.signingSecret,
      ),
    };
    const tampered = [net.entries[0]!, net.entries[1]!, forged];
    const heard: number[] = [];
    const a = await startNode(net, 0, started, {
      peers: tampered,
      onEvent: (e) => events.push(e),
      direct: {
        bundle: (_b, from) => {
          heard.push(from);
          return OK;
        },
      },
    });
    const b = await startNode(net, 1, started, { peers: tampered });
    const impostor = await startNode(net, 2, started);
    expect(a.refusedPeers()).toHaveLength(1);
    expect(a.refusedPeers()[0]!.entry.index).toBe(2);
    expect(a.refusedPeers()[0]!.reason).toMatch(/binding/);
    expect(events).toContainEqual(expect.objectContaining({ type: 'refused-peer', index: 2 }));

    await waitFor(() => a.connectedMembers().includes(1), 'the honest pair to connect');
    impostor.sendDirect(0, 'bundle', testBundle(2, 1));
    await neverConnected(a, impostor);
    await neverConnected(b, impostor, 100);
    expect(heard).toEqual([]);
    expect(() => a.sendDirect(2, 'bundle', testBundle(0, 1))).toThrow(/not a verified peer/);
  }, 30_000);
});

describe('p2p bad data', () => {
  it('does not forward a rejected message, penalises its sender, bans it past a threshold', async () => {
    const net = await makeTestNet(3, 'reject');
    // A line: 0 - 1 - 2. Node 1 rejects odd tags; node 2 can only hear node 0 through node 1.
    const at1: number[] = [];
    const at2: number[] = [];
    const events: P2pEvent[] = [];
    const n0 = await startNode(net, 0, started, { peers: net.entries.slice(0, 2) });
    const n1 = await startNode(net, 1, started, {
      limits: { banThreshold: 3, rejectPenalty: 1, banMs: 60_000 },
      onEvent: (e) => events.push(e),
      gossip: {
        bundles: (b: Bundle) => {
          at1.push(tagOf(b));
          return tagOf(b) % 2 === 1 ? reject('BAD_SIGNATURE', 'forged') : OK;
        },
      },
    });
    await startNode(net, 2, started, {
      peers: net.entries.slice(1, 3),
      gossip: {
        bundles: (b: Bundle) => {
          at2.push(tagOf(b));
          return OK;
        },
      },
    });
    await waitFor(
      () => n1.connectedMembers().length === 2 && n1.topicPeers('bundles').includes(2),
      'the line to form',
    );
    expect(n0.connectedMembers()).toEqual([1]);

    // Accepted messages flow 0 -> 1 -> 2 once node 1's mesh has node 2 (a heartbeat or so).
    let tag = 0;
    await waitFor(async () => {
      tag += 2;
      await n0.publish('bundles', testBundle(0, tag));
      await sleep(50);
      return at2.length > 0;
    }, 'an accepted message to be forwarded to node 2');

    await n0.publish('bundles', testBundle(0, 1001));
    await waitFor(() => at1.includes(1001), 'node 1 to see the bad message');
    await n0.publish('bundles', testBundle(0, 2000));
    await waitFor(() => at2.includes(2000), 'the next good message to reach node 2');
    expect(at2).not.toContain(1001);
    expect(n1.misbehaviour(0)).toBe(1);
    expect(events).toContainEqual(
      expect.objectContaining({ type: 'penalised', member: 0, points: 1 }),
    );

    // Two more rejects reach the threshold: node 0 is banned, disconnected, and kept out.
    await n0.publish('bundles', testBundle(0, 1003));
    await n0.publish('bundles', testBundle(0, 1005));
    await waitFor(() => n1.isBanned(0), 'node 0 to be banned');
    expect(events).toContainEqual(expect.objectContaining({ type: 'banned', member: 0 }));
    await waitFor(() => !n1.connectedMembers().includes(0), 'node 0 to be disconnected');
    await sleep(500); // node 0 keeps redialling
    expect(n1.connectedMembers()).toEqual([2]);
    expect(at2.filter((t) => t % 2 === 1)).toEqual([]);
  }, 30_000);

  it('refuses oversize messages locally, and penalises a peer that sends one anyway', async () => {
    const net = await makeTestNet(2, 'oversize');
    const limits = {
      maxDirectBytes: 16 * 1024,
      maxRecordBytes: 16 * 1024,
      maxGossipBytes: { bundles: 1024, keyblocks: 1024, bft: 1024 },
      violationPenalty: 5,
    };
    const direct: number[] = [];
    const gossip: number[] = [];
    const a = await startNode(net, 0, started, {
      limits,
      direct: {
        bft: (m) => {
          direct.push(m.height);
          return OK;
        },
      },
      gossip: {
        bundles: (b: Bundle) => {
          gossip.push(tagOf(b));
          return OK;
        },
      },
      record: (req) => new Uint8Array(req.length * 1024),
    });
    const b = await startNode(net, 1, started, { limits });
    await waitFor(
      () => b.connectedMembers().includes(0) && b.topicPeers('bundles').includes(0),
      'connect',
    );

    const big = testProposal(1, 1, 20 * 1024);
    expect(() => b.sendDirect(0, 'bft', big)).toThrow(
      expect.objectContaining({ code: 'TOO_LARGE' }),
    );
    await expect(b.publish('bft', testProposal(1, 1, 2048))).rejects.toMatchObject({
      code: 'TOO_LARGE',
    });
    // Gossip: a bundle within the limit goes out; raw 2 KiB bypassing our own check does too.
    await b.publish('bundles', testBundle(1, 1));
    await b.libp2p.services.pubsub.publish(
      topicId(net.genesis.chainId, 'bundles'),
      new Uint8Array(2048),
    );
    await expect(b.requestRecord(0, new Uint8Array(17 * 1024))).rejects.toMatchObject({
      code: 'TOO_LARGE',
    });
    // An answer over the limit comes back as an error, not as a broken stream.
    await expect(b.requestRecord(0, new Uint8Array(17))).rejects.toMatchObject({
      code: 'REMOTE_ERROR',
      detail: { remoteCode: 'TOO_LARGE' },
    });
    expect([...(await b.requestRecord(0, new Uint8Array(2)))]).toHaveLength(2048);

    // The 2 KiB gossip message above was rejected by node 0's size check.
    await waitFor(() => a.misbehaviour(1) >= 5, 'the oversize gossip to be penalised');
    expect(gossip).toEqual([1]);

    // A raw oversize frame on the direct protocol: the stream is reset, the sender penalised.
    const stream = await b.libp2p.dialProtocol(peerIdFromString(a.peerId), PROTOCOLS.direct);
    const lp = lpStream(stream);
    await lp.write(new Uint8Array(64 * 1024)).catch(() => {});
    await waitFor(() => a.misbehaviour(1) >= 10, 'the oversize frame to be penalised');
    await waitFor(() => stream.status !== 'open', 'the stream to be reset');

    // The connection itself survives, and ordinary messages still go through.
    b.sendDirect(0, 'bft', testProposal(1, 42));
    await waitFor(() => direct.includes(42), 'a normal direct message after the oversize one');
  }, 30_000);
});
