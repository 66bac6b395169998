/**
 * Key fragments (rust-umbral key_frag.rs). The delegator splits rk = sk_A / d into t-of-n Shamir
 * shares, where d = H("SHARED_SECRET", precursor, pk_B, dh) ties the shares to the receiver
 * (dh = x_A·pk_B for an ephemeral precursor x_A·G), and signs each share with a commitment
 * U·rk so the proxy can check it without learning anything.
 */
import { concatBytes, equalBytes } from '../bytes.ts';
import { curveBackend, invertSecret, randomNonZeroScalar } from '../curve/backend.ts';
import { decodePoint, UMBRAL_U } from '../curve/point.ts';
import { checkSecretScalar, encodeScalar, hashToScalar } from '../curve/scalar.ts';
import { CryptoError } from '../errors.ts';
import { type RandomBytes, systemRandom } from '../random.ts';
import {
  decodePublicKey,
  decodeSignature,
  type PublicKey,
  publicKeyOf,
  type SecretKey,
  signUmbral,
  verifyUmbral,
} from './keys.ts';
import { encodeMsgpack, MsgpackReader } from './msgpack.ts';

export const KFRAG_ID_BYTES = 32;

export interface KeyFrag {
  readonly id: Uint8Array;
  /** The share rk_i (secret from everyone but the delegator and the proxy holding it). */
  readonly key: Uint8Array;
  readonly precursor: Uint8Array;
  readonly commitment: Uint8Array;
  readonly signatureForProxy: Uint8Array;
  readonly signatureForReceiver: Uint8Array;
  readonly delegatingKeySigned: boolean;
  readonly receivingKeySigned: boolean;
}

declare const verifiedKFrag: unique symbol;
/** A kfrag whose commitment and signature were checked (or that its maker produced). */
export type VerifiedKeyFrag = KeyFrag & { readonly [verifiedKFrag]: true };

export function polynomialArg(
  precursor: Uint8Array,
  receivingPk: Uint8Array,
  dh: Uint8Array,
  id: Uint8Array,
): bigint {
  return hashToScalar('POLYNOMIAL_ARG', [precursor, receivingPk, dh, id]);
}

export function sharedSecret(
  precursor: Uint8Array,
  receivingPk: Uint8Array,
  dh: Uint8Array,
): bigint {
  return hashToScalar('SHARED_SECRET', [precursor, receivingPk, dh]);
}

/** The message a kfrag signature covers (rust-umbral hashing_ds.rs kfrag_signature_message). */
export function kfragSignatureMessage(
  id: Uint8Array,
  commitment: Uint8Array,
  precursor: Uint8Array,
  delegatingPk: PublicKey | null,
  receivingPk: PublicKey | null,
): Uint8Array {
  const opt = (pk: PublicKey | null) => (pk ? concatBytes(Uint8Array.of(1), pk) : Uint8Array.of(0));
  return concatBytes(id, commitment, precursor, opt(delegatingPk), opt(receivingPk));
}

export interface GenerateKFragsOpts {
  delegatingSk: SecretKey;
  receivingPk: PublicKey;
  /** The key that signs the kfrags (in SPChain: the patient's Umbral signing key). */
  signerSk: SecretKey;
  threshold: number;
  shares: number;
  signDelegatingKey: boolean;
  signReceivingKey: boolean;
  random?: RandomBytes;
}

export function generateKFrags(opts: GenerateKFragsOpts): VerifiedKeyFrag[] {
  const { threshold, shares } = opts;
  const random = opts.random ?? systemRandom;
  if (!Number.isInteger(threshold) || !Number.isInteger(shares) || threshold < 1) {
    throw new CryptoError('INVALID_ARGUMENT', 'threshold and shares must be positive integers');
  }
  if (threshold > shares) {
    throw new CryptoError('INVALID_ARGUMENT', `threshold ${threshold} exceeds shares ${shares}`);
  }
  const backend = curveBackend();
  const delegatingSk = checkSecretScalar(opts.delegatingSk, 'delegating secret key');
  const signerSk = checkSecretScalar(opts.signerSk, 'signing key');
  const receivingPk = decodePublicKey(opts.receivingPk, 'receiving public key');
  const delegatingPk = publicKeyOf(delegatingSk);

  const precursorSk = randomNonZeroScalar(random);
  const precursor = backend.mulBase(precursorSk);
  const dh = backend.mul(receivingPk, precursorSk);
  const d = encodeScalar(sharedSecret(precursor, receivingPk, dh));
  const coefficients = [backend.scalarMul(delegatingSk, invertSecret(d, random))];
  for (let i = 1; i < threshold; i++) coefficients.push(randomNonZeroScalar(random));

  const kfrags: VerifiedKeyFrag[] = [];
  while (kfrags.length < shares) {
    const id = random(KFRAG_ID_BYTES);
    const x = encodeScalar(polynomialArg(precursor, receivingPk, dh, id));
    const key = evaluatePolynomial(coefficients, x);
    if (key === null) continue; // a zero share (probability 2^-256): draw another id
    const commitment = backend.mul(UMBRAL_U, key);
    const sign = (withDelegating: boolean, withReceiving: boolean) =>
      signUmbral(
        signerSk,
        kfragSignatureMessage(
          id,
          commitment,
          precursor,
          withDelegating ? delegatingPk : null,
          withReceiving ? receivingPk : null,
        ),
        random,
      );
    const signatureForReceiver = sign(true, true);
    const signatureForProxy = sign(opts.signDelegatingKey, opts.signReceivingKey);
    kfrags.push({
      id,
      key,
      precursor,
      commitment,
      signatureForProxy,
      signatureForReceiver,
      delegatingKeySigned: opts.signDelegatingKey,
      receivingKeySigned: opts.signReceivingKey,
    } as VerifiedKeyFrag);
  }
  for (const c of coefficients) c.fill(0);
  return kfrags;
}

