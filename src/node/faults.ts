/**
 * Fault injection for the network fault tests (test/node/faults.test.ts): a node that misbehaves on
 * purpose, in a real process, against honest ones. Enabled only by a `faults` section in the node's
 * config, which config.ts refuses unless the environment sets SPCHAIN_TEST_FAULTS=1, so a
 * production config cannot turn it on by accident.
 *
 *   "faults": {
 *     "partitionSignal": true,   SIGUSR2 toggles a partition: every connection is dropped and every
 *                                peer refused (p2p setIsolated), then restored on the next SIGUSR2
 *     "equivocate": true,        each own batch prevote and precommit is followed by a second,
 *                                conflicting one for the same height and round, also signed
 *     "forgeProposals": true,    own batch proposals carry a forged bundle (re-signed proposal)
 *     "forgeBundles": 9,         this many forged bundles are gossiped, one every forgeBundleMs, in
 *     "forgeBundleMs": 500,      turn: one signed by this institution carrying another's tx, one of
 *                                its own record txs with a wrong chameleon opening, and a new record
 *                                of its own in another member's name, signed with its own key (a bad
 *                                signature). Bounded, so that a test decides how many penalty points
 *                                the honest peers give it (20 get it banned, src/p2p/context.ts)
 *     "replayMs": 1000 }         this often, old messages are sent again: this node's own BFT
 *                                messages of decided heights (directly) and others' bundles that
 *                                are pinned (by gossip); 0: never
 *
 * Each act is reported as a `fault` event, so a test can check that it happened. The forgeries are
 * built with the institution's own keys and the ledger's own functions: what an institution that
 * turned bad could send. Nothing here changes what the node pins or how it judges others.
 */
import { toHex } from '../crypto/bytes.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { makeRecordTx } from '../ledger/author.ts';
import { decodeBatch, encodeBatch } from '../ledger/batch.ts';
import { type BftMessage, makeSigner, type Signer, signMessage } from '../ledger/bft-messages.ts';
import { batchValueHash, type Replica } from '../ledger/replica.ts';
import { signBundle, txHash } from '../ledger/tx.ts';
import type { BlockRef, Bundle, InstitutionIndex, Proposal, Vote } from '../ledger/types.ts';
import type { P2pNode } from '../p2p/index.ts';
import type { FieldReader } from './fields.ts';
import type { InstitutionKeys } from './keys.ts';

export interface FaultOpts {
  readonly partitionSignal: boolean;
  readonly equivocate: boolean;
  readonly forgeProposals: boolean;
  readonly forgeBundles: number;
  readonly forgeBundleMs: number;
  readonly replayMs: number;
}

export const noFaults: FaultOpts = {
  partitionSignal: false,
  equivocate: false,
  forgeProposals: false,
  forgeBundles: 0,
  forgeBundleMs: 500,
  replayMs: 0,
};

export const FAULTS_ENV = 'SPCHAIN_TEST_FAULTS';

/** The forged bundles, in the order they are sent. */
export const FORGED_KINDS = ['foreign-tx', 'bad-opening', 'bad-signature'] as const;
export type ForgedKind = (typeof FORGED_KINDS)[number];

export type FaultEvent =
  | { readonly event: 'fault'; readonly fault: 'partition'; readonly on: boolean }
  | {
      readonly event: 'fault';
      readonly fault: 'equivocation';
      readonly height: number;
      readonly round: number;
      readonly vote: Vote['type'];
    }
  | {
      readonly event: 'fault';
      readonly fault: 'forged-proposal';
      readonly height: number;
      readonly round: number;
      readonly kind: ForgedKind;
      /** The forged bundle's signature (hex): a test checks that no pinned bundle carries it. */
      readonly signature: string;
    }
  | {
      readonly event: 'fault';
      readonly fault: 'forged-bundle';
      readonly kind: ForgedKind;
      /** The institution the bundle claims to be from. */
      readonly institution: InstitutionIndex;
      /** Its signature (hex): a test checks that no pinned bundle carries it. */
      readonly signature: string;
    }
  | {
      readonly event: 'fault';
      readonly fault: 'replay';
      readonly messages: number;
      readonly bundles: number;
    };

/**
 * The `faults` config section: null when absent; refused (BAD_CONFIG, naming the variable) unless
 * `env` sets SPCHAIN_TEST_FAULTS=1.
 */
export function readFaultOpts(
  f: FieldReader,
  value: unknown,
  env: Readonly<Record<string, string | undefined>>,
): FaultOpts | null {
  if (value === undefined) return null;
  if (env[FAULTS_ENV] !== '1') {
    f.fail('faults', `is for fault tests only, and is refused unless ${FAULTS_ENV}=1 is set`);
  }
  const o = f.object(value, 'faults', [], Object.keys(noFaults));
  const flag = (k: 'partitionSignal' | 'equivocate' | 'forgeProposals') =>
    o[k] === undefined ? noFaults[k] : f.bool(o[k], `faults.${k}`);
  const int = (k: 'forgeBundles' | 'forgeBundleMs' | 'replayMs', min: number) =>
    o[k] === undefined ? noFaults[k] : f.int(o[k], `faults.${k}`, min, 3_600_000);
  return {
    partitionSignal: flag('partitionSignal'),
    equivocate: flag('equivocate'),
    forgeProposals: flag('forgeProposals'),
    forgeBundles: int('forgeBundles', 0),
    forgeBundleMs: int('forgeBundleMs', 10),
    replayMs: int('replayMs', 0),
  };
}

