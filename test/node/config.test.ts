/**
 * Loading a node's config (src/node/config.ts): a localnet's config loads, and each kind of bad
 * field is refused with a message that names the field (and the file).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readNodeConfig } from '../../src/node/config.ts';
import { createLocalnet, type Localnet } from '../../src/node/localnet.ts';

let dir: string;
let net: Localnet;
let original: Record<string, unknown>;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'spchain-config-'));
  net = await createLocalnet({
    institutions: 2,
    dir,
    patientsPerInstitution: 1,
    kdf: { N: 2 ** 10, r: 8, p: 1 },
    ports: [30001, 30002],
  });
  original = JSON.parse(readFileSync(net.configPaths[0]!, 'utf8'));
}, 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Loads institution 0's config with `change` applied to its JSON. */
async function loadWith(change: (c: Record<string, unknown>) => void) {
  const config = structuredClone(original);
  change(config);
  const path = join(dir, 'inst-0', 'variant.json');
  writeFileSync(path, JSON.stringify(config));
  return readNodeConfig(path, { SECRET: 'nope' });
}

describe('node config', () => {
  it('loads a localnet config with its genesis, peers and keys', async () => {
    const config = await readNodeConfig(net.configPaths[1]!);
    expect(config.index).toBe(1);
    expect(config.genesisFile.genesis.members).toHaveLength(2);
    expect(config.genesisFile.keyblock.registers).toHaveLength(2);
    expect(config.peers).toHaveLength(2);
    expect(config.listen).toBe('/ip4/127.0.0.1/tcp/30002');
    expect(config.load?.txPerSecond).toBeGreaterThan(0);
  });

  const cases: [string, (c: Record<string, unknown>) => void, RegExp][] = [
    [
      'an index outside the genesis without an admission',
      (c) => (c.index = 7),
      /index 7 is not a genesis member \(0-1\); an institution admitted later needs admissionFile/,
    ],
    [
      'an admission file for a genesis member',
      (c) => (c.admissionFile = 'admission.json'),
      /admissionFile is only for institutions admitted after genesis/,
    ],
    ['a missing field', (c) => delete c.dataDir, /dataDir is missing/],
    ['an unknown field', (c) => (c.listenAddress = 'x'), /listenAddress is not a known field/],
    [
      'an unreadable peers file',
      (c) => (c.peersFile = 'nope.json'),
      /peersFile names .*nope\.json/,
    ],
    ['a bad listen address', (c) => (c.listen = '/ip4/127.0.0.1/udp/1'), /listen must be/],
    [
      'a bad consensus timeout',
      (c) => (c.consensus = { timeoutProposeMs: 0 }),
      /consensus\.timeoutProposeMs must be an integer/,
    ],
    ['an unknown load option', (c) => (c.load = { rate: 3 }), /load\.rate is not a known field/],
    [
      'both passphrase sources',
      (c) => (c.passphraseEnv = 'SECRET'),
      /passphraseFile or passphraseEnv must be given \(exactly one/,
    ],
    [
      'a wrong passphrase',
      (c) => {
        delete c.passphraseFile;
        c.passphraseEnv = 'SECRET';
      },
      /keyFile .*wrong passphrase/,
    ],
    [
      "another member's key file",
      (c) => {
        c.keyFile = '../inst-1/institution.key.json';
        c.passphraseFile = '../inst-1/passphrase';
      },
      /public\.signing is not member 0's key in the genesis file/,
    ],
  ];
  for (const [what, change, message] of cases) {
    it(`refuses ${what}, naming the field`, async () => {
      await expect(loadWith(change)).rejects.toThrow(message);
    });
  }

  it('refuses a genesis file with a bad parameter, naming it', async () => {
    const genesis = JSON.parse(readFileSync(net.genesisPath, 'utf8'));
    genesis.params.groupSize = 0;
    const path = join(dir, 'bad-genesis.json');
    writeFileSync(path, JSON.stringify(genesis));
    await expect(loadWith((c) => (c.genesisFile = '../bad-genesis.json'))).rejects.toThrow(
      /bad-genesis\.json: params\.groupSize must be an integer in \[1, 1024\], got 0/,
    );
  });
});
