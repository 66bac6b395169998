/**
 * npm run bench:ingest [-- --quick] [--concurrency 4] [--rounds N]
 *                      [--servers medplum,medplum-validated,plain,spchain]
 *                      [--profile DIR]  (V8 CPU profiles of the servers; results not written)
 *
 * Issue 5's ingest benchmark: the Synthea transaction bundles (../shared/data/synthea) posted over
 * real HTTP on loopback to the servers in the same run, side by side:
 *   medplum  @medplum/fhir-router over its in-memory repository, behind a fastify POST /fhir;
 *   medplum-validated  the same with @medplum/core's validateResource first: not a goal, a
 *            reference that shows what validation alone costs (spchain validates the same way);
 *   plain    fastify + LevelDB with no encryption (ids, urn:uuid rewrite, one fsynced batch);
 *   spchain  our sidecar (src/main.ts) with its patients registered first.
 * Each server runs in a child process of its own (bench/lib/ingest-servers.ts); this process only
 * sends, with `concurrency` posts in flight (Node's fetch, keep-alive). Every post is a fresh copy
 * of a bundle (new UUIDs, same patient: bench/lib/ingest-load.ts), and every answer is checked to
 * be a transaction-response with a 201 per entry.
 *
 * Order: all servers start (patients registered at the sidecar); each gets a warm-up pass of
 * every bundle that is not measured (the JIT warms up, and the sidecar sees each patient once:
 * its first record of a patient computes the idHash, a deliberately slow scrypt, and remembers
 * it); then `rounds` rounds, each a pass to each server in turn: every bundle posted once, the
 * set repeated until the pass has lasted `minPassS` (the baselines take a set in well under a
 * second); the order of servers rotates per round, so none always goes first on a machine whose load changes). After
 * each pass the harness waits for the server to settle (its CPU back near its idle rate: the
 * sidecar anchors records after answering), so no server's leftover work runs during another's
 * pass, and CPU per resource counts that deferred work.
 *
 * Per server: resources/s and bundles/s (resources posted / wall time of the passes), p50/p99 of
 * the per-bundle latency (all posts pooled; bundles have 66 to 676 entries, so this mixes sizes),
 * and server CPU ms per resource (process CPU, all threads, over pass + settle). Then
 * `ratio_vs_medplum` = spchain resources/s / medplum resources/s (goal >= 1) and
 * `overhead_vs_plain` = spchain wall time per resource / plain's (goal <= 2), plus the same
 * ratio of CPU per resource. Written to bench/results/ingest.json with a printed table.
 * Not a test: no thresholds. `--quick`: one measured round instead of four.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, freemem, loadavg, tmpdir, totalmem } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  type BenchBundle,
  freshCopy,
  loadBundles,
  meanStages,
  type PassResult,
  percentile,
  runPass,
  SYNTHEA_DIR,
} from './lib/ingest-load.ts';
import {
  allServers,
  cleanupServers,
  type IngestServer,
  type RunningServer,
  type ServerName,
} from './lib/ingest-servers.ts';
import { printTable, writeResults } from './lib/measure.ts';
import { cpuSeconds, sleep } from './lib/procs.ts';

const RESULTS = new URL('./results/ingest.json', import.meta.url).pathname;

interface Settings {
  readonly quick: boolean;
  readonly concurrency: number;
  readonly rounds: number;
  /** A measured pass repeats the bundle set until it has lasted this long. */
  readonly minPassS: number;
  readonly servers: readonly IngestServer[];
  /** Write V8 CPU profiles of the servers here (and no results: profiling slows them). */
  readonly profileDir: string | null;
}

function parseSettings(argv: string[]): Settings {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      concurrency: { type: 'string' },
      rounds: { type: 'string' },
      servers: { type: 'string' },
      profile: { type: 'string' },
    },
    strict: true,
  });
  const int = (text: string | undefined, name: string, fallback: number, max: number) => {
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1 || n > max) {
      throw new Error(`--${name} must be an integer from 1 to ${max}, got ${text}`);
    }
    return n;
  };
  const quick = values.quick ?? false;
  const names = (values.servers ?? allServers.map((s) => s.name).join(',')).split(',');
  const servers = names.map((n) => {
    const s = allServers.find((x) => x.name === n.trim());
    if (!s)
      throw new Error(
        `--servers: unknown server ${n} (known: ${allServers.map((x) => x.name).join(', ')})`,
      );
    return s;
  });
  return {
    quick,
    concurrency: int(values.concurrency, 'concurrency', 4, 64),
    rounds: int(values.rounds, 'rounds', quick ? 1 : 4, 100),
    minPassS: quick ? 1 : 3,
    servers,
    profileDir: values.profile ? resolve(values.profile) : null,
  };
}

