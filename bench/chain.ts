/**
 * npm run bench:chain [-- options] — pinned throughput of a local network of node processes.
 *
 * Each measurement makes a fresh local network in a temp dir (src/node/localnet.ts: 4 patients per
 * institution, localnet consensus timings, fsync'd WAL and outbox) and starts one node process per
 * institution on 127.0.0.1 (src/node/main.ts), each signing its own record txs at
 * `offered / institutions` tx/s on a worker thread (load.txPerSecond, src/node/load-worker.ts: the
 * stand-in for the institution's clients). After all nodes have started and pinned height 1, and a
 * warm-up, it measures over a window (30 s; 10 s with --quick):
 * - pinned TPS: txs in the `pinned` events of node 0 whose time falls in the window, per second;
 * - pin latency p50/p99: from the `own-pinned` events of every node in the window, the time from
 *   a bundle's signing to the pin of the batch carrying it, as its signer saw it (one sample per
 *   tx; src/node/load-runner.ts), next to Little's law (mean signed-but-unpinned txs / pinned TPS);
 * - heights per second, batch interval (time between consecutive pins at node 0), txs per batch,
 *   heights decided in a round > 0 (view changes);
 * - signed TPS: what the load runners actually signed (pinned own txs + growth of pendingOwn), next
 *   to the nominal offered load (every 5th bundle carries one extra label tx);
 * - CPU: each node process's user+system time (all its threads) from /proc/<pid>/stat, per pinned
 *   tx (the efficiency figure, which other load on the machine disturbs least), and the whole
 *   machine's busy share from /proc/stat (this runner and anything else included);
 * - mempool bundles at node 0 (max) and warnings (LOAD_PAUSED: a load runner stopped signing
 *   because too many of its txs wait).
 * Offered load rises (400, 800, 1600, 2400, 3200 tx/s in total; bundles of TPB txs, batches of up
 * to CAP, see below) until pinned TPS falls below 85% of the nominal offered load. Then group sizes 4, 7, 10 at GROUP_LOAD, and batch shapes (maxBatchTxs,
 * txsPerBundle) at 4 institutions and BATCH_LOAD, with 20 s windows (10 s with --quick); then one
 * more step at the best load with V8 CPU profiles of the nodes, summarised by category (where the
 * time goes: signature and chameleon checks, hashing, encoding, libp2p, mempool, load signing...;
 * bench/lib/profile.ts). Writes bench/results/chain.json. Not a test: no thresholds.
 *
 * Options: --quick; --loads 800,2400 (only these steps, no saturation stop, no sweeps, results not
 * written); --tpb N and --cap N (txs per bundle and maxBatchTxs of those steps); --profile <dir>
 * (only one step, 4 institutions at 800 tx/s or --loads' first, profiles kept in <dir>);
 * --no-profile (skip the profiled step).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createLocalnet, localnetConsensus, localnetParams } from '../src/node/localnet.ts';
import { printTable, writeResults } from './lib/measure.ts';
import {
  cleanupNow,
  cpuSeconds,
  type EventLine,
  machineTicks,
  NodeProc,
  registerDir,
  removeDir,
  sleep,
  waitFor,
} from './lib/procs.ts';
import { busyShares, mergeSummaries, readProfiles, summariseProfile } from './lib/profile.ts';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    loads: { type: 'string' },
    tpb: { type: 'string' },
    cap: { type: 'string' },
    profile: { type: 'string' },
    'no-profile': { type: 'boolean', default: false },
  },
});

function positiveInts(text: string | undefined, what: string): number[] | undefined {
  if (text === undefined) return undefined;
  const xs = text.split(',').map((x) => Number(x.trim()));
  if (xs.length === 0 || xs.some((x) => !Number.isSafeInteger(x) || x <= 0)) {
    throw new Error(`--${what}: expected positive integers separated by commas, got "${text}"`);
  }
  return xs;
}

const QUICK = values.quick;
const PROFILE_DIR = values.profile;
const ONLY_LOADS = positiveInts(values.loads, 'loads');
/**
 * Defaults: bundles of 16 txs (the sidecar's anchor worker signs up to 256 per bundle) and batches
 * of up to 2000 txs; the batch-shape sweep compares others, the localnet default included.
 */
