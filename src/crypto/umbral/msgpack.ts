/**
 * The slice of MessagePack that rust-umbral's default serialisation (rmp-serde, structs as arrays,
 * byte strings as `bin`) produces for its objects: fixarray, bin8 and bool. The reader accepts
 * exactly the canonical bytes rmp-serde writes and rejects anything else, including trailing data.
 */
import { CryptoError } from '../errors.ts';

export type MsgValue = Uint8Array | boolean | readonly MsgValue[];

export function encodeMsgpack(value: MsgValue): Uint8Array {
  const out: number[] = [];
  const write = (v: MsgValue): void => {
    if (v instanceof Uint8Array) {
      if (v.length > 0xff)
        throw new CryptoError('INVALID_ARGUMENT', 'bin8 holds at most 255 bytes');
      out.push(0xc4, v.length, ...v);
    } else if (typeof v === 'boolean') {
      out.push(v ? 0xc3 : 0xc2);
    } else {
      if (v.length > 15)
        throw new CryptoError('INVALID_ARGUMENT', 'fixarray holds at most 15 items');
      out.push(0x90 | v.length);
      for (const item of v) write(item);
    }
  };
  write(value);
  return Uint8Array.from(out);
}

export class MsgpackReader {
  private offset = 0;
  private readonly bytes: Uint8Array;
  private readonly what: string;

  constructor(bytes: Uint8Array, what: string) {
    if (!(bytes instanceof Uint8Array)) {
      throw new CryptoError('INVALID_ARGUMENT', `${what} must be a Uint8Array`);
    }
    this.bytes = bytes;
    this.what = what;
  }

  private fail(expected: string): never {
    throw new CryptoError(
      'INVALID_ENCODING',
      `${this.what}: expected ${expected} at byte ${this.offset}`,
      { what: this.what, offset: this.offset },
    );
  }

  private byte(expected: string): number {
    const b = this.bytes[this.offset];
    if (b === undefined) this.fail(`${expected} (input ended)`);
    this.offset++;
    return b;
  }

  array(length: number, field: string): void {
    if (this.byte(`array of ${length} (${field})`) !== (0x90 | length)) {
      this.offset--;
      this.fail(`array of ${length} (${field})`);
    }
  }

  bin(length: number, field: string): Uint8Array {
    const start = this.offset;
    if (this.byte(`bin (${field})`) !== 0xc4 || this.byte(`bin length (${field})`) !== length) {
      this.offset = start;
      this.fail(`${length}-byte bin (${field})`);
    }
    if (this.offset + length > this.bytes.length) this.fail(`${length} bytes of ${field}`);
    const out = this.bytes.slice(this.offset, this.offset + length);
    this.offset += length;
    return out;
  }

  bool(field: string): boolean {
    const b = this.byte(`bool (${field})`);
    if (b === 0xc3) return true;
    if (b === 0xc2) return false;
    this.offset--;
    return this.fail(`bool (${field})`);
  }

  end(): void {
    if (this.offset !== this.bytes.length) this.fail('end of input (trailing bytes)');
  }
}
