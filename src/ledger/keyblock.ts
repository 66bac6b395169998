/**
 * Keyblocks (paper 5.1, Figs. 5 and 7): register txs, PoW over (nonce, G(MB^{i-2}), G(KB_{i-1}), pk)
 * below the target, difficulty retargeting toward the configured interval, and the stateless and
 * parent-relative checks. Fork choice and pinning live in keyblock-tree.ts.
 */
import { bigIntToBytes, bytesToBigInt, equalBytes } from '../crypto/bytes.ts';
import { merkleRoot } from '../crypto/merkle.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { sign, verify } from '../crypto/sign.ts';
import { decode, encode, type Reader, type Writer } from './codec.ts';
import { OK, reject, type Verdict } from './errors.ts';
import { HASH_BYTES, ledgerHash } from './hash.ts';
import { admitHash, MAX_KEYBLOCK_ADMITS, readAdmit, writeAdmit } from './membership.ts';
import { encodeTx, readTx, txHash } from './tx.ts';
import type {
  AdmitTx,
  Bytes,
  ChainParams,
  Genesis,
  Keyblock,
  Member,
  RegisterTx,
} from './types.ts';

export const MAX_TARGET = 2n ** 256n - 1n;
export const ZERO_HASH: Bytes = new Uint8Array(HASH_BYTES);
/** Most register txs in one keyblock. */
export const MAX_KEYBLOCK_REGISTERS = 10_000;
/** How far ahead of the validator's clock a keyblock's time may be. */
export const MAX_CLOCK_DRIFT_MS = 120_000;
const KEYBLOCK_DOMAIN = 'spchain/keyblock';

export type KeyblockHeader = Omit<Keyblock, 'registers' | 'admits' | 'signature'>;

function writeHeader(w: Writer, kb: KeyblockHeader): void {
  w.varint(kb.height)
    .fixed(kb.prev, HASH_BYTES, 'prev')
    .fixed(kb.i2Link, HASH_BYTES, 'i2Link')
    .fixed(kb.txRoot, HASH_BYTES, 'txRoot')
    .varint(kb.miner)
    .varint(kb.time)
    .fixed(bigIntToBytes(kb.target, 32), 32, 'target')
    .varint(kb.nonce);
}

export function encodeKeyblockHeader(kb: KeyblockHeader): Bytes {
  return encode((w) => writeHeader(w, kb));
}

/** G(KB): the keyblock's hash, over the header (the header's txRoot covers the register txs). */
export function keyblockHash(kb: KeyblockHeader): Bytes {
  return ledgerHash('keyblock', encodeKeyblockHeader(kb));
}

/**
 * The genesis keyblock hash, parent of height 1: binds the chain id, members and parameters, and
 * the members' opening credits when the genesis lists them (in member order, after a marker, so a
 * genesis without credits hashes as it always did).
 */
export function genesisHash(genesis: Genesis): Bytes {
  return ledgerHash(
    'genesis',
    encode((w) => {
      w.string(genesis.chainId).fixed(genesis.idHashKey, 32, 'idHashKey').varint(genesis.time);
      w.list(genesis.members, (ww, m) =>
        ww
          .varint(m.index)
          .string(m.name)
          .fixed(m.signingKey, 33, 'signingKey')
          .fixed(m.chameleonKey, 33, 'chameleonKey')
          .fixed(m.preKey, 33, 'preKey'),
      );
      writeParams(w, genesis.params);
      if (genesis.credits !== undefined) {
        const credits = [...genesis.credits].sort((a, b) => a[0] - b[0]);
        w.u8(1).list(credits, (ww, [member, amount]) => ww.varint(member).varint(amount));
      }
    }),
  );
}

/** id(v) of keyblock consensus: the keyblock's own hash, so a certificate signs G(KB). */
export function keyblockValueHash(value: Bytes): Bytes {
  return keyblockHash(decodeKeyblock(value));
}

