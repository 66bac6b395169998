/**
 * A bounded memo of chameleon-opening checks. The same record tx is checked when its bundle enters
 * the mempool, when a proposal carrying it is validated, when the batch is applied, and whenever the
 * mempool is re-judged after a pin; the check is a pure function of (hash key, context, message,
 * digest, opening), so its result can be remembered under a hash of exactly those inputs. Remembering
 * changes no verdict, only how often the curve arithmetic runs.
 */
import { toHex } from '../crypto/bytes.ts';
import { type ChameleonOpening, verifyChameleon } from '../crypto/chameleon.ts';
import { encode } from './codec.ts';
import { ledgerHash } from './hash.ts';

const MAX_ENTRIES = 1 << 16;
const memo = new Map<string, boolean>();

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
  const key = toHex(
    ledgerHash(
      'ch-check',
      encode((w) =>
        w.bytes(hashKey).bytes(ctx).bytes(message).bytes(digest).bytes(opening.r).bytes(opening.s),
      ),
    ),
  );
  const known = memo.get(key);
  if (known !== undefined) return known;
  const result = verifyChameleon(hashKey, ctx, message, digest, opening);
  if (memo.size >= MAX_ENTRIES) memo.delete(memo.keys().next().value!);
  memo.set(key, result);
  return result;
}
