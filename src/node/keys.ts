/**
 * An institution's key material, in the project's key file format (src/crypto/keyfile.ts, kind
 * "institution"): the public keys as the genesis registry lists them, and the secrets sealed
 * under a passphrase. The node checks on start that every secret matches its public key and that
 * the public keys are the genesis member's, naming the key that does not.
 *
 *   public:  signing (33), chameleon (33), pre (33)
 *   secret:  signing (32), chameleon (32, the trapdoor), pre (32), peer (32, the libp2p key seed)
 */
import { equalBytes } from '../crypto/bytes.ts';
import { chameleonHashKeyOf, generateChameleonKey } from '../crypto/chameleon.ts';
import {
  DEFAULT_SCRYPT_COST,
  openKeyFileAsync,
  type ScryptCost,
  sealKeyFileAsync,
} from '../crypto/keyfile.ts';
import { type RandomBytes, systemRandom } from '../crypto/random.ts';
import { generateSigningKey, signingPublicKey } from '../crypto/sign.ts';
import { generateSecretKey, publicKeyOf } from '../crypto/umbral/index.ts';
import type { InstitutionSecrets } from '../ledger/author.ts';
import type { Genesis, InstitutionIndex } from '../ledger/types.ts';
import { NodeError } from './errors.ts';

export interface InstitutionKeys extends InstitutionSecrets {
  readonly signingKey: Uint8Array;
  readonly signingSecret: Uint8Array;
  readonly preKey: Uint8Array;
  readonly preSecret: Uint8Array;
  /** Seed of the libp2p Ed25519 key (the peers list names the peer id it yields). */
  readonly peerSeed: Uint8Array;
}

/** Fresh keys of every kind for institution `index`: signing, chameleon hash, PRE, libp2p peer. */
export function generateInstitutionKeys(
  index: InstitutionIndex,
  random: RandomBytes = systemRandom,
): InstitutionKeys {
  const signing = generateSigningKey(random);
  const ch = generateChameleonKey(random);
  const preSecret = generateSecretKey(random);
  return {
    index,
    signingKey: signing.publicKey,
    signingSecret: signing.secretKey,
    chameleonKey: ch.hashKey,
    chameleonTrapdoor: ch.trapdoor,
    preKey: publicKeyOf(preSecret),
    preSecret,
    peerSeed: random(32),
  };
}

const PUBLIC_NAMES = ['signing', 'chameleon', 'pre'] as const;
const SECRET_NAMES = ['signing', 'chameleon', 'pre', 'peer'] as const;

export async function sealInstitutionKeys(opts: {
  keys: InstitutionKeys;
  passphrase: string;
  label?: string;
  kdf?: ScryptCost;
  random?: RandomBytes;
}): Promise<string> {
  const { keys } = opts;
  return sealKeyFileAsync({
    kind: 'institution',
    label: opts.label,
    publicKeys: { signing: keys.signingKey, chameleon: keys.chameleonKey, pre: keys.preKey },
    secretKeys: {
      signing: keys.signingSecret,
      chameleon: keys.chameleonTrapdoor,
      pre: keys.preSecret,
      peer: keys.peerSeed,
    },
    passphrase: opts.passphrase,
    kdf: opts.kdf ?? DEFAULT_SCRYPT_COST,
    random: opts.random,
  });
}

/**
 * Opens the key file (scrypt off the event loop) and checks it against member `index` of the
 * genesis. Throws CryptoError WRONG_PASSPHRASE / KEYFILE_INVALID, or NodeError BAD_KEYS.
 */
export async function openInstitutionKeys(
  text: string,
  passphrase: string,
  genesis: Pick<Genesis, 'chainId' | 'members'>,
  index: InstitutionIndex,
  source: string,
): Promise<InstitutionKeys> {
  const contents = await openKeyFileAsync(text, passphrase);
  const bad = (key: string, problem: string): never => {
    throw new NodeError('BAD_KEYS', `${source}: ${key} ${problem}`, { field: key, source });
  };
  if (contents.kind !== 'institution') bad('kind', `is "${contents.kind}", not "institution"`);
  const pub = (name: (typeof PUBLIC_NAMES)[number]) =>
    contents.publicKeys[name] ?? bad(`public.${name}`, 'is missing');
  const sec = (name: (typeof SECRET_NAMES)[number]) =>
    contents.secretKeys[name] ?? bad(`secret ${name}`, 'is missing');
  const keys: InstitutionKeys = {
    index,
    signingKey: pub('signing'),
    signingSecret: sec('signing'),
    chameleonKey: pub('chameleon'),
    chameleonTrapdoor: sec('chameleon'),
    preKey: pub('pre'),
    preSecret: sec('pre'),
    peerSeed: sec('peer'),
  };
  if (keys.peerSeed.length !== 32) bad('secret peer', 'must be a 32-byte seed');
  const derived: [string, () => Uint8Array, Uint8Array][] = [
    ['signing', () => signingPublicKey(keys.signingSecret), keys.signingKey],
    ['chameleon', () => chameleonHashKeyOf(keys.chameleonTrapdoor), keys.chameleonKey],
    ['pre', () => publicKeyOf(keys.preSecret), keys.preKey],
  ];
  for (const [name, derive, expected] of derived) {
    let ok = false;
    try {
      ok = equalBytes(derive(), expected);
    } catch {
      ok = false;
    }
    if (!ok) bad(`secret ${name}`, 'does not match its public key');
  }
  const member = genesis.members.find((m) => m.index === index);
  if (member === undefined) bad('index', `${index} is not a member of ${genesis.chainId}`);
  const registry: [string, Uint8Array, Uint8Array][] = [
    ['public.signing', keys.signingKey, member!.signingKey],
    ['public.chameleon', keys.chameleonKey, member!.chameleonKey],
    ['public.pre', keys.preKey, member!.preKey],
  ];
  for (const [name, have, want] of registry) {
    if (!equalBytes(have, want)) bad(name, `is not member ${index}'s key in the genesis file`);
  }
  return keys;
}