const TPB = positiveInts(values.tpb, 'tpb')?.[0] ?? 16;
const CAP = positiveInts(values.cap, 'cap')?.[0] ?? 2000;
/** After height 1: the loads start once their node pins, and the first batches drain their start. */
const WARMUP_S = QUICK ? 10 : 15;
const STEP_S = QUICK ? 10 : 30;
const SWEEP_S = QUICK ? 10 : 20;
const LOADS = [400, 800, 1600, 2400, 3200];
const GROUPS = [4, 7, 10];
const GROUP_LOAD = 800;
const BATCH_LOAD = 2400;
const BATCH_SHAPES = [
  { maxBatchTxs: localnetParams.maxBatchTxs, txsPerBundle: 4 },
  { maxBatchTxs: 2000, txsPerBundle: 4 },
  { maxBatchTxs: 2000, txsPerBundle: 16 },
  { maxBatchTxs: 2000, txsPerBundle: 64 },
  { maxBatchTxs: 4000, txsPerBundle: 64 },
];
const LABEL_EVERY = 5; // defaultLoadOpts.labelEvery
const PATIENTS = 4;
const SATURATED = 0.85;

process.on('exit', cleanupNow);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    console.error(`\n${sig}: stopping the nodes and removing temp dirs`);
    cleanupNow();
    process.exit(130);
  });
}

interface RunOpts {
  readonly institutions: number;
  readonly offered: number;
  readonly txsPerBundle: number;
  readonly maxBatchTxs: number;
  readonly windowS: number;
  /** Write V8 CPU profiles of the nodes here. */
  readonly profileDir?: string;
}

interface Row {
  institutions: number;
  offered: number;
  nominal: number;
  signed_tps: number;
  pinned_tps: number;
  latency_p50_ms: number | null;
  latency_p99_ms: number | null;
  latency_samples: number;
  latency_little_ms: number | null;
  heights_per_s: number;
  batch_ms_p50: number | null;
  batch_ms_p99: number | null;
  txs_per_batch: number;
  max_batch_txs: number;
  txs_per_bundle: number;
  round_gt0: number;
  mempool_max: number;
  pending_own_end: number;
  load_paused: number;
  cpu_nodes_cores: number;
  cpu_max_node: number;
  cpu_ms_per_pinned_tx: number | null;
  machine_busy_pct: number;
  window_s: number;
  warnings: Record<string, number>;
  warning_samples: Record<string, string>;
}

function quantile(xs: readonly number[], q: number): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

const r1 = (x: number) => Math.round(x * 10) / 10;
const r2 = (x: number) => Math.round(x * 100) / 100;

/** The load the runners are set to sign: bundles at txPerSecond / txsPerBundle, plus labels. */
function nominalOf(o: RunOpts): number {
  const perNode = Math.max(1, Math.round(o.offered / o.institutions));
  return o.institutions * perNode * (1 + 1 / (LABEL_EVERY * o.txsPerBundle));
}

