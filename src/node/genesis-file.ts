/**
 * The genesis file every institution of a network holds: the chain id, the idHash key, the member
 * registry and the chain parameters (the ledger's Genesis), the members' initial fee credits, and
 * keyblock 1 with its pinning certificate. Keyblock 1 registers the network's first patients: it is
 * mined (real PoW at the initial target) and signed by the whole initial consensus group at the
 * genesis ceremony, so every node pins it on first start after checking it like any other keyblock.
 *
 * JSON, one object:
 *   { "format": "spchain-genesis", "version": 2, "chainId", "idHashKey": hex32, "time": ms,
 *     "members": [{ "index", "name", "signingKey": hex33, "chameleonKey": hex33, "preKey": hex33 }],
 *     "params": { ...ChainParams, "initialTarget": "0x..." },
 *     "credits": [{ "member", "amount" }],
 *     "keyblock": hex (encodeKeyblock), "certificate": hex (encodeCertificate) }
 *
 * Version 2 puts the credits into the ledger's Genesis, so genesisHash covers them: keyblock 1
 * extends that hash and the genesis group certifies keyblock 1, so a file with other credits does
 * not verify. A version 1 file (credits not covered) still loads as it always did; every node must
 * then read the same file, which the operators compare by its SHA-256 (`genesisFileDigest`).
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { toHex, utf8 } from '../crypto/bytes.ts';
import { decodeCertificate, encodeCertificate, verifyCertificate } from '../ledger/certificate.ts';
import { checkCharges, genesisAccounts, keyblockCharges } from '../ledger/fees.ts';
import { decodeKeyblock, encodeKeyblock, keyblockHash, MAX_TARGET } from '../ledger/keyblock.ts';
import { addKeyblock, createKeyblockTree } from '../ledger/keyblock-tree.ts';
import { createMicroblock, type Microblock } from '../ledger/microblock.ts';
import { consensusGroupOf, createReplica } from '../ledger/replica.ts';
import type {
  Certificate,
  ChainParams,
  Genesis,
  InstitutionIndex,
  Keyblock,
  Member,
} from '../ledger/types.ts';
import { NodeError } from './errors.ts';
import { FieldReader } from './fields.ts';

export const GENESIS_FORMAT = 'spchain-genesis';
export const GENESIS_VERSION = 2;
/** Versions this node reads: 1 (credits outside genesisHash) and 2. */
const READABLE_VERSIONS: readonly unknown[] = [1, 2];
/** Members a genesis file may list (institution indices are varints below 0xffff on the wire). */
export const MAX_MEMBERS = 1024;

export interface GenesisFile {
  readonly genesis: Genesis;
  /**
   * Fee units each member starts with (members not listed start at 0); from version 2 on, the
   * same as `genesis.credits`.
   */
  readonly credits: ReadonlyMap<InstitutionIndex, number>;
  /** Keyblock 1: the patients registered at genesis. */
  readonly keyblock: Keyblock;
  /** Precommits of the initial consensus group on keyblock 1. */
  readonly certificate: Certificate;
}

const PARAM_FIELDS: readonly (keyof ChainParams)[] = [
  'keyblockIntervalMs',
  'initialTarget',
  'retargetWindow',
  'chunkSize',
  'groupSize',
  'reputationA',
  'reputationLambda',
  'minFee',
  'keyblockReward',
  'batchReward',
  'maxBatchTxs',
];

const CHAIN_ID = /^[A-Za-z0-9._:-]{1,64}$/;

function readMember(f: FieldReader, value: unknown, position: number): Member {
  const field = `members[${position}]`;
  const member = readMemberAt(f, value, field);
  if (member.index !== position) {
    f.fail(`${field}.index`, `must be ${position} (members are in order)`);
  }
  return member;
}

/** A member's JSON form (index, name, hex keys), as in the genesis file and admission files. */
export function readMemberAt(f: FieldReader, value: unknown, field: string): Member {
  const o = f.object(value, field, ['index', 'name', 'signingKey', 'chameleonKey', 'preKey']);
  const index = f.int(o.index, `${field}.index`, 0, MAX_MEMBERS - 1);
  return {
    index,
    name: f.string(o.name, `${field}.name`, /^[^\p{C}]{1,128}$/u, 'a printable name'),
    signingKey: f.hex(o.signingKey, `${field}.signingKey`, 33),
    chameleonKey: f.hex(o.chameleonKey, `${field}.chameleonKey`, 33),
    preKey: f.hex(o.preKey, `${field}.preKey`, 33),
  };
}

function readParams(f: FieldReader, value: unknown): ChainParams {
  const o = f.object(value, 'params', PARAM_FIELDS);
  const int = (k: keyof ChainParams, min: number, max?: number) =>
    f.int(o[k], `params.${k}`, min, max);
  const initialTarget = f.bigHex(o.initialTarget, 'params.initialTarget', 32);
  if (initialTarget < 1n || initialTarget > MAX_TARGET) {
    f.fail('params.initialTarget', 'must be in [1, 2^256 - 1]');
  }
  return {
    keyblockIntervalMs: int('keyblockIntervalMs', 1),
    initialTarget,
    retargetWindow: int('retargetWindow', 1),
    chunkSize: int('chunkSize', 1),
    // Up to MAX_MEMBERS: members admitted later may take the seats the genesis members leave.
    groupSize: int('groupSize', 1, MAX_MEMBERS),
    reputationA: int('reputationA', 0),
    reputationLambda: int('reputationLambda', 1),
    minFee: int('minFee', 0),
    keyblockReward: int('keyblockReward', 0),
    batchReward: int('batchReward', 0),
    maxBatchTxs: int('maxBatchTxs', 1, 100_000),
  };
}

