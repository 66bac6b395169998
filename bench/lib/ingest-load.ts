/**
 * The load side of `npm run bench:ingest`: the patient bundles, a fresh copy of a bundle for every
 * post, and the client that posts them over loopback HTTP with bounded concurrency.
 *
 * Every post is a bundle no server has seen: each UUID of the bundle's `urn:uuid` fullUrls is
 * replaced, wherever it occurs in the text (fullUrls, references, resource ids), by a new random
 * UUID. So no server answers from an idempotency shortcut (the sidecar derives resource ids from
 * the request's bytes and would find a re-posted bundle already stored), and no id is reused.
 * The patient's identifier and birth date stay, so the sidecar knows the patient it registered.
 *
 * The client is Node's fetch (undici, keep-alive connections). A post's latency runs from the
 * request to the last byte of the response; the response is then checked (HTTP 200, a
 * transaction-response with one `201` entry per request entry): a server that does not do the
 * work is an error, never a number.
 */
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadMappingFile } from '../../src/fhir/mapping-file.ts';
import { parseServerTiming } from '../../src/fhir/timings.ts';
import type { PatientIdentity } from '../../src/ledger/idhash.ts';
import { chooseIdentifier } from '../../src/mapping/map-bundle.ts';

export const SYNTHEA_DIR = new URL('../../../shared/data/synthea/', import.meta.url).pathname;

export interface BenchBundle {
  readonly file: string;
  readonly text: string;
  readonly bytes: number;
  readonly entries: number;
  /** The UUIDs of its `urn:uuid:` fullUrls, replaced in every copy. */
  readonly uuids: ReadonlySet<string>;
  /** The bundle's Patient, as the sidecar's default mapping identifies it. */
  readonly patient: PatientIdentity;
}

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi;

/** The transaction bundles in `dir` (`*.json`), smallest first; every problem names the file. */
export async function loadBundles(dir: string = SYNTHEA_DIR): Promise<BenchBundle[]> {
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.json'));
  } catch {
    throw new Error(`the Synthea bundles are missing: expected *.json in ${dir}`);
  }
  if (files.length === 0) throw new Error(`no *.json bundles in ${dir}`);
  const mapping = await loadMappingFile();
  return files
    .map((file) => {
      const text = readFileSync(join(dir, file), 'utf8');
      return {
        file,
        text,
        ...describeBundle(file, JSON.parse(text), mapping.patientIdentifierSystems),
      };
    })
    .sort((a, b) => a.text.length - b.text.length)
    .map((b) => ({ ...b, bytes: Buffer.byteLength(b.text) }));
}

function describeBundle(
  file: string,
  bundle: unknown,
  systems: readonly string[],
): { entries: number; uuids: Set<string>; patient: PatientIdentity } {
  const b = bundle as { resourceType?: unknown; type?: unknown; entry?: unknown };
  if (b?.resourceType !== 'Bundle' || b.type !== 'transaction' || !Array.isArray(b.entry)) {
    throw new Error(`${file}: not a transaction Bundle with entries`);
  }
  const uuids = new Set<string>();
  let patient: PatientIdentity | undefined;
  for (const [i, e] of (
    b.entry as { fullUrl?: unknown; resource?: Record<string, unknown> }[]
  ).entries()) {
    if (typeof e?.fullUrl === 'string' && e.fullUrl.startsWith('urn:uuid:')) {
      uuids.add(e.fullUrl.slice('urn:uuid:'.length).toLowerCase());
    }
    const r = e?.resource;
    if (r?.resourceType === 'Patient') {
      if (patient) throw new Error(`${file}: more than one Patient (entry ${i})`);
      const id = chooseIdentifier(r, systems);
      if (!id || typeof r.birthDate !== 'string') {
        throw new Error(
          `${file}: entry ${i}: the Patient has no identifier of the mapping's systems or no birthDate`,
        );
      }
      patient = { system: id.system, value: id.value, birthDate: r.birthDate };
    }
  }
  if (!patient) throw new Error(`${file}: no Patient entry`);
  return { entries: b.entry.length, uuids, patient };
}

