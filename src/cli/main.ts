/**
 * `npm run cli -- <command>`: the sidecar's command line for what the patient portal (issue 6)
 * will also do. Commands:
 *
 *   patient register --identifier <system|value> --birth-date YYYY-MM-DD --key-file <path>
 *     [--sidecar http://127.0.0.1:8080] [--data-dir ./data] [--wait 120]
 *     The EHR token from --token, $SPCHAIN_EHR_TOKEN or <data>/ehr-token.
 *
 *   patient allow-upload --key-file <path> --institution <index|name> --home <URL> [--wait 120]
 *     The patient's upload grant for another institution, sent to their home institution's
 *     sidecar, which adds that institution's leaf: then it may write the patient's records.
 *
 *   patient grant --key-file <path> --institution <index|name> --until <date>
 *     [--from <date>] [--consent-id <id>] --holder <URL> [--holder <URL> ...]
 *     A grant (signed FHIR Consent + kfrag) for an institution, delivered to every holder of the
 *     patient's records (never to the grantee). Prints the Consent id.
 *
 *   patient revoke --key-file <path> --consent-id <id> --holder <URL> [--holder <URL> ...]
 *
 *   The patient is named by --identifier and --birth-date (the idHash is computed here), or by
 *   --id-hash; the network by --genesis <file> or the sidecar's --data-dir. The patient's
 *   passphrase comes from $SPCHAIN_PATIENT_PASSPHRASE (or the variable --passphrase-env names).
 *
 * Exit codes: 0 done, 1 failed (the message says why), 2 bad usage.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { dataPaths, registerPatient } from './patient.ts';
import {
  allowUpload,
  grantAccess,
  memberOf,
  openPatientKeys,
  parseWhen,
  patientIdHash,
  readGenesis,
  revokeAccess,
} from './share.ts';

const USAGE = `usage: npm run cli -- patient register --identifier <system|value> --birth-date YYYY-MM-DD
         --key-file <path> [--sidecar http://127.0.0.1:8080] [--data-dir ./data] [--wait 120]
         [--token <token>] [--passphrase-env SPCHAIN_PATIENT_PASSPHRASE]
       npm run cli -- patient allow-upload --key-file <path> --institution <index|name>
         --home <sidecar URL> [--wait 120] PATIENT NETWORK
       npm run cli -- patient grant --key-file <path> --institution <index|name> --until <date>
         [--from <date>] [--consent-id <id>] --holder <URL> [--holder <URL> ...] PATIENT NETWORK
       npm run cli -- patient revoke --key-file <path> --consent-id <id>
         --holder <URL> [--holder <URL> ...] PATIENT NETWORK
  PATIENT: --identifier <system|value> --birth-date YYYY-MM-DD, or --id-hash <hex>
  NETWORK: --genesis <genesis.json>, or --data-dir <a sidecar's data directory>`;

class UsageError extends Error {}

const OPTIONS = {
  identifier: { type: 'string' },
  'birth-date': { type: 'string' },
  'id-hash': { type: 'string' },
  'key-file': { type: 'string' },
  sidecar: { type: 'string', default: 'http://127.0.0.1:8080' },
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
} as const;

/** The options naming the patient, their key file and the network, for every share command. */
const SHARE_OPTIONS: readonly (keyof typeof OPTIONS)[] = [
  'identifier',
  'birth-date',
  'id-hash',
  'key-file',
  'data-dir',
  'genesis',
  'passphrase-env',
];

const COMMANDS: Record<string, readonly (keyof typeof OPTIONS)[]> = {
  register: [
    'identifier',
    'birth-date',
    'key-file',
    'sidecar',
    'data-dir',
    'wait',
    'token',
    'passphrase-env',
  ],
  'allow-upload': [...SHARE_OPTIONS, 'institution', 'home', 'wait'],
  grant: [...SHARE_OPTIONS, 'institution', 'until', 'from', 'consent-id', 'holder'],
  revoke: [...SHARE_OPTIONS, 'consent-id', 'holder'],
};

