/**
 * Misbehaviour evidence as consensus state (DESIGN section 4: "H = 0 for a proven misbehaving
 * institution"). A replica that proves misbehaviour holds the proof; a batch pins it (TxBatch
 * `evidence`), and from then on every replica that pinned the same chain sets the culprit's
 * misbehaviourChunk from it, so integrity, R, the consensus group and Algorithm 2's quotas agree
 * everywhere (replica.ts applyDecision).
 *
 * Two kinds of evidence, each checkable by every validator from the batch and the pinned state:
 * - equivocation: two messages one group member signed for the same kind, height, round and type
 *   that conflict (two votes for different values, two proposals of different values). Proposals
 *   sign id(v): the batch commitment hash for batches, the keyblock hash for keyblocks.
 * - bundle: a correctly signed bundle whose tx `index` breaks a rule only its signer can break
 *   (BLAMABLE_REASONS): a fee below the minimum and another institution's tx are stateless; a
 *   record tx whose chameleon opening fails although it is next in line for its leaf in the pinned
 *   state is a forgery, since only the leaf's writer holds the trapdoor and its own earlier txs fix
 *   the running hash the opening must open to. (A leaf tx's root opening can go stale when the home
 *   adds two leaves at once, so it is never blamed.)
 *
 * A batch pins at most one item per institution and none against an institution that pinned
 * evidence already names: H = 0 is for ever, so re-pinning would only cost bytes.
 */
import { merkleRoot } from '../crypto/merkle.ts';
import {
  decodeBftMessage,
  type Equivocation,
  encodeBftMessage,
  type HashValue,
  sameContent,
  verifyMessage,
} from './bft-messages.ts';
import { type ConsensusGroup, readKind, writeKind } from './certificate.ts';
import { encode, type Reader, type Writer } from './codec.ts';
import { isLedgerError, type LedgerErrorCode, OK, reject, type Verdict } from './errors.ts';
import { checkFee } from './fees.ts';
import { decodeKeyblock, keyblockHash } from './keyblock.ts';
import { appendRecord, type MemberLookup, type Microblock } from './microblock.ts';
import { readBundle, verifyBundleSignature, writeBundle } from './tx.ts';
import type {
  BftMessage,
  BlockRef,
  Bundle,
  BundleEvidence,
  EquivocationEvidence,
  Evidence,
  Genesis,
  InstitutionIndex,
} from './types.ts';

/** Most evidence items in one batch. */
export const MAX_BATCH_EVIDENCE = 16;
/** Most bytes of one encoded consensus message in evidence (a proposal carries its whole value). */
export const MAX_EVIDENCE_MESSAGE_BYTES = 512 * 1024;
/** Most bytes of a batch's encoded evidence, all items together. */
export const MAX_BATCH_EVIDENCE_BYTES = 1024 * 1024;

/** The rule breaches a bundle can be blamed for, by wire code (their index). */
export const BLAMABLE_REASONS = [
  'FEE_TOO_LOW',
  'UNAUTHORISED_INSTITUTION',
  'BAD_CHAMELEON_OPENING',
] as const satisfies readonly LedgerErrorCode[];

export type BlamableReason = (typeof BLAMABLE_REASONS)[number];

export function isBlamableReason(code: LedgerErrorCode): code is BlamableReason {
  return (BLAMABLE_REASONS as readonly LedgerErrorCode[]).includes(code);
}

/** The institution the evidence is against. */
export function evidenceCulprit(e: Evidence): InstitutionIndex {
  return e.type === 'equivocation' ? e.first.member : e.bundle.institution;
}

/** The rule the culprit broke. */
export function evidenceCode(e: Evidence): LedgerErrorCode {
  return e.type === 'equivocation' ? 'EQUIVOCATION' : e.reason;
}

/** Equivocation evidence as the BFT reports it (bft.ts), in its pinnable form. */
export function equivocationEvidence(e: Equivocation): EquivocationEvidence {
  return { type: 'equivocation', kind: e.first.kind, first: e.first, second: e.second };
}

/**
 * The first tx of a bundle that breaks a stateless rule only its signer can break, in the order
 * checkBundleStateless checks them (fee, then authorship), or null.
 */
export function statelessBlame(
  bundle: Bundle,
  minFee: number,
): { index: number; reason: BlamableReason } | null {
  for (const [index, tx] of bundle.txs.entries()) {
    const fee = checkFee(tx.fee, { minFee });
    if (!fee.ok) return fee.error.code === 'FEE_TOO_LOW' ? { index, reason: 'FEE_TOO_LOW' } : null;
    if (tx.type !== 'leaf' && tx.institution !== bundle.institution) {
      return { index, reason: 'UNAUTHORISED_INSTITUTION' };
    }
  }
  return null;
}

