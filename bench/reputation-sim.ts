/**
 * npm run sim:reputation [-- --quick] — the paper's section 6.3 experiment (Figs. 15 and 16):
 * (a) how the reputation of institutions with the hash-power shares of the top 26 Bitcoin pools
 * grows over time, and (b) how long an attacker with 51%...90% of fresh computing power needs to
 * take over the consensus group. Writes bench/results/reputation.json and reputation.svg and
 * prints tables. Simulated time and a seeded PRNG: the same options give the same figures.
 *
 * Model (our assumptions, also written into the JSON):
 * - Keyblocks arrive as a Poisson process, one every 10 minutes on average (difficulty keeps the
 *   rate whatever the total power); each is mined by an identity with probability = its power.
 * - Honest institution i writes records at a steady rate proportional to its size, taken to be its
 *   hash-power share: recordsPerMinute · share_i (default 60/min network-wide, 1 record/s). Every
 *   record is pinned in the chunk it is written in (batches have room; Algorithm 2 not binding).
 * - The attacker joins after 30, 90 or 365 days of honest operation with fraction p of the total
 *   power (the honest pools keep their relative shares of the rest), as k fresh identities of
 *   p/k each; we try k in 1..n and report the fastest. It can fabricate data contributions: a
 *   record needs a registered patient, and a zombie patient's idHash cannot be told from a real
 *   one, so only the fee stops it. Variants: "steady" fabricates records at the rate of an honest
 *   hospital of its size; "minimal" fabricates one record per identity per chunk (enough, since
 *   x2 = q1 · q2 · L2 is a product); "none" writes no records (q2 = 0, so R2 = f(0)). Fees = the
 *   fabricated records times minFee until the > 1/3 takeover; the zombie patients' register txs
 *   would cost more fees and are not counted (a lower bound).
 * - Takeover: at a chunk boundary, the freshly computed top-n group gives the attacker's
 *   identities more than 1/3 of the group's reputation (BFT safety lost: it can block pinning and
 *   equivocate), or more than 2/3 (it can pin alone). Times are from the attacker's arrival.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  addChunk,
  type Contribution,
  computeReputation,
  consensusGroup,
  NO_CONTRIBUTION,
  type Reputation,
} from '../src/ledger/reputation.ts';
import { printTable, writeResults } from './lib/measure.ts';

/** Hash-power shares (%) of the top 26 Bitcoin pools, as the paper uses them. */
export const POOL_SHARES = [
  17.02, 15.9, 12.99, 11.25, 6.37, 6.15, 5.22, 4.58, 4.01, 3.81, 3.21, 1.84, 1.68, 1.64, 1.55, 1.2,
  0.5, 0.44, 0.33, 0.1, 0.05, 0.04, 0.04, 0.03, 0.01, 0.01,
];
export const ATTACK_POWERS = [0.51, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9];
const DAY = 24 * 60;

export interface SimOpts {
  readonly seed: number;
  /** Keyblocks per chunk (c). */
  readonly chunkSize: number;
  /** Consensus group size (n). */
  readonly groupSize: number;
  readonly reputationA: number;
  readonly reputationLambda: number;
  readonly keyblockMinutes: number;
  /** Honest records written per minute, network-wide. */
  readonly recordsPerMinute: number;
  readonly minFee: number;
}

export const defaultSimOpts: SimOpts = {
  seed: 2021,
  chunkSize: 144,
  groupSize: 10,
  reputationA: 5000,
  reputationLambda: 20000,
  keyblockMinutes: 10,
  recordsPerMinute: 60,
  minFee: 1,
};

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Identity {
  power: number;
  /** Records per minute, and records per chunk on top of that. */
  recordRate: number;
  recordsPerChunk: number;
  readonly attacker: boolean;
  total: Contribution;
  blocksThisChunk: number;
  recordCarry: number;
  records: number;
}

export interface World {
  readonly ids: Identity[];
  /** Minutes since genesis. */
  minutes: number;
  chunks: number;
}

export function createWorld(opts: SimOpts): World {
  const sum = POOL_SHARES.reduce((s, x) => s + x, 0);
  const ids = POOL_SHARES.map((share) => ({
    power: share / sum,
    recordRate: (opts.recordsPerMinute * share) / sum,
    recordsPerChunk: 0,
    attacker: false,
    total: NO_CONTRIBUTION,
    blocksThisChunk: 0,
    recordCarry: 0,
    records: 0,
  }));
  return { ids, minutes: 0, chunks: 0 };
}