interface Pass extends PassResult {
  readonly cpuS: number;
  readonly settleS: number | null;
}

interface Live {
  readonly server: IngestServer;
  readonly running: RunningServer;
  /** CPU cores the process uses when idle, measured before any load. */
  readonly idleCores: number;
  readonly passes: Pass[];
  /** Resident and peak resident memory (MiB) of the process after the last pass. */
  memory?: { rss: number; peak: number };
}

/** VmRSS and VmHWM of `pid` in MiB, from /proc (null where there is none). */
function memoryOf(pid: number): { rss: number; peak: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (field: string) =>
      Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]);
    return { rss: kib('VmRSS') / 1024, peak: kib('VmHWM') / 1024 };
  } catch {
    return undefined;
  }
}

const SETTLE_WINDOW_MS = 500;
const SETTLE_TIMEOUT_MS = 120_000;

function cpuOf(pid: number): number {
  const s = cpuSeconds(pid);
  if (s === null) throw new Error(`server process ${pid} is gone`);
  return s;
}

/** CPU cores `pid` used over `ms`. */
async function coresOver(pid: number, ms: number): Promise<number> {
  const c0 = cpuOf(pid);
  const t0 = performance.now();
  await sleep(ms);
  return (cpuOf(pid) - c0) / ((performance.now() - t0) / 1000);
}

/** Waits until the process is back near its idle CPU rate; seconds taken, or null on timeout. */
async function settle(l: Live): Promise<number | null> {
  const t0 = performance.now();
  const limit = l.idleCores + 0.05;
  while (performance.now() - t0 < SETTLE_TIMEOUT_MS) {
    if ((await coresOver(l.running.pid, SETTLE_WINDOW_MS)) <= limit) {
      return (performance.now() - t0) / 1000;
    }
  }
  return null;
}

/** One measured pass of every bundle to one server: fresh copies made before the clock starts. */
/**
 * One measured pass to one server: every bundle posted once, again and again until the pass has
 * lasted `minPassS` (fast servers finish a set in a fraction of a second, too short to measure);
 * each set's fresh copies are made before its clock starts. Then the wait for the server to settle.
 */
async function measurePass(l: Live, bundles: readonly BenchBundle[], s: Settings): Promise<Pass> {
  const c0 = cpuOf(l.running.pid);
  const sets: PassResult[] = [];
  while (sets.reduce((a, x) => a + x.wallMs, 0) < s.minPassS * 1000) {
    const posts = bundles.map((b) => ({ text: freshCopy(b), entries: b.entries }));
    sets.push(await runPass(l.running.url, l.running.headers, posts, s.concurrency));
  }
  const result: PassResult = {
    wallMs: sets.reduce((a, x) => a + x.wallMs, 0),
    latenciesMs: sets.flatMap((x) => x.latenciesMs),
    stages: sets.flatMap((x) => x.stages),
    resources: sets.reduce((a, x) => a + x.resources, 0),
    bytes: sets.reduce((a, x) => a + x.bytes, 0),
  };
  const settleS = await settle(l);
  if (settleS === null) {
    console.warn(`${l.server.name}: still busy ${SETTLE_TIMEOUT_MS / 1000} s after its pass`);
  }
  return { ...result, cpuS: cpuOf(l.running.pid) - c0, settleS };
}

