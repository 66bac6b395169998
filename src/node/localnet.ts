/**
 * A local network's files, made in one go (scripts/localnet.ts and the tests use it): for N
 * institutions, the keys (signing, chameleon, PRE, libp2p seed) sealed in key files, some patients
 * per institution registered in keyblock 1 (mined at the initial target and certified by every
 * member: the genesis ceremony), the genesis file, the peers file with each institution's signed
 * peer binding on 127.0.0.1, and one config per institution. The patients' own keys are made and
 * dropped: a local network needs their registrations, not their secrets.
 *
 * Keyblocks on loopback: every institution mines at mining.hashesPerSecond (miner.ts), so the
 * initial target is set for a keyblock about every keyblockIntervalMs from all of them together
 * (localnetTarget), and the reputation chunk is short, so a run of a minute sees chunks close.
 *
 *   <dir>/genesis.json  <dir>/peers.json  <dir>/inst-<i>/{config.json, institution.key.json,
 *   passphrase, data/}
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { toHex } from '../crypto/bytes.ts';
import type { ScryptCost } from '../crypto/keyfile.ts';
import { type RandomBytes, systemRandom } from '../crypto/random.ts';
import { generateSigningKey } from '../crypto/sign.ts';
import { generateSecretKey, publicKeyOf } from '../crypto/umbral/index.ts';
import { makeRegisterTx } from '../ledger/author.ts';
import { makeCertificate, signVote } from '../ledger/certificate.ts';
import { computeIdHash } from '../ledger/idhash.ts';
import { keyblockHash, MAX_TARGET } from '../ledger/keyblock.ts';
import { createKeyblockTree, mineKeyblock } from '../ledger/keyblock-tree.ts';
import type { ChainParams, Genesis, RegisterTx } from '../ledger/types.ts';
import { makePeerBinding, peerIdFromSeed, peersToJson } from '../p2p/index.ts';
import type { ConsensusOpts } from './consensus.ts';
import { formatGenesisFile, type GenesisFile } from './genesis-file.ts';
import { generateInstitutionKeys, type InstitutionKeys, sealInstitutionKeys } from './keys.ts';
import { defaultLoadOpts, type LoadOpts } from './load.ts';
import { defaultMiningOpts, type MiningOpts } from './miner.ts';
import type { SyncOpts } from './sync.ts';

export interface LocalnetOpts {
  readonly institutions: number;
  readonly dir: string;
  readonly patientsPerInstitution?: number;
  /** TCP ports, one per institution; default: free ports found on 127.0.0.1. */
  readonly ports?: readonly number[];
  /** Each node's own load; null: none. Default defaultLoadOpts. */
  readonly load?: Partial<LoadOpts> | null;
  readonly consensus?: Partial<ConsensusOpts>;
  readonly sync?: Partial<SyncOpts>;
  /** Keyblock mining at each node; null: nobody mines (keyblock 1 only). Default localnetMining. */
  readonly mining?: Partial<MiningOpts> | null;
  /** Chain parameters; the initial target defaults to localnetTarget for the mining rate. */
  readonly params?: Partial<ChainParams>;
  /** Key file scrypt cost; default N = 2^14 (a local network's keys are throwaway). */
  readonly kdf?: ScryptCost;
  readonly statsIntervalMs?: number;
  readonly random?: RandomBytes;
}

export interface Localnet {
  readonly chainId: string;
  readonly genesisPath: string;
  readonly peersPath: string;
  /** Config file of institution i at index i. */
  readonly configPaths: readonly string[];
  readonly dataDirs: readonly string[];
}

/** Consensus timings for one host: a few heights per second, short view changes. */
export const localnetConsensus: Partial<ConsensusOpts> = {
  timeoutProposeMs: 1000,
  timeoutPrevoteMs: 500,
  timeoutPrecommitMs: 500,
  timeoutDeltaMs: 250,
  resendIntervalMs: 500,
  batchIntervalMs: 200,
  idleBatchIntervalMs: 1000,
};

