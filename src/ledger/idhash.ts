/**
 * idHash: the patient's ledger identity, a deterministic, deliberately slow keyed hash of their
 * national identifier and birth date. Deterministic, so the same patient gets the same idHash at
 * every institution (double registration and zombie patients are caught); keyed by the network's
 * idHashKey (genesis), so outsiders cannot test guesses at all; slow (scrypt), so even an insider's
 * dictionary attack over low-entropy identifiers costs about a tenth of a second per guess.
 */
import { hmac } from '@noble/hashes/hmac.js';
import { scrypt, scryptAsync } from '@noble/hashes/scrypt.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { encode } from './codec.ts';
import { LedgerError } from './errors.ts';

export interface PatientIdentity {
  /** Identifier system URI, e.g. a national patient identifier system. */
  readonly system: string;
  readonly value: string;
  /** YYYY-MM-DD. */
  readonly birthDate: string;
}

export interface IdHashCost {
  readonly N: number;
  readonly r: number;
  readonly p: number;
}

/** Part of the protocol: every institution must use the same cost. */
export const ID_HASH_COST: IdHashCost = { N: 2 ** 15, r: 8, p: 1 };

const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

/** An identifier's canonical form: NFKC; a value without whitespace or hyphens, upper case. */
export function normaliseIdentifier(id: { system: string; value: string }): {
  system: string;
  value: string;
} {
  const system = id.system.normalize('NFKC').trim();
  const value = id.value.normalize('NFKC').replace(/[\s-]/g, '').toUpperCase();
  if (system.length === 0) throw new LedgerError('MALFORMED', 'patient identifier system is empty');
  if (value.length === 0) throw new LedgerError('MALFORMED', 'patient identifier value is empty');
  return { system, value };
}

/** Canonical form: the identifier's (normaliseIdentifier), and a real calendar date. */
export function normaliseIdentity(id: PatientIdentity): PatientIdentity {
  const { system, value } = normaliseIdentifier(id);
  const m = DATE.exec(id.birthDate.trim());
  const date = m ? new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]))) : null;
  if (!m || !date || date.toISOString().slice(0, 10) !== m[0]) {
    throw new LedgerError('MALFORMED', 'patient birth date must be a real date as YYYY-MM-DD');
  }
  return { system, value, birthDate: m[0] };
}

function idHashInputs(idHashKey: Uint8Array, identity: PatientIdentity) {
  if (idHashKey.length !== 32) throw new LedgerError('MALFORMED', 'idHashKey must be 32 bytes');
  const id = normaliseIdentity(identity);
  const salt = hmac(sha256, idHashKey, new TextEncoder().encode('spchain/idhash'));
  const password = encode((w) => w.string(id.system).string(id.value).string(id.birthDate));
  return { password, salt };
}

export function computeIdHash(
  idHashKey: Uint8Array,
  identity: PatientIdentity,
  cost: IdHashCost = ID_HASH_COST,
): Uint8Array {
  const { password, salt } = idHashInputs(idHashKey, identity);
  return scrypt(password, salt, { ...cost, dkLen: 32 });
}

/** computeIdHash, yielding to the event loop while scrypt runs (same result). */
export async function computeIdHashAsync(
  idHashKey: Uint8Array,
  identity: PatientIdentity,
  cost: IdHashCost = ID_HASH_COST,
): Promise<Uint8Array> {
  const { password, salt } = idHashInputs(idHashKey, identity);
  return scryptAsync(password, salt, { ...cost, dkLen: 32 });
}
