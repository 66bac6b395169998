/**
 * `spchain init`: an institution's directory, in two steps (a network's members are fixed by its
 * genesis file, so keys come before the genesis and the config after it):
 *
 * 1. without --genesis: the institution's keys (signing, chameleon, PRE, libp2p seed) are made and
 *    sealed in `<dir>/institution.key.json` (mode 0600), under the passphrase in $<--passphrase-env>
 *    or, when none is named, a random one written to `<dir>/passphrase` (mode 0600). The public
 *    part, `<dir>/member.json` (name, public keys, peer id), goes to the genesis ceremony.
 * 2. with --genesis and --peers: the keys (made in step 1, or an existing key file given with
 *    --key-file and its passphrase) are matched to their member of the genesis; the genesis and
 *    peers files are copied in; when the peers file has no valid entry for this member, this
 *    member's signed entry (at --listen) is added to the copy and written to `<dir>/peer.json` for
 *    the other institutions' peers files. `<dir>/config.json` (src/node/config.ts) is written and
 *    then loaded with readNodeConfig, so a directory that `init` accepts is one a node can start on.
 *    Keys that are no genesis member join a running network instead: with --index (the next free
 *    member index), `<dir>/admission.json` is written, the request signed with these keys
 *    (src/ledger/membership.ts), for the members to approve and submit (member.ts), and the config
 *    names it (its node starts from it until it has synced the keyblock admitting it).
 *
 *   <dir>/{institution.key.json, passphrase, member.json, genesis.json, peers.json, peer.json,
 *   admission.json, config.json, data/}
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { equalBytes, toHex } from '../crypto/bytes.ts';
import { openKeyFileAsync, parseKeyFile } from '../crypto/keyfile.ts';
import { systemRandom } from '../crypto/random.ts';
import { signAdmitRequest } from '../ledger/membership.ts';
import type { AdmitTx, Member } from '../ledger/types.ts';
import { formatAdmissionFile } from '../node/admission-file.ts';
import { readNodeConfig } from '../node/config.ts';
import { parseGenesisFile } from '../node/genesis-file.ts';
import { generateInstitutionKeys, openInstitutionKeys, sealInstitutionKeys } from '../node/keys.ts';
import {
  makePeerBinding,
  type PeerEntry,
  peerIdFromSeed,
  peersFromJson,
  peersToJson,
  verifyPeers,
} from '../p2p/index.ts';
import type { Print } from './share.ts';

type Env = Readonly<Record<string, string | undefined>>;

export interface InitOpts {
  readonly dir: string;
  /** The institution's name (step 1; a label in the key file and member.json). */
  readonly name?: string;
  readonly genesis?: string;
  readonly peers?: string;
  /** An existing institution key file to use instead of the directory's. */
  readonly keyFile?: string;
  /** A file holding the key file's passphrase (copied to <dir>/passphrase). */
  readonly passphraseFile?: string;
  /** A variable holding the passphrase; the config then names it instead of a file. */
  readonly passphraseEnv?: string;
  /** This node's libp2p listen address (default: its entry in the peers file). */
  readonly listen?: string;
  /** Replace an existing config.json. */
  readonly force?: boolean;
  /**
   * For keys that are not a genesis member: the index to ask the members to admit them at (the
   * next free one); an admission request is written for the members to approve.
   */
  readonly index?: number;
  readonly env: Env;
  readonly print: Print;
}

export interface InitResult {
  readonly keyFile: string;
  /** Step 2 only. */
  readonly config?: string;
  readonly index?: number;
}

const ENV_NAME = /^[A-Z_][A-Z0-9_]*$/;

export function institutionPaths(dir: string) {
  return {
    keyFile: join(dir, 'institution.key.json'),
    passphrase: join(dir, 'passphrase'),
    member: join(dir, 'member.json'),
    genesis: join(dir, 'genesis.json'),
    peers: join(dir, 'peers.json'),
    peer: join(dir, 'peer.json'),
    admission: join(dir, 'admission.json'),
    config: join(dir, 'config.json'),
    data: join(dir, 'data'),
  };
}

async function readText(path: string, what: string): Promise<string> {
  return readFile(path, 'utf8').catch(() => {
    throw new Error(`cannot read ${what} ${path}`);
  });
}

/** The passphrase as the options give it, and how the config will name it. */
async function passphraseOf(
  o: InitOpts,
  paths: ReturnType<typeof institutionPaths>,
): Promise<{ passphrase: string; source: 'env' | 'file' } | undefined> {
  if (o.passphraseEnv !== undefined) {
    if (!ENV_NAME.test(o.passphraseEnv)) {
      throw new Error('--passphrase-env must be a variable name like SPCHAIN_PASSPHRASE');
    }
    const v = o.env[o.passphraseEnv];
    if (v === undefined || v === '')
      throw new Error(`--passphrase-env names ${o.passphraseEnv}, unset`);
    return { passphrase: v, source: 'env' };
  }
  const file = o.passphraseFile ?? (existsSync(paths.passphrase) ? paths.passphrase : undefined);
  if (file === undefined) return undefined;
  const text = (await readText(file, 'the passphrase file')).replace(/\r?\n$/, '');
  if (text === '') throw new Error(`the passphrase file ${file} is empty`);
  return { passphrase: text, source: 'file' };
}

