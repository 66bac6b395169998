/** A network of institutions on 127.0.0.1 with seeded libp2p keys and signed peer bindings. */
import { createServer } from 'node:net';
import { sha256 } from '@noble/hashes/sha2.js';
import { utf8 } from '../../src/crypto/bytes.ts';
import type { BftMessage, Proposal } from '../../src/ledger/bft-messages.ts';
import type { Bundle, Genesis } from '../../src/ledger/types.ts';
import { makePeerBinding } from '../../src/p2p/binding.ts';
import type { P2pLimits } from '../../src/p2p/context.ts';
import { peerIdFromSeed } from '../../src/p2p/keys.ts';
import { createP2pNode, type P2pNode, type P2pNodeOpts } from '../../src/p2p/node.ts';
import type { PeerEntry } from '../../src/p2p/peers.ts';
import { makeNetwork, type TestInstitution } from '../helpers/ledger-fixtures.ts';

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * A free port below the kernel's ephemeral range (32768-60999 on Linux), so that no outgoing
 * connection (a dial, here or in a parallel test file) can take it between this check and the
 * node's listen; random, so parallel test files do not pick the same one.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (await canListen(port)) return port;
  }
  throw new Error('no free port in 20000-31999');
}

export interface TestPeer {
  readonly index: number;
  readonly seed: Uint8Array;
  readonly peerId: string;
  readonly port: number;
  readonly listen: string;
  readonly entry: PeerEntry;
}

export interface TestNet {
  readonly genesis: Genesis;
  readonly institutions: readonly TestInstitution[];
  readonly peers: readonly TestPeer[];
  readonly entries: readonly PeerEntry[];
}

export function peerSeed(label: string, index: number): Uint8Array {
  return sha256(utf8(`p2p-test/${label}/${index}`));
}

/** `size` members in the genesis, a peers list entry (with a valid binding) for each. */
export async function makeTestNet(size: number, label: string): Promise<TestNet> {
  const { genesis, institutions } = makeNetwork(size, `p2p-${label}`);
  const peers: TestPeer[] = [];
  for (const inst of institutions) {
    const seed = peerSeed(label, inst.index);
    const peerId = await peerIdFromSeed(seed);
    const port = await freePort();
    const listen = `/ip4/127.0.0.1/tcp/${port}`;
    const binding = makePeerBinding(genesis.chainId, peerId, inst.index, inst.signingSecret);
    peers.push({
      index: inst.index,
      seed,
      peerId,
      port,
      listen,
      entry: { index: inst.index, peerId, multiaddr: listen, binding },
    });
  }
  return { genesis, institutions, peers, entries: peers.map((p) => p.entry) };
}

/** Fast redial for tests; everything else at the defaults unless overridden. */
export const testLimits: Partial<P2pLimits> = { redialMinMs: 100, redialMaxMs: 1_000 };

export type NodeOverrides = Partial<Omit<P2pNodeOpts, 'chain' | 'self' | 'peerKeySeed'>>;

/** Starts the node of member `index`, tracking it in `started` for afterEach cleanup. */
export async function startNode(
  net: TestNet,
  index: number,
  started: P2pNode[],
  overrides: NodeOverrides = {},
): Promise<P2pNode> {
  const peer = net.peers[index]!;
  const node = await createP2pNode({
    chain: net.genesis,
    self: index,
    peerKeySeed: peer.seed,
    listen: peer.listen,
    peers: net.entries,
    ...overrides,
    limits: { ...testLimits, ...overrides.limits },
  });
  started.push(node);
  return node;
}

export async function stopAll(started: P2pNode[]): Promise<void> {
  await Promise.allSettled(started.splice(0).map((n) => n.stop()));
}

/** Polls `cond` every 20 ms until it holds; fails naming `what` after `timeoutMs`. */
export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A bundle the codec accepts (no txs, an unchecked signature); `tag` makes each one distinct. */
export function testBundle(institution: number, tag: number): Bundle {
  const signature = new Uint8Array(64);
  new DataView(signature.buffer).setUint32(0, tag);
  return { institution, txs: [], signature };
}

export function tagOf(bundle: Bundle): number {
  return new DataView(bundle.signature.buffer, bundle.signature.byteOffset).getUint32(0);
}

/** A proposal the codec accepts (signature unchecked at this layer); height tells them apart. */
export function testProposal(member: number, height: number, valueBytes = 32): Proposal {
  return {
    type: 'proposal',
    kind: 'batch',
    height,
    round: 0,
    validRound: -1,
    value: new Uint8Array(valueBytes).fill(height & 0xff),
    member,
    signature: new Uint8Array(64).fill(7),
  };
}

export function testVote(member: number, height: number): BftMessage {
  return {
    type: 'prevote',
    kind: 'batch',
    height,
    round: 0,
    value: null,
    member,
    signature: new Uint8Array(64).fill(9),
  };
}