function cloneWorld(w: World): World {
  return { ids: w.ids.map((id) => ({ ...id })), minutes: w.minutes, chunks: w.chunks };
}

/** Mines one chunk of c keyblocks and folds it into everyone's totals. */
export function runChunk(w: World, rng: () => number, opts: SimOpts): void {
  const start = w.minutes;
  for (let b = 0; b < opts.chunkSize; b++) {
    w.minutes += -Math.log(1 - rng()) * opts.keyblockMinutes;
    let u = rng();
    let miner = w.ids.length - 1;
    for (let i = 0; i < w.ids.length; i++) {
      u -= w.ids[i]!.power;
      if (u < 0) {
        miner = i;
        break;
      }
    }
    w.ids[miner]!.blocksThisChunk++;
  }
  const elapsed = w.minutes - start;
  for (const id of w.ids) {
    id.recordCarry += id.recordRate * elapsed;
    const records = Math.floor(id.recordCarry) + id.recordsPerChunk;
    id.recordCarry -= Math.floor(id.recordCarry);
    id.records += records;
    id.total = addChunk(id.total, { keyblocks: id.blocksThisChunk, records });
    id.blocksThisChunk = 0;
  }
  w.chunks++;
}

export function reputationsOf(w: World, opts: SimOpts): Reputation[] {
  return w.ids.map((id) => computeReputation(id.total, 1, opts));
}

/**
 * The consensus group just computed (identity indices: 0..25 the pools, then the attacker's), and
 * the attacker identities' fraction of its reputation.
 */
export function groupShare(w: World, opts: SimOpts): { group: number[]; share: number } {
  const reps = reputationsOf(w, opts);
  const group = consensusGroup(
    reps.map((r, index) => ({ index, reputation: r.r })),
    opts.groupSize,
  );
  let mine = 0;
  let all = 0;
  for (const i of group) {
    all += reps[i]!.r;
    if (w.ids[i]!.attacker) mine += reps[i]!.r;
  }
  return { group, share: mine / all };
}

/** Honest operation from genesis for `days` (whole chunks, at least that long). */
export function runHonest(opts: SimOpts, days: number, onChunk?: (w: World) => void): World {
  const w = createWorld(opts);
  const rng = seededRandom(opts.seed);
  while (w.minutes < days * DAY) {
    runChunk(w, rng, opts);
    onChunk?.(w);
  }
  return w;
}

export type FakeData = 'none' | 'steady' | 'minimal';

export interface AttackSpec {
  /** Fraction of the total power after it joins, e.g. 0.65. */
  readonly power: number;
  /** Number of fresh identities it splits that power over. */
  readonly identities: number;
  /** Records it fabricates: none, at an honest hospital's rate of its size, or one per chunk. */
  readonly fakeData: FakeData;
  readonly capDays: number;
}

export interface AttackResult {
  /** Days from arrival until it holds > 1/3 (> 2/3) of the group's reputation; null: not by cap. */
  readonly days13: number | null;
  readonly days23: number | null;
  /** Records fabricated until the > 1/3 takeover (or the cap), and their fees. */
  readonly fakeRecords: number;
  readonly feeCost: number;
  /** The group, and the attacker's share of its reputation, after the attacker's first chunk. */
  readonly groupAfterFirstChunk: readonly number[];
  readonly shareAfterFirstChunk: number;
}

