/** Peer bindings and the peers list: pure, no network. */
import { describe, expect, it } from 'vitest';
import {
  makePeerBinding,
  PEER_BINDING_BYTES,
  peerBindingMessage,
  verifyPeerBinding,
} from '../../src/p2p/binding.ts';
import { peerIdFromSeed } from '../../src/p2p/keys.ts';
import { type PeerEntry, peersFromJson, peersToJson, verifyPeers } from '../../src/p2p/peers.ts';
import { makeNetwork } from '../helpers/ledger-fixtures.ts';
import { peerSeed } from './helpers.ts';

const { genesis, institutions } = makeNetwork(3, 'binding-unit');
const chainId = genesis.chainId;
const [m0, m1] = genesis.members as [(typeof genesis.members)[0], (typeof genesis.members)[1]];
const secret = (i: number) => institutions[i]!.signingSecret;
const ids = await Promise.all([0, 1, 2, 3].map((i) => peerIdFromSeed(peerSeed('binding-unit', i))));
const id = (i: number) => ids[i]!;

describe('peer bindings', () => {
  it('a binding verifies for its chain, member and peer id only', () => {
    const binding = makePeerBinding(chainId, id(0), 0, secret(0));
    expect(binding).toHaveLength(PEER_BINDING_BYTES);
    expect(verifyPeerBinding(chainId, id(0), m0, binding)).toBe(true);
    expect(verifyPeerBinding(`${chainId}-other`, id(0), m0, binding)).toBe(false);
    expect(verifyPeerBinding(chainId, id(1), m0, binding)).toBe(false);
    // The same key claiming to be another member, or another member's key: both fail.
    expect(verifyPeerBinding(chainId, id(0), { ...m0, index: 1 }, binding)).toBe(false);
    expect(verifyPeerBinding(chainId, id(0), m1, binding)).toBe(false);
  });

  it('a binding signed by the wrong member key does not verify', () => {
    const forged = makePeerBinding(chainId, id(0), 0, secret(1));
    expect(verifyPeerBinding(chainId, id(0), m0, forged)).toBe(false);
  });

  it('never throws on malformed input', () => {
    const binding = makePeerBinding(chainId, id(0), 0, secret(0));
    expect(verifyPeerBinding(chainId, id(0), m0, binding.subarray(1))).toBe(false);
    expect(verifyPeerBinding(chainId, id(0), m0, new Uint8Array(64))).toBe(false);
    expect(verifyPeerBinding('', id(0), m0, binding)).toBe(false);
    expect(verifyPeerBinding(chainId, '', m0, binding)).toBe(false);
    expect(verifyPeerBinding(chainId, id(0), { ...m0, index: -1 }, binding)).toBe(false);
    expect(
      verifyPeerBinding(chainId, id(0), { ...m0, signingKey: new Uint8Array(33) }, binding),
    ).toBe(false);
  });

  it('signs an unambiguous message (chain, member, peer id, each length-prefixed)', () => {
    expect(peerBindingMessage('ab', 'c', 1)).not.toEqual(peerBindingMessage('a', 'bc', 1));
    expect(peerBindingMessage('a', 'b', 1)).not.toEqual(peerBindingMessage('a', 'b', 2));
    expect(() => peerBindingMessage('', 'x', 0)).toThrow(RangeError);
  });
});

describe('peers list', () => {
  const entry = (i: number, signer = i, index = i): PeerEntry => ({
    index,
    peerId: id(i),
    multiaddr: `/ip4/127.0.0.1/tcp/${4000 + i}`,
    binding: makePeerBinding(chainId, id(i), index, secret(signer)),
  });

  it('keeps the entries that verify and says why the others are refused', () => {
    const wrongKey = entry(2, 1);
    const notMember = { ...entry(3, 0, 0), index: 7 };
    const otherPeerInAddr = { ...entry(1), multiaddr: `/ip4/127.0.0.1/tcp/1/p2p/${id(0)}` };
    const v = verifyPeers(genesis, [entry(0), otherPeerInAddr, wrongKey, notMember]);
    expect([...v.byIndex.keys()]).toEqual([0]);
    expect(v.byPeerId.get(id(0))?.index).toBe(0);
    expect(v.refused.map((r) => [r.entry.index, r.reason])).toEqual([
      [1, 'multiaddr names another peer'],
      [2, "binding is not member 2's signature for this peer id"],
      [7, 'index 7 is not a member of spchain-test-binding-unit'],
    ]);
  });

  it('refuses both entries when an index or a peer id is listed twice', () => {
    const twiceIndex = verifyPeers(genesis, [entry(0), entry(1), { ...entry(3, 1, 1) }]);
    expect([...twiceIndex.byIndex.keys()]).toEqual([0]);
    expect(twiceIndex.refused.map((r) => r.reason)).toEqual([
      'index listed twice',
      'index listed twice',
    ]);
  });

  it('refuses a peer id that does not parse or is not canonical', () => {
    const bad = { ...entry(0), peerId: 'not-a-peer-id' };
    expect(verifyPeers(genesis, [bad]).refused[0]!.reason).toBe('peer id does not parse');
    const badAddr = { ...entry(0), multiaddr: 'nonsense' };
    expect(verifyPeers(genesis, [badAddr]).refused[0]!.reason).toBe('multiaddr does not parse');
  });

  it('round-trips through JSON and rejects malformed files', () => {
    const list = [entry(0), entry(1)];
    const json = JSON.parse(JSON.stringify(peersToJson(list)));
    expect(peersFromJson(json)).toEqual(list);
    expect(() => peersFromJson({})).toThrow(/array/);
    expect(() => peersFromJson([{ ...json[0], index: -1 }])).toThrow(/index/);
    expect(() => peersFromJson([{ ...json[0], binding: 'zz' }])).toThrow(/hex/);
    expect(() => peersFromJson([{ ...json[0], peerId: 5 }])).toThrow(/peerId/);
  });
});
