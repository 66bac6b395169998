/**
 * Liveness and readiness (`GET /health/live`, `GET /health/ready`, both public; server.ts serves
 * them). Live: the process serves HTTP. Ready: every check passes within its time bound:
 *
 * - storage: a LevelDB read of the sidecar's database answers;
 * - node: the embedded node has started (its 'started' event, and no 'stopped' or 'fatal' since)
 *   and is connected to at least the members it needs (`minPeers`: 0 for a one-institution
 *   network);
 * - queue: the tx queue answers (embedded: in memory, it answers unless closed; BullMQ: a Redis
 *   round trip, `stats()`, within the bound).
 *
 * A failed check is named with a short reason (an error code, "timeout", counts), never a path, a
 * URL with credentials, or anything of a patient's.
 */
import type { NodeEvent } from '../node/events.ts';
import { withTimeout } from './metrics.ts';

export type CheckState = 'up' | 'down';

export interface CheckResult {
  readonly state: CheckState;
  /** Why it is down: a code or a count, nothing else. */
  readonly reason?: string;
}

export interface Readiness {
  readonly status: 'ready' | 'not ready';
  readonly checks: Readonly<Record<string, CheckResult>>;
}

/** A readiness check: resolves when up, throws (a HealthFailure, with its reason) when down. */
export type HealthCheck = () => Promise<void>;

/** A check's failure with the reason to report as it is. */
export class HealthFailure extends Error {
  readonly reason: string;
  constructor(reason: string) {
    super(reason);
    this.name = 'HealthFailure';
    this.reason = reason;
  }
}

export interface HealthOpts {
  /** Each check's bound (ms); beyond it the check is down ("timeout"). */
  readonly timeoutMs: number;
}

export const defaultHealthOpts: HealthOpts = { timeoutMs: 1000 };

/** What server.ts serves: the readiness of the named checks. */
export interface Health {
  readiness(): Promise<Readiness>;
}

/** The reason to report for a failed check: ours as given, others by their code only. */
export function failureReason(err: unknown): string {
  if (err instanceof HealthFailure) return err.reason;
  const code = (err as { code?: unknown })?.code;
  if (typeof code === 'string' && /^[A-Za-z0-9_.-]{1,64}$/.test(code)) return code;
  if (err instanceof Error && /^no answer within \d+ ms$/.test(err.message)) return 'timeout';
  return 'error';
}

/** Runs the checks concurrently, each within the bound. */
export function healthOf(
  checks: Readonly<Record<string, HealthCheck>>,
  options: Partial<HealthOpts> = {},
): Health {
  const opts = { ...defaultHealthOpts, ...options };
  if (!Number.isSafeInteger(opts.timeoutMs) || opts.timeoutMs < 1) {
    throw new RangeError(`timeoutMs must be an integer >= 1, got ${opts.timeoutMs}`);
  }
  return {
    async readiness() {
      const names = Object.keys(checks);
      const results = await Promise.all(
        names.map(async (name): Promise<CheckResult> => {
          try {
            await withTimeout(checks[name]!(), opts.timeoutMs);
            return { state: 'up' };
          } catch (err) {
            return { state: 'down', reason: failureReason(err) };
          }
        }),
      );
      const out: Record<string, CheckResult> = {};
      names.forEach((n, k) => {
        out[n] = results[k]!;
      });
      return {
        status: results.every((r) => r.state === 'up') ? 'ready' : 'not ready',
        checks: out,
      };
    },
  };
}

/** The node's state from its events: started, and not stopped or failed since. */
export class NodeState {
  private state: 'starting' | 'started' | 'stopped' | 'failed' = 'starting';
  private fatal = '';

  onNodeEvent(e: NodeEvent): void {
    if (e.event === 'started') this.state = 'started';
    else if (e.event === 'stopped') this.state = this.state === 'failed' ? 'failed' : 'stopped';
    else if (e.event === 'fatal') {
      this.state = 'failed';
      this.fatal = e.code;
    }
  }

  get started(): boolean {
    return this.state === 'started';
  }

  /** 'starting', 'stopped' or 'failed (CODE)'; '' when started. */
  get reason(): string {
    if (this.state === 'failed') return this.fatal ? `failed (${this.fatal})` : 'failed';
    return this.state === 'started' ? '' : this.state;
  }
}

/** The sidecar's three checks (module comment). */
export function sidecarChecks(parts: {
  readonly db: { get(key: Uint8Array): Promise<unknown> };
  readonly node: { readonly state: NodeState; peers(): number; readonly minPeers: number };
  readonly queue: { stats(): Promise<unknown> };
}): Record<string, HealthCheck> {
  const key = new TextEncoder().encode('!health!probe');
  return {
    storage: async () => {
      await parts.db.get(key);
    },
    node: async () => {
      const { state, minPeers } = parts.node;
      if (!state.started) throw new HealthFailure(state.reason);
      const peers = parts.node.peers();
      if (peers < minPeers) {
        throw new HealthFailure(`${peers} peers connected, ${minPeers} needed`);
      }
    },
    queue: async () => {
      await parts.queue.stats();
    },
  };
}

/** Peers a node needs to be ready: none alone, one other member in a network of several. */
export function defaultMinPeers(members: number): number {
  return members > 1 ? 1 : 0;
}