async function main(argv: string[]): Promise<boolean> {
  const [group, command, ...rest] = argv;
  const allowed = command === undefined ? undefined : COMMANDS[command];
  if (group !== 'patient' || allowed === undefined) throw new UsageError('unknown command');
  const { values, tokens } = parseArgs({
    args: rest,
    options: OPTIONS,
    strict: true,
    tokens: true,
  });
  for (const t of tokens) {
    if (t.kind === 'option' && !allowed.includes(t.name as keyof typeof OPTIONS)) {
      throw new UsageError(`--${t.name} is not an option of patient ${command}`);
    }
  }
  const need = (name: keyof typeof OPTIONS): string => {
    const v = values[name];
    if (typeof v !== 'string' || v === '') throw new UsageError(`--${name} is required`);
    return v;
  };
  const waitSeconds = Number(values.wait);
  if (!Number.isInteger(waitSeconds) || waitSeconds < 0) {
    throw new UsageError('--wait must be seconds >= 0');
  }
  const passEnv = values['passphrase-env'];
  const passphrase = () => {
    const p = process.env[passEnv];
    if (!p) throw new Error(`set ${passEnv} to the patient's passphrase for the key file`);
    return p;
  };
  const paths = dataPaths(values['data-dir']);
  const print = (line: string) => console.log(line);

  if (command === 'register') {
    const identifier = need('identifier');
    const birthDate = need('birth-date');
    const keyFile = need('key-file');
    const pass = passphrase();
    const token =
      values.token ??
      process.env.SPCHAIN_EHR_TOKEN ??
      (await readFile(paths.token, 'utf8').catch(() => {
        throw new Error(
          `no EHR token: pass --token, set SPCHAIN_EHR_TOKEN, or point --data-dir at the sidecar's data (${paths.token})`,
        );
      }));
    const config = JSON.parse(
      await readFile(paths.config, 'utf8').catch(() => {
        throw new Error(
          `no sidecar network in ${values['data-dir']} (start the sidecar first: npm start)`,
        );
      }),
    ) as { index?: unknown };
    if (typeof config.index !== 'number') throw new Error(`${paths.config}: index is missing`);
    await registerPatient({
      identifier,
      birthDate,
      keyFile,
      passphrase: pass,
      sidecar: values.sidecar,
      token: token.trim(),
      genesisFile: paths.genesis,
      home: config.index,
      waitSeconds,
      print,
    });
    return true;
  }

  const keyFile = need('key-file');
  const genesis = await readGenesis(values.genesis ?? paths.genesis);
  const keys = await openPatientKeys(keyFile, passphrase());
  const idHash = await patientIdHash({
    ...(values['id-hash'] === undefined ? {} : { idHash: values['id-hash'] }),
    ...(values.identifier === undefined ? {} : { identifier: values.identifier }),
    ...(values['birth-date'] === undefined ? {} : { birthDate: values['birth-date'] }),
    genesis,
  });
  const holders = values.holder ?? [];
  if (command === 'allow-upload') {
    const state = await allowUpload({
      genesis,
      keys,
      idHash,
      institution: memberOf(genesis, need('institution')),
      home: need('home'),
      waitSeconds,
      print,
    });
    return state === 'present' || waitSeconds === 0;
  }
  if (command === 'grant') {
    const start = values.from === undefined ? undefined : parseWhen(values.from, '--from', false);
    const { consentId, deliveries } = await grantAccess({
      genesis,
      keys,
      idHash,
      grantee: memberOf(genesis, need('institution')),
      ...(start === undefined ? {} : { start }),
      end: parseWhen(need('until'), '--until', true),
      holders,
      ...(values['consent-id'] === undefined ? {} : { consentId: values['consent-id'] }),
      print,
    });
    print(`consent id: ${consentId} (revoke with: patient revoke --consent-id ${consentId} ...)`);
    return deliveries.every((d) => d.ok);
  }
  const out = await revokeAccess({
    genesis,
    keys,
    idHash,
    consentId: need('consent-id'),
    holders,
    print,
  });
  return out.every((d) => d.ok);
}

main(process.argv.slice(2)).then(
  (ok) => process.exit(ok ? 0 : 1),
  (err: unknown) => {
    if (
      err instanceof UsageError ||
      (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')
    ) {
      console.error(`${(err as Error).message}\n${USAGE}`);
      process.exit(2);
    }
    console.error(`spchain cli: ${(err as Error).message}`);
    process.exit(1);
  },
);
