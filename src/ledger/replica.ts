/**
 * One institution's view of the batch ledger (DESIGN section 4): the glue between the pure pieces
 * (tx.ts, batch.ts, batching.ts, reputation.ts, fees.ts, bft-messages.ts) that a consensus
 * instance (bft.ts) and the network node drive. PURE: no IO and no clock (`now` is passed in);
 * every function returns a new replica and leaves the one it was given unchanged.
 *
 * A replica holds the pinned batch tip, the pinned patient blocks and indexes behind the
 * LedgerView port (replica-view.ts), each member's contributions per reputation chunk and the
 * chunk in which pinned evidence named it, the misbehaviour this replica has proven
 * (replica-reputation.ts), the fee accounts, and a bounded mempool of received bundles
 * (replica-mempool.ts). Proposals are assembled and judged in replica-batch.ts.
 *
 * Consensus reads pinned data only (the group, Algorithm 2's quotas, the fairness check), so
 * every replica that pinned the same chain computes the same numbers. Proven misbehaviour sets
 * H = 0 in this replica's own view at once; the proposer pins the evidence it holds in its next
 * batch (evidence.ts), and every replica that pins that batch sets the culprit's H = 0 from the
 * next chunk boundary on, which takes it out of the group and gives it no quota in Algorithm 2.
 * Until then its valid bundles are still pinned (they are patients' records); its forged ones
 * never are.
 */
import { equalBytes, toHex } from '../crypto/bytes.ts';
import { encodeBatch, refKey } from './batch.ts';
import type { Equivocation } from './bft-messages.ts';
import type { ConsensusGroup } from './certificate.ts';
import { LedgerError, type LedgerErrorCode, OK, reject, type Verdict } from './errors.ts';
import { equivocationEvidence, evidenceCode, evidenceCulprit, statelessBlame } from './evidence.ts';
import { type Accounts, applyBatchRewards, applyKeyblockRewards, genesisAccounts } from './fees.ts';
import { ZERO_HASH } from './keyblock.ts';
import { rosterLookup } from './membership.ts';
import { createMicroblock, type Microblock } from './microblock.ts';
import {
  assembleBatch,
  batchValueHash,
  checkBatch,
  checkFairness,
  type PinnedChain,
  selectEvidence,
  verifyBatchEquivocation,
} from './replica-batch.ts';
import {
  ALREADY_HELD,
  admitBundle,
  type Blame,
  bundlesWrite,
  EMPTY_MEMPOOL,
  heldBundles,
  type Mempool,
  type MempoolEntry,
  type MempoolLimits,
  makeEntry,
  rebuildMempool,
} from './replica-mempool.ts';
import {
  addToChunk,
  markMisbehaviour,
  pinnedReputations,
  reputationsAsOf,
  takingPartAsOf,
} from './replica-reputation.ts';
import { type LedgerView, memoryLedgerView } from './replica-view.ts';
import { chunkOfHeight, type InstitutionHistory } from './reputation.ts';
import { checkBundleStateless, txHash, verifyBundleSignature } from './tx.ts';
import type {
  AdmitTx,
  Bundle,
  Bytes,
  Certificate,
  Evidence,
  Genesis,
  InstitutionIndex,
  RegisterTx,
} from './types.ts';

export {
  batchValueHash,
  type PinnedChain,
  type PinnedState,
  verifyBatchEquivocation,
} from './replica-batch.ts';
export {
  completedChunks,
  consensusGroupAt,
  consensusGroupOf,
  hasPinnedEvidence,
  integrityOf,
  pinnedReputations,
  reputations,
} from './replica-reputation.ts';
export { type LedgerView, memoryLedgerView } from './replica-view.ts';

export interface ReplicaOpts extends MempoolLimits {
  /**
   * A bundle counts as pending in the fairness check once this replica has held it this long:
   * about twice the maximum network delay, so that an honest leader is not blamed for gossip lag.
   */
  readonly fairnessGraceMs: number;
}

