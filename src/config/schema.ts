/**
 * The sidecar's configuration schema, as data: every option `npm start` (src/main.ts) takes, with
 * its environment variable, its flag, its kind of value (values.ts: checked on load), its default
 * and what it does. load.ts reads options from flags, the environment and a JSON file with this
 * table; docs.ts renders it as the README's configuration table and the `--help` text, so the
 * three cannot drift apart.
 *
 * The defaults are the ones src/http/sidecar.ts (`defaultSidecarOpts`) and src/http/server.ts
 * (`defaultHttpOpts`) use; test/config/schema.test.ts checks that they agree. Secrets (the EHR
 * token, a Redis URL that may carry a password) have no flag: command lines are visible to every
 * user of the machine.
 */
import {
  boolean,
  type Directory,
  directory,
  integer,
  oneOf,
  secret,
  text,
  url,
  type ValueKind,
} from './values.ts';

export interface OptionSpec<T> {
  /** The environment variable. */
  readonly env: string;
  /** The command-line flag without its dashes; null: none (secrets). */
  readonly flag: string | null;
  readonly kind: ValueKind<T>;
  /** undefined: unset unless given (the sidecar then does what `defaultText` says). */
  readonly default: T | undefined;
  /** The default as the documentation shows it. */
  readonly defaultText: string;
  readonly description: string;
  /** A path: relative values in the configuration file are relative to the file's directory. */
  readonly path?: boolean;
}

type WithDefault<T> = OptionSpec<T> & { readonly default: T };
type Optional<T> = OptionSpec<T> & { readonly default: undefined };

function withDefault<T>(o: Omit<WithDefault<T>, 'defaultText'> & { defaultText?: string }) {
  return { ...o, defaultText: o.defaultText ?? String(o.default) } as WithDefault<T>;
}
const optional = <T>(o: Omit<Optional<T>, 'default'>): Optional<T> => ({
  ...o,
  default: undefined,
});

/** pino's levels. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

const PATH = text('a path');

/** Every option of the sidecar, in the order the documentation lists them. */
export const SIDECAR_OPTIONS = {
  dataDir: withDefault({
    env: 'SPCHAIN_DATA_DIR',
    flag: 'data-dir',
    kind: PATH,
    default: './data',
    path: true,
    description:
      'Everything the sidecar keeps: the generated network, keys, LevelDBs, the EHR token.',
  }),
  host: withDefault({
    env: 'SPCHAIN_HOST',
    flag: 'host',
    kind: text('a host name or IP address', /^[A-Za-z0-9._:%-]{1,253}$/),
    default: '127.0.0.1',
    description: 'The address the HTTP server listens on (0.0.0.0: every interface).',
  }),
  port: withDefault({
    env: 'SPCHAIN_PORT',
    flag: 'port',
    kind: integer(0, 65535),
    default: 8080,
    description: 'The HTTP port; 0 takes any free port.',
  }),
  nodeConfig: optional({
    env: 'SPCHAIN_NODE_CONFIG',
    flag: 'node-config',
    kind: PATH,
    path: true,
    defaultText: 'unset: a one-institution network under the data directory',
    description:
      "Join an existing network as the institution this node config names (`src/node/config.ts`; its passphraseEnv is read from the sidecar's environment).",
  }),
  redisUrl: optional({
    env: 'REDIS_URL',
    flag: null,
    kind: url(['redis:', 'rediss:'], true),
    defaultText: "unset: the embedded queue in the sidecar's LevelDB",
    description: 'The tx queue on BullMQ on this Redis (no flag: it may hold a password).',
  }),
  ehrToken: optional({
    env: 'SPCHAIN_EHR_TOKEN',
    flag: null,
    kind: secret(32),
    defaultText: '`<data dir>/ehr-token`, made on first start',
    description:
      "INTERIM: the EHR's static bearer token (no flag: it is a secret; SMART Backend Services also work).",
  }),
  mappingFile: optional({
    env: 'SPCHAIN_MAPPING',
    flag: 'mapping',
    kind: PATH,
    path: true,
    defaultText: '`fhir-mappings/default.json`',
    description: 'The mapping file: which FHIR resources are records and how (`fhir-mappings/`).',
  }),
  baseUrl: optional({
    env: 'SPCHAIN_BASE_URL',
    flag: 'base-url',
    kind: url(['http:', 'https:']),
    defaultText: '`http://<host>:<port>/fhir`',
    description:
      'The FHIR base URL clients see (set it behind a proxy): the audience of SMART tokens.',
  }),
  bodyLimit: withDefault({
    env: 'SPCHAIN_BODY_LIMIT',
    flag: 'body-limit',
    kind: integer(1024),
    default: 32 * 1024 * 1024,
    defaultText: '33554432 (32 MiB)',
    description: 'The largest request body in bytes (413 beyond; Synthea bundles reach 4 MB).',
  }),
  logLevel: withDefault({
    env: 'SPCHAIN_LOG_LEVEL',
    flag: 'log-level',
    kind: oneOf(LOG_LEVELS),
    default: 'info',
    description: "Request logs: 'info' logs every request, 'warn' only problems, 'silent' none.",
  }),
  directory: optional({
    env: 'SPCHAIN_DIRECTORY',
    flag: 'directory',
    kind: directory(),
    defaultText: 'unset: no other sidecars known',
    description:
      'The network\'s sidecars for the patient portal: `{"<member index>": "<public base URL>"}`.',
  }),
  readyMinPeers: optional({
    env: 'SPCHAIN_READY_MIN_PEERS',
    flag: 'ready-min-peers',
    kind: integer(0),
    defaultText: '0 in a one-institution network, else 1',
    description: 'Connected members the node needs for `GET /health/ready` to answer ready.',
  }),
  guessLimitMax: withDefault({
    env: 'SPCHAIN_GUESS_LIMIT_MAX',
    flag: 'guess-limit-max',
    kind: integer(1),
    default: 300,
    description:
      'Calls per client address and window to the routes whose answer tells whether a guess was right (then 429).',
  }),
  guessLimitWindowMs: withDefault({
    env: 'SPCHAIN_GUESS_LIMIT_WINDOW_MS',
    flag: 'guess-limit-window-ms',
    kind: integer(1),
    default: 60_000,
    description: 'The window of that limit, in milliseconds.',
  }),
  metricsPublic: withDefault({
    env: 'SPCHAIN_METRICS_PUBLIC',
    flag: 'metrics-public',
    kind: boolean(),
    default: false,
    description:
      "true: `GET /metrics` answers without a token (only where the port is not reachable from the internet); false: it needs the EHR's token.",
  }),
} as const;

export type OptionKey = keyof typeof SIDECAR_OPTIONS;

type ValueOf<O> = O extends OptionSpec<infer T> ? T : never;

/** The options as loaded: those with a default always have a value, the others may be unset. */
export type SidecarConfig = {
  readonly [K in OptionKey]: (typeof SIDECAR_OPTIONS)[K] extends { readonly default: undefined }
    ? ValueOf<(typeof SIDECAR_OPTIONS)[K]> | undefined
    : ValueOf<(typeof SIDECAR_OPTIONS)[K]>;
};

/** The configuration file's own option: it is read from a flag or the environment, never a file. */
export const CONFIG_FILE_OPTION: Optional<string> = optional({
  env: 'SPCHAIN_CONFIG',
  flag: 'config',
  kind: PATH,
  defaultText: 'unset: no file',
  description:
    'A JSON file of options by the names in the first column; relative paths in it are relative to the file. Flags win over the environment, which wins over the file.',
});

export type { Directory };
