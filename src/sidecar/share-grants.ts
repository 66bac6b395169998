/**
 * The grants this institution holds as a record holder (sublevels `gr` and `gx`, entries.ts), and
 * the share decision for one request (authz/grant.ts decideAmong) over them.
 *
 * A grant is accepted only if it is the patient's (checkGrant against the keys of the patient's
 * pinned register tx and the grantee's PRE key from the member registry) and neither revoked nor
 * expired; a not-yet-valid grant is kept. A Consent with any status but `active`, signed by the
 * patient, is a revocation of that Consent id, as is a signed revoke (consent.ts); revocations
 * are kept for good, so the old active Consent cannot be replayed afterwards. Every decision
 * re-checks the stored grant in full and reads the revocations at that moment: a revocation
 * stops re-encryption from the next request on.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { type ConsentRevocation, parseConsent, verifyRevocation } from '../authz/consent.ts';
import { isAuthzError } from '../authz/errors.ts';
import {
  checkGrant,
  type DenyReason,
  decideAmong,
  decideShare,
  decodeGrant,
  encodeGrant,
  type Grant,
  type PreKeyOf,
  type ShareDecision,
  type ShareSubject,
} from '../authz/grant.ts';
import { concatBytes, utf8 } from '../crypto/bytes.ts';
import { decode, encode } from '../ledger/codec.ts';
import type { Microblock } from '../ledger/microblock.ts';
import type { Bytes, InstitutionIndex } from '../ledger/types.ts';
import type { SidecarSpace } from './entries.ts';
import { SidecarError } from './errors.ts';
import type { SidecarStore, WriteOp } from './store.ts';

/** Reads of the pinned ledger the grants need (the node's LedgerStore has it). */
export interface GrantLedger {
  getMicroblockByIdHash(idHash: Bytes): Promise<Microblock | undefined>;
}

export interface ShareGrantsDeps {
  readonly store: SidecarStore;
  readonly ledger: GrantLedger;
  readonly chainId: string;
  /** A member's PRE key (genesis registry). */
  readonly preKeyOf: PreKeyOf;
}

export type AcceptOutcome = 'stored' | 'revoked';

/** What a holder knows of one Consent for its grantee (ShareGrants.consentState). */
export type ConsentState = 'active' | 'revoked' | 'none' | DenyReason | 'UNKNOWN_PATIENT';

export interface AcceptedGrant {
  readonly outcome: AcceptOutcome;
  readonly consentId: string;
  readonly grantee: InstitutionIndex;
}

/** The keys [gte, lt) of every key starting with `prefix`. */
export function prefixRange(prefix: Bytes): { gte: Bytes; lt?: Bytes } {
  // A copy: `prefix` may be a Buffer (LevelDB and libp2p hand those out), whose slice() is a view.
  const lt = Uint8Array.from(prefix);
  for (let i = lt.length - 1; i >= 0; i--) {
    if (lt[i]! < 0xff) {
      lt[i]!++;
      return { gte: prefix, lt: lt.subarray(0, i + 1) };
    }
  }
  return { gte: prefix };
}

/** Every (key, decoded value) of sublevel `kind` under `prefix`, in key order. */
export async function scanPrefix<T>(
  store: SidecarStore,
  kind: SidecarSpace,
  prefix: Bytes,
  f: (payload: Bytes) => T,
): Promise<{ key: Bytes; value: T }[]> {
  const out: { key: Bytes; value: T }[] = [];
  for await (const [key, stored] of store.spaces[kind].iterator(prefixRange(prefix))) {
    out.push({ key, value: store.decodeStored(kind, key, stored, f) });
  }
  return out;
}

export const u16be = (n: number): Bytes => Uint8Array.of((n >>> 8) & 0xff, n & 0xff);
const idKey = (consentId: string): Bytes => sha256(utf8(consentId));

function refused(reason: DenyReason | 'UNREGISTERED', message: string): SidecarError {
  return new SidecarError('GRANT_REFUSED', message, { reason });
}

export class ShareGrants {
  private readonly deps: ShareGrantsDeps;

  constructor(deps: ShareGrantsDeps) {
    this.deps = deps;
  }

  /** The patient's keys from their pinned register tx; undefined when not registered. */
  async subjectOf(idHash: Bytes): Promise<ShareSubject | undefined> {
    const block = await this.deps.ledger.getMicroblockByIdHash(idHash);
    if (block === undefined) return undefined;
    return {
      chainId: this.deps.chainId,
      idHash,
      patientPreKey: block.patientPreKey,
      patientSigningKey: block.patientSigningKey,
    };
  }

