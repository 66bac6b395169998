/**
 * The sidecar's own LevelDB (beside the node's ledger store): the vault, the patient registry,
 * the record index, this institution's author state and its own txs on their way to the chain
 * (entries.ts lists the layout). Multi-key updates are one atomic batch (`write`), fsynced by
 * default: the EHR is answered only once its records are on disk.
 */
import { toHex } from '../crypto/bytes.ts';
import type { Bytes } from '../ledger/types.ts';
import { type Db, openDb, openSublevel, type Sublevel, type WriteOp } from '../store/db.ts';
import { StoreError } from '../store/errors.ts';
import { openSeal, sealIn } from '../store/values.ts';
import { Vault } from '../store/vault.ts';
import { SIDECAR_SPACES, type SidecarSpace } from './entries.ts';

export interface SidecarStoreOpts {
  /** fsync every write batch (default true: an acknowledged record survives an OS crash). */
  readonly syncWrites: boolean;
}

export const defaultSidecarStoreOpts: SidecarStoreOpts = { syncWrites: true };

export type { WriteOp };

export class SidecarStore {
  /** The database, for other stores that keep their sublevels in it (e.g. an embedded queue). */
  readonly db: Db;
  readonly vault: Vault;
  readonly spaces: Readonly<Record<SidecarSpace, Sublevel>>;
  private readonly opts: SidecarStoreOpts;

  private constructor(db: Db, opts: SidecarStoreOpts) {
    this.db = db;
    this.opts = opts;
    this.vault = new Vault(db);
    const spaces = {} as Record<SidecarSpace, Sublevel>;
    for (const kind of Object.keys(SIDECAR_SPACES) as SidecarSpace[]) {
      spaces[kind] = openSublevel(db, SIDECAR_SPACES[kind]);
    }
    this.spaces = spaces;
  }

  /** Opens (creating if missing) the database at `path`: StoreError OPEN_FAILED with the reason. */
  static async open(path: string, opts: Partial<SidecarStoreOpts> = {}): Promise<SidecarStore> {
    return new SidecarStore(await openDb(path), { ...defaultSidecarStoreOpts, ...opts });
  }

  async close(): Promise<void> {
    await this.db.close();
  }

  /** Stages a sealed put of `payload` under `key` in sublevel `kind`. */
  put(ops: WriteOp[], kind: SidecarSpace, key: Bytes, payload: Bytes): void {
    ops.push({
      type: 'put',
      sublevel: this.spaces[kind],
      key,
      value: sealIn(SIDECAR_SPACES[kind], key, payload),
    });
  }

  del(ops: WriteOp[], kind: SidecarSpace, key: Bytes): void {
    ops.push({ type: 'del', sublevel: this.spaces[kind], key });
  }

  /**
   * Writes `ops` as one atomic batch, fsynced when the store syncs writes; `durable: false` for
   * bookkeeping whose loss after an OS crash only repeats work (a state that moves forward).
   */
  async write(ops: readonly WriteOp[], durable = true): Promise<void> {
    if (ops.length === 0) return;
    await this.db.batch(ops as WriteOp[], { sync: durable && this.opts.syncWrites });
  }

  /** Reads and decodes the value under `key`; a broken seal or encoding is CORRUPT. */
  async read<T>(kind: SidecarSpace, key: Bytes, f: (payload: Bytes) => T): Promise<T | undefined> {
    const stored = await this.spaces[kind].get(key);
    return stored === undefined ? undefined : this.decodeStored(kind, key, stored, f);
  }

  /** Checks the seal of a stored value (e.g. from an iterator) and decodes it. */
  decodeStored<T>(kind: SidecarSpace, key: Bytes, stored: Bytes, f: (payload: Bytes) => T): T {
    const opened = openSeal(SIDECAR_SPACES[kind], key, stored);
    if (!opened.ok) throw corruptEntry(kind, key, opened.problem);
    try {
      return f(opened.payload);
    } catch (err) {
      throw corruptEntry(kind, key, (err as Error).message, err);
    }
  }
}

function corruptEntry(kind: SidecarSpace, key: Bytes, problem: string, cause?: unknown) {
  // Keys may derive from patient identifiers: name only the first bytes of their hash form.
  const where = toHex(key.subarray(0, 8));
  return new StoreError(
    'CORRUPT',
    `corrupt sidecar ${kind} entry (${where}): ${problem}`,
    { kind, key: where },
    cause,
  );
}