function writeParams(w: Writer, p: ChainParams): void {
  w.varint(p.keyblockIntervalMs)
    .fixed(bigIntToBytes(p.initialTarget, 32), 32, 'initialTarget')
    .varint(p.retargetWindow)
    .varint(p.chunkSize)
    .varint(p.groupSize)
    .varint(p.reputationA)
    .varint(p.reputationLambda)
    .varint(p.minFee)
    .varint(p.keyblockReward)
    .varint(p.batchReward)
    .varint(p.maxBatchTxs);
}

export function encodeKeyblock(kb: Keyblock): Bytes {
  return encode((w) => {
    writeHeader(w, kb);
    w.list(kb.registers, (lw, tx) => {
      const bytes = encodeTx(tx);
      lw.fixed(bytes, bytes.length, 'register tx');
    });
    w.list(kb.admits, writeAdmit);
    w.fixed(kb.signature, 64, 'signature');
  });
}

function readHeader(r: Reader): KeyblockHeader {
  return {
    height: r.varint('height'),
    prev: r.fixed(HASH_BYTES, 'prev'),
    i2Link: r.fixed(HASH_BYTES, 'i2Link'),
    txRoot: r.fixed(HASH_BYTES, 'txRoot'),
    miner: r.varint('miner', 0xffff),
    time: r.varint('time'),
    target: bytesToBigInt(r.fixed(32, 'target')),
    nonce: r.varint('nonce'),
  };
}

export function decodeKeyblock(bytes: Bytes): Keyblock {
  return decode(bytes, 'keyblock', (r) => {
    const header = readHeader(r);
    const registers = r.list('registers', MAX_KEYBLOCK_REGISTERS, (rr): RegisterTx => {
      const tx = readTx(rr);
      return tx.type === 'register' ? tx : rr.fail('keyblock tx', 'must be a register tx');
    });
    const admits = r.list('admits', MAX_KEYBLOCK_ADMITS, readAdmit);
    return { ...header, registers, admits, signature: r.fixed(64, 'signature') };
  });
}

/** The txRoot: the register txs' hashes, then the admit txs' (none: the registers' root alone). */
export function keyblockTxRoot(
  registers: readonly RegisterTx[],
  admits: readonly AdmitTx[] = [],
): Bytes {
  return merkleRoot([...registers.map(txHash), ...admits.map(admitHash)]);
}

/** H(nonce, G(MB^{i-2}), G(KB_{i-1}), pk) as a 256-bit integer. */
export function powValue(kb: KeyblockHeader, minerSigningKey: Bytes): bigint {
  const input = encode((w) =>
    w
      .varint(kb.nonce)
      .fixed(kb.i2Link, HASH_BYTES, 'i2Link')
      .fixed(kb.prev, HASH_BYTES, 'prev')
      .fixed(minerSigningKey, 33, 'pk'),
  );
  return bytesToBigInt(ledgerHash('pow', input));
}

/**
 * Tries nonces from `startNonce` for at most `attempts`; returns the first that meets the target or
 * null. Pure and bounded, so the node can mine in slices between other work.
 */
export function searchNonce(
  header: KeyblockHeader,
  minerSigningKey: Bytes,
  startNonce: number,
  attempts: number,
): number | null {
  for (let nonce = startNonce; nonce < startNonce + attempts; nonce++) {
    if (powValue({ ...header, nonce }, minerSigningKey) < header.target) return nonce;
  }
  return null;
}

function signingMessage(chainId: string, kb: KeyblockHeader): Bytes {
  return encode((w) => w.string(chainId).bytes(encodeKeyblockHeader(kb)));
}

export function signKeyblock(
  chainId: string,
  header: KeyblockHeader,
  registers: readonly RegisterTx[],
  minerSecret: Bytes,
  random?: RandomBytes,
  admits: readonly AdmitTx[] = [],
): Keyblock {
  const signature = sign(minerSecret, KEYBLOCK_DOMAIN, signingMessage(chainId, header), random);
  return { ...header, registers, admits, signature };
}