export const defaultReplicaOpts: ReplicaOpts = {
  fairnessGraceMs: 4000,
  maxBundlesPerInstitution: 256,
  maxBundlesTotal: 4096,
};

/**
 * Proof that an institution misbehaved: its integrity H is 0 from then on in this replica, and
 * everywhere from the chunk boundary after a batch pins the proof.
 */
export interface Misbehaviour {
  readonly institution: InstitutionIndex;
  readonly code: LedgerErrorCode;
  readonly proof: Evidence;
}

export interface Replica {
  readonly opts: ReplicaOpts;
  /** The pinned state; replaced as a whole whenever a batch or keyblock is pinned. */
  readonly chain: PinnedChain;
  /**
   * Each member's contributions per chunk and the chunk its pinned evidence was pinned in, from
   * pinned data, in genesis member order.
   */
  readonly histories: readonly InstitutionHistory[];
  /** Misbehaviour this replica holds proof of, pinned or not (the first proof per institution). */
  readonly misbehaviour: ReadonlyMap<InstitutionIndex, Misbehaviour>;
  readonly mempool: Mempool;
}

/** A replica after an input, the input's verdict, and the misbehaviour it newly proved. */
export interface ReplicaUpdate {
  readonly replica: Replica;
  readonly verdict: Verdict;
  readonly misbehaviour: readonly Misbehaviour[];
}

export interface ReplicaInit {
  readonly genesis: Genesis;
  /** Pinned patient blocks and indexes (default: an empty memory view). */
  readonly ledger?: LedgerView;
  /** Height of the latest pinned keyblock whose patient blocks `ledger` holds (default 0). */
  readonly keyblockHeight?: number;
  /** Default: every member at 0. */
  readonly accounts?: Accounts;
  /** Contributions in completed chunks (keyblocks may be given as counts); default: none. */
  readonly histories?: readonly InstitutionHistory[];
  readonly opts?: Partial<ReplicaOpts>;
}

export function createReplica(init: ReplicaInit): Replica {
  const { genesis } = init;
  const byIndex = new Map(genesis.members.map((m) => [m.index, m]));
  const given = new Map((init.histories ?? []).map((h) => [h.index, h]));
  for (const i of given.keys()) {
    if (!byIndex.has(i)) throw new RangeError(`histories: ${i} is not a member`);
  }
  const keyblockHeight = init.keyblockHeight ?? 0;
  if (!(Number.isSafeInteger(keyblockHeight) && keyblockHeight >= 0)) {
    throw new RangeError(`keyblockHeight: expected an integer >= 0, got ${keyblockHeight}`);
  }
  const chain: PinnedChain = {
    genesis,
    roster: genesis.members,
    members: (i) => byIndex.get(i),
    height: 0,
    hash: ZERO_HASH,
    keyblockHeight,
    anchor: 0,
    ledger: init.ledger ?? memoryLedgerView(),
    accounts: init.accounts ?? genesisAccounts(genesis.members.map((m) => m.index)),
  };
  return {
    opts: { ...defaultReplicaOpts, ...init.opts },
    chain,
    histories: genesis.members.map((m) => given.get(m.index) ?? { index: m.index, chunks: [] }),
    misbehaviour: new Map(),
    mempool: EMPTY_MEMPOOL,
  };
}

function addMisbehaviour(
  replica: Replica,
  found: readonly Misbehaviour[],
): { replica: Replica; added: Misbehaviour[] } {
  const added: Misbehaviour[] = [];
  let map: Map<InstitutionIndex, Misbehaviour> | null = null;
  for (const m of found) {
    if (replica.misbehaviour.has(m.institution) || map?.has(m.institution)) continue;
    map ??= new Map(replica.misbehaviour);
    map.set(m.institution, m);
    added.push(m);
  }
  return { replica: map === null ? replica : { ...replica, misbehaviour: map }, added };
}

