/**
 * Membership changes after genesis (DESIGN section 2: "institution public keys are in the network's
 * genesis file and in each keyblock that changes the membership"). An institution joins through an
 * admit tx carried in a keyblock:
 *
 *   - the new member's public keys and the next free index (indexes are never reused),
 *   - its libp2p identity (peer id, address, and the binding its chain key signed for it), so that
 *     every node learns from the chain whom to accept and dial, without editing a peers file,
 *   - its own signature over the request (it holds the signing key it names), and
 *   - approvals: signatures over the same request by MORE than 2/3 of the members the chain had
 *     before the keyblock, by count. Every member institution has one voice here, reputable or not:
 *     admitting is a decision about who may write records, and the reputation-weighted group only
 *     decides which keyblock and batches are pinned. The keyblock carrying the tx is itself pinned
 *     by the group's certificate, so a minority cannot smuggle a member in or keep one out.
 *
 * The new member takes part from the keyblock after the one that admits it: it may mine, sign
 * bundles, and (holding no reputation yet) enters the consensus group only when the group is
 * recomputed at a chunk boundary and its reputation earns it a seat.
 *
 * PURE: no IO, no clock. Encoding is canonical (approvals sorted by member, no repeats).
 */
import { equalBytes, toHex } from '../crypto/bytes.ts';
import { curveBackend } from '../crypto/curve/backend.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { SIGNATURE_BYTES, sign, verify } from '../crypto/sign.ts';
import { decode, encode, type Reader, type Writer } from './codec.ts';
import { OK, reject, type Verdict } from './errors.ts';
import { ledgerHash } from './hash.ts';
import type { AdmitTx, Approval, Bytes, InstitutionIndex, Member, PeerRecord } from './types.ts';

/** Most admit txs in one keyblock. */
export const MAX_KEYBLOCK_ADMITS = 16;
/** Most members a chain may have: bounds approval lists and indexes. */
export const MAX_MEMBERS = 1024;
export const MAX_MEMBER_NAME = 128;
export const MAX_PEER_ID = 128;
export const MAX_MULTIADDR = 256;

const REQUEST_DOMAIN = 'spchain/admit-request';
const APPROVAL_DOMAIN = 'spchain/admit-approval';

function writeMember(w: Writer, m: Member): void {
  w.varint(m.index)
    .string(m.name)
    .fixed(m.signingKey, 33, 'signingKey')
    .fixed(m.chameleonKey, 33, 'chameleonKey')
    .fixed(m.preKey, 33, 'preKey');
}

function writePeer(w: Writer, p: PeerRecord): void {
  w.string(p.peerId).string(p.multiaddr).bytes(p.binding);
}

/** What the new member and the approvers sign: the chain, the member and its peer record. */
export function admitMessage(chainId: string, member: Member, peer: PeerRecord): Bytes {
  return encode((w) => {
    w.string(chainId);
    writeMember(w, member);
    writePeer(w, peer);
  });
}

/** The new member's signature over its own request (proof that it holds the signing key). */
export function signAdmitRequest(
  chainId: string,
  member: Member,
  peer: PeerRecord,
  signingSecret: Bytes,
  random?: RandomBytes,
): Bytes {
  return sign(signingSecret, REQUEST_DOMAIN, admitMessage(chainId, member, peer), random);
}

/** An existing member's approval of a request. */
export function approveAdmission(
  chainId: string,
  request: Pick<AdmitTx, 'member' | 'peer'>,
  approver: InstitutionIndex,
  signingSecret: Bytes,
  random?: RandomBytes,
): Approval {
  const message = admitMessage(chainId, request.member, request.peer);
  return { member: approver, signature: sign(signingSecret, APPROVAL_DOMAIN, message, random) };
}

export function writeAdmit(w: Writer, tx: AdmitTx): void {
  writeMember(w, tx.member);
  writePeer(w, tx.peer);
  w.fixed(tx.proof, SIGNATURE_BYTES, 'proof');
  w.list(tx.approvals, (lw, a) =>
    lw.varint(a.member).fixed(a.signature, SIGNATURE_BYTES, 'approval'),
  );
}

