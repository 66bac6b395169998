/**
 * One institution's SPChain node: the composition root of the ledger side, where the IO lives
 * (the clock, timers, LevelDB, libp2p, files). It wires together
 * - the pinned chain (chain.ts: the store, the replica and the keyblock tree, rebuilt from the
 *   store on start),
 * - keyblocks (keyblock-flow.ts: mining in competition on the tree's head, keyblocks in by gossip
 *   and out by gossip, the register-tx pool fed by submitRegister and the other members),
 * - two consensus drivers (consensus.ts, Tendermint over direct streams to the group): one pins
 *   keyblocks, one pins tx batches (pinning.ts), each with its own signing record (wal.ts);
 * - sync (sync.ts, sync-items.ts: pinned keyblocks and batches with certificates, in pinning
 *   order, served and fetched),
 * - the p2p edge (src/p2p: bundles and keyblocks by gossip, bundles and register txs by direct
 *   streams, BFT messages direct, sync),
 * - and, when configured, load (load.ts: the sidecar's stand-in signing record txs).
 * It reports what happens as NodeEvents (events.ts).
 *
 * Keyblock 1 comes with the genesis file (the patients registered at genesis). Later keyblocks are
 * mined by the institutions and pinned by the group; each pinned keyblock creates its patients'
 * blocks, pays its miner and counts in its reputation chunk, and batches anchor to the newest
 * one. When the pinned batch tip moves into a new chunk, reputations and the group are recomputed
 * (the `chunk` event); keyblocks.ts explains when each group is final.
 */
import { toHex } from '../crypto/bytes.ts';
import { type RandomBytes, systemRandom } from '../crypto/random.ts';
import { type BftMessage, makeSigner } from '../ledger/bft-messages.ts';
import { isLedgerError, type Verdict } from '../ledger/errors.ts';
import { evidenceCulprit } from '../ledger/evidence.ts';
import { headNode, pinnedNode } from '../ledger/keyblock-tree.ts';
import { pinnedReputations } from '../ledger/replica.ts';
import type { AdmitTx, Bundle, InstitutionIndex, Member, RegisterTx } from '../ledger/types.ts';
import {
  createP2pNode,
  type P2pEvent,
  type P2pNode,
  type PeerEntry,
  type RecordHandler,
} from '../p2p/index.ts';
import type { LedgerStore } from '../store/ledger-store.ts';
import { inboxDir, scanAdmissionInbox } from './admission-inbox.ts';
import { Chain, type KeyblockPin, type PinnedBatch } from './chain.ts';
import type { NodeConfig } from './config.ts';
import { Consensus, type ConsensusPorts } from './consensus.ts';
import { isNodeError, NodeError } from './errors.ts';
import { type NodeEvent, reputationEvent } from './events.ts';
import { Faults } from './faults.ts';
import { genesisFileDigest } from './genesis-file.ts';
import { KeyblockFlow } from './keyblock-flow.ts';
import { chunkOf, defaultRegisterPoolOpts } from './keyblocks.ts';
import { LoadRunner } from './load-runner.ts';
import { batchPinning, keyblockPinning } from './pinning.ts';
import { SerialQueue } from './serial.ts';
import { Syncer } from './sync.ts';
import { decodeSyncItem } from './sync-items.ts';
import { ConsensusWal } from './wal.ts';

export interface NodeOpts {
  readonly config: NodeConfig;
  /** Milliseconds since the epoch; default Date.now. */
  readonly now?: () => number;
  readonly random?: RandomBytes;
  readonly onEvent?: (event: NodeEvent) => void;
  /** Called once the node has stopped after a failure it cannot run past. */
  readonly onFatal?: (err: unknown) => void;
  /**
   * Answers other institutions' requests on the p2p 'record' service (the sidecar's sharing
   * holder, src/sidecar/share.ts); without it such requests are refused.
   */
  readonly record?: RecordHandler;
}

export interface NodeStats {
  readonly height: number;
  readonly round: number;
  readonly pinnedTxs: number;
  readonly mempoolBundles: number;
  readonly pendingOwn: number;
  readonly peers: readonly InstitutionIndex[];
  readonly queue: number;
  readonly keyblockHeight: number;
  readonly mined: number;
}

