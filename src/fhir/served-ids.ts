/**
 * The served-id index: the id each shared resource is served under here, and which patient what
 * was served here belongs to (patient-records.ts serves the resources; patient-reads.ts reads
 * them back by id).
 *
 * Served ids. Two holders may use the same id for different resources (ids are only unique within
 * one server), and a holder's id may be one this institution already uses for a resource of its
 * own. Each shared resource is therefore served under an id that is unique here and never changes
 * once given out, so that `fullUrl`, `GET Type/id` and Provenance targets all name one resource:
 *
 *   1. the holder's id, when no resource of this institution's own and no earlier claim (another
 *      holder's resource, or another patient's) has that `Type/id`; holders claim in the order of
 *      their institution index, so of two new resources with the same id the lower index keeps it;
 *   2. else `{id}.{holder}` (the holder's institution index), when that is a FHIR id and free;
 *   3. else `s` and 40 hex digits of SHA-256(idHash, holder, type, id).
 *
 * The first claim is kept (sublevel `sx`), so the id stays the same on every later read. The one
 * exception: when this institution's own EHR later stores a resource under a claimed id, its own
 * resource wins `GET Type/id` (own store first), and the shared one moves to the next free id of
 * the list. A resource served under another id than its holder's carries the holder's id in the
 * meta extension HOLDER_ID_EXTENSION, and the references between a holder's resources follow it
 * (`Assigned.moved`, `moveTo`).
 *
 * The same sublevel keeps, for `GET Type/id` and `GET Provenance/{tx}` of what was served here,
 * which patient it was served for (values sealed; `resourceKey` as in the sidecar store):
 *
 *   0x01 resourceKey(type, served id)                  -> patient id here, idHash, holder, its id
 *   0x02 idHash u16be(holder) resourceKey(type, its id) -> the served id (the claim)
 *   0x03 tx hash (32 bytes)                              -> patient id here (a served Provenance)
 *
 * These entries only locate a record: a read by id fetches the patient's records again (the
 * holders decide, as for $everything), and serves nothing the fetch does not.
 */
import type { Provenance } from '@medplum/fhirtypes';
import { concatBytes, fromHex, toHex } from '../crypto/bytes.ts';
import { sha256 } from '../crypto/sha256.ts';
import { decode, encode, type Reader } from '../ledger/codec.ts';
import type { Bytes } from '../ledger/types.ts';
import { resourceKey } from '../sidecar/entries.ts';
import { u16be } from '../sidecar/share-grants.ts';
import type { Db, Sublevel, WriteOp } from '../store/db.ts';
import { openSublevel } from '../store/db.ts';
import { StoreError } from '../store/errors.ts';
import { openSeal, sealIn } from '../store/values.ts';
import { fail } from './outcome.ts';
import type { ResourceStore } from './resource-store.ts';

export const SERVED_SPACE = 'sx';
/** meta.extension of a shared resource served under another id than its holder's: that id. */
export const HOLDER_ID_EXTENSION = 'urn:spchain:fhir:holder-id';

export interface ServedIdsDeps {
  /** The database the index lives in (the sidecar's). */
  readonly db: Db;
  /** This institution's own FHIR copy: its resources keep their ids. */
  readonly resources: Pick<ResourceStore, 'currents'>;
}

/** Where a served `Type/id` of a shared resource leads (the served-id index). */
export interface ServedAs {
  /** The Patient id here it was first served for (its $everything's id). */
  readonly patient: string;
  readonly holder: number;
  /** The id the holder gave it. */
  readonly holderId: string;
}

/** A shared resource as its holder names it. */
export interface HolderRef {
  readonly holder: number;
  readonly type: string;
  readonly id: string;
}

export function holderRef(holder: number, res: Record<string, unknown>): HolderRef {
  return { holder, type: String(res.resourceType), id: String(res.id) };
}

/** The served ids of one read's shared resources (ServedIds.assign). */
export interface Assigned {
  /** The id a holder's resource, one of those assigned, is served under. */
  readonly idOf: (ref: HolderRef) => string;
  /** Per holder, its `Type/id`s that are served under another id, for its references. */
  readonly moved: ReadonlyMap<number, ReadonlyMap<string, string>>;
}

