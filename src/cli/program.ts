/**
 * The `spchain` command line (commander): every command, its options and `--help`, and the exit
 * codes scripts rely on: 0 done, 1 failed (the message says why, on stderr), 2 bad usage (an
 * unknown command or option, a missing or malformed one: commander's own errors are mapped to 2
 * through exitOverride). The work is done in the modules beside this one:
 *
 *   init       an institution's keys, and its node config for a network's genesis (init.ts)
 *   member     approve | submit an institution's admission to a running network (member.ts)
 *   start      the sidecar (src/main.ts, as `npm start` runs it), in this terminal
 *   peers      the institutions, reputation and consensus group a sidecar sees (status.ts)
 *   status     the anchoring of a record tx, or of a record's versions (status.ts)
 *   import     bulk import of FHIR Bundle files, with progress and a summary (import.ts)
 *   clients    add | list SMART clients (clients.ts)
 *   patient    keygen | register | allow-upload | grant | revoke | records | audit | consents |
 *              institutions | link | approve | export (program-patient.ts)
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { OPTIONS, UsageError } from './args.ts';
import { addPatientCommands } from './program-patient.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const MAIN = `${ROOT}src/main.ts`;
const DEFAULT_SIDECAR = 'http://127.0.0.1:8080';

export interface ProgramIo {
  readonly out: (line: string) => void;
  readonly err: (text: string) => void;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly stderrIsTty: boolean;
}

const defaultIo: ProgramIo = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (text) => process.stderr.write(text),
  env: process.env,
  stderrIsTty: process.stderr.isTTY === true,
};

function version(): string {
  try {
    return (JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function intOption(name: string, min: number, max: number) {
  return (v: string) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min || n > max) {
      throw new InvalidArgumentError(`--${name} must be an integer from ${min} to ${max}`);
    }
    return n;
  };
}

/** Runs src/main.ts with these arguments, this terminal's output and signals; its exit code. */
function startSidecar(args: string[]): Promise<number> {
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: 'inherit' });
  const forward = (signal: NodeJS.Signals) => () => child.kill(signal);
  const onInt = forward('SIGINT');
  const onTerm = forward('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      resolve(code ?? (signal === 'SIGINT' || signal === 'SIGTERM' ? 0 : 1));
    });
  });
}