/** What the faults need of the node. */
export interface FaultPorts {
  readonly self: InstitutionIndex;
  readonly chainId: string;
  readonly keys: InstitutionKeys;
  /** The other members this node talks to. */
  readonly others: readonly InstitutionIndex[];
  readonly random: RandomBytes;
  replica(): Replica;
  /** This institution's patients (its own leaves). */
  patients(): readonly BlockRef[];
  emit(e: FaultEvent): void;
}

export type FaultNet = Pick<P2pNode, 'setIsolated' | 'publish' | 'broadcastDirect' | 'topicPeers'>;
export type BftSend = (to: readonly InstitutionIndex[], m: BftMessage) => void;

/** Own messages and others' bundles kept for replay, at most this many of each. */
const KEEP = 64;
/** Most messages (and bundles) sent again per replay tick. */
const REPLAY_BATCH = 8;

export class Faults {
  private readonly opts: FaultOpts;
  private readonly ports: FaultPorts;
  private readonly signer: Signer;
  private net: FaultNet | null = null;
  private partitioned = false;
  /** The conflicting twin of each own vote, and the forged stand-in of each own proposal. */
  private readonly forged = new Map<string, BftMessage>();
  private readonly sent: BftMessage[] = [];
  private readonly sentKeys = new Set<string>();
  private readonly seen = new Map<string, Bundle>();
  private readonly timers: ReturnType<typeof setInterval>[] = [];
  private turn = 0;
  private forgedBundles = 0;
  private readonly onSignal = () => this.togglePartition();

  constructor(opts: FaultOpts, ports: FaultPorts) {
    this.opts = opts;
    this.ports = ports;
    this.signer = makeSigner(ports.self, ports.keys.signingSecret, ports.random);
  }

  /** The BFT send port with this node's own batch messages equivocated, forged and kept for replay. */
  wrapBftSend(send: BftSend): BftSend {
    return (to, m) => {
      if (m.member !== this.ports.self || m.kind !== 'batch') return send(to, m);
      this.keep(m);
      if (m.type === 'proposal') {
        const forged = this.opts.forgeProposals ? this.forgedProposal(m) : null;
        send(to, forged ?? m);
        return;
      }
      send(to, m);
      if (this.opts.equivocate) send(to, this.twin(m));
    };
  }

  /** Starts the timed faults on the network edge. */
  attach(net: FaultNet): void {
    this.net = net;
    if (this.opts.partitionSignal) process.on('SIGUSR2', this.onSignal);
    if (this.opts.forgeBundles > 0) {
      this.timers.push(
        setInterval(() => this.guard(() => this.forgeTick()), this.opts.forgeBundleMs),
      );
    }
    if (this.opts.replayMs > 0) {
      this.timers.push(setInterval(() => this.guard(() => this.replayTick()), this.opts.replayMs));
    }
  }

  stop(): void {
    process.removeListener('SIGUSR2', this.onSignal);
    for (const t of this.timers.splice(0)) clearInterval(t);
    this.net = null;
  }

  togglePartition(): void {
    const net = this.net;
    if (net === null) return;
    this.partitioned = !this.partitioned;
    this.guard(() => net.setIsolated(this.partitioned));
    this.ports.emit({ event: 'fault', fault: 'partition', on: this.partitioned });
  }

  /** A fault that fails (the node is stopping, a peer is gone) is no concern of the node's. */
  private guard(f: () => unknown): void {
    try {
      const r = f();
      if (r instanceof Promise) r.catch(() => {});
    } catch {
      // see above
    }
  }

  private keep(m: BftMessage): void {
    const key = `${m.type}/${m.height}/${m.round}`;
    if (this.sentKeys.has(key)) return;
    this.sentKeys.add(key);
    this.sent.push(m);
    if (this.sent.length > KEEP) {
      const old = this.sent.shift()!;
      this.sentKeys.delete(`${old.type}/${old.height}/${old.round}`);
    }
    for (const [k, f] of this.forged) if (f.height < m.height - 1) this.forged.delete(k);
  }

  /** A second vote of the same type, height and round for another value (nil <-> a random id). */
  private twin(m: Vote): Vote {
    const key = `${m.type}/${m.height}/${m.round}`;
    const cached = this.forged.get(key);
    if (cached !== undefined && cached.type !== 'proposal') return cached;
    const value = m.value === null ? this.ports.random(32) : null;
    const body = { type: m.type, kind: m.kind, height: m.height, round: m.round, value };
    const twin = signMessage(this.ports.chainId, body, this.signer);
    this.forged.set(key, twin);
    const { height, round } = m;
    this.ports.emit({ event: 'fault', fault: 'equivocation', height, round, vote: m.type });
    return twin;
  }

