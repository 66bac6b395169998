/**
 * A deterministic network of institutions running the batch ledger (src/ledger/replica.ts) under
 * Tendermint (src/ledger/bft.ts), in process: one seeded PRNG, a virtual clock and an event queue
 * ordered by (time, sequence), as in bft-network.ts.
 *
 * Every institution registers patients at setup (one pinned keyblock holding every register tx,
 * identical in every replica); during the run its sidecar authors real record txs (chameleon
 * openings made with its trapdoor), signs them into bundles and gossips them, re-sending its
 * unpinned bundles periodically. Batch heights 1, 2, 3, ... are decided one after the other (the
 * next starts batchIntervalMs after a decision). Before GST messages are lost, dropped across a
 * partition, and delayed at random (so reordered); decided heights reach laggards as `commit`
 * inputs (sync). Honest replicas gossip the misbehaviour they prove (equivocation evidence, forged
 * bundles) and re-send it with their bundles; proposers pin the evidence they hold in their batches.
 *
 * Keyblocks: every keyblockIntervalMs a new (empty) keyblock is pinned at every replica at the same
 * virtual instant, standing in for the keyblock chain. The chunk is one keyblock, so each keyblock
 * is a reputation chunk boundary: pinned evidence takes its culprit out of the consensus group (as
 * the replicas compute it) at the next one. The BFT instance of the run keeps the group it started
 * with (moving a running consensus to a new chunk's group is the node's job, not modelled here).
 * Keyblocks carry no reward in the sim, so the supply grows by the batch rewards alone.
 *
 * Byzantine behaviours: 'equivocate' (conflicting votes), 'forge' (bundles with a bad chameleon
 * opening, bundles carrying another institution's tx, bundles claiming to be another's, and
 * proposals carrying a forged bundle), 'withhold' (proposes nothing), 'selfish' (proposes only its
 * own bundles), 'replay' (re-sends old messages and bundles). Every institution, faulty or not,
 * also authors valid bundles for its own patients.
 */

import { toHex } from '../../../src/crypto/bytes.ts';
import { deterministicRandom, type RandomBytes } from '../../../src/crypto/random.ts';
import { makeLeafTx, makeRecordTx, makeRegisterTx } from '../../../src/ledger/author.ts';
import { decodeBatch, encodeBatch } from '../../../src/ledger/batch.ts';
import { step } from '../../../src/ledger/bft.ts';
import {
  type BftMessage,
  type Equivocation,
  makeSigner,
  type Signer,
  signMessage,
  valueHash,
  verifyMessage,
} from '../../../src/ledger/bft-messages.ts';
import {
  type BftContext,
  type BftEffect,
  type BftInput,
  type BftOpts,
  type BftState,
  initialBftState,
} from '../../../src/ledger/bft-state.ts';
import type { ConsensusGroup } from '../../../src/ledger/certificate.ts';
import { OK } from '../../../src/ledger/errors.ts';
import { type Accounts, applyKeyblockRewards, genesisAccounts } from '../../../src/ledger/fees.ts';
import {
  createMicroblock,
  initialRunning,
  type Microblock,
  nextRunning,
} from '../../../src/ledger/microblock.ts';
import {
  applyDecision,
  applyEvidence,
  batchValueHash,
  completedChunks,
  consensusGroupOf,
  createReplica,
  type Misbehaviour,
  pinKeyblock,
  proposeBatch,
  type Replica,
  type ReplicaUpdate,
  receiveBundle,
  validateCertified,
  validateProposal,
} from '../../../src/ledger/replica.ts';
import { type LedgerView, memoryLedgerView } from '../../../src/ledger/replica-view.ts';
import { signBundle, txHash } from '../../../src/ledger/tx.ts';
import type {
  BatchTx,
  BlockRef,
  Bundle,
  Bytes,
  Certificate,
  Genesis,
  MedicalTx,
  RegisterTx,
} from '../../../src/ledger/types.ts';
import { makeNetwork, makePatient, type TestInstitution } from '../../helpers/ledger-fixtures.ts';
import { prng, simBftOpts } from './bft-network.ts';
import { EventQueue } from './event-queue.ts';