async function run(o: RunOpts): Promise<Row> {
  const dir = mkdtempSync(join(tmpdir(), 'spchain-bench-chain-'));
  registerDir(dir);
  const perNode = Math.max(1, Math.round(o.offered / o.institutions));
  const net = await createLocalnet({
    institutions: o.institutions,
    dir,
    patientsPerInstitution: PATIENTS,
    load: { txPerSecond: perNode, txsPerBundle: o.txsPerBundle },
    params: { maxBatchTxs: o.maxBatchTxs },
  });
  const nodeArgs =
    o.profileDir === undefined
      ? []
      : ['--cpu-prof', `--cpu-prof-dir=${o.profileDir}`, '--cpu-prof-interval=1000'];
  const nodes = net.configPaths.map((p, i) => new NodeProc(i, p, nodeArgs));
  try {
    /** Throws if a node has exited; true otherwise (for use inside wait conditions). */
    const alive = (): true => {
      const dead = nodes.find((n) => !n.running);
      if (dead !== undefined) {
        throw new Error(`node ${dead.index} exited:\n  ${dead.stderr.slice(-5).join('\n  ')}`);
      }
      return true;
    };
    await waitFor(
      () => alive() && nodes.every((n) => n.started),
      'all nodes started',
      60_000 + 5_000 * o.institutions,
    );
    await waitFor(() => alive() && nodes.every((n) => n.height >= 1), 'height 1 pinned', 60_000);
    await sleep(WARMUP_S * 1000);
    alive();

    const t0 = Date.now();
    const cpu0 = nodes.map((n) => cpuSeconds(n.pid) ?? 0);
    const m0 = machineTicks();
    await sleep(o.windowS * 1000);
    const t1 = Date.now();
    const cpu1 = nodes.map((n) => cpuSeconds(n.pid) ?? 0);
    const m1 = machineTicks();
    alive();
    const seconds = (t1 - t0) / 1000;

    const in0 = (l: EventLine) => l.t > t0 && l.t <= t1;
    const obs = nodes[0]!;
    const pins = obs.lines.filter((l) => l.event === 'pinned' && in0(l));
    let txs = 0;
    const byInst = new Map<number, number>();
    for (const p of pins) {
      txs += p.txs as number;
      for (const [k, v] of Object.entries(p.by as Record<string, number>)) {
        byInst.set(Number(k), (byInst.get(Number(k)) ?? 0) + v);
      }
    }
    const pinTimes = obs.lines.filter((l) => l.event === 'pinned' && l.t <= t1).map((l) => l.t);
    const gaps: number[] = [];
    for (let i = 1; i < pinTimes.length; i++) {
      if (pinTimes[i]! > t0) gaps.push(pinTimes[i]! - pinTimes[i - 1]!);
    }
    // Signed = own txs pinned in the window + growth of own unpinned txs.
    let signed = 0;
    for (const n of nodes) {
      const a = (n.statsAt(t0)?.pendingOwn as number | undefined) ?? 0;
      const b = (n.statsAt(t1)?.pendingOwn as number | undefined) ?? 0;
      signed += (byInst.get(n.index) ?? 0) + (b - a);
    }
    // Pin latency at each signer: one sample per tx of its bundles pinned in the window.
    const latencies: number[] = [];
    for (const n of nodes) {
      for (const l of n.lines) {
        if (l.event === 'own-pinned' && in0(l)) latencies.push(...(l.latencyMs as number[]));
      }
    }
    // Little's law over the window's stats samples: sum of pendingOwn over nodes, averaged.
    const perSecond = new Map<number, number>();
    for (const n of nodes) {
      for (const l of n.lines) {
        if (l.event !== 'stats' || !in0(l)) continue;
        const sec = Math.floor((l.t - t0) / 1000);
        perSecond.set(sec, (perSecond.get(sec) ?? 0) + (l.pendingOwn as number));
      }
    }
    const pendingSamples = [...perSecond.values()];
    const meanPending =
      pendingSamples.reduce((a, b) => a + b, 0) / Math.max(1, pendingSamples.length);
    const pinnedTps = txs / seconds;
    const obsStats = obs.lines.filter((l) => l.event === 'stats' && in0(l));
    const mempool = obsStats.map((l) => l.mempoolBundles as number);
    const warnings: Record<string, number> = {};
    const warningSamples: Record<string, string> = {};
    for (const n of nodes) {
      for (const l of n.lines) {
        if ((l.event === 'warn' || l.event === 'fatal') && l.t <= t1) {
          const code = String(l.code);
          warnings[code] = (warnings[code] ?? 0) + 1;
          warningSamples[code] ??= `node ${n.index}: ${String(l.message).slice(0, 300)}`;
        }
      }
    }
    const cpu = nodes.map((_, i) => (cpu1[i]! - cpu0[i]!) / seconds);
    const cpuCores = cpu.reduce((a, b) => a + b, 0);
    const machineBusy = (m1.busy - m0.busy) / Math.max(1, m1.total - m0.total);
    return {
      institutions: o.institutions,
      offered: o.offered,
      nominal: r1(nominalOf(o)),
      signed_tps: r1(signed / seconds),
      pinned_tps: r1(pinnedTps),
      latency_p50_ms: quantile(latencies, 0.5),
      latency_p99_ms: quantile(latencies, 0.99),
      latency_samples: latencies.length,
      latency_little_ms: pinnedTps > 0 ? Math.round((1000 * meanPending) / pinnedTps) : null,
      heights_per_s: r2(pins.length / seconds),
      batch_ms_p50: quantile(gaps, 0.5),
      batch_ms_p99: quantile(gaps, 0.99),
      txs_per_batch: r1(txs / Math.max(1, pins.length)),
      max_batch_txs: o.maxBatchTxs,
      txs_per_bundle: o.txsPerBundle,
      round_gt0: pins.filter((p) => (p.round as number) > 0).length,
      mempool_max: Math.max(0, ...mempool),
      pending_own_end: nodes.reduce(
        (a, n) => a + ((n.statsAt(t1)?.pendingOwn as number | undefined) ?? 0),
        0,
      ),
      load_paused: warnings.LOAD_PAUSED ?? 0,
      cpu_nodes_cores: r2(cpuCores),
      cpu_max_node: r2(Math.max(...cpu)),
      cpu_ms_per_pinned_tx: pinnedTps > 0 ? r2((1000 * cpuCores) / pinnedTps) : null,
      machine_busy_pct: Math.round(100 * machineBusy),
      window_s: r1(seconds),
      warnings,
      warning_samples: warningSamples,
    };
  } finally {
    // SIGTERM lets each node stop cleanly, which is also when V8 writes its CPU profile.
    await Promise.all(nodes.map((n) => n.stop(o.profileDir === undefined ? 5000 : 30_000)));
    removeDir(dir);
  }
}

