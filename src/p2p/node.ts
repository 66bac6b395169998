/**
 * An institution's network edge: a libp2p node that talks only to the institutions in a verified
 * peers list, gossips bundles, keyblocks and BFT messages, and carries direct messages, sync and
 * record transfer over streams. No ledger logic: handlers supplied by the caller decide, this
 * module maps their verdicts and keeps resources bounded.
 */
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { type GossipSub, gossipsub } from '@libp2p/gossipsub';
import { type Identify, identify } from '@libp2p/identify';
import type { Libp2p, PeerId } from '@libp2p/interface';
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id';
import { tcp } from '@libp2p/tcp';
import { multiaddr } from '@multiformats/multiaddr';
import { createLibp2p } from 'libp2p';
import type { Genesis, InstitutionIndex } from '../ledger/types.ts';
import { Channels, type DirectHandlers, type RecordHandler, type SyncHandler } from './channels.ts';
import { defaultP2pLimits, type EdgeContext, type P2pEvent, type P2pLimits } from './context.ts';
import { Redialer } from './dialer.ts';
import { P2pError } from './errors.ts';
import { GossipEdge, type GossipHandlers, gossipOptions } from './gossip.ts';
import { peerKeyFromSeed } from './keys.ts';
import { type EnqueueOutcome, Misbehaviour } from './limits.ts';
import {
  DIRECT_CODECS,
  type DirectKind,
  type DirectPayloads,
  decodeSyncPage,
  encodeSyncRequest,
  type SyncPage,
  type SyncRequest,
  type TopicName,
  type TopicPayloads,
} from './messages.ts';
import { type PeerEntry, type RefusedPeer, type VerifiedPeers, verifyPeers } from './peers.ts';

export interface P2pNodeOpts {
  readonly chain: Pick<Genesis, 'chainId' | 'members'>;
  /** This institution's member index. */
  readonly self: InstitutionIndex;
  /** 32 secret bytes the libp2p Ed25519 key is derived from (its peer id is in the peers list). */
  readonly peerKeySeed: Uint8Array;
  readonly peers: readonly PeerEntry[];
  /** Listen multiaddr; default /ip4/127.0.0.1/tcp/0. */
  readonly listen?: string;
  readonly gossip?: GossipHandlers;
  readonly direct?: DirectHandlers;
  readonly sync?: SyncHandler;
  readonly record?: RecordHandler;
  readonly limits?: Partial<P2pLimits>;
  /** false: never dial, only accept (the others redial us). Default true. */
  readonly dial?: boolean;
  /** Clock for rate limits and penalties (ms). Default Date.now. */
  readonly now?: () => number;
  readonly onEvent?: (event: P2pEvent) => void;
}

export interface P2pStats {
  readonly queuedMessages: number;
  readonly queuedBytes: number;
  /** Direct messages dropped or refused by full queues, or lost with a stream. */
  readonly droppedMessages: number;
  /** Inbound streams paused by a rate limit, and gossip messages shed by one. */
  readonly throttledStreams: number;
  readonly throttledGossip: number;
}

