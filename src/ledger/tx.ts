/**
 * Transactions (paper Table 3): canonical encoding, hashing, signing and the stateless checks.
 *
 * Sizes are what the ledger stores per record, so the encoding is tight: institutions are registry
 * indexes (varints), the patient block is (i, j) as varints, and a record tx carries no signature of
 * its own: the writing institution signs the bundle that carries it (one signature per bundle over
 * the Merkle root of its tx hashes). A medical tx is about 105 bytes.
 */
import { equalBytes, toHex } from '../crypto/bytes.ts';
import { decodeOpening, encodeOpening } from '../crypto/chameleon.ts';
import { decodePoint } from '../crypto/curve/point.ts';
import { MerkleTree, merkleRoot } from '../crypto/merkle.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { sign, verify } from '../crypto/sign.ts';
import { decode, encode, type Reader, type Writer } from './codec.ts';
import { isLedgerError, LedgerError, OK, reject, type Verdict } from './errors.ts';
import { checkFee } from './fees.ts';
import { HASH_BYTES, ledgerHash } from './hash.ts';
import type {
  BatchTx,
  BlockRef,
  Bundle,
  Bytes,
  LabelTx,
  LeafTx,
  MedicalTx,
  RegisterTx,
  Tx,
} from './types.ts';

const TYPE_TAG = { register: 1, medical: 2, label: 3, leaf: 4 } as const;
const KEY_BYTES = 33;
const SIG_BYTES = 64;
const MAX_INDEX = 0xffff;
const MAX_HEIGHT = 2 ** 40;
/** Most txs one bundle may carry. */
export const MAX_BUNDLE_TXS = 4096;

export const SIGNING_DOMAINS = {
  register: 'spchain/register',
  grant: 'spchain/grant',
  bundle: 'spchain/bundle',
} as const;

function writeRef(w: Writer, ref: BlockRef): void {
  w.varint(ref.i).varint(ref.j);
}

function readRef(r: Reader): BlockRef {
  return { i: r.varint('block.i', MAX_HEIGHT), j: r.varint('block.j', MAX_BUNDLE_TXS * 16) };
}

/** Everything a register tx's patient signature covers. */
export function registerBody(tx: Omit<RegisterTx, 'signature'>): Bytes {
  return encode((w) =>
    w
      .u8(TYPE_TAG.register)
      .fixed(tx.idHash, HASH_BYTES, 'idHash')
      .fixed(tx.patientPreKey, KEY_BYTES, 'patientPreKey')
      .fixed(tx.patientSigningKey, KEY_BYTES, 'patientSigningKey')
      .varint(tx.home)
      .fixed(tx.homeLeafDigest, HASH_BYTES, 'homeLeafDigest')
      .fixed(tx.rootDigest, HASH_BYTES, 'rootDigest')
      .fixed(encodeOpening(tx.rootOpening), 64, 'rootOpening')
      .varint(tx.fee),
  );
}

/** The part of a record tx that its leaf's running hash covers (everything but the opening). */
export function recordTxCore(tx: MedicalTx | LabelTx): Bytes {
  return encode((w) => {
    w.u8(TYPE_TAG[tx.type]);
    writeRef(w, tx.block);
    w.varint(tx.institution).varint(tx.seq);
    if (tx.type === 'label') w.fixed(tx.target, HASH_BYTES, 'target');
    w.fixed(tx.pointer, HASH_BYTES, 'pointer').varint(tx.fee);
  });
}

/** Everything a leaf tx's grant covers: the patient allows `institution` to write for them. */
export function grantMessage(chainId: string, idHash: Bytes, institution: number): Bytes {
  return encode((w) => w.string(chainId).fixed(idHash, HASH_BYTES, 'idHash').varint(institution));
}

const encodings = new WeakMap<Tx, Bytes>();

/**
 * The canonical encoding, memoised per tx object (a tx is encoded for its hash, in every batch
 * and bundle that carries it, and by the store): the memo is never handed out, encodeTx copies it.
 */
function encodingOf(tx: Tx): Bytes {
  let bytes = encodings.get(tx);
  if (bytes === undefined) {
    bytes = encodeTxOnce(tx);
    encodings.set(tx, bytes);
  }
  return bytes;
}

export function encodeTx(tx: Tx): Bytes {
  return encodingOf(tx).slice();
}

function encodeTxOnce(tx: Tx): Bytes {
  switch (tx.type) {
    case 'register':
      return encode((w) => {
        const body = registerBody(tx);
        w.fixed(body, body.length, 'body').fixed(tx.signature, SIG_BYTES, 'signature');
      });
    case 'medical':
    case 'label': {
      const core = recordTxCore(tx);
      return encode((w) =>
        w.fixed(core, core.length, 'core').fixed(encodeOpening(tx.opening), 64, 'opening'),
      );
    }
    case 'leaf':
      return encode((w) => {
        w.u8(TYPE_TAG.leaf);
        writeRef(w, tx.block);
        w.varint(tx.institution)
          .fixed(tx.leafDigest, HASH_BYTES, 'leafDigest')
          .fixed(tx.grant, SIG_BYTES, 'grant')
          .fixed(encodeOpening(tx.rootOpening), 64, 'rootOpening')
          .varint(tx.fee);
      });
  }
}

