/**
 * The kinds of value a configuration option can take, each read from text (an environment
 * variable, a flag) and from JSON (the configuration file), and each checked at once. A bad value
 * throws a Problem: what is wrong, phrased to follow the option's name ("must be an integer from 0
 * to 65535, got \"70000\""); src/config/load.ts adds the name and where the value came from.
 * Pure: no IO.
 */

/** What is wrong with one value; load.ts turns it into a ConfigError naming the option. */
export class Problem extends Error {
  override readonly name = 'Problem';
}

export interface ValueKind<T> {
  /** For the documentation: `integer 0-65535`, `http(s) URL`, `info | warn | ...`. */
  readonly type: string;
  fromText(text: string): T;
  fromJson(value: unknown): T;
}

/** A value as quoted in a message: JSON, cut short (options never hold patient data). */
export function quoted(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

function jsonString(value: unknown): string {
  if (typeof value !== 'string') throw new Problem(`must be a JSON string, got ${quoted(value)}`);
  return value;
}

/** A non-empty string without control characters, optionally matching `pattern`. */
export function text(what = 'non-empty text', pattern?: RegExp): ValueKind<string> {
  const check = (s: string): string => {
    if (s.length === 0) throw new Problem('must not be empty');
    // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters
    if (/[\u0000-\u001f\u007f]/.test(s)) throw new Problem('must not contain control characters');
    if (pattern !== undefined && !pattern.test(s)) throw new Problem(`must be ${what}`);
    return s;
  };
  return { type: what, fromText: check, fromJson: (v) => check(jsonString(v)) };
}

/** A secret string (no whitespace, at least `min` characters), never quoted in a message. */
export function secret(min: number): ValueKind<string> {
  const check = (s: string): string => {
    if (s.length < min || /\s/.test(s)) {
      throw new Problem(`must be at least ${min} characters without spaces (value not shown)`);
    }
    return s;
  };
  return {
    type: `secret, ${min}+ characters`,
    fromText: check,
    fromJson: (v) => {
      if (typeof v !== 'string') throw new Problem('must be a JSON string (value not shown)');
      return check(v);
    },
  };
}

/** A safe integer in [min, max]. */
export function integer(min: number, max = Number.MAX_SAFE_INTEGER): ValueKind<number> {
  const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`;
  const check = (n: number, shown: unknown): number => {
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new Problem(`must be an integer ${range}, got ${quoted(shown)}`);
    }
    return n;
  };
  return {
    type: max === Number.MAX_SAFE_INTEGER ? `integer >= ${min}` : `integer ${min}-${max}`,
    fromText: (s) => check(/^[0-9]+$/.test(s.trim()) ? Number(s.trim()) : Number.NaN, s),
    fromJson: (v) => check(typeof v === 'number' ? v : Number.NaN, v),
  };
}

const TRUE = ['true', '1', 'yes', 'on'];
const FALSE = ['false', '0', 'no', 'off'];

/** true/false (also 1/0, yes/no, on/off in text). */
export function boolean(): ValueKind<boolean> {
  return {
    type: 'boolean',
    fromText: (s) => {
      const t = s.trim().toLowerCase();
      if (TRUE.includes(t)) return true;
      if (FALSE.includes(t)) return false;
      throw new Problem(`must be true or false, got ${quoted(s)}`);
    },
    fromJson: (v) => {
      if (typeof v !== 'boolean') throw new Problem(`must be true or false, got ${quoted(v)}`);
      return v;
    },
  };
}

/** One of `values`. */
export function oneOf<const V extends string>(values: readonly V[]): ValueKind<V> {
  const check = (s: string): V => {
    if (!(values as readonly string[]).includes(s)) {
      throw new Problem(`must be one of ${values.join(', ')}, got ${quoted(s)}`);
    }
    return s as V;
  };
  return { type: values.join(' | '), fromText: check, fromJson: (v) => check(jsonString(v)) };
}

/**
 * An absolute URL with one of `protocols`. With `redact`, the value is never quoted (a Redis URL
 * may carry a password).
 */
export function url(protocols: readonly string[], redact = false): ValueKind<string> {
  const names = protocols.map((p) => `${p}//`).join(' or ');
  const check = (s: string): string => {
    let u: URL;
    try {
      u = new URL(s);
    } catch {
      throw new Problem(`must be a URL (${names}...)${redact ? '' : `, got ${quoted(s)}`}`);
    }
    if (!protocols.includes(u.protocol)) throw new Problem(`must start with ${names}`);
    return s;
  };
  return {
    type: `${protocols.map((p) => p.replace(/:$/, '')).join('/')} URL`,
    fromText: check,
    fromJson: (v) => {
      if (typeof v !== 'string') throw new Problem('must be a JSON string holding a URL');
      return check(v);
    },
  };
}

/** The network's sidecars: member index -> http(s) base URL (trailing slashes dropped). */
export type Directory = ReadonlyMap<number, string>;

function directoryOf(value: unknown): Directory {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Problem('must be a JSON object: { "<member index>": "<base URL>" }');
  }
  const out = new Map<number, string>();
  for (const [k, u] of Object.entries(value)) {
    if (!/^(?:0|[1-9][0-9]{0,5})$/.test(k)) {
      throw new Problem(`has key ${quoted(k)}, which is not a member index`);
    }
    let ok = false;
    try {
      const parsed = new URL(String(u));
      ok = typeof u === 'string' && (parsed.protocol === 'http:' || parsed.protocol === 'https:');
    } catch {}
    if (!ok) throw new Problem(`gives member ${k} a URL that is not http(s)`);
    out.set(Number(k), (u as string).replace(/\/+$/, ''));
  }
  return out;
}

/** The directory: JSON text in the environment or a flag, an object (or that text) in the file. */
export function directory(): ValueKind<Directory> {
  const fromText = (s: string): Directory => {
    let value: unknown;
    try {
      value = JSON.parse(s);
    } catch {
      throw new Problem('is not valid JSON (expected { "<member index>": "<base URL>" })');
    }
    return directoryOf(value);
  };
  return {
    type: 'JSON object: member index -> URL',
    fromText,
    fromJson: (v) => (typeof v === 'string' ? fromText(v) : directoryOf(v)),
  };
}
