/**
 * Memoised checks, and one object per bundle content.
 *
 * Chameleon openings: the same record tx is checked when its bundle enters the mempool, when a
 * proposal carrying it is validated, and when the batch is applied; the check is a pure function of
 * (hash key, context, message, digest, opening), so its result is remembered, first on the opening
 * object with the other inputs (compared byte by byte), then in a bounded map under a hash of all
 * of them. Remembering changes no verdict, only how often the curve arithmetic runs.
 *
 * Bundles: see internBundle.
 */
import { toHex } from '../crypto/bytes.ts';
import { type ChameleonOpening, verifyChameleon } from '../crypto/chameleon.ts';
import { encode } from './codec.ts';
import { ledgerHash } from './hash.ts';
import type { Bundle } from './types.ts';

const MAX_ENTRIES = 1 << 16;
const memo = new Map<string, boolean>();

/** The last check of an opening object: its other inputs (copies) and the answer. */
interface LastCheck {
  readonly inputs: readonly Uint8Array[];
  readonly r: Uint8Array;
  readonly s: Uint8Array;
  readonly ok: boolean;
}

const lastChecks = new WeakMap<object, LastCheck>();

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let k = 0; k < a.length; k++) if (a[k] !== b[k]) return false;
  return true;
}

export function verifyChameleonCached(
  hashKey: Uint8Array,
  ctx: Uint8Array,
  message: Uint8Array,
  digest: Uint8Array,
  opening: ChameleonOpening,
): boolean {
  if (!(opening?.r instanceof Uint8Array) || !(opening.s instanceof Uint8Array)) {
    return verifyChameleon(hashKey, ctx, message, digest, opening);
  }
  const inputs = [hashKey, ctx, message, digest];
  if (!inputs.every((x) => x instanceof Uint8Array)) {
    return verifyChameleon(hashKey, ctx, message, digest, opening);
  }
  const last = lastChecks.get(opening);
  if (
    last !== undefined &&
    sameBytes(last.r, opening.r) &&
    sameBytes(last.s, opening.s) &&
    last.inputs.every((x, k) => sameBytes(x, inputs[k]!))
  ) {
    return last.ok;
  }
  const ok = checkByHash(hashKey, ctx, message, digest, opening);
  lastChecks.set(opening, {
    inputs: inputs.map((x) => x.slice()),
    r: opening.r.slice(),
    s: opening.s.slice(),
    ok,
  });
  return ok;
}

/** The key under which a check of exactly these inputs is remembered (a hash of all of them). */
export function chameleonCheckKey(
  hashKey: Uint8Array,
  ctx: Uint8Array,
  message: Uint8Array,
  digest: Uint8Array,
  opening: ChameleonOpening,
): string {
  return toHex(
    ledgerHash(
      'ch-check',
      encode((w) =>
        w.bytes(hashKey).bytes(ctx).bytes(message).bytes(digest).bytes(opening.r).bytes(opening.s),
      ),
    ),
  );
}

/**
 * Remembers, in this thread, that the check under `key` (chameleonCheckKey) holds, because it was
 * made in another thread of this process: the ingest's seal worker makes each collision of this
 * institution's txs and checks it before returning it (crypto/chameleon.ts collide), and without
 * this the node, on the main thread, would run the same curve arithmetic again when the tx reaches
 * its mempool. Only a key computed from the very inputs that were checked may be given: any other
 * input gives another key, which stays unknown and is checked here as usual.
 */
export function rememberChameleonCheck(key: string): void {
  if (!/^[0-9a-f]{64}$/.test(key)) throw new RangeError('a chameleon check key is 32 bytes, hex');
  remember(key, true);
}

function remember(key: string, result: boolean): void {
  if (memo.size >= MAX_ENTRIES) memo.delete(memo.keys().next().value!);
  memo.set(key, result);
}

function checkByHash(
  hashKey: Uint8Array,
  ctx: Uint8Array,
  message: Uint8Array,
  digest: Uint8Array,
  opening: ChameleonOpening,
): boolean {
  const key = chameleonCheckKey(hashKey, ctx, message, digest, opening);
  const known = memo.get(key);
  if (known !== undefined) return known;
  const result = verifyChameleon(hashKey, ctx, message, digest, opening);
  remember(key, result);
  return result;
}

/**
 * Whether two values are the same data: equal primitives, byte arrays with equal bytes, arrays
 * and plain objects with the same keys and, recursively, the same values.
 */
export function sameData(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    if (!(a instanceof Uint8Array && b instanceof Uint8Array) || a.length !== b.length) {
      return false;
    }
    for (let k = 0; k < a.length; k++) if (a[k] !== b[k]) return false;
    return true;
  }
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    if (!Object.hasOwn(b, k)) return false;
    if (!sameData((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) {
      return false;
    }
  }
  return true;
}

const MAX_INTERNED = 1 << 15;
const interned = new Map<string, Bundle>();

/**
 * One object per bundle content: a bundle that is the same data as one seen before (a gossip copy
 * of a held bundle, or a proposal's copy) is replaced by that first object, so the work memoised
 * per object (tx hashes, the bundle signature check, the mempool's fit) is not repeated for each
 * copy. Bounded; looked up by signature and checked field by field (sameData), so a bundle that
 * differs in anything, signature included, is never replaced.
 */
export function internBundle(bundle: Bundle): Bundle {
  if (!(bundle?.signature instanceof Uint8Array)) return bundle;
  const key = `${bundle.institution}:${toHex(bundle.signature)}`;
  const known = interned.get(key);
  if (known !== undefined) {
    if (known === bundle || sameData(known, bundle)) return known;
    return bundle;
  }
  if (interned.size >= MAX_INTERNED) interned.delete(interned.keys().next().value!);
  interned.set(key, bundle);
  return bundle;
}
