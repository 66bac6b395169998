/**
 * The genesis file (src/node/genesis-file.ts): version 2 puts the opening credits under
 * genesisHash, so a file whose credits were changed no longer verifies; a version 1 file (credits
 * outside the hash) still loads and verifies; other versions are refused by name.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyblockHash } from '../../src/ledger/keyblock.ts';
import { createKeyblockTree, mineKeyblock } from '../../src/ledger/keyblock-tree.ts';
import {
  formatGenesisFile,
  type GenesisFile,
  parseGenesisFile,
  verifyGenesisKeyblock,
} from '../../src/node/genesis-file.ts';
import type { InstitutionKeys } from '../../src/node/keys.ts';
import { createLocalnet, type Localnet } from '../../src/node/localnet.ts';
import { certify, localnetConfigs } from './keyblock-helpers.ts';

let dir: string;
let net: Localnet;
let file: GenesisFile;
let keys: InstitutionKeys[];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'spchain-genesis-'));
  net = await createLocalnet({
    institutions: 3,
    dir,
    patientsPerInstitution: 1,
    kdf: { N: 2 ** 10, r: 8, p: 1 },
    ports: [1, 2, 3],
    mining: null,
    load: null,
  });
  const configs = await localnetConfigs(net);
  file = configs[0]!.genesisFile;
  keys = configs.map((c) => c.keys);
}, 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const edit = (text: string, change: (json: Record<string, unknown>) => void) => {
  const json = JSON.parse(text) as Record<string, unknown>;
  change(json);
  return JSON.stringify(json);
};

describe('genesis file', () => {
  it('is version 2 with the credits in the ledger genesis, and reads back as written', () => {
    const text = readFileSync(net.genesisPath, 'utf8');
    expect(JSON.parse(text).version).toBe(2);
    expect(file.genesis.credits).toEqual(file.credits);
    expect(formatGenesisFile(parseGenesisFile(text, 'genesis.json'))).toBe(text);
    expect(verifyGenesisKeyblock(file, Date.now())).toHaveLength(3);
  });

  it('does not verify once a credit is changed', () => {
    const text = edit(readFileSync(net.genesisPath, 'utf8'), (json) => {
      (json.credits as { amount: number }[])[1]!.amount += 1;
    });
    const changed = parseGenesisFile(text, 'genesis.json');
    expect(() => verifyGenesisKeyblock(changed, Date.now())).toThrow(
      /keyblock 1 is not valid: keyblock 1 has an unknown parent/,
    );
  });

  it('still reads and verifies a version 1 file, whose credits are outside the hash', () => {
    const legacy = { ...file.genesis, credits: undefined };
    const tree = createKeyblockTree(legacy);
    const miner = keys[0]!;
    const kb1 = mineKeyblock(tree, {
      parentId: tree.pinned,
      miner: { index: 0, signingKey: miner.signingKey, signingSecret: miner.signingSecret },
      registers: file.keyblock.registers,
      time: file.keyblock.time,
      attempts: 10_000_000,
    })!;
    const certificate = certify(legacy, keys, 'keyblock', 1, keyblockHash(kb1));
    const text = formatGenesisFile({ ...file, genesis: legacy, keyblock: kb1, certificate });
    expect(JSON.parse(text).version).toBe(1);
    const read = parseGenesisFile(text, 'old.json');
    expect(read.genesis.credits).toBeUndefined();
    expect(read.credits).toEqual(file.credits);
    expect(verifyGenesisKeyblock(read, Date.now())).toHaveLength(3);
    // The same keyblock 1 under a version 2 header names credits its parent hash did not cover.
    const relabelled = parseGenesisFile(
      edit(text, (json) => (json.version = 2)),
      'v2.json',
    );
    expect(() => verifyGenesisKeyblock(relabelled, Date.now())).toThrow(/unknown parent/);
  });

  it('refuses a version it does not know, naming the field', () => {
    const text = edit(readFileSync(net.genesisPath, 'utf8'), (json) => (json.version = 3));
    expect(() => parseGenesisFile(text, 'genesis.json')).toThrow(/version must be 1 or 2/);
  });
});
