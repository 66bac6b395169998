/**
 * The peers list: which libp2p identity and address each institution uses, and the binding its
 * chain key signed for it (binding.ts). Written in advance, next to the genesis file, because every
 * peer id comes from a seeded key (keys.ts). A node talks only to the entries that verify here.
 */
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { fromHex, toHex } from '../crypto/bytes.ts';
import type { Genesis, InstitutionIndex } from '../ledger/types.ts';
import { PEER_BINDING_BYTES, verifyPeerBinding } from './binding.ts';
import { P2pError } from './errors.ts';

export interface PeerEntry {
  readonly index: InstitutionIndex;
  /** Canonical peer id string (base58btc). */
  readonly peerId: string;
  /** Where the peer listens, e.g. /ip4/10.0.0.5/tcp/4001 (a trailing /p2p/<peerId> is allowed). */
  readonly multiaddr: string;
  /** The member's signature binding `peerId` (makePeerBinding). */
  readonly binding: Uint8Array;
}

/** The JSON form of a peers file: the binding as hex. */
export interface PeerEntryJson {
  readonly index: number;
  readonly peerId: string;
  readonly multiaddr: string;
  readonly binding: string;
}

export function peersToJson(peers: readonly PeerEntry[]): PeerEntryJson[] {
  return peers.map((p) => ({
    index: p.index,
    peerId: p.peerId,
    multiaddr: p.multiaddr,
    binding: toHex(p.binding),
  }));
}

/** Parses the JSON form; checks shapes only (verifyPeers checks meaning). */
export function peersFromJson(json: unknown): PeerEntry[] {
  if (!Array.isArray(json)) throw new P2pError('BAD_CONFIG', 'peers file must be a JSON array');
  return json.map((e: unknown, i): PeerEntry => {
    const o = e as Partial<Record<keyof PeerEntryJson, unknown>> | null;
    const where = `peers[${i}]`;
    if (typeof o !== 'object' || o === null)
      throw new P2pError('BAD_CONFIG', `${where} is not an object`);
    if (!Number.isSafeInteger(o.index) || (o.index as number) < 0) {
      throw new P2pError('BAD_CONFIG', `${where}.index must be an integer >= 0`);
    }
    for (const f of ['peerId', 'multiaddr', 'binding'] as const) {
      if (typeof o[f] !== 'string')
        throw new P2pError('BAD_CONFIG', `${where}.${f} must be a string`);
    }
    let binding: Uint8Array;
    try {
      binding = fromHex(o.binding as string);
    } catch {
      throw new P2pError('BAD_CONFIG', `${where}.binding must be hex`);
    }
    return {
      index: o.index as number,
      peerId: o.peerId as string,
      multiaddr: o.multiaddr as string,
      binding,
    };
  });
}

export interface RefusedPeer {
  readonly entry: PeerEntry;
  readonly reason: string;
}

export interface VerifiedPeers {
  readonly byPeerId: ReadonlyMap<string, PeerEntry>;
  readonly byIndex: ReadonlyMap<InstitutionIndex, PeerEntry>;
  /** Entries that did not verify, with the reason; a node never talks to these. */
  readonly refused: readonly RefusedPeer[];
}

function problemOf(entry: PeerEntry, chain: Pick<Genesis, 'chainId' | 'members'>): string | null {
  const member = chain.members.find((m) => m.index === entry.index);
  if (member === undefined) return `index ${entry.index} is not a member of ${chain.chainId}`;
  try {
    if (peerIdFromString(entry.peerId).toString() !== entry.peerId) {
      return 'peer id is not in canonical form';
    }
  } catch {
    return 'peer id does not parse';
  }
  try {
    const named = multiaddr(entry.multiaddr)
      .getComponents()
      .find((c) => c.name === 'p2p');
    if (named !== undefined && named.value !== entry.peerId) return 'multiaddr names another peer';
  } catch {
    return 'multiaddr does not parse';
  }
  if (!(entry.binding instanceof Uint8Array) || entry.binding.length !== PEER_BINDING_BYTES) {
    return `binding must be ${PEER_BINDING_BYTES} bytes`;
  }
  if (!verifyPeerBinding(chain.chainId, entry.peerId, member, entry.binding)) {
    return `binding is not member ${entry.index}'s signature for this peer id`;
  }
  return null;
}

/**
 * Keeps the entries whose binding verifies against the member registry. An index or a peer id that
 * appears twice among the verified entries is refused both times: which one is real is not ours to
 * guess.
 */
export function verifyPeers(
  chain: Pick<Genesis, 'chainId' | 'members'>,
  peers: readonly PeerEntry[],
): VerifiedPeers {
  const refused: RefusedPeer[] = [];
  const good: PeerEntry[] = [];
  for (const entry of peers) {
    const problem = problemOf(entry, chain);
    if (problem === null) good.push(entry);
    else refused.push({ entry, reason: problem });
  }
  const count = (key: (e: PeerEntry) => string | number) => {
    const m = new Map<string | number, number>();
    for (const e of good) m.set(key(e), (m.get(key(e)) ?? 0) + 1);
    return m;
  };
  const indexCount = count((e) => e.index);
  const idCount = count((e) => e.peerId);
  const byPeerId = new Map<string, PeerEntry>();
  const byIndex = new Map<InstitutionIndex, PeerEntry>();
  for (const e of good) {
    if (indexCount.get(e.index)! > 1) refused.push({ entry: e, reason: 'index listed twice' });
    else if (idCount.get(e.peerId)! > 1) refused.push({ entry: e, reason: 'peer id listed twice' });
    else {
      byPeerId.set(e.peerId, e);
      byIndex.set(e.index, e);
    }
  }
  return { byPeerId, byIndex, refused };
}
