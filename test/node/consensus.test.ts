/**
 * The BFT driver's crash safety (src/node/consensus.ts, wal.ts): the signing record is on disk
 * before any new message of ours is sent, and a node restarted at the same height resumes after
 * the last round it signed in, with its lock and valid value, so it re-proposes the locked batch
 * rather than signing anything new in a round it already signed in. Keyblock and batch records
 * live apart. A batch decided on a keyblock this node has not pinned waits for it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { equalBytes } from '../../src/crypto/bytes.ts';
import { decodeBatch } from '../../src/ledger/batch.ts';
import { type BftMessage, makeSigner, signMessage } from '../../src/ledger/bft-messages.ts';
import { makeCertificate, signVote } from '../../src/ledger/certificate.ts';
import { genesisAccounts } from '../../src/ledger/fees.ts';
import {
  applyDecision,
  batchValueHash,
  consensusGroupAt,
  createReplica,
  pinKeyblock,
  proposeBatch,
  type Replica,
} from '../../src/ledger/replica.ts';
import { Consensus, defaultConsensusOpts } from '../../src/node/consensus.ts';
import { batchPinning } from '../../src/node/pinning.ts';
import { SerialQueue } from '../../src/node/serial.ts';
import { ConsensusWal } from '../../src/node/wal.ts';
import { makeNetwork } from '../helpers/ledger-fixtures.ts';

const { genesis, institutions } = makeNetwork(4, 'node-consensus', { chunkSize: 1000 });
const chainId = genesis.chainId;
const SELF = 2;
const signers = institutions.map((inst) => makeSigner(inst.index, inst.signingSecret));
/** Long timeouts: nothing fires by itself while a test runs. */
const opts = { ...defaultConsensusOpts, timeoutProposeMs: 60_000, resendIntervalMs: 60_000 };

function startReplica(): Replica {
  const indices = genesis.members.map((m) => m.index);
  const accounts = genesisAccounts(indices, new Map(indices.map((i) => [i, 1000])));
  const replica = createReplica({ genesis, accounts });
  return pinKeyblock(replica, { height: 1, miner: 0, registers: [] });
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'spchain-consensus-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function driver(
  replicaOf: () => Replica,
  commit: (value: Uint8Array) => Promise<void> = async () => {
    throw new Error('no decision expected');
  },
) {
  const wal = await ConsensusWal.open(dir, { fsync: false, maxValueBytes: 1 << 20 }, 'batch');
  const sent: BftMessage[] = [];
  const walAtSend: (number | null)[] = [];
  const consensus = new Consensus(
    {
      chainId,
      self: SELF,
      signer: signers[SELF]!,
      wal,
      queue: new SerialQueue(64),
      now: () => 1_000_000,
      send: (_to, m) => {
        sent.push(m);
        walAtSend.push(wal.record?.round ?? null);
      },
      evidence: () => {},
      ahead: () => {},
      fatal: (err) => {
        throw err;
      },
    },
    batchPinning(
      {
        self: SELF,
        replica: replicaOf,
        group: () => consensusGroupAt(replicaOf(), replicaOf().chain.anchor),
        receiveBundles: () => {},
        hasWork: () => false,
        commit: (value) => commit(value),
      },
      { ...opts, idleBatchIntervalMs: 1 },
    ),
    opts,
  );
  return { wal, sent, walAtSend, consensus };
}

