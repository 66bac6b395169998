/**
 * npm run bench:validate — FHIR validation (src/fhir/validate.ts) inline vs in a worker thread,
 * on prefixes of the largest Synthea bundle in ../shared/data/synthea (1 entry up to all of them),
 * to choose the entry count above which a bundle goes to a worker, and the full bundle's figures.
 *
 * For each size: the median time of validating inline (the event loop is blocked all that time),
 * and the median round trip through the worker (JSON text posted, parsed and validated there,
 * issues back), in alternating rounds so both see the same machine. For the full bundle it also
 * records the longest event-loop stall of the main thread while the worker validates. Writes
 * bench/results/validate.json. Not a test: no thresholds.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Bundle } from '@medplum/fhirtypes';
import { FhirValidator } from '../src/fhir/validate.ts';
import { validateHere } from '../src/fhir/validate-core.ts';
import { median, printTable, writeResults } from './lib/measure.ts';

const DIR = new URL('../../shared/data/synthea/', import.meta.url);
const ROUNDS = 7;

const bundles = readdirSync(DIR)
  .filter((f) => f.endsWith('.json'))
  .map((f) => JSON.parse(readFileSync(new URL(f, DIR), 'utf8')) as Bundle);
const largest = bundles.reduce((a, b) => ((b.entry?.length ?? 0) > (a.entry?.length ?? 0) ? b : a));
const total = largest.entry?.length ?? 0;

const worker = new FhirValidator({ inlineMaxEntries: 0, threads: 1 });
const t0 = performance.now();
await worker.start();
const startMs = performance.now() - t0;

const sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256, total].filter((n) => n <= total);
const rows: Record<string, number>[] = [];
for (const n of sizes) {
  const bundle: Bundle = { ...largest, entry: largest.entry?.slice(0, n) };
  const text = JSON.stringify(bundle);
  const inline: number[] = [];
  const viaWorker: number[] = [];
  for (let r = -2; r < ROUNDS; r++) {
    let t = performance.now();
    validateHere(bundle);
    if (r >= 0) inline.push(performance.now() - t);
    t = performance.now();
    const res = await worker.validate(bundle, text);
    if (res.ranIn !== 'worker') throw new Error('expected the worker');
    if (r >= 0) viaWorker.push(performance.now() - t);
  }
  rows.push({
    entries: n,
    kib: text.length / 1024,
    inline_ms: median(inline),
    worker_round_trip_ms: median(viaWorker),
  });
}
printTable(rows);

// The full bundle: how long the main thread's event loop stalls while the worker validates.
const text = JSON.stringify(largest);
const stalls: number[] = [];
for (let r = 0; r < ROUNDS; r++) {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  await worker.validate(largest, text);
  h.disable();
  stalls.push(h.max / 1e6);
}
await worker.close();
const full = rows.at(-1)!;
const summary = {
  bundle_entries: total,
  bundle_kib: full.kib,
  inline_ms: full.inline_ms,
  worker_round_trip_ms: full.worker_round_trip_ms,
  main_loop_max_stall_with_worker_ms: median(stalls),
  worker_start_ms: startMs,
};
console.log(summary);
writeResults(new URL('results/validate.json', import.meta.url).pathname, {
  date: new Date().toISOString(),
  note: 'medians of 7 rounds; prefixes of the largest Synthea bundle',
  sizes: rows,
  largest: summary,
});