function show(rows: Row[]): void {
  printTable(
    rows.map((r) => ({
      n: r.institutions,
      offered: r.offered,
      nominal: r.nominal,
      signed: r.signed_tps,
      pinned: r.pinned_tps,
      'p50 ms': r.latency_p50_ms,
      'p99 ms': r.latency_p99_ms,
      'Little ms': r.latency_little_ms,
      'h/s': r.heights_per_s,
      'gap p50': r.batch_ms_p50,
      'txs/batch': r.txs_per_batch,
      cap: r.max_batch_txs,
      'tx/bundle': r.txs_per_bundle,
      'r>0': r.round_gt0,
      'mempool max': r.mempool_max,
      paused: r.load_paused,
      'cpu cores': r.cpu_nodes_cores,
      'cpu ms/tx': r.cpu_ms_per_pinned_tx,
      'busy %': r.machine_busy_pct,
    })),
  );
}

interface Failed {
  readonly institutions: number;
  readonly offered: number;
  readonly max_batch_txs: number;
  readonly txs_per_bundle: number;
  readonly error: string;
}

/** A sweep point that could not be measured is recorded, not fatal to the whole run. */
async function tryMeasure(label: string, o: RunOpts): Promise<Row | Failed> {
  try {
    return await measure(label, o);
  } catch (err) {
    const error = err instanceof Error ? err.message : String(err);
    process.stderr.write(`failed: ${error}\n`);
    return {
      institutions: o.institutions,
      offered: o.offered,
      max_batch_txs: o.maxBatchTxs,
      txs_per_bundle: o.txsPerBundle,
      error,
    };
  }
}

const measured = (rows: (Row | Failed)[]): Row[] => rows.filter((r): r is Row => !('error' in r));

async function measure(label: string, o: RunOpts): Promise<Row> {
  const t = Date.now();
  process.stderr.write(`${label} ... `);
  const row = await run(o);
  process.stderr.write(
    `pinned ${row.pinned_tps} tx/s (nominal ${row.nominal}), p50 ${row.latency_p50_ms} ms, ` +
      `${((Date.now() - t) / 1000).toFixed(0)} s\n`,
  );
  return row;
}

/** Where the nodes' CPU went in a profiled step: busy share per category, averaged over nodes. */
interface TimeBreakdown {
  readonly step: { institutions: number; offered: number; pinned_tps: number };
  /** Share of the node processes' main threads that was busy (not idle), averaged. */
  readonly main_thread_busy_pct: number;
  /** The same for the load's worker threads (null: none profiled). */
  readonly load_worker_busy_pct: number | null;
  /** Per category, percent of busy main-thread time. */
  readonly share_of_busy_pct: Record<string, number>;
  readonly note: string;
}

async function profiledStep(offered: number, dir: string): Promise<TimeBreakdown> {
  const row = await measure(`profile: 4 institutions, ${offered} tx/s`, {
    institutions: 4,
    offered,
    txsPerBundle: TPB,
    maxBatchTxs: CAP,
    windowS: STEP_S,
    profileDir: dir,
  });
  const files = readProfiles(dir);
  const main = files.filter((f) => f.thread === 0).map((f) => summariseProfile(f.profile));
  const workers = files.filter((f) => f.thread !== 0).map((f) => summariseProfile(f.profile));
  if (main.length === 0) throw new Error(`no CPU profiles were written to ${dir}`);
  const merged = mergeSummaries(main);
  const workerBusy = mergeSummaries(workers).idle;
  return {
    step: { institutions: 4, offered, pinned_tps: row.pinned_tps },
    main_thread_busy_pct: Math.round(100 - (merged.idle ?? 0)),
    load_worker_busy_pct: workerBusy === undefined ? null : Math.round(100 - workerBusy),
    share_of_busy_pct: busyShares(merged),
    note:
      'V8 CPU profiles (1 ms sampling) of each node process over the whole run (start-up ' +
      'included), samples charged by category (bench/lib/profile.ts). share_of_busy_pct is of the ' +
      "main threads; the load's signing runs on a worker thread per node (load_worker_busy_pct). " +
      '"libp2p" includes socket writes and noise; a chameleon or signature check is counted as ' +
      'such wherever it is called from (mempool, proposal, gossip validation).',
  };
}