/** Runs an attack on a copy of `before` (an honest world), chunk by chunk, until > 2/3 or the cap. */
export function simulateAttack(before: World, spec: AttackSpec, opts: SimOpts): AttackResult {
  const w = cloneWorld(before);
  const rng = seededRandom(
    opts.seed ^ Math.round(spec.power * 1000) ^ (spec.identities << 12) ^ (w.chunks << 16),
  );
  for (const id of w.ids) id.power *= 1 - spec.power;
  for (let k = 0; k < spec.identities; k++) {
    const power = spec.power / spec.identities;
    w.ids.push({
      power,
      recordRate: spec.fakeData === 'steady' ? opts.recordsPerMinute * power : 0,
      recordsPerChunk: spec.fakeData === 'minimal' ? 1 : 0,
      attacker: true,
      total: NO_CONTRIBUTION,
      blocksThisChunk: 0,
      recordCarry: 0,
      records: 0,
    });
  }
  const joined = w.minutes;
  const fakeRecords = () => w.ids.reduce((s, id) => s + (id.attacker ? id.records : 0), 0);
  let days13: number | null = null;
  let days23: number | null = null;
  let recordsAt13 = 0;
  let first: { group: number[]; share: number } | null = null;
  while (w.minutes - joined < spec.capDays * DAY) {
    runChunk(w, rng, opts);
    const now = groupShare(w, opts);
    const share = now.share;
    first ??= now;
    const days = (w.minutes - joined) / DAY;
    if (days13 === null && share > 1 / 3) {
      days13 = days;
      recordsAt13 = fakeRecords();
    }
    if (share > 2 / 3) {
      days23 = days;
      break;
    }
  }
  const records = days13 === null ? fakeRecords() : recordsAt13;
  return {
    days13,
    days23,
    fakeRecords: records,
    feeCost: records * opts.minFee,
    groupAfterFirstChunk: first?.group ?? [],
    shareAfterFirstChunk: first?.share ?? 0,
  };
}

/** The fastest takeover over the identity counts tried (by > 1/3, then by > 2/3). */
export function fastestAttack(
  before: World,
  power: number,
  fakeData: FakeData,
  capDays: number,
  identityCounts: readonly number[],
  opts: SimOpts,
): AttackResult & { identities: number; identities23: number } {
  let best: (AttackResult & { identities: number }) | null = null;
  let best23: (AttackResult & { identities: number }) | null = null;
  const rank = (d: number | null) => d ?? Number.POSITIVE_INFINITY;
  for (const identities of identityCounts) {
    const r = {
      ...simulateAttack(before, { power, identities, fakeData, capDays }, opts),
      identities,
    };
    if (!best || rank(r.days13) < rank(best.days13)) best = r;
    if (!best23 || rank(r.days23) < rank(best23.days23)) best23 = r;
  }
  return { ...best!, days23: best23!.days23, identities23: best23!.identities };
}

// ---------------------------------------------------------------- command line, output, plot

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!(Number.isSafeInteger(v) && v > 0))
    throw new RangeError(`--${name}: expected a positive integer`);
  return v;
}

const fmtDays = (d: number | null, cap: number) => (d === null ? `> ${cap}` : d.toFixed(1));
const COLORS = [
  '#1f77b4',
  '#ff7f0e',
  '#2ca02c',
  '#d62728',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#7f7f7f',
];

interface Line {
  readonly label: string;
  /** [x, y]; y = null: not reached, drawn at the top of the axis with a caret. */
  readonly points: readonly (readonly [number, number | null])[];
}

interface Axis {
  readonly range: readonly [number, number];
  readonly ticks: readonly number[];
  readonly label: string;
  readonly format?: (v: number) => string;
  /** Where a point that was not reached (y = null) is drawn, with a dashed line; default: the top. */
  readonly capAt?: number;
}

