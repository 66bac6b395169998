/** Umbral proxy re-encryption, byte-compatible with rust-umbral 0.10. */
export {
  type Capsule,
  capsuleBytesSimple,
  decodeCapsule,
  decryptOriginal,
  encodeCapsule,
  encrypt,
  encryptMany,
} from './capsule.ts';
export {
  type CapsuleFrag,
  decodeCapsuleFrag,
  decryptReencrypted,
  decryptWithSeed,
  encodeCapsuleFrag,
  openReencrypted,
  reencrypt,
  type VerifiedCapsuleFrag,
  verifyCapsuleFrag,
} from './cfrag.ts';
export {
  decodePublicKey,
  decodeSecretKey,
  generateSecretKey,
  type PublicKey,
  publicKeyOf,
  type SecretKey,
  signUmbral,
  verifyUmbral,
} from './keys.ts';
export {
  decodeKeyFrag,
  encodeKeyFrag,
  generateKFrags,
  type KeyFrag,
  type VerifiedKeyFrag,
  verifyKeyFrag,
} from './kfrag.ts';
