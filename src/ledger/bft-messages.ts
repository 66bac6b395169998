/**
 * Tendermint's three messages (Buchman, Kwon, Milosevic 2018, Algorithm 1): PROPOSAL carries the
 * value bytes and the proposer's validRound; PREVOTE and PRECOMMIT carry the 32-byte value hash
 * id(v) = ledgerHash('value', v), or nil. Votes sign exactly the certificate's vote encoding
 * (certificate.ts), so 2f + 1 precommits are a pinning certificate as they stand.
 *
 * The network edge checks signatures (verifyMessage) before handing a message to `step`.
 */
import { equalBytes } from '../crypto/bytes.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { SIGNATURE_BYTES, sign, verify } from '../crypto/sign.ts';
import {
  type ConsensusGroup,
  encodeVote,
  indexGroup,
  readKind,
  VOTE_DOMAIN,
  writeKind,
} from './certificate.ts';
import { decode, encode } from './codec.ts';
import { OK, reject, type Verdict } from './errors.ts';
import { HASH_BYTES, ledgerHash } from './hash.ts';
import type { BftMessage, Bytes, InstitutionIndex, Proposal, Vote } from './types.ts';

export const PROPOSAL_DOMAIN = 'spchain/proposal';

export type { BftMessage, Proposal, Vote };
export type ProposalBody = Omit<Proposal, 'member' | 'signature'>;
export type VoteBody = Omit<Vote, 'member' | 'signature'>;

/** Signs on behalf of one member; the secret key stays with whoever made the signer. */
export interface Signer {
  readonly member: InstitutionIndex;
  sign(domain: string, message: Bytes): Bytes;
}

export function makeSigner(
  member: InstitutionIndex,
  secretKey: Bytes,
  random?: RandomBytes,
): Signer {
  return { member, sign: (domain, message) => sign(secretKey, domain, message, random) };
}

/**
 * id(v): what votes and certificates carry for a value, by default H('value', v). The ledger passes
 * its own (a batch's commitment hash, a keyblock's hash) so that a certificate signs the block's
 * hash itself, and one record is then proven by a Merkle path to a certified hash.
 */
export type HashValue = (value: Bytes) => Bytes;

export function valueHash(value: Bytes): Bytes {
  return ledgerHash('value', value);
}

function proposalSigningBytes(chainId: string, p: ProposalBody, hash: Bytes): Bytes {
  return encode((w) => {
    w.string(chainId);
    writeKind(w, p.kind);
    w.varint(p.height)
      .varint(p.round)
      .varint(p.validRound + 1)
      .fixed(hash, HASH_BYTES, 'value hash');
  });
}

function signingBytes(
  chainId: string,
  m: ProposalBody | VoteBody,
  hashValue: HashValue,
): [string, Bytes] {
  return m.type === 'proposal'
    ? [PROPOSAL_DOMAIN, proposalSigningBytes(chainId, m, hashValue(m.value))]
    : [VOTE_DOMAIN, encodeVote(chainId, m)];
}

export function signMessage(
  chainId: string,
  body: ProposalBody,
  signer: Signer,
  hashValue?: HashValue,
): Proposal;
export function signMessage(chainId: string, body: VoteBody, signer: Signer): Vote;
export function signMessage(
  chainId: string,
  body: ProposalBody | VoteBody,
  signer: Signer,
  hashValue: HashValue = valueHash,
): BftMessage {
  const [domain, bytes] = signingBytes(chainId, body, hashValue);
  return { ...body, member: signer.member, signature: signer.sign(domain, bytes) } as BftMessage;
}

function isRound(n: number, min: number): boolean {
  return Number.isSafeInteger(n) && n >= min;
}

/** Shape checks that need no key: heights, rounds, hash sizes. */
export function checkMessageShape(m: BftMessage): Verdict {
  if (!isRound(m.height, 0) || !isRound(m.round, 0)) {
    return reject('MALFORMED', 'height and round must be integers >= 0');
  }
  if (m.type === 'proposal') {
    if (!isRound(m.validRound, -1) || m.validRound >= m.round) {
      return reject('MALFORMED', `validRound ${m.validRound} must be in [-1, round ${m.round})`);
    }
    if (!(m.value instanceof Uint8Array))
      return reject('MALFORMED', 'proposal value must be bytes');
  } else if (
    m.value !== null &&
    (!(m.value instanceof Uint8Array) || m.value.length !== HASH_BYTES)
  ) {
    return reject('MALFORMED', `vote value must be a ${HASH_BYTES}-byte hash or nil`);
  }
  return OK;
}