export interface SpchainNode {
  readonly index: InstitutionIndex;
  readonly peerId: string;
  /** The pinned batch tip. */
  tip(): { height: number; hash: string; keyblockHeight: number };
  /** The pinned batch hash at `height` (hex), if pinned. */
  batchHash(height: number): Promise<string | undefined>;
  /** The pinned keyblock and the head of the keyblock tree (fork choice). */
  keyblocks(): { pinned: { height: number; hash: string }; head: { height: number; hash: string } };
  /**
   * Takes a register tx of one of this institution's patients (from its sidecar): into the
   * register pool, then to the other members, for the next mined keyblock. Refused: another
   * institution's patient, a patient registered or waiting already, a bad signature or fee, a
   * full pool.
   */
  submitRegister(tx: RegisterTx): Verdict;
  /**
   * Takes an admit tx (a new member approved by more than 2/3 of the members; membership.ts) for
   * the keyblocks this institution mines, and sends it to the other members, whose miners may
   * carry it too. Refused when it is not valid against the pinned members, or is waiting already.
   */
  submitAdmit(tx: AdmitTx): Verdict;
  /**
   * The members as of the pinned keyblock: the genesis members, then those admitted since (one
   * admitted in the current reputation chunk takes part from the next).
   */
  members(): readonly Member[];
  /**
   * Takes a signed bundle (from this institution's sidecar): into the mempool, then to the network.
   * The verdict says whether the mempool took it; a refused bundle is not sent.
   */
  submitBundle(bundle: Bundle): Verdict;
  /** The pinned ledger, to read (the sidecar's patient blocks, tx locations); the node writes it. */
  readonly ledger: LedgerStore;
  /** Asks institution `to` over the p2p 'record' service (the sharing receiver's transport). */
  requestRecord(
    to: InstitutionIndex,
    request: Uint8Array,
    opts?: { timeoutMs?: number; signal?: AbortSignal },
  ): Promise<Uint8Array>;
  stats(): NodeStats;
  stop(): Promise<void>;
}

/** An error's message; an Event (libp2p aborts with one) by its type, not as `[object Event]`. */
function errorText(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (typeof Event !== 'undefined' && err instanceof Event) return `${err.type} event`;
  return String(err);
}

