/**
 * The pinning rule (DESIGN section 4, paper 5.1 CM = <PoW, BFT(R)>): a keyblock or a tx batch is
 * pinned by precommit signatures of MORE than 2/3 of the consensus group's members that together
 * hold MORE than 2/3 of the group's reputation. Both thresholds are strict and both must hold.
 *
 * Adversary model: fewer than 1/3 of the members and fewer than 1/3 of the reputation are
 * Byzantine. Two quorums then share more than n/3 members, so at least one honest member, which
 * never signs two values in one round (safety); the honest members alone are a quorum (liveness);
 * and any set holding more than 1/3 of the members OR more than 1/3 of the reputation contains an
 * honest member (`exceedsOneThird`, the f + 1 rule of Tendermint's round skip).
 *
 * Arithmetic is exact: member counts compare as 3·count > 2·n, and reputations are counted in
 * fixed-point units, round(r · 10^9) per member, compared as 3·Σ units > 2·total units. Every node
 * rounds the same IEEE doubles the same way, so all agree on the same integers, and sums of
 * integers below 2^53 are exact (the group is rejected when 3·total would not be).
 */
import { toHex } from '../crypto/bytes.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { SIGNATURE_BYTES, sign, verify } from '../crypto/sign.ts';
import { decode, encode, type Reader, type Writer } from './codec.ts';
import { LedgerError, OK, reject, type Verdict } from './errors.ts';
import { HASH_BYTES } from './hash.ts';
import type {
  Bytes,
  Certificate,
  CertificateSignature,
  ConsensusKind,
  InstitutionIndex,
  VoteType,
} from './types.ts';

export const VOTE_DOMAIN = 'spchain/vote';
/** Reputation fixed-point scale: one unit is 10^-9 reputation. */
export const REPUTATION_UNITS_PER_ONE = 1_000_000_000;
const PUBLIC_KEY_BYTES = 33;

export type { ConsensusKind, VoteType };

/** One member of a consensus group: the top-n institutions by reputation R. */
export interface GroupMember {
  readonly member: InstitutionIndex;
  /** 33-byte secp256k1 signing key. */
  readonly signingKey: Bytes;
  /** R >= 0 (finite). */
  readonly reputation: number;
}

export type ConsensusGroup = readonly GroupMember[];

/** A group checked once and indexed for the quorum arithmetic. */
export interface IndexedGroup {
  /** Members sorted by institution index (the proposer rotation order). */
  readonly sorted: readonly GroupMember[];
  readonly byMember: ReadonlyMap<InstitutionIndex, GroupMember & { readonly units: number }>;
  readonly totalUnits: number;
}

const indexed = new WeakMap<ConsensusGroup, IndexedGroup>();

/** round(r · 10^9): the integer reputation every node counts. */
export function reputationUnits(reputation: number): number {
  if (!Number.isFinite(reputation) || reputation < 0) {
    throw new RangeError(`reputation must be a finite number >= 0, got ${reputation}`);
  }
  return Math.round(reputation * REPUTATION_UNITS_PER_ONE);
}

/** Checks and indexes a group (cached per group array). Throws RangeError on a malformed group. */
export function indexGroup(group: ConsensusGroup): IndexedGroup {
  const cached = indexed.get(group);
  if (cached) return cached;
  if (group.length === 0) throw new RangeError('consensus group is empty');
  const byMember = new Map<InstitutionIndex, GroupMember & { readonly units: number }>();
  let totalUnits = 0;
  for (const m of group) {
    if (!Number.isSafeInteger(m.member) || m.member < 0) {
      throw new RangeError(`group member index must be an integer >= 0, got ${m.member}`);
    }
    if (byMember.has(m.member)) throw new RangeError(`group member ${m.member} is listed twice`);
    if (!(m.signingKey instanceof Uint8Array) || m.signingKey.length !== PUBLIC_KEY_BYTES) {
      throw new RangeError(
        `group member ${m.member}: signingKey must be ${PUBLIC_KEY_BYTES} bytes`,
      );
    }
    const units = reputationUnits(m.reputation);
    totalUnits += units;
    byMember.set(m.member, { ...m, units });
  }
  if (3 * totalUnits > Number.MAX_SAFE_INTEGER) {
    throw new RangeError('total group reputation is too large for exact quorum arithmetic');
  }
  const sorted = [...group].sort((a, b) => a.member - b.member);
  const out: IndexedGroup = { sorted, byMember, totalUnits };
  indexed.set(group, out);
  return out;
}

