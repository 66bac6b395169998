/**
 * A node's configuration: one JSON file per institution, whose paths are relative to the file's
 * own directory. Every field is checked on load, and a bad one is refused with a message naming it
 * (`config.json: consensus.timeoutProposeMs must be an integer in [1, ...]`).
 *
 *   { "index": 0,                              this institution's member index in the genesis
 *     "genesisFile": "../genesis.json",        the network's genesis file (genesis-file.ts)
 *     "peersFile": "../peers.json",            the peers list with bindings (src/p2p/peers.ts)
 *     "keyFile": "institution.key.json",       the institution's key file (keys.ts)
 *     "passphraseFile": "passphrase",          or "passphraseEnv": "SPCHAIN_PASSPHRASE"
 *     "dataDir": "data",                       LevelDB, signing record, outbox
 *     "listen": "/ip4/127.0.0.1/tcp/41000",
 *     "consensus": { ...ConsensusOpts },       optional, each field optional
 *     "sync": { ...SyncOpts },                 optional
 *     "replica": { "fairnessGraceMs", "maxBundlesPerInstitution", "maxBundlesTotal" },  optional
 *     "p2p": { "redialMinMs", "redialMaxMs", "requestTimeoutMs" },                       optional
 *     "load": { ...LoadOpts },                 optional: sign record txs at this rate
 *     "mining": { ...MiningOpts },             optional: keyblock mining (miner.ts)
 *     "statsIntervalMs": 1000,                 optional
 *     "faults": { ...FaultOpts } }             fault tests only: refused unless SPCHAIN_TEST_FAULTS=1
 */
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { multiaddr } from '@multiformats/multiaddr';
import { isCryptoError } from '../crypto/errors.ts';
import { MAX_MEMBERS } from '../ledger/membership.ts';
import { defaultReplicaOpts, type ReplicaOpts } from '../ledger/replica.ts';
import type { AdmitTx, InstitutionIndex } from '../ledger/types.ts';
import {
  defaultP2pLimits,
  type P2pLimits,
  type PeerEntry,
  peerIdFromSeed,
  peersFromJson,
  verifyPeers,
} from '../p2p/index.ts';
import { parseAdmissionFile } from './admission-file.ts';
import { type ConsensusOpts, defaultConsensusOpts } from './consensus.ts';
import { NodeError } from './errors.ts';
import { type FaultOpts, readFaultOpts } from './faults.ts';
import { FieldReader, type JsonObject } from './fields.ts';
import { type GenesisFile, parseGenesisFile } from './genesis-file.ts';
import { type InstitutionKeys, openInstitutionKeys } from './keys.ts';
import { defaultLoadOpts, type LoadOpts } from './load.ts';
import { defaultMiningOpts, type MiningOpts } from './miner.ts';
import { defaultSyncOpts, type SyncOpts } from './sync.ts';

export interface NodeConfig {
  /** The config file's path (for messages). */
  readonly source: string;
  readonly index: InstitutionIndex;
  readonly genesisFile: GenesisFile;
  readonly peers: readonly PeerEntry[];
  readonly keys: InstitutionKeys;
  readonly dataDir: string;
  readonly listen: string;
  readonly consensus: ConsensusOpts;
  readonly sync: SyncOpts;
  readonly replica: ReplicaOpts;
  readonly p2p: Partial<P2pLimits>;
  /** null: this node signs no load of its own. */
  readonly load: LoadOpts | null;
  readonly mining: MiningOpts;
  readonly statsIntervalMs: number;
  /** Deliberate misbehaviour for the fault tests (faults.ts); null in every real deployment. */
  readonly faults: FaultOpts | null;
  /**
   * For an institution admitted after genesis (index past the genesis members): its admission
   * (admission-file.ts), which names its keys until the node has synced the keyblock admitting it.
   */
  readonly admission: AdmitTx | null;
}