export type LedgerBehaviour = 'honest' | 'equivocate' | 'forge' | 'withhold' | 'selfish' | 'replay';
export const LEDGER_BYZANTINE: readonly LedgerBehaviour[] = [
  'equivocate',
  'forge',
  'withhold',
  'selfish',
  'replay',
];

export interface LedgerSimConfig {
  readonly seed: number;
  /** One per institution (4 to 10). */
  readonly behaviours: readonly LedgerBehaviour[];
  /** Keyblocks each institution mined in the completed chunk: sets its initial R (default all 1). */
  readonly keyblocks?: readonly number[];
  readonly gstMs: number;
  readonly lossBeforeGst: number;
  readonly minDelayMs: number;
  readonly maxDelayMs: number;
  /** Before GST, messages between different parts are dropped. */
  readonly partition?: readonly (readonly number[])[];
  /** Each sidecar signs a bundle this often, until productionEndMs. */
  readonly bundleIntervalMs: number;
  readonly productionEndMs: number;
  /** Pause between a decision and the next height (Tendermint's timeout_commit). */
  readonly batchIntervalMs: number;
  /** Sidecars re-send their unpinned bundles (and honest replicas their proofs) this often. */
  readonly regossipMs: number;
  /** A keyblock (a chunk boundary) is pinned everywhere this often (default 1000 ms). */
  readonly keyblockIntervalMs?: number;
  readonly maxTimeMs: number;
  readonly opts?: Partial<BftOpts>;
}

export interface LedgerDecision {
  readonly value: Bytes;
  readonly certificate: Certificate;
  readonly at: number;
  readonly proposer: number;
}

export interface ProducedBundle {
  readonly institution: number;
  readonly txIds: readonly string[];
  readonly at: number;
}

export interface LedgerSimResult {
  readonly config: LedgerSimConfig;
  readonly genesis: Genesis;
  readonly group: ConsensusGroup;
  readonly honest: readonly number[];
  /** The replica every institution starts from. */
  readonly initial: Replica;
  /** Each institution's replica at the end. */
  readonly replicas: readonly Replica[];
  /** institution -> height -> decision. */
  readonly decisions: ReadonlyMap<number, ReadonlyMap<number, LedgerDecision>>;
  /** Valid bundles authored by the sidecars, in order. */
  readonly produced: readonly ProducedBundle[];
  /** institution -> tx id -> virtual time its replica pinned it (authored txs only). */
  readonly pinnedAt: ReadonlyMap<number, ReadonlyMap<string, number>>;
  /** Hashes of every forged tx that was sent. */
  readonly forgedTxIds: readonly string[];
  /** Every patient block. */
  readonly refs: readonly BlockRef[];
  /**
   * Whether, before maxTimeMs, every honest bundle was pinned everywhere, honest tips agree, and
   * every misbehaviour an honest replica proved is pinned with a chunk boundary passed since.
   */
  readonly finished: boolean;
  readonly endTime: number;
}

// ---------------------------------------------------------------------------------------------
// Setup: keys, patients and the pinned keyblock 1, shared by every run of one size.

const PATIENTS_PER_INSTITUTION = 3;
/** Patients 0 and 1 get records; patient 2 stays at seq 0 (a forger's bad opening targets it). */
const WRITTEN_PATIENTS = 2;
const CREDIT = 1_000_000;

export interface SimPatient {
  readonly block: Microblock;
  readonly signingSecret: Bytes;
}

/** Keys, patients and pinned keyblock 1 of an n-institution network (shared by its runs). */
export interface SimNetwork {
  readonly genesis: Genesis;
  readonly institutions: readonly TestInstitution[];
  /** institution -> its patients. */
  readonly patients: readonly (readonly SimPatient[])[];
  readonly registers: readonly RegisterTx[];
  readonly ledger: LedgerView;
  readonly accounts: Accounts;
}

const setups = new Map<number, SimNetwork>();

/** Batch capacity: binds while a backlog from before GST drains, not in the steady state. */
export function simCapacity(n: number): number {
  return 3 * n + 2;
}

