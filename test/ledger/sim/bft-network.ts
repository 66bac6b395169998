/**
 * A deterministic network of Tendermint nodes (src/ledger/bft.ts) for tests: one seeded PRNG, a
 * virtual clock and an event queue ordered by (time, sequence). Before GST messages are lost with
 * a given probability and dropped across a partition; every message gets a random delay (so they
 * are reordered). Faulty nodes crash or misbehave (equivocate, withhold proposals, propose invalid
 * or unfair values, replay old messages). Decided heights are served to laggards as `commit`
 * inputs, the sync a real node does.
 */

import { utf8 } from '../../../src/crypto/bytes.ts';
import { deterministicRandom } from '../../../src/crypto/random.ts';
import { generateSigningKey } from '../../../src/crypto/sign.ts';
import { proposer, step } from '../../../src/ledger/bft.ts';
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
  defaultBftOpts,
  initialBftState,
} from '../../../src/ledger/bft-state.ts';
import type { ConsensusGroup } from '../../../src/ledger/certificate.ts';
import { OK, reject, type Verdict } from '../../../src/ledger/errors.ts';
import type { Bytes, Certificate } from '../../../src/ledger/types.ts';
import { EventQueue } from './event-queue.ts';

export type Behaviour =
  | 'honest'
  | 'crash'
  | 'equivocate'
  /** Colluding split-brain attack: see `split` in runSim (not in BYZANTINE_BEHAVIOURS). */
  | 'split'
  | 'withhold'
  | 'invalid'
  | 'unfair'
  | 'replay';
export const BYZANTINE_BEHAVIOURS: readonly Behaviour[] = [
  'equivocate',
  'withhold',
  'invalid',
  'unfair',
  'replay',
  'crash',
];

export interface SimNodeSpec {
  readonly reputation: number;
  readonly behaviour: Behaviour;
}

export interface SimConfig {
  readonly seed: number;
  readonly nodes: readonly SimNodeSpec[];
  /** Heights 1..heights are decided. */
  readonly heights: number;
  readonly gstMs: number;
  /** Per-message loss probability before GST. */
  readonly lossBeforeGst: number;
  readonly minDelayMs: number;
  readonly maxDelayMs: number;
  /** Before GST, messages between different parts are dropped (unlisted nodes are in no part). */
  readonly partition?: readonly (readonly number[])[];
  /** When 'crash' nodes stop (default 0: they never start). */
  readonly crashAtMs?: number;
  readonly maxTimeMs: number;
  readonly opts?: Partial<BftOpts>;
}

/** Timeouts scaled to the simulated delays (Δ = tens of ms). */
export const simBftOpts: BftOpts = {
  ...defaultBftOpts,
  timeoutProposeMs: 200,
  timeoutPrevoteMs: 100,
  timeoutPrecommitMs: 100,
  timeoutDeltaMs: 50,
  resendIntervalMs: 300,
};

export interface SimDecision {
  readonly value: Bytes;
  readonly certificate: Certificate;
  readonly at: number;
}

export interface SimResult {
  readonly chainId: string;
  readonly group: ConsensusGroup;
  /** Members that follow the protocol (honest behaviour). */
  readonly honest: readonly number[];
  /** node -> height -> decision. */
  readonly decisions: ReadonlyMap<number, ReadonlyMap<number, SimDecision>>;
  readonly evidence: readonly { readonly reporter: number; readonly evidence: Equivocation }[];
  readonly endTime: number;
  readonly delivered: number;
}

const PREFIX_OK = 'ok:';

/** Honest validation: values labelled invalid or unfair (only serving their proposer) fail. */
export function simValidate(value: Bytes): Verdict {
  const text = new TextDecoder().decode(value);
  if (text.startsWith(PREFIX_OK)) return OK;
  if (text.startsWith('unfair:')) return reject('UNFAIR_BATCH', 'batch serves its proposer only');
  return reject('INVALID_VALUE', `invalid value ${text}`);
}

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Wire =
  | { readonly type: 'bft'; readonly message: BftMessage }
  | {
      readonly type: 'commit';
      readonly height: number;
      readonly value: Bytes;
      readonly certificate: Certificate;
    };

type SimEvent =
  | { readonly kind: 'deliver'; readonly to: number; readonly from: number; readonly wire: Wire }
  | { readonly kind: 'input'; readonly node: number; readonly input: BftInput }
  | { readonly kind: 'replay'; readonly node: number };

interface SimNode {
  readonly member: number;
  readonly behaviour: Behaviour;
  readonly ctx: BftContext;
  readonly signer: Signer;
  state: BftState;
  readonly decisions: Map<number, SimDecision>;
  /** `${peer}/${height}` -> when a commit was last sent (sync is rate-limited). */
  readonly synced: Map<string, number>;
  /** Messages a replaying node has seen, to send again later. */
  readonly seen: BftMessage[];
}