/** Horner's rule with constant-time scalar operations; null if the value is zero. */
function evaluatePolynomial(coefficients: Uint8Array[], x: Uint8Array): Uint8Array | null {
  const backend = curveBackend();
  let acc: Uint8Array | null = coefficients[coefficients.length - 1]!;
  for (let i = coefficients.length - 2; i >= 0; i--) {
    acc = backend.scalarAdd(backend.scalarMul(acc, x), coefficients[i]!);
    if (acc === null) return null;
  }
  return Uint8Array.from(acc);
}

export function encodeKeyFrag(kfrag: KeyFrag): Uint8Array {
  return encodeMsgpack([
    [UMBRAL_U],
    kfrag.id,
    kfrag.key,
    kfrag.precursor,
    [
      kfrag.commitment,
      kfrag.signatureForProxy,
      kfrag.signatureForReceiver,
      kfrag.delegatingKeySigned,
      kfrag.receivingKeySigned,
    ],
  ]);
}

/** Decodes a kfrag's bytes (structure only: call verifyKeyFrag before using it). */
export function decodeKeyFrag(bytes: Uint8Array): KeyFrag {
  const r = new MsgpackReader(bytes, 'kfrag');
  r.array(5, 'kfrag');
  r.array(1, 'parameters');
  const u = r.bin(33, 'parameters.u');
  const id = r.bin(KFRAG_ID_BYTES, 'id');
  const key = r.bin(32, 'key');
  const precursor = r.bin(33, 'precursor');
  r.array(5, 'proof');
  const commitment = r.bin(33, 'proof.commitment');
  const signatureForProxy = r.bin(64, 'proof.signature_for_proxy');
  const signatureForReceiver = r.bin(64, 'proof.signature_for_receiver');
  const delegatingKeySigned = r.bool('proof.delegating_key_signed');
  const receivingKeySigned = r.bool('proof.receiving_key_signed');
  r.end();
  if (!equalBytes(u, UMBRAL_U)) {
    throw new CryptoError('KFRAG_INVALID', 'kfrag parameters are not the standard Umbral U');
  }
  checkSecretScalar(key, 'kfrag key');
  return {
    id,
    key,
    precursor: decodePoint(precursor, 'kfrag precursor'),
    commitment: decodePoint(commitment, 'kfrag commitment'),
    signatureForProxy: decodeSignature(signatureForProxy, 'kfrag signature for proxy'),
    signatureForReceiver: decodeSignature(signatureForReceiver, 'kfrag signature for receiver'),
    delegatingKeySigned,
    receivingKeySigned,
  };
}

export interface VerifyKeyFragOpts {
  /** The key that signed the kfrag. */
  verifyingPk: PublicKey;
  delegatingPk?: PublicKey | null;
  receivingPk?: PublicKey | null;
}

/** Checks the commitment U·rk and the delegator's signature (rust-umbral KeyFrag::verify). */
export function verifyKeyFrag(kfrag: KeyFrag, opts: VerifyKeyFragOpts): VerifiedKeyFrag {
  const delegatingPk = opts.delegatingPk ?? null;
  const receivingPk = opts.receivingPk ?? null;
  if (!equalBytes(curveBackend().mul(UMBRAL_U, kfrag.key), kfrag.commitment)) {
    throw new CryptoError('KFRAG_INVALID', 'kfrag commitment does not match its key');
  }
  if (kfrag.delegatingKeySigned && delegatingPk === null) {
    throw new CryptoError('KFRAG_INVALID', 'kfrag signs the delegating key, which was not given');
  }
  if (kfrag.receivingKeySigned && receivingPk === null) {
    throw new CryptoError('KFRAG_INVALID', 'kfrag signs the receiving key, which was not given');
  }
  const message = kfragSignatureMessage(
    kfrag.id,
    kfrag.commitment,
    kfrag.precursor,
    kfrag.delegatingKeySigned ? delegatingPk : null,
    kfrag.receivingKeySigned ? receivingPk : null,
  );
  if (!verifyUmbral(opts.verifyingPk, message, kfrag.signatureForProxy)) {
    throw new CryptoError('KFRAG_INVALID', 'kfrag signature does not verify');
  }
  return kfrag as VerifiedKeyFrag;
}
