/**
 * Capsule fragments (rust-umbral capsule_frag.rs and Capsule::open_reencrypted).
 *
 * Re-encryption: E1 = rk·E, V1 = rk·V, with a Chaum-Pedersen style proof that the same rk was
 * used for E, V and the kfrag's commitment U1 = rk·U: for random t, E2 = t·E, V2 = t·V, U2 = t·U,
 * h = H("CFRAG_VERIFICATION", E, E1, E2, V, V1, V2, U, U1, U2), z = rk·h + t; the verifier checks
 * z·X = X2 + h·X1 for X in {E, V, U}, plus the delegator's signature over (id, U1, precursor).
 */
import { equalBytes } from '../bytes.ts';
import { curveBackend, invertSecret, randomNonZeroScalar } from '../curve/backend.ts';
import { decodePoint, UMBRAL_U } from '../curve/point.ts';
import {
  checkSecretScalar,
  decodeScalar,
  encodeScalar,
  hashToScalar,
  invertPublic,
  mod,
} from '../curve/scalar.ts';
import { CryptoError } from '../errors.ts';
import { type RandomBytes, systemRandom } from '../random.ts';
import { type Capsule, capsuleBytesSimple, demDecrypt, hashCapsulePoints } from './capsule.ts';
import {
  decodeSignature,
  type PublicKey,
  publicKeyOf,
  type SecretKey,
  verifyUmbral,
} from './keys.ts';
import {
  KFRAG_ID_BYTES,
  kfragSignatureMessage,
  polynomialArg,
  sharedSecret,
  type VerifiedKeyFrag,
} from './kfrag.ts';
import { encodeMsgpack, MsgpackReader } from './msgpack.ts';

export interface CapsuleFrag {
  readonly e1: Uint8Array;
  readonly v1: Uint8Array;
  readonly kfragId: Uint8Array;
  readonly precursor: Uint8Array;
  readonly e2: Uint8Array;
  readonly v2: Uint8Array;
  /** U1, the kfrag's commitment. */
  readonly commitment: Uint8Array;
  /** U2, the proof of knowledge. */
  readonly pok: Uint8Array;
  /** z, 32 bytes. */
  readonly z: Uint8Array;
  readonly kfragSignature: Uint8Array;
}

declare const verifiedCFrag: unique symbol;
export type VerifiedCapsuleFrag = CapsuleFrag & { readonly [verifiedCFrag]: true };

function challenge(
  capsule: Capsule,
  f: Omit<CapsuleFrag, 'kfragId' | 'precursor' | 'z' | 'kfragSignature'>,
): Uint8Array {
  return encodeScalar(
    hashToScalar('CFRAG_VERIFICATION', [
      capsule.e,
      f.e1,
      f.e2,
      capsule.v,
      f.v1,
      f.v2,
      UMBRAL_U,
      f.commitment,
      f.pok,
    ]),
  );
}

/** Re-encrypts a capsule with a verified kfrag (the proxy's operation). */
export function reencrypt(
  capsule: Capsule,
  kfrag: VerifiedKeyFrag,
  random: RandomBytes = systemRandom,
): VerifiedCapsuleFrag {
  const backend = curveBackend();
  const rk = kfrag.key;
  const e1 = backend.mul(capsule.e, rk);
  const v1 = backend.mul(capsule.v, rk);
  for (;;) {
    const t = randomNonZeroScalar(random);
    const parts = {
      e1,
      v1,
      e2: backend.mul(capsule.e, t),
      v2: backend.mul(capsule.v, t),
      commitment: kfrag.commitment,
      pok: backend.mul(UMBRAL_U, t),
    };
    const z = backend.scalarAdd(backend.scalarMul(rk, challenge(capsule, parts)), t);
    if (z === null) continue; // probability 2^-256
    return {
      ...parts,
      kfragId: kfrag.id,
      precursor: kfrag.precursor,
      z,
      kfragSignature: kfrag.signatureForReceiver,
    } as VerifiedCapsuleFrag;
  }
}