/** The first structural problem of an evidence item, as the field it lies in, or null. */
export function evidenceShapeProblem(e: Evidence): { field: string; problem: string } | null {
  if (e.type === 'equivocation') {
    const { kind, first: a, second: b } = e;
    if (a.kind !== kind || b.kind !== kind) {
      return { field: 'kind', problem: `is ${kind}, the messages are ${a.kind} and ${b.kind}` };
    }
    if (a.member !== b.member) {
      return { field: 'second.member', problem: `is ${b.member}, the first is by ${a.member}` };
    }
    if (a.type !== b.type) {
      return { field: 'second.type', problem: `is ${b.type}, the first is a ${a.type}` };
    }
    if (a.height !== b.height || a.round !== b.round) {
      return {
        field: 'second.height',
        problem: `is ${b.height}/${b.round}, the first is at ${a.height}/${a.round}`,
      };
    }
    if (sameContent(a, b)) return { field: 'second', problem: 'repeats the first: no conflict' };
    return null;
  }
  if (e.type === 'bundle') {
    const n = e.bundle.txs.length;
    if (!(Number.isSafeInteger(e.index) && e.index >= 0 && e.index < n)) {
      return { field: 'index', problem: `is ${e.index}, outside the bundle's ${n} txs` };
    }
    if (!isBlamableReason(e.reason)) {
      return { field: 'reason', problem: `${e.reason} is not a fault only the signer can commit` };
    }
    if (e.reason === 'BAD_CHAMELEON_OPENING' && e.bundle.txs[e.index]!.type === 'leaf') {
      return { field: 'reason', problem: 'BAD_CHAMELEON_OPENING blames record txs only' };
    }
    return null;
  }
  return { field: 'type', problem: `is ${String((e as { type: unknown }).type)}` };
}

// ---------------------------------------------------------------------------------------------
// Canonical encoding: u8 0, kind, then both messages (varint length + encodeBftMessage); or u8 1,
// the bundle (writeBundle), varint index, u8 reason (its index in BLAMABLE_REASONS).

export function writeEvidence(w: Writer, e: Evidence): void {
  if (e.type === 'equivocation') {
    w.u8(0);
    writeKind(w, e.kind);
    w.bytes(encodeBftMessage(e.first)).bytes(encodeBftMessage(e.second));
    return;
  }
  const code = BLAMABLE_REASONS.indexOf(e.reason as BlamableReason);
  if (code < 0) throw new RangeError(`evidence reason ${e.reason} is not blamable`);
  w.u8(1);
  writeBundle(w, e.bundle);
  w.varint(e.index).u8(code);
}

export function encodeEvidence(e: Evidence): Uint8Array {
  return encode((w) => writeEvidence(w, e));
}

/** A nested decoder's LedgerError, renamed to the field `at` it was reading. */
function failNested(r: Reader, at: string, err: unknown): never {
  if (!isLedgerError(err)) throw err;
  const { what, field } = err.detail;
  const prefix = `${String(what)}: ${String(field)} `;
  const problem = err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
  const code = err.code === 'NON_CANONICAL' ? 'NON_CANONICAL' : 'MALFORMED';
  return r.fail(typeof field === 'string' ? `${at}.${field}` : at, problem, code);
}

function readMessage(r: Reader, at: string): BftMessage {
  const bytes = r.bytes(at, MAX_EVIDENCE_MESSAGE_BYTES);
  try {
    return decodeBftMessage(bytes, MAX_EVIDENCE_MESSAGE_BYTES);
  } catch (err) {
    return failNested(r, at, err);
  }
}

/** Reads item `k` of a batch's evidence; malformed or ill-shaped evidence fails naming its field. */
export function readEvidence(r: Reader, k: number): Evidence {
  const at = `evidence[${k}]`;
  const tag = r.u8(`${at}.type`);
  let e: Evidence;
  if (tag === 0) {
    let kind: EquivocationEvidence['kind'];
    try {
      kind = readKind(r);
    } catch (err) {
      return failNested(r, at, err);
    }
    const first = readMessage(r, `${at}.first`);
    const second = readMessage(r, `${at}.second`);
    e = { type: 'equivocation', kind, first, second };
  } else if (tag === 1) {
    let bundle: Bundle;
    try {
      bundle = readBundle(r);
    } catch (err) {
      return failNested(r, at, err);
    }
    const index = r.varint(`${at}.index`);
    const code = r.u8(`${at}.reason`);
    const reason =
      BLAMABLE_REASONS[code] ??
      r.fail(`${at}.reason`, `is ${code}, not 0 to ${BLAMABLE_REASONS.length - 1}`);
    e = { type: 'bundle', bundle, index, reason };
  } else {
    return r.fail(`${at}.type`, `is ${tag}, not 0 (equivocation) or 1 (bundle)`);
  }
  const problem = evidenceShapeProblem(e);
  if (problem !== null) r.fail(`${at}.${problem.field}`, problem.problem);
  return e;
}