export function simNetwork(n: number): SimNetwork {
  const cached = setups.get(n);
  if (cached !== undefined) return cached;
  const { genesis, institutions, random } = makeNetwork(n, `ledger-sim-${n}`, {
    groupSize: n,
    chunkSize: 1,
    maxBatchTxs: simCapacity(n),
    keyblockReward: 0,
  });
  const members = (i: number) => genesis.members[i];
  const registers: RegisterTx[] = [];
  const patients = institutions.map((home) =>
    Array.from({ length: PATIENTS_PER_INSTITUTION }, (): SimPatient => {
      const keys = makePatient(random);
      const tx = makeRegisterTx({
        chainId: genesis.chainId,
        idHash: random(32),
        home,
        patient: keys,
        fee: 1,
        random,
      });
      const made = createMicroblock(tx, { i: 1, j: registers.length }, members);
      if (!made.ok) throw new Error('setup: register tx rejected');
      registers.push(tx);
      return { block: made.block, signingSecret: keys.signingSecret };
    }),
  );
  const indices = institutions.map((x) => x.index);
  const credits = new Map(indices.map((i) => [i, CREDIT]));
  const accounts = applyKeyblockRewards(
    genesisAccounts(indices, credits),
    { miner: 0, registers },
    genesis.params,
  );
  const ledger = memoryLedgerView(patients.flat().map((p) => p.block));
  const setup = { genesis, institutions, patients, registers, ledger, accounts };
  setups.set(n, setup);
  return setup;
}

/** Every institution's starting replica: keyblock 1 (the patients) and 2 (closes chunk 0). */
export function initialReplica(config: LedgerSimConfig): Replica {
  const setup = simNetwork(config.behaviours.length);
  const keyblocks = config.keyblocks ?? config.behaviours.map(() => 1);
  const replica = createReplica({
    genesis: setup.genesis,
    ledger: setup.ledger,
    keyblockHeight: 1,
    accounts: setup.accounts,
    histories: keyblocks.map((k, index) => ({ index, chunks: [{ keyblocks: k, records: 0 }] })),
    opts: { fairnessGraceMs: 2 * config.maxDelayMs },
  });
  return pinKeyblock(replica, { height: 2, miner: config.seed % keyblocks.length, registers: [] });
}

// ---------------------------------------------------------------------------------------------
// The event queue

type Wire =
  | { readonly type: 'bft'; readonly message: BftMessage }
  | {
      readonly type: 'commit';
      readonly height: number;
      readonly value: Bytes;
      readonly certificate: Certificate;
    }
  | { readonly type: 'bundle'; readonly bundle: Bundle }
  | { readonly type: 'evidence'; readonly evidence: Equivocation };

type SimEvent =
  | { readonly kind: 'deliver'; readonly to: number; readonly from: number; readonly wire: Wire }
  | { readonly kind: 'input'; readonly node: number; readonly input: BftInput }
  | { readonly kind: 'produce' | 'regossip' | 'replay' | 'forge'; readonly node: number }
  | { readonly kind: 'keyblock' };

// ---------------------------------------------------------------------------------------------
// Nodes

interface OwnBundle {
  readonly bundle: Bundle;
  readonly txIds: readonly string[];
}

interface SimNode {
  readonly index: number;
  readonly behaviour: LedgerBehaviour;
  readonly secrets: TestInstitution;
  readonly signer: Signer;
  readonly random: RandomBytes;
  readonly ctx: BftContext;
  readonly syncCtx: BftContext;
  replica: Replica;
  state: BftState;
  readonly decisions: Map<number, LedgerDecision>;
  readonly pinnedAt: Map<string, number>;
  /** `${peer}/${height}` -> when a commit was last sent. */
  readonly synced: Map<string, number>;
  /** The sidecar's copies of its patients' blocks, advanced as it authors txs. */
  readonly authoring: Microblock[];
  produced: number;
  /** Own bundles not yet pinned here, re-sent every regossipMs. */
  unpinned: OwnBundle[];
  /** Misbehaviour proofs this node re-sends (honest nodes). */
  readonly proofs: Wire[];
  /** When each proposed value first arrived here, and for which round. */
  readonly arrived: WeakMap<
    Bytes,
    { readonly at: number; readonly height: number; readonly round: number }
  >;
  /** `${height}/${round}` -> when this node entered that round. */
  readonly entered: Map<string, number>;
  /** What a replaying node re-sends. */
  readonly seen: Wire[];
  /** Forged bundles made so far (a forger proposes the latest). */
  readonly forged: Bundle[];
}