function readOpening(r: Reader, field: string) {
  const bytes = r.fixed(64, field);
  try {
    return decodeOpening(bytes, field);
  } catch (err) {
    return r.fail(field, `is not a valid chameleon opening (${(err as Error).message})`);
  }
}

/** Reads a 33-byte public key, checked to be a point of secp256k1 (MALFORMED naming `field`). */
export function readKey(r: Reader, field: string): Bytes {
  const bytes = r.fixed(KEY_BYTES, field);
  try {
    return decodePoint(bytes, field);
  } catch (err) {
    return r.fail(field, `is not a valid public key (${(err as Error).message})`);
  }
}

/** Reads one tx from a reader positioned at its type tag. */
export function readTx(r: Reader): Tx {
  const tag = r.u8('type');
  switch (tag) {
    case TYPE_TAG.register:
      return {
        type: 'register',
        idHash: r.fixed(HASH_BYTES, 'idHash'),
        patientPreKey: readKey(r, 'patientPreKey'),
        patientSigningKey: readKey(r, 'patientSigningKey'),
        home: r.varint('home', MAX_INDEX),
        homeLeafDigest: r.fixed(HASH_BYTES, 'homeLeafDigest'),
        rootDigest: r.fixed(HASH_BYTES, 'rootDigest'),
        rootOpening: readOpening(r, 'rootOpening'),
        fee: r.varint('fee'),
        signature: r.fixed(SIG_BYTES, 'signature'),
      };
    case TYPE_TAG.medical:
    case TYPE_TAG.label: {
      const block = readRef(r);
      const institution = r.varint('institution', MAX_INDEX);
      const seq = r.varint('seq');
      if (seq === 0) r.fail('seq', 'starts at 1');
      const target = tag === TYPE_TAG.label ? r.fixed(HASH_BYTES, 'target') : null;
      const pointer = r.fixed(HASH_BYTES, 'pointer');
      const fee = r.varint('fee');
      const opening = readOpening(r, 'opening');
      return target
        ? { type: 'label', block, institution, seq, target, pointer, fee, opening }
        : { type: 'medical', block, institution, seq, pointer, fee, opening };
    }
    case TYPE_TAG.leaf:
      return {
        type: 'leaf',
        block: readRef(r),
        institution: r.varint('institution', MAX_INDEX),
        leafDigest: r.fixed(HASH_BYTES, 'leafDigest'),
        grant: r.fixed(SIG_BYTES, 'grant'),
        rootOpening: readOpening(r, 'rootOpening'),
        fee: r.varint('fee'),
      };
    default:
      return r.fail('type', `is unknown (${tag})`);
  }
}

export function decodeTx(bytes: Bytes): Tx {
  return decode(bytes, 'tx', readTx);
}

const txHashes = new WeakMap<Tx, { hash: Bytes; hex: string | null }>();

/**
 * The tx's identity: H('tx', encoding). Signatures are outside record txs, so it is not malleable.
 * Memoised by tx object (a tx is hashed at mempool entry, in its bundle's signature check, in every
 * batch validation and commitment): callers must not mutate a tx, or the hash, once passed in.
 */
export function txHash(tx: Tx): Bytes {
  let memo = txHashes.get(tx);
  if (memo === undefined) {
    memo = { hash: txHashOfEncoding(encodingOf(tx)), hex: null };
    txHashes.set(tx, memo);
  }
  return memo.hash;
}

/** txHash as lowercase hex (memoised like txHash). */
export function txHashHex(tx: Tx): string {
  txHash(tx);
  const memo = txHashes.get(tx)!;
  memo.hex ??= toHex(memo.hash);
  return memo.hex;
}

/** txHash from the tx's canonical encoding (e.g. its bytes inside a stored batch), unchecked. */
export function txHashOfEncoding(bytes: Bytes): Bytes {
  return ledgerHash('tx', bytes);
}

/** The patient signs a register tx: it registers them and grants the home institution uploads. */
export function signRegister(
  chainId: string,
  body: Omit<RegisterTx, 'signature'>,
  patientSigningSecret: Bytes,
  random?: RandomBytes,
): RegisterTx {
  const message = encode((w) => w.string(chainId).bytes(registerBody(body)));
  return {
    ...body,
    signature: sign(patientSigningSecret, SIGNING_DOMAINS.register, message, random),
  };
}

export function verifyRegisterSignature(chainId: string, tx: RegisterTx): boolean {
  const message = encode((w) => w.string(chainId).bytes(registerBody(tx)));
  return verify(tx.patientSigningKey, SIGNING_DOMAINS.register, message, tx.signature);
}

