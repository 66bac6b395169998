/**
 * The consensus signing record: what this node must remember across a crash so that it never signs
 * two conflicting messages at one height and round, and never forgets a lock (Tendermint keeps a
 * write-ahead log for the same reason). It is written, and flushed to disk, before any new
 * proposal or vote of ours leaves the process; on restart at the same height the BFT resumes in the
 * round after the last one it signed in, with its lock, its valid value and the prevotes that
 * justify re-proposing it.
 *
 * One small file, replaced atomically (write a temporary file, flush, rename), with a SHA-256
 * trailer so that a damaged file is refused rather than half-trusted.
 */
import { open, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256 } from '@noble/hashes/sha2.js';
import { concatBytes, equalBytes } from '../crypto/bytes.ts';
import { type BftMessage, decodeBftMessage, encodeBftMessage } from '../ledger/bft-messages.ts';
import { decode, encode } from '../ledger/codec.ts';
import type { Bytes } from '../ledger/types.ts';
import { NodeError } from './errors.ts';

const MAGIC = 'spchain-consensus-wal/1';
const FILE = 'consensus.wal';
/** Prevotes kept for the valid value: one per group member at most. */
const MAX_POLKA = 4096;

export interface SigningRecord {
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
    w.string(MAGIC).varint(r.height).varint(r.round);
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
    if (r.string('magic', 64) !== MAGIC) r.fail('magic', `is not ${MAGIC}`);
    const height = r.varint('height');
    const round = r.varint('round');
    const lockedRound = r.varint('lockedRound') - 1;
    const locked = r.bool('has locked') ? r.bytes('locked', maxValueBytes) : null;
    const validRound = r.varint('validRound') - 1;
    const valid = r.bool('has valid') ? r.bytes('valid', maxValueBytes) : null;
    const polka = r.list('polka', MAX_POLKA, (rr) =>
      decodeBftMessage(rr.bytes('prevote', maxValueBytes), maxValueBytes),
    );
    return { height, round, lockedRound, locked, validRound, valid, polka };
  });
}

export interface WalOpts {
  /** Flush each record to disk before returning (survives an OS crash, not only a process crash). */
  readonly fsync: boolean;
  /** Largest value (an encoded batch) a record may hold. */
  readonly maxValueBytes: number;
}

export class ConsensusWal {
  private readonly path: string;
  private readonly opts: WalOpts;
  private last: SigningRecord | null;

  private constructor(path: string, opts: WalOpts, last: SigningRecord | null) {
    this.path = path;
    this.opts = opts;
    this.last = last;
  }

  /** Opens the record in `dir` (none yet: null). A damaged file is BAD_DATA: never guess. */
  static async open(dir: string, opts: WalOpts): Promise<ConsensusWal> {
    const path = join(dir, FILE);
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
    }
    return new ConsensusWal(path, opts, record);
  }

  /** The last record written (or read on open). */
  get record(): SigningRecord | null {
    return this.last;
  }

  async write(record: SigningRecord): Promise<void> {
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