/** Parses and checks the shape of a genesis file; `source` names it in errors. */
export function parseGenesisFile(text: string, source: string): GenesisFile {
  const f: FieldReader = new FieldReader('BAD_GENESIS', source);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    f.fail('(file)', `is not valid JSON: ${(err as Error).message}`);
  }
  const o = f.object(json, '', [
    'format',
    'version',
    'chainId',
    'idHashKey',
    'time',
    'members',
    'params',
    'credits',
    'keyblock',
    'certificate',
  ]);
  if (o.format !== GENESIS_FORMAT) f.fail('format', `must be "${GENESIS_FORMAT}"`);
  if (!READABLE_VERSIONS.includes(o.version)) {
    f.fail('version', `must be ${READABLE_VERSIONS.join(' or ')}`);
  }
  const members = f.array(o.members, 'members', 1, MAX_MEMBERS).map((m, i) => readMember(f, m, i));
  const credits = new Map<InstitutionIndex, number>();
  f.array(o.credits, 'credits', 0, members.length).forEach((c, i) => {
    const field = `credits[${i}]`;
    const e = f.object(c, field, ['member', 'amount']);
    const member = f.int(e.member, `${field}.member`, 0, members.length - 1);
    if (credits.has(member)) f.fail(`${field}.member`, `lists member ${member} twice`);
    credits.set(member, f.int(e.amount, `${field}.amount`, 0));
  });
  const genesis: Genesis = {
    chainId: f.string(o.chainId, 'chainId', CHAIN_ID, 'letters, digits and ._:- (1-64)'),
    idHashKey: f.hex(o.idHashKey, 'idHashKey', 32),
    time: f.int(o.time, 'time', 0),
    members,
    params: readParams(f, o.params),
    ...(o.version === 1 ? {} : { credits }),
  };
  let keyblock: Keyblock;
  let certificate: Certificate;
  try {
    keyblock = decodeKeyblock(f.hex(o.keyblock, 'keyblock'));
  } catch (err) {
    f.fail('keyblock', `does not decode: ${(err as Error).message}`);
  }
  try {
    certificate = decodeCertificate(f.hex(o.certificate, 'certificate'), members.length);
  } catch (err) {
    f.fail('certificate', `does not decode: ${(err as Error).message}`);
  }
  if (keyblock.height !== 1) f.fail('keyblock', `must be keyblock 1, is ${keyblock.height}`);
  return { genesis, credits, keyblock, certificate };
}

export function formatGenesisFile(file: GenesisFile): string {
  const { genesis } = file;
  const p = genesis.params;
  const json = {
    format: GENESIS_FORMAT,
    version: genesis.credits === undefined ? 1 : GENESIS_VERSION,
    chainId: genesis.chainId,
    idHashKey: toHex(genesis.idHashKey),
    time: genesis.time,
    members: genesis.members.map((m) => ({
      index: m.index,
      name: m.name,
      signingKey: toHex(m.signingKey),
      chameleonKey: toHex(m.chameleonKey),
      preKey: toHex(m.preKey),
    })),
    params: { ...p, initialTarget: `0x${p.initialTarget.toString(16)}` },
    credits: [...file.credits].map(([member, amount]) => ({ member, amount })),
    keyblock: toHex(encodeKeyblock(file.keyblock)),
    certificate: toHex(encodeCertificate(file.certificate)),
  };
  return `${JSON.stringify(json, null, 2)}\n`;
}

/** SHA-256 of the file's canonical text: operators compare it out of band. */
export function genesisFileDigest(file: GenesisFile): string {
  return toHex(sha256(utf8(formatGenesisFile(file))));
}

/** The replica every node starts from: the genesis registry and the members' credits. */
export function genesisReplicaInit(file: GenesisFile) {
  const indices = file.genesis.members.map((m) => m.index);
  return { genesis: file.genesis, accounts: genesisAccounts(indices, file.credits) };
}

/**
 * Checks keyblock 1 as every node must before pinning it: a valid keyblock on the genesis (PoW,
 * miner signature, time not after `now` plus the allowed drift, register txs and their fees), and a
 * certificate of the genesis consensus group on its hash. Returns the patient blocks it creates.
 */
export function verifyGenesisKeyblock(file: GenesisFile, now: number): Microblock[] {
  const { genesis, keyblock: kb, certificate: cert } = file;
  const fail = (why: string): never => {
    throw new NodeError('BAD_GENESIS', `genesis keyblock 1 is not valid: ${why}`, {
      field: 'keyblock',
    });
  };
  const added = addKeyblock(createKeyblockTree(genesis), kb, now, () => false);
  if (!added.verdict.ok) fail(added.verdict.error.message);
  const init = genesisReplicaInit(file);
  const fees = checkCharges(init.accounts, keyblockCharges(kb), genesis.params);
  if (!fees.ok) fail(fees.error.message);
  if (cert.kind !== 'keyblock' || cert.height !== 1 || cert.round !== 0) {
    fail(`certificate is for ${cert.kind} ${cert.height} round ${cert.round}`);
  }
  const hash = keyblockHash(kb);
  if (toHex(cert.value) !== toHex(hash)) fail('certificate signs another keyblock');
  const group = consensusGroupOf(createReplica(init));
  const checked = verifyCertificate(cert, group, genesis.chainId);
  if (!checked.ok) fail(`certificate: ${checked.error.message}`);
  const members = (i: number) => genesis.members[i];
  return kb.registers.map((tx, j) => {
    const made = createMicroblock(tx, { i: 1, j }, members);
    if (made.ok) return made.block;
    const why = made.verdict.ok ? 'rejected' : made.verdict.error.message;
    return fail(`register tx ${j}: ${why}`);
  });
}