const FIELDS = ['index', 'genesisFile', 'peersFile', 'keyFile', 'dataDir', 'listen'];
const OPTIONAL = [
  'admissionFile',
  'passphraseFile',
  'passphraseEnv',
  'consensus',
  'sync',
  'replica',
  'p2p',
  'load',
  'mining',
  'statsIntervalMs',
  'faults',
];
const P2P_FIELDS = ['redialMinMs', 'redialMaxMs', 'requestTimeoutMs'] as const;

/** Reads optional numeric (or boolean) overrides of `defaults` from `value` (an object or absent). */
function readOverrides<T extends object>(
  f: FieldReader,
  value: unknown,
  field: string,
  defaults: T,
  min: (key: string) => number = () => 1,
): T {
  if (value === undefined) return defaults;
  const keys = Object.keys(defaults);
  const o = f.object(value, field, [], keys);
  const d = defaults as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = { ...d };
  for (const key of keys) {
    if (!(key in o)) continue;
    const path = `${field}.${key}`;
    out[key] = typeof d[key] === 'boolean' ? f.bool(o[key], path) : f.int(o[key], path, min(key));
  }
  return out as unknown as T;
}

async function readText(f: FieldReader, path: string, field: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    f.fail(field, `names ${path}, which cannot be read: ${(err as Error).message}`);
  }
}

function readListen(f: FieldReader, value: unknown): string {
  const listen = f.string(value, 'listen');
  let parts: { name: string }[];
  try {
    parts = multiaddr(listen).getComponents();
  } catch (err) {
    f.fail('listen', `is not a multiaddr: ${(err as Error).message}`);
  }
  if (!['ip4', 'ip6', 'dns4', 'dns6'].includes(parts[0]?.name ?? '') || parts[1]?.name !== 'tcp') {
    f.fail('listen', 'must be an IP (or DNS) address and a TCP port, like /ip4/0.0.0.0/tcp/4001');
  }
  return listen;
}

