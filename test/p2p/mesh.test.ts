/**
 * Real TCP on 127.0.0.1: a full mesh forms from the peers list, gossip (StrictNoSign) reaches every
 * member, direct messages and request-response work both ways, and a restarted node is redialled.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { LedgerError, OK } from '../../src/ledger/errors.ts';
import type { Bundle } from '../../src/ledger/types.ts';
import { makePeerBinding } from '../../src/p2p/binding.ts';
import { createP2pNode, type P2pNode } from '../../src/p2p/node.ts';
import {
  makeTestNet,
  startNode,
  stopAll,
  tagOf,
  testBundle,
  testProposal,
  testVote,
  waitFor,
} from './helpers.ts';

const started: P2pNode[] = [];
afterEach(() => stopAll(started));

function fullMesh(nodes: readonly P2pNode[]): boolean {
  return nodes.every((n) => n.connectedMembers().length === nodes.length - 1);
}

describe('p2p mesh over TCP', () => {
  it('forms a full mesh of 4 from the peers list and gossip reaches everyone', async () => {
    const net = await makeTestNet(4, 'mesh');
    const received = net.peers.map(() => [] as { tag: number; from: number }[]);
    const nodes: P2pNode[] = [];
    for (const p of net.peers) {
      nodes.push(
        await startNode(net, p.index, started, {
          gossip: {
            bundles: (b: Bundle, from) => {
              received[p.index]!.push({ tag: tagOf(b), from });
              return OK;
            },
          },
        }),
      );
    }
    await waitFor(() => fullMesh(nodes), 'a full mesh');
    await waitFor(
      () => nodes.every((n) => n.topicPeers('bundles').length === 3),
      'every node to see 3 subscribers',
    );
    for (const n of nodes) await n.publish('bundles', testBundle(n.self, 100 + n.self));
    await waitFor(
      () => received.every((r) => r.length === 3),
      'each node to receive the 3 others’ bundles',
    );
    for (const [i, r] of received.entries()) {
      expect(r.map((x) => x.tag).sort()).toEqual([100, 101, 102, 103].filter((t) => t !== 100 + i));
      // `from` is the propagation source: the author or a member that forwarded it.
      for (const x of r) expect([0, 1, 2, 3].filter((m) => m !== i)).toContain(x.from);
    }
    // Same bytes, same message id: a repeat is not delivered again.
    await nodes[0]!.publish('bundles', testBundle(0, 100));
    await nodes[0]!.publish('bundles', testBundle(0, 104));
    await waitFor(() => received[1]!.length === 4, 'the next bundle');
    expect(received[1]!.filter((x) => x.tag === 100)).toHaveLength(1);
  }, 30_000);

  it('delivers direct messages and answers sync and record requests, both ways', async () => {
    const net = await makeTestNet(3, 'direct');
    const direct = net.peers.map(() => [] as string[]);
    const nodes: P2pNode[] = [];
    for (const p of net.peers) {
      nodes.push(
        await startNode(net, p.index, started, {
          direct: {
            bft: (m, from) => {
              direct[p.index]!.push(`bft ${m.type} h${m.height} from ${from}`);
              return OK;
            },
            bundle: (b, from) => {
              direct[p.index]!.push(`bundle ${tagOf(b)} from ${from}`);
              return OK;
            },
          },
          sync: (req, from) => ({
            items: Array.from({ length: Math.min(req.maxItems, 3) }, (_, k) =>
              Uint8Array.of(p.index, from, req.fromHeight + k),
            ),
            nextHeight: req.fromHeight + 3 < 9 ? req.fromHeight + 3 : null,
          }),
          record: (request, from) => {
            if (request[0] === 0xff) throw new Error('secret internal detail');
            if (request[0] === 0xee) throw new LedgerError('MALFORMED', 'not a record request');
            return Uint8Array.of(p.index, from, ...request);
          },
        }),
      );
    }
    const [a, b, c] = nodes as [P2pNode, P2pNode, P2pNode];
    await waitFor(() => fullMesh(nodes), 'a full mesh');

    expect(a.sendDirect(1, 'bft', testVote(0, 5))).toBe('queued');
    expect(b.sendDirect(0, 'bft', testProposal(1, 6))).toBe('queued');
    expect(c.broadcastDirect([0, 1], 'bundle', testBundle(2, 77))).toEqual(['queued', 'queued']);
    await waitFor(() => direct[0]!.length === 2 && direct[1]!.length === 2, 'direct messages');
    expect(direct[0]!.sort()).toEqual(['bft proposal h6 from 1', 'bundle 77 from 2']);
    expect(direct[1]!.sort()).toEqual(['bft prevote h5 from 0', 'bundle 77 from 2']);

    // Sync in bounded pages, following nextHeight until caught up, both ways.
    for (const [client, server] of [
      [a, 1],
      [b, 0],
    ] as const) {
      const items: number[] = [];
      let height: number | null = 0;
      while (height !== null) {
        const page = await client.syncPage(server, height, { maxItems: 3 });
        expect(page.items.length).toBeLessThanOrEqual(3);
        for (const it of page.items) {
          expect([it[0], it[1]]).toEqual([server, client.self]);
          items.push(it[2]!);
        }
        height = page.nextHeight;
      }
      expect(items).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    // Record transfer: many requests in flight on one reused stream, answered by id.
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, k) => a.requestRecord(2, Uint8Array.of(k))),
    );
    expect(answers.map((ans) => [...ans])).toEqual(answers.map((_, k) => [2, 0, k]));
    expect([...(await c.requestRecord(0, Uint8Array.of(9, 9)))]).toEqual([0, 2, 9, 9]);
    const recordStreams = a.libp2p
      .getConnections()
      .flatMap((conn) => conn.streams)
      .filter((st) => st.protocol === '/spchain/record/1.0.0');
    expect(recordStreams.length).toBeLessThanOrEqual(2);

    // A failing handler answers with an error, without leaking its message.
    await expect(a.requestRecord(1, Uint8Array.of(0xff))).rejects.toMatchObject({
      code: 'REMOTE_ERROR',
      detail: { remoteCode: 'INTERNAL' },
    });
    expect(b.misbehaviour(0)).toBe(0);
    // A request the handler rejects as malformed penalises the requester.
    await expect(a.requestRecord(1, Uint8Array.of(0xee))).rejects.toMatchObject({
      detail: { remoteCode: 'MALFORMED' },
    });
    expect(b.misbehaviour(0)).toBeGreaterThan(0);
    await expect(a.requestRecord(5, Uint8Array.of(1))).rejects.toMatchObject({
      code: 'UNKNOWN_PEER',
    });
  }, 30_000);

  it('redials a node that restarts, and gossip reaches it again', async () => {
    const net = await makeTestNet(3, 'restart');
    const got: number[] = [];
    const onBundle = (b: Bundle) => {
      got.push(tagOf(b));
      return OK;
    };
    const a = await startNode(net, 0, started, { gossip: { bundles: onBundle } });
    const b = await startNode(net, 1, started, { gossip: { bundles: onBundle } });
    let c = await startNode(net, 2, started, { gossip: { bundles: onBundle } });
    await waitFor(() => fullMesh([a, b, c]), 'a full mesh');

    await c.stop();
    await waitFor(
      () => !a.connectedMembers().includes(2) && !b.connectedMembers().includes(2),
      'the others to see node 2 gone',
    );
    // Back on the same address, but never dialling: the others must find it.
    const cGot: number[] = [];
    c = await startNode(net, 2, started, {
      dial: false,
      gossip: {
        bundles: (bundle: Bundle) => {
          cGot.push(tagOf(bundle));
          return OK;
        },
      },
    });
    await waitFor(() => fullMesh([a, b, c]), 'nodes 0 and 1 to redial node 2');
    await waitFor(() => a.topicPeers('bundles').includes(2), 'node 2 to resubscribe');
    await a.publish('bundles', testBundle(0, 555));
    await waitFor(() => cGot.includes(555), 'gossip to reach the restarted node');
  }, 30_000);

  it('times out requests, bounds requests in flight, and keeps the stream usable', async () => {
    const net = await makeTestNet(2, 'timeouts');
    const limits = { handlerTimeoutMs: 1_000, maxPendingRequests: 4 };
    await startNode(net, 0, started, {
      limits,
      record: async (request, _from, signal) => {
        if (request[0] === 1) await new Promise(() => {}); // never answers
        if (request[0] === 2) await new Promise((r) => signal.addEventListener('abort', r));
        return request;
      },
    });
    const client = await startNode(net, 1, started, { limits });
    await waitFor(() => client.connectedMembers().includes(0), 'connect');

    // The client gives up first; the server's handler deadline then frees its read loop.
    await expect(
      client.requestRecord(0, Uint8Array.of(1), { timeoutMs: 300 }),
    ).rejects.toMatchObject({ code: 'TIMEOUT' });
    // A handler that overruns its deadline is answered with TIMEOUT by the server.
    await expect(client.requestRecord(0, Uint8Array.of(2))).rejects.toMatchObject({
      code: 'REMOTE_ERROR',
      detail: { remoteCode: 'TIMEOUT' },
    });
    // At most 4 in flight to one peer: the rest are refused at once, not queued without bound.
    const burst = Array.from({ length: 6 }, (_, k) =>
      client.requestRecord(0, Uint8Array.of(10 + k)).then(
        (answer) => answer[0],
        (err: { code: string }) => err.code,
      ),
    );
    expect(await Promise.all(burst)).toEqual([10, 11, 12, 13, 'QUEUE_FULL', 'QUEUE_FULL']);
  }, 30_000);

  it('refuses a bad configuration, and releases what it started when listening fails', async () => {
    const net = await makeTestNet(2, 'config');
    await expect(
      createP2pNode({ chain: net.genesis, self: 0, peerKeySeed: new Uint8Array(31), peers: [] }),
    ).rejects.toMatchObject({ code: 'BAD_CONFIG' });
    // A validly bound entry for member 0 that names another peer id than node 0's seed gives.
    const other = net.peers[1]!.peerId;
    const binding = makePeerBinding(
      net.genesis.chainId,
      other,
      0,
      net.institutions[0]!.signingSecret,
    );
    const wrongSelf = [{ ...net.entries[0]!, peerId: other, binding }];
    await expect(startNode(net, 0, [], { peers: wrongSelf })).rejects.toMatchObject({
      code: 'BAD_CONFIG',
    });
    const a = await startNode(net, 0, started);
    await expect(startNode(net, 1, [], { listen: net.peers[0]!.listen })).rejects.toThrow();
    expect(a.multiaddrs()).toContain(`${net.peers[0]!.listen}/p2p/${a.peerId}`);
  }, 30_000);
});
