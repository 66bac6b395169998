/** A small network of institutions with real keys, for ledger tests (seeded, reproducible). */
import { generateChameleonKey } from '../../src/crypto/chameleon.ts';
import { deterministicRandom, type RandomBytes } from '../../src/crypto/random.ts';
import { generateSigningKey } from '../../src/crypto/sign.ts';
import { generateSecretKey, publicKeyOf } from '../../src/crypto/umbral/index.ts';
import type { InstitutionSecrets, PatientKeys } from '../../src/ledger/author.ts';
import type { ChainParams, Genesis, Member } from '../../src/ledger/types.ts';

export interface TestInstitution extends InstitutionSecrets {
  readonly member: Member;
  readonly signingSecret: Uint8Array;
}

export const testParams: ChainParams = {
  keyblockIntervalMs: 1000,
  initialTarget: 2n ** 250n,
  retargetWindow: 4,
  chunkSize: 4,
  groupSize: 4,
  reputationA: 5000,
  reputationLambda: 20000,
  minFee: 1,
  keyblockReward: 50,
  batchReward: 10,
  maxBatchTxs: 1000,
};

export function makeNetwork(
  size: number,
  seed = 'network',
  params: Partial<ChainParams> = {},
): { genesis: Genesis; institutions: TestInstitution[]; random: RandomBytes } {
  const random = deterministicRandom(seed);
  const institutions = Array.from({ length: size }, (_, index): TestInstitution => {
    const signing = generateSigningKey(random);
    const ch = generateChameleonKey(random);
    const member: Member = {
      index,
      name: `hospital-${index}`,
      signingKey: signing.publicKey,
      chameleonKey: ch.hashKey,
      preKey: publicKeyOf(generateSecretKey(random)),
    };
    return {
      index,
      member,
      signingSecret: signing.secretKey,
      chameleonKey: ch.hashKey,
      chameleonTrapdoor: ch.trapdoor,
    };
  });
  const genesis: Genesis = {
    chainId: `spchain-test-${seed}`,
    idHashKey: random(32),
    time: 1_700_000_000_000,
    members: institutions.map((i) => i.member),
    params: { ...testParams, ...params },
  };
  return { genesis, institutions, random };
}

export function makePatient(random: RandomBytes): PatientKeys & { preSecret: Uint8Array } {
  const preSecret = generateSecretKey(random);
  const signing = generateSigningKey(random);
  return {
    preKey: publicKeyOf(preSecret),
    preSecret,
    signingKey: signing.publicKey,
    signingSecret: signing.secretKey,
  };
}