export class ServedIds {
  private readonly deps: ServedIdsDeps;
  private readonly index: Sublevel;
  /** Claims of served ids run one at a time: two fetches must not both take one free id. */
  private claiming: Promise<unknown> = Promise.resolve();

  constructor(deps: ServedIdsDeps) {
    this.deps = deps;
    this.index = openSublevel(deps.db, SERVED_SPACE);
  }

  /** The patient and holder a shared resource served here as `type/id` was served for. */
  async servedAs(type: string, id: string): Promise<ServedAs | undefined> {
    const key = forwardKey(type, id);
    const stored = await this.index.get(key);
    if (stored === undefined) return undefined;
    return this.open(key, stored, (r) => {
      const patient = r.string('patient', MAX_STRING);
      r.fixed(32, 'idHash');
      return { patient, holder: r.varint('holder', 0xffff), holderId: r.string('id', MAX_STRING) };
    });
  }

  /** The Patient id here of the patient whose record's Provenance `tx` (hex) was served here. */
  async provenanceFor(tx: string): Promise<string | undefined> {
    if (!TX_ID.test(tx)) return undefined;
    const key = provenanceKey(tx);
    const stored = await this.index.get(key);
    return stored === undefined
      ? undefined
      : this.open(key, stored, (r) => r.string('patient', MAX_STRING));
  }

  /**
   * The id each of the shared resources `refs` of the patient (`patientId` here, `idHash`) is
   * served under here (the module comment's rule), claiming the new ones in the index.
   */
  assign(patientId: string, idHash: Bytes, refs: readonly HolderRef[]): Promise<Assigned> {
    const run = this.claiming.then(() => this.claim(patientId, idHash, refs));
    this.claiming = run.catch(() => undefined);
    return run.then((ids) => {
      const moved = new Map<number, Map<string, string>>();
      for (const { ref, id } of ids.values()) {
        if (id === ref.id) continue;
        const of = moved.get(ref.holder) ?? new Map<string, string>();
        of.set(`${ref.type}/${ref.id}`, `${ref.type}/${id}`);
        moved.set(ref.holder, of);
      }
      return { idOf: (ref) => ids.get(refKey(ref))!.id, moved };
    });
  }

  /** Notes the patient of every Provenance served, for `GET Provenance/{id}`. */
  async indexProvenance(
    patientId: string,
    matches: readonly { readonly provenance?: Provenance }[],
  ): Promise<void> {
    const txs = [
      ...new Set(
        matches.flatMap((m) =>
          m.provenance?.id !== undefined && TX_ID.test(m.provenance.id) ? [m.provenance.id] : [],
        ),
      ),
    ];
    if (txs.length === 0) return;
    const keys = txs.map(provenanceKey);
    const stored = await this.index.getMany(keys);
    const ops: WriteOp[] = [];
    keys.forEach((key, n) => {
      if (stored[n] === undefined)
        this.put(
          ops,
          key,
          encode((w) => w.string(patientId)),
        );
    });
    // Bookkeeping: an entry lost in a crash is written again by the patient's next read.
    if (ops.length > 0) await this.deps.db.batch(ops, { sync: false });
  }

