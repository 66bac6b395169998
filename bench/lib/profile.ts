/**
 * Reads V8 CPU profiles (`node --cpu-prof`) and says where the time went: self time per function,
 * and time per category (signature checks, chameleon checks, hashing, encoding, Merkle trees,
 * LevelDB, libp2p and its streams, mempool bookkeeping, load signing, GC, idle), each sample charged
 * to the category of highest precedence found anywhere on its stack.
 *
 *   node bench/lib/profile.ts <file.cpuprofile | dir> [--top 30]
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}

interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
  readonly children?: readonly number[];
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly endTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/**
 * Categories in three tiers. A sample is charged to a tier-0 category found anywhere on its stack
 * (everything the load runner does to sign a bundle is load signing), else to the tier-1 category
 * nearest its leaf (the work itself: a chameleon check inside a mempool re-judgement is a chameleon
 * check, the tx hash inside a signature check is hashing), else to the tier-2 category nearest its
 * leaf (where the rest happened: a socket write under yamux is libp2p). A frame is claimed when its
 * function name or its file matches.
 */
const CATEGORIES: readonly { name: string; tier: 0 | 1 | 2; fn?: RegExp; file?: RegExp }[] = [
  { name: 'idle', tier: 0, fn: /^\(idle\)$/ },
  { name: 'gc', tier: 0, fn: /^\(garbage collector\)$/ },
  { name: 'load signing', tier: 0, fn: /^(makeBundle|makeRecordTx|signBundle)$/ },
  { name: 'load outbox', tier: 0, file: /src\/node\/load\.ts$/ },
  { name: 'tx hashing (encode + sha256)', tier: 1, fn: /^(txHash|txHashOfEncoding)$/ },
  {
    name: 'signature checks',
    tier: 1,
    fn: /^(ecdsaVerify|verifyBundleSignature|verifyMessage|verifyCertificate|verifyVote)$/,
  },
  { name: 'chameleon checks', tier: 1, fn: /^verifyChameleon(Cached)?$/ },
  { name: 'merkle', tier: 1, file: /src\/crypto\/merkle\.ts$/ },
  { name: 'hashing (other)', tier: 2, file: /@noble\/hashes|src\/ledger\/hash\.ts$/ },
  {
    name: 'encoding / decoding',
    tier: 2,
    file: /src\/ledger\/codec\.ts$/,
    fn: /^(encodeTx|readTx|readBundle|encodeBatch|decodeBatch|encodeBundle|decodeBundle)$/,
  },
  { name: 'leveldb / store', tier: 2, file: /src\/store\/|classic-level|abstract-level|level-/ },
  {
    name: 'libp2p / noise / yamux / gossipsub',
    tier: 2,
    file: /@libp2p|libp2p|@chainsafe|it-|uint8arraylist|protons|@multiformats|multiformats/,
  },
  { name: 'p2p edge', tier: 2, file: /src\/p2p\// },
  { name: 'mempool bookkeeping', tier: 2, file: /src\/ledger\/replica-(mempool|view)\.ts$/ },
  {
    name: 'batch validation',
    tier: 2,
    file: /src\/ledger\/(batch|microblock|replica|replica-batch|batching)\.ts$/,
  },
  {
    name: 'consensus (bft, wal)',
    tier: 2,
    file: /src\/ledger\/bft|src\/node\/(consensus|wal)\.ts$/,
  },
  { name: 'other ledger', tier: 2, file: /src\/ledger\// },
  { name: 'other node', tier: 2, file: /src\/node\// },
  { name: 'crypto (other)', tier: 2, file: /src\/crypto\/|@noble|secp256k1/ },
  { name: 'module loading', tier: 2, fn: /^(compileSourceTextModule|compileForInternalLoader)$/ },
];

/** The category that claims `frame`, if any. */
function categoryOf(frame: CallFrame): (typeof CATEGORIES)[number] | undefined {
  return CATEGORIES.find(
    (c) => c.fn?.test(frame.functionName) === true || c.file?.test(frame.url) === true,
  );
}

/** Per tier, the category found on a stack: tier 0 anywhere, tiers 1 and 2 nearest the leaf. */
type Found = readonly [string | null, string | null, string | null];

export interface ProfileSummary {
  /** Profiled wall time, seconds. */
  readonly seconds: number;
  /** Share of profiled time per category, in percent, largest first (idle included). */
  readonly categories: Record<string, number>;
  /** Busy share (not idle), in percent. */
  readonly busyPct: number;
  /** Functions by self time, percent of profiled time. */
  readonly top: { fn: string; where: string; pct: number }[];
}

export function summariseProfile(profile: CpuProfile, topN = 30): ProfileSummary {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of profile.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const found = new Map<number, Found>();
  const foundOf = (id: number): Found => {
    const trail: number[] = [];
    let above: Found = [null, null, null];
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const known = found.get(at);
      if (known !== undefined) {
        above = known;
        break;
      }
      trail.push(at);
    }
    // From the root side down: a node's own claim overrides what its ancestors found.
    for (let k = trail.length - 1; k >= 0; k--) {
      const n = trail[k]!;
      const c = categoryOf(byId.get(n)!.callFrame);
      const next: [string | null, string | null, string | null] = [...above];
      if (c !== undefined) next[c.tier] = c.tier === 0 ? (above[0] ?? c.name) : c.name;
      above = next;
      found.set(n, above);
    }
    return found.get(id)!;
  };
  const resolve = (id: number): string => {
    const [t0, t1, t2] = foundOf(id);
    return t0 ?? t1 ?? t2 ?? 'other';
  };
  const cats = new Map<string, number>();
  const self = new Map<number, number>();
  let total = 0;
  profile.samples.forEach((id, k) => {
    const dt = profile.timeDeltas[k] ?? 0;
    total += dt;
    self.set(id, (self.get(id) ?? 0) + dt);
    const c = resolve(id);
    cats.set(c, (cats.get(c) ?? 0) + dt);
  });
  const pct = (x: number) => Math.round((1000 * x) / Math.max(1, total)) / 10;
  const categories: Record<string, number> = {};
  for (const [c, t] of [...cats].sort((a, b) => b[1] - a[1])) categories[c] = pct(t);
  const byFn = new Map<string, { where: string; t: number }>();
  for (const [id, t] of self) {
    const f = byId.get(id)!.callFrame;
    const file = f.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/work\/main\//, '');
    const key = `${f.functionName || '(anonymous)'} ${file}:${f.lineNumber + 1}`;
    const e = byFn.get(key) ?? { where: `${file}:${f.lineNumber + 1}`, t: 0 };
    e.t += t;
    byFn.set(key, e);
  }
  const top = [...byFn]
    .sort((a, b) => b[1].t - a[1].t)
    .slice(0, topN)
    .map(([k, e]) => ({ fn: k.split(' ')[0]!, where: e.where, pct: pct(e.t) }));
  return {
    seconds: Math.round((profile.endTime - profile.startTime) / 1e5) / 10,
    categories,
    busyPct: Math.round(100 - (categories.idle ?? 0)),
    top,
  };
}

/** The category shares of several profiles, averaged (each process weighs the same). */
export function mergeSummaries(summaries: readonly ProfileSummary[]): Record<string, number> {
  const sum = new Map<string, number>();
  for (const s of summaries) {
    for (const [c, p] of Object.entries(s.categories)) sum.set(c, (sum.get(c) ?? 0) + p);
  }
  const out: Record<string, number> = {};
  for (const [c, p] of [...sum].sort((a, b) => b[1] - a[1])) {
    out[c] = Math.round((10 * p) / Math.max(1, summaries.length)) / 10;
  }
  return out;
}

/** Busy time per category, as a share of busy (non-idle) time, in percent. */
export function busyShares(categories: Record<string, number>): Record<string, number> {
  const idle = categories.idle ?? 0;
  const busy = Math.max(0.1, 100 - idle);
  const out: Record<string, number> = {};
  for (const [c, p] of Object.entries(categories)) {
    if (c !== 'idle') out[c] = Math.round((1000 * p) / busy) / 10;
  }
  return out;
}

/** A profile file and the thread it is of (0: the main thread; Node names files by pid and thread). */
export interface ProfileFile {
  readonly file: string;
  readonly thread: number;
  readonly profile: CpuProfile;
}

export function readProfiles(path: string): ProfileFile[] {
  const files = statSync(path).isDirectory()
    ? readdirSync(path)
        .filter((f) => f.endsWith('.cpuprofile'))
        .sort()
        .map((f) => join(path, f))
    : [path];
  return files.map((file) => {
    // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile
    const parts = file.split('/').at(-1)!.split('.');
    const thread = parts.length >= 7 ? Number(parts[4]) : 0;
    return { file, thread, profile: JSON.parse(readFileSync(file, 'utf8')) as CpuProfile };
  });
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const path = args.find((a) => !a.startsWith('--'));
  const topAt = args.indexOf('--top');
  const topN = topAt >= 0 ? Number(args[topAt + 1]) : 30;
  if (path === undefined) {
    console.error('usage: node bench/lib/profile.ts <file.cpuprofile | dir> [--top N]');
    process.exit(1);
  }
  const files = readProfiles(path);
  const summaries = files.map((p) => summariseProfile(p.profile, topN));
  summaries.forEach((s, k) => {
    const f = files[k]!;
    const what = f.thread === 0 ? 'main thread' : `thread ${f.thread}`;
    console.log(`\n${f.file.split('/').at(-1)} (${what}): ${s.seconds} s, busy ${s.busyPct}%`);
    console.log('  share of busy time by category:');
    for (const [c, p] of Object.entries(busyShares(s.categories))) {
      console.log(`    ${String(p).padStart(5)}%  ${c}`);
    }
  });
  const merged = mergeSummaries(summaries.filter((_, k) => files[k]!.thread === 0));
  console.log('\nmain threads, share of busy time by category:');
  for (const [c, p] of Object.entries(busyShares(merged))) {
    console.log(`  ${String(p).padStart(5)}%  ${c}`);
  }
  console.log(`\nprofile 0, top ${topN} functions by self time (% of profiled time):`);
  for (const t of summaries[0]?.top ?? []) {
    console.log(`  ${String(t.pct).padStart(5)}%  ${t.fn}  ${t.where}`);
  }
}