/** The bundle's text with each of its UUIDs replaced by a new random one (same length). */
export function freshCopy(b: BenchBundle): string {
  const fresh = new Map<string, string>();
  return b.text.replace(UUID, (u) => {
    const key = u.toLowerCase();
    if (!b.uuids.has(key)) return u;
    let to = fresh.get(key);
    if (to === undefined) {
      to = randomUUID();
      fresh.set(key, to);
    }
    return to;
  });
}

export interface Post {
  readonly text: string;
  readonly entries: number;
}

export interface PassResult {
  readonly wallMs: number;
  readonly latenciesMs: number[];
  /** Per post, its Server-Timing stages (ms), when the server sends them. */
  readonly stages: Map<string, number>[];
  readonly resources: number;
  readonly bytes: number;
}

/** Posts every bundle of `posts` to `url`, `concurrency` in flight; throws on any wrong answer. */
export async function runPass(
  url: string,
  headers: Readonly<Record<string, string>>,
  posts: readonly Post[],
  concurrency: number,
): Promise<PassResult> {
  const latenciesMs: number[] = [];
  const stages: Map<string, number>[] = [];
  let next = 0;
  const worker = async () => {
    while (next < posts.length) {
      const n = next++;
      const post = posts[n]!;
      const t0 = performance.now();
      const res = await fetch(url, {
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/fhir+json' },
        body: post.text,
      });
      const body = await res.text();
      latenciesMs.push(performance.now() - t0);
      const timing = res.headers.get('server-timing');
      if (timing !== null) stages.push(parseServerTiming(timing));
      checkResponse(res.status, body, post.entries, `post ${n + 1} of ${posts.length}`);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, posts.length) }, worker));
  return {
    wallMs: performance.now() - t0,
    latenciesMs,
    stages,
    resources: posts.reduce((s, p) => s + p.entries, 0),
    bytes: posts.reduce((s, p) => s + Buffer.byteLength(p.text), 0),
  };
}

/** Mean ms per post of each Server-Timing stage, over the posts that sent one. */
export function meanStages(stages: readonly Map<string, number>[]): Record<string, number> {
  const sums = new Map<string, number>();
  for (const post of stages) for (const [k, ms] of post) sums.set(k, (sums.get(k) ?? 0) + ms);
  return Object.fromEntries([...sums].map(([k, ms]) => [k, ms / stages.length]));
}

/** A transaction-response with `entries` created entries, or an error saying what came instead. */
export function checkResponse(status: number, body: string, entries: number, what: string): void {
  let json: {
    resourceType?: string;
    type?: string;
    entry?: { response?: { status?: string } }[];
    issue?: { details?: { text?: string }; diagnostics?: string }[];
  };
  try {
    json = JSON.parse(body);
  } catch {
    throw new Error(`${what}: HTTP ${status} with a body that is not JSON`);
  }
  if (status !== 200) {
    const why = json.issue?.map((i) => i.details?.text ?? i.diagnostics).join('; ');
    throw new Error(`${what}: HTTP ${status}${why ? `: ${why}` : ''}`);
  }
  if (json.resourceType !== 'Bundle' || json.type !== 'transaction-response') {
    throw new Error(`${what}: the answer is not a transaction-response Bundle`);
  }
  const got = json.entry ?? [];
  if (got.length !== entries) {
    throw new Error(`${what}: ${got.length} response entries for ${entries} request entries`);
  }
  const bad = got.findIndex((e) => !/^201\b/.test(e.response?.status ?? ''));
  if (bad >= 0) {
    throw new Error(
      `${what}: entry ${bad} answered ${got[bad]!.response?.status ?? 'no status'}, not 201`,
    );
  }
}

/** The nearest-rank percentile `p` (0..100) of `xs`. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length, Math.max(1, rank)) - 1]!;
}