function fromEvidence(proof: Evidence): Misbehaviour {
  return { institution: evidenceCulprit(proof), code: evidenceCode(proof), proof };
}

function fromBlames(blamed: readonly Blame[]): Misbehaviour[] {
  return blamed.map((b) =>
    fromEvidence({ type: 'bundle', bundle: b.bundle, index: b.index, reason: b.code }),
  );
}

function update(
  replica: Replica,
  verdict: Verdict,
  found: readonly Misbehaviour[] = [],
): ReplicaUpdate {
  const r = addMisbehaviour(replica, found);
  return { replica: r.replica, verdict, misbehaviour: r.added };
}

/** The replica with its mempool judged afresh against a new pinned state. */
function withChain(
  replica: Replica,
  chain: PinnedChain,
  histories: readonly InstitutionHistory[],
): Replica {
  const rebuilt = rebuildMempool(chain, replica.mempool);
  const next = { ...replica, chain, histories, mempool: rebuilt.pool };
  return addMisbehaviour(next, fromBlames(rebuilt.blamed)).replica;
}

function failure(v: Verdict): LedgerError {
  return v.ok ? new LedgerError('MALFORMED', 'expected a failed verdict') : v.error;
}

/** What pinKeyblock needs of a keyblock the keyblock chain has validated and pinned. */
export interface PinnedKeyblock {
  readonly height: number;
  readonly miner: InstitutionIndex;
  readonly registers: readonly RegisterTx[];
  /** Members it admits (none when absent). */
  readonly admits?: readonly AdmitTx[];
}

/**
 * Pins the next keyblock: creates its patients' blocks (MB_{height, j} for its j-th register tx),
 * pays its fees and reward, counts it for its miner in its chunk, and adds the members it admits
 * (with an empty account and a history that counts from the next chunk on).
 */
export function pinKeyblock(replica: Replica, kb: PinnedKeyblock): Replica {
  const c = replica.chain;
  if (kb.height !== c.keyblockHeight + 1) {
    throw new LedgerError(
      'WRONG_HEIGHT',
      `keyblock ${kb.height} is not next after ${c.keyblockHeight}`,
    );
  }
  const blocks = new Map<string, Microblock>();
  // A register tx may name a member admitted in this chunk as its home (it is on the roster).
  const onRoster = rosterLookup(() => c.roster);
  kb.registers.forEach((tx, j) => {
    const made = createMicroblock(tx, { i: kb.height, j }, onRoster);
    if (!made.ok) throw failure(made.verdict);
    blocks.set(refKey(made.block.header), made.block);
  });
  const txHashes = kb.registers.map((tx) => toHex(txHash(tx)));
  const chunk = chunkOfHeight(kb.height, c.genesis.params.chunkSize);
  let chain: PinnedChain = {
    ...c,
    keyblockHeight: kb.height,
    ledger: c.ledger.pin({ microblocks: blocks, txHashes, records: [] }),
    accounts: applyKeyblockRewards(c.accounts, kb, c.genesis.params),
  };
  let histories = addToChunk(replica.histories, chunk, new Map([[kb.miner, 1]]), 'keyblocks');
  if (kb.admits !== undefined && kb.admits.length > 0) {
    const admitted = kb.admits.map((a) => a.member);
    const accounts = new Map(chain.accounts);
    for (const m of admitted) accounts.set(m.index, 0);
    chain = { ...chain, roster: [...c.roster, ...admitted], accounts };
    histories = [
      ...histories,
      ...admitted.map((m) => ({ index: m.index, chunks: [], joinedChunk: chunk })),
    ];
  }
  chain = { ...chain, members: takingPartAsOf({ chain, histories }, kb.height) };
  return withChain(replica, chain, histories);
}

/** Stateless rule breaches that only the bundle's signer can be blamed for. */
const SIGNER_FAULTS: ReadonlySet<LedgerErrorCode> = new Set([
  'FEE_TOO_LOW',
  'UNAUTHORISED_INSTITUTION',
]);