/** A batch's evidence list: at most MAX_BATCH_EVIDENCE items of MAX_BATCH_EVIDENCE_BYTES in all. */
export function readEvidenceList(r: Reader): Evidence[] {
  let bytes = 0;
  return r.list('evidence', MAX_BATCH_EVIDENCE, (rr, k) => {
    const before = rr.remaining;
    const e = readEvidence(rr, k);
    bytes += before - rr.remaining;
    if (bytes > MAX_BATCH_EVIDENCE_BYTES) {
      rr.fail(`evidence[${k}]`, `brings the evidence to ${bytes} bytes, above the limit`);
    }
    return e;
  });
}

/** The Merkle root of the encoded items, in order: what a batch commitment binds. */
export function evidenceRoot(evidence: readonly Evidence[]): Uint8Array {
  return merkleRoot(evidence.map(encodeEvidence));
}

// ---------------------------------------------------------------------------------------------
// Validation

/** What judging evidence reads: the pinned state as of the batch's parent. */
export interface EvidenceContext {
  readonly genesis: Genesis;
  readonly members: MemberLookup;
  /** Pinned patient blocks: a forged opening is judged against them. */
  readonly microblocks: { get(ref: BlockRef): Microblock | undefined };
  /** The consensus group of the batch's height: an equivocation is judged under it. */
  readonly group: ConsensusGroup;
  /** Whether pinned evidence already names the institution (its H is 0 from then on). */
  readonly hasPinnedEvidence: (institution: InstitutionIndex) => boolean;
  /** id(v) of a batch proposal (its commitment hash, batch.ts batchValueHash). */
  readonly batchValueHash: HashValue;
}

const keyblockValueHash: HashValue = (v) => keyblockHash(decodeKeyblock(v));

/**
 * Both messages come from a member of `group`, verify under it, and conflict. Proposals are
 * checked under their kind's id(v): `batchValueHash` for batches, the keyblock hash for keyblocks.
 */
export function verifyEquivocationEvidence(
  e: EquivocationEvidence,
  group: ConsensusGroup,
  chainId: string,
  batchValueHash: HashValue,
): Verdict {
  const shape = evidenceShapeProblem(e);
  if (shape !== null) return reject('MALFORMED', `evidence ${shape.field} ${shape.problem}`);
  const member = e.first.member;
  if (!group.some((g) => g.member === member)) {
    return reject('NOT_IN_GROUP', `member ${member} is not in the consensus group`, { member });
  }
  const hashValue = e.kind === 'batch' ? batchValueHash : keyblockValueHash;
  for (const m of [e.first, e.second]) {
    const v = verifyMessage(m, group, chainId, hashValue);
    if (!v.ok) return v;
  }
  return OK;
}

/**
 * A forged opening: the record tx is its signer's own, next in line for the signer's leaf in the
 * pinned block, and its opening does not open the leaf digest to the new running hash. Whether a
 * label's target exists does not matter here (the opening alone is the forgery).
 */
function verifyForgedOpening(bundle: Bundle, index: number, ctx: EvidenceContext): Verdict {
  const tx = bundle.txs[index]!;
  if (tx.type === 'leaf') return reject('MALFORMED', 'a leaf tx is not blamed for its opening');
  if (tx.institution !== bundle.institution) {
    return reject('INVALID_VALUE', `tx ${index} is another institution's, not a forged opening`);
  }
  const block = ctx.microblocks.get(tx.block);
  if (block === undefined) {
    return reject('UNKNOWN_PATIENT', `tx ${index} addresses no pinned patient block`);
  }
  let out: ReturnType<typeof appendRecord>;
  try {
    out = appendRecord(block, tx, ctx.members, () => true);
  } catch (err) {
    if (isLedgerError(err)) return { ok: false, error: err };
    throw err;
  }
  if (out.ok) return reject('INVALID_VALUE', `tx ${index} opens its leaf: it is not forged`);
  const v = out.verdict;
  if (!v.ok && v.error.code !== 'BAD_CHAMELEON_OPENING') {
    // Not next in line (a gap, a replay, no leaf yet): not checkable against the pinned state.
    return reject(v.error.code, `tx ${index} is not next in line for its leaf: ${v.error.message}`);
  }
  return OK;
}