/** Step 1: new keys, sealed; member.json for the genesis ceremony. */
async function makeKeys(o: InitOpts, paths: ReturnType<typeof institutionPaths>): Promise<void> {
  if (o.name === undefined || !/^[\w .-]{1,64}$/.test(o.name)) {
    throw new Error('--name is required for new keys: 1-64 letters, digits, space, _ . -');
  }
  let pass = await passphraseOf(o, paths);
  if (pass === undefined) {
    const passphrase = toHex(systemRandom(24));
    await writeFile(paths.passphrase, `${passphrase}\n`, { mode: 0o600, flag: 'wx' });
    pass = { passphrase, source: 'file' };
    o.print(`passphrase made and written to ${paths.passphrase} (mode 0600)`);
  }
  const keys = generateInstitutionKeys(0);
  const sealed = await sealInstitutionKeys({ keys, passphrase: pass.passphrase, label: o.name });
  await writeFile(paths.keyFile, sealed, { mode: 0o600, flag: 'wx' });
  const member = {
    kind: 'spchain-member',
    name: o.name,
    signingKey: toHex(keys.signingKey),
    chameleonKey: toHex(keys.chameleonKey),
    preKey: toHex(keys.preKey),
    peerId: await peerIdFromSeed(keys.peerSeed),
  };
  await writeFile(paths.member, `${JSON.stringify(member, null, 2)}\n`);
  o.print(`keys made and sealed in ${paths.keyFile} (mode 0600)`);
  o.print(`public part for the genesis ceremony: ${paths.member}`);
}

/** The member index whose signing key is the key file's (or `admitAs`, for an admission). */
function memberIndex(
  genesis: ReturnType<typeof parseGenesisFile>['genesis'],
  keyText: string,
  source: string,
  admitAs: number | undefined,
): number {
  let signing: Uint8Array | undefined;
  try {
    signing = parseKeyFile(keyText).publicKeys.signing;
  } catch (err) {
    throw new Error(`${source} is not a key file: ${(err as Error).message}`);
  }
  const m = genesis.members.find((x) => signing !== undefined && equalBytes(x.signingKey, signing));
  if (m !== undefined) {
    if (admitAs !== undefined) {
      throw new Error(`the keys in ${source} are member ${m.index} already: drop --index`);
    }
    return m.index;
  }
  if (admitAs === undefined) {
    throw new Error(
      `the keys in ${source} are not a member of network ${genesis.chainId}: send member.json to the genesis ceremony, or pass --index <the next member index> to ask the members to admit them`,
    );
  }
  if (admitAs < genesis.members.length) {
    throw new Error(
      `--index ${admitAs} is a genesis member's; the next index is at least ${genesis.members.length}`,
    );
  }
  return admitAs;
}

