/**
 * Passphrase-encrypted key files, one JSON format for an institution's and a patient's keys:
 *
 *   { "format": "spchain-keyfile", "version": 1, "kind": "institution" | "patient", "label"?: string,
 *     "public": { name: hex }, "kdf": { "name": "scrypt", "N", "r", "p", "salt": base64 },
 *     "cipher": { "name": "xchacha20-poly1305", "nonce": base64 }, "ciphertext": base64 }
 *
 * The secret keys are the canonical JSON { name: hex }, sealed with XChaCha20-Poly1305 under
 * scrypt(NFKC(passphrase), salt). The associated data is the canonical JSON of every field but the
 * ciphertext, so swapping a public key or lowering the KDF cost in the file breaks the tag.
 * Every KDF parameter is bounded while parsing, before any work, so a hostile file cannot make us
 * allocate or spin for long. This module only converts text; the caller does the file IO.
 */
import { scrypt, scryptAsync } from '@noble/hashes/scrypt.js';
import { AEAD_KEY_BYTES, AEAD_NONCE_BYTES, AEAD_TAG_BYTES, aeadOpen, aeadSeal } from './aead.ts';
import { fromHex, toHex, utf8 } from './bytes.ts';
import { CryptoError, isCryptoError } from './errors.ts';
import { type RandomBytes, systemRandom } from './random.ts';

export const KEYFILE_FORMAT = 'spchain-keyfile';
export const KEYFILE_VERSION = 1;
export const KEYFILE_KINDS = ['institution', 'patient'] as const;
export type KeyFileKind = (typeof KEYFILE_KINDS)[number];

export interface ScryptCost {
  N: number;
  r: number;
  p: number;
}
/** Production cost: 128 MiB of memory per derivation. */
export const DEFAULT_SCRYPT_COST: Readonly<ScryptCost> = Object.freeze({ N: 2 ** 17, r: 8, p: 1 });

const MIN_LOG_N = 10;
const MAX_LOG_N = 22;
const MAX_R = 32;
const MAX_P = 16;
/** scrypt needs 128·N·r bytes; N·r ≤ 2^22 keeps that at or below 512 MiB. */
const MAX_N_TIMES_R = 2 ** 22;
const SALT_BYTES = 16;
const MAX_SALT_BYTES = 64;
const KEY_NAME = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;
const WRONG_PASSPHRASE = 'wrong passphrase (or the key file was altered)';

/** What can be read from a key file without the passphrase. */
export interface KeyFileHeader {
  kind: KeyFileKind;
  label: string | undefined;
  publicKeys: Record<string, Uint8Array>;
  kdf: ScryptCost;
}

export interface KeyFileContents {
  kind: KeyFileKind;
  label: string | undefined;
  publicKeys: Record<string, Uint8Array>;
  secretKeys: Record<string, Uint8Array>;
}

export interface SealKeyFileOptions {
  kind: KeyFileKind;
  label?: string;
  publicKeys: Record<string, Uint8Array>;
  secretKeys: Record<string, Uint8Array>;
  passphrase: string;
  /** Defaults to DEFAULT_SCRYPT_COST; tests pass N = 2^10. */
  kdf?: ScryptCost;
  random?: RandomBytes;
}

interface ParsedKeyFile {
  header: KeyFileHeader;
  salt: Uint8Array;
  nonce: Uint8Array;
  ciphertext: Uint8Array;
}

type Json = string | number | { [key: string]: Json };

function canonicalJson(value: Json): string {
  if (typeof value !== 'object') return JSON.stringify(value);
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k]!)}`).join(',')}}`;
}