/** One hand-drawn line chart panel at horizontal offset x0 (460 x 300). */
function panel(
  x0: number,
  title: string,
  xa: Axis,
  ya: Axis,
  lines: readonly Line[],
  legend: 'top-left' | 'bottom-right',
): string {
  const W = 460;
  const H = 300;
  const m = { l: 50, r: 15, t: 30, b: 40 };
  const [x1, x2] = xa.range;
  const [y1, y2] = ya.range;
  const px = (x: number) => (x0 + m.l + ((x - x1) / (x2 - x1)) * (W - m.l - m.r)).toFixed(1);
  const py = (y: number) => (m.t + (1 - (y - y1) / (y2 - y1)) * (H - m.t - m.b)).toFixed(1);
  const fx = xa.format ?? String;
  const fy = ya.format ?? String;
  const out = [
    `<rect x="${x0 + m.l}" y="${m.t}" width="${W - m.l - m.r}" height="${H - m.t - m.b}" fill="none" stroke="#999"/>`,
    `<text x="${x0 + W / 2}" y="18" text-anchor="middle" font-weight="bold">${title}</text>`,
    `<text x="${x0 + W / 2}" y="${H - 6}" text-anchor="middle">${xa.label}</text>`,
    `<text x="${x0 + 12}" y="${H / 2}" text-anchor="middle" transform="rotate(-90 ${x0 + 12} ${H / 2})">${ya.label}</text>`,
    ...xa.ticks.map(
      (t) => `<text x="${px(t)}" y="${H - m.b + 14}" text-anchor="middle">${fx(t)}</text>`,
    ),
    ...ya.ticks.map(
      (t) => `<text x="${x0 + m.l - 4}" y="${+py(t) + 4}" text-anchor="end">${fy(t)}</text>`,
    ),
  ];
  if (ya.capAt !== undefined) {
    const y = py(ya.capAt);
    out.push(
      `<line x1="${x0 + m.l}" y1="${y}" x2="${x0 + W - m.r}" y2="${y}" stroke="#999" stroke-dasharray="4 3"/>`,
      `<text x="${x0 + W - m.r - 4}" y="${+y - 4}" text-anchor="end" fill="#999">cap</text>`,
    );
  }
  lines.forEach((line, i) => {
    const c = COLORS[i % COLORS.length];
    const pts = line.points.map(([x, y]) => [px(x), py(y ?? ya.capAt ?? y2), y === null] as const);
    out.push(
      `<polyline fill="none" stroke="${c}" stroke-width="1.5" points="${pts.map(([x, y]) => `${x},${y}`).join(' ')}"/>`,
    );
    if (line.points.length <= 20) {
      for (const [x, y, capped] of pts) {
        out.push(
          capped
            ? `<path d="M${+x - 4},${+y + 8} L${x},${+y + 2} L${+x + 4},${+y + 8}" fill="none" stroke="${c}"/>`
            : `<circle cx="${x}" cy="${y}" r="3" fill="${c}"/>`,
        );
      }
    }
    const [lx, ly, anchor] =
      legend === 'top-left'
        ? [x0 + m.l + 8, m.t + 13 + 13 * i, 'start']
        : [x0 + W - m.r - 6, H - m.b - 8 - 13 * (lines.length - 1 - i), 'end'];
    out.push(`<text x="${lx}" y="${ly}" text-anchor="${anchor}" fill="${c}">${line.label}</text>`);
  });
  return out.join('\n');
}