describe('consensus signing record', () => {
  it('is written before our votes leave, and a restart resumes locked in the next round', async () => {
    const replica = startReplica();
    const first = await driver(() => replica);
    await first.consensus.start();
    expect(first.sent).toEqual([]); // member 1 proposes at height 1, round 0

    const value = proposeBatch(replica, 1, 1);
    const hash = batchValueHash(value);
    const proposal = signMessage(
      chainId,
      { type: 'proposal', kind: 'batch', height: 1, round: 0, validRound: -1, value },
      signers[1]!,
      batchValueHash,
    );
    expect((await first.consensus.onMessage(proposal, 1)).ok).toBe(true);
    const prevote = first.sent.find((m) => m.type === 'prevote');
    expect(prevote?.value && equalBytes(prevote.value, hash)).toBe(true);
    for (const member of [0, 1]) {
      const body = {
        type: 'prevote' as const,
        kind: 'batch' as const,
        height: 1,
        round: 0,
        value: hash,
      };
      await first.consensus.onMessage(signMessage(chainId, body, signers[member]!), member);
    }
    const precommit = first.sent.find((m) => m.type === 'precommit');
    expect(precommit?.value && equalBytes(precommit.value, hash)).toBe(true);
    // Every message of ours left after the record naming its round was on disk.
    for (const [k, m] of first.sent.entries()) {
      expect(first.walAtSend[k]).toBeGreaterThanOrEqual(m.round);
    }
    const record = first.wal.record!;
    expect(record).toMatchObject({ height: 1, round: 0, lockedRound: 0, validRound: 0 });
    expect(equalBytes(record.locked!, value)).toBe(true);
    expect(record.polka.length).toBe(3);
    first.consensus.stop();

    // Restart: the record is read back; round 1 is ours to propose, and we re-propose the lock.
    const second = await driver(() => replica);
    expect(second.wal.record).toMatchObject({ height: 1, round: 0, lockedRound: 0 });
    await second.consensus.start();
    expect(second.consensus.position()).toEqual({ height: 1, round: 1 });
    expect(second.sent.every((m) => m.round >= 1)).toBe(true);
    const again = second.sent.find((m) => m.type === 'proposal');
    expect(again?.type).toBe('proposal');
    if (again?.type !== 'proposal') return;
    expect(again.validRound).toBe(0);
    expect(equalBytes(again.value, value)).toBe(true);
    second.consensus.stop();
  });

  it('keeps keyblock and batch records apart', async () => {
    const walOpts = { fsync: false, maxValueBytes: 1 << 20 };
    const batches = await ConsensusWal.open(dir, walOpts, 'batch');
    const record = {
      kind: 'batch' as const,
      height: 3,
      round: 1,
      lockedRound: -1,
      locked: null,
      validRound: -1,
      valid: null,
      polka: [],
    };
    await batches.write(record);
    const keyblocks = await ConsensusWal.open(dir, walOpts, 'keyblock');
    expect(keyblocks.record).toBeNull();
    await expect(keyblocks.write(record)).rejects.toThrow(/batch signing record/);
    await keyblocks.write({ ...record, kind: 'keyblock', height: 7 });
    expect((await ConsensusWal.open(dir, walOpts, 'batch')).record).toEqual(record);
    expect((await ConsensusWal.open(dir, walOpts, 'keyblock')).record?.height).toBe(7);
    // A driver refuses the other kind's record.
    expect(
      () =>
        new Consensus(
          { ...({} as ConstructorParameters<typeof Consensus>[0]), wal: keyblocks },
          batchPinning({} as Parameters<typeof batchPinning>[0], opts),
          opts,
        ),
    ).toThrow(/batch driver given the keyblock signing record/);
  });

  it('holds a proposal anchored to the keyblock being pinned, and judges it once it is', async () => {
    let replica = startReplica();
    const ahead = pinKeyblock(replica, { height: 2, miner: 3, registers: [] });
    const committed: Uint8Array[] = [];
    const d = await driver(
      () => replica,
      async (value) => {
        committed.push(value);
        replica = applyDecision(replica, value, certificate(1, value));
      },
    );
    await d.consensus.start();
    // Member 1 proposes at height 1 a batch anchored to keyblock 2, which we have not pinned.
    const value = proposeBatch(ahead, 1, 1);
    expect(decodeBatch(value).keyblockHeight).toBe(2);
    const hash = batchValueHash(value);
    const body = { type: 'proposal', kind: 'batch', height: 1, round: 0, validRound: -1, value };
    const proposal = signMessage(chainId, body as never, signers[1]!, batchValueHash);
    expect((await d.consensus.onMessage(proposal, 1)).ok).toBe(true);
    expect(d.sent).toEqual([]); // held: neither judged valid nor nil
    d.consensus.wake();
    await d.consensus.catchUp();
    expect(d.sent).toEqual([]); // still held
    replica = ahead;
    d.consensus.wake();
    await d.consensus.catchUp();
    const ours = d.sent.find((m) => m.type === 'prevote');
    expect(ours?.value && equalBytes(ours.value, hash)).toBe(true);
    for (const type of ['prevote', 'precommit'] as const) {
      for (const member of [0, 1]) {
        const vote = { type, kind: 'batch' as const, height: 1, round: 0, value: hash };
        await d.consensus.onMessage(signMessage(chainId, vote, signers[member]!), member);
      }
    }
    expect(committed).toHaveLength(1);
    expect(equalBytes(committed[0]!, value)).toBe(true);
    d.consensus.stop();
  });

  it('judges at once a proposal anchored beyond the next keyblock: nil', async () => {
    const replica = startReplica();
    const far = [2, 3].reduce(
      (r, height) => pinKeyblock(r, { height, miner: 3, registers: [] }),
      replica,
    );
    const d = await driver(() => replica);
    await d.consensus.start();
    const value = proposeBatch(far, 1, 1);
    const body = { type: 'proposal', kind: 'batch', height: 1, round: 0, validRound: -1, value };
    const proposal = signMessage(chainId, body as never, signers[1]!, batchValueHash);
    await d.consensus.onMessage(proposal, 1);
    expect(d.sent.find((m) => m.type === 'prevote')?.value).toBeNull();
    d.consensus.stop();
  });
});

function certificate(height: number, value: Uint8Array) {
  const subject = { kind: 'batch' as const, height, round: 0, value: batchValueHash(value) };
  return makeCertificate(
    subject,
    [0, 1, 2].map((member) => ({
      member,
      signature: signVote(institutions[member]!.signingSecret, chainId, {
        ...subject,
        type: 'precommit',
      }),
    })),
  );
}