/** Distinct group members among `members` (others ignored), and the reputation units they hold. */
function tally(g: IndexedGroup, members: Iterable<InstitutionIndex>): [number, number] {
  const seen = new Set<InstitutionIndex>();
  let units = 0;
  for (const m of members) {
    const gm = g.byMember.get(m);
    if (gm === undefined || seen.has(m)) continue;
    seen.add(m);
    units += gm.units;
  }
  return [seen.size, units];
}

/** Which threshold a set of members misses, if any (no Error is built: this runs per vote). */
function shortfall(
  g: IndexedGroup,
  count: number,
  units: number,
): 'QUORUM_SHORT_MEMBERS' | 'QUORUM_SHORT_REPUTATION' | null {
  if (3 * count <= 2 * g.sorted.length) return 'QUORUM_SHORT_MEMBERS';
  if (3 * units <= 2 * g.totalUnits) return 'QUORUM_SHORT_REPUTATION';
  return null;
}

/**
 * OK iff the distinct group members among `members` are a quorum: 3·count > 2·n AND
 * 3·units > 2·total. Non-members and repeats are not counted.
 */
export function checkQuorum(group: ConsensusGroup, members: Iterable<InstitutionIndex>): Verdict {
  const g = indexGroup(group);
  const [count, units] = tally(g, members);
  const n = g.sorted.length;
  const short = shortfall(g, count, units);
  if (short === 'QUORUM_SHORT_MEMBERS') {
    return reject(short, `${count} of ${n} members is not more than 2/3`, {
      count,
      groupSize: n,
    });
  }
  if (short === 'QUORUM_SHORT_REPUTATION') {
    return reject(
      short,
      `signers hold ${units} of ${g.totalUnits} reputation units, not more than 2/3`,
      { units, totalUnits: g.totalUnits },
    );
  }
  return OK;
}

export function isQuorum(group: ConsensusGroup, members: Iterable<InstitutionIndex>): boolean {
  const g = indexGroup(group);
  const [count, units] = tally(g, members);
  return shortfall(g, count, units) === null;
}

/**
 * More than 1/3 of the members OR more than 1/3 of the reputation: under the adversary model such a
 * set contains at least one honest member (Tendermint's f + 1, used to skip to a higher round).
 */
export function exceedsOneThird(
  group: ConsensusGroup,
  members: Iterable<InstitutionIndex>,
): boolean {
  const g = indexGroup(group);
  const [count, units] = tally(g, members);
  return 3 * count > g.sorted.length || 3 * units > g.totalUnits;
}

/** What a vote signs: the value is a 32-byte value hash, or null for nil. */
export interface VoteSubject {
  readonly kind: ConsensusKind;
  readonly height: number;
  readonly round: number;
  readonly type: VoteType;
  readonly value: Bytes | null;
}

const KIND_CODES: Record<ConsensusKind, number> = { keyblock: 0, batch: 1 };
const KINDS: readonly ConsensusKind[] = ['keyblock', 'batch'];
const VOTE_TYPE_CODES: Record<VoteType, number> = { prevote: 1, precommit: 2 };

export function writeKind(w: Writer, kind: ConsensusKind): void {
  const code = KIND_CODES[kind];
  if (code === undefined) throw new RangeError(`unknown consensus kind: ${String(kind)}`);
  w.u8(code);
}

export function readKind(r: Reader): ConsensusKind {
  const code = r.u8('kind');
  return KINDS[code] ?? r.fail('kind', `is ${code}, not 0 (keyblock) or 1 (batch)`);
}

/** The canonical bytes a vote signs: (chainId, kind, height, round, type, value hash or nil). */
export function encodeVote(chainId: string, vote: VoteSubject): Bytes {
  return encode((w) => {
    w.string(chainId);
    writeKind(w, vote.kind);
    w.varint(vote.height).varint(vote.round).u8(VOTE_TYPE_CODES[vote.type]);
    w.bool(vote.value !== null);
    if (vote.value !== null) w.fixed(vote.value, HASH_BYTES, 'value hash');
  });
}

export function signVote(
  secretKey: Bytes,
  chainId: string,
  vote: VoteSubject,
  random?: RandomBytes,
): Bytes {
  return sign(secretKey, VOTE_DOMAIN, encodeVote(chainId, vote), random);
}

/** False for a wrong signature and for a malformed subject; never throws. */
export function verifyVote(
  publicKey: Bytes,
  chainId: string,
  vote: VoteSubject,
  signature: Bytes,
): boolean {
  let message: Bytes;
  try {
    message = encodeVote(chainId, vote);
  } catch {
    return false;
  }
  return verify(publicKey, VOTE_DOMAIN, message, signature);
}

