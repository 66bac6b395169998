/**
 * One institution's SPChain node: the composition root of the ledger side, where the IO lives
 * (the clock, timers, LevelDB, libp2p, files). It wires together
 * - the pinned chain (chain.ts: the store and the replica, rebuilt from the store on start),
 * - consensus on batch heights (consensus.ts: Tendermint over direct streams to the group),
 * - sync (sync.ts: pages of pinned batches with certificates, served and fetched),
 * - the p2p edge (src/p2p: bundles by gossip and direct streams, BFT messages direct, sync),
 * - and, when configured, load (load.ts: the sidecar's stand-in signing record txs).
 * It reports what happens as NodeEvents (events.ts).
 *
 * Keyblocks: keyblock 1 comes with the genesis file (its patients are registered at genesis); this
 * node does not mine or pin further keyblocks yet, so the consensus group (and reputation) stays
 * the genesis one.
 */
import { toHex } from '../crypto/bytes.ts';
import { type RandomBytes, systemRandom } from '../crypto/random.ts';
import { type BftMessage, makeSigner } from '../ledger/bft-messages.ts';
import { isLedgerError, type Verdict } from '../ledger/errors.ts';
import type { Bundle, InstitutionIndex } from '../ledger/types.ts';
import { createP2pNode, type P2pEvent, type P2pNode } from '../p2p/index.ts';
import { Chain, decodeSyncItem, type PinnedBatch } from './chain.ts';
import type { NodeConfig } from './config.ts';
import { Consensus } from './consensus.ts';
import { isNodeError, NodeError } from './errors.ts';
import type { NodeEvent } from './events.ts';
import { genesisFileDigest } from './genesis-file.ts';
import { LoadRunner } from './load-runner.ts';
import { SerialQueue } from './serial.ts';
import { Syncer } from './sync.ts';
import { ConsensusWal } from './wal.ts';

export interface NodeOpts {
  readonly config: NodeConfig;
  /** Milliseconds since the epoch; default Date.now. */
  readonly now?: () => number;
  readonly random?: RandomBytes;
  readonly onEvent?: (event: NodeEvent) => void;
  /** Called once the node has stopped after a failure it cannot run past. */
  readonly onFatal?: (err: unknown) => void;
}

export interface NodeStats {
  readonly height: number;
  readonly round: number;
  readonly pinnedTxs: number;
  readonly mempoolBundles: number;
  readonly pendingOwn: number;
  readonly peers: readonly InstitutionIndex[];
  readonly queue: number;
}

