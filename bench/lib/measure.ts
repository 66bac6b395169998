/** Small timing helpers for the benchmarks (not tests: no thresholds here). */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Per-call microseconds of `f`, `iterations` times after `warmup` calls. */
export function sample(f: () => unknown, iterations: number, warmup = 10): number[] {
  for (let i = 0; i < warmup; i++) f();
  const out: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const t0 = performance.now();
    f();
    out.push((performance.now() - t0) * 1000);
  }
  return out;
}

/**
 * Medians of two implementations of one operation, measured in alternating rounds so that both
 * see the same machine state (thermal, other load).
 */
export function sideBySide(
  ours: () => unknown,
  theirs: (() => unknown) | null,
  iterations: number,
  rounds = 5,
): { ours: number; theirs: number | null } {
  const a: number[] = [];
  const b: number[] = [];
  const per = Math.max(1, Math.round(iterations / rounds));
  for (let r = 0; r < rounds; r++) {
    a.push(...sample(ours, per, r === 0 ? 20 : 2));
    if (theirs) b.push(...sample(theirs, per, r === 0 ? 20 : 2));
  }
  return { ours: median(a), theirs: theirs ? median(b) : null };
}

export function writeResults(path: string, data: unknown): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(data, null, 2)}\n`);
}

export function printTable(rows: Record<string, string | number | null>[]): void {
  if (rows.length === 0) return;
  const cols = Object.keys(rows[0]!);
  const cell = (v: string | number | null | undefined) =>
    v === null || v === undefined ? '-' : typeof v === 'number' ? formatNumber(v) : v;
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i]!)).join('  ');
  console.log(line(cols));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const r of rows) console.log(line(cols.map((c) => cell(r[c]))));
}

function formatNumber(v: number): string {
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
}
