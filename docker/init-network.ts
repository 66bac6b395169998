/**
 * The compose file's `init` service: makes the shared network folder once (the genesis ceremony of
 * a demo network whose institutions all run on one Docker host), and does nothing on later runs.
 *
 *   node docker/init-network.ts        (configured by environment only)
 *
 * It makes the network with src/node/localnet.ts (keys, keyblock 1 signed by every member, the
 * genesis file, the peers file with each member's signed peer binding, one node config per
 * institution), then adapts it to containers:
 *   - each key file is sealed again under SPCHAIN_PASSPHRASE_<i> (scrypt at the default cost), and
 *     the generated passphrase files are removed: the configs name `passphraseEnv:
 *     SPCHAIN_PASSPHRASE`, which each sidecar gets from its own environment;
 *   - the peers file lists each institution at its SPCHAIN_PEERS host:port (a DNS name is /dns4),
 *     and each config listens on SPCHAIN_P2P_LISTEN_HOST at its own port (peer bindings sign the
 *     peer id, not the address, so they stay valid);
 *   - each config's node data goes to SPCHAIN_NODE_DATA_DIR (an absolute path in the institution's
 *     own data volume), since the network folder is mounted read-only in the sidecars.
 *
 * Environment (a wrong or missing value stops it with a message naming the variable):
 *   SPCHAIN_NETWORK_DIR      where the network folder goes (the shared volume), required
 *   SPCHAIN_INSTITUTIONS     how many institutions, 1 to 64 (default 4)
 *   SPCHAIN_PEERS            host:port of each institution's libp2p listener, comma-separated
 *   SPCHAIN_P2P_LISTEN_HOST  the IP each node listens on (default 0.0.0.0)
 *   SPCHAIN_NODE_DATA_DIR    absolute path of each node's data directory, required
 *   SPCHAIN_PASSPHRASE_<i>   institution i's key file passphrase (at least 12 characters)
 *
 * Idempotent and safe to rerun: genesis.json is written last, so a folder that has one is complete
 * and is left as it is (after checking it holds as many institutions as asked); a folder without
 * one holds a half-made attempt, which is cleared and made again. Exit codes: 0 made or already
 * there, 2 bad environment, 1 anything else. Prints no secret.
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { parseGenesisFile } from '../src/node/genesis-file.ts';
import { openInstitutionKeys, sealInstitutionKeys } from '../src/node/keys.ts';
import { createLocalnet } from '../src/node/localnet.ts';
import { type PeerEntryJson, peersFromJson, peersToJson } from '../src/p2p/index.ts';

export const PASSPHRASE_ENV = 'SPCHAIN_PASSPHRASE';
export const MIN_PASSPHRASE_LENGTH = 12;

export interface InitOpts {
  readonly dir: string;
  readonly institutions: number;
  readonly peers: readonly { readonly host: string; readonly port: number }[];
  readonly listenHost: string;
  readonly nodeDataDir: string;
  /** Institution i's passphrase at index i. */
  readonly passphrases: readonly string[];
}

/** A bad environment variable: the message names it and never repeats a secret value. */
export class InitEnvError extends Error {
  readonly variable: string;
  constructor(variable: string, problem: string) {
    super(`${variable} ${problem}`);
    this.name = 'InitEnvError';
    this.variable = variable;
  }
}

const IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
const HOSTNAME =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*$/;

function required(env: Readonly<Record<string, string | undefined>>, name: string): string {
  const v = env[name]?.trim();
  if (v === undefined || v === '') throw new InitEnvError(name, 'is required');
  return v;
}

function parsePeer(text: string, i: number): { host: string; port: number } {
  const m = /^([^:]+):(\d{1,5})$/.exec(text.trim());
  const where = `SPCHAIN_PEERS entry ${i}`;
  if (m === null) throw new InitEnvError(where, 'must be host:port, like sidecar-0:4001');
  const host = m[1]!;
  const port = Number(m[2]);
  if (!IPV4.test(host) && !HOSTNAME.test(host)) {
    throw new InitEnvError(where, 'has a host that is neither an IPv4 address nor a DNS name');
  }
  if (port < 1 || port > 65535) throw new InitEnvError(where, 'has a port outside 1-65535');
  return { host, port };
}

/** Reads and checks the init service's environment. */
export function readInitEnv(env: Readonly<Record<string, string | undefined>>): InitOpts {
  const dir = required(env, 'SPCHAIN_NETWORK_DIR');
  const count = env.SPCHAIN_INSTITUTIONS?.trim() || '4';
  const institutions = Number(count);
  if (!/^\d+$/.test(count) || institutions < 1 || institutions > 64) {
    throw new InitEnvError('SPCHAIN_INSTITUTIONS', 'must be an integer from 1 to 64');
  }
  const peers = required(env, 'SPCHAIN_PEERS').split(',').map(parsePeer);
  if (peers.length !== institutions) {
    throw new InitEnvError(
      'SPCHAIN_PEERS',
      `lists ${peers.length} host:port entries; SPCHAIN_INSTITUTIONS is ${institutions}`,
    );
  }
  const seen = new Set(peers.map((p) => `${p.host}:${p.port}`));
  if (seen.size !== peers.length) throw new InitEnvError('SPCHAIN_PEERS', 'lists an entry twice');
  const listenHost = env.SPCHAIN_P2P_LISTEN_HOST?.trim() || '0.0.0.0';
  if (!IPV4.test(listenHost)) {
    throw new InitEnvError('SPCHAIN_P2P_LISTEN_HOST', 'must be an IPv4 address, like 0.0.0.0');
  }
  const nodeDataDir = required(env, 'SPCHAIN_NODE_DATA_DIR');
  if (!isAbsolute(nodeDataDir)) {
    throw new InitEnvError('SPCHAIN_NODE_DATA_DIR', 'must be an absolute path');
  }
  const passphrases = peers.map((_, i) => {
    const name = `${PASSPHRASE_ENV}_${i}`;
    const p = env[name] ?? '';
    if (p.length < MIN_PASSPHRASE_LENGTH) {
      throw new InitEnvError(name, `must be set, at least ${MIN_PASSPHRASE_LENGTH} characters`);
    }
    return p;
  });
  return { dir, institutions, peers, listenHost, nodeDataDir, passphrases };
}