/** Loads and checks the config at `path`, the files it names, and the institution's keys. */
export async function readNodeConfig(
  path: string,
  env: Readonly<Record<string, string | undefined>> = {},
): Promise<NodeConfig> {
  const source = resolve(path);
  const f: FieldReader = new FieldReader('BAD_CONFIG', source);
  const dir = dirname(source);
  const at = (p: string) => resolve(dir, p);
  let json: unknown;
  try {
    json = JSON.parse(await readFile(source, 'utf8'));
  } catch (err) {
    f.fail('(file)', `cannot be read as JSON: ${(err as Error).message}`);
  }
  const o: JsonObject = f.object(json, '', FIELDS, OPTIONAL);

  const genesisPath = at(f.string(o.genesisFile, 'genesisFile'));
  const genesisFile = parseGenesisFile(await readText(f, genesisPath, 'genesisFile'), genesisPath);
  const { genesis } = genesisFile;
  const index = f.int(o.index, 'index', 0, MAX_MEMBERS - 1);
  let admission: AdmitTx | null = null;
  if (index >= genesis.members.length) {
    if (o.admissionFile === undefined) {
      f.fail(
        'index',
        `${index} is not a genesis member (0-${genesis.members.length - 1}); an institution admitted later needs admissionFile`,
      );
    }
    const admissionPath = at(f.string(o.admissionFile, 'admissionFile'));
    const file = parseAdmissionFile(
      await readText(f, admissionPath, 'admissionFile'),
      admissionPath,
    );
    if (file.chainId !== genesis.chainId) {
      f.fail(
        'admissionFile',
        `is for chain ${file.chainId}, the genesis file's is ${genesis.chainId}`,
      );
    }
    if (file.tx.member.index !== index) {
      f.fail(
        'admissionFile',
        `admits member ${file.tx.member.index}, the config's index is ${index}`,
      );
    }
    admission = file.tx;
  } else if (o.admissionFile !== undefined) {
    f.fail(
      'admissionFile',
      `is only for institutions admitted after genesis; ${index} is a genesis member`,
    );
  }
  const known =
    admission === null ? genesis : { ...genesis, members: [...genesis.members, admission.member] };

  const peersPath = at(f.string(o.peersFile, 'peersFile'));
  let peers: PeerEntry[];
  try {
    peers = peersFromJson(JSON.parse(await readText(f, peersPath, 'peersFile')));
  } catch (err) {
    if (err instanceof NodeError) throw err;
    f.fail('peersFile', `(${peersPath}) is not a valid peers list: ${(err as Error).message}`);
  }

  if ((o.passphraseFile === undefined) === (o.passphraseEnv === undefined)) {
    f.fail('passphraseFile', 'or passphraseEnv must be given (exactly one of them)');
  }
  let passphrase: string;
  if (o.passphraseFile !== undefined) {
    const p = at(f.string(o.passphraseFile, 'passphraseFile'));
    passphrase = (await readText(f, p, 'passphraseFile')).replace(/\r?\n$/, '');
  } else {
    const name = f.string(
      o.passphraseEnv,
      'passphraseEnv',
      /^[A-Z_][A-Z0-9_]*$/,
      'a variable name',
    );
    const value = env[name];
    if (value === undefined || value.length === 0) f.fail('passphraseEnv', `names ${name}, unset`);
    passphrase = value;
  }
  const keyPath = at(f.string(o.keyFile, 'keyFile'));
  let keys: InstitutionKeys;
  try {
    const text = await readText(f, keyPath, 'keyFile');
    keys = await openInstitutionKeys(text, passphrase, known, index, keyPath);
  } catch (err) {
    if (isCryptoError(err)) f.fail('keyFile', `(${keyPath}): ${err.message}`);
    throw err;
  }

  const own = verifyPeers(known, peers);
  const entry = own.byIndex.get(index);
  const selfId = await peerIdFromSeed(keys.peerSeed);
  if (entry === undefined) {
    const refused = own.refused.find((r) => r.entry.index === index);
    f.fail(
      'peersFile',
      refused === undefined
        ? `has no entry for member ${index}`
        : `entry for member ${index} is refused: ${refused.reason}`,
    );
  }
  if (entry.peerId !== selfId) {
    f.fail(
      'peersFile',
      `gives member ${index} peer id ${entry.peerId}; the key file gives ${selfId}`,
    );
  }

  const replicaDefaults = {
    fairnessGraceMs: defaultReplicaOpts.fairnessGraceMs,
    maxBundlesPerInstitution: defaultReplicaOpts.maxBundlesPerInstitution,
    maxBundlesTotal: defaultReplicaOpts.maxBundlesTotal,
  };
  const p2pDefaults = Object.fromEntries(P2P_FIELDS.map((k) => [k, defaultP2pLimits[k]]));
  return {
    source,
    index,
    genesisFile,
    peers,
    keys,
    dataDir: at(f.string(o.dataDir, 'dataDir')),
    listen: readListen(f, o.listen),
    consensus: readOverrides(f, o.consensus, 'consensus', defaultConsensusOpts),
    sync: readOverrides(f, o.sync, 'sync', defaultSyncOpts),
    replica: readOverrides(f, o.replica, 'replica', replicaDefaults),
    p2p: readOverrides(f, o.p2p, 'p2p', p2pDefaults),
    load:
      o.load === undefined
        ? null
        : readOverrides(f, o.load, 'load', defaultLoadOpts, (k) => (k === 'labelEvery' ? 0 : 1)),
    mining: readOverrides(f, o.mining, 'mining', defaultMiningOpts),
    statsIntervalMs:
      o.statsIntervalMs === undefined ? 1000 : f.int(o.statsIntervalMs, 'statsIntervalMs', 100),
    faults: readFaultOpts(f, o.faults, env),
    admission,
  };
}