function summarise(l: Live) {
  const resources = l.passes.reduce((a, p) => a + p.resources, 0);
  const wallS = l.passes.reduce((a, p) => a + p.wallMs, 0) / 1000;
  const posts = l.passes.reduce((a, p) => a + p.latenciesMs.length, 0);
  const latencies = l.passes.flatMap((p) => p.latenciesMs);
  const stages = l.passes.flatMap((p) => p.stages);
  const cpuS = l.passes.reduce((a, p) => a + p.cpuS, 0);
  const settles = l.passes.map((p) => p.settleS).filter((x): x is number => x !== null);
  return {
    server: l.server.name,
    description: l.server.description,
    resources_per_s: resources / wallS,
    bundles_per_s: posts / wallS,
    p50_ms: percentile(latencies, 50),
    p99_ms: percentile(latencies, 99),
    latency_samples: latencies.length,
    server_timing_mean_ms: stages.length > 0 ? meanStages(stages) : null,
    wall_ms_per_resource: (wallS * 1000) / resources,
    cpu_ms_per_resource: (cpuS * 1000) / resources,
    idle_cores: l.idleCores,
    settle_s_max: settles.length ? Math.max(...settles) : null,
    settle_timeouts: l.passes.length - settles.length,
    rss_mib_at_end: l.memory?.rss ?? null,
    peak_rss_mib: l.memory?.peak ?? null,
    passes: l.passes.map((p) => ({
      resources: p.resources,
      mib: p.bytes / 2 ** 20,
      wall_s: p.wallMs / 1000,
      resources_per_s: p.resources / (p.wallMs / 1000),
      cpu_s: p.cpuS,
      settle_s: p.settleS,
    })),
  };
}