/** The multiaddr other institutions dial for `peer`. */
export function peerMultiaddr(peer: { host: string; port: number }): string {
  return `/${IPV4.test(peer.host) ? 'ip4' : 'dns4'}/${peer.host}/tcp/${peer.port}`;
}

const instDirs = async (dir: string) =>
  (await readdir(dir)).filter((d) => /^inst-\d+$/.test(d)).sort();

/**
 * Makes the network folder unless it is there already. Returns 'made' or 'exists'; throws on a
 * folder holding a different number of institutions.
 */
export async function initNetwork(o: InitOpts): Promise<'made' | 'exists'> {
  await mkdir(o.dir, { recursive: true });
  if (existsSync(join(o.dir, 'genesis.json'))) {
    const found = (await instDirs(o.dir)).length;
    if (found !== o.institutions) {
      throw new Error(
        `${o.dir} holds a network of ${found} institutions, not ${o.institutions}; empty the network volume to make a new one`,
      );
    }
    return 'exists';
  }
  // A half-made attempt (no genesis.json): clear it. The folder itself may be a mount point.
  for (const entry of await readdir(o.dir)) {
    await rm(join(o.dir, entry), { recursive: true, force: true });
  }
  const tmp = join(o.dir, '.making');
  const net = await createLocalnet({
    institutions: o.institutions,
    dir: tmp,
    ports: o.peers.map((p) => p.port),
    patientsPerInstitution: 0,
    load: null,
  });
  const genesis = parseGenesisFile(await readFile(net.genesisPath, 'utf8'), net.genesisPath);

  const peers = peersFromJson(JSON.parse(await readFile(net.peersPath, 'utf8')));
  const listed: PeerEntryJson[] = peersToJson(
    peers.map((p) => ({ ...p, multiaddr: peerMultiaddr(o.peers[p.index]!) })),
  );
  await writeFile(net.peersPath, `${JSON.stringify(listed, null, 2)}\n`);

  // Each institution's key file and config; scrypt runs off the event loop, so all at once.
  const adapt = async (i: number): Promise<void> => {
    const inst = join(tmp, `inst-${i}`);
    const keyPath = join(inst, 'institution.key.json');
    const generated = (await readFile(join(inst, 'passphrase'), 'utf8')).replace(/\r?\n$/, '');
    const keys = await openInstitutionKeys(
      await readFile(keyPath, 'utf8'),
      generated,
      genesis.genesis,
      i,
      keyPath,
    );
    const sealed = await sealInstitutionKeys({
      keys,
      passphrase: o.passphrases[i]!,
      label: genesis.genesis.members[i]!.name,
    });
    await writeFile(keyPath, sealed, { mode: 0o600 });
    await rm(join(inst, 'passphrase'));
    const configPath = join(inst, 'config.json');
    const { passphraseFile: _, ...config } = JSON.parse(await readFile(configPath, 'utf8'));
    const adapted = {
      ...config,
      passphraseEnv: PASSPHRASE_ENV,
      dataDir: o.nodeDataDir,
      listen: `/ip4/${o.listenHost}/tcp/${o.peers[i]!.port}`,
    };
    await writeFile(configPath, `${JSON.stringify(adapted, null, 2)}\n`);
  };
  await Promise.all(Array.from({ length: o.institutions }, (_, i) => adapt(i)));
  for (const d of await instDirs(tmp)) await rename(join(tmp, d), join(o.dir, d));
  await rename(net.peersPath, join(o.dir, 'peers.json'));
  // Last: its presence says the folder is complete.
  await rename(net.genesisPath, join(o.dir, 'genesis.json'));
  await rm(tmp, { recursive: true, force: true });
  return 'made';
}

async function main(): Promise<void> {
  let opts: InitOpts;
  try {
    opts = readInitEnv(process.env);
  } catch (err) {
    process.stderr.write(`init-network: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const outcome = await initNetwork(opts);
  process.stdout.write(
    `${JSON.stringify({
      time: Date.now(),
      source: 'init-network',
      event: outcome,
      dir: opts.dir,
      institutions: opts.institutions,
    })}\n`,
  );
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    const e = err as Error & { code?: string };
    process.stderr.write(`init-network: ${e.code ? `${e.code}: ` : ''}${e.message}\n`);
    process.exit(1);
  });
}