function precommitOf(cert: Omit<Certificate, 'signatures'>): VoteSubject {
  return {
    kind: cert.kind,
    height: cert.height,
    round: cert.round,
    type: 'precommit',
    value: cert.value,
  };
}

/**
 * A certificate from precommit signatures over (kind, height, round, value hash), sorted by member.
 * Does not check the quorum (verifyCertificate does); throws DUPLICATE_VOTE on a repeated member.
 */
export function makeCertificate(
  subject: Omit<Certificate, 'signatures'>,
  signatures: readonly CertificateSignature[],
): Certificate {
  const sorted = [...signatures].sort((a, b) => a.member - b.member);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.member === sorted[i - 1]!.member) {
      throw new LedgerError('DUPLICATE_VOTE', `member ${sorted[i]!.member} signs twice`, {
        member: sorted[i]!.member,
      });
    }
  }
  return {
    kind: subject.kind,
    height: subject.height,
    round: subject.round,
    value: subject.value,
    signatures: sorted,
  };
}

/**
 * Checks a pinning certificate against the group that pinned it. Cheap checks come first
 * (membership, repeats, quorum), so a short certificate costs no signature verification.
 * `cert.value` is the 32-byte value hash (ledgerHash('value', value bytes)).
 */
export function verifyCertificate(
  cert: Certificate,
  group: ConsensusGroup,
  chainId: string,
): Verdict {
  const g = indexGroup(group);
  if (!(cert.value instanceof Uint8Array) || cert.value.length !== HASH_BYTES) {
    return reject('MALFORMED', `certificate value must be a ${HASH_BYTES}-byte hash`);
  }
  if (!Number.isSafeInteger(cert.height) || cert.height < 0) {
    return reject('MALFORMED', `certificate height must be an integer >= 0`);
  }
  if (!Number.isSafeInteger(cert.round) || cert.round < 0) {
    return reject('MALFORMED', `certificate round must be an integer >= 0`);
  }
  const seen = new Set<InstitutionIndex>();
  for (const s of cert.signatures) {
    if (!g.byMember.has(s.member)) {
      return reject('NOT_IN_GROUP', `signer ${s.member} is not in the consensus group`, {
        member: s.member,
      });
    }
    if (seen.has(s.member)) {
      return reject('DUPLICATE_VOTE', `member ${s.member} signs twice`, { member: s.member });
    }
    seen.add(s.member);
  }
  const quorum = checkQuorum(group, seen);
  if (!quorum.ok) return quorum;
  const message = encodeVote(chainId, precommitOf(cert));
  for (const s of cert.signatures) {
    const key = g.byMember.get(s.member)!.signingKey;
    if (!verify(key, VOTE_DOMAIN, message, s.signature)) {
      return reject('BAD_SIGNATURE', `member ${s.member}'s precommit signature does not verify`, {
        member: s.member,
        height: cert.height,
        round: cert.round,
        value: toHex(cert.value),
      });
    }
  }
  return OK;
}

/**
 * Compact, canonical encoding: kind, height, round, value hash, then one (member varint, 64-byte
 * signature) per signer in strictly ascending member order.
 */
export function encodeCertificate(cert: Certificate): Bytes {
  const sorted = makeCertificate(cert, cert.signatures).signatures;
  return encode((w) => {
    writeKind(w, cert.kind);
    w.varint(cert.height).varint(cert.round).fixed(cert.value, HASH_BYTES, 'value hash');
    w.list(sorted, (lw, s) => lw.varint(s.member).fixed(s.signature, SIGNATURE_BYTES, 'signature'));
  });
}

export function readCertificate(r: Reader, maxSigners: number): Certificate {
  const kind = readKind(r);
  const height = r.varint('height');
  const round = r.varint('round');
  const value = r.fixed(HASH_BYTES, 'value hash');
  let previous = -1;
  const signatures = r.list('signatures', maxSigners, (rr) => {
    const member = rr.varint('member');
    if (member <= previous)
      rr.fail('member', 'is not in strictly ascending order', 'NON_CANONICAL');
    previous = member;
    return { member, signature: rr.fixed(SIGNATURE_BYTES, 'signature') };
  });
  return { kind, height, round, value, signatures };
}

/** Decodes a certificate of at most `maxSigners` signers (the group size); throws LedgerError. */
export function decodeCertificate(bytes: Bytes, maxSigners: number): Certificate {
  return decode(bytes, 'certificate', (r) => readCertificate(r, maxSigners));
}
