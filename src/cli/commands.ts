/**
 * The commands of the patient and clients groups (the grammar is args.ts): one function taking a
 * parsed command line and doing it. Both entries use it: `src/cli/main.ts` (node:util parseArgs,
 * `npm run cli`) and `src/cli/spchain.ts` (commander, the `spchain` bin), so the two accept the
 * same options and behave alike. Returns false when the command was done only in part (exit 1);
 * throws UsageError for bad usage (exit 2) and Error for a failure (exit 1).
 */
import { readFile } from 'node:fs/promises';
import { decideSmartRequest } from './approve.ts';
import { type Parsed, UsageError } from './args.ts';
import { addClient, listClients } from './clients.ts';
import { DEFAULT_LINK_TTL_MS, makeLink } from './link.ts';
import { dataPaths, registerPatient } from './patient.ts';
import { listRecords, showAudit, showConsents, showInstitutions } from './records.ts';
import {
  allowUpload,
  grantAccess,
  openPatientKeys,
  parseWhen,
  patientIdHash,
  readGenesis,
  resolveMember,
  revokeAccess,
} from './share.ts';

const print = (line: string) => console.log(line);

/** Runs one command; false when it was done only in part (exit 1). */
export async function runCommand(p: Parsed): Promise<boolean> {
  const { command, values } = p;
  const waitSeconds = Number(values.wait);
  if (!Number.isInteger(waitSeconds) || waitSeconds < 0) {
    throw new UsageError('--wait must be seconds >= 0');
  }
  const paths = dataPaths(values['data-dir']);

  // Commands that need no patient keys.
  if (command === 'clients add') {
    await addClient({
      dataDir: values['data-dir'],
      clientFile: p.need('client-file'),
      replace: values.replace === true,
      print,
    });
    return true;
  }
  if (command === 'clients list') {
    await listClients({ dataDir: values['data-dir'], print });
    return true;
  }
  if (command === 'patient institutions') {
    await showInstitutions({ sidecar: p.oneSidecar(), print });
    return true;
  }
  if (command === 'patient approve' && values.decline === true) {
    await decideSmartRequest({ sidecar: p.oneSidecar(), request: p.need('request'), print });
    return true;
  }

  const passEnv = values['passphrase-env'];
  const passphrase = () => {
    const v = process.env[passEnv];
    if (!v) throw new Error(`set ${passEnv} to the patient's passphrase for the key file`);
    return v;
  };
  if (command === 'patient register') return register(p, passphrase, waitSeconds);

  // Usage first, then the key file and the network.
  const keyFile = p.need('key-file');
  const sidecar = command === 'patient approve' ? p.oneSidecar() : undefined;
  const request = command === 'patient approve' ? p.need('request') : undefined;
  const genesis = await readGenesis(values.genesis ?? paths.genesis);
  const keys = await openPatientKeys(keyFile, passphrase());
  const idHash = await patientIdHash({
    ...(values['id-hash'] === undefined ? {} : { idHash: values['id-hash'] }),
    ...(values.identifier === undefined ? {} : { identifier: values.identifier }),
    ...(values['birth-date'] === undefined ? {} : { birthDate: values['birth-date'] }),
    genesis,
  });
  const session = { chainId: genesis.chainId, idHash, keys };
  const holders = values.holder ?? [];

  switch (command) {
    case 'patient allow-upload': {
      const state = await allowUpload({
        genesis,
        keys,
        idHash,
        institution: await resolveMember(genesis, p.need('institution'), [p.need('home')], print),
        home: p.need('home'),
        waitSeconds,
        print,
      });
      return state === 'present' || waitSeconds === 0;
    }
    case 'patient grant': {
      const grantee = await resolveMember(genesis, p.need('institution'), holders, print);
      const until = p.need('until');
      if (values.link !== true && (values.issuer !== undefined || values.qr !== undefined)) {
        throw new UsageError('--issuer and --qr go with --link');
      }
      const start = values.from === undefined ? undefined : parseWhen(values.from, '--from', false);
      const end = parseWhen(until, '--until', true);
      const { consentId, deliveries } = await grantAccess({
        genesis,
        keys,
        idHash,
        grantee,
        ...(start === undefined ? {} : { start }),
        end,
        holders,
        ...(values['consent-id'] === undefined ? {} : { consentId: values['consent-id'] }),
        print,
      });
      print(`consent id: ${consentId} (revoke with: patient revoke --consent-id ${consentId} ...)`);
      const ok = deliveries.every((d) => d.ok);
      if (values.link === true && deliveries.some((d) => d.ok)) {
        await makeLink({
          genesis,
          keys,
          idHash,
          consentId,
          grantee,
          issuer: values.issuer ?? holders[0]!,
          exp: Math.min(end, Date.now() + DEFAULT_LINK_TTL_MS),
          ...(values.qr === undefined ? {} : { qr: values.qr }),
          print,
        });
      }
      return ok;
    }
    case 'patient revoke': {
      const out = await revokeAccess({
        genesis,
        keys,
        idHash,
        consentId: p.need('consent-id'),
        holders,
        print,
      });
      return out.every((d) => d.ok);
    }
    case 'patient records': {
      const { ok } = await listRecords({
        sidecars: values.sidecar,
        session,
        ...(values.out === undefined ? {} : { out: values.out }),
        print,
      });
      return ok;
    }
    case 'patient audit':
      return showAudit({ sidecars: values.sidecar, session, print });
    case 'patient consents':
      return showConsents({ sidecars: values.sidecar, session, print });
    case 'patient link': {
      const consentId = p.need('consent-id');
      const issuer = p.need('issuer');
      const grantee = await resolveMember(genesis, p.need('institution'), [issuer], print);
      const exp =
        values.until === undefined
          ? Date.now() + DEFAULT_LINK_TTL_MS
          : parseWhen(values.until, '--until', true);
      if (exp <= Date.now()) throw new Error('--until is in the past');
      await makeLink({
        genesis,
        keys,
        idHash,
        consentId,
        grantee,
        issuer,
        exp,
        ...(values.qr === undefined ? {} : { qr: values.qr }),
        print,
      });
      return true;
    }
    case 'patient approve':
      await decideSmartRequest({
        sidecar: sidecar!,
        request: request!,
        approve: { chainId: genesis.chainId, idHash, keys },
        print,
      });
      return true;
  }
  throw new UsageError('unknown command');
}

async function register(p: Parsed, passphrase: () => string, waitSeconds: number) {
  const { values } = p;
  const paths = dataPaths(values['data-dir']);
  const identifier = p.need('identifier');
  const birthDate = p.need('birth-date');
  const keyFile = p.need('key-file');
  const sidecar = p.oneSidecar();
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
    sidecar,
    token: token.trim(),
    genesisFile: paths.genesis,
    home: config.index,
    waitSeconds,
    print,
  });
  return true;
}
