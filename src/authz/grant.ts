/**
 * Grants and the share decision (DESIGN sections 6-7; paper 5.2, share).
 *
 * A grant is what the patient gives each institution holding their records so that it may
 * re-encrypt them for one other institution D:
 *   - the signed Consent (consent.ts) naming D as the one actor, with a period;
 *   - Umbral kfrag(s) from the patient's PRE key to D's PRE key (the genesis member's `preKey`),
 *     signed by the patient's signing key with both keys bound (signDelegatingKey and
 *     signReceivingKey), t = n = kfrags.length (normally 1).
 * Holders check both against the patient's keys from the pinned register tx, and D's key from the
 * member registry. The kfrag must never reach D: a kfrag together with D's secret key yields the
 * patient's secret key (Umbral's proxy-receiver collusion), so grants travel only to holders.
 *
 * `decideShare` is the pure decision at the holder for one request: allow (with the verified
 * kfrags) or deny(reason). Order: the grant's own validity (shape, patient, signatures, kfrags),
 * then revocation and status, then the requester, then the period.
 */
import type { Consent } from '@medplum/fhirtypes';
import { equalBytes, fromHex, toHex } from '../crypto/bytes.ts';
import { isCryptoError } from '../crypto/errors.ts';
import type { RandomBytes } from '../crypto/random.ts';
import {
  decodeKeyFrag,
  encodeKeyFrag,
  generateKFrags,
  type VerifiedKeyFrag,
  verifyKeyFrag,
} from '../crypto/umbral/index.ts';
import { decode, encode } from '../ledger/codec.ts';
import { isLedgerError } from '../ledger/errors.ts';
import type { Bytes, InstitutionIndex } from '../ledger/types.ts';
import {
  type ConsentJson,
  canonicalConsent,
  MAX_CONSENT_BYTES,
  makeConsent,
  type ParsedConsent,
  parseConsent,
  signConsent,
  verifyConsentSignature,
} from './consent.ts';
import { AuthzError } from './errors.ts';

export interface Grant {
  /** The FHIR Consent (consent.ts), as JSON. */
  readonly consent: ConsentJson;
  /** The patient's signature over the Consent's canonical JSON. */
  readonly signature: Bytes;
  /** Encoded Umbral kfrags for the grantee's PRE key; a capsule needs a cfrag of each. */
  readonly kfrags: readonly Bytes[];
}

export const MAX_GRANT_KFRAGS = 8;
const MAX_KFRAG_BYTES = 512;
const SIGNATURE_BYTES = 64;

/** Canonical binary form (for storage and transport): canonical Consent, signature, kfrags. */
export function encodeGrant(grant: Grant): Bytes {
  const consent = canonicalConsent(grant.consent);
  if (grant.kfrags.length === 0 || grant.kfrags.length > MAX_GRANT_KFRAGS) {
    throw new AuthzError('INVALID_ARGUMENT', `a grant carries 1 to ${MAX_GRANT_KFRAGS} kfrags`);
  }
  return encode((w) =>
    w
      .bytes(consent)
      .fixed(grant.signature, SIGNATURE_BYTES, 'signature')
      .list(grant.kfrags, (lw, k) => lw.bytes(k)),
  );
}

/** Inverse of encodeGrant; AuthzError MALFORMED naming the field. Checks nothing else. */
export function decodeGrant(bytes: Bytes): Grant {
  try {
    return decode(bytes, 'grant', (r) => {
      const text = new TextDecoder('utf-8', { fatal: true }).decode(
        r.bytes('consent', MAX_CONSENT_BYTES),
      );
      let consent: unknown;
      try {
        consent = JSON.parse(text);
      } catch {
        return r.fail('consent', 'is not JSON');
      }
      if (typeof consent !== 'object' || consent === null || Array.isArray(consent)) {
        return r.fail('consent', 'is not a JSON object');
      }
      const signature = r.fixed(SIGNATURE_BYTES, 'signature');
      const kfrags = r.list('kfrags', MAX_GRANT_KFRAGS, (lr) => lr.bytes('kfrag', MAX_KFRAG_BYTES));
      if (kfrags.length === 0) r.fail('kfrags', 'is empty');
      return { consent: consent as ConsentJson, signature, kfrags };
    });
  } catch (err) {
    if (isLedgerError(err)) throw new AuthzError('MALFORMED', err.message);
    if (err instanceof TypeError) throw new AuthzError('MALFORMED', 'grant: consent is not UTF-8');
    throw err;
  }
}

/** The patient's keys as their pinned register tx names them, and the network. */
export interface ShareSubject {
  readonly chainId: string;
  readonly idHash: Bytes;
  readonly patientPreKey: Bytes;
  readonly patientSigningKey: Bytes;
}

/** A member's PRE public key (the registry's `preKey`); undefined for a non-member. */
export type PreKeyOf = (institution: InstitutionIndex) => Bytes | undefined;