/** Expected chain work of a keyblock at `target`: 2^256 / (target + 1). */
export function blockWork(target: bigint): bigint {
  return 2n ** 256n / (target + 1n);
}

/**
 * The target a keyblock at `height` must carry. Every `retargetWindow` keyblocks the target is
 * scaled by (actual span of the last window) / (window · interval), clamped to a factor of 4 either
 * way (as Bitcoin does), so the interval converges to the configured one.
 * `timeAt(h)` returns the time of the ancestor at height h on the same branch (0 = genesis).
 */
export function expectedTarget(
  params: ChainParams,
  height: number,
  parentTarget: bigint,
  timeAt: (height: number) => number,
): bigint {
  if (height <= 1) return params.initialTarget;
  if ((height - 1) % params.retargetWindow !== 0) return parentTarget;
  const span = timeAt(height - 1) - timeAt(height - 1 - params.retargetWindow);
  const expected = params.retargetWindow * params.keyblockIntervalMs;
  const clamped = BigInt(Math.min(Math.max(span, expected / 4), expected * 4));
  const next = (parentTarget * clamped) / BigInt(expected);
  return next > MAX_TARGET ? MAX_TARGET : next < 1n ? 1n : next;
}

export interface KeyblockParentView {
  readonly genesis: Genesis;
  /** The members as of the parent (genesis members and those admitted up to the parent). */
  readonly roster: readonly Member[];
  /** Hash, height, time of the parent (the genesis keyblock is height 0). */
  readonly parentHash: Bytes;
  readonly parentHeight: number;
  readonly parentTime: number;
  readonly expectedTarget: bigint;
  readonly expectedI2Link: Bytes;
  /** The validator's clock. */
  readonly now: number;
}

/**
 * Checks a keyblock against its parent: miner, linkage, i-2 link, difficulty, PoW, time, tx root,
 * the miner's signature, and each register tx's own signature and fee. Registration against chain
 * state (duplicate patients) is checked by the caller, which knows the registered set.
 */
export function validateKeyblock(kb: Keyblock, view: KeyblockParentView): Verdict {
  const { genesis } = view;
  const miner = view.roster.find((m) => m.index === kb.miner);
  if (!miner)
    return reject('UNKNOWN_INSTITUTION', `miner ${kb.miner} is not a member`, { miner: kb.miner });
  if (!equalBytes(kb.prev, view.parentHash) || kb.height !== view.parentHeight + 1) {
    return reject('WRONG_PARENT', `keyblock ${kb.height} does not extend its parent`, {
      height: kb.height,
    });
  }
  if (!equalBytes(kb.i2Link, view.expectedI2Link)) {
    return reject(
      'WRONG_I2_LINK',
      `keyblock ${kb.height} does not link the last microblock of round i-2`,
      {
        height: kb.height,
      },
    );
  }
  if (kb.target !== view.expectedTarget) {
    return reject('BAD_DIFFICULTY', `keyblock ${kb.height} carries the wrong target`, {
      height: kb.height,
    });
  }
  if (powValue(kb, miner.signingKey) >= kb.target) {
    return reject('BAD_POW', `keyblock ${kb.height} does not meet its PoW target`, {
      height: kb.height,
    });
  }
  if (kb.time <= view.parentTime || kb.time > view.now + MAX_CLOCK_DRIFT_MS) {
    return reject(
      'BAD_TIMESTAMP',
      `keyblock ${kb.height} time is not after its parent or is in the future`,
      {
        height: kb.height,
        time: kb.time,
      },
    );
  }
  if (!equalBytes(kb.txRoot, keyblockTxRoot(kb.registers, kb.admits))) {
    return reject('BAD_TX_ROOT', `keyblock ${kb.height} tx root does not match its txs`);
  }
  if (
    !verify(miner.signingKey, KEYBLOCK_DOMAIN, signingMessage(genesis.chainId, kb), kb.signature)
  ) {
    return reject('BAD_SIGNATURE', `keyblock ${kb.height} is not signed by its miner`, {
      miner: kb.miner,
    });
  }
  return OK;
}