function describe(rows: Row[], best: Row): string[] {
  const notes: string[] = [];
  const last = rows.at(-1)!;
  notes.push(
    `Best sustained pinned TPS at 4 institutions: ${best.pinned_tps} tx/s at ${best.offered} tx/s offered, ` +
      `pin latency p50 ${best.latency_p50_ms} ms, p99 ${best.latency_p99_ms} ms ` +
      `(paper: 218 TPS; project goal: 2,200 TPS).`,
  );
  if (last.pinned_tps < SATURATED * last.nominal) {
    notes.push(
      `Saturated at ${last.offered} tx/s offered: pinned ${last.pinned_tps} of nominal ${last.nominal} ` +
        `(signed ${last.signed_tps}); node processes used ${last.cpu_nodes_cores} cores in total ` +
        `(busiest ${last.cpu_max_node}), ${last.cpu_ms_per_pinned_tx} ms of CPU per pinned tx, ` +
        `machine busy ${last.machine_busy_pct}% of 2 cores; ${last.heights_per_s} heights/s, ` +
        `${last.txs_per_batch} txs per batch (cap ${last.max_batch_txs}), batch interval p50 ` +
        `${last.batch_ms_p50} ms, ${last.round_gt0} heights needed round > 0; mempool at node 0 up ` +
        `to ${last.mempool_max} bundles, ${last.load_paused} LOAD_PAUSED warnings.`,
    );
  } else {
    notes.push(`Pinned TPS still followed the offered load at the highest step (${last.offered}).`);
  }
  notes.push(
    'Latency: latency_p50_ms/p99 are per tx, from its bundle being signed to the pin of its batch ' +
      "as the signing node saw it (polled every 20 ms); latency_little_ms is Little's law over the " +
      'same window; batch_ms_p50/p99 is the interval between consecutive pins at node 0.',
  );
  return notes;
}

async function onlySteps(loads: readonly number[]): Promise<void> {
  const rows: Row[] = [];
  for (const offered of loads) {
    rows.push(
      await measure(`4 institutions, ${offered} tx/s`, {
        institutions: 4,
        offered,
        txsPerBundle: TPB,
        maxBatchTxs: CAP,
        windowS: STEP_S,
      }),
    );
  }
  show(rows);
  console.log('(--loads: results not written)');
}