/**
 * A bundle received by gossip (or inside a proposal). Held when correctly signed and
 * stateless-valid; refused when already held, stale (a tx is pinned), badly signed or the mempool
 * is full. A correctly signed bundle that breaks a rule only its signer can break (a fee below the
 * minimum, another institution's tx, a forged chameleon opening) proves the signer's misbehaviour.
 */
export function receiveBundle(replica: Replica, received: Bundle, now: number): ReplicaUpdate {
  const c = replica.chain;
  const member = c.members(received.institution);
  if (member === undefined) {
    const admitted = c.roster.some((m) => m.index === received.institution);
    return update(
      replica,
      reject(
        'UNKNOWN_INSTITUTION',
        admitted
          ? `bundle of ${received.institution}, which takes part from the next reputation chunk`
          : `bundle of unknown ${received.institution}`,
        { institution: received.institution, ...(admitted ? { admitted: true } : {}) },
      ),
    );
  }
  let entry: MempoolEntry;
  try {
    entry = makeEntry(received, now);
  } catch (err) {
    // A typed Bundle that does not encode (the wire decoder never yields one).
    return update(
      replica,
      reject('MALFORMED', `bundle does not encode: ${(err as Error).message}`),
    );
  }
  // The same data as `received`, but the object seen first: its checks are remembered.
  const { bundle } = entry;
  if (replica.mempool.ids.has(entry.id)) {
    return update(replica, ALREADY_HELD);
  }
  if (entry.txIds.some((id) => c.ledger.isPinnedTx(id))) {
    return update(replica, reject('REPLAYED_TX', 'bundle carries a pinned tx'));
  }
  if (!verifyBundleSignature(c.genesis.chainId, bundle, member.signingKey)) {
    const verdict = reject('BAD_SIGNATURE', `bundle is not signed by ${bundle.institution}`);
    return update(replica, verdict);
  }
  const stateless = checkBundleStateless(bundle, c.genesis.params.minFee);
  if (!stateless.ok) {
    const blame = statelessBlame(bundle, c.genesis.params.minFee);
    if (!SIGNER_FAULTS.has(stateless.error.code) || blame === null) {
      return update(replica, stateless);
    }
    return update(replica, stateless, [fromEvidence({ type: 'bundle', bundle, ...blame })]);
  }
  const admitted = admitBundle(c, replica.mempool, entry, replica.opts);
  return update(
    { ...replica, mempool: admitted.pool },
    admitted.verdict,
    fromBlames(admitted.blamed),
  );
}

/**
 * The batch this replica proposes at `height` (the next one): Algorithm 2 over its eligible
 * bundles by pinned reputation, capped by params.maxBatchTxs (replica-batch.ts assembleBatch),
 * and the misbehaviour proofs it holds that the pinned state does not name yet and that check
 * against it (selectEvidence; bounded per batch). An empty batch is a valid proposal.
 */
export function proposeBatch(replica: Replica, height: number, proposer: InstitutionIndex): Bytes {
  const c = replica.chain;
  if (height !== c.height + 1) {
    throw new LedgerError('WRONG_HEIGHT', `cannot propose batch ${height} on top of ${c.height}`);
  }
  const reps = pinnedReputations(replica);
  const held = [...replica.misbehaviour.values()].map((m) => m.proof);
  const evidence = selectEvidence(replica, held);
  return encodeBatch(assembleBatch(c, replica.mempool, reps, height, proposer, evidence));
}

/**
 * What a batch learned with its certificate (sync) must pass: everything but fairness, which is a
 * prevote-time judgement. Decoding, validateBatch against the pinned tip (its evidence under the
 * pinned group and pinned evidence), and fees.
 */
export function validateCertified(replica: Replica, bytes: Bytes): Verdict {
  return checkBatch(replica, bytes).verdict;
}