export function buildProgram(io: ProgramIo, done: (ok: boolean) => void): Command {
  const program = new Command('spchain');
  program
    .description('SPChain FHIR sidecar: set up an institution, run it, import, and share records')
    .version(version())
    .exitOverride()
    .showHelpAfterError('(add --help for usage)')
    .configureOutput({ writeOut: (s) => io.out(s.replace(/\n$/, '')), writeErr: io.err });

  program
    .command('init')
    .description(
      "make an institution's keys, or (with --genesis) its node config to join a network",
    )
    .requiredOption('--dir <dir>', "the institution's directory")
    .option('--name <name>', "the institution's name (new keys)")
    .option('--genesis <genesis.json>', "the network's genesis file")
    .option('--peers <peers.json>', "the network's peers file (with --genesis)")
    .option('--key-file <path>', 'an existing institution key file, instead of new keys')
    .option('--passphrase-file <path>', "a file holding the key file's passphrase")
    .option('--passphrase-env <NAME>', 'a variable holding the passphrase (the config names it)')
    .option('--listen <multiaddr>', "this node's libp2p address (default: its peers entry)")
    .option('--force', 'replace an existing config.json')
    .option(
      '--index <n>',
      'for keys not in the genesis: ask the members to admit them at this (the next) index',
      intOption('index', 1, 1023),
    )
    .addHelpText(
      'after',
      '\nFirst run without --genesis: keys are made and member.json is written for the genesis\nceremony. Then run with --genesis and --peers: config.json is written and checked.\nJoining a running network instead: run with --genesis, --peers and --index; admission.json\nis written for the members to approve (spchain member approve) and submit.',
    )
    .action(async (o: Record<string, string | undefined>) => {
      const given = (k: string) => (o[k] === undefined ? {} : { [k]: o[k] });
      const { initInstitution } = await import('./init.ts');
      await initInstitution({
        dir: o.dir!,
        ...given('name'),
        ...given('genesis'),
        ...given('peers'),
        ...given('keyFile'),
        ...given('passphraseFile'),
        ...given('passphraseEnv'),
        ...given('listen'),
        force: (o.force as unknown) === true,
        ...(o.index === undefined ? {} : { index: o.index as unknown as number }),
        env: io.env,
        print: io.out,
      });
      done(true);
    });

  const member = program
    .command('member')
    .description('admit an institution to a running network (after spchain init --index)');
  for (const [name, what] of [
    ['approve', "add this member's approval to an admission request"],
    ['submit', "put an approved admission request in this member's node inbox"],
  ] as const) {
    member
      .command(name)
      .description(what)
      .requiredOption(
        '--admission <admission.json>',
        'the admission request (spchain init --index)',
      )
      .requiredOption('--node-config <config.json>', "this member's node config")
      .action(async (o: { admission: string; nodeConfig: string }) => {
        const m = await import('./member.ts');
        const run = name === 'approve' ? m.approveAdmissionFile : m.submitAdmissionFile;
        await run({ ...o, env: io.env, print: io.out });
        done(true);
      });
  }

  program
    .command('start')
    .description('run the sidecar (node, queue, FHIR API) until SIGINT or SIGTERM')
    .option(
      '--data-dir <dir>',
      "the sidecar's data directory (default $SPCHAIN_DATA_DIR or ./data)",
    )
    .option('--host <host>', 'the address to listen on (default 127.0.0.1)')
    .option('--port <port>', 'the HTTP port (default 8080)', intOption('port', 0, 65535))
    .option(
      '--node-config <config.json>',
      'join a network as the institution this config names (spchain init)',
    )
    .addHelpText(
      'after',
      '\nThe environment variables of `npm start` apply (README: configuration).',
    )
    .action(async (o: { dataDir?: string; host?: string; port?: number; nodeConfig?: string }) => {
      const args = [
        ...(o.dataDir === undefined ? [] : ['--data-dir', o.dataDir]),
        ...(o.host === undefined ? [] : ['--host', o.host]),
        ...(o.port === undefined ? [] : ['--port', String(o.port)]),
        ...(o.nodeConfig === undefined ? [] : ['--node-config', o.nodeConfig]),
      ];
      done((await startSidecar(args)) === 0);
    });

  program
    .command('peers')
    .description("the network's institutions: reputation, consensus group, sidecar URL")
    .option('--sidecar <URL>', 'a sidecar base URL', DEFAULT_SIDECAR)
    .option('--json', 'print the answer as JSON')
    .action(async (o: { sidecar: string; json?: boolean }) => {
      const { showPeers } = await import('./status.ts');
      await showPeers({ sidecar: o.sidecar, json: o.json === true, print: io.out });
      done(true);
    });

  const ehr = (c: Command) =>
    c
      .option('--sidecar <URL>', 'the sidecar base URL', DEFAULT_SIDECAR)
      .option(
        '--token <token>',
        'the EHR bearer token (default $SPCHAIN_EHR_TOKEN, else <data-dir>/ehr-token)',
      )
      .addOption(
        new Option('--data-dir <dir>', "the sidecar's data directory (for its token)").default(
          OPTIONS['data-dir'].default,
        ),
      );

  ehr(
    program
      .command('status')
      .argument('<target>', 'a record tx hash (64 hex digits), or a record as Type/id')
      .description("the anchoring of a record's tx (queued, mempool, pinned in which batch)"),
  )
    .option(
      '--wait <seconds>',
      'wait until pinned (exit 1 if not by then)',
      intOption('wait', 0, 86_400),
      0,
    )
    .option('--json', 'print the answer as JSON')
    .action(
      async (
        target: string,
        o: { sidecar: string; token?: string; dataDir: string; wait: number; json?: boolean },
      ) => {
        const { ehrTokenOf } = await import('./import.ts');
        const { showStatus } = await import('./status.ts');
        const token = await ehrTokenOf({ ...o, env: io.env });
        done(
          await showStatus({
            target,
            sidecar: o.sidecar,
            token,
            waitSeconds: o.wait,
            json: o.json === true,
            print: io.out,
          }),
        );
      },
    );

  ehr(
    program
      .command('import')
      .argument('<paths...>', 'FHIR Bundle JSON files, or directories of them')
      .description('post FHIR Bundle files to a sidecar, with progress and a summary'),
  )
    .option('--concurrency <n>', 'bundles posted at a time', intOption('concurrency', 1, 64), 4)
    .option('--results <file.json>', "write every file's outcome (status, resources, locations)")
    .addHelpText('after', '\nExit 0 when every bundle was imported, 1 when any failed.')
    .action(
      async (
        paths: string[],
        o: {
          sidecar: string;
          token?: string;
          dataDir: string;
          concurrency: number;
          results?: string;
        },
      ) => {
        const { ehrTokenOf, importBundles } = await import('./import.ts');
        const token = await ehrTokenOf({ ...o, env: io.env });
        const summary = await importBundles({
          paths,
          sidecar: o.sidecar,
          token,
          concurrency: o.concurrency,
          ...(o.results === undefined ? {} : { results: o.results }),
          tty: io.stderrIsTty,
          print: io.out,
          progress: io.err,
        });
        done(summary.failed === 0);
      },
    );

  addPatientCommands(program, done);
  return program;
}

/** Parses and runs one command line; the exit code. */
export async function runSpchain(
  argv: readonly string[],
  io: ProgramIo = defaultIo,
): Promise<number> {
  let ok = true;
  const program = buildProgram(io, (v) => {
    ok = v;
  });
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return ok ? 0 : 1;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander printed its message (or the help) already.
      return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? 0 : 2;
    }
    const message = (err as Error).message;
    if (err instanceof UsageError) {
      io.err(`spchain: ${message}\n(add --help for usage)\n`);
      return 2;
    }
    io.err(`spchain: ${message}\n`);
    return 1;
  }
}