export function runSim(config: SimConfig): SimResult {
  const rng = prng(config.seed);
  const opts: BftOpts = { ...simBftOpts, ...config.opts };
  const chainId = `sim-${config.seed}`;
  const keys = config.nodes.map((_, i) =>
    generateSigningKey(deterministicRandom(`sim-key-${config.seed}-${i}`)),
  );
  const group: ConsensusGroup = config.nodes.map((spec, i) => ({
    member: i,
    signingKey: keys[i]!.publicKey,
    reputation: spec.reputation,
  }));
  const nodes: SimNode[] = config.nodes.map((spec, i) => {
    const signer = makeSigner(
      i,
      keys[i]!.secretKey,
      deterministicRandom(`sim-sig-${config.seed}-${i}`),
    );
    const faulty = spec.behaviour === 'invalid' || spec.behaviour === 'unfair';
    const ctx: BftContext = {
      chainId,
      kind: 'batch',
      group,
      signer,
      opts,
      // A faulty node votes for whatever it likes, its own bad values included.
      validate: faulty ? () => OK : simValidate,
      getValue: (height) => {
        const label =
          spec.behaviour === 'invalid'
            ? 'bad:'
            : spec.behaviour === 'unfair'
              ? 'unfair:'
              : PREFIX_OK;
        return utf8(`${label}${height}:${i}:${config.seed}`);
      },
    };
    return {
      member: i,
      behaviour: spec.behaviour,
      ctx,
      signer,
      state: initialBftState(),
      decisions: new Map(),
      synced: new Map(),
      seen: [],
    };
  });
  const n = nodes.length;
  const crashAt = config.crashAtMs ?? 0;
  const queue = new EventQueue<SimEvent>();
  const verified = new WeakMap<BftMessage, boolean>();
  const evidence: { reporter: number; evidence: Equivocation }[] = [];
  const partOf = new Map<number, number>();
  (config.partition ?? []).forEach((part, k) => {
    for (const m of part) partOf.set(m, k);
  });
  let now = 0;
  let delivered = 0;

  const crashed = (node: SimNode): boolean => node.behaviour === 'crash' && now >= crashAt;

  function send(from: number, to: number, wire: Wire): void {
    if (now < config.gstMs) {
      if (rng() < config.lossBeforeGst) return;
      if (config.partition && partOf.get(from) !== partOf.get(to)) return;
    }
    const delay = config.minDelayMs + rng() * (config.maxDelayMs - config.minDelayMs);
    queue.push(now + delay, { kind: 'deliver', to, from, wire });
  }

  /** The conflicting twin of a vote, for equivocators. */
  function twin(node: SimNode, m: BftMessage): BftMessage | null {
    if (m.type === 'proposal') return null;
    const other = m.value === null ? valueHash(utf8(`twin:${m.height}:${m.round}`)) : null;
    return signMessage(chainId, { ...m, value: other }, node.signer);
  }

  /**
   * Split-brain: in rounds led by a splitter, the splitters show value A to one half of the
   * honest nodes and value B to the other (proposal, prevotes and precommits alike). It breaks
   * agreement exactly when the splitters plus one half reach a quorum, i.e. when the splitters
   * hold at least 1/3 of the members and of the reputation.
   */
  function split(node: SimNode, m: BftMessage): void {
    const leader = nodes[proposer(group, m.height, m.round)]!;
    if (leader.behaviour !== 'split') {
      for (const to of others(node)) send(node.member, to, { type: 'bft', message: m });
      return;
    }
    for (const x of nodes) {
      // Fellow splitters see the real messages, so that they vote at once.
      if (x.behaviour === 'split' && x !== node)
        send(node.member, x.member, { type: 'bft', message: m });
    }
    const honestNodes = nodes.filter((x) => x.behaviour !== 'split');
    honestNodes.forEach((peer, k) => {
      const value = utf8(`${PREFIX_OK}split:${m.height}:${m.round}:${k % 2}`);
      const forged =
        m.type === 'proposal'
          ? signMessage(chainId, { ...m, value }, node.signer)
          : signMessage(chainId, { ...m, value: valueHash(value) }, node.signer);
      send(node.member, peer.member, { type: 'bft', message: forged });
    });
  }

  function others(node: SimNode): number[] {
    return nodes.map((x) => x.member).filter((to) => to !== node.member);
  }

  function broadcast(node: SimNode, m: BftMessage): void {
    if (node.behaviour === 'split') {
      split(node, m);
      return;
    }
    if (node.behaviour === 'withhold' && m.type === 'proposal') return;
    const alt = node.behaviour === 'equivocate' ? twin(node, m) : null;
    for (let to = 0; to < n; to++) {
      if (to === node.member) continue;
      if (alt === null) {
        send(node.member, to, { type: 'bft', message: m });
        continue;
      }
      // Each peer gets one version or both: whoever gets both has the evidence.
      const pick = rng();
      if (pick < 2 / 3) send(node.member, to, { type: 'bft', message: m });
      if (pick > 1 / 3) send(node.member, to, { type: 'bft', message: alt });
    }
  }

  function apply(node: SimNode, effects: readonly BftEffect[]): void {
    for (const e of effects) {
      if (e.type === 'broadcast') broadcast(node, e.message);
      else if (e.type === 'schedule') {
        queue.push(Math.max(e.at, now), {
          kind: 'input',
          node: node.member,
          input: { type: 'timeout', timeout: e.timeout },
        });
      } else if (e.type === 'evidence')
        evidence.push({ reporter: node.member, evidence: e.evidence });
      else {
        node.decisions.set(e.height, { value: e.value, certificate: e.certificate, at: now });
        if (e.height < config.heights) feed(node, { type: 'start', height: e.height + 1 });
      }
    }
  }

  function feed(node: SimNode, input: BftInput): void {
    const result = step(node.ctx, node.state, input, now);
    node.state = result.state;
    apply(node, result.effects);
  }

  function receive(node: SimNode, from: number, wire: Wire): void {
    if (wire.type === 'commit') {
      if (wire.height === node.state.height) {
        feed(node, { type: 'commit', value: wire.value, certificate: wire.certificate });
      }
      return;
    }
    const m = wire.message;
    let ok = verified.get(m);
    if (ok === undefined) {
      ok = verifyMessage(m, group, chainId).ok;
      verified.set(m, ok);
    }
    if (!ok) return;
    if (node.behaviour === 'replay' && node.seen.length < 400) node.seen.push(m);
    const done = node.decisions.get(m.height);
    if (done !== undefined) {
      // Sync: tell a laggard what this height decided (at most once per resend interval).
      const tag = `${from}/${m.height}`;
      const last = node.synced.get(tag);
      if (last === undefined || now - last >= opts.resendIntervalMs) {
        node.synced.set(tag, now);
        send(node.member, from, { type: 'commit', height: m.height, ...done });
      }
      return;
    }
    feed(node, { type: 'message', message: m });
  }

  for (const node of nodes) {
    if (!crashed(node))
      queue.push(0, { kind: 'input', node: node.member, input: { type: 'start', height: 1 } });
    if (node.behaviour === 'replay') queue.push(50, { kind: 'replay', node: node.member });
  }
  const honest = nodes.filter((x) => x.behaviour === 'honest');
  const finished = () => honest.every((x) => x.decisions.size >= config.heights);

  while (queue.size > 0 && !finished()) {
    const next = queue.pop()!;
    if (next.at > config.maxTimeMs) break;
    now = next.at;
    const ev = next.event;
    if (ev.kind === 'deliver') {
      const node = nodes[ev.to]!;
      delivered++;
      if (!crashed(node)) receive(node, ev.from, ev.wire);
    } else if (ev.kind === 'input') {
      const node = nodes[ev.node]!;
      if (!crashed(node)) feed(node, ev.input);
    } else {
      // A replaying node sends a random old message to a random peer, now and then.
      const node = nodes[ev.node]!;
      const old = node.seen[Math.floor(rng() * node.seen.length)];
      const to = Math.floor(rng() * n);
      if (old !== undefined && to !== node.member)
        send(node.member, to, { type: 'bft', message: old });
      queue.push(now + 20 + rng() * 40, ev);
    }
  }

  return {
    chainId,
    group,
    honest: honest.map((x) => x.member),
    decisions: new Map(nodes.map((x) => [x.member, x.decisions])),
    evidence,
    endTime: now,
    delivered,
  };
}

