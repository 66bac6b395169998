/**
 * The BFT driver's crash safety (src/node/consensus.ts, wal.ts): the signing record is on disk
 * before any new message of ours is sent, and a node restarted at the same height resumes after
 * the last round it signed in, with its lock and valid value, so it re-proposes the locked batch
 * rather than signing anything new in a round it already signed in.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { equalBytes } from '../../src/crypto/bytes.ts';
import { type BftMessage, makeSigner, signMessage } from '../../src/ledger/bft-messages.ts';
import { genesisAccounts } from '../../src/ledger/fees.ts';
import {
  batchValueHash,
  createReplica,
  pinKeyblock,
  proposeBatch,
  type Replica,
} from '../../src/ledger/replica.ts';
import { Consensus, defaultConsensusOpts } from '../../src/node/consensus.ts';
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

async function driver(replica: Replica) {
  const wal = await ConsensusWal.open(dir, { fsync: false, maxValueBytes: 1 << 20 });
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
      replica: () => replica,
      receiveBundles: () => {},
      hasWork: () => false,
      send: (_to, m) => {
        sent.push(m);
        walAtSend.push(wal.record?.round ?? null);
      },
      commit: async () => {
        throw new Error('no decision expected');
      },
      evidence: () => {},
      ahead: () => {},
      fatal: (err) => {
        throw err;
      },
    },
    opts,
  );
  return { wal, sent, walAtSend, consensus };
}

describe('consensus signing record', () => {
  it('is written before our votes leave, and a restart resumes locked in the next round', async () => {
    const replica = startReplica();
    const first = await driver(replica);
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
    const second = await driver(replica);
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
});