export function readAdmit(r: Reader): AdmitTx {
  const member: Member = {
    index: r.varint('member index', MAX_MEMBERS - 1),
    name: r.string('member name', MAX_MEMBER_NAME * 4),
    signingKey: r.fixed(33, 'signingKey'),
    chameleonKey: r.fixed(33, 'chameleonKey'),
    preKey: r.fixed(33, 'preKey'),
  };
  const peer: PeerRecord = {
    peerId: r.string('peer id', MAX_PEER_ID),
    multiaddr: r.string('multiaddr', MAX_MULTIADDR),
    binding: r.bytes('peer binding', SIGNATURE_BYTES),
  };
  const proof = r.fixed(SIGNATURE_BYTES, 'proof');
  const approvals = r.list('approvals', MAX_MEMBERS, (rr) => ({
    member: rr.varint('approver', MAX_MEMBERS - 1),
    signature: rr.fixed(SIGNATURE_BYTES, 'approval'),
  }));
  for (let k = 1; k < approvals.length; k++) {
    if (approvals[k]!.member <= approvals[k - 1]!.member) {
      r.fail('approvals', 'must be sorted by member with no repeats', 'NON_CANONICAL');
    }
  }
  return { type: 'admit', member, peer, proof, approvals };
}

export function encodeAdmit(tx: AdmitTx): Bytes {
  return encode((w) => writeAdmit(w, tx));
}

export function decodeAdmit(bytes: Bytes): AdmitTx {
  return decode(bytes, 'admit tx', readAdmit);
}

export function admitHash(tx: AdmitTx): Bytes {
  return ledgerHash('admit', encodeAdmit(tx));
}

/** Whether the request is well formed and signed by the member it names (approvals unchecked). */
export function checkAdmitRequest(
  chainId: string,
  roster: readonly Member[],
  tx: AdmitTx,
): Verdict {
  const problem = memberProblem(tx.member) ?? peerProblem(tx.peer);
  if (problem !== null) {
    return reject('MALFORMED', `admit tx for member ${tx.member.index}: ${problem}`);
  }
  const taken = collision(tx.member, roster);
  if (taken !== null) {
    return reject('UNAUTHORISED_INSTITUTION', `admit tx for member ${tx.member.index}: ${taken}`);
  }
  if (
    !verify(
      tx.member.signingKey,
      REQUEST_DOMAIN,
      admitMessage(chainId, tx.member, tx.peer),
      tx.proof,
    )
  ) {
    return reject(
      'BAD_SIGNATURE',
      `admit tx for member ${tx.member.index} is not signed by its key`,
    );
  }
  return OK;
}

/**
 * A lookup by index over a roster that is replaced, never changed in place, as members are
 * admitted (the replica's pinned roster): rebuilt only when `roster()` returns another array.
 */
export function rosterLookup(
  roster: () => readonly Member[],
): (index: InstitutionIndex) => Member | undefined {
  let seen: readonly Member[] | null = null;
  let byIndex = new Map<InstitutionIndex, Member>();
  return (index) => {
    const now = roster();
    if (now !== seen) {
      seen = now;
      byIndex = new Map(now.map((m) => [m.index, m]));
    }
    return byIndex.get(index);
  };
}

/** The index the next admitted member gets: one past the highest so far (never reused). */
export function nextMemberIndex(roster: readonly Member[]): InstitutionIndex {
  let max = -1;
  for (const m of roster) max = Math.max(max, m.index);
  return max + 1;
}

/** More than 2/3 of `n` members, by count. */
export function admitQuorum(n: number): number {
  return Math.floor((2 * n) / 3) + 1;
}

/** As the genesis file's names: printable, no control characters. */
const PRINTABLE_NAME = /^[^\p{C}]+$/u;

/**
 * Checks a keyblock's admit txs, in order, against the roster before the keyblock: each admits
 * the next index with fresh, valid keys and a name no member has, carries the new member's own
 * signature, and is approved by more than 2/3 of the roster before the keyblock. Returns the
 * roster after them when valid.
 */
