/**
 * Loads the sidecar's options (schema.ts) from the command line, the environment and a JSON
 * configuration file, with this precedence: flag > environment > file > default. Pure: the caller
 * (src/main.ts) finds the file's path with `configFilePath`, reads it, and hands its text in.
 *
 * Every value given is checked, also one that a higher source overrides: a wrong value anywhere
 * stops start-up with a ConfigError naming the flag, the variable or the file's key. An empty
 * environment variable counts as unset (compose files pass empty ones); an empty flag or file value
 * is refused. The file is one JSON object keyed by the schema's option names; an unknown key is
 * refused (a typo would otherwise be ignored), and relative paths in it are relative to the file.
 */
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError } from './errors.ts';
import {
  CONFIG_FILE_OPTION,
  type OptionKey,
  type OptionSpec,
  SIDECAR_OPTIONS,
  type SidecarConfig,
} from './schema.ts';
import { Problem } from './values.ts';

export type Env = Readonly<Record<string, string | undefined>>;

export interface ConfigInput {
  readonly env: Env;
  /** The command-line arguments after the script (process.argv.slice(2)). */
  readonly argv: readonly string[];
  /** The configuration file as the caller read it; absent: no file. */
  readonly file?: { readonly path: string; readonly text: string };
}

export type Source = 'flag' | 'env' | 'file' | 'default';

export interface LoadedConfig {
  readonly options: SidecarConfig;
  /** Where each option's value came from ('default' also for an unset option). */
  readonly sources: Readonly<Record<OptionKey, Source>>;
}

const KEYS = Object.keys(SIDECAR_OPTIONS) as OptionKey[];
const spec = (key: OptionKey) => SIDECAR_OPTIONS[key] as OptionSpec<unknown>;
const isBooleanFlag = (o: OptionSpec<unknown>) => o.kind.type === 'boolean';

type Flags = Readonly<Record<string, string | boolean | undefined>>;

/** The command line, checked: only the schema's flags, `--config` and `--help`; no positionals. */
export function parseArgv(argv: readonly string[]): { flags: Flags; help: boolean } {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {
    [CONFIG_FILE_OPTION.flag!]: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  };
  for (const key of KEYS) {
    const o = spec(key);
    if (o.flag !== null) options[o.flag] = { type: isBooleanFlag(o) ? 'boolean' : 'string' };
  }
  try {
    const { values } = parseArgs({
      args: [...argv],
      options,
      strict: true,
      allowPositionals: false,
      allowNegative: true,
    });
    return { flags: values, help: values.help === true };
  } catch (err) {
    const arg = /'(--?[^' ]*)/.exec((err as Error).message)?.[1] ?? 'the command line';
    throw new ConfigError(
      'BAD_ARGUMENT',
      '',
      arg,
      `is not accepted: ${(err as Error).message} (--help lists the options)`,
    );
  }
}

/** Whether the command line asks for help (checked before anything else is). */
export function wantsHelp(argv: readonly string[]): boolean {
  return argv.some((a) => a === '--help' || a === '-h');
}

/** The configuration file's path: `--config` or SPCHAIN_CONFIG; undefined: none. */
export function configFilePath(input: { env: Env; argv: readonly string[] }): string | undefined {
  const o = CONFIG_FILE_OPTION;
  const flag = parseArgv(input.argv).flags[o.flag!];
  if (typeof flag === 'string') return read(o, flag, `--${o.flag}`, 'fromText', 'config') as string;
  const env = input.env[o.env];
  if (env !== undefined && env !== '') return read(o, env, o.env, 'fromText', 'config') as string;
  return undefined;
}

function read(
  o: OptionSpec<unknown>,
  value: unknown,
  where: string,
  how: 'fromText' | 'fromJson',
  key: string,
): unknown {
  try {
    return how === 'fromText' ? o.kind.fromText(value as string) : o.kind.fromJson(value);
  } catch (err) {
    if (err instanceof Problem) throw new ConfigError('BAD_CONFIG', key, where, err.message);
    throw err;
  }
}

/** The file's options, checked: a JSON object of known keys with valid values. */
function readFile(file: { path: string; text: string }): Map<OptionKey, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(file.text);
  } catch (err) {
    throw new ConfigError(
      'BAD_CONFIG_FILE',
      '',
      file.path,
      `is not valid JSON: ${(err as Error).message}`,
    );
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ConfigError('BAD_CONFIG_FILE', '', file.path, 'must hold one JSON object of options');
  }
  const out = new Map<OptionKey, unknown>();
  for (const [key, value] of Object.entries(json)) {
    const where = `${file.path}: ${key.slice(0, 40)}`;
    if (!Object.hasOwn(SIDECAR_OPTIONS, key)) {
      const hint =
        key === CONFIG_FILE_OPTION.flag
          ? 'a configuration file cannot name another'
          : `the known ones: ${KEYS.join(', ')}`;
      throw new ConfigError('BAD_CONFIG_FILE', key, where, `is not a known option (${hint})`);
    }
    const o = spec(key as OptionKey);
    let v = read(o, value, where, 'fromJson', key);
    if (o.path && typeof v === 'string' && !isAbsolute(v)) v = resolve(dirname(file.path), v);
    out.set(key as OptionKey, v);
  }
  return out;
}

/** Every option, from the first source that gives it; every given value checked. */
export function loadConfig(input: ConfigInput): LoadedConfig {
  const { flags } = parseArgv(input.argv);
  const fromFile = input.file ? readFile(input.file) : new Map<OptionKey, unknown>();
  const options: Record<string, unknown> = {};
  const sources = {} as Record<OptionKey, Source>;
  for (const key of KEYS) {
    const o = spec(key);
    const flag = o.flag === null ? undefined : flags[o.flag];
    const fromFlag =
      flag === undefined
        ? undefined
        : typeof flag === 'boolean'
          ? flag
          : read(o, flag, `--${o.flag}`, 'fromText', key);
    const envText = input.env[o.env];
    const fromEnv =
      envText === undefined || envText === ''
        ? undefined
        : read(o, envText, o.env, 'fromText', key);
    if (fromFlag !== undefined) {
      options[key] = fromFlag;
      sources[key] = 'flag';
    } else if (fromEnv !== undefined) {
      options[key] = fromEnv;
      sources[key] = 'env';
    } else if (fromFile.has(key)) {
      options[key] = fromFile.get(key);
      sources[key] = 'file';
    } else {
      options[key] = o.default;
      sources[key] = 'default';
    }
  }
  return { options: options as SidecarConfig, sources };
}