/**
 * A random scenario within the adversary model: f = floor((n - 1) / 3) faulty nodes at random
 * positions with behaviours rotated by seed, unequal reputations (the faulty ones scaled down until
 * they hold less than 1/3), loss and delays before GST, a partition in a quarter of the seeds, and
 * crashes at a random time in another quarter.
 */
export function randomScenario(n: number, seed: number, heights = 5): SimConfig {
  const rng = prng(seed * 7919 + n);
  const f = Math.floor((n - 1) / 3);
  const order = Array.from({ length: n }, (_, i) => [rng(), i] as const)
    .sort((a, b) => a[0] - b[0])
    .map(([, i]) => i);
  const faulty = new Set(order.slice(0, f));
  const reputations = Array.from({ length: n }, () => Math.round(100 + rng() * 900) / 1000);
  const tooHeavy = () => {
    let bad = 0;
    let total = 0;
    reputations.forEach((r, i) => {
      total += r;
      if (faulty.has(i)) bad += r;
    });
    return 3 * bad >= total;
  };
  while (tooHeavy()) for (const i of faulty) reputations[i] = reputations[i]! / 2;
  let k = 0;
  const nodes = reputations.map((reputation, i) => ({
    reputation,
    behaviour: faulty.has(i)
      ? BYZANTINE_BEHAVIOURS[(seed + k++) % BYZANTINE_BEHAVIOURS.length]!
      : ('honest' as const),
  }));
  const gstMs = 1000 + Math.floor(rng() * 2000);
  const half = order.slice(0, Math.floor(n / 2));
  return {
    seed,
    nodes,
    heights,
    gstMs,
    lossBeforeGst: 0.1 + rng() * 0.3,
    minDelayMs: 1,
    maxDelayMs: 10 + rng() * 40,
    partition: seed % 4 === 0 ? [half, order.filter((i) => !half.includes(i))] : undefined,
    crashAtMs: seed % 4 === 1 ? Math.floor(rng() * gstMs) : 0,
    maxTimeMs: gstMs + 60_000,
  };
}
