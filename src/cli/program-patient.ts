/**
 * The `patient` and `clients` groups of `spchain` (commander), made from the grammar of args.ts
 * (COMMANDS: which options each command takes; OPTIONS: their types and defaults), so that
 * `spchain patient grant ...` takes exactly the options `npm run cli -- patient grant ...` takes and
 * runs the same code (commands.ts runCommand). Two commands are only here: `patient keygen` and
 * `patient export` (patient-keys.ts).
 */
import { type Command, Option } from 'commander';
import {
  COMMANDS,
  OPTIONS,
  type OptionName,
  type Parsed,
  parsedFrom,
  type Values,
} from './args.ts';

/** What each command does, for `--help`. */
const SUMMARIES: Readonly<Record<string, string>> = {
  'patient register':
    "make the patient's keys (sealed in --key-file) and register them at this institution",
  'patient allow-upload': "the patient's upload grant for another institution, via the home",
  'patient grant': 'grant an institution access (signed Consent + kfrag) at every --holder',
  'patient revoke': "revoke a grant (the Consent's signed revocation) at every --holder",
  'patient records': "the patient's records at each --sidecar, decrypted here",
  'patient audit': 'who read or wrote what about the patient at each --sidecar',
  'patient consents': "the patient's grants each --sidecar holds, and their state",
  'patient institutions': "the network's institutions, reputation and consensus group",
  'patient link': 'a share link (and QR code) for a grant made before',
  'patient approve': "approve (or --decline) a SMART app's pending authorisation request",
  'clients add': 'register a SMART client (a client JSON file) in the data directory',
  'clients list': 'the SMART clients registered in the data directory',
};

/** Each option's help line and the value's name. */
const HELP: Readonly<Record<OptionName, readonly [string, string?]>> = {
  identifier: ["the patient's identifier, system|value", 'system|value'],
  'birth-date': ["the patient's birth date", 'YYYY-MM-DD'],
  'id-hash': ["the patient's idHash (instead of --identifier and --birth-date)", 'hex'],
  'key-file': ["the patient's key file", 'path'],
  sidecar: ['a sidecar base URL (repeatable where several are read)', 'URL'],
  'data-dir': ["a sidecar's data directory (network, EHR token, clients)", 'dir'],
  genesis: ["the network's genesis file", 'genesis.json'],
  wait: ['seconds to wait until pinned (0: do not wait)', 'seconds'],
  token: ['the EHR bearer token (default $SPCHAIN_EHR_TOKEN, else <data-dir>/ehr-token)', 'token'],
  'passphrase-env': ["the variable holding the key file's passphrase", 'NAME'],
  institution: ['an institution: member index or name', 'index|name'],
  home: ["the patient's home sidecar URL", 'URL'],
  until: ['end of the grant or link: a date or ISO time', 'date'],
  from: ['start of the grant: a date or ISO time', 'date'],
  'consent-id': ["the grant's Consent id", 'id'],
  holder: ['a sidecar holding the records (repeatable)', 'URL'],
  link: ['also print a share link for the grant'],
  issuer: ['the sidecar where the share link is redeemed', 'URL'],
  qr: ['also write the link as an SVG QR code to this file', 'file.svg'],
  out: ['write the decrypted records as JSON files (mode 0600) in this directory', 'dir'],
  request: ["the pending request's id", 'id'],
  decline: ['decline the request (nothing is signed)'],
  'client-file': ['the client JSON file', 'client.json'],
  replace: ['replace a client registered with the same id'],
};

const camel = (name: string) => name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** A commander option for an option of args.ts, with its default. */
function optionOf(name: OptionName): Option {
  const spec = OPTIONS[name] as { type: string; multiple?: boolean; default?: unknown };
  const [help, value] = HELP[name];
  const flags = spec.type === 'boolean' ? `--${name}` : `--${name} <${value ?? 'value'}>`;
  const opt = new Option(flags, help);
  if (spec.multiple) {
    const initial = spec.default as string[] | undefined;
    // Given values replace the default list rather than add to it.
    opt.argParser((v: string, prev: string[] | undefined) =>
      prev === undefined || prev === initial ? [v] : [...prev, v],
    );
  }
  if (spec.default !== undefined) opt.default(spec.default);
  return opt;
}

