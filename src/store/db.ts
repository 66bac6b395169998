/**
 * The LevelDB handle under the store: opening it, its sublevels (one per SpaceKind, keys and values
 * as raw bytes), and the maintenance calls that only some backends offer.
 */
import { Level } from 'level';
import type { Bytes } from '../ledger/types.ts';
import { StoreError } from './errors.ts';
import { SPACES, type SpaceKind } from './keys.ts';

export type Db = Level<Bytes, Bytes>;
export type Spaces = ReturnType<typeof openSpaces>;
export type Op = { type: 'put'; sublevel: Spaces[SpaceKind]; key: Bytes; value: Bytes };
export type Sublevel = ReturnType<typeof openSublevel>;
/** A write to any sublevel, for atomic batches that span several stores on one database. */
export type WriteOp =
  | { type: 'put'; sublevel: Sublevel; key: Bytes; value: Bytes }
  | { type: 'del'; sublevel: Sublevel; key: Bytes };
export type ReadOpts = { snapshot?: ReturnType<Db['snapshot']> };

/** Opens (creating if missing) the database at `path`; failure is OPEN_FAILED with the reason. */
export async function openDb(path: string): Promise<Db> {
  const db = new Level<Bytes, Bytes>(path, { keyEncoding: 'view', valueEncoding: 'view' });
  try {
    await db.open();
  } catch (err) {
    const e = err as Error & { cause?: Error };
    const why = e.cause ? `${e.message} (${e.cause.message})` : e.message;
    throw new StoreError('OPEN_FAILED', `cannot open LevelDB at ${path}: ${why}`, { path }, err);
  }
  return db;
}

/** The sublevel `name` of `db`, keys and values as raw bytes. */
export function openSublevel(db: Db, name: string) {
  return db.sublevel<Bytes, Bytes>(name, { keyEncoding: 'view', valueEncoding: 'view' });
}

export function openSpaces(db: Db) {
  const space = (name: string) => openSublevel(db, name);
  return {
    keyblock: space(SPACES.keyblock),
    keyblockHash: space(SPACES.keyblockHash),
    certificate: space(SPACES.certificate),
    batch: space(SPACES.batch),
    batchProof: space(SPACES.batchProof),
    microblock: space(SPACES.microblock),
    idHash: space(SPACES.idHash),
    tx: space(SPACES.tx),
    record: space(SPACES.record),
    meta: space(SPACES.meta),
  };
}

/** Compacts the whole database; false when the backend has no compactRange. */
export async function compactDb(db: Db): Promise<boolean> {
  const backend = db as unknown as {
    compactRange?: (start: Bytes, end: Bytes) => Promise<void>;
  };
  if (typeof backend.compactRange !== 'function') return false;
  await backend.compactRange(Uint8Array.of(0), new Uint8Array(16).fill(0xff));
  return true;
}

/** LevelDB's estimate of each sublevel's bytes on disk; null when the backend cannot tell. */
export async function approximateSpaceSizes(db: Db): Promise<Record<SpaceKind, number> | null> {
  const backend = db as unknown as {
    approximateSize?: (start: Bytes, end: Bytes) => Promise<number>;
  };
  if (typeof backend.approximateSize !== 'function') return null;
  const enc = new TextEncoder();
  const kinds = Object.keys(SPACES) as SpaceKind[];
  const sizes = await Promise.all(
    kinds.map((kind) =>
      backend.approximateSize!(enc.encode(`!${SPACES[kind]}!`), enc.encode(`!${SPACES[kind]}"`)),
    ),
  );
  return Object.fromEntries(kinds.map((kind, n) => [kind, sizes[n]!])) as Record<SpaceKind, number>;
}