export function runLedgerSim(config: LedgerSimConfig): LedgerSimResult {
  const n = config.behaviours.length;
  const setup = simNetwork(n);
  const { genesis } = setup;
  const chainId = genesis.chainId;
  const rng = prng(config.seed);
  const opts: BftOpts = { ...simBftOpts, ...config.opts };
  const initial = initialReplica(config);
  const group = consensusGroupOf(initial);
  const queue = new EventQueue<SimEvent>();
  const verified = new WeakMap<BftMessage, boolean>();
  const decoded = new WeakMap<
    Bytes,
    { proposer: number; txIds: string[]; bundles: readonly Bundle[] }
  >();
  const produced: ProducedBundle[] = [];
  const honestTxIds = new Set<string>();
  const forgedTxIds: string[] = [];
  const partOf = new Map<number, number>();
  (config.partition ?? []).forEach((part, k) => {
    for (const m of part) partOf.set(m, k);
  });
  let now = 0;

  const batchOf = (value: Bytes) => {
    let d = decoded.get(value);
    if (d === undefined) {
      const batch = decodeBatch(value);
      d = {
        proposer: batch.proposer,
        bundles: batch.bundles,
        txIds: batch.bundles.flatMap((b) => b.txs.map((tx) => toHex(txHash(tx)))),
      };
      decoded.set(value, d);
    }
    return d;
  };

  const nodes: SimNode[] = config.behaviours.map((behaviour, index) => {
    const secrets = setup.institutions[index]!;
    const random = deterministicRandom(`ledger-sim-${config.seed}-${index}`);
    const signer = makeSigner(index, secrets.signingSecret, random);
    const lenient = behaviour === 'forge' || behaviour === 'selfish';
    const ctx: BftContext = {
      chainId,
      kind: 'batch',
      group,
      signer,
      opts,
      hashValue: batchValueHash,
      // A faulty leader votes for its own (unfair or forged) proposals.
      validate: (v) => (lenient ? OK : validateProposal(node.replica, v, accountableFrom(node, v))),
      getValue: (height) => valueFor(node, height),
    };
    const node: SimNode = {
      index,
      behaviour,
      secrets,
      signer,
      random,
      ctx,
      // A decided batch learned by sync is final: it must be valid; fairness is not judged again.
      syncCtx: { ...ctx, validate: (v) => validateCertified(node.replica, v) },
      replica: initial,
      state: initialBftState(),
      decisions: new Map(),
      pinnedAt: new Map(),
      synced: new Map(),
      authoring: setup.patients[index]!.map((p) => p.block),
      produced: 0,
      unpinned: [],
      proofs: [],
      arrived: new WeakMap(),
      entered: new Map(),
      seen: [],
      forged: [],
    };
    return node;
  });
  const honest = nodes.filter((x) => x.behaviour === 'honest');

  function valueFor(node: SimNode, height: number): Bytes {
    const value = proposeBatch(node.replica, height, node.index);
    if (node.behaviour === 'selfish') {
      const batch = decodeBatch(value);
      const bundles = batch.bundles.filter((b) => b.institution === node.index);
      return encodeBatch({ ...batch, bundles });
    }
    const forged = node.forged.at(-1);
    if (node.behaviour === 'forge' && forged !== undefined) {
      const batch = decodeBatch(value);
      return encodeBatch({ ...batch, bundles: [...batch.bundles, forged] });
    }
    return value;
  }

  function send(from: number, to: number, wire: Wire): void {
    if (now < config.gstMs) {
      if (rng() < config.lossBeforeGst) return;
      if (config.partition && partOf.get(from) !== partOf.get(to)) return;
    }
    const delay = config.minDelayMs + rng() * (config.maxDelayMs - config.minDelayMs);
    queue.push(now + delay, { kind: 'deliver', to, from, wire });
  }

  function toAll(from: number, wire: Wire): void {
    for (let to = 0; to < n; to++) if (to !== from) send(from, to, wire);
  }

  /** The conflicting twin of a vote, for equivocators. */
  function twin(node: SimNode, m: BftMessage): BftMessage | null {
    if (m.type === 'proposal') return null;
    const other = m.value === null ? valueHash(new Uint8Array([m.height, m.round])) : null;
    return signMessage(chainId, { ...m, value: other }, node.signer);
  }

  function broadcast(node: SimNode, m: BftMessage): void {
    if (node.behaviour === 'withhold' && m.type === 'proposal') return;
    const alt = node.behaviour === 'equivocate' ? twin(node, m) : null;
    for (let to = 0; to < n; to++) {
      if (to === node.index) continue;
      if (alt === null) {
        send(node.index, to, { type: 'bft', message: m });
        continue;
      }
      // Each peer gets one version or both: whoever gets both has the evidence.
      const pick = rng();
      if (pick < 2 / 3) send(node.index, to, { type: 'bft', message: m });
      if (pick > 1 / 3) send(node.index, to, { type: 'bft', message: alt });
    }
  }

  /** Takes a replica update; an honest node gossips the misbehaviour it newly proved. */
  function took(node: SimNode, u: ReplicaUpdate): void {
    node.replica = u.replica;
    if (node.behaviour === 'honest') for (const m of u.misbehaviour) publish(node, m);
  }

  function publish(node: SimNode, m: Misbehaviour): void {
    const { proof } = m;
    const wire: Wire =
      proof.type === 'bundle'
        ? { type: 'bundle', bundle: proof.bundle }
        : { type: 'evidence', evidence: { member: m.institution, ...proof } };
    node.proofs.push(wire);
    toAll(node.index, wire);
  }

  /** Replaces a node's replica; an honest node gossips the misbehaviour that newly proved. */
  function replace(node: SimNode, replica: Replica): void {
    const before = node.replica.misbehaviour;
    node.replica = replica;
    if (node.behaviour === 'honest') {
      for (const [i, m] of replica.misbehaviour) if (!before.has(i)) publish(node, m);
    }
  }

  function decided(node: SimNode, height: number, value: Bytes, certificate: Certificate): void {
    replace(node, applyDecision(node.replica, value, certificate));
    const batch = batchOf(value);
    node.decisions.set(height, { value, certificate, at: now, proposer: batch.proposer });
    for (const id of batch.txIds) if (honestTxIds.has(id)) node.pinnedAt.set(id, now);
    const ledger = node.replica.chain.ledger;
    node.unpinned = node.unpinned.filter((b) => !ledger.isPinnedTx(b.txIds[0]!));
  }

  function apply(node: SimNode, effects: readonly BftEffect[], viaSync: boolean): void {
    for (const e of effects) {
      if (e.type === 'broadcast') broadcast(node, e.message);
      else if (e.type === 'schedule') {
        const input: BftInput = { type: 'timeout', timeout: e.timeout };
        queue.push(Math.max(e.at, now), { kind: 'input', node: node.index, input });
      } else if (e.type === 'evidence') {
        took(node, applyEvidence(node.replica, e.evidence, group));
      } else {
        decided(node, e.height, e.value, e.certificate);
        // A laggard catching up by sync starts the next height at once.
        const at = viaSync ? now : now + config.batchIntervalMs;
        const input: BftInput = { type: 'start', height: e.height + 1 };
        queue.push(at, { kind: 'input', node: node.index, input });
      }
    }
  }

  /**
   * When the leader of `value` became accountable for the bundles this node holds: the earlier of
   * when the proposal arrived and when this node entered its round (a proposal may arrive late, or
   * wait in the BFT's buffer for the next height; the leader made it when its round began).
   */
  function accountableFrom(node: SimNode, value: Bytes): number {
    const a = node.arrived.get(value);
    if (a === undefined) return now; // this node's own proposal
    return Math.min(a.at, node.entered.get(`${a.height}/${a.round}`) ?? a.at);
  }

  function feed(node: SimNode, input: BftInput): void {
    const viaSync = input.type === 'commit';
    const result = step(viaSync ? node.syncCtx : node.ctx, node.state, input, now);
    node.state = result.state;
    const round = `${result.state.height}/${result.state.round}`;
    if (!node.entered.has(round)) node.entered.set(round, now);
    apply(node, result.effects, viaSync);
  }

  function remember(node: SimNode, wire: Wire): void {
    if (node.behaviour === 'replay' && node.seen.length < 400) node.seen.push(wire);
  }

  function receive(node: SimNode, from: number, wire: Wire): void {
    if (wire.type === 'bundle') {
      remember(node, wire);
      const u = receiveBundle(node.replica, wire.bundle, now);
      took(node, u);
      // Gossip floods: an honest node relays a bundle the first time it takes it in.
      if (u.verdict.ok && node.behaviour === 'honest') toAll(node.index, wire);
      return;
    }
    if (wire.type === 'evidence') {
      took(node, applyEvidence(node.replica, wire.evidence, group));
      return;
    }
    if (wire.type === 'commit') {
      if (wire.height === node.state.height) {
        feed(node, { type: 'commit', value: wire.value, certificate: wire.certificate });
      }
      return;
    }
    const m = wire.message;
    let ok = verified.get(m);
    if (ok === undefined) {
      ok = verifyMessage(m, group, chainId, batchValueHash).ok;
      verified.set(m, ok);
    }
    if (!ok) return;
    remember(node, wire);
    const done = node.decisions.get(m.height);
    if (done !== undefined) {
      // Sync: tell a laggard what this height decided (at most once per resend interval).
      const tag = `${from}/${m.height}`;
      const last = node.synced.get(tag);
      if (last === undefined || now - last >= opts.resendIntervalMs) {
        node.synced.set(tag, now);
        const { value, certificate } = done;
        send(node.index, from, { type: 'commit', height: m.height, value, certificate });
      }
      return;
    }
    if (m.type === 'proposal' && !node.arrived.has(m.value) && m.height >= node.state.height) {
      // A proposal carries bundles this node may not hold yet: take them in first.
      node.arrived.set(m.value, { at: now, height: m.height, round: m.round });
      for (const b of batchOf(m.value).bundles) took(node, receiveBundle(node.replica, b, now));
    }
    feed(node, { type: 'message', message: m });
  }

  // -------------------------------------------------------------------------------------------
  // Sidecars

  const fee = () => 1 + Math.floor(rng() * 3);

  function advance(node: SimNode, p: number, tx: BatchTx): void {
    const block = node.authoring[p]!;
    if (tx.type === 'leaf') {
      const leaf = {
        institution: tx.institution,
        digest: tx.leafDigest,
        seq: 0,
        running: initialRunning(block.header.idHash, tx.institution),
      };
      node.authoring[p] = { ...block, leaves: [...block.leaves, leaf] };
      return;
    }
    const leaves = block.leaves.map((l) =>
      l.institution === tx.institution
        ? { ...l, seq: tx.seq, running: nextRunning(l.running, tx) }
        : l,
    );
    node.authoring[p] = { ...block, leaves };
  }

  /** Bundle k: seq k for each written patient, a label every third bundle, one leaf tx. */
  function produce(node: SimNode): void {
    const k = ++node.produced;
    const txs: BatchTx[] = [];
    let lastMedical: MedicalTx | null = null;
    for (let p = 0; p < WRITTEN_PATIENTS; p++) {
      const fields = { type: 'medical' as const, pointer: node.random(32) };
      const tx = makeRecordTx(node.authoring[p]!, node.secrets, fields, fee(), node.random);
      advance(node, p, tx);
      txs.push(tx);
      if (p === 0) lastMedical = tx as MedicalTx;
    }
    if (k % 3 === 0 && lastMedical !== null) {
      const fields = {
        type: 'label' as const,
        pointer: node.random(32),
        target: txHash(lastMedical),
      };
      const tx = makeRecordTx(node.authoring[0]!, node.secrets, fields, fee(), node.random);
      advance(node, 0, tx);
      txs.push(tx);
    }
    if (k === 2) {
      const newcomer = (node.index + 1) % n;
      const tx = makeLeafTx({
        chainId,
        block: node.authoring[1]!,
        home: node.secrets,
        newcomer: { index: newcomer, chameleonKey: genesis.members[newcomer]!.chameleonKey },
        patientSigningSecret: setup.patients[node.index]![1]!.signingSecret,
        fee: fee(),
        random: node.random,
      });
      advance(node, 1, tx);
      txs.push(tx);
    }
    const bundle = signBundle(chainId, node.index, txs, node.secrets.signingSecret, node.random);
    const txIds = txs.map((tx) => toHex(txHash(tx)));
    produced.push({ institution: node.index, txIds, at: now });
    if (node.behaviour === 'honest') for (const id of txIds) honestTxIds.add(id);
    node.unpinned.push({ bundle, txIds });
    took(node, receiveBundle(node.replica, bundle, now));
    toAll(node.index, { type: 'bundle', bundle });
  }

  /** A forger's three forgeries: a bad opening, another's tx, and a bundle posing as another's. */
  function forge(node: SimNode): void {
    const victim = (node.index + 1) % n;
    const idle = node.authoring[WRITTEN_PATIENTS]!;
    const genuine = makeRecordTx(
      idle,
      node.secrets,
      { type: 'medical', pointer: node.random(32) },
      1,
      node.random,
    ) as MedicalTx;
    const badOpening: MedicalTx = { ...genuine, pointer: node.random(32) };
    const victimBlock = setup.patients[victim]![0]!.block;
    const foreign: MedicalTx = {
      ...genuine,
      block: { i: victimBlock.header.i, j: victimBlock.header.j },
      institution: victim,
      pointer: node.random(32),
    };
    const secret = node.secrets.signingSecret;
    const bundles = [
      signBundle(chainId, node.index, [badOpening], secret, node.random),
      signBundle(chainId, node.index, [foreign], secret, node.random),
      signBundle(chainId, victim, [{ ...foreign, pointer: node.random(32) }], secret, node.random),
    ];
    for (const b of bundles) {
      for (const tx of b.txs) forgedTxIds.push(toHex(txHash(tx)));
      toAll(node.index, { type: 'bundle', bundle: b });
    }
    node.forged.push(bundles[0]!);
  }

  // -------------------------------------------------------------------------------------------
  // Run

  for (const node of nodes) {
    const input: BftInput = { type: 'start', height: 1 };
    queue.push(0, { kind: 'input', node: node.index, input });
    queue.push(rng() * config.bundleIntervalMs, { kind: 'produce', node: node.index });
    queue.push(config.regossipMs * (1 + rng()), { kind: 'regossip', node: node.index });
    if (node.behaviour === 'replay') queue.push(50, { kind: 'replay', node: node.index });
    if (node.behaviour === 'forge') {
      for (const at of [150, config.gstMs / 2, config.gstMs + 150]) {
        queue.push(at, { kind: 'forge', node: node.index });
      }
    }
  }
  const keyblockIntervalMs = config.keyblockIntervalMs ?? 1000;
  queue.push(keyblockIntervalMs, { kind: 'keyblock' });

  /** Pins the next keyblock at every replica at once (miners take turns). */
  function pinNextKeyblock(): void {
    const height = nodes[0]!.replica.chain.keyblockHeight + 1;
    const kb = { height, miner: height % n, registers: [] };
    for (const node of nodes) replace(node, pinKeyblock(node.replica, kb));
  }

  /** Every misbehaviour the replica proved is pinned, and a chunk boundary has passed since. */
  const inEffect = (r: Replica) =>
    [...r.misbehaviour.keys()].every((i) => {
      const m = r.histories[i]!.misbehaviourChunk;
      return m !== undefined && m < completedChunks(r);
    });
  const pinnedEverywhere = () =>
    honest.every((x) => x.pinnedAt.size === honestTxIds.size) &&
    honest.every((x) => x.replica.chain.height === honest[0]!.replica.chain.height) &&
    honest.every((x) => inEffect(x.replica));
  let finished = false;

  while (queue.size > 0) {
    const next = queue.pop()!;
    if (next.at > config.maxTimeMs) break;
    now = next.at;
    const ev = next.event;
    const node = nodes[ev.kind === 'deliver' ? ev.to : ev.kind === 'keyblock' ? 0 : ev.node]!;
    switch (ev.kind) {
      case 'keyblock':
        pinNextKeyblock();
        queue.push(now + keyblockIntervalMs, ev);
        break;
      case 'deliver':
        receive(node, ev.from, ev.wire);
        break;
      case 'input':
        feed(node, ev.input);
        break;
      case 'produce':
        produce(node);
        if (now + config.bundleIntervalMs < config.productionEndMs) {
          const at = now + config.bundleIntervalMs * (0.8 + 0.4 * rng());
          queue.push(at, ev);
        }
        break;
      case 'regossip':
        for (const b of node.unpinned) toAll(node.index, { type: 'bundle', bundle: b.bundle });
        for (const wire of node.proofs) toAll(node.index, wire);
        queue.push(now + config.regossipMs, ev);
        break;
      case 'replay': {
        const old = node.seen[Math.floor(rng() * node.seen.length)];
        const to = Math.floor(rng() * n);
        if (old !== undefined && to !== node.index) send(node.index, to, old);
        queue.push(now + 20 + rng() * 40, ev);
        break;
      }
      case 'forge':
        forge(node);
        break;
    }
    if (now >= config.productionEndMs && pinnedEverywhere()) {
      finished = true;
      break;
    }
  }

  return {
    config,
    genesis,
    group,
    honest: honest.map((x) => x.index),
    initial,
    replicas: nodes.map((x) => x.replica),
    decisions: new Map(nodes.map((x) => [x.index, x.decisions])),
    produced,
    pinnedAt: new Map(nodes.map((x) => [x.index, x.pinnedAt])),
    forgedTxIds,
    refs: setup.patients.flat().map((p) => ({ i: p.block.header.i, j: p.block.header.j })),
    finished,
    endTime: now,
  };
}