/**
 * valid(v) for BFT: validateCertified, then Algorithm 2's fairness check against the eligible
 * bundles this replica had held for at least opts.fairnessGraceMs at time `asOf`. Pass the time
 * from which the leader is accountable: the earlier of when the proposal arrived and when this
 * replica entered the proposal's round (the leader built it when its round began; it may arrive
 * late, or wait in the BFT's buffer until this replica has pinned the previous height), not the
 * time of validation, or bundles received meanwhile would count against an honest leader.
 */
export function validateProposal(replica: Replica, bytes: Bytes, asOf: number): Verdict {
  const checked = checkBatch(replica, bytes);
  if (!checked.verdict.ok || checked.batch === null) return checked.verdict;
  const held = heldBundles(replica.mempool, asOf, replica.opts.fairnessGraceMs);
  const capacity = replica.chain.genesis.params.maxBatchTxs;
  const { accounts } = replica.chain;
  // Shares as the proposer computed them: as of the batch's anchor (this replica may have pinned a
  // keyblock of the next chunk since, which changes reputations and who takes part).
  const reps = reputationsAsOf(replica, checked.batch.keyblockHeight);
  return checkFairness(checked.batch, held, reps, capacity, accounts);
}

/**
 * Pins a decided batch: patient blocks, pinned txs and label index, fees and the proposer's
 * reward, record counts in the batch's chunk, the batch's chunk as the misbehaviour chunk of
 * every institution its evidence names (H = 0 from the next chunk boundary on, at every replica;
 * the proofs join this replica's own), and the mempool without the pinned bundles. The
 * certificate was checked by consensus (or sync) against the group; here it must name this batch
 * at the next height. Throws LedgerError when the batch does not validate: a certified invalid batch
 * means more than a third of the group is faulty.
 */
export function applyDecision(replica: Replica, bytes: Bytes, certificate: Certificate): Replica {
  const c = replica.chain;
  if (certificate.kind !== 'batch' || certificate.height !== c.height + 1) {
    throw new LedgerError(
      'WRONG_HEIGHT',
      `certificate for ${certificate.kind} ${certificate.height}`,
    );
  }
  const checked = checkBatch(replica, bytes);
  if (!checked.verdict.ok) throw failure(checked.verdict);
  const batch = checked.batch!;
  const hash = batchValueHash(bytes);
  if (!equalBytes(hash, certificate.value)) {
    throw new LedgerError('INVALID_VALUE', 'the certificate does not sign this batch');
  }
  const write = bundlesWrite(batch.bundles, checked.txIds, checked.effects!.microblocks);
  const chain: PinnedChain = {
    ...c,
    height: batch.height,
    hash,
    anchor: batch.keyblockHeight,
    ledger: c.ledger.pin(write),
    accounts: applyBatchRewards(c.accounts, batch, c.genesis.params),
  };
  const records = checked.effects!.recordsBy;
  const anchor = batch.keyblockHeight;
  const chunk = anchor === 0 ? 0 : chunkOfHeight(anchor, c.genesis.params.chunkSize);
  let histories = replica.histories;
  if (records.size > 0) histories = addToChunk(histories, chunk, records, 'records');
  if (batch.evidence.length > 0) {
    const culprits = new Set(batch.evidence.map(evidenceCulprit));
    histories = markMisbehaviour(histories, culprits, chunk);
  }
  const next = withChain(replica, chain, histories);
  return addMisbehaviour(next, batch.evidence.map(fromEvidence)).replica;
}

/** Equivocation evidence (from bft.ts or a peer): once verified, the member's H is 0 here. */
export function applyEvidence(
  replica: Replica,
  evidence: Equivocation,
  group: ConsensusGroup,
): ReplicaUpdate {
  const verdict = verifyBatchEquivocation(evidence, group, replica.chain.genesis.chainId);
  if (!verdict.ok) return update(replica, verdict);
  return update(replica, OK, [fromEvidence(equivocationEvidence(evidence))]);
}
