/**
 * The command line's grammar: the commands, the options each accepts, and the usage text shown on
 * bad usage. `parseCommand` checks the group, the command and that every option given belongs to
 * that command (node:util parseArgs, strict: unknown options and positionals are usage errors).
 */
import { parseArgs } from 'node:util';

export const USAGE = `usage: npm run cli -- patient register --identifier <system|value> --birth-date YYYY-MM-DD
         --key-file <path> [--sidecar http://127.0.0.1:8080] [--data-dir ./data] [--wait 120]
         [--token <token>] [--passphrase-env SPCHAIN_PATIENT_PASSPHRASE]
       npm run cli -- patient allow-upload --key-file <path> --institution <index|name>
         --home <sidecar URL> [--wait 120] PATIENT NETWORK
       npm run cli -- patient grant --key-file <path> --institution <index|name> --until <date>
         [--from <date>] [--consent-id <id>] --holder <URL> [--holder <URL> ...]
         [--link [--issuer <URL>] [--qr <file.svg>]] PATIENT NETWORK
       npm run cli -- patient revoke --key-file <path> --consent-id <id>
         --holder <URL> [--holder <URL> ...] PATIENT NETWORK
       npm run cli -- patient records --key-file <path> --sidecar <URL> [--sidecar <URL> ...]
         [--out <dir>] PATIENT NETWORK
       npm run cli -- patient audit --key-file <path> --sidecar <URL> [--sidecar <URL> ...]
         PATIENT NETWORK
       npm run cli -- patient consents --key-file <path> --sidecar <URL> [--sidecar <URL> ...]
         PATIENT NETWORK
       npm run cli -- patient institutions --sidecar <URL>
       npm run cli -- patient link --key-file <path> --consent-id <id> --institution <index|name>
         --issuer <URL> [--until <date>] [--qr <file.svg>] PATIENT NETWORK
       npm run cli -- patient approve --key-file <path> --request <id> --sidecar <URL>
         [--decline] PATIENT NETWORK
       npm run cli -- clients add --client-file <client.json> [--replace] [--data-dir ./data]
       npm run cli -- clients list [--data-dir ./data]
  PATIENT: --identifier <system|value> --birth-date YYYY-MM-DD, or --id-hash <hex>
  NETWORK: --genesis <genesis.json>, or --data-dir <a sidecar's data directory>`;

export class UsageError extends Error {}

export const OPTIONS = {
  identifier: { type: 'string' },
  'birth-date': { type: 'string' },
  'id-hash': { type: 'string' },
  'key-file': { type: 'string' },
  sidecar: { type: 'string', multiple: true, default: ['http://127.0.0.1:8080'] as string[] },
  'data-dir': { type: 'string', default: process.env.SPCHAIN_DATA_DIR ?? './data' },
  genesis: { type: 'string' },
  wait: { type: 'string', default: '120' },
  token: { type: 'string' },
  'passphrase-env': { type: 'string', default: 'SPCHAIN_PATIENT_PASSPHRASE' },
  institution: { type: 'string' },
  home: { type: 'string' },
  until: { type: 'string' },
  from: { type: 'string' },
  'consent-id': { type: 'string' },
  holder: { type: 'string', multiple: true },
  link: { type: 'boolean' },
  issuer: { type: 'string' },
  qr: { type: 'string' },
  out: { type: 'string' },
  request: { type: 'string' },
  decline: { type: 'boolean' },
  'client-file': { type: 'string' },
  replace: { type: 'boolean' },
} as const;

export type OptionName = keyof typeof OPTIONS;

/** The options naming the patient, their key file and the network. */
const PATIENT_OPTIONS: readonly OptionName[] = [
  'identifier',
  'birth-date',
  'id-hash',
  'key-file',
  'data-dir',
  'genesis',
  'passphrase-env',
];

/** Every command, `group command`, with the options it accepts. */
export const COMMANDS: Readonly<Record<string, readonly OptionName[]>> = {
  'patient register': [
    'identifier',
    'birth-date',
    'key-file',
    'sidecar',
    'data-dir',
    'wait',
    'token',
    'passphrase-env',
  ],
  'patient allow-upload': [...PATIENT_OPTIONS, 'institution', 'home', 'wait'],
  'patient grant': [
    ...PATIENT_OPTIONS,
    'institution',
    'until',
    'from',
    'consent-id',
    'holder',
    'link',
    'issuer',
    'qr',
  ],
  'patient revoke': [...PATIENT_OPTIONS, 'consent-id', 'holder'],
  'patient records': [...PATIENT_OPTIONS, 'sidecar', 'out'],
  'patient audit': [...PATIENT_OPTIONS, 'sidecar'],
  'patient consents': [...PATIENT_OPTIONS, 'sidecar'],
  'patient institutions': ['sidecar'],
  'patient link': [...PATIENT_OPTIONS, 'consent-id', 'institution', 'issuer', 'until', 'qr'],
  'patient approve': [...PATIENT_OPTIONS, 'request', 'sidecar', 'decline'],
  'clients add': ['data-dir', 'client-file', 'replace'],
  'clients list': ['data-dir'],
};

export type Values = ReturnType<typeof parseValues>;

function parseValues(args: string[]) {
  return parseArgs({ args, options: OPTIONS, strict: true, tokens: true });
}

export interface Parsed {
  /** `group command`, a key of COMMANDS. */
  readonly command: string;
  readonly values: Values['values'];
  /** The value of a string option that must be given (a UsageError otherwise). */
  need(name: OptionName): string;
  /** The one --sidecar (a UsageError when several are given). */
  oneSidecar(): string;
}

export function parseCommand(argv: readonly string[]): Parsed {
  const [group, name, ...rest] = argv;
  const command = `${group} ${name}`;
  const allowed = COMMANDS[command];
  if (allowed === undefined) throw new UsageError('unknown command');
  const { values, tokens } = parseValues(rest);
  for (const t of tokens) {
    if (t.kind === 'option' && !allowed.includes(t.name as OptionName)) {
      throw new UsageError(`--${t.name} is not an option of ${command}`);
    }
  }
  return parsedFrom(command, values);
}

/** The Parsed view of a command's option values (from parseArgs here, or from commander). */
export function parsedFrom(command: string, values: Values['values']): Parsed {
  return {
    command,
    values,
    need(option) {
      const v = values[option];
      if (typeof v !== 'string' || v === '') throw new UsageError(`--${option} is required`);
      return v;
    },
    oneSidecar() {
      const list = values.sidecar;
      if (list.length !== 1) throw new UsageError(`${command} takes one --sidecar`);
      return list[0]!;
    },
  };
}