function main(): void {
  const quick = process.argv.includes('--quick');
  const opts: SimOpts = {
    ...defaultSimOpts,
    seed: option('seed', defaultSimOpts.seed),
    chunkSize: option('chunk', defaultSimOpts.chunkSize),
    groupSize: option('group', defaultSimOpts.groupSize),
  };
  const capDays = option('cap', quick ? 90 : 365);
  const joins = quick ? [30, 90] : [30, 90, 365];
  const identityCounts = (quick ? [1, 2, 4, 8] : [1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 26]).filter(
    (k) => k <= opts.groupSize,
  );
  const t0 = performance.now();

  // (a) Reputation distribution over time, honest operation only (Fig. 15).
  const checkpoints = [
    { label: '1 day', days: 1 },
    { label: '1 week', days: 7 },
    { label: '1 month', days: 30 },
    { label: '3 months', days: 90 },
  ];
  const at = new Map<string, Reputation[]>();
  const series: { day: number; r: number[] }[] = [];
  const worlds = new Map<number, World>();
  const honestDays = Math.max(90, ...joins);
  runHonest(opts, honestDays, (w) => {
    const day = w.minutes / DAY;
    const reps = reputationsOf(w, opts);
    if (day <= 90) series.push({ day, r: reps.map((r) => r.r) });
    for (const c of checkpoints) if (!at.has(c.label) && day >= c.days) at.set(c.label, reps);
    for (const j of joins) if (!worlds.has(j) && day >= j) worlds.set(j, structuredClone(w));
  });
  const distribution = POOL_SHARES.map((share, i) => {
    const row: Record<string, number> = { institution: i, 'power %': share };
    for (const c of checkpoints) row[`R ${c.label}`] = Number(at.get(c.label)![i]!.r.toFixed(3));
    row['R1 3m'] = Number(at.get('3 months')![i]!.r1.toFixed(3));
    row['R2 3m'] = Number(at.get('3 months')![i]!.r2.toFixed(3));
    return row;
  });
  console.log(
    `\n(a) Reputation R of the 26 institutions, no attacker (c = ${opts.chunkSize} keyblocks, ` +
      `a = ${opts.reputationA}, λ = ${opts.reputationLambda}, ${opts.recordsPerMinute} records/min)`,
  );
  printTable(distribution);

  // (b) Takeover time vs attacker power (Fig. 16), for each arrival time and data strategy.
  const strategies: FakeData[] = ['steady', 'minimal', 'none'];
  const attacks = joins.flatMap((joinDays) =>
    ATTACK_POWERS.flatMap((power) =>
      strategies.map((fakeData) => ({
        joinDays,
        power,
        fakeData,
        ...fastestAttack(worlds.get(joinDays)!, power, fakeData, capDays, identityCounts, opts),
      })),
    ),
  );
  const find = (j: number, p: number, f: FakeData) =>
    attacks.find((a) => a.joinDays === j && a.power === p && a.fakeData === f)!;
  for (const joinDays of joins) {
    console.log(
      `\n(b) Attacker arriving after ${joinDays} days: days until its identities hold > 1/3 (> 2/3) ` +
        `of the top-${opts.groupSize} group's reputation (cap ${capDays} days; ids = best identity count)`,
    );
    printTable(
      ATTACK_POWERS.map((power) => {
        const row: Record<string, string | number> = { 'power %': Math.round(power * 100) };
        for (const f of strategies) {
          const a = find(joinDays, power, f);
          row[`${f}: >1/3`] = fmtDays(a.days13, capDays);
          row[`${f}: >2/3`] = fmtDays(a.days23, capDays);
          row[`${f}: ids`] = a.days13 === null ? '-' : a.identities;
          if (f !== 'none') row[`${f}: fees`] = a.days13 === null ? '-' : a.feeCost;
        }
        return row;
      }),
    );
  }

  const step = capDays <= 120 ? 15 : 60;
  const svg = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="920" height="300" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    panel(
      0,
      'Reputation R of the largest institutions (no attacker)',
      { range: [0, 90], ticks: [0, 15, 30, 45, 60, 75, 90], label: 'days since genesis' },
      { range: [0.3, 1], ticks: [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1], label: 'R' },
      POOL_SHARES.slice(0, 8).map((share, i) => ({
        label: `${share}% pool`,
        points: series.map((p) => [p.day, p.r[i]!] as const),
      })),
      'bottom-right',
    ),
    panel(
      460,
      `Days until the attacker holds > 1/3 of the top-${opts.groupSize} group`,
      {
        range: [0.5, 0.9],
        ticks: [0.5, 0.6, 0.7, 0.8, 0.9],
        label: 'attacker share of computing power',
        format: (v) => `${Math.round(v * 100)}%`,
      },
      {
        range: [0, capDays * 1.4],
        ticks: Array.from({ length: Math.floor(capDays / step) + 1 }, (_, i) => i * step),
        capAt: capDays,
        label: 'days after joining',
      },
      [
        ...joins.map((j) => ({
          label: `joins after ${j} d, fabricates records`,
          points: ATTACK_POWERS.map((p) => [p, find(j, p, 'steady').days13] as const),
        })),
        {
          label: `joins after ${joins[0]} d, no records (^: not within ${capDays} d)`,
          points: ATTACK_POWERS.map((p) => [p, find(joins[0]!, p, 'none').days13] as const),
        },
      ],
      'top-left',
    ),
    '</svg>\n',
  ].join('\n');
  const here = fileURLToPath(new URL('.', import.meta.url));
  const seconds = (performance.now() - t0) / 1000;
  writeResults(`${here}results/reputation.json`, {
    opts,
    capDays,
    joins,
    identityCounts,
    assumptions: {
      keyblocks: `Poisson arrivals, mean ${opts.keyblockMinutes} min; miner drawn by power`,
      honestData: `steady ${opts.recordsPerMinute} records/min network-wide, split by hash-power share`,
      attacker:
        'fresh identities with the power split evenly; steady = fabricates records at the rate of an ' +
        'honest hospital of its size, minimal = 1 fabricated record per identity per chunk, ' +
        'none = no records; fees = fabricated records x minFee until > 1/3 (registers not counted)',
      takeover:
        'attacker identities hold > 1/3 (> 2/3) of the reputation of the freshly computed top-n group',
    },
    distribution,
    series: series.map((p) => ({
      day: Number(p.day.toFixed(3)),
      r: p.r.map((r) => Number(r.toFixed(4))),
    })),
    attacks,
    seconds,
  });
  writeFileSync(`${here}results/reputation.svg`, svg);
  console.log(`\nwrote bench/results/reputation.json and reputation.svg (${seconds.toFixed(1)} s)`);
}

if (import.meta.main) main();