async function main(): Promise<void> {
  const started = Date.now();
  if (PROFILE_DIR !== undefined) {
    const t = await profiledStep(ONLY_LOADS?.[0] ?? 800, PROFILE_DIR);
    console.log(
      `main threads busy ${t.main_thread_busy_pct}%, load workers ${t.load_worker_busy_pct}%; ` +
        'share of busy main-thread time:',
    );
    for (const [c, p] of Object.entries(t.share_of_busy_pct)) console.log(`  ${p}%  ${c}`);
    console.log(`CPU profiles of the nodes in ${PROFILE_DIR} (results not written)`);
    return;
  }
  if (ONLY_LOADS !== undefined) return onlySteps(ONLY_LOADS);
  console.log(
    `bench:chain${QUICK ? ' --quick' : ''}: ${STEP_S} s windows after a ${WARMUP_S} s warm-up, ` +
      `consensus batchIntervalMs ${localnetConsensus.batchIntervalMs}, maxBatchTxs ${CAP}, ` +
      `${TPB} txs per bundle`,
  );

  const steps: Row[] = [];
  for (const offered of LOADS) {
    const row = await measure(`4 institutions, ${offered} tx/s`, {
      institutions: 4,
      offered,
      txsPerBundle: TPB,
      maxBatchTxs: CAP,
      windowS: STEP_S,
    });
    steps.push(row);
    if (row.pinned_tps < SATURATED * row.nominal) break;
  }
  console.log('\nOffered load sweep, 4 institutions (tx/s; pinned = at node 0)');
  show(steps);
  const best = steps.reduce((a, b) => (b.pinned_tps > a.pinned_tps ? b : a));

  const groups: (Row | Failed)[] = [];
  for (const n of GROUPS) {
    groups.push(
      await tryMeasure(`${n} institutions, ${GROUP_LOAD} tx/s`, {
        institutions: n,
        offered: GROUP_LOAD,
        txsPerBundle: TPB,
        maxBatchTxs: CAP,
        windowS: SWEEP_S,
      }),
    );
  }
  console.log(`\nGroup size sweep at ${GROUP_LOAD} tx/s offered`);
  show(measured(groups));
  for (const g of groups)
    if ('error' in g) console.log(`${g.institutions} institutions: ${g.error}`);

  const shapes: (Row | Failed)[] = [];
  for (const s of BATCH_SHAPES) {
    shapes.push(
      await tryMeasure(
        `4 institutions, ${BATCH_LOAD} tx/s, maxBatchTxs ${s.maxBatchTxs}, txsPerBundle ${s.txsPerBundle}`,
        { institutions: 4, offered: BATCH_LOAD, windowS: SWEEP_S, ...s },
      ),
    );
  }
  console.log(`\nBatch shape sweep, 4 institutions at ${BATCH_LOAD} tx/s offered`);
  show(measured(shapes));
  for (const g of shapes) if ('error' in g) console.log(`shape failed: ${g.error}`);
  const bestShape = [best, ...measured(shapes)].reduce((a, b) =>
    b.pinned_tps > a.pinned_tps ? b : a,
  );

  let breakdown: TimeBreakdown | { error: string } | null = null;
  if (!values['no-profile']) {
    const dir = mkdtempSync(join(tmpdir(), 'spchain-bench-profile-'));
    registerDir(dir);
    try {
      breakdown = await profiledStep(best.offered, dir);
      console.log(
        `\nWhere the time goes (${best.offered} tx/s offered, % of busy main-thread CPU)`,
      );
      for (const [c, p] of Object.entries(breakdown.share_of_busy_pct)) {
        console.log(`  ${String(p).padStart(5)}%  ${c}`);
      }
    } catch (err) {
      breakdown = { error: err instanceof Error ? err.message : String(err) };
      console.log(`profiled step failed: ${breakdown.error}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  const notes = describe(steps, best);
  notes.push(
    `Best batch shape: maxBatchTxs ${bestShape.max_batch_txs}, txsPerBundle ${bestShape.txs_per_bundle}: ` +
      `${bestShape.pinned_tps} tx/s pinned, p50 ${bestShape.latency_p50_ms} ms, p99 ` +
      `${bestShape.latency_p99_ms} ms (${bestShape.cpu_nodes_cores} cores used by the nodes, ` +
      `machine busy ${bestShape.machine_busy_pct}%).`,
  );
  console.log('\nNotes');
  for (const n of notes) console.log(`- ${n}`);

  writeResults(new URL('results/chain.json', import.meta.url).pathname, {
    quick: QUICK,
    node: process.version,
    date: new Date().toISOString(),
    setup: {
      institutions: 4,
      patientsPerInstitution: PATIENTS,
      warmupS: WARMUP_S,
      stepWindowS: STEP_S,
      sweepWindowS: SWEEP_S,
      consensus: localnetConsensus,
      maxBatchTxs: CAP,
      txsPerBundle: TPB,
      labelEvery: LABEL_EVERY,
      saturationRule: `stop when pinned < ${SATURATED} x nominal offered`,
    },
    pinned_tps: best.pinned_tps,
    latency_p50_ms: best.latency_p50_ms,
    latency_p99_ms: best.latency_p99_ms,
    pinned_tps_best_batch_shape: bestShape.pinned_tps,
    steps,
    group_sweep: groups,
    batch_sweep: shapes,
    where_the_time_goes: breakdown,
    notes,
    runtime_s: Math.round((Date.now() - started) / 1000),
  });
  console.log(`\nwrote bench/results/chain.json (${Math.round((Date.now() - started) / 1000)} s)`);
}

main().then(
  () => {
    cleanupNow();
    process.exit(0);
  },
  (err: unknown) => {
    console.error(`bench:chain failed: ${err instanceof Error ? err.stack : String(err)}`);
    cleanupNow();
    process.exit(1);
  },
);
