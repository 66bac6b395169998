/**
 * `spchain import <files or dirs...>`: bulk import of FHIR Bundle files into a sidecar, as an EHR
 * would post them: each file is read, checked to be a JSON Bundle, and posted to `<sidecar>/fhir`
 * with the EHR bearer token, `concurrency` at a time. Progress goes to stderr: one line redrawn
 * with \r on a terminal, a count every tenth of the way otherwise. The summary (stdout) gives the
 * bundles imported and failed, the resources stored, the time, and the first errors, each naming
 * its file; with `results`, every file's outcome (status, resources, the records' locations) is
 * written as JSON for scripts. Bundle contents never appear in the output.
 */
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, fetchJson } from './patient.ts';
import { baseUrl, type Print } from './share.ts';

export interface ImportOpts {
  readonly paths: readonly string[];
  readonly sidecar: string;
  readonly token: string;
  readonly concurrency: number;
  /** A JSON file for every file's outcome. */
  readonly results?: string;
  /** Redraw one progress line (a terminal) rather than print counts. */
  readonly tty: boolean;
  readonly print: Print;
  /** Progress output (stderr). */
  readonly progress: (text: string) => void;
  readonly now?: () => number;
}

export interface FileOutcome {
  readonly file: string;
  readonly ok: boolean;
  readonly status?: number;
  readonly resources: number;
  readonly locations: readonly string[];
  readonly error?: string;
}

export interface ImportSummary {
  readonly bundles: number;
  readonly ok: number;
  readonly failed: number;
  readonly resources: number;
  readonly ms: number;
  readonly outcomes: readonly FileOutcome[];
}

/** Shown in the summary; the results file has them all. */
const FIRST_ERRORS = 5;

/** The JSON files named: files as given, directories searched (recursively), in name order. */
export async function bundleFiles(paths: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const p of paths) {
    const s = await stat(p).catch(() => {
      throw new Error(`no such file or directory: ${p}`);
    });
    if (s.isDirectory()) {
      const names = await readdir(p, { recursive: true });
      out.push(
        ...names
          .filter((n) => n.toLowerCase().endsWith('.json'))
          .sort()
          .map((n) => join(p, n)),
      );
    } else {
      out.push(p);
    }
  }
  if (out.length === 0) throw new Error('no .json files in the paths given');
  return out;
}

type Json = Record<string, unknown>;

interface EntryResponse {
  readonly response?: { readonly status?: string; readonly location?: string };
}

/** Posts one file; never throws (a failure is an outcome naming its file). */
async function importFile(file: string, base: string, token: string): Promise<FileOutcome> {
  const failed = (error: string, status?: number): FileOutcome => ({
    file,
    ok: false,
    ...(status === undefined ? {} : { status }),
    resources: 0,
    locations: [],
    error,
  });
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    return failed(`cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let json: Json;
  try {
    json = JSON.parse(text) as Json;
  } catch {
    return failed('is not JSON');
  }
  if (typeof json !== 'object' || json === null || json.resourceType !== 'Bundle') {
    return failed('is not a FHIR Bundle (resourceType must be "Bundle")');
  }
  let r: { status: number; body: unknown };
  try {
    r = await fetchJson(`${base}/fhir`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/fhir+json' },
      body: text,
    });
  } catch (err) {
    return failed((err as Error).message);
  }
  if (r.status !== 200) return failed(`was refused: ${describe(r)}`, r.status);
  const entries = ((r.body as { entry?: unknown })?.entry ?? []) as EntryResponse[];
  const done = entries.filter((e) => /^2\d\d/.test(e.response?.status ?? ''));
  const locations = done.map((e) => e.response?.location).filter((l) => typeof l === 'string');
  const bad = entries.length - done.length;
  return {
    file,
    ok: bad === 0,
    status: r.status,
    resources: done.length,
    locations,
    ...(bad === 0 ? {} : { error: `${bad} of ${entries.length} entries failed` }),
  };
}

/** A progress bar of `width` characters. */
export function progressLine(done: number, total: number, failed: number, ms: number): string {
  const width = 30;
  const filled = total === 0 ? width : Math.round((done / total) * width);
  const bar = `${'='.repeat(filled)}${' '.repeat(width - filled)}`;
  return `[${bar}] ${done}/${total} bundles, ${failed} failed, ${(ms / 1000).toFixed(1)} s`;
}

export async function importBundles(o: ImportOpts): Promise<ImportSummary> {
  if (!Number.isSafeInteger(o.concurrency) || o.concurrency < 1 || o.concurrency > 64) {
    throw new Error('--concurrency must be an integer from 1 to 64');
  }
  const now = o.now ?? Date.now;
  const files = await bundleFiles(o.paths);
  const base = baseUrl(o.sidecar);
  const start = now();
  const outcomes: FileOutcome[] = new Array(files.length);
  let next = 0;
  let done = 0;
  let failed = 0;
  const step = Math.max(1, Math.floor(files.length / 10));
  const report = () => {
    const line = progressLine(done, files.length, failed, now() - start);
    if (o.tty) o.progress(`\r${line}${done === files.length ? '\n' : ''}`);
    else if (done % step === 0 || done === files.length) {
      o.progress(`${done}/${files.length} bundles, ${failed} failed\n`);
    }
  };
  if (o.tty) report();
  const worker = async () => {
    while (next < files.length) {
      const i = next++;
      const outcome = await importFile(files[i]!, base, o.token);
      outcomes[i] = outcome;
      done++;
      if (!outcome.ok) failed++;
      report();
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.concurrency, files.length) }, worker));
  const ms = now() - start;
  const summary: ImportSummary = {
    bundles: files.length,
    ok: files.length - failed,
    failed,
    resources: outcomes.reduce((n, x) => n + x.resources, 0),
    ms,
    outcomes,
  };
  printSummary(summary, o.print);
  if (o.results !== undefined) {
    await writeFile(o.results, `${JSON.stringify(outcomes, null, 2)}\n`, { mode: 0o600 });
    o.print(`results written to ${o.results}`);
  }
  return summary;
}

function printSummary(s: ImportSummary, print: Print): void {
  const seconds = s.ms / 1000;
  const rate = seconds > 0 ? ` (${(s.bundles / seconds).toFixed(1)} bundles/s)` : '';
  print(
    `imported ${s.ok} of ${s.bundles} bundles, ${s.failed} failed: ${s.resources} resources in ${seconds.toFixed(1)} s${rate}`,
  );
  const errors = s.outcomes.filter((x) => !x.ok);
  if (errors.length === 0) return;
  print(`first errors (${Math.min(errors.length, FIRST_ERRORS)} of ${errors.length}):`);
  for (const e of errors.slice(0, FIRST_ERRORS)) print(`  ${e.file}: ${e.error}`);
}

/** The EHR token: given, else $SPCHAIN_EHR_TOKEN, else the sidecar data directory's file. */
export async function ehrTokenOf(o: {
  readonly token?: string;
  readonly dataDir: string;
  readonly env: Readonly<Record<string, string | undefined>>;
}): Promise<string> {
  if (o.token !== undefined && o.token !== '') return o.token;
  const fromEnv = o.env.SPCHAIN_EHR_TOKEN;
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  const file = join(o.dataDir, 'ehr-token');
  const text = await readFile(file, 'utf8').catch(() => {
    throw new Error(
      `no EHR token: pass --token, set SPCHAIN_EHR_TOKEN, or point --data-dir at the sidecar's data (${file})`,
    );
  });
  return text.trim();
}