  /** The proposal with a forged bundle added to its batch, signed again; null if none can be made. */
  private forgedProposal(m: Proposal): Proposal | null {
    const key = `proposal/${m.height}/${m.round}`;
    const cached = this.forged.get(key);
    if (cached !== undefined && cached.type === 'proposal') return cached;
    const kind: ForgedKind = this.turn % 2 === 0 ? 'bad-opening' : 'foreign-tx';
    this.turn++;
    const bundle = this.forgeBundle(kind) ?? this.forgeBundle('bad-opening');
    if (bundle === null) return null;
    const batch = decodeBatch(m.value);
    const value = encodeBatch({ ...batch, bundles: [...batch.bundles, bundle] });
    const body = {
      type: 'proposal' as const,
      kind: m.kind,
      height: m.height,
      round: m.round,
      validRound: m.validRound,
      value,
    };
    const forged = signMessage(this.ports.chainId, body, this.signer, batchValueHash);
    this.forged.set(key, forged);
    const { height, round } = m;
    const signature = toHex(bundle.signature);
    this.ports.emit({ event: 'fault', fault: 'forged-proposal', height, round, kind, signature });
    return forged;
  }

  /** Another institution's bundle from the mempool (its txs not pinned), or null. */
  private foreignBundle(): Bundle | null {
    const replica = this.ports.replica();
    for (const [i, list] of replica.mempool.eligible) {
      if (i === this.ports.self) continue;
      const e = list[this.turn % list.length];
      if (e !== undefined) return e.bundle;
    }
    return null;
  }

  /** A forged bundle of the given kind, or null when there is nothing to forge it from. */
  forgeBundle(kind: ForgedKind): Bundle | null {
    const { chainId, self, keys, random } = this.ports;
    const replica = this.ports.replica();
    if (kind === 'foreign-tx') {
      const tx = this.foreignBundle()?.txs.find((t) => t.type !== 'leaf');
      return tx === undefined ? null : signBundle(chainId, self, [tx], keys.signingSecret, random);
    }
    // The next record of one of our own patients: nobody holds it yet, so it is judged in full.
    const patients = this.ports.patients();
    const ref = patients[this.turn % Math.max(1, patients.length)];
    const block = ref === undefined ? undefined : replica.chain.ledger.microblocks.get(ref);
    if (block === undefined || !block.leaves.some((l) => l.institution === self)) return null;
    const fee = replica.chain.genesis.params.minFee;
    const make = () =>
      makeRecordTx(block, keys, { type: 'medical', pointer: random(32) }, fee, random);
    if (kind === 'bad-signature') {
      const other = this.ports.others[this.turn % Math.max(1, this.ports.others.length)];
      if (other === undefined) return null;
      return signBundle(chainId, other, [make()], keys.signingSecret, random);
    }
    // bad-opening: with the opening of another record.
    const tx = { ...make(), opening: make().opening };
    return signBundle(chainId, self, [tx], keys.signingSecret, random);
  }

  private forgeTick(): void {
    const net = this.net;
    if (net === null || this.partitioned || this.forgedBundles >= this.opts.forgeBundles) return;
    // Not before every peer hears the topic from us: each forgery is meant to reach them all.
    if (net.topicPeers('bundles').length < this.ports.others.length) return;
    const kind = FORGED_KINDS[this.forgedBundles % FORGED_KINDS.length]!;
    const bundle = this.forgeBundle(kind);
    if (bundle === null) return;
    this.forgedBundles++;
    const { institution } = bundle;
    const signature = toHex(bundle.signature);
    this.ports.emit({ event: 'fault', fault: 'forged-bundle', kind, institution, signature });
    this.guard(() => net.publish('bundles', bundle));
  }

  private replayTick(): void {
    const net = this.net;
    if (net === null || this.partitioned) return;
    const replica = this.ports.replica();
    for (const [i, list] of replica.mempool.queues) {
      if (i === this.ports.self) continue;
      for (const e of list) {
        if (this.seen.has(e.id)) continue;
        if (this.seen.size >= KEEP) this.seen.delete(this.seen.keys().next().value!);
        this.seen.set(e.id, e.bundle);
      }
    }
    const old = this.sent.filter((m) => m.height <= replica.chain.height);
    const decided = old.slice(-REPLAY_BATCH);
    for (const m of decided) this.guard(() => net.broadcastDirect(this.ports.others, 'bft', m));
    let bundles = 0;
    for (const [id, b] of this.seen) {
      if (bundles >= REPLAY_BATCH) break;
      if (!b.txs.every((tx) => replica.chain.ledger.isPinnedTx(toHex(txHash(tx))))) continue;
      this.seen.delete(id);
      this.guard(() => net.publish('bundles', b));
      bundles++;
    }
    if (decided.length + bundles > 0) {
      this.ports.emit({ event: 'fault', fault: 'replay', messages: decided.length, bundles });
    }
  }
}
