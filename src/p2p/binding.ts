/**
 * Peer bindings: an institution's chain key vouches for its libp2p identity. The key owner signs
 * (chainId, member index, peer id) once with the member's secp256k1 signing key from the genesis
 * registry; the signature travels in the peers list, and a node only talks to peer ids that carry a
 * valid binding by the member they are listed as. A binding for one chain or one member is useless
 * for another (both are in the signed message, under a domain of its own).
 *
 * Pure: no libp2p import. Peer ids are their canonical string form (base58btc multihash, what
 * `PeerId.toString()` returns); peers.ts rejects any other spelling before verifying.
 */
import type { RandomBytes } from '../crypto/random.ts';
import { SIGNATURE_BYTES, sign, verify } from '../crypto/sign.ts';
import { encode } from '../ledger/codec.ts';
import type { InstitutionIndex, Member } from '../ledger/types.ts';

export const PEER_BINDING_DOMAIN = 'spchain/peer-binding';
export const PEER_BINDING_BYTES = SIGNATURE_BYTES;

/** The signed message: string chainId, varint member index, string peer id. */
export function peerBindingMessage(
  chainId: string,
  peerId: string,
  member: InstitutionIndex,
): Uint8Array {
  if (chainId.length === 0) throw new RangeError('peer binding: chainId is empty');
  if (peerId.length === 0) throw new RangeError('peer binding: peerId is empty');
  return encode((w) => w.string(chainId).varint(member).string(peerId));
}

/** Signs the binding of `peerId` to member `member` (done once, by the institution's key owner). */
export function makePeerBinding(
  chainId: string,
  peerId: string,
  member: InstitutionIndex,
  signingSecret: Uint8Array,
  random?: RandomBytes,
): Uint8Array {
  return sign(
    signingSecret,
    PEER_BINDING_DOMAIN,
    peerBindingMessage(chainId, peerId, member),
    random,
  );
}

/** True iff `binding` is `member`'s signature binding `peerId` on `chainId`; never throws. */
export function verifyPeerBinding(
  chainId: string,
  peerId: string,
  member: Pick<Member, 'index' | 'signingKey'>,
  binding: Uint8Array,
): boolean {
  if (typeof chainId !== 'string' || typeof peerId !== 'string') return false;
  if (chainId.length === 0 || peerId.length === 0) return false;
  if (!Number.isSafeInteger(member.index) || member.index < 0) return false;
  return verify(
    member.signingKey,
    PEER_BINDING_DOMAIN,
    peerBindingMessage(chainId, peerId, member.index),
    binding,
  );
}
