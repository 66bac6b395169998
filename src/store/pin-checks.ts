/**
 * The argument checks of a pin, before anything is read or written: the certificate's subject and
 * the patient blocks given with a keyblock or a batch. Each failure is INVALID_ARGUMENT.
 */
import { equalBytes } from '../crypto/bytes.ts';
import { refKey } from '../ledger/batch.ts';
import type { Microblock } from '../ledger/microblock.ts';
import type { BatchTx, Certificate, Keyblock } from '../ledger/types.ts';
import { StoreError } from './errors.ts';

/** The certificate must be for this item (kind and height). */
export function checkCertificate(
  cert: Certificate,
  kind: Certificate['kind'],
  height: number,
): void {
  if (cert.kind !== kind || cert.height !== height) {
    throw new StoreError(
      'INVALID_ARGUMENT',
      `the certificate is for ${cert.kind} ${cert.height}, not ${kind} ${height}`,
    );
  }
}

/** One new patient block per register tx of `kb`, in order, each the block its tx creates. */
export function checkNewMicroblocks(kb: Keyblock, blocks: readonly Microblock[]): void {
  if (blocks.length !== kb.registers.length) {
    throw new StoreError(
      'INVALID_ARGUMENT',
      `keyblock ${kb.height} has ${kb.registers.length} register txs but ${blocks.length} new microblocks`,
    );
  }
  kb.registers.forEach((tx, j) => {
    const h = blocks[j]!.header;
    if (
      h.i !== kb.height ||
      h.j !== j ||
      h.home !== tx.home ||
      !equalBytes(h.idHash, tx.idHash) ||
      !equalBytes(h.rootDigest, tx.rootDigest)
    ) {
      throw new StoreError(
        'INVALID_ARGUMENT',
        `microblock ${j} is not the block of register tx ${kb.height}/${j}`,
      );
    }
  });
}

/**
 * The blocks given with batch `height` are exactly those its txs address, each once and already
 * registered (up to `keyblockHeight`); returns them as a list.
 */
export function checkChangedMicroblocks(
  height: number,
  txs: readonly BatchTx[],
  changed: Iterable<Microblock>,
  keyblockHeight: number,
): Microblock[] {
  const addressed = new Set(txs.map((tx) => refKey(tx.block)));
  const blocks = [...changed];
  const given = new Set(blocks.map((mb) => refKey(mb.header)));
  for (const key of addressed) {
    if (!given.has(key)) {
      throw new StoreError('INVALID_ARGUMENT', `batch ${height} changes ${key}, not given`);
    }
  }
  for (const mb of blocks) {
    const key = refKey(mb.header);
    if (!addressed.has(key) || mb.header.i > keyblockHeight) {
      throw new StoreError(
        'INVALID_ARGUMENT',
        `microblock ${key} is not changed by batch ${height} or not yet pinned`,
      );
    }
  }
  if (given.size !== blocks.length) {
    throw new StoreError('INVALID_ARGUMENT', `batch ${height}: a microblock is given twice`);
  }
  return blocks;
}