export function encodeCapsuleFrag(cfrag: CapsuleFrag): Uint8Array {
  return encodeMsgpack([
    cfrag.e1,
    cfrag.v1,
    cfrag.kfragId,
    cfrag.precursor,
    [cfrag.e2, cfrag.v2, cfrag.commitment, cfrag.pok, cfrag.z, cfrag.kfragSignature],
  ]);
}

/** Decodes a cfrag's bytes (structure only: call verifyCapsuleFrag before using it). */
export function decodeCapsuleFrag(bytes: Uint8Array): CapsuleFrag {
  const r = new MsgpackReader(bytes, 'cfrag');
  r.array(5, 'cfrag');
  const e1 = r.bin(33, 'point_e1');
  const v1 = r.bin(33, 'point_v1');
  const kfragId = r.bin(KFRAG_ID_BYTES, 'kfrag_id');
  const precursor = r.bin(33, 'precursor');
  r.array(6, 'proof');
  const e2 = r.bin(33, 'proof.point_e2');
  const v2 = r.bin(33, 'proof.point_v2');
  const commitment = r.bin(33, 'proof.kfrag_commitment');
  const pok = r.bin(33, 'proof.kfrag_pok');
  const z = r.bin(32, 'proof.signature');
  const kfragSignature = r.bin(64, 'proof.kfrag_signature');
  r.end();
  decodeScalar(z, 'cfrag proof signature', { nonZero: true });
  return {
    e1: decodePoint(e1, 'cfrag E1'),
    v1: decodePoint(v1, 'cfrag V1'),
    kfragId,
    precursor: decodePoint(precursor, 'cfrag precursor'),
    e2: decodePoint(e2, 'cfrag E2'),
    v2: decodePoint(v2, 'cfrag V2'),
    commitment: decodePoint(commitment, 'cfrag kfrag commitment'),
    pok: decodePoint(pok, 'cfrag kfrag proof of knowledge'),
    z,
    kfragSignature: decodeSignature(kfragSignature, 'cfrag kfrag signature'),
  };
}

export interface VerifyCapsuleFragOpts {
  capsule: Capsule;
  /** The key that signed the kfrags. */
  verifyingPk: PublicKey;
  delegatingPk: PublicKey;
  receivingPk: PublicKey;
}

/** Checks the kfrag signature and the re-encryption proof (rust-umbral CapsuleFrag::verify). */
export function verifyCapsuleFrag(
  cfrag: CapsuleFrag,
  opts: VerifyCapsuleFragOpts,
): VerifiedCapsuleFrag {
  const { capsule } = opts;
  const message = kfragSignatureMessage(
    cfrag.kfragId,
    cfrag.commitment,
    cfrag.precursor,
    opts.delegatingPk,
    opts.receivingPk,
  );
  if (!verifyUmbral(opts.verifyingPk, message, cfrag.kfragSignature)) {
    throw new CryptoError('CFRAG_INVALID', 'cfrag kfrag signature does not verify', {
      reason: 'kfrag-signature',
    });
  }
  const backend = curveBackend();
  const h = challenge(capsule, cfrag);
  const holds = (x: Uint8Array, x1: Uint8Array, x2: Uint8Array): boolean => {
    const rhs = backend.add([x2, backend.mul(x1, h)]);
    return rhs !== null && equalBytes(backend.mul(x, cfrag.z), rhs);
  };
  if (
    !holds(capsule.e, cfrag.e1, cfrag.e2) ||
    !holds(capsule.v, cfrag.v1, cfrag.v2) ||
    !holds(UMBRAL_U, cfrag.commitment, cfrag.pok)
  ) {
    throw new CryptoError('CFRAG_INVALID', 'cfrag re-encryption proof does not verify', {
      reason: 're-encryption-proof',
    });
  }
  return cfrag as VerifiedCapsuleFrag;
}