export interface P2pNode {
  readonly self: InstitutionIndex;
  readonly peerId: string;
  /** The underlying libp2p node (metrics, tests); not for ledger code. */
  readonly libp2p: Libp2p<{ identify: Identify; pubsub: GossipSub }>;
  multiaddrs(): string[];
  connectedMembers(): InstitutionIndex[];
  /** Members known to subscribe to a topic. */
  topicPeers(topic: TopicName): InstitutionIndex[];
  refusedPeers(): readonly RefusedPeer[];
  /**
   * Replaces the peers list (membership change), verified against `chain` when given (the
   * members now, genesis members and those admitted since); peers no longer listed are
   * disconnected, new ones dialled.
   */
  setPeers(peers: readonly PeerEntry[], chain?: Pick<Genesis, 'chainId' | 'members'>): void;
  /**
   * Fault tests only (src/node/faults.ts): while on, every connection is dropped and every peer
   * refused in both directions, as if the network were cut; off, the peers are dialled again.
   */
  setIsolated(isolated: boolean): void;
  publish<T extends TopicName>(topic: T, value: TopicPayloads[T]): Promise<number>;
  sendDirect<K extends DirectKind>(
    to: InstitutionIndex,
    kind: K,
    value: DirectPayloads[K],
  ): EnqueueOutcome;
  broadcastDirect<K extends DirectKind>(
    to: readonly InstitutionIndex[],
    kind: K,
    value: DirectPayloads[K],
  ): EnqueueOutcome[];
  /** Pinned items from batch `fromHeight` (and keyblock `opts.fromKeyblock`) on. */
  syncPage(
    to: InstitutionIndex,
    fromHeight: number,
    opts?: RequestOpts & { maxItems?: number; fromKeyblock?: number },
  ): Promise<SyncPage>;
  requestRecord(to: InstitutionIndex, request: Uint8Array, opts?: RequestOpts): Promise<Uint8Array>;
  /** Every penalty point ever recorded against a member's peer (not decayed). */
  misbehaviour(member: InstitutionIndex): number;
  isBanned(member: InstitutionIndex): boolean;
  stats(): P2pStats;
  stop(): Promise<void>;
}