  /**
   * Checks and keeps a grant (replacing one with the same Consent id), or records a non-active
   * Consent as a revocation. SidecarError GRANT_REFUSED (detail.reason) when it is not the
   * patient's, names an unknown patient, was revoked, or has expired at `now`.
   */
  async accept(grant: Grant, now: number): Promise<AcceptedGrant> {
    const parsed = parseConsent(grant?.consent);
    if (!parsed.ok) throw refused('MALFORMED', `grant: ${parsed.problem}`);
    const { idHash, id, grantee } = parsed.value;
    const subject = await this.subjectOf(idHash);
    if (subject === undefined) {
      throw refused('UNREGISTERED', 'grant: the patient is not registered on the pinned ledger');
    }
    const checked = checkGrant(grant, subject, this.deps.preKeyOf);
    if (!checked.ok) throw refused(checked.reason, `grant: ${checked.message}`);
    const { consent } = checked;
    if (consent.status !== 'active') {
      await this.revokeId(idHash, id);
      return { outcome: 'revoked', consentId: id, grantee };
    }
    if (await this.isRevoked(idHash, id)) {
      throw refused('REVOKED', 'grant: the patient revoked this Consent');
    }
    if (now >= consent.end) throw refused('EXPIRED', "grant: the Consent's period is over");
    let encoded: Bytes;
    try {
      encoded = encodeGrant(grant);
    } catch (err) {
      if (isAuthzError(err)) throw refused('MALFORMED', `grant: ${err.message}`);
      throw err;
    }
    const ops: WriteOp[] = [];
    await this.stageRemoval(ops, idHash, id);
    this.deps.store.put(ops, 'grant', concatBytes(idHash, u16be(grantee), idKey(id)), encoded);
    await this.deps.store.write(ops);
    return { outcome: 'stored', consentId: id, grantee };
  }

  /** Applies the patient's signed revoke; GRANT_REFUSED when it is not the patient's. */
  async revoke(revocation: ConsentRevocation): Promise<void> {
    const subject = await this.subjectOf(revocation.idHash);
    if (subject === undefined) {
      throw refused('UNREGISTERED', 'revoke: the patient is not registered on the pinned ledger');
    }
    if (!verifyRevocation(this.deps.chainId, revocation, subject.patientSigningKey)) {
      throw refused('BAD_SIGNATURE', "revoke: the signature is not the patient's");
    }
    await this.revokeId(revocation.idHash, revocation.consentId);
  }

  async isRevoked(idHash: Bytes, consentId: string): Promise<boolean> {
    return this.deps.store.spaces.revocation.has(concatBytes(idHash, idKey(consentId)));
  }

  /** The patient's grants held for `grantee` (undecodable ones are CORRUPT, never skipped). */
  async grantsFor(idHash: Bytes, grantee: InstitutionIndex): Promise<Grant[]> {
    const rows = await scanPrefix(
      this.deps.store,
      'grant',
      concatBytes(idHash, u16be(grantee)),
      decodeGrant,
    );
    return rows.map((r) => r.value);
  }

  /** The decision for `requester` asking for the records of `idHash` at `now`. */
  async decide(
    idHash: Bytes,
    requester: InstitutionIndex,
    now: number,
  ): Promise<ShareDecision | { allow: false; reason: 'UNKNOWN_PATIENT'; message: string }> {
    const subject = await this.subjectOf(idHash);
    if (subject === undefined) {
      return {
        allow: false,
        reason: 'UNKNOWN_PATIENT',
        message: 'no such patient on the pinned ledger',
      };
    }
    const grants = await this.grantsFor(idHash, requester);
    const tombstones = await scanPrefix(this.deps.store, 'revocation', idHash, decodeTombstone);
    const revoked = new Set(tombstones.map((t) => t.value.consentId));
    const decision = decideAmong(grants, subject, this.deps.preKeyOf, { requester, now, revoked });
    if (
      !decision.allow &&
      decision.reason === 'NO_GRANT' &&
      tombstones.some((t) => t.value.grantees.includes(requester))
    ) {
      // Its grants were deleted with the revocation: say so rather than "no grant".
      return { allow: false, reason: 'REVOKED', message: 'the patient revoked the grant' };
    }
    return decision;
  }