async function main(): Promise<void> {
  const s = parseSettings(process.argv.slice(2));
  const bundles = await loadBundles();
  const perPass = bundles.reduce((a, b) => a + b.entries, 0);
  const loadStart = loadavg();
  console.log(
    `${bundles.length} bundles, ${perPass} resources per pass; servers ${s.servers.map((x) => x.name).join(', ')}; ` +
      `concurrency ${s.concurrency}, ${s.rounds} round(s)${s.quick ? ' (quick)' : ''}`,
  );

  const dir = mkdtempSync(join(tmpdir(), 'spchain-bench-ingest-'));
  const cleanup = () => {
    cleanupServers();
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', cleanup);
  process.once('SIGINT', () => process.exit(130));
  process.once('SIGTERM', () => process.exit(143));

  const lives: Live[] = [];
  try {
    for (const server of s.servers) {
      const t0 = performance.now();
      const running = await server.start(
        join(dir, server.name),
        bundles.map((b) => b.patient),
        s.profileDir ? ['--cpu-prof', '--cpu-prof-dir', join(s.profileDir, server.name)] : [],
      );
      await sleep(1000);
      const idleCores = await coresOver(running.pid, 2000);
      lives.push({ server, running, idleCores, passes: [] });
      console.log(
        `${server.name}: ready in ${((performance.now() - t0) / 1000).toFixed(1)} s (idle ${(idleCores * 100).toFixed(1)} % of a core)`,
      );
    }
    for (const l of lives) {
      const posts = bundles.map((b) => ({ text: freshCopy(b), entries: b.entries }));
      await runPass(l.running.url, l.running.headers, posts, s.concurrency);
      await settle(l);
      console.log(`${l.server.name}: warmed up (${posts.length} bundles)`);
    }
    for (let r = 0; r < s.rounds; r++) {
      for (let k = 0; k < lives.length; k++) {
        const l = lives[(k + r) % lives.length]!;
        const pass = await measurePass(l, bundles, s);
        l.passes.push(pass);
        console.log(
          `round ${r + 1}/${s.rounds} ${l.server.name}: ${(pass.resources / (pass.wallMs / 1000)).toFixed(0)} resources/s, ` +
            `settled in ${pass.settleS === null ? '(timeout)' : `${pass.settleS.toFixed(1)} s`}`,
        );
      }
    }
    for (const l of lives) l.memory = memoryOf(l.running.pid);
  } finally {
    for (const l of lives) await l.running.stop();
  }

  const results = lives.map(summarise);
  const by = (name: ServerName) => results.find((x) => x.server === name);
  const ours = by('spchain');
  const medplum = by('medplum');
  const plain = by('plain');
  const ratio = (a: number | undefined, b: number | undefined) =>
    a === undefined || b === undefined ? null : a / b;
  const report = {
    bench: 'ingest',
    date: new Date().toISOString(),
    machine: {
      cores: cpus().length,
      cpu: cpus()[0]?.model ?? 'unknown',
      memory_gib: totalmem() / 2 ** 30,
      free_memory_gib_at_start: freemem() / 2 ** 30,
      loadavg_at_start: loadStart,
      loadavg_at_end: loadavg(),
      node: process.version,
      platform: `${process.platform} ${process.arch}`,
    },
    settings: {
      quick: s.quick,
      concurrency: s.concurrency,
      rounds: s.rounds,
      min_pass_s: s.minPassS,
      warmup: 'one unmeasured pass of every bundle per server',
      servers: s.servers.map((x) => x.name),
      bundles: {
        source: relative(process.cwd(), SYNTHEA_DIR) || SYNTHEA_DIR,
        files: bundles.length,
        resources_per_pass: perPass,
        mib_per_pass: bundles.reduce((a, b) => a + b.bytes, 0) / 2 ** 20,
        entries_min: Math.min(...bundles.map((b) => b.entries)),
        entries_max: Math.max(...bundles.map((b) => b.entries)),
      },
      posts:
        'every post a fresh copy: the bundle UUIDs (fullUrls, references, ids) replaced by new random UUIDs',
      http: 'loopback, Node fetch (undici) keep-alive; each server in its own process',
      spchain:
        'npm start defaults: one-institution network, embedded queue, default mapping; SPCHAIN_LOG_LEVEL=warn',
      settle: `after each pass, until the server process uses at most its idle CPU + 0.05 core over ${SETTLE_WINDOW_MS} ms`,
    },
    goals: { ratio_vs_medplum: '>= 1', overhead_vs_plain: '<= 2' },
    ratio_vs_medplum: ratio(ours?.resources_per_s, medplum?.resources_per_s),
    overhead_vs_plain: ratio(ours?.wall_ms_per_resource, plain?.wall_ms_per_resource),
    cpu_ratio_vs_medplum: ratio(ours?.cpu_ms_per_resource, medplum?.cpu_ms_per_resource),
    cpu_overhead_vs_plain: ratio(ours?.cpu_ms_per_resource, plain?.cpu_ms_per_resource),
    ratio_vs_medplum_validated: ratio(
      ours?.resources_per_s,
      by('medplum-validated')?.resources_per_s,
    ),
    definitions: {
      ratio_vs_medplum_validated:
        'spchain resources/s / resources/s of medplum with @medplum/core validation (a reference, not a goal)',
      ratio_vs_medplum: 'spchain resources/s / medplum resources/s',
      overhead_vs_plain:
        'spchain wall ms per resource / plain wall ms per resource (= plain resources/s / spchain resources/s)',
      cpu_ratio_vs_medplum:
        'spchain server CPU ms per resource / medplum server CPU ms per resource',
      cpu_overhead_vs_plain:
        'spchain server CPU ms per resource / plain server CPU ms per resource',
    },
    results,
  };
  if (s.profileDir === null) writeResults(RESULTS, report);
  console.log('');
  printTable(
    results.map((x) => ({
      server: x.server,
      'resources/s': x.resources_per_s,
      'bundles/s': x.bundles_per_s,
      'p50 ms': x.p50_ms,
      'p99 ms': x.p99_ms,
      posts: x.latency_samples,
      'cpu ms/resource': x.cpu_ms_per_resource,
      'settle s (max)': x.settle_s_max,
      'peak MiB': x.peak_rss_mib,
    })),
  );
  for (const x of results) {
    if (x.server_timing_mean_ms === null) continue;
    const parts = Object.entries(x.server_timing_mean_ms).map(([k, ms]) => `${k} ${ms.toFixed(0)}`);
    console.log(`${x.server}: mean ms per post by stage (Server-Timing): ${parts.join(', ')}`);
  }
  const f = (v: number | null) => (v === null ? '-' : v.toFixed(2));
  console.log(
    `\nratio_vs_medplum ${f(report.ratio_vs_medplum)} (goal >= 1)   overhead_vs_plain ${f(report.overhead_vs_plain)} (goal <= 2)   ` +
      `cpu: ${f(report.cpu_ratio_vs_medplum)} x medplum, ${f(report.cpu_overhead_vs_plain)} x plain`,
  );
  console.log(
    s.profileDir === null
      ? `written to ${RESULTS}`
      : `profiled run, so not written to ${RESULTS}; profiles in ${s.profileDir} (node bench/lib/profile.ts <dir>)`,
  );
}

main().catch((err: unknown) => {
  console.error(`bench:ingest failed: ${(err as Error).message}`);
  process.exit(1);
});
