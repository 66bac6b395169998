/**
 * The sidecar configuration's one error type. A ConfigError names the option that is wrong
 * (`option`, the schema key) and where the wrong value came from (`where`: the flag `--port`,
 * the environment variable `SPCHAIN_PORT`, or the file and key `sidecar.json: port`), so an
 * operator can fix it from the message alone. Secrets (the EHR token, a Redis URL's password)
 * never appear in a message.
 */
export type ConfigErrorCode =
  /** A value is malformed or out of range (`detail.option`, `detail.where`). */
  | 'BAD_CONFIG'
  /** The configuration file is not JSON, not an object, or has a key the schema does not know. */
  | 'BAD_CONFIG_FILE'
  /** A command-line argument is not one of the known flags, or a flag lacks its value. */
  | 'BAD_ARGUMENT';

export class ConfigError extends Error {
  readonly code: ConfigErrorCode;
  /** The schema key of the option at fault; '' when the fault is not one option's. */
  readonly option: string;
  /** Where the value came from: `--flag`, `ENV_VAR`, or `file: key`. */
  readonly where: string;

  constructor(code: ConfigErrorCode, option: string, where: string, problem: string) {
    super(`${where} ${problem}`);
    this.name = 'ConfigError';
    this.code = code;
    this.option = option;
    this.where = where;
  }
}

export function isConfigError(err: unknown, code?: ConfigErrorCode): err is ConfigError {
  return err instanceof ConfigError && (code === undefined || err.code === code);
}