/**
 * The edge's check: a well-formed message signed by a member of the group. A proposal whose value
 * `hashValue` cannot hash (it throws: not a decodable block) is MALFORMED.
 */
export function verifyMessage(
  m: BftMessage,
  group: ConsensusGroup,
  chainId: string,
  hashValue: HashValue = valueHash,
): Verdict {
  const shape = checkMessageShape(m);
  if (!shape.ok) return shape;
  const gm = indexGroup(group).byMember.get(m.member);
  if (gm === undefined) {
    return reject('NOT_IN_GROUP', `sender ${m.member} is not in the consensus group`, {
      member: m.member,
    });
  }
  let signed: [string, Bytes];
  try {
    signed = signingBytes(chainId, m, hashValue);
  } catch {
    return reject('MALFORMED', `proposal from member ${m.member} carries an undecodable value`);
  }
  const [domain, bytes] = signed;
  if (!verify(gm.signingKey, domain, bytes, m.signature)) {
    return reject('BAD_SIGNATURE', `${m.type} from member ${m.member} does not verify`, {
      member: m.member,
      height: m.height,
      round: m.round,
    });
  }
  return OK;
}

const TYPE_CODES = { proposal: 0, prevote: 1, precommit: 2 } as const;

/** Wire encoding: type, kind, height, round, member, body, signature. */
export function encodeBftMessage(m: BftMessage): Bytes {
  return encode((w) => {
    w.u8(TYPE_CODES[m.type]);
    writeKind(w, m.kind);
    w.varint(m.height).varint(m.round).varint(m.member);
    if (m.type === 'proposal') w.varint(m.validRound + 1).bytes(m.value);
    else {
      w.bool(m.value !== null);
      if (m.value !== null) w.fixed(m.value, HASH_BYTES, 'value hash');
    }
    w.fixed(m.signature, SIGNATURE_BYTES, 'signature');
  });
}

export function decodeBftMessage(bytes: Bytes, maxValueBytes: number): BftMessage {
  return decode(bytes, 'bft message', (r): BftMessage => {
    const code = r.u8('type');
    if (code > 2) r.fail('type', `is ${code}, not 0, 1 or 2`);
    const kind = readKind(r);
    const height = r.varint('height');
    const round = r.varint('round');
    const member = r.varint('member');
    if (code === 0) {
      const validRound = r.varint('validRound', round) - 1;
      const value = r.bytes('value', maxValueBytes);
      const signature = r.fixed(SIGNATURE_BYTES, 'signature');
      return { type: 'proposal', kind, height, round, validRound, value, member, signature };
    }
    const value = r.bool('has value') ? r.fixed(HASH_BYTES, 'value hash') : null;
    const signature = r.fixed(SIGNATURE_BYTES, 'signature');
    const type = code === 1 ? 'prevote' : 'precommit';
    return { type, kind, height, round, value, member, signature };
  });
}

/**
 * Proof that a member signed two conflicting messages of one type for the same height and round
 * (two votes for different values, or two proposals of different values). The ledger sets that
 * member's integrity H to 0 once `verifyEquivocation` accepts it.
 */
export interface Equivocation {
  readonly member: InstitutionIndex;
  readonly first: BftMessage;
  readonly second: BftMessage;
}

/** Same type, height and round, and the same value (and validRound): a repeat, not a conflict. */
export function sameContent(a: BftMessage, b: BftMessage): boolean {
  if (a.type !== b.type || a.kind !== b.kind || a.height !== b.height || a.round !== b.round) {
    return false;
  }
  if (a.type === 'proposal' && b.type === 'proposal') {
    return a.validRound === b.validRound && equalBytes(a.value, b.value);
  }
  if (a.type === 'proposal' || b.type === 'proposal') return false;
  return a.value === null || b.value === null ? a.value === b.value : equalBytes(a.value, b.value);
}

/** OK iff both messages verify, come from `member`, and conflict at one (height, round, type). */
export function verifyEquivocation(
  e: Equivocation,
  group: ConsensusGroup,
  chainId: string,
): Verdict {
  const { first: a, second: b } = e;
  if (a.member !== e.member || b.member !== e.member) {
    return reject('MALFORMED', 'evidence messages are not both from the accused member');
  }
  if (a.type !== b.type || a.kind !== b.kind || a.height !== b.height || a.round !== b.round) {
    return reject('MALFORMED', 'evidence messages are not for the same kind, height, round, type');
  }
  if (sameContent(a, b)) return reject('MALFORMED', 'evidence messages do not conflict');
  for (const m of [a, b]) {
    const v = verifyMessage(m, group, chainId);
    if (!v.ok) return v;
  }
  return OK;
}
