/**
 * A real ledger for the sidecar tests, built from the ledger's own code: a network of one (or a
 * few) institutions whose keyblock 1 registers some patients (mined, certified by every member),
 * a LevelDB LedgerStore holding the pinned chain, and a replica whose mempool takes the sidecar's
 * bundles under the ledger's rules. `pin` proposes the next batch from the mempool, certifies it
 * with every member's precommit, persists it and applies it, as a node's consensus would.
 * Reopening the store replays the stored batches (the mempool starts empty, as after a restart).
 *
 * Everything is derived from a seed, so a child process rebuilds the same network.
 */
import { deterministicRandom, type RandomBytes } from '../../src/crypto/random.ts';
import { makeRegisterTx } from '../../src/ledger/author.ts';
import { encodeBatch } from '../../src/ledger/batch.ts';
import { makeCertificate, signVote } from '../../src/ledger/certificate.ts';
import type { Verdict } from '../../src/ledger/errors.ts';
import { genesisAccounts } from '../../src/ledger/fees.ts';
import { computeIdHash, type IdHashCost, type PatientIdentity } from '../../src/ledger/idhash.ts';
import { keyblockHash } from '../../src/ledger/keyblock.ts';
import { createKeyblockTree, mineKeyblock } from '../../src/ledger/keyblock-tree.ts';
import { createMicroblock } from '../../src/ledger/microblock.ts';
import {
  applyDecision,
  batchValueHash,
  createReplica,
  pinKeyblock,
  proposeBatch,
  type Replica,
  receiveBundle,
} from '../../src/ledger/replica.ts';
import { checkBatch } from '../../src/ledger/replica-batch.ts';
import type {
  Bundle,
  Bytes,
  Certificate,
  ConsensusKind,
  Genesis,
  Keyblock,
} from '../../src/ledger/types.ts';
import { LedgerStore } from '../../src/store/ledger-store.ts';
import { makeNetwork, makePatient, type TestInstitution } from '../helpers/ledger-fixtures.ts';

/** Cheap idHash cost for tests (the protocol's takes ~0.1 s per patient). */
export const TEST_ID_COST: IdHashCost = { N: 2 ** 10, r: 8, p: 1 };

export interface TestPatient {
  readonly identity: PatientIdentity;
  readonly idHash: Bytes;
  readonly preSecret: Bytes;
  readonly preKey: Bytes;
  /** Stays with the patient: signs grants (a leaf for another institution). */
  readonly signingSecret: Bytes;
  readonly home: number;
}

export interface LedgerFixture {
  readonly genesis: Genesis;
  readonly institutions: readonly TestInstitution[];
  readonly patients: readonly TestPatient[];
  readonly keyblock: Keyblock;
  readonly keyblockCertificate: Certificate;
  readonly random: RandomBytes;
}

const CREDIT = 1_000_000_000;

/**
 * `members` institutions; `homes[k]` is the home institution of patient k (each patient has a
 * leaf only at its home). Patient identifiers are test values, not real ones, unless `identities`
 * gives patient k's (e.g. a synthetic Synthea patient's).
 */
export function makeLedgerFixture(
  seed: string,
  homes: readonly number[],
  members = 1,
  identities: readonly PatientIdentity[] = [],
): LedgerFixture {
  const { genesis, institutions, random } = makeNetwork(members, seed);
  const keys = homes.map(() => makePatient(random));
  const patients: TestPatient[] = homes.map((home, k) => {
    const identity = identities[k] ?? {
      system: 'urn:test:national-id',
      value: `${seed}-${k}`,
      birthDate: `1970-01-${String(1 + (k % 28)).padStart(2, '0')}`,
    };
    return {
      identity,
      idHash: computeIdHash(genesis.idHashKey, identity, TEST_ID_COST),
      preSecret: keys[k]!.preSecret,
      preKey: keys[k]!.preKey,
      signingSecret: keys[k]!.signingSecret,
      home,
    };
  });
  const registers = patients.map((p, k) =>
    makeRegisterTx({
      chainId: genesis.chainId,
      idHash: p.idHash,
      home: institutions[p.home]!,
      patient: keys[k]!,
      fee: genesis.params.minFee,
      random,
    }),
  );
  const miner = institutions[0]!;
  const tree = createKeyblockTree(genesis);
  const keyblock = mineKeyblock(tree, {
    parentId: tree.pinned,
    miner: {
      index: 0,
      signingKey: miner.member.signingKey,
      signingSecret: miner.signingSecret,
    },
    registers,
    time: genesis.time + 1000,
    attempts: 10_000_000,
    random,
  });
  if (keyblock === null) throw new Error('keyblock 1: no nonce found');
  const keyblockCertificate = certify(
    genesis,
    institutions,
    'keyblock',
    1,
    keyblockHash(keyblock),
    random,
  );
  return { genesis, institutions, patients, keyblock, keyblockCertificate, random };
}

