/**
 * Where one request's time went, by stage, for the `Server-Timing` response header (W3C Server
 * Timing): an integration engineer sees in the browser's or curl's output whether a slow post
 * waited for validation, for the patient's lock, for the encryption or for the disk, and the ingest
 * benchmark adds the stages up. Stage names and durations only: never anything about the content.
 *
 * Stages of one name add up (a batch Bundle commits several units). The clock is passed in.
 */
export class Timings {
  private readonly spans = new Map<string, number>();
  private readonly clock: () => number;

  constructor(clock: () => number = () => performance.now()) {
    this.clock = clock;
  }

  /** Runs `work`, adding its wall time to stage `name` whether it succeeds or fails. */
  async time<T>(name: string, work: () => Promise<T>): Promise<T> {
    const started = this.clock();
    try {
      return await work();
    } finally {
      this.add(name, this.clock() - started);
    }
  }

  /** Adds `ms` to stage `name`. */
  add(name: string, ms: number): void {
    if (!STAGE.test(name)) throw new RangeError(`a timing stage name must be a token, got ${name}`);
    this.spans.set(name, (this.spans.get(name) ?? 0) + Math.max(0, ms));
  }

  /** Every stage so far, in the order first seen. */
  get stages(): ReadonlyMap<string, number> {
    return this.spans;
  }

  /** The `Server-Timing` header value (`validate;dur=12.3, seal;dur=40.1`), '' when empty. */
  header(): string {
    return [...this.spans].map(([name, ms]) => `${name};dur=${ms.toFixed(1)}`).join(', ');
  }
}

/** An HTTP token (RFC 9110), which is what Server-Timing allows as a metric name. */
const STAGE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Parses a `Server-Timing` value back into stage -> ms (the benchmark reads it this way). */
export function parseServerTiming(value: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const part of value.split(',')) {
    const [name, ...params] = part.trim().split(';');
    if (!name || !STAGE.test(name)) continue;
    const dur = params.map((p) => p.trim()).find((p) => p.startsWith('dur='));
    const ms = dur === undefined ? Number.NaN : Number(dur.slice(4));
    if (Number.isFinite(ms)) out.set(name, (out.get(name) ?? 0) + ms);
  }
  return out;
}