export function checkAdmits(
  chainId: string,
  roster: readonly Member[],
  admits: readonly AdmitTx[],
): { verdict: Verdict; roster: readonly Member[] } {
  const fail = (verdict: Verdict) => ({ verdict, roster });
  if (admits.length > MAX_KEYBLOCK_ADMITS) {
    return fail(reject('TOO_LARGE', `more than ${MAX_KEYBLOCK_ADMITS} admit txs in a keyblock`));
  }
  const byIndex = new Map(roster.map((m) => [m.index, m]));
  const needed = admitQuorum(roster.length);
  let next = roster;
  for (const tx of admits) {
    const { member, peer } = tx;
    const expected = nextMemberIndex(next);
    if (member.index !== expected || expected >= MAX_MEMBERS) {
      return fail(
        reject(
          'UNKNOWN_INSTITUTION',
          `admit tx gives index ${member.index}, the next is ${expected}`,
        ),
      );
    }
    const request = checkAdmitRequest(chainId, next, tx);
    if (!request.ok) return fail(request);
    const message = admitMessage(chainId, member, peer);
    let last = -1;
    for (const a of tx.approvals) {
      const approver = byIndex.get(a.member);
      if (a.member <= last || approver === undefined) {
        return fail(
          reject(
            'UNAUTHORISED_INSTITUTION',
            `admit tx for member ${member.index}: approver ${a.member} is not a member (or repeated)`,
          ),
        );
      }
      last = a.member;
      if (!verify(approver.signingKey, APPROVAL_DOMAIN, message, a.signature)) {
        return fail(
          reject(
            'BAD_SIGNATURE',
            `admit tx for member ${member.index}: approval by ${a.member} does not verify`,
          ),
        );
      }
    }
    if (tx.approvals.length < needed) {
      return fail(
        reject(
          'QUORUM_SHORT_MEMBERS',
          `admit tx for member ${member.index}: ${tx.approvals.length} approvals, ${needed} of ${roster.length} members needed`,
        ),
      );
    }
    next = [...next, member];
  }
  return { verdict: OK, roster: next };
}

/** What is wrong with the member itself, whatever the chain (MALFORMED), or null. */
function memberProblem(m: Member): string | null {
  const name = m.name.trim();
  if (name !== m.name || name.length === 0 || name.length > MAX_MEMBER_NAME) {
    return `name must be 1-${MAX_MEMBER_NAME} characters without surrounding spaces`;
  }
  if (!PRINTABLE_NAME.test(name)) return 'name has control characters';
  const backend = curveBackend();
  for (const [what, key] of [
    ['signing key', m.signingKey],
    ['chameleon key', m.chameleonKey],
    ['PRE key', m.preKey],
  ] as const) {
    if (!backend.isPoint(key)) return `${what} is not a valid compressed secp256k1 point`;
  }
  const keys = [m.signingKey, m.chameleonKey, m.preKey];
  if (!keys.every((k, i) => keys.every((o, j) => i === j || !equalBytes(k, o)))) {
    return 'its three keys must differ';
  }
  return null;
}

/**
 * What the member shares with one already on the chain (a name, any case, or a key), or null:
 * this depends on the members a judge knows, so it is no proof that the sender misbehaved.
 */
function collision(m: Member, roster: readonly Member[]): string | null {
  const keys = [m.signingKey, m.chameleonKey, m.preKey];
  for (const o of roster) {
    if (o.name.toLowerCase() === m.name.toLowerCase()) return `name is member ${o.index}'s`;
    for (const k of keys) {
      if ([o.signingKey, o.chameleonKey, o.preKey].some((ok) => equalBytes(ok, k))) {
        return `a key is member ${o.index}'s (${toHex(k).slice(0, 16)})`;
      }
    }
  }
  return null;
}

function peerProblem(p: PeerRecord): string | null {
  if (p.peerId.length === 0 || p.peerId.length > MAX_PEER_ID) return 'peer id is empty or too long';
  if (p.multiaddr.length === 0 || p.multiaddr.length > MAX_MULTIADDR) {
    return 'multiaddr is empty or too long';
  }
  if (p.binding.length !== SIGNATURE_BYTES) return `binding must be ${SIGNATURE_BYTES} bytes`;
  return null;
}