export type DenyReason =
  /** No grant for this patient and requester is held here. */
  | 'NO_GRANT'
  /** The grant or its Consent does not have the required shape. */
  | 'MALFORMED'
  /** The Consent names another patient. */
  | 'WRONG_PATIENT'
  /** The Consent's signature is not the patient's. */
  | 'BAD_SIGNATURE'
  /** The granted institution is not a member (no PRE key to re-encrypt to). */
  | 'UNKNOWN_INSTITUTION'
  /** A kfrag does not verify for (patient, grantee) under the patient's signing key. */
  | 'BAD_KFRAG'
  /** The patient revoked this Consent. */
  | 'REVOKED'
  /** The Consent's status is not active. */
  | 'INACTIVE'
  /** The requester is not the institution the Consent permits. */
  | 'WRONG_ACTOR'
  /** The Consent's period has not begun. */
  | 'NOT_YET_VALID'
  /** The Consent's period is over. */
  | 'EXPIRED';

export type GrantCheck =
  | { readonly ok: true; readonly consent: ParsedConsent; readonly kfrags: VerifiedKeyFrag[] }
  | { readonly ok: false; readonly reason: DenyReason; readonly message: string };

export type ShareDecision =
  | { readonly allow: true; readonly consent: ParsedConsent; readonly kfrags: VerifiedKeyFrag[] }
  | { readonly allow: false; readonly reason: DenyReason; readonly message: string };

const fail = (reason: DenyReason, message: string) => ({ ok: false as const, reason, message });

/**
 * Whether the grant is the patient's, whatever the time and the requester: a well-formed Consent
 * for this patient signed by them, and kfrags from the patient's PRE key to the grantee's, signed
 * by the patient. Run when a holder accepts a grant, and again by every decision.
 */
export function checkGrant(grant: Grant, subject: ShareSubject, preKeyOf: PreKeyOf): GrantCheck {
  if (typeof grant !== 'object' || grant === null) return fail('MALFORMED', 'grant is no object');
  const parsed = parseConsent(grant.consent);
  if (!parsed.ok) return fail('MALFORMED', parsed.problem);
  const consent = parsed.value;
  if (!equalBytes(consent.idHash, subject.idHash)) {
    return fail('WRONG_PATIENT', 'the Consent names another patient');
  }
  if (
    !(grant.signature instanceof Uint8Array) ||
    !verifyConsentSignature(
      subject.chainId,
      grant.consent,
      subject.patientSigningKey,
      grant.signature,
    )
  ) {
    return fail('BAD_SIGNATURE', "the Consent's signature is not the patient's");
  }
  const receivingPk = preKeyOf(consent.grantee);
  if (receivingPk === undefined) {
    return fail('UNKNOWN_INSTITUTION', `institution ${consent.grantee} is not a member`);
  }
  if (
    !Array.isArray(grant.kfrags) ||
    grant.kfrags.length === 0 ||
    grant.kfrags.length > MAX_GRANT_KFRAGS
  ) {
    return fail('MALFORMED', `a grant carries 1 to ${MAX_GRANT_KFRAGS} kfrags`);
  }
  const kfrags: VerifiedKeyFrag[] = [];
  const ids = new Set<string>();
  for (const [n, bytes] of grant.kfrags.entries()) {
    try {
      const kfrag = verifyKeyFrag(decodeKeyFrag(bytes), {
        verifyingPk: subject.patientSigningKey,
        delegatingPk: subject.patientPreKey,
        receivingPk,
      });
      if (!kfrag.delegatingKeySigned || !kfrag.receivingKeySigned) {
        return fail('BAD_KFRAG', `kfrag ${n} does not bind the patient's and grantee's keys`);
      }
      const id = toHex(kfrag.id);
      if (ids.has(id)) return fail('BAD_KFRAG', `kfrag ${n} repeats another`);
      ids.add(id);
      kfrags.push(kfrag);
    } catch (err) {
      if (!isCryptoError(err)) throw err;
      return fail('BAD_KFRAG', `kfrag ${n}: ${err.message}`);
    }
  }
  return { ok: true, consent, kfrags };
}

/** One request at a holder: who asks (the authenticated peer's member index), and when. */
export interface ShareRequestContext {
  readonly requester: InstitutionIndex;
  readonly now: number;
  /** Consent ids of this patient that the patient revoked. */
  readonly revoked: ReadonlySet<string>;
}

/** The holder's decision on one grant for one request. */
export function decideShare(
  grant: Grant,
  subject: ShareSubject,
  preKeyOf: PreKeyOf,
  ctx: ShareRequestContext,
): ShareDecision {
  const checked = checkGrant(grant, subject, preKeyOf);
  if (!checked.ok) return { allow: false, reason: checked.reason, message: checked.message };
  const { consent } = checked;
  const deny = (reason: DenyReason, message: string) => ({
    allow: false as const,
    reason,
    message,
  });
  if (ctx.revoked.has(consent.id)) return deny('REVOKED', 'the patient revoked this Consent');
  if (consent.status !== 'active') {
    return deny('INACTIVE', `the Consent's status is ${consent.status}, not active`);
  }
  if (consent.grantee !== ctx.requester) {
    return deny(
      'WRONG_ACTOR',
      `the Consent permits institution ${consent.grantee}, not ${ctx.requester}`,
    );
  }
  if (!Number.isFinite(ctx.now)) throw new AuthzError('INVALID_ARGUMENT', 'now must be a number');
  if (ctx.now < consent.start) return deny('NOT_YET_VALID', "the Consent's period has not begun");
  if (ctx.now >= consent.end) return deny('EXPIRED', "the Consent's period is over");
  return { allow: true, consent, kfrags: checked.kfrags };
}

