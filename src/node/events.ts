/**
 * What a node reports: one JSON object per event, one line each on stdout (main.ts), so that the
 * localnet runner, tests and benchmarks read them. Heights, hashes, counts and member indices
 * only: never a patient's data or a tx's content.
 */
import type { InstitutionIndex } from '../ledger/types.ts';

export type NodeEvent =
  | {
      readonly event: 'started';
      readonly index: InstitutionIndex;
      readonly peerId: string;
      /** Pinned batch tip after the rebuild from the store. */
      readonly height: number;
      readonly hash: string;
      readonly keyblockHeight: number;
      /** Patients whose home is this institution (the load's targets). */
      readonly patients: number;
      /** SHA-256 of the genesis file, for operators to compare. */
      readonly genesis: string;
    }
  | {
      readonly event: 'pinned';
      readonly height: number;
      readonly hash: string;
      readonly round: number;
      readonly proposer: InstitutionIndex;
      readonly txs: number;
      readonly bundles: number;
      /** Txs per institution, by member index. */
      readonly by: Readonly<Record<string, number>>;
      readonly via: 'consensus' | 'sync';
    }
  | {
      readonly event: 'stats';
      readonly height: number;
      readonly round: number;
      /** Txs pinned per second over the last interval. */
      readonly tps: number;
      readonly pinnedTxs: number;
      readonly mempoolBundles: number;
      /** This institution's signed txs not pinned yet (the load's backlog). */
      readonly pendingOwn: number;
      readonly peers: readonly InstitutionIndex[];
      readonly queue: number;
    }
  | { readonly event: 'peers'; readonly connected: readonly InstitutionIndex[] }
  | {
      readonly event: 'synced';
      readonly peer: InstitutionIndex;
      readonly from: number;
      readonly to: number;
    }
  | { readonly event: 'misbehaviour'; readonly member: InstitutionIndex; readonly code: string }
  | { readonly event: 'warn'; readonly code: string; readonly message: string }
  | { readonly event: 'stopped'; readonly height: number }
  | { readonly event: 'fatal'; readonly code: string; readonly message: string };

/** One stdout line: the event with the time and the node's index in front. */
export function formatEventLine(index: InstitutionIndex, at: number, e: NodeEvent): string {
  return `${JSON.stringify({ t: at, node: index, ...e })}\n`;
}