/** Lagrange coefficient at 0 for share i among the xs (public values, bigint arithmetic). */
function lagrangeAtZero(xs: readonly bigint[], i: number): bigint {
  let acc = 1n;
  for (let j = 0; j < xs.length; j++) {
    if (j === i) continue;
    const diff = mod(xs[j]! - xs[i]!);
    if (diff === 0n) {
      throw new CryptoError('CFRAGS_MISMATCHED', 'some of the cfrags are repeated');
    }
    acc = mod(acc * xs[j]! * invertPublic(diff));
  }
  return acc;
}

/** Recombines the cfrags into the key seed (rust-umbral Capsule::open_reencrypted). */
export function openReencrypted(
  receivingSk: SecretKey,
  delegatingPk: PublicKey,
  capsule: Capsule,
  cfrags: readonly VerifiedCapsuleFrag[],
  random: RandomBytes,
): Uint8Array {
  const first = cfrags[0];
  if (first === undefined) throw new CryptoError('CFRAGS_MISMATCHED', 'no cfrags were given');
  const precursor = first.precursor;
  if (!cfrags.every((c) => equalBytes(c.precursor, precursor))) {
    throw new CryptoError('CFRAGS_MISMATCHED', 'cfrags come from different kfrag sets');
  }
  const backend = curveBackend();
  const sk = checkSecretScalar(receivingSk, 'receiving secret key');
  const pk = publicKeyOf(sk);
  const dh = backend.mul(precursor, sk);
  const xs = cfrags.map((c) => polynomialArg(precursor, pk, dh, c.kfragId));
  const scaled = (point: (c: CapsuleFrag) => Uint8Array) =>
    cfrags.map((c, i) => {
      const lambda = lagrangeAtZero(xs, i);
      return lambda === 1n ? point(c) : backend.mul(point(c), encodeScalar(lambda));
    });
  const ePrime = backend.add(scaled((c) => c.e1));
  const vPrime = backend.add(scaled((c) => c.v1));
  const d = encodeScalar(sharedSecret(precursor, pk, dh));
  // Check pk_A·(s/d) = h·E' + V' before using E', V' (rejects cfrags for another capsule).
  const h = encodeScalar(hashCapsulePoints(capsule.e, capsule.v));
  const lhs = backend.mul(delegatingPk, backend.scalarMul(capsule.s, invertSecret(d, random)));
  const rhs = ePrime && vPrime && backend.add([backend.mul(ePrime, h), vPrime]);
  if (!rhs || !equalBytes(lhs, rhs)) {
    throw new CryptoError('DECRYPTION_FAILED', 'the cfrags do not open this capsule', {
      reason: 'validation-failed',
    });
  }
  const sum = backend.add([ePrime!, vPrime!]);
  if (sum === null) throw new CryptoError('DECRYPTION_FAILED', "E' + V' is the identity");
  return backend.mul(sum, d);
}

/**
 * Decrypts a ciphertext with the key seed `openReencrypted` gave for its capsule: for several
 * ciphertexts under one capsule (capsule.ts encryptMany), the cfrags are recombined once. The AEAD
 * still binds each ciphertext to the capsule.
 */
export function decryptWithSeed(
  keySeed: Uint8Array,
  capsule: Capsule,
  ciphertext: Uint8Array,
): Uint8Array {
  return demDecrypt(keySeed, ciphertext, capsuleBytesSimple(capsule));
}

/** Decrypts a re-encrypted ciphertext with the receiver's key and verified cfrags. */
export function decryptReencrypted(
  receivingSk: SecretKey,
  delegatingPk: PublicKey,
  capsule: Capsule,
  cfrags: readonly VerifiedCapsuleFrag[],
  ciphertext: Uint8Array,
  random: RandomBytes = systemRandom,
): Uint8Array {
  const keySeed = openReencrypted(receivingSk, delegatingPk, capsule, cfrags, random);
  try {
    return demDecrypt(keySeed, ciphertext, capsuleBytesSimple(capsule));
  } finally {
    keySeed.fill(0);
  }
}