function certify(
  genesis: Genesis,
  institutions: readonly TestInstitution[],
  kind: ConsensusKind,
  height: number,
  value: Bytes,
  random: RandomBytes,
): Certificate {
  const subject = { kind, height, round: 0, value };
  return makeCertificate(
    subject,
    institutions.map((i) => ({
      member: i.index,
      signature: signVote(
        i.signingSecret,
        genesis.chainId,
        { ...subject, type: 'precommit' },
        random,
      ),
    })),
  );
}

export class TestLedger {
  readonly store: LedgerStore;
  readonly fixture: LedgerFixture;
  private replica: Replica;
  private readonly random = deterministicRandom('test-ledger-votes');
  private clock = 0;

  private constructor(store: LedgerStore, fixture: LedgerFixture, replica: Replica) {
    this.store = store;
    this.fixture = fixture;
    this.replica = replica;
  }

  /** Opens (or creates) the ledger store at `path`: pins keyblock 1, replays stored batches. */
  static async open(path: string, fixture: LedgerFixture): Promise<TestLedger> {
    const { genesis, keyblock, keyblockCertificate } = fixture;
    const store = await LedgerStore.open(path);
    const members = genesis.members.map((m) => m.index);
    const credits = new Map(members.map((i) => [i, CREDIT]));
    let replica = createReplica({ genesis, accounts: genesisAccounts(members, credits) });
    if (store.tip().keyblock === null) {
      const blocks = keyblock.registers.map((tx, j) => {
        const made = createMicroblock(tx, { i: 1, j }, (i) => genesis.members[i]);
        if (!made.ok) throw new Error(`register ${j} does not make a block`);
        return made.block;
      });
      await store.putPinnedKeyblock(keyblock, keyblockCertificate, blocks);
    }
    replica = pinKeyblock(replica, keyblock);
    const batches = store.tip().batch?.height ?? 0;
    for (let h = 1; h <= batches; h++) {
      const batch = await store.getBatch(h);
      const cert = await store.getCertificate('batch', h);
      if (batch === undefined || cert === undefined) throw new Error(`batch ${h} missing`);
      replica = applyDecision(replica, encodeBatch(batch), cert);
    }
    return new TestLedger(store, fixture, replica);
  }

  /** The node port: the mempool's verdict on a bundle. */
  submitBundle = (bundle: Bundle): Verdict => {
    const u = receiveBundle(this.replica, bundle, this.clock++);
    this.replica = u.replica;
    return u.verdict;
  };

  /** Bundles in the mempool, and how many of them can go into the next batch. */
  mempool(): { held: number; eligible: number } {
    let eligible = 0;
    for (const list of this.replica.mempool.eligible.values()) eligible += list.length;
    return { held: this.replica.mempool.size, eligible };
  }

  get height(): number {
    return this.replica.chain.height;
  }

  /** Pins one batch of the eligible bundles (certified by every member); its tx count. */
  async pin(): Promise<number> {
    const { genesis, institutions } = this.fixture;
    const height = this.replica.chain.height + 1;
    const value = proposeBatch(this.replica, height, 0);
    const checked = checkBatch(this.replica, value);
    if (!checked.verdict.ok) throw checked.verdict.error;
    const batch = checked.batch!;
    const cert = certify(
      genesis,
      institutions,
      'batch',
      height,
      batchValueHash(value),
      this.random,
    );
    await this.store.putPinnedBatch(batch, cert, checked.effects!.microblocks.values());
    this.replica = applyDecision(this.replica, value, cert);
    return batch.bundles.reduce((n, b) => n + b.txs.length, 0);
  }

  /** Pins batches until no eligible bundle is left; the txs pinned. */
  async pinAll(): Promise<number> {
    let total = 0;
    while (this.mempool().eligible > 0) {
      const n = await this.pin();
      if (n === 0) break;
      total += n;
    }
    return total;
  }

  /** The pinned leaf of `institution` in the block of `idHash`. */
  async leaf(idHash: Bytes, institution = 0) {
    const block = await this.store.getMicroblockByIdHash(idHash);
    return block?.leaves.find((l) => l.institution === institution);
  }

  async close(): Promise<void> {
    await this.store.close();
  }
}
