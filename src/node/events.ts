/**
 * What a node reports: one JSON object per event, one line each on stdout (main.ts), so that the
 * localnet runner, tests and benchmarks read them. Heights, hashes, counts and member indices
 * only: never a patient's data or a tx's content.
 */
import {
  hasPinnedEvidence,
  integrityOf,
  pinnedReputations,
  type Replica,
  reputations,
} from '../ledger/replica.ts';
import type { InstitutionIndex } from '../ledger/types.ts';
import type { FaultEvent } from './faults.ts';
import type { LoadEvent } from './load-runner.ts';

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
      /** The pinned keyblock height, and keyblocks this node mined since it started. */
      readonly keyblockHeight: number;
      readonly mined: number;
    }
  | { readonly event: 'peers'; readonly connected: readonly InstitutionIndex[] }
  | {
      readonly event: 'synced';
      readonly peer: InstitutionIndex;
      /** Batch heights pinned by this sync (from > to: none). */
      readonly from: number;
      readonly to: number;
      /** Keyblock heights pinned by this sync (from > to: none). */
      readonly keyblocksFrom: number;
      readonly keyblocksTo: number;
    }
  | { readonly event: 'misbehaviour'; readonly member: InstitutionIndex; readonly code: string }
  | {
      /** A member's standing in this node's eyes: when misbehaviour is proved or its evidence pinned. */
      readonly event: 'reputation';
      readonly member: InstitutionIndex;
      /** The pinned batch height it was read at. */
      readonly height: number;
      /** H and R in this node's own view (replica-reputation.ts): 0 once it holds a proof. */
      readonly integrity: 0 | 1;
      readonly reputation: number;
      /** R from pinned data, as consensus uses it: pinned evidence zeroes it at the next chunk. */
      readonly pinnedReputation: number;
      /** Whether a pinned batch carries evidence against the member. */
      readonly evidencePinned: boolean;
    }
  | {
      /** This node sent its proposal for the height and round (once, not at each re-send). */
      readonly event: 'proposing';
      readonly height: number;
      readonly round: number;
    }
  | FaultEvent
  | LoadEvent
  | KeyblockEvent
  | { readonly event: 'warn'; readonly code: string; readonly message: string }
  | { readonly event: 'stopped'; readonly height: number }
  | { readonly event: 'fatal'; readonly code: string; readonly message: string };

/** Keyblocks: mined here, pinned, and the consensus group of each new reputation chunk. */
export type KeyblockEvent =
  | {
      /** This node mined a keyblock (it is gossiped; pinning is up to the group). */
      readonly event: 'mined';
      readonly height: number;
      readonly hash: string;
      readonly registers: number;
      /** Members it admits. */
      readonly admits: number;
    }
  | {
      /** An admission file of the inbox (admission-inbox.ts) was refused, or its member pinned. */
      readonly event: 'admission';
      readonly file: string;
      readonly member: InstitutionIndex | null;
      readonly outcome: 'refused' | 'admitted';
      readonly reason?: string;
    }
  | {
      readonly event: 'keyblock';
      readonly height: number;
      readonly hash: string;
      readonly miner: InstitutionIndex;
      /** Patients it registered. */
      readonly registers: number;
      /** Members it admitted (their indexes; usually none). */
      readonly admitted: readonly InstitutionIndex[];
      readonly round: number;
      readonly via: 'consensus' | 'sync';
    }
  | {
      /**
       * The pinned batch tip moved into a new reputation chunk: the chunks before it are closed
       * and every node computes the same reputations and group (keyblocks.ts).
       */
      readonly event: 'chunk';
      /** Chunks completed: reputation counts chunks 0 .. completed - 1. */
      readonly completed: number;
      /** The pinned batch height at which this was read. */
      readonly height: number;
      /** R of every member, by index. */
      readonly reputations: Readonly<Record<string, number>>;
      /** The consensus group, in rank order. */
      readonly group: readonly InstitutionIndex[];
    };

/** The `reputation` event for `member` as `replica` sees it. */
export function reputationEvent(replica: Replica, member: InstitutionIndex): NodeEvent {
  const r = (list: readonly { index: number; reputation: number }[]) =>
    list.find((x) => x.index === member)?.reputation ?? 0;
  return {
    event: 'reputation',
    member,
    height: replica.chain.height,
    integrity: integrityOf(replica, member),
    reputation: r(reputations(replica)),
    pinnedReputation: r(pinnedReputations(replica)),
    evidencePinned: hasPinnedEvidence(replica, member),
  };
}

/** One stdout line: the event with the time and the node's index in front. */
export function formatEventLine(index: InstitutionIndex, at: number, e: NodeEvent): string {
  return `${JSON.stringify({ t: at, node: index, ...e })}\n`;
}