  private async claim(
    patientId: string,
    idHash: Bytes,
    refs: readonly HolderRef[],
  ): Promise<Map<string, { ref: HolderRef; id: string }>> {
    const out = new Map<string, { ref: HolderRef; id: string }>();
    const distinct = [...new Map(refs.map((r) => [refKey(r), r])).values()];
    if (distinct.length === 0) return out;
    const claimKeys = distinct.map((r) => claimKey(idHash, r));
    const claims = (await this.index.getMany(claimKeys)).map((v, n) =>
      v === undefined ? undefined : this.open(claimKeys[n]!, v, (r) => r.string('id', MAX_STRING)),
    );
    const shadowed = await this.deps.resources.currents(
      distinct.flatMap((r, n) =>
        claims[n] === undefined ? [] : [{ type: r.type, id: claims[n] }],
      ),
    );
    const ops: WriteOp[] = [];
    const open: HolderRef[] = [];
    distinct.forEach((ref, n) => {
      const id = claims[n];
      if (id !== undefined && shadowed.get(`${ref.type}/${id}`) === undefined) {
        out.set(refKey(ref), { ref, id });
        return;
      }
      // This institution's own resource has taken the id since: GET Type/id reads it, and the
      // shared one moves on.
      if (id !== undefined)
        ops.push({ type: 'del', sublevel: this.index, key: forwardKey(ref.type, id) });
      open.push(ref);
    });
    if (open.length > 0) {
      const tried = open.flatMap((ref) =>
        candidateIds(idHash, ref).map((id) => ({ type: ref.type, id })),
      );
      const [taken, own] = await Promise.all([
        this.index.getMany(tried.map((t) => forwardKey(t.type, t.id))),
        this.deps.resources.currents(tried),
      ]);
      const busy = new Set(
        tried
          .filter((t, n) => taken[n] !== undefined || own.get(`${t.type}/${t.id}`) !== undefined)
          .map((t) => `${t.type}/${t.id}`),
      );
      for (const ref of open) {
        const id = candidateIds(idHash, ref).find((c) => !busy.has(`${ref.type}/${c}`));
        if (id === undefined) {
          throw fail(500, 'exception', `no free id to serve a shared ${ref.type} under`);
        }
        busy.add(`${ref.type}/${id}`);
        out.set(refKey(ref), { ref, id });
        this.put(
          ops,
          claimKey(idHash, ref),
          encode((w) => w.string(id)),
        );
        this.put(
          ops,
          forwardKey(ref.type, id),
          encode((w) =>
            w.string(patientId).fixed(idHash, 32, 'idHash').varint(ref.holder).string(ref.id),
          ),
        );
      }
    }
    // Durable: a served id, once given out, must name the same resource after a crash.
    if (ops.length > 0) await this.deps.db.batch(ops, { sync: true });
    return out;
  }

  private put(ops: WriteOp[], key: Bytes, payload: Bytes): void {
    ops.push({ type: 'put', sublevel: this.index, key, value: sealIn(SERVED_SPACE, key, payload) });
  }

  private open<T>(key: Bytes, stored: Bytes, read: (r: Reader) => T): T {
    const opened = openSeal(SERVED_SPACE, key, stored);
    if (!opened.ok) {
      throw new StoreError(
        'CORRUPT',
        `corrupt served-id entry (${toHex(key.subarray(0, 8))}): ${opened.problem}`,
        { space: SERVED_SPACE },
      );
    }
    return decode(opened.payload, 'served-id entry', read);
  }
}

const RELATIVE_REFERENCE =
  /^([A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64})(\/_history\/[A-Za-z0-9\-.]{1,64})?$/;

/** `Type/id[/_history/v]` to the served `Type/id` of a moved resource, keeping the version. */
export function moveTo(moved: ReadonlyMap<string, string>): (ref: string) => string | undefined {
  return (ref) => {
    const m = RELATIVE_REFERENCE.exec(ref);
    const to = m === null ? undefined : moved.get(m[1]!);
    return to === undefined ? undefined : `${to}${m![2] ?? ''}`;
  };
}

const FORWARD = 0x01;
const CLAIM = 0x02;
const PROVENANCE = 0x03;
const MAX_STRING = 1 << 16;
const TX_ID = /^[0-9a-f]{64}$/;
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;

const refKey = (r: HolderRef) => `${r.holder} ${r.type}/${r.id}`;

const forwardKey = (type: string, id: string): Bytes =>
  concatBytes(Uint8Array.of(FORWARD), resourceKey(type, id));

const claimKey = (idHash: Bytes, r: HolderRef): Bytes =>
  concatBytes(Uint8Array.of(CLAIM), idHash, u16be(r.holder), resourceKey(r.type, r.id));

const provenanceKey = (tx: string): Bytes =>
  concatBytes(Uint8Array.of(PROVENANCE), fromHex(tx, 'tx'));

/** The ids a shared resource may be served under, in the order of the rule. */
function candidateIds(idHash: Bytes, r: HolderRef): string[] {
  const digest = sha256(
    encode((w) => w.fixed(idHash, 32, 'idHash').varint(r.holder).string(r.type).string(r.id)),
  );
  return [r.id, `${r.id}.${r.holder}`]
    .filter((id) => FHIR_ID.test(id))
    .concat(`s${toHex(digest).slice(0, 40)}`);
}