export interface SpchainNode {
  readonly index: InstitutionIndex;
  readonly peerId: string;
  /** The pinned batch tip. */
  tip(): { height: number; hash: string; keyblockHeight: number };
  /** The pinned batch hash at `height` (hex), if pinned. */
  batchHash(height: number): Promise<string | undefined>;
  /**
   * Takes a signed bundle (from this institution's sidecar): into the mempool, then to the network.
   * The verdict says whether the mempool took it; a refused bundle is not sent.
   */
  submitBundle(bundle: Bundle): Verdict;
  stats(): NodeStats;
  stop(): Promise<void>;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Own bundles held longer than this without being pinned are sent again, directly. */
const RESEND_MS = 2000;
const MAX_RESEND = 256;
const MAX_QUEUED_INPUTS = 1024;

export async function startNode(opts: NodeOpts): Promise<SpchainNode> {
  const { config } = opts;
  const now = opts.now ?? Date.now;
  const random = opts.random ?? systemRandom;
  const self = config.index;
  const { genesis } = config.genesisFile;
  const emit = (e: NodeEvent) => {
    try {
      opts.onEvent?.(e);
    } catch {
      // an observer's fault is not the node's
    }
  };

  const chain = await Chain.open({
    dataDir: config.dataDir,
    genesisFile: config.genesisFile,
    replica: config.replica,
    now: now(),
  });
  const closers: (() => Promise<void> | void)[] = [() => chain.close()];
  const closeAll = async () => {
    for (const c of closers.splice(0).reverse()) await Promise.resolve(c()).catch(() => {});
  };
  try {
    return await assemble();
  } catch (err) {
    await closeAll();
    throw err;
  }

  async function assemble(): Promise<SpchainNode> {
    const wal = await ConsensusWal.open(config.dataDir, {
      fsync: config.consensus.fsyncWal,
      maxValueBytes: 8 * 1024 * 1024,
    });
    const queue = new SerialQueue(MAX_QUEUED_INPUTS);
    const known = new Set(config.peers.map((p) => p.index).filter((i) => i !== self));
    let p2p: P2pNode | null = null;
    let stopping: Promise<void> | null = null;
    let pinnedTxs = 0;
    let lastPinnedAt = now();
    let fatalSeen = false;

    const fatal = (err: unknown) => {
      if (fatalSeen) return;
      fatalSeen = true;
      const code = isNodeError(err) || isLedgerError(err) ? err.code : 'INTERNAL';
      emit({ event: 'fatal', code, message: errorText(err) });
      void stop().finally(() => opts.onFatal?.(err));
    };

    const pinned = (p: PinnedBatch, via: 'consensus' | 'sync') => {
      const by: Record<string, number> = {};
      let txs = 0;
      for (const b of p.batch.bundles) {
        by[b.institution] = (by[b.institution] ?? 0) + b.txs.length;
        txs += b.txs.length;
      }
      pinnedTxs += txs;
      lastPinnedAt = now();
      emit({
        event: 'pinned',
        height: p.batch.height,
        hash: toHex(p.hash),
        round: p.certificate.round,
        proposer: p.batch.proposer,
        txs,
        bundles: p.batch.bundles.length,
        by,
        via,
      });
    };

    /** Sends to those of `to` that are in the peers list; a full queue drops (the BFT re-sends). */
    const sendTo = (
      to: readonly InstitutionIndex[],
      f: (net: P2pNode, targets: number[]) => void,
    ) => {
      const targets = to.filter((m) => known.has(m));
      if (p2p === null || targets.length === 0 || stopping !== null) return;
      try {
        f(p2p, targets);
      } catch (err) {
        emit({ event: 'warn', code: 'SEND_FAILED', message: errorText(err) });
      }
    };
    /**
     * Our own messages go over direct streams to the group. The BFT also re-sends others'
     * prevotes (the polka behind its valid value, bft.ts `resend`): a direct stream carries only
     * its sender's own messages (the p2p edge treats anything else as impersonation), so those
     * are relayed by gossip, whose envelope names no author.
     */
    const sendBft = (to: readonly InstitutionIndex[], m: BftMessage) => {
      if (m.member === self) {
        sendTo(to, (net, targets) => net.broadcastDirect(targets, 'bft', m));
      } else if (p2p !== null && stopping === null) {
        p2p.publish('bft', m).catch((err) => {
          emit({ event: 'warn', code: 'PUBLISH_FAILED', message: errorText(err) });
        });
      }
    };
    const sendBundle = (to: readonly InstitutionIndex[], b: Bundle) =>
      sendTo(to, (net, targets) => net.broadcastDirect(targets, 'bundle', b));

    /** Every bundle enters here: the mempool's verdict, and the misbehaviour it proved. */
    const take = (bundle: Bundle): Verdict => {
      const u = chain.receiveBundle(bundle, now());
      for (const m of u.misbehaviour) {
        emit({ event: 'misbehaviour', member: m.institution, code: m.code });
      }
      return u.verdict;
    };
    /** A bundle from a peer: a full mempool is our state, not the sender's fault. */
    const receive = (bundle: Bundle): Verdict => {
      const verdict = take(bundle);
      if (!verdict.ok && verdict.error.code === 'TOO_LARGE' && 'held' in verdict.error.detail) {
        // Thrown, not returned: the p2p edge ignores it rather than penalising the peer.
        throw new NodeError('BUSY', verdict.error.message);
      }
      return verdict;
    };

    const consensus = new Consensus(
      {
        chainId: genesis.chainId,
        self,
        signer: makeSigner(self, config.keys.signingSecret),
        wal,
        queue,
        now,
        replica: () => chain.replica,
        receiveBundles: (bundles) => {
          for (const b of bundles) take(b);
        },
        hasWork: () => chain.replica.mempool.eligible.size > 0,
        send: sendBft,
        commit: async (value, certificate) => {
          const p = await chain.commit(value, certificate);
          if (p !== null) pinned(p, 'consensus');
        },
        evidence: (e, group) => {
          const u = chain.takeEvidence(e, group);
          for (const m of u.misbehaviour) {
            emit({ event: 'misbehaviour', member: m.institution, code: m.code });
          }
        },
        ahead: (height, from) => syncer.noteAhead(height, from),
        fatal,
      },
      config.consensus,
    );

    const syncer = new Syncer(
      {
        now,
        height: () => chain.replica.chain.height,
        lastPinnedAt: () => lastPinnedAt,
        connected: () => p2p?.connectedMembers() ?? [],
        fetch: (peer, from) => {
          if (p2p === null) throw new NodeError('STOPPED', 'not connected');
          return p2p.syncPage(peer, from);
        },
        apply: (item, peer) =>
          queue.run(async () => {
            let decoded: ReturnType<typeof decodeSyncItem>;
            try {
              decoded = decodeSyncItem(item, 16 * 1024 * 1024);
            } catch (err) {
              emit({
                event: 'warn',
                code: 'SYNC_REFUSED',
                message: `from ${peer}: ${errorText(err)}`,
              });
              return false;
            }
            const r = await chain.applyCertified(decoded.batch, decoded.certificate);
            if (!r.verdict.ok) {
              const { code, message } = r.verdict.error;
              emit({
                event: 'warn',
                code: 'SYNC_REFUSED',
                message: `from ${peer}: ${code}: ${message}`,
              });
              return false;
            }
            if (r.pinned !== null) pinned(r.pinned, 'sync');
            return true;
          }),
        caughtUp: () => consensus.catchUp(),
        synced: (peer, from, to) => emit({ event: 'synced', peer, from, to }),
        failed: (peer, err) => {
          if (isNodeError(err, 'FORK')) return fatal(err);
          if (stopping === null) {
            emit({
              event: 'warn',
              code: 'SYNC_FAILED',
              message: `from ${peer}: ${errorText(err)}`,
            });
          }
        },
      },
      config.sync,
    );

    const onP2pEvent = (e: P2pEvent) => {
      if (e.type === 'connected' || e.type === 'disconnected') {
        emit({ event: 'peers', connected: p2p?.connectedMembers() ?? [] });
        if (e.type === 'connected') syncer.onConnected(e.member);
      } else if (e.type === 'banned' || e.type === 'refused-peer' || e.type === 'penalised') {
        emit({
          event: 'warn',
          code: e.type.toUpperCase().replace('-', '_'),
          message: JSON.stringify(e),
        });
      }
    };

    p2p = await createP2pNode({
      chain: genesis,
      self,
      peerKeySeed: config.keys.peerSeed,
      peers: config.peers,
      listen: config.listen,
      limits: config.p2p,
      now,
      onEvent: onP2pEvent,
      gossip: {
        bundles: (bundle) => receive(bundle),
        bft: (m, from) => consensus.onMessage(m, from),
      },
      direct: {
        bft: (m, from) => consensus.onMessage(m, from),
        bundle: (bundle) => receive(bundle),
      },
      sync: (request) => chain.readSyncPage(request),
    });
    const net = p2p;
    closers.push(() => net.stop());
    // Stopping runs these in reverse: in-flight inputs finish, new ones are refused, then the
    // network stops, then the store closes.
    closers.push(() => queue.close());
    closers.push(() => consensus.stop());

    const submitBundle = (bundle: Bundle): Verdict => {
      if (stopping !== null) throw new NodeError('STOPPED', 'node is stopping');
      const verdict = take(bundle);
      if (verdict.ok) {
        net.publish('bundles', bundle).catch((err) => {
          emit({ event: 'warn', code: 'PUBLISH_FAILED', message: errorText(err) });
        });
      }
      return verdict;
    };

    const tip = chain.replica.chain;
    emit({
      event: 'started',
      index: self,
      peerId: net.peerId,
      height: tip.height,
      hash: toHex(tip.hash),
      keyblockHeight: tip.keyblockHeight,
      patients: chain.patientsOf(self).length,
      genesis: genesisFileDigest(config.genesisFile),
    });

    await consensus.start();
    syncer.start();
    closers.push(() => syncer.stop());

    // Own bundles that wait in our mempool unpinned are sent again to every peer, directly
    // (gossip drops a repeat of the same bytes).
    const resend = setInterval(() => {
      const t = now();
      const own = chain.replica.mempool.queues.get(self) ?? [];
      const others = [...known];
      let n = 0;
      for (const e of own) {
        if (n >= MAX_RESEND) break;
        if (t - e.arrivedAt < RESEND_MS) continue;
        sendBundle(others, e.bundle);
        n++;
      }
    }, RESEND_MS);
    closers.push(() => clearInterval(resend));

    const load =
      config.load === null
        ? null
        : await LoadRunner.start({
            dir: config.dataDir,
            keys: config.keys,
            chainId: genesis.chainId,
            patients: chain.patientsOf(self),
            fee: genesis.params.minFee,
            opts: config.load,
            random,
            replica: () => chain.replica,
            submit: submitBundle,
            warn: (code, message) => emit({ event: 'warn', code, message }),
          });
    if (load !== null) closers.push(() => load.stop());

    let lastTxs = 0;
    let lastAt = now();
    const stats = (): NodeStats => ({
      height: chain.replica.chain.height,
      round: consensus.position().round,
      pinnedTxs,
      mempoolBundles: chain.replica.mempool.size,
      pendingOwn: load?.pending() ?? 0,
      peers: net.connectedMembers(),
      queue: queue.size,
    });
    const statsTimer = setInterval(() => {
      const t = now();
      const s = stats();
      const tps = ((pinnedTxs - lastTxs) * 1000) / Math.max(1, t - lastAt);
      lastTxs = pinnedTxs;
      lastAt = t;
      emit({ event: 'stats', ...s, tps: Math.round(tps * 10) / 10 });
    }, config.statsIntervalMs);
    closers.push(() => clearInterval(statsTimer));

    async function stop(): Promise<void> {
      if (stopping !== null) return stopping;
      stopping = (async () => {
        await closeAll();
        emit({ event: 'stopped', height: chain.replica.chain.height });
      })();
      return stopping;
    }

    return {
      index: self,
      peerId: net.peerId,
      tip: () => {
        const c = chain.replica.chain;
        return { height: c.height, hash: toHex(c.hash), keyblockHeight: c.keyblockHeight };
      },
      batchHash: async (height) => {
        const h = await chain.batchHashAt(height);
        return h === undefined ? undefined : toHex(h);
      },
      submitBundle,
      stats,
      stop,
    };
  }
}