/** The values as parseArgs would give them, from commander's options. */
function valuesOf(command: string, opts: Record<string, unknown>): Values['values'] {
  const values: Record<string, unknown> = {};
  for (const name of COMMANDS[command]!) {
    const v = opts[camel(name)];
    if (v !== undefined) values[name] = v;
  }
  // Options the command does not take keep their defaults (runCommand reads --wait, --data-dir).
  for (const [name, spec] of Object.entries(OPTIONS)) {
    const d = (spec as { default?: unknown }).default;
    if (values[name] === undefined && d !== undefined) values[name] = d;
  }
  return values as Values['values'];
}

export function parsedOf(command: string, opts: Record<string, unknown>): Parsed {
  return parsedFrom(command, valuesOf(command, opts));
}

const PATIENT_HELP = `
The patient is named by --identifier and --birth-date, or by --id-hash; the network by --genesis,
or by a sidecar's --data-dir. The key file's passphrase comes from $SPCHAIN_PATIENT_PASSPHRASE (or
the variable --passphrase-env names). Output never shows the patient's identifier.`;

/** The options of `patient export` (patient-keys.ts exportPatientKeys takes them). */
interface ExportOpts {
  readonly keyFile: string;
  readonly passphraseEnv: string;
  readonly publicOut?: string;
  readonly reseal?: string;
  readonly newPassphraseEnv: string;
}

/** Sets the outcome of a command (false: done in part, exit 1). */
export type Done = (ok: boolean) => void;

/** Adds the `patient` and `clients` groups to `program`. */
export function addPatientCommands(program: Command, done: Done): void {
  const groups = new Map<string, Command>([
    ['patient', program.command('patient').description("a patient's keys, grants and records")],
    ['clients', program.command('clients').description('the SMART clients of a sidecar')],
  ]);
  const patient = groups.get('patient')!;
  patient
    .command('keygen')
    .description("make a patient's keys, sealed in a new key file (nothing is registered)")
    .requiredOption('--key-file <path>', 'the key file to make (must not exist)')
    .option(
      '--passphrase-env <NAME>',
      'the variable holding the passphrase',
      OPTIONS['passphrase-env'].default,
    )
    .action(async (o: { keyFile: string; passphraseEnv: string }) => {
      const { keygenPatient } = await import('./patient-keys.ts');
      await keygenPatient({ ...o, env: process.env, print: console.log });
      done(true);
    });
  for (const command of Object.keys(COMMANDS)) {
    const [groupName, name] = command.split(' ') as [string, string];
    const sub = groups
      .get(groupName)!
      .command(name)
      .description(SUMMARIES[command] ?? '');
    for (const option of COMMANDS[command]!) sub.addOption(optionOf(option));
    if (groupName === 'patient' && COMMANDS[command]!.includes('key-file')) {
      sub.addHelpText('after', PATIENT_HELP);
    }
    sub.action(async (opts: Record<string, unknown>) => {
      const { runCommand } = await import('./commands.ts');
      done(await runCommand(parsedOf(command, opts)));
    });
  }
  patient
    .command('export')
    .description(
      "a patient key file's public keys, or the key file re-sealed with a new passphrase",
    )
    .requiredOption('--key-file <path>', "the patient's key file")
    .option(
      '--passphrase-env <NAME>',
      'the variable holding its passphrase',
      OPTIONS['passphrase-env'].default,
    )
    .option('--public-out <file>', 'write the public keys (JSON) to this file instead of stdout')
    .option('--reseal <file>', 'write the key file re-sealed under a new passphrase to this file')
    .option(
      '--new-passphrase-env <NAME>',
      'the variable holding the new passphrase',
      'SPCHAIN_NEW_PATIENT_PASSPHRASE',
    )
    .action(async (o: ExportOpts) => {
      const { exportPatientKeys } = await import('./patient-keys.ts');
      await exportPatientKeys({ ...o, env: process.env, print: console.log });
      done(true);
    });
}