  /**
   * Read-only, for the patient's own views (share links, audit): what this holder knows of the
   * Consent `consentId` of the patient for `grantee` at `now`: 'active' when a held grant under it
   * would let the grantee read now, 'revoked' when the patient revoked it, 'none' when no grant
   * under that id is held for that grantee, else the refusal (authz DenyReason).
   */
  async consentState(
    idHash: Bytes,
    consentId: string,
    grantee: InstitutionIndex,
    now: number,
  ): Promise<ConsentState> {
    if (await this.isRevoked(idHash, consentId)) return 'revoked';
    const subject = await this.subjectOf(idHash);
    if (subject === undefined) return 'UNKNOWN_PATIENT';
    const grant = (await this.grantsFor(idHash, grantee)).find(
      (g) => parseConsent(g.consent).ok && (g.consent as { id?: unknown }).id === consentId,
    );
    if (grant === undefined) return 'none';
    const d = decideShare(grant, subject, this.deps.preKeyOf, {
      requester: grantee,
      now,
      revoked: new Set(),
    });
    return d.allow ? 'active' : d.reason;
  }

  /** Read-only: the ids of the patient's Consents held here, and of those revoked, sorted. */
  async consentIds(idHash: Bytes): Promise<string[]> {
    const ids = new Set<string>();
    for (const g of await scanPrefix(this.deps.store, 'grant', idHash, decodeGrant)) {
      const id = (g.value.consent as { id?: unknown }).id;
      if (typeof id === 'string') ids.add(id);
    }
    for (const t of await scanPrefix(this.deps.store, 'revocation', idHash, decodeTombstone)) {
      ids.add(t.value.consentId);
    }
    return [...ids].sort();
  }

  /**
   * Read-only, for the patient: the signed Consents of the patient held here, each with its
   * state now, and the ids of revoked ones (their grants are deleted; the tombstone stays).
   */
  async consents(
    idHash: Bytes,
    now: number,
  ): Promise<{ consent: Grant['consent'] | null; id: string; state: ConsentState }[]> {
    const out = new Map<
      string,
      { consent: Grant['consent'] | null; id: string; state: ConsentState }
    >();
    for (const g of await scanPrefix(this.deps.store, 'grant', idHash, decodeGrant)) {
      const parsed = parseConsent(g.value.consent);
      if (!parsed.ok) continue;
      const state = await this.consentState(idHash, parsed.value.id, parsed.value.grantee, now);
      out.set(parsed.value.id, { consent: g.value.consent, id: parsed.value.id, state });
    }
    for (const t of await scanPrefix(this.deps.store, 'revocation', idHash, decodeTombstone)) {
      out.set(t.value.consentId, { consent: null, id: t.value.consentId, state: 'revoked' });
    }
    return [...out.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** Records the revocation (with the grantees whose grants it removes) and removes them. */
  private async revokeId(idHash: Bytes, consentId: string): Promise<void> {
    const ops: WriteOp[] = [];
    const key = concatBytes(idHash, idKey(consentId));
    const before = await this.deps.store.read('revocation', key, decodeTombstone);
    const removed = await this.stageRemoval(ops, idHash, consentId);
    const grantees = [...new Set([...(before?.grantees ?? []), ...removed])].sort((a, b) => a - b);
    this.deps.store.put(ops, 'revocation', key, encodeTombstone({ consentId, grantees }));
    await this.deps.store.write(ops);
  }

  /** Deletes every grant of the patient with this Consent id (whatever its grantee). */
  private async stageRemoval(ops: WriteOp[], idHash: Bytes, consentId: string): Promise<number[]> {
    const tail = idKey(consentId);
    const grantees: number[] = [];
    for await (const key of this.deps.store.spaces.grant.keys(prefixRange(idHash))) {
      if (key.length === idHash.length + 2 + tail.length && endsWith(key, tail)) {
        this.deps.store.del(ops, 'grant', key);
        grantees.push((key[idHash.length]! << 8) | key[idHash.length + 1]!);
      }
    }
    return grantees;
  }
}

/** A revoked Consent: its id, and the grantees whose grants under it were removed. */
interface Tombstone {
  readonly consentId: string;
  readonly grantees: readonly number[];
}

function encodeTombstone(t: Tombstone): Bytes {
  return encode((w) => w.string(t.consentId).list(t.grantees, (lw, g) => lw.varint(g)));
}

function decodeTombstone(bytes: Bytes): Tombstone {
  return decode(bytes, 'revocation', (r) => ({
    consentId: r.string('consentId', 256),
    grantees: r.list('grantees', 0x10000, (lr) => lr.varint('grantee', 0xffff)),
  }));
}

function endsWith(a: Bytes, tail: Bytes): boolean {
  const off = a.length - tail.length;
  for (let i = 0; i < tail.length; i++) if (a[off + i] !== tail[i]) return false;
  return true;
}