/**
 * A random scenario within the adversary model: f = floor((n - 1) / 3) faulty institutions at
 * random positions, behaviours rotated by seed; equal reputations for even seeds, unequal ones
 * (faulty institutions at the bottom, so they hold less than a third) for odd seeds; loss and
 * delays before GST, and a partition that heals at GST in a third of the seeds.
 */
export function ledgerScenario(
  n: number,
  seed: number,
  overrides: Partial<LedgerSimConfig> = {},
): LedgerSimConfig {
  const rng = prng(seed * 7919 + n * 104729 + 17);
  const f = Math.floor((n - 1) / 3);
  const order = Array.from({ length: n }, (_, i) => [rng(), i] as const)
    .sort((a, b) => a[0] - b[0])
    .map(([, i]) => i);
  const faulty = order.slice(0, f);
  const behaviours = Array.from({ length: n }, (): LedgerBehaviour => 'honest');
  faulty.forEach((i, k) => {
    behaviours[i] = LEDGER_BYZANTINE[(seed + k) % LEDGER_BYZANTINE.length]!;
  });
  const keyblocks = behaviours.map((b) =>
    seed % 2 === 0 || b !== 'honest' ? 1 : 1 + Math.floor(rng() * 20_000),
  );
  const gstMs = 600 + Math.floor(rng() * 900);
  const half = order.slice(0, Math.floor(n / 2));
  return {
    seed,
    behaviours,
    keyblocks,
    gstMs,
    lossBeforeGst: 0.1 + rng() * 0.25,
    minDelayMs: 1,
    maxDelayMs: 10 + Math.floor(rng() * 30),
    partition: seed % 3 === 0 ? [half, order.filter((i) => !half.includes(i))] : undefined,
    bundleIntervalMs: 350,
    productionEndMs: gstMs + 1000,
    batchIntervalMs: 150,
    regossipMs: 300,
    maxTimeMs: gstMs + 15_000,
    ...overrides,
  };
}
