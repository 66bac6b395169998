/**
 * The ledger's canonical binary encoding: unsigned LEB128 varints (minimal form only), fixed-size
 * byte strings, and varint-length-prefixed byte strings. Every value has exactly one encoding, so
 * hashes and signatures over encodings are deterministic, and the reader rejects anything else
 * (over-long varints, truncation, trailing bytes) with a LedgerError naming the field.
 */
import { LedgerError } from './errors.ts';

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

export class Writer {
  private chunks: Uint8Array[] = [];
  private scratch: number[] = [];
  private length = 0;

  private flushScratch(): void {
    if (this.scratch.length > 0) {
      this.chunks.push(Uint8Array.from(this.scratch));
      this.length += this.scratch.length;
      this.scratch = [];
    }
  }

  u8(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`u8 out of range: ${v}`);
    this.scratch.push(v);
    return this;
  }

  /** Unsigned LEB128, up to 2^53 - 1. */
  varint(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`varint out of range: ${v}`);
    let n = v;
    while (n >= 0x80) {
      this.scratch.push((n % 0x80) | 0x80);
      n = Math.floor(n / 0x80);
    }
    this.scratch.push(n);
    return this;
  }

  bool(v: boolean): this {
    return this.u8(v ? 1 : 0);
  }

  /** Fixed-size bytes (the size is known to the schema, not written). */
  fixed(bytes: Uint8Array, size: number, what: string): this {
    if (bytes.length !== size)
      throw new RangeError(`${what} must be ${size} bytes, got ${bytes.length}`);
    this.flushScratch();
    this.chunks.push(bytes);
    this.length += size;
    return this;
  }

  /** Varint length, then the bytes. */
  bytes(bytes: Uint8Array): this {
    this.varint(bytes.length);
    this.flushScratch();
    this.chunks.push(bytes);
    this.length += bytes.length;
    return this;
  }

  string(s: string): this {
    return this.bytes(new TextEncoder().encode(s));
  }

  /** Varint count, then each item written by `f`. */
  list<T>(items: readonly T[], f: (w: this, item: T) => void): this {
    this.varint(items.length);
    for (const item of items) f(this, item);
    return this;
  }

  finish(): Uint8Array {
    this.flushScratch();
    const out = new Uint8Array(this.length);
    let offset = 0;
    for (const c of this.chunks) {
      out.set(c, offset);
      offset += c.length;
    }
    return out;
  }
}

export class Reader {
  private offset = 0;
  private readonly buf: Uint8Array;
  private readonly what: string;

  constructor(buf: Uint8Array, what: string) {
    this.buf = buf;
    this.what = what;
  }

  fail(field: string, problem: string, code: 'MALFORMED' | 'NON_CANONICAL' = 'MALFORMED'): never {
    throw new LedgerError(code, `${this.what}: ${field} ${problem}`, {
      what: this.what,
      field,
      offset: this.offset,
    });
  }

  get remaining(): number {
    return this.buf.length - this.offset;
  }

  u8(field: string): number {
    const b = this.buf[this.offset];
    if (b === undefined) this.fail(field, 'is missing (input ended)');
    this.offset++;
    return b;
  }

  varint(field: string, max = Number.MAX_SAFE_INTEGER): number {
    let result = 0n;
    let shift = 0n;
    for (let i = 0; ; i++) {
      const b = this.u8(field);
      if (i > 0 && b === 0) this.fail(field, 'is not a minimal varint', 'NON_CANONICAL');
      result |= BigInt(b & 0x7f) << shift;
      if (result > MAX_SAFE) this.fail(field, 'is too large');
      if ((b & 0x80) === 0) break;
      shift += 7n;
    }
    const n = Number(result);
    if (n > max) this.fail(field, `is ${n}, above the limit ${max}`);
    return n;
  }

  bool(field: string): boolean {
    const b = this.u8(field);
    if (b > 1) this.fail(field, `must be 0 or 1, got ${b}`);
    return b === 1;
  }

  fixed(size: number, field: string): Uint8Array {
    if (this.remaining < size) this.fail(field, `needs ${size} bytes, ${this.remaining} left`);
    // A copy, always: Buffer#slice (LevelDB and libp2p hand us Buffers) returns a view, and a
    // decoded field must not alias the bytes it was read from.
    const out = new Uint8Array(size);
    out.set(this.buf.subarray(this.offset, this.offset + size));
    this.offset += size;
    return out;
  }

  bytes(field: string, maxLength: number): Uint8Array {
    const length = this.varint(`${field} length`, maxLength);
    return this.fixed(length, field);
  }

  string(field: string, maxLength: number): string {
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(this.bytes(field, maxLength));
    } catch (err) {
      if (err instanceof LedgerError) throw err;
      return this.fail(field, 'is not valid UTF-8');
    }
  }

  list<T>(field: string, maxItems: number, f: (r: this, index: number) => T): T[] {
    const count = this.varint(`${field} count`, maxItems);
    const out: T[] = [];
    for (let i = 0; i < count; i++) out.push(f(this, i));
    return out;
  }

  end(): void {
    if (this.remaining !== 0) this.fail('input', `has ${this.remaining} trailing bytes`);
  }
}

/** Encodes with `f`, for one-liners. */
export function encode(f: (w: Writer) => void): Uint8Array {
  const w = new Writer();
  f(w);
  return w.finish();
}

/** Decodes all of `bytes` with `f`, rejecting trailing data. */
export function decode<T>(bytes: Uint8Array, what: string, f: (r: Reader) => T): T {
  if (!(bytes instanceof Uint8Array)) throw new LedgerError('MALFORMED', `${what} must be bytes`);
  const r = new Reader(bytes, what);
  const out = f(r);
  r.end();
  return out;
}