/** When no grant allows, which refusal to report: the one closest to being allowed. */
const DENY_RANK: readonly DenyReason[] = [
  'EXPIRED',
  'NOT_YET_VALID',
  'REVOKED',
  'INACTIVE',
  'WRONG_ACTOR',
  'BAD_KFRAG',
  'BAD_SIGNATURE',
  'UNKNOWN_INSTITUTION',
  'WRONG_PATIENT',
  'MALFORMED',
  'NO_GRANT',
];

/** The decision over every grant held for (patient, requester): the first that allows, if any. */
export function decideAmong(
  grants: readonly Grant[],
  subject: ShareSubject,
  preKeyOf: PreKeyOf,
  ctx: ShareRequestContext,
): ShareDecision {
  let best: ShareDecision = {
    allow: false,
    reason: 'NO_GRANT',
    message: `no grant of this patient for institution ${ctx.requester}`,
  };
  for (const grant of grants) {
    const d = decideShare(grant, subject, preKeyOf, ctx);
    if (d.allow) return d;
    if (!best.allow && DENY_RANK.indexOf(d.reason) < DENY_RANK.indexOf(best.reason)) best = d;
  }
  return best;
}

/**
 * What the patient's device (portal or CLI) does to grant institution `grantee` access: the
 * Consent, its signature, and a kfrag to the grantee's PRE key, all with the patient's secrets,
 * which stay on the device. The result goes to every holder of the patient's records.
 */
export function makeGrant(opts: {
  readonly chainId: string;
  readonly idHash: Bytes;
  readonly patientPreSecret: Bytes;
  readonly patientSigningSecret: Bytes;
  readonly grantee: { readonly index: InstitutionIndex; readonly preKey: Bytes; name?: string };
  readonly consentId: string;
  readonly start: number;
  readonly end: number;
  readonly now: number;
  readonly random?: RandomBytes;
}): Grant {
  const consent: Consent = makeConsent({
    id: opts.consentId,
    idHash: opts.idHash,
    grantee: opts.grantee.index,
    granteeName: opts.grantee.name,
    start: opts.start,
    end: opts.end,
    dateTime: opts.now,
  });
  const json = consent as unknown as ConsentJson;
  const kfrags = generateKFrags({
    delegatingSk: opts.patientPreSecret,
    receivingPk: opts.grantee.preKey,
    signerSk: opts.patientSigningSecret,
    threshold: 1,
    shares: 1,
    signDelegatingKey: true,
    signReceivingKey: true,
    random: opts.random,
  });
  return {
    consent: json,
    signature: signConsent(opts.chainId, json, opts.patientSigningSecret, opts.random),
    kfrags: kfrags.map(encodeKeyFrag),
  };
}

// ---------------------------------------------------------------------------------------------
// JSON form (for HTTP and files): the Consent as is, bytes as lowercase hex.

export interface GrantJson {
  readonly consent: ConsentJson;
  readonly signature: string;
  readonly kfrags: readonly string[];
}

export function grantToJson(grant: Grant): GrantJson {
  return {
    consent: grant.consent,
    signature: toHex(grant.signature),
    kfrags: grant.kfrags.map(toHex),
  };
}

const HEX = /^(?:[0-9a-f]{2})+$/;

/** A grant from its JSON form; AuthzError MALFORMED naming the field. Checks only the shape. */
export function grantFromJson(value: unknown): Grant {
  const bad = (field: string, problem: string): never => {
    throw new AuthzError('MALFORMED', `grant.${field} ${problem}`, { field });
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new AuthzError('MALFORMED', 'grant must be a JSON object');
  }
  const v = value as Record<string, unknown>;
  const consent = v.consent;
  if (typeof consent !== 'object' || consent === null || Array.isArray(consent)) {
    bad('consent', 'must be a FHIR Consent object');
  }
  if (typeof v.signature !== 'string' || v.signature.length !== 128 || !HEX.test(v.signature)) {
    bad('signature', 'must be 64 bytes as lowercase hex');
  }
  const kfrags = v.kfrags;
  if (!Array.isArray(kfrags) || kfrags.length === 0 || kfrags.length > MAX_GRANT_KFRAGS) {
    bad('kfrags', `must be 1 to ${MAX_GRANT_KFRAGS} hex strings`);
  }
  const decoded = (kfrags as unknown[]).map((k, n) =>
    typeof k === 'string' && k.length <= 2 * MAX_KFRAG_BYTES && HEX.test(k)
      ? fromHex(k)
      : bad(`kfrags[${n}]`, `must be lowercase hex of at most ${MAX_KFRAG_BYTES} bytes`),
  );
  return {
    consent: consent as ConsentJson,
    signature: fromHex(v.signature as string),
    kfrags: decoded,
  };
}
