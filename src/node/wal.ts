/**
 * The consensus signing record: what this node must remember across a crash so that it never signs
 * two conflicting messages at one height and round, and never forgets a lock (Tendermint keeps a
 * write-ahead log for the same reason). It is written, and flushed to disk, before any new
 * proposal or vote of ours leaves the process; on restart at the same height the BFT resumes in the
 * round after the last one it signed in, with its lock, its valid value and the prevotes that
 * justify re-proposing it.
 *
 * One small file per consensus kind (keyblocks and batches are separate Tendermint instances with
 * their own heights: consensus.wal for batches, consensus-keyblock.wal for keyblocks), each record
 * naming its kind, replaced atomically (write a temporary file, flush, rename), with a SHA-256
 * trailer so that a damaged file is refused rather than half-trusted. A file of format 1 (before
 * keyblocks were pinned by the node) holds a batch record.
 */
import { open, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { concatBytes, equalBytes } from '../crypto/bytes.ts';
import { sha256 } from '../crypto/sha256.ts';
import { type BftMessage, decodeBftMessage, encodeBftMessage } from '../ledger/bft-messages.ts';
import { readKind, writeKind } from '../ledger/certificate.ts';
import { decode, encode } from '../ledger/codec.ts';
import type { Bytes, ConsensusKind } from '../ledger/types.ts';
import { NodeError } from './errors.ts';

const MAGIC = 'spchain-consensus-wal/2';
const MAGIC_V1 = 'spchain-consensus-wal/1';
const FILES: Readonly<Record<ConsensusKind, string>> = {
  batch: 'consensus.wal',
  keyblock: 'consensus-keyblock.wal',
};
/** Prevotes kept for the valid value: one per group member at most. */
const MAX_POLKA = 4096;

export interface SigningRecord {
  readonly kind: ConsensusKind;
  readonly height: number;
  /** Highest round at `height` in which this node signed a proposal or a vote. */
  readonly round: number;
  readonly lockedRound: number;
  readonly locked: Bytes | null;
  readonly validRound: number;
  readonly valid: Bytes | null;
  /** The prevotes for `valid` in `validRound` (others' and ours): the polka behind it. */
  readonly polka: readonly BftMessage[];
}

function encodeRecord(r: SigningRecord): Bytes {
  const body = encode((w) => {
    w.string(MAGIC);
    writeKind(w, r.kind);
    w.varint(r.height).varint(r.round);
    w.varint(r.lockedRound + 1).bool(r.locked !== null);
    if (r.locked !== null) w.bytes(r.locked);
    w.varint(r.validRound + 1).bool(r.valid !== null);
    if (r.valid !== null) w.bytes(r.valid);
    w.list(r.polka, (lw, m) => lw.bytes(encodeBftMessage(m)));
  });
  return concatBytes(body, sha256(body));
}

function decodeRecord(bytes: Bytes, maxValueBytes: number): SigningRecord {
  if (bytes.length < 32) throw new Error('shorter than its checksum');
  const body = bytes.subarray(0, bytes.length - 32);
  if (!equalBytes(sha256(body), bytes.subarray(bytes.length - 32))) {
    throw new Error('checksum does not match');
  }
  return decode(body, 'consensus wal', (r) => {
    const magic = r.string('magic', 64);
    if (magic !== MAGIC && magic !== MAGIC_V1) r.fail('magic', `is not ${MAGIC}`);
    const kind = magic === MAGIC_V1 ? 'batch' : readKind(r);
    const height = r.varint('height');
    const round = r.varint('round');
    const lockedRound = r.varint('lockedRound') - 1;
    const locked = r.bool('has locked') ? r.bytes('locked', maxValueBytes) : null;
    const validRound = r.varint('validRound') - 1;
    const valid = r.bool('has valid') ? r.bytes('valid', maxValueBytes) : null;
    const polka = r.list('polka', MAX_POLKA, (rr) =>
      decodeBftMessage(rr.bytes('prevote', maxValueBytes), maxValueBytes),
    );
    return { kind, height, round, lockedRound, locked, validRound, valid, polka };
  });
}

export interface WalOpts {
  /** Flush each record to disk before returning (survives an OS crash, not only a process crash). */
  readonly fsync: boolean;
  /** Largest value (an encoded batch) a record may hold. */
  readonly maxValueBytes: number;
}

export class ConsensusWal {
  readonly kind: ConsensusKind;
  private readonly path: string;
  private readonly opts: WalOpts;
  private last: SigningRecord | null;

  private constructor(
    kind: ConsensusKind,
    path: string,
    opts: WalOpts,
    last: SigningRecord | null,
  ) {
    this.kind = kind;
    this.path = path;
    this.opts = opts;
    this.last = last;
  }

  /**
   * Opens the record of `kind` in `dir` (none yet: null). A damaged file, or one holding the
   * other kind's record, is BAD_DATA: never guess.
   */
  static async open(
    dir: string,
    opts: WalOpts,
    kind: ConsensusKind = 'batch',
  ): Promise<ConsensusWal> {
    const path = join(dir, FILES[kind]);
    let bytes: Uint8Array | null = null;
    try {
      bytes = new Uint8Array(await readFile(path));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    let record: SigningRecord | null = null;
    if (bytes !== null) {
      try {
        record = decodeRecord(bytes, opts.maxValueBytes);
      } catch (err) {
        throw new NodeError('BAD_DATA', `${path} is damaged: ${(err as Error).message}`, {
          path,
        });
      }
      if (record.kind !== kind) {
        throw new NodeError('BAD_DATA', `${path} holds a ${record.kind} record, not ${kind}`, {
          path,
        });
      }
    }
    return new ConsensusWal(kind, path, opts, record);
  }

  /** The last record written (or read on open). */
  get record(): SigningRecord | null {
    return this.last;
  }

  async write(record: SigningRecord): Promise<void> {
    if (record.kind !== this.kind) {
      throw new RangeError(`a ${record.kind} signing record given to the ${this.kind} one`);
    }
    const tmp = `${this.path}.tmp`;
    const file = await open(tmp, 'w', 0o600);
    try {
      await file.writeFile(encodeRecord(record));
      if (this.opts.fsync) await file.datasync();
    } finally {
      await file.close();
    }
    await rename(tmp, this.path);
    this.last = record;
  }
}