/** Own bundles held longer than this without being pinned are sent again, directly. */
const RESEND_MS = 2000;
/** How often the admission inbox is read. */
const ADMISSION_SCAN_MS = 2000;
const MAX_RESEND = 256;
const MAX_QUEUED_INPUTS = 1024;
/** Keyblocks with an unknown parent held at most. */
const MAX_ORPHANS = 64;

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
    const walOpts = { fsync: config.consensus.fsyncWal, maxValueBytes: 8 * 1024 * 1024 };
    const wal = await ConsensusWal.open(config.dataDir, walOpts, 'batch');
    const keyblockWal = await ConsensusWal.open(config.dataDir, walOpts, 'keyblock');
    const queue = new SerialQueue(MAX_QUEUED_INPUTS);
    /**
     * The peers list: the peers file, then the members admitted after genesis as the keyblocks
     * admitting them say (so a new member needs no edit of every peers file).
     */
    const currentPeers = (): PeerEntry[] => {
      const listed = new Map(config.peers.map((p) => [p.index, p]));
      const ids = new Set(config.peers.map((p) => p.peerId));
      for (const [index, peer] of chain.admittedPeers()) {
        // The peers file wins: a chain entry reusing a listed peer id is left out (listed twice,
        // verifyPeers would refuse both, cutting off the member already listed).
        if (listed.has(index) || ids.has(peer.peerId)) continue;
        listed.set(index, { index, ...peer });
        ids.add(peer.peerId);
      }
      return [...listed.values()];
    };
    /** Whom peers are verified against: the pinned members, and this one until it is pinned. */
    const currentMembers = () => {
      const { roster } = chain;
      const own = config.admission?.member;
      const members =
        own === undefined || roster.some((m) => m.index === own.index) ? roster : [...roster, own];
      return { chainId: genesis.chainId, members };
    };
    /** The other members this node sends to. */
    const known = new Set<InstitutionIndex>();
    const refreshKnown = () => {
      known.clear();
      for (const p of currentPeers()) if (p.index !== self) known.add(p.index);
    };
    refreshKnown();
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
      for (const m of new Set(p.batch.evidence.map(evidenceCulprit))) {
        emit(reputationEvent(chain.replica, m));
      }
      chunkCheck();
      keyblockConsensus.wake();
    };

    /** When the pinned batch tip enters a new chunk, the closed chunks' reputations are final. */
    let reportedChunk = chunkOf(chain.replica.chain.anchor, genesis.params.chunkSize);
    const chunkCheck = () => {
      const r = chain.replica;
      const completed = chunkOf(r.chain.anchor, genesis.params.chunkSize);
      if (completed <= reportedChunk) return;
      reportedChunk = completed;
      const reputations: Record<string, number> = {};
      for (const x of pinnedReputations(r)) reputations[x.index] = x.reputation;
      const group = chain.batchGroup().map((g) => g.member);
      emit({ event: 'chunk', completed, height: r.chain.height, reputations, group });
    };

    const pinnedKeyblock = (p: KeyblockPin, via: 'consensus' | 'sync') => {
      lastPinnedAt = now();
      emit({
        event: 'keyblock',
        height: p.keyblock.height,
        hash: toHex(p.hash),
        miner: p.keyblock.miner,
        registers: p.keyblock.registers.length,
        admitted: p.keyblock.admits.map((a) => a.member.index),
        round: p.certificate.round,
        via,
      });
      keyblocks.pinned(p.keyblock);
      if (p.keyblock.admits.length > 0) {
        refreshKnown();
        p2p?.setPeers(currentPeers(), currentMembers());
      }
      // A batch proposal anchored to this keyblock may be held for it.
      consensus.wake();
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
    let proposing = '';
    const sendBft = (to: readonly InstitutionIndex[], m: BftMessage) => {
      const own = m.type === 'proposal' && m.member === self && m.kind === 'batch';
      if (own && proposing !== `${m.height}/${m.round}`) {
        proposing = `${m.height}/${m.round}`;
        emit({ event: 'proposing', height: m.height, round: m.round });
      }
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
        emit(reputationEvent(chain.replica, m.institution));
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

    // Deliberate misbehaviour, for the fault tests only (config.ts refuses it otherwise).
    const faults =
      config.faults === null
        ? null
        : new Faults(config.faults, {
            self,
            chainId: genesis.chainId,
            keys: config.keys,
            others: [...known],
            random,
            replica: () => chain.replica,
            patients: () => chain.patientsOf(self),
            emit,
          });

    const driverPorts: Omit<ConsensusPorts, 'wal' | 'send' | 'ahead'> = {
      chainId: genesis.chainId,
      self,
      signer: makeSigner(self, config.keys.signingSecret),
      queue,
      now,
      evidence: (e, group) => {
        const u = chain.takeEvidence(e, group);
        for (const m of u.misbehaviour) {
          emit({ event: 'misbehaviour', member: m.institution, code: m.code });
          emit(reputationEvent(chain.replica, m.institution));
        }
      },
      fatal,
    };
    const consensus = new Consensus(
      {
        ...driverPorts,
        wal,
        send: faults?.wrapBftSend(sendBft) ?? sendBft,
        ahead: (height, from) => syncer.noteAhead('batch', height, from),
      },
      batchPinning(
        {
          self,
          replica: () => chain.replica,
          group: () => chain.batchGroup(),
          receiveBundles: (bundles) => {
            for (const b of bundles) take(b);
          },
          hasWork: () => chain.replica.mempool.eligible.size > 0,
          commit: async (value, certificate) => {
            const p = await chain.commit(value, certificate);
            if (p !== null) pinned(p, 'consensus');
          },
        },
        config.consensus,
      ),
      config.consensus,
    );

    const keyblocks: KeyblockFlow = new KeyblockFlow(
      {
        self,
        chainId: genesis.chainId,
        signingKey: config.keys.signingKey,
        signingSecret: config.keys.signingSecret,
        random,
        chain,
        now,
        publish: (kb) => {
          if (p2p === null || stopping !== null) return;
          p2p.publish('keyblocks', kb).catch((err) => {
            emit({ event: 'warn', code: 'PUBLISH_FAILED', message: errorText(err) });
          });
        },
        sendRegisters: (txs) =>
          sendTo([...known], (net, targets) => {
            for (const tx of txs) net.broadcastDirect(targets, 'register', tx);
          }),
        sendAdmits: (txs) =>
          sendTo([...known], (net, targets) => {
            for (const tx of txs) net.broadcastDirect(targets, 'admit', { from: self, tx });
          }),
        changed: () => keyblockConsensus.wake(),
        emit,
      },
      {
        mining: config.mining,
        registers: defaultRegisterPoolOpts,
        maxOrphans: MAX_ORPHANS,
        resendMs: RESEND_MS,
      },
    );
    const keyblockConsensus: Consensus = new Consensus(
      {
        ...driverPorts,
        wal: keyblockWal,
        send: sendBft,
        ahead: (height, from) => syncer.noteAhead('keyblock', height, from),
      },
      keyblockPinning({
        tree: () => chain.tree,
        group: () => chain.keyblockGroup(),
        ready: () => chain.keyblockReady(),
        received: (kb) => keyblocks.receive(kb),
        validate: (kb) => chain.checkNextKeyblock(kb, now()),
        commit: async (value, certificate) => {
          const p = await chain.commitKeyblock(value, certificate, now());
          if (p !== null) pinnedKeyblock(p, 'consensus');
        },
      }),
      config.consensus,
    );
    /** A BFT message goes to the driver of its kind. */
    const onBft = (m: BftMessage, from: InstitutionIndex) =>
      (m.kind === 'keyblock' ? keyblockConsensus : consensus).onMessage(m, from);

    const syncer = new Syncer(
      {
        now,
        position: () => ({
          batch: chain.replica.chain.height,
          keyblock: chain.replica.chain.keyblockHeight,
        }),
        lastPinnedAt: () => lastPinnedAt,
        connected: () => p2p?.connectedMembers() ?? [],
        fetch: (peer, from) => {
          if (p2p === null) throw new NodeError('STOPPED', 'not connected');
          return p2p.syncPage(peer, from.batch, { fromKeyblock: from.keyblock });
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
            const r = await chain.applyCertified(decoded, now());
            if (!r.verdict.ok) {
              const { code, message } = r.verdict.error;
              emit({
                event: 'warn',
                code: 'SYNC_REFUSED',
                message: `from ${peer}: ${code}: ${message}`,
              });
              return false;
            }
            if (r.keyblock !== null) pinnedKeyblock(r.keyblock, 'sync');
            if (r.batch !== null) pinned(r.batch, 'sync');
            return true;
          }),
        caughtUp: async () => {
          await consensus.catchUp();
          await keyblockConsensus.catchUp();
        },
        synced: (peer, from, to) =>
          emit({
            event: 'synced',
            peer,
            from: from.batch + 1,
            to: to.batch,
            keyblocksFrom: from.keyblock + 1,
            keyblocksTo: to.keyblock,
          }),
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
      chain: currentMembers(),
      self,
      peerKeySeed: config.keys.peerSeed,
      peers: currentPeers(),
      listen: config.listen,
      limits: config.p2p,
      now,
      onEvent: onP2pEvent,
      gossip: {
        bundles: (bundle) => receive(bundle),
        keyblocks: (kb) => keyblocks.receive(kb),
        bft: onBft,
      },
      direct: {
        bft: onBft,
        bundle: (bundle) => receive(bundle),
        register: (tx) => keyblocks.receiveRegister(tx),
        admit: (m) => keyblocks.receiveAdmit(m.tx),
      },
      sync: (request) => chain.readSyncPage(request),
      ...(opts.record === undefined ? {} : { record: opts.record }),
    });
    const net = p2p;
    closers.push(() => net.stop());
    if (faults !== null) {
      faults.attach(net);
      closers.push(() => faults.stop());
    }
    // Stopping runs these in reverse: in-flight inputs finish, new ones are refused, then the
    // network stops, then the store closes.
    closers.push(() => queue.close());
    closers.push(() => consensus.stop());
    closers.push(() => keyblockConsensus.stop());
    closers.push(() => keyblocks.stop());

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
    await keyblockConsensus.start();
    keyblocks.start();
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

    // Admission files the operator submitted (spchain member submit): held for the keyblocks mined
    // here and sent to the other members (keyblock-flow.ts submitAdmit).
    let scanning = false;
    const inbox = setInterval(() => {
      if (scanning || stopping !== null) return;
      scanning = true;
      void scanAdmissionInbox({
        dir: inboxDir(config.dataDir),
        chainId: genesis.chainId,
        members: () => chain.roster,
        submit: (tx) => keyblocks.submitAdmit(tx),
        report: (e) => emit({ event: 'admission', ...e }),
      }).finally(() => {
        scanning = false;
      });
    }, ADMISSION_SCAN_MS);
    closers.push(() => clearInterval(inbox));

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
            replica: () => chain.replica,
            submit: submitBundle,
            warn: (code, message) => emit({ event: 'warn', code, message }),
            now,
            report: emit,
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
      keyblockHeight: chain.replica.chain.keyblockHeight,
      mined: keyblocks.mined,
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
      ledger: chain.store,
      requestRecord: (to, request, ropts) => net.requestRecord(to, request, ropts),
      tip: () => {
        const c = chain.replica.chain;
        return { height: c.height, hash: toHex(c.hash), keyblockHeight: c.keyblockHeight };
      },
      batchHash: async (height) => {
        const h = await chain.batchHashAt(height);
        return h === undefined ? undefined : toHex(h);
      },
      keyblocks: () => {
        const tree = chain.tree;
        const at = (n: { height: number; id: string }) => ({ height: n.height, hash: n.id });
        return { pinned: at(pinnedNode(tree)), head: at(headNode(tree)) };
      },
      submitBundle,
      submitRegister: (tx) => {
        if (stopping !== null) throw new NodeError('STOPPED', 'node is stopping');
        return keyblocks.submitRegister(tx);
      },
      submitAdmit: (tx) => {
        if (stopping !== null) throw new NodeError('STOPPED', 'node is stopping');
        return keyblocks.submitAdmit(tx);
      },
      members: () => chain.roster,
      stats,
      stop,
    };
  }
}
