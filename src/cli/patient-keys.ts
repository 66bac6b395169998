/**
 * `patient keygen` and `patient export`: a patient's key file handled on its own, without a
 * sidecar. keygen makes the keys (patient.ts patientKeys: Umbral PRE and signing key pairs) and
 * seals them in a new key file (mode 0600), refusing to overwrite one; `patient register` later
 * reuses that file. export prints (or writes) the public keys, which the key file tells without
 * the passphrase, and with `reseal` writes a copy sealed under a new passphrase (the old file is
 * left as it is). Passphrases come from environment variables, never from the command line.
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { toHex } from '../crypto/bytes.ts';
import { openKeyFileAsync, parseKeyFile, sealKeyFileAsync } from '../crypto/keyfile.ts';
import { patientKeys } from './patient.ts';
import type { Print } from './share.ts';

type Env = Readonly<Record<string, string | undefined>>;

function passphraseFrom(env: Env, name: string, what: string): string {
  const v = env[name];
  if (v === undefined || v === '') throw new Error(`set ${name} to ${what}`);
  return v;
}

async function readKeyFile(path: string): Promise<string> {
  return readFile(path, 'utf8').catch(() => {
    throw new Error(`cannot read the key file ${path}`);
  });
}

/** Makes a patient's keys in a new key file; returns the public keys (hex). */
export async function keygenPatient(o: {
  readonly keyFile: string;
  readonly passphraseEnv: string;
  readonly env: Env;
  readonly print: Print;
}): Promise<{ pre: string; signing: string }> {
  if (existsSync(o.keyFile)) throw new Error(`${o.keyFile} exists: keygen never overwrites one`);
  const passphrase = passphraseFrom(o.env, o.passphraseEnv, "the patient's new passphrase");
  const { keys } = await patientKeys(o.keyFile, passphrase, undefined);
  const pub = { pre: toHex(keys.preKey), signing: toHex(keys.signingKey) };
  o.print(`keys made and sealed in ${o.keyFile} (keep it: it is the only copy)`);
  o.print(`  public PRE key      ${pub.pre}`);
  o.print(`  public signing key  ${pub.signing}`);
  return pub;
}

/** Prints or writes the public keys; with `reseal`, re-seals the key file there. */
export async function exportPatientKeys(o: {
  readonly keyFile: string;
  readonly passphraseEnv: string;
  readonly publicOut?: string;
  readonly reseal?: string;
  readonly newPassphraseEnv: string;
  readonly env: Env;
  readonly print: Print;
}): Promise<void> {
  const text = await readKeyFile(o.keyFile);
  let header: ReturnType<typeof parseKeyFile>;
  try {
    header = parseKeyFile(text);
  } catch (err) {
    throw new Error(`${o.keyFile} is not a key file: ${(err as Error).message}`);
  }
  if (header.kind !== 'patient') throw new Error(`${o.keyFile} is not a patient key file`);
  const pub = Object.fromEntries(
    Object.entries(header.publicKeys).map(([name, key]) => [name, toHex(key)]),
  );
  const json = `${JSON.stringify({ kind: 'spchain-patient-public-keys', publicKeys: pub }, null, 2)}\n`;
  if (o.publicOut !== undefined) {
    await writeFile(o.publicOut, json, { flag: 'wx' }).catch((err: NodeJS.ErrnoException) => {
      throw new Error(
        err.code === 'EEXIST'
          ? `${o.publicOut} exists: not overwritten`
          : `cannot write ${o.publicOut}: ${err.message}`,
      );
    });
    o.print(`public keys written to ${o.publicOut}`);
  } else if (o.reseal === undefined) {
    process.stdout.write(json);
  }
  if (o.reseal === undefined) return;
  if (existsSync(o.reseal)) throw new Error(`${o.reseal} exists: not overwritten`);
  const passphrase = passphraseFrom(o.env, o.passphraseEnv, "the key file's passphrase");
  const fresh = passphraseFrom(o.env, o.newPassphraseEnv, 'the new passphrase');
  if (fresh === passphrase) throw new Error(`${o.newPassphraseEnv} is the same passphrase`);
  const c = await openKeyFileAsync(text, passphrase);
  const sealed = await sealKeyFileAsync({
    kind: 'patient',
    ...(c.label === undefined ? {} : { label: c.label }),
    publicKeys: c.publicKeys,
    secretKeys: c.secretKeys,
    passphrase: fresh,
    kdf: header.kdf,
  });
  await writeFile(o.reseal, sealed, { mode: 0o600, flag: 'wx' });
  o.print(`key file re-sealed under the new passphrase in ${o.reseal}`);
}
