/**
 * Helpers for the keyblock tests: a local network's configs with their keys (createLocalnet seals
 * them in key files), certificates signed by the members' real keys, and register txs of a
 * member's new patient.
 */
import { systemRandom } from '../../src/crypto/random.ts';
import { makeRegisterTx } from '../../src/ledger/author.ts';
import { makeCertificate, signVote } from '../../src/ledger/certificate.ts';
import { computeIdHash } from '../../src/ledger/idhash.ts';
import type {
  Bytes,
  Certificate,
  ConsensusKind,
  Genesis,
  RegisterTx,
} from '../../src/ledger/types.ts';
import { type NodeConfig, readNodeConfig } from '../../src/node/config.ts';
import type { InstitutionKeys } from '../../src/node/keys.ts';
import type { Localnet } from '../../src/node/localnet.ts';
import { makePatient } from '../helpers/ledger-fixtures.ts';

export async function localnetConfigs(net: Localnet): Promise<NodeConfig[]> {
  return Promise.all(net.configPaths.map((p) => readNodeConfig(p)));
}

/** A pinning certificate of `kind` at `height` on `value` (a value hash), signed by `signers`. */
export function certify(
  genesis: Genesis,
  keys: readonly InstitutionKeys[],
  kind: ConsensusKind,
  height: number,
  value: Bytes,
  signers: readonly number[] = keys.map((k) => k.index),
): Certificate {
  const subject = { kind, height, round: 0, value };
  return makeCertificate(
    subject,
    signers.map((i) => ({
      member: i,
      signature: signVote(keys[i]!.signingSecret, genesis.chainId, {
        ...subject,
        type: 'precommit',
      }),
    })),
  );
}

/** A register tx of a new patient whose home is `home` (identified by `label`). */
export function newPatientRegister(
  genesis: Genesis,
  home: InstitutionKeys,
  label: string,
): RegisterTx {
  const idHash = computeIdHash(genesis.idHashKey, {
    system: 'urn:spchain:test',
    value: label,
    birthDate: '1980-02-29',
  });
  return makeRegisterTx({
    chainId: genesis.chainId,
    idHash,
    home,
    patient: makePatient(systemRandom),
    fee: genesis.params.minFee,
  });
}