export interface RequestOpts {
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

function allowList(peers: readonly PeerEntry[]): string[] {
  const allow = new Set(['/ip4/127.0.0.0/ipcidr/8', '/ip6/::1/ipcidr/128']);
  for (const p of peers) {
    try {
      const host = multiaddr(p.multiaddr).getComponents()[0];
      if (host?.name === 'ip4' || host?.name === 'ip6') allow.add(`/${host.name}/${host.value}`);
    } catch {
      // verifyPeers reports it
    }
  }
  return [...allow];
}

/** Creates and starts a node. */
export async function createP2pNode(opts: P2pNodeOpts): Promise<P2pNode> {
  const limits: P2pLimits = { ...defaultP2pLimits, ...opts.limits };
  const now = opts.now ?? Date.now;
  const emit = (e: P2pEvent) => {
    try {
      opts.onEvent?.(e);
    } catch {
      // an observer's fault is not the network's
    }
  };
  const privateKey = await peerKeyFromSeed(opts.peerKeySeed);
  const selfId = peerIdFromPrivateKey(privateKey).toString();
  const stopping = new AbortController();
  const misbehaviour = new Misbehaviour({
    banThreshold: limits.banThreshold,
    banMs: limits.banMs,
    halfLifeMs: limits.penaltyHalfLifeMs,
  });

  let verified: VerifiedPeers = { byPeerId: new Map(), byIndex: new Map(), refused: [] };
  let chain = opts.chain;
  const applyPeers = (peers: readonly PeerEntry[]) => {
    const v = verifyPeers(chain, peers);
    const own = v.byIndex.get(opts.self);
    if (own !== undefined && own.peerId !== selfId) {
      throw new P2pError(
        'BAD_CONFIG',
        `peers list gives member ${opts.self} peer id ${own.peerId}, the seed gives ${selfId}`,
      );
    }
    for (const r of v.refused) {
      emit({
        type: 'refused-peer',
        index: r.entry.index,
        peerId: r.entry.peerId,
        reason: r.reason,
      });
    }
    const others = new Map([...v.byPeerId].filter(([id]) => id !== selfId));
    verified = {
      byPeerId: others,
      byIndex: new Map([...others.values()].map((e) => [e.index, e])),
      refused: v.refused,
    };
  };
  applyPeers(opts.peers);

  const isBanned = (peer: string) => misbehaviour.isBanned(peer, now());
  let isolated = false;
  const allowed = (peer: PeerId) => {
    const id = peer.toString();
    return !isolated && verified.byPeerId.has(id) && !isBanned(id);
  };

  let libp2pRef: Libp2p | undefined;
  let channelsRef: Channels | undefined;
  let gossipRef: GossipEdge | undefined;
  const ctx: EdgeContext = {
    limits,
    stopSignal: stopping.signal,
    now,
    memberOf: (peer) => verified.byPeerId.get(peer)?.index,
    isBanned,
    penalise(peer, points, reason) {
      const member = verified.byPeerId.get(peer)?.index;
      emit({ type: 'penalised', member, peerId: peer, points, reason });
      if (misbehaviour.penalise(peer, points, now()) === 'banned') {
        emit({ type: 'banned', member, peerId: peer, untilMs: now() + limits.banMs });
        channelsRef?.dropPeer(peer);
        gossipRef?.forget(peer);
        libp2pRef?.hangUp(peerIdFromString(peer)).catch(() => {});
      }
    },
  };

  const libp2p = await createLibp2p({
    privateKey,
    start: false,
    addresses: { listen: [opts.listen ?? '/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux({ streamOptions: { maxStreamWindowSize: limits.streamWindowBytes } })],
    // Only verified institutions, checked once the Noise handshake has authenticated the remote.
    connectionGater: {
      // Isolated (fault tests): refused before the handshake, so the dialler never sees a connection.
      denyInboundConnection: () => isolated,
      denyDialPeer: (peer) => !allowed(peer),
      denyInboundEncryptedConnection: (peer) => !allowed(peer),
      denyOutboundEncryptedConnection: (peer) => !allowed(peer),
    },
    // NOTES-libp2p: the per-host inbound limits (5/s, 10 pending) refuse peers that share a host
    // with a misleading ECONNRESET; allow-list loopback and the listed peers' hosts.
    connectionManager: {
      allow: allowList(opts.peers),
      maxConnections: 4 * (opts.chain.members.length + 4),
    },
    // NOTES-libp2p: one failed ping on a busy event loop must not drop a consensus connection.
    connectionMonitor: { abortConnectionOnPingFailure: false },
    services: {
      identify: identify(),
      pubsub: gossipsub(
        gossipOptions(opts.chain.chainId, limits, (p) => misbehaviour.points(p, now())),
      ),
    },
  });
  libp2pRef = libp2p;
  const gossip = new GossipEdge(libp2p.services.pubsub, opts.chain.chainId, ctx, opts.gossip ?? {});
  gossipRef = gossip;
  const channels = new Channels(libp2p, ctx, {
    direct: opts.direct,
    sync: opts.sync,
    record: opts.record,
  });
  channelsRef = channels;
  const redialer = new Redialer(libp2p, limits, (p) => !isolated && !isBanned(p), now);

  libp2p.addEventListener('peer:connect', (evt) => {
    const id = evt.detail.toString();
    const entry = verified.byPeerId.get(id);
    if (entry === undefined) return;
    emit({ type: 'connected', member: entry.index, peerId: id });
    channels.flush(id);
  });
  libp2p.addEventListener('peer:disconnect', (evt) => {
    const id = evt.detail.toString();
    const entry = verified.byPeerId.get(id);
    redialer.due(id);
    if (entry !== undefined) emit({ type: 'disconnected', member: entry.index, peerId: id });
  });

  try {
    await channels.start();
    await libp2p.start();
    gossip.subscribe();
  } catch (err) {
    // A listen address in use, say: release whatever did start before reporting it.
    stopping.abort(err);
    await Promise.resolve(libp2p.stop()).catch(() => {});
    throw err;
  }
  if (opts.dial !== false) {
    redialer.setTargets(verified.byPeerId.values());
    redialer.start();
  }

  const peerOf = (member: InstitutionIndex): string => {
    const entry = verified.byIndex.get(member);
    if (entry === undefined) {
      throw new P2pError('UNKNOWN_PEER', `member ${member} is not a verified peer of this node`, {
        member,
      });
    }
    return entry.peerId;
  };
  const live = () => {
    if (stopping.signal.aborted) throw new P2pError('STOPPED', 'node is stopped');
  };

  const node: P2pNode = {
    self: opts.self,
    peerId: selfId,
    libp2p,
    multiaddrs: () => libp2p.getMultiaddrs().map((m) => m.toString()),
    connectedMembers() {
      const out = new Set<InstitutionIndex>();
      for (const c of libp2p.getConnections()) {
        const m = verified.byPeerId.get(c.remotePeer.toString())?.index;
        if (m !== undefined && c.status === 'open') out.add(m);
      }
      return [...out].sort((a, b) => a - b);
    },
    topicPeers: (topic) =>
      gossip
        .subscribers(topic)
        .map((p) => verified.byPeerId.get(p)?.index)
        .filter((m): m is number => m !== undefined)
        .sort((a, b) => a - b),
    refusedPeers: () => verified.refused,
    setPeers(peers, members) {
      live();
      if (members !== undefined) chain = members;
      applyPeers(peers);
      for (const c of libp2p.getConnections()) {
        const id = c.remotePeer.toString();
        if (!verified.byPeerId.has(id)) {
          channels.dropPeer(id);
          c.abort(new P2pError('UNKNOWN_PEER', 'peer removed from the peers list'));
        }
      }
      if (opts.dial !== false) redialer.setTargets(verified.byPeerId.values());
    },
    setIsolated(on) {
      live();
      isolated = on;
      if (!on) return;
      for (const c of libp2p.getConnections()) {
        c.abort(new P2pError('STREAM_CLOSED', 'isolated: every peer is cut off (fault test)'));
      }
    },
    async publish(topic, value) {
      live();
      return gossip.publish(topic, value);
    },
    sendDirect(to, kind, value) {
      live();
      return channels.sendDirect(peerOf(to), kind, value);
    },
    broadcastDirect(to, kind, value) {
      live();
      const body = DIRECT_CODECS[kind].encode(value);
      return to.map((m) => channels.enqueueEncoded(peerOf(m), kind, body));
    },
    async syncPage(to, fromHeight, ropts = {}) {
      live();
      const request: SyncRequest = {
        fromHeight,
        fromKeyblock: ropts.fromKeyblock ?? 0,
        maxItems: Math.min(ropts.maxItems ?? limits.maxSyncItems, limits.maxSyncItems),
        maxBytes: limits.maxSyncPageBytes - 16 * (limits.maxSyncItems + 2),
      };
      const peer = peerOf(to);
      const answer = await channels.request(peer, 'sync', encodeSyncRequest(request), ropts);
      try {
        return decodeSyncPage(answer, request);
      } catch (err) {
        ctx.penalise(peer, limits.violationPenalty, `sync: bad page: ${(err as Error).message}`);
        throw new P2pError(
          'PROTOCOL_VIOLATION',
          `member ${to} sent a bad sync page: ${(err as Error).message}`,
        );
      }
    },
    async requestRecord(to, request, ropts = {}) {
      live();
      return channels.request(peerOf(to), 'record', request, ropts);
    },
    misbehaviour(member) {
      const entry = verified.byIndex.get(member);
      return entry === undefined ? 0 : misbehaviour.total(entry.peerId);
    },
    isBanned(member) {
      const entry = verified.byIndex.get(member);
      return entry !== undefined && isBanned(entry.peerId);
    },
    stats() {
      const q = channels.queueStats();
      return {
        queuedMessages: q.messages,
        queuedBytes: q.bytes,
        droppedMessages: q.dropped + channels.lost,
        throttledStreams: channels.throttled,
        throttledGossip: gossip.throttled,
      };
    },
    async stop() {
      if (stopping.signal.aborted) return;
      stopping.abort(new P2pError('STOPPED', 'node stopped'));
      redialer.stop();
      channels.stop();
      await libp2p.stop();
    },
  };
  return node;
}
