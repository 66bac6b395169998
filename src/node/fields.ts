/**
 * Field-by-field reading of the node's JSON files (config, genesis): every check names the field
 * that failed, as a dotted path (`params.groupSize`, `members[2].signingKey`), and the file, so
 * an operator can fix the file from the message alone.
 */
import { fromHex } from '../crypto/bytes.ts';
import { NodeError, type NodeErrorCode } from './errors.ts';

export type JsonObject = Readonly<Record<string, unknown>>;

export class FieldReader {
  private readonly code: NodeErrorCode;
  private readonly source: string;

  constructor(code: NodeErrorCode, source: string) {
    this.code = code;
    this.source = source;
  }

  fail(field: string, problem: string): never {
    throw new NodeError(this.code, `${this.source}: ${field} ${problem}`, {
      field,
      source: this.source,
    });
  }

  /** A plain object with every `required` key and no key outside `required` and `optional`. */
  object(
    value: unknown,
    field: string,
    required: readonly string[],
    optional: readonly string[] = [],
  ): JsonObject {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      this.fail(field, 'must be a JSON object');
    }
    const o = value as JsonObject;
    const prefix = field === '' ? '' : `${field}.`;
    for (const key of required) {
      if (!(key in o)) this.fail(`${prefix}${key}`, 'is missing');
    }
    for (const key of Object.keys(o)) {
      if (!required.includes(key) && !optional.includes(key)) {
        this.fail(`${prefix}${key}`, 'is not a known field');
      }
    }
    return o;
  }

  array(value: unknown, field: string, min: number, max: number): readonly unknown[] {
    if (!Array.isArray(value)) this.fail(field, 'must be a JSON array');
    if (value.length < min || value.length > max) {
      this.fail(field, `must have ${min} to ${max} entries, has ${value.length}`);
    }
    return value;
  }

  int(value: unknown, field: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
      this.fail(field, `must be an integer in [${min}, ${max}], got ${JSON.stringify(value)}`);
    }
    return value;
  }

  string(value: unknown, field: string, pattern?: RegExp, what?: string): string {
    if (typeof value !== 'string' || value.length === 0) {
      this.fail(field, 'must be a non-empty string');
    }
    if (pattern !== undefined && !pattern.test(value)) {
      this.fail(field, `must be ${what ?? `a string matching ${pattern}`}`);
    }
    return value;
  }

  hex(value: unknown, field: string, bytes?: number): Uint8Array {
    if (typeof value !== 'string' || !/^(?:[0-9a-f]{2})*$/.test(value)) {
      this.fail(field, 'must be a lower-case hex string');
    }
    const out = fromHex(value, field);
    if (bytes !== undefined && out.length !== bytes) {
      this.fail(field, `must be ${bytes} bytes (${2 * bytes} hex digits), got ${out.length}`);
    }
    return out;
  }

  bool(value: unknown, field: string): boolean {
    if (typeof value !== 'boolean') this.fail(field, 'must be true or false');
    return value;
  }

  /** A non-negative integer written as hex (targets are 256-bit). */
  bigHex(value: unknown, field: string, maxBytes: number): bigint {
    if (typeof value !== 'string' || !/^0x[0-9a-f]+$/.test(value)) {
      this.fail(field, 'must be a hex integer like "0x1f..."');
    }
    if (value.length - 2 > 2 * maxBytes) this.fail(field, `must fit in ${maxBytes} bytes`);
    return BigInt(value);
  }
}