function verifyBundleEvidence(e: BundleEvidence, ctx: EvidenceContext): Verdict {
  const { bundle, index, reason } = e;
  const member = ctx.members(bundle.institution);
  if (member === undefined) {
    return reject('UNKNOWN_INSTITUTION', `bundle of unknown institution ${bundle.institution}`);
  }
  if (!verifyBundleSignature(ctx.genesis.chainId, bundle, member.signingKey)) {
    return reject('BAD_SIGNATURE', `bundle is not signed by ${bundle.institution}`);
  }
  const tx = bundle.txs[index]!;
  if (reason === 'FEE_TOO_LOW') {
    const fee = checkFee(tx.fee, ctx.genesis.params);
    if (fee.ok || fee.error.code !== 'FEE_TOO_LOW') {
      return reject('INVALID_VALUE', `tx ${index} pays ${tx.fee}, not below the minimum`);
    }
    return OK;
  }
  if (reason === 'UNAUTHORISED_INSTITUTION') {
    if (tx.type === 'leaf' || tx.institution === bundle.institution) {
      return reject('INVALID_VALUE', `tx ${index} is the signer's own (or a leaf tx)`);
    }
    return OK;
  }
  return verifyForgedOpening(bundle, index, ctx);
}

/**
 * One item against the pinned state: well formed, against a member no pinned evidence names yet,
 * and proving what it claims. The proposer filters what it holds with this.
 */
export function verifyEvidence(e: Evidence, ctx: EvidenceContext): Verdict {
  const shape = evidenceShapeProblem(e);
  if (shape !== null) {
    return reject('MALFORMED', `${shape.field} ${shape.problem}`, { field: shape.field });
  }
  const culprit = evidenceCulprit(e);
  if (ctx.members(culprit) === undefined) {
    return reject('UNKNOWN_INSTITUTION', `institution ${culprit} is not a member`);
  }
  if (ctx.hasPinnedEvidence(culprit)) {
    return reject('CONFLICTS_WITH_PINNED', `pinned evidence already names ${culprit}`, {
      institution: culprit,
    });
  }
  if (e.type === 'bundle') return verifyBundleEvidence(e, ctx);
  for (const m of [e.first, e.second]) {
    if (encodeBftMessage(m).length > MAX_EVIDENCE_MESSAGE_BYTES) {
      return reject('TOO_LARGE', `a message is above ${MAX_EVIDENCE_MESSAGE_BYTES} bytes`);
    }
  }
  return verifyEquivocationEvidence(e, ctx.group, ctx.genesis.chainId, ctx.batchValueHash);
}

function atItem(v: Verdict, k: number): Verdict {
  if (v.ok) return v;
  return reject(v.error.code, `evidence ${k}: ${v.error.message}`, {
    ...v.error.detail,
    evidence: k,
  });
}

/**
 * A batch's evidence: within the count and byte bounds, at most one item per institution, and each
 * item valid (verifyEvidence). The first failure names the item.
 */
export function checkEvidence(evidence: readonly Evidence[], ctx: EvidenceContext): Verdict {
  if (evidence.length > MAX_BATCH_EVIDENCE) {
    return reject('TOO_LARGE', `batch carries ${evidence.length} evidence items`, {
      max: MAX_BATCH_EVIDENCE,
    });
  }
  let bytes = 0;
  for (const [k, e] of evidence.entries()) {
    const shape = evidenceShapeProblem(e);
    if (shape !== null) {
      return atItem(
        reject('MALFORMED', `${shape.field} ${shape.problem}`, { field: shape.field }),
        k,
      );
    }
    bytes += encodeEvidence(e).length;
  }
  if (bytes > MAX_BATCH_EVIDENCE_BYTES) {
    return reject('TOO_LARGE', `batch evidence takes ${bytes} bytes`, {
      max: MAX_BATCH_EVIDENCE_BYTES,
    });
  }
  const culprits = new Set<InstitutionIndex>();
  for (const [k, e] of evidence.entries()) {
    const culprit = evidenceCulprit(e);
    if (culprits.has(culprit)) {
      return atItem(
        reject('REPLAYED_TX', `institution ${culprit} is named twice`, { institution: culprit }),
        k,
      );
    }
    culprits.add(culprit);
    const v = verifyEvidence(e, ctx);
    if (!v.ok) return atItem(v, k);
  }
  return OK;
}
