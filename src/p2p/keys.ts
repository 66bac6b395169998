/**
 * Libp2p identities from 32-byte seeds (NOTES-libp2p: a seeded Ed25519 key per node makes every
 * peer id, and so the whole peers list, known before any node starts). The seed is a secret of the
 * institution; the libp2p key only authenticates transport sessions, the chain key vouches for it
 * through a peer binding.
 */
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys';
import type { Ed25519PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { P2pError } from './errors.ts';

export const PEER_KEY_SEED_BYTES = 32;

export async function peerKeyFromSeed(seed: Uint8Array): Promise<Ed25519PrivateKey> {
  if (!(seed instanceof Uint8Array) || seed.length !== PEER_KEY_SEED_BYTES) {
    throw new P2pError('BAD_CONFIG', `peer key seed must be ${PEER_KEY_SEED_BYTES} bytes`);
  }
  return generateKeyPairFromSeed('Ed25519', seed);
}

/** The canonical peer id string a seed yields (for writing peers files in advance). */
export async function peerIdFromSeed(seed: Uint8Array): Promise<string> {
  return peerIdFromPrivateKey(await peerKeyFromSeed(seed)).toString();
}
