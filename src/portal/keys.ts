/**
 * The patient's keys in the browser: the same key file as the CLI's (crypto/keyfile.ts, kind
 * "patient", public and secret keys `pre` and `signing`), so a file exported here imports into
 * the CLI and back. The sealed file is kept in localStorage (it is passphrase-encrypted); the
 * opened secrets live in memory only, for this page's session, and are wiped on lock.
 */
import {
  openKeyFileAsync,
  parseKeyFile,
  type ScryptCost,
  sealKeyFileAsync,
} from '../crypto/keyfile.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { generateSigningKey, signingPublicKey } from '../crypto/sign.ts';
import { generateSecretKey, publicKeyOf } from '../crypto/umbral/index.ts';

export const KEYFILE_STORAGE_KEY = 'spchain.portal.keyfile';
export const KEYFILE_LABEL = 'SPChain patient keys';
export const KEYFILE_DOWNLOAD_NAME = 'spchain-patient-keys.json';
export const MIN_PASSPHRASE = 8;

/** The opened keys (secrets in memory only). */
export interface PatientKeySession {
  readonly preKey: Uint8Array;
  readonly preSecret: Uint8Array;
  readonly signingKey: Uint8Array;
  readonly signingSecret: Uint8Array;
}

/** Checks that `text` is a patient key file; returns its public keys. Throws with a reason. */
export function checkPatientKeyFile(text: string): { pre: Uint8Array; signing: Uint8Array } {
  const header = parseKeyFile(text);
  const { pre, signing } = header.publicKeys;
  if (header.kind !== 'patient' || !pre || !signing) {
    throw new Error('this is not a patient key file (it must hold the keys "pre" and "signing")');
  }
  return { pre, signing };
}

/** New keys, sealed under the passphrase: the key file text and the opened session. */
export async function createPatientKeys(
  passphrase: string,
  random: RandomBytes,
  kdf?: ScryptCost,
): Promise<{ keyFile: string; session: PatientKeySession }> {
  if (passphrase.length < MIN_PASSPHRASE) {
    throw new Error(`the passphrase must have at least ${MIN_PASSPHRASE} characters`);
  }
  const preSecret = generateSecretKey(random);
  const signing = generateSigningKey(random);
  const session: PatientKeySession = {
    preKey: publicKeyOf(preSecret),
    preSecret: Uint8Array.from(preSecret),
    signingKey: signing.publicKey,
    signingSecret: Uint8Array.from(signing.secretKey),
  };
  // sealKeyFile wipes the secrets it is given: it gets copies.
  const keyFile = await sealKeyFileAsync({
    kind: 'patient',
    label: KEYFILE_LABEL,
    publicKeys: { pre: session.preKey, signing: session.signingKey },
    secretKeys: { pre: preSecret, signing: signing.secretKey },
    passphrase,
    random,
    ...(kdf ? { kdf } : {}),
  });
  return { keyFile, session };
}

/** Opens a patient key file with its passphrase. */
export async function openPatientKeys(
  text: string,
  passphrase: string,
): Promise<PatientKeySession> {
  const { pre } = checkPatientKeyFile(text);
  const c = await openKeyFileAsync(text, passphrase);
  const preSecret = c.secretKeys.pre;
  const signingSecret = c.secretKeys.signing;
  if (!preSecret || !signingSecret) {
    throw new Error('the key file does not hold the secret keys "pre" and "signing"');
  }
  const preKey = publicKeyOf(preSecret);
  if (preKey.length !== pre.length || preKey.some((b, i) => b !== pre[i])) {
    throw new Error("the key file's public PRE key does not match its secret key");
  }
  return { preKey, preSecret, signingKey: signingPublicKey(signingSecret), signingSecret };
}

/** Wipes the secrets of a session. */
export function wipe(session: PatientKeySession): void {
  session.preSecret.fill(0);
  session.signingSecret.fill(0);
}

export function storedKeyFile(storage: Storage): string | null {
  return storage.getItem(KEYFILE_STORAGE_KEY);
}

export function storeKeyFile(storage: Storage, text: string): void {
  storage.setItem(KEYFILE_STORAGE_KEY, text);
}

export function forgetKeyFile(storage: Storage): void {
  storage.removeItem(KEYFILE_STORAGE_KEY);
}