function toBase64(bytes: Uint8Array): string {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Strict, canonical standard base64 (padding required, no stray bits), or null. */
function fromBase64(value: unknown): Uint8Array | null {
  if (typeof value !== 'string' || !BASE64.test(value)) return null;
  const bytes = Uint8Array.from(atob(value), (c) => c.charCodeAt(0));
  return toBase64(bytes) === value ? bytes : null;
}

function invalid(field: string, message: string): never {
  throw new CryptoError('KEYFILE_INVALID', `key file: ${message}`, { field });
}

/** A file-supplied name, quoted and cut short, for an error message. */
function quote(name: string): string {
  return JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}…` : name);
}

function badArgument(message: string): never {
  throw new CryptoError('INVALID_ARGUMENT', message);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function fields(
  value: unknown,
  field: string,
  required: readonly string[],
  optional: readonly string[] = [],
): Record<string, unknown> {
  const where = field === '' ? 'the document' : field;
  if (!isPlainObject(value)) invalid(field || 'document', `${where} must be a JSON object`);
  const prefix = field === '' ? '' : `${field}.`;
  for (const key of required) {
    if (!Object.hasOwn(value, key)) invalid(prefix + key, `missing field ${prefix}${key}`);
  }
  for (const key of Object.keys(value)) {
    if (!required.includes(key) && !optional.includes(key)) {
      invalid(`${prefix}${key.slice(0, 64)}`, `unknown field ${quote(prefix + key)}`);
    }
  }
  return value;
}

/** Where the KDF cost is out of bounds, or null. Checked on parse and on seal alike. */
function scryptCostProblem({ N, r, p }: ScryptCost): { field: string; message: string } | null {
  const isInt = (x: unknown, min: number, max: number) =>
    typeof x === 'number' && Number.isInteger(x) && x >= min && x <= max;
  if (!isInt(N, 2 ** MIN_LOG_N, 2 ** MAX_LOG_N) || (N & (N - 1)) !== 0) {
    return {
      field: 'kdf.N',
      message: `kdf.N must be a power of two between 2^${MIN_LOG_N} and 2^${MAX_LOG_N}`,
    };
  }
  if (!isInt(r, 1, MAX_R))
    return { field: 'kdf.r', message: `kdf.r must be an integer from 1 to ${MAX_R}` };
  if (!isInt(p, 1, MAX_P))
    return { field: 'kdf.p', message: `kdf.p must be an integer from 1 to ${MAX_P}` };
  if (N * r > MAX_N_TIMES_R) {
    return {
      field: 'kdf',
      message: 'kdf.N × kdf.r must be at most 2^22 (512 MiB of scrypt memory)',
    };
  }
  return null;
}

function keyMap(value: unknown, field: string, fromFile: boolean): Record<string, Uint8Array> {
  const fail: (field: string, message: string) => never = fromFile
    ? invalid
    : (_, message) => badArgument(message);
  if (!isPlainObject(value)) fail(field, `${field} must be an object`);
  const out: Record<string, Uint8Array> = {};
  for (const [name, v] of Object.entries(value)) {
    if (!KEY_NAME.test(name)) {
      fail(field, `${field}: ${quote(name)} is not a valid key name`);
    }
    let bytes: Uint8Array | undefined;
    if (!fromFile && v instanceof Uint8Array) bytes = Uint8Array.from(v);
    if (fromFile && typeof v === 'string') {
      try {
        bytes = fromHex(v);
      } catch {}
    }
    if (!bytes || bytes.length === 0) {
      fail(
        `${field}.${name}`,
        `${field}.${name} must be a non-empty ${fromFile ? 'hex string' : 'Uint8Array'}`,
      );
    }
    out[name] = bytes;
  }
  return out;
}

function hexMap(keys: Record<string, Uint8Array>): Record<string, string> {
  return Object.fromEntries(Object.entries(keys).map(([name, k]) => [name, toHex(k)]));
}

/** Every field but the ciphertext; its canonical JSON is the AEAD associated data. */
function headerObject(header: KeyFileHeader, salt: Uint8Array, nonce: Uint8Array) {
  return {
    format: KEYFILE_FORMAT,
    version: KEYFILE_VERSION,
    kind: header.kind,
    ...(header.label === undefined ? {} : { label: header.label }),
    public: hexMap(header.publicKeys),
    kdf: { name: 'scrypt', ...header.kdf, salt: toBase64(salt) },
    cipher: { name: 'xchacha20-poly1305', nonce: toBase64(nonce) },
  };
}

function parse(text: string): ParsedKeyFile {
  if (typeof text !== 'string') badArgument('key file text must be a string');
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    invalid('document', 'the document is not valid JSON');
  }
  const top = fields(
    doc,
    '',
    ['format', 'version', 'kind', 'public', 'kdf', 'cipher', 'ciphertext'],
    ['label'],
  );
  if (top.format !== KEYFILE_FORMAT) invalid('format', `format must be "${KEYFILE_FORMAT}"`);
  if (top.version !== KEYFILE_VERSION) invalid('version', `version must be ${KEYFILE_VERSION}`);
  const kind = top.kind as KeyFileKind;
  if (!KEYFILE_KINDS.includes(kind)) invalid('kind', 'kind must be "institution" or "patient"');
  if (top.label !== undefined && typeof top.label !== 'string')
    invalid('label', 'label must be a string');
  const publicKeys = keyMap(top.public, 'public', true);

  const kdf = fields(top.kdf, 'kdf', ['name', 'N', 'r', 'p', 'salt']);
  if (kdf.name !== 'scrypt') invalid('kdf.name', 'kdf.name must be "scrypt"');
  const cost = { N: kdf.N, r: kdf.r, p: kdf.p } as ScryptCost;
  const problem = scryptCostProblem(cost);
  if (problem) invalid(problem.field, problem.message);
  const salt = fromBase64(kdf.salt);
  if (!salt || salt.length < SALT_BYTES || salt.length > MAX_SALT_BYTES) {
    invalid('kdf.salt', `kdf.salt must be base64 of ${SALT_BYTES} to ${MAX_SALT_BYTES} bytes`);
  }

  const cipher = fields(top.cipher, 'cipher', ['name', 'nonce']);
  if (cipher.name !== 'xchacha20-poly1305')
    invalid('cipher.name', 'cipher.name must be "xchacha20-poly1305"');
  const nonce = fromBase64(cipher.nonce);
  if (!nonce || nonce.length !== AEAD_NONCE_BYTES) {
    invalid('cipher.nonce', `cipher.nonce must be base64 of ${AEAD_NONCE_BYTES} bytes`);
  }
  const ciphertext = fromBase64(top.ciphertext);
  if (!ciphertext || ciphertext.length < AEAD_TAG_BYTES) {
    invalid('ciphertext', `ciphertext must be base64 of at least ${AEAD_TAG_BYTES} bytes`);
  }
  const label = top.label as string | undefined;
  return { header: { kind, label, publicKeys, kdf: cost }, salt, nonce, ciphertext };
}

function passphraseBytes(passphrase: unknown): Uint8Array {
  if (typeof passphrase !== 'string' || passphrase.normalize('NFKC').length === 0) {
    badArgument('passphrase must be a non-empty string');
  }
  return utf8(passphrase.normalize('NFKC'));
}

const scryptOpts = (cost: ScryptCost) => ({ ...cost, dkLen: AEAD_KEY_BYTES });

function checkedRandom(random: RandomBytes, length: number): Uint8Array {
  const out = random(length);
  if (!(out instanceof Uint8Array) || out.length !== length) {
    badArgument(`random source returned the wrong number of bytes (wanted ${length})`);
  }
  return out;
}

interface PreparedSeal {
  header: KeyFileHeader;
  password: Uint8Array;
  salt: Uint8Array;
  nonce: Uint8Array;
  plaintext: Uint8Array;
}

function prepareSeal(opts: SealKeyFileOptions): PreparedSeal {
  if (!isPlainObject(opts)) badArgument('sealKeyFile needs an options object');
  if (!KEYFILE_KINDS.includes(opts.kind)) badArgument('kind must be "institution" or "patient"');
  if (opts.label !== undefined && typeof opts.label !== 'string')
    badArgument('label must be a string');
  const cost = opts.kdf ?? DEFAULT_SCRYPT_COST;
  const problem = isPlainObject(cost)
    ? scryptCostProblem(cost)
    : { message: 'kdf must be an object' };
  if (problem) badArgument(problem.message);
  const publicKeys = keyMap(opts.publicKeys, 'publicKeys', false);
  const secretKeys = keyMap(opts.secretKeys, 'secretKeys', false);
  if (Object.keys(secretKeys).length === 0) badArgument('secretKeys must hold at least one key');
  const password = passphraseBytes(opts.passphrase);
  const random = opts.random ?? systemRandom;
  const salt = checkedRandom(random, SALT_BYTES);
  const nonce = checkedRandom(random, AEAD_NONCE_BYTES);
  // Hex strings of the secrets cannot be wiped; the byte copies and the plaintext are.
  const plaintext = utf8(canonicalJson(hexMap(secretKeys)));
  for (const k of Object.values(secretKeys)) k.fill(0);
  const { N, r, p } = cost;
  const header = { kind: opts.kind, label: opts.label, publicKeys, kdf: { N, r, p } };
  return { header, password, salt, nonce, plaintext };
}

function finishSeal(s: PreparedSeal, key: Uint8Array): string {
  try {
    const head = headerObject(s.header, s.salt, s.nonce);
    const sealed = aeadSeal(key, s.nonce, s.plaintext, utf8(canonicalJson(head)));
    return `${JSON.stringify({ ...head, ciphertext: toBase64(sealed) }, null, 2)}\n`;
  } finally {
    key.fill(0);
    s.plaintext.fill(0);
  }
}

function finishOpen(f: ParsedKeyFile, key: Uint8Array): KeyFileContents {
  let plaintext: Uint8Array;
  try {
    const ad = utf8(canonicalJson(headerObject(f.header, f.salt, f.nonce)));
    plaintext = aeadOpen(key, f.nonce, f.ciphertext, ad);
  } catch (err) {
    if (isCryptoError(err, 'DECRYPTION_FAILED'))
      throw new CryptoError('WRONG_PASSPHRASE', WRONG_PASSPHRASE);
    throw err;
  } finally {
    key.fill(0);
  }
  try {
    let secrets: unknown;
    try {
      secrets = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(plaintext));
    } catch {
      invalid('ciphertext', 'the decrypted secret keys are not valid JSON');
    }
    const secretKeys = keyMap(secrets, 'secret keys', true);
    const { kind, label, publicKeys } = f.header;
    return { kind, label, publicKeys, secretKeys };
  } finally {
    plaintext.fill(0);
  }
}

/** Validates the structure and returns what needs no passphrase. Throws KEYFILE_INVALID. */
export function parseKeyFile(text: string): KeyFileHeader {
  return parse(text).header;
}

/** Returns the pretty-printed JSON text of a new key file. */
export function sealKeyFile(opts: SealKeyFileOptions): string {
  const s = prepareSeal(opts);
  try {
    return finishSeal(s, scrypt(s.password, s.salt, scryptOpts(s.header.kdf)));
  } finally {
    s.password.fill(0);
  }
}

/** As sealKeyFile, without blocking the event loop during scrypt. */
export async function sealKeyFileAsync(opts: SealKeyFileOptions): Promise<string> {
  const s = prepareSeal(opts);
  try {
    return finishSeal(s, await scryptAsync(s.password, s.salt, scryptOpts(s.header.kdf)));
  } finally {
    s.password.fill(0);
  }
}

/** Throws KEYFILE_INVALID for a malformed file, WRONG_PASSPHRASE when the tag does not verify. */
export function openKeyFile(text: string, passphrase: string): KeyFileContents {
  const f = parse(text);
  const password = passphraseBytes(passphrase);
  try {
    return finishOpen(f, scrypt(password, f.salt, scryptOpts(f.header.kdf)));
  } finally {
    password.fill(0);
  }
}

/** As openKeyFile, without blocking the event loop during scrypt. */
export async function openKeyFileAsync(text: string, passphrase: string): Promise<KeyFileContents> {
  const f = parse(text);
  const password = passphraseBytes(passphrase);
  try {
    return finishOpen(f, await scryptAsync(password, f.salt, scryptOpts(f.header.kdf)));
  } finally {
    password.fill(0);
  }
}