/** Mining on one host: a few per cent of a core per institution. */
export const localnetMining: MiningOpts = { ...defaultMiningOpts, hashesPerSecond: 2000 };

/**
 * The PoW target for one keyblock every `intervalMs` from `miners` institutions mining at
 * `hashesPerSecond` each: a hash is below the target with probability target / 2^256.
 */
export function localnetTarget(
  miners: number,
  hashesPerSecond: number,
  intervalMs: number,
): bigint {
  const hashes = BigInt(Math.max(1, Math.round((miners * hashesPerSecond * intervalMs) / 1000)));
  return MAX_TARGET / hashes;
}

export const localnetParams: ChainParams = {
  keyblockIntervalMs: 3000,
  // For 4 institutions at localnetMining's rate; createLocalnet sets it for the network's size.
  initialTarget: localnetTarget(4, localnetMining.hashesPerSecond, 3000),
  retargetWindow: 16,
  // Ten keyblocks (about half a minute) per reputation chunk.
  chunkSize: 10,
  groupSize: 64,
  reputationA: 5000,
  reputationLambda: 20000,
  minFee: 1,
  keyblockReward: 50,
  batchReward: 10,
  maxBatchTxs: 500,
};

const CREDIT = 1_000_000_000;

function canListen(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

/**
 * `n` distinct ports that can be listened on now, picked at random in 12000-19999: below the
 * kernel's ephemeral range (so no outgoing connection takes one before the node listens) and
 * apart from the range the p2p tests pick from (20000-31999), since a node process takes a few
 * seconds to listen.
 */
export async function findFreePorts(n: number, host = '127.0.0.1'): Promise<number[]> {
  const out = new Set<number>();
  for (let attempt = 0; out.size < n && attempt < 100 * n; attempt++) {
    const port = 12_000 + Math.floor(Math.random() * 8_000);
    if (!out.has(port) && (await canListen(port, host))) out.add(port);
  }
  if (out.size < n) throw new Error(`found only ${out.size} of ${n} free ports`);
  return [...out];
}

export async function createLocalnet(opts: LocalnetOpts): Promise<Localnet> {
  const n = opts.institutions;
  if (!Number.isSafeInteger(n) || n < 1 || n > 64) {
    throw new RangeError(`institutions: expected 1 to 64, got ${n}`);
  }
  const random = opts.random ?? systemRandom;
  const perInstitution = opts.patientsPerInstitution ?? 4;
  const ports = opts.ports ?? (await findFreePorts(n));
  if (ports.length !== n) throw new RangeError(`ports: expected ${n}, got ${ports.length}`);
  const now = Date.now();

  const keys: InstitutionKeys[] = Array.from({ length: n }, (_, index) =>
    generateInstitutionKeys(index, random),
  );
  const mining = opts.mining === null ? null : { ...localnetMining, ...opts.mining };
  const interval = opts.params?.keyblockIntervalMs ?? localnetParams.keyblockIntervalMs;
  const rate = (mining ?? localnetMining).hashesPerSecond;
  const params = {
    ...localnetParams,
    groupSize: n,
    initialTarget: localnetTarget(n, rate, interval),
    ...opts.params,
  };
  const credits = new Map(keys.map((k) => [k.index, CREDIT]));
  const genesis: Genesis = {
    credits,
    chainId: `spchain-localnet-${toHex(random(4))}`,
    idHashKey: random(32),
    time: now - 60_000,
    members: keys.map((k) => ({
      index: k.index,
      name: `hospital-${k.index}`,
      signingKey: k.signingKey,
      chameleonKey: k.chameleonKey,
      preKey: k.preKey,
    })),
    params,
  };

  // The genesis ceremony: patients register at their home institutions, keyblock 1 is mined and
  // every member of the initial group signs it.
  const registers: RegisterTx[] = [];
  for (const home of keys) {
    for (let p = 0; p < perInstitution; p++) {
      const idHash = computeIdHash(genesis.idHashKey, {
        system: 'urn:spchain:localnet',
        value: `${genesis.chainId}-${home.index}-${p}`,
        birthDate: '1970-01-01',
      });
      const signing = generateSigningKey(random);
      const patient = {
        preKey: publicKeyOf(generateSecretKey(random)),
        signingKey: signing.publicKey,
        signingSecret: signing.secretKey,
      };
      registers.push(
        makeRegisterTx({
          chainId: genesis.chainId,
          idHash,
          home,
          patient,
          fee: params.minFee,
          random,
        }),
      );
    }
  }
  const tree = createKeyblockTree(genesis);
  const miner = keys[0]!;
  const keyblock = mineKeyblock(tree, {
    parentId: tree.pinned,
    miner: { index: 0, signingKey: miner.signingKey, signingSecret: miner.signingSecret },
    registers,
    time: now - 1000,
    attempts: 50_000_000,
    random,
  });
  if (keyblock === null) throw new Error('keyblock 1: no nonce below the initial target');
  const subject = { kind: 'keyblock' as const, height: 1, round: 0, value: keyblockHash(keyblock) };
  const certificate = makeCertificate(
    subject,
    keys.map((k) => ({
      member: k.index,
      signature: signVote(
        k.signingSecret,
        genesis.chainId,
        { ...subject, type: 'precommit' },
        random,
      ),
    })),
  );
  const file: GenesisFile = { genesis, credits, keyblock, certificate };

  await mkdir(opts.dir, { recursive: true });
  const genesisPath = join(opts.dir, 'genesis.json');
  const peersPath = join(opts.dir, 'peers.json');
  const peers = await Promise.all(
    keys.map(async (k, i) => {
      const peerId = await peerIdFromSeed(k.peerSeed);
      return {
        index: k.index,
        peerId,
        multiaddr: `/ip4/127.0.0.1/tcp/${ports[i]}`,
        binding: makePeerBinding(genesis.chainId, peerId, k.index, k.signingSecret, random),
      };
    }),
  );
  await writeFile(genesisPath, formatGenesisFile(file));
  await writeFile(peersPath, `${JSON.stringify(peersToJson(peers), null, 2)}\n`);

  const configPaths: string[] = [];
  const dataDirs: string[] = [];
  for (const k of keys) {
    const dir = join(opts.dir, `inst-${k.index}`);
    await mkdir(dir, { recursive: true });
    const passphrase = toHex(random(16));
    await writeFile(join(dir, 'passphrase'), `${passphrase}\n`, { mode: 0o600 });
    const sealed = await sealInstitutionKeys({
      keys: k,
      passphrase,
      label: `hospital-${k.index}`,
      kdf: opts.kdf ?? { N: 2 ** 14, r: 8, p: 1 },
      random,
    });
    await writeFile(join(dir, 'institution.key.json'), sealed, { mode: 0o600 });
    const config = {
      index: k.index,
      genesisFile: '../genesis.json',
      peersFile: '../peers.json',
      keyFile: 'institution.key.json',
      passphraseFile: 'passphrase',
      dataDir: 'data',
      listen: `/ip4/127.0.0.1/tcp/${ports[k.index]}`,
      consensus: { ...localnetConsensus, ...opts.consensus },
      ...(opts.sync === undefined ? {} : { sync: opts.sync }),
      p2p: { redialMinMs: 100, redialMaxMs: 1000 },
      ...(opts.load === null ? {} : { load: { ...defaultLoadOpts, ...opts.load } }),
      mining: mining ?? { ...localnetMining, enabled: false },
      statsIntervalMs: opts.statsIntervalMs ?? 1000,
    };
    const configPath = join(dir, 'config.json');
    await writeFile(configPath, `${JSON.stringify(config, null, 2)}\n`);
    configPaths.push(configPath);
    dataDirs.push(join(dir, 'data'));
  }
  return { chainId: genesis.chainId, genesisPath, peersPath, configPaths, dataDirs };
}