/** Step 2: the config for the genesis, checked by loading it as the node would. */
async function joinNetwork(
  o: InitOpts,
  paths: ReturnType<typeof institutionPaths>,
): Promise<InitResult> {
  if (o.peers === undefined) throw new Error('--peers <peers.json> goes with --genesis');
  if (existsSync(paths.config) && o.force !== true) {
    throw new Error(`${paths.config} exists: pass --force to replace it`);
  }
  const genesisText = await readText(o.genesis!, 'the genesis file');
  const { genesis } = parseGenesisFile(genesisText, o.genesis!);
  const keySource = o.keyFile ?? paths.keyFile;
  const keyText = await readText(keySource, 'the key file');
  const index = memberIndex(genesis, keyText, keySource, o.index);
  const pass = await passphraseOf(o, paths);
  if (pass === undefined) {
    throw new Error('no passphrase: pass --passphrase-file or --passphrase-env for the key file');
  }
  const admitted = index >= genesis.members.length;
  const self: Member | undefined = admitted
    ? await newMember(keyText, pass.passphrase, index, o.name, keySource)
    : undefined;
  const known = self === undefined ? genesis : { ...genesis, members: [...genesis.members, self] };
  const keys = await openInstitutionKeys(keyText, pass.passphrase, known, index, keySource);

  let peers: PeerEntry[];
  try {
    peers = peersFromJson(JSON.parse(await readText(o.peers, 'the peers file')));
  } catch (err) {
    throw new Error(`${o.peers} is not a peers file: ${(err as Error).message}`);
  }
  const peerId = await peerIdFromSeed(keys.peerSeed);
  const own = verifyPeers(known, peers).byIndex.get(index);
  const listen = o.listen ?? own?.multiaddr.replace(/\/p2p\/[^/]+$/, '');
  if (listen === undefined) {
    throw new Error(`the peers file has no entry for member ${index}: pass --listen <multiaddr>`);
  }
  if (own === undefined || own.peerId !== peerId) {
    const entry: PeerEntry = {
      index,
      peerId,
      multiaddr: listen,
      binding: makePeerBinding(genesis.chainId, peerId, index, keys.signingSecret, systemRandom),
    };
    peers = [...peers.filter((p) => p.index !== index), entry];
    await writeFile(paths.peer, `${JSON.stringify(peersToJson([entry]), null, 2)}\n`);
    if (!admitted) {
      o.print(
        `this member's signed peers entry: ${paths.peer} (add it to the others' peers files)`,
      );
    }
  }

  if (keySource !== paths.keyFile) {
    if (existsSync(paths.keyFile)) throw new Error(`${paths.keyFile} exists: not overwritten`);
    await writeFile(paths.keyFile, keyText, { mode: 0o600 });
  }
  if (
    pass.source === 'file' &&
    resolve(o.passphraseFile ?? paths.passphrase) !== resolve(paths.passphrase)
  ) {
    await writeFile(paths.passphrase, `${pass.passphrase}\n`, { mode: 0o600 });
  }
  if (resolve(o.genesis!) !== resolve(paths.genesis)) await writeFile(paths.genesis, genesisText);
  await writeFile(paths.peers, `${JSON.stringify(peersToJson(peers), null, 2)}\n`);
  if (self !== undefined) {
    const entry = peers.find((p) => p.index === index)!;
    const peer = { peerId: entry.peerId, multiaddr: entry.multiaddr, binding: entry.binding };
    const tx: AdmitTx = {
      type: 'admit',
      member: self,
      peer,
      proof: signAdmitRequest(genesis.chainId, self, peer, keys.signingSecret, systemRandom),
      approvals: [],
    };
    await writeFile(paths.admission, formatAdmissionFile({ chainId: genesis.chainId, tx }));
    o.print(
      `admission request: ${paths.admission}; more than 2/3 of the members approve it (spchain member approve), then one submits it (spchain member submit)`,
    );
  }
  const config = {
    index,
    ...(self === undefined ? {} : { admissionFile: 'admission.json' }),
    genesisFile: 'genesis.json',
    peersFile: 'peers.json',
    keyFile: 'institution.key.json',
    ...(pass.source === 'env'
      ? { passphraseEnv: o.passphraseEnv }
      : { passphraseFile: 'passphrase' }),
    dataDir: 'data',
    listen,
  };
  await writeFile(paths.config, `${JSON.stringify(config, null, 2)}\n`);
  await mkdir(paths.data, { recursive: true, mode: 0o700 });
  const checked = await readNodeConfig(paths.config, o.env);
  const member = known.members.find((m) => m.index === index)!;
  o.print(
    `institution ${index} (${member.name}) of network ${genesis.chainId}: ${paths.config} is valid`,
  );
  o.print(`  peer id ${peerId}, listening on ${checked.listen}`);
  o.print(
    `start it with: spchain start --node-config ${paths.config} --data-dir ${join(o.dir, 'sidecar')}`,
  );
  return { keyFile: paths.keyFile, config: paths.config, index };
}

/** The Member an admission names: the key file's public keys at `index`, under `name`. */
async function newMember(
  keyText: string,
  passphrase: string,
  index: number,
  name: string | undefined,
  source: string,
): Promise<Member> {
  const contents = await openKeyFileAsync(keyText, passphrase).catch((err: Error) => {
    throw new Error(`${source}: ${err.message}`);
  });
  const label = name ?? contents.label;
  if (label === undefined || label === '') {
    throw new Error('--name is required: the name the members will know this institution by');
  }
  const pub = (k: 'signing' | 'chameleon' | 'pre') => {
    const v = contents.publicKeys[k];
    if (v === undefined) throw new Error(`${source}: public.${k} is missing`);
    return v;
  };
  return {
    index,
    name: label,
    signingKey: pub('signing'),
    chameleonKey: pub('chameleon'),
    preKey: pub('pre'),
  };
}

export async function initInstitution(o: InitOpts): Promise<InitResult> {
  const paths = institutionPaths(o.dir);
  await mkdir(o.dir, { recursive: true, mode: 0o700 });
  if (o.keyFile === undefined && !existsSync(paths.keyFile)) {
    await makeKeys(o, paths);
    if (o.genesis === undefined) {
      o.print(
        'next: when the network has its genesis and peers files, run spchain init again with --genesis and --peers',
      );
      return { keyFile: paths.keyFile };
    }
  } else if (o.genesis === undefined) {
    throw new Error(
      `${o.keyFile ?? paths.keyFile} holds keys already: pass --genesis and --peers to join`,
    );
  }
  return joinNetwork(o, paths);
}