export function signGrant(
  chainId: string,
  idHash: Bytes,
  institution: number,
  patientSigningSecret: Bytes,
  random?: RandomBytes,
): Bytes {
  return sign(
    patientSigningSecret,
    SIGNING_DOMAINS.grant,
    grantMessage(chainId, idHash, institution),
    random,
  );
}

export function verifyGrant(
  chainId: string,
  idHash: Bytes,
  tx: LeafTx,
  patientSigningKey: Bytes,
): boolean {
  return verify(
    patientSigningKey,
    SIGNING_DOMAINS.grant,
    grantMessage(chainId, idHash, tx.institution),
    tx.grant,
  );
}

/** The message a bundle signature covers: chain, institution, Merkle root of the tx hashes. */
export function bundleMessage(
  chainId: string,
  institution: number,
  txs: readonly BatchTx[],
): Bytes {
  return encode((w) =>
    w
      .string(chainId)
      .varint(institution)
      .fixed(merkleRoot(txs.map(txHash)), HASH_BYTES, 'root'),
  );
}

export function signBundle(
  chainId: string,
  institution: number,
  txs: readonly BatchTx[],
  signingSecret: Bytes,
  random?: RandomBytes,
): Bundle {
  const message = bundleMessage(chainId, institution, txs);
  return {
    institution,
    txs,
    signature: sign(signingSecret, SIGNING_DOMAINS.bundle, message, random),
  };
}

const bundleChecks = new WeakMap<Bundle, { chainId: string; key: Bytes; ok: boolean }>();

/**
 * Whether `signingKey` signed the bundle on chain `chainId`. Memoised by bundle object for the last
 * (chain, key) it was checked under: a held bundle is checked at mempool entry and again whenever
 * the mempool is re-judged or a proposal carrying it is validated. Callers must not mutate a bundle
 * once passed in.
 */
export function verifyBundleSignature(chainId: string, bundle: Bundle, signingKey: Bytes): boolean {
  const memo = bundleChecks.get(bundle);
  if (memo !== undefined && memo.chainId === chainId && equalBytes(memo.key, signingKey)) {
    return memo.ok;
  }
  const ok = verify(
    signingKey,
    SIGNING_DOMAINS.bundle,
    bundleMessage(chainId, bundle.institution, bundle.txs),
    bundle.signature,
  );
  if (signingKey instanceof Uint8Array) {
    bundleChecks.set(bundle, { chainId, key: signingKey.slice(), ok });
  }
  return ok;
}

export function writeBundle(w: Writer, bundle: Bundle): void {
  w.varint(bundle.institution);
  w.list(bundle.txs, (ww, tx) => {
    const bytes = encodingOf(tx);
    ww.fixed(bytes, bytes.length, 'tx');
  });
  w.fixed(bundle.signature, SIG_BYTES, 'bundle signature');
}

export function readBundle(r: Reader): Bundle {
  const institution = r.varint('bundle.institution', MAX_INDEX);
  const txs = r.list('bundle.txs', MAX_BUNDLE_TXS, (rr): BatchTx => {
    const tx = readTx(rr);
    if (tx.type === 'register') {
      return rr.fail('bundle tx', 'cannot be a register tx (those go in keyblocks)');
    }
    return tx;
  });
  return { institution, txs, signature: r.fixed(SIG_BYTES, 'bundle.signature') };
}

export function encodeBundle(bundle: Bundle): Bytes {
  return encode((w) => writeBundle(w, bundle));
}

export function decodeBundle(bytes: Bytes): Bundle {
  return decode(bytes, 'bundle', readBundle);
}

/** A record tx's inclusion proof within its bundle (for serving one record with its evidence). */
export function bundleInclusion(bundle: Bundle, index: number) {
  return MerkleTree.fromLeaves(bundle.txs.map(txHash)).proof(index);
}

/**
 * Checks that need no chain state: fee floor, and that a bundle only carries txs written by the
 * institution that signed it (a leaf tx is submitted by the patient's home institution, so it is
 * exempt from that rule and checked against the chain state instead).
 */
export function checkTxStateless(tx: Tx, minFee: number): Verdict {
  return checkFee(tx.fee, { minFee });
}

export function checkBundleStateless(bundle: Bundle, minFee: number): Verdict {
  if (bundle.txs.length === 0) return reject('MALFORMED', 'bundle carries no txs');
  for (const tx of bundle.txs) {
    const v = checkTxStateless(tx, minFee);
    if (!v.ok) return v;
    if (tx.type !== 'leaf' && tx.institution !== bundle.institution) {
      return reject(
        'UNAUTHORISED_INSTITUTION',
        `bundle of institution ${bundle.institution} carries a tx of ${tx.institution}`,
        {
          bundle: bundle.institution,
          tx: tx.institution,
        },
      );
    }
  }
  return OK;
}

export { isLedgerError, LedgerError };
