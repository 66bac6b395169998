/**
 * Ingest's crypto in the worker pool (ingest-worker.ts) and inline give the same kind of result:
 * txs the ledger accepts and pins in order, ciphertexts the patient opens, and a correction of a
 * resource created earlier in the same bundle labels that resource's new medical tx.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { toHex } from '../../src/crypto/bytes.ts';
import { decodeTx } from '../../src/ledger/tx.ts';
import {
  anchorAll,
  decryptRecord,
  type Harness,
  observation,
  openHarness,
  record,
} from './harness.ts';
import { type LedgerFixture, makeLedgerFixture } from './ledger.ts';

let fixture: LedgerFixture;
let dir: string;
let h: Harness | undefined;

beforeAll(() => {
  fixture = makeLedgerFixture('sidecar-ingest-worker', [0, 0], 2);
});

afterEach(async () => {
  await h?.close();
  h = undefined;
  rmSync(dir, { recursive: true, force: true });
});

describe.each([
  { where: 'worker' as const, cryptoThreads: 1 },
  { where: 'inline' as const, cryptoThreads: 0 },
])('ingest sealed $where', ({ where, cryptoThreads }) => {
  it('pins every tx, with in-bundle corrections labelling the new medical tx', async () => {
    dir = mkdtempSync(join(tmpdir(), 'spchain-ingest-worker-'));
    const harness = await openHarness(dir, fixture, { ingest: { cryptoThreads } });
    h = harness;
    const [a, b] = fixture.patients;
    const records = [
      ...Array.from({ length: 6 }, (_, k) => record(a!, observation(`w-${k}`, k))),
      record(b!, observation('w-6', 6)),
      record(b!, observation('w-7', 7)),
      // Corrections of w-2, created above in this bundle: directly, and through a label.
      record(a!, observation('w-8', 8), {
        correctionOf: { resourceType: 'Observation', id: 'w-2' },
      }),
      record(a!, observation('w-9', 9), {
        correctionOf: { resourceType: 'Observation', id: 'w-8' },
      }),
    ];
    const results = await harness.core.ingestor.ingest(records);
    expect(harness.core.ingestor.sealedBundles[where]).toBe(1);
    expect(results.map((r) => [r.id, r.outcome, r.kind])).toEqual([
      ...Array.from({ length: 8 }, (_, k) => [`w-${k}`, 'created', 'medical']),
      ['w-8', 'created', 'label'],
      ['w-9', 'created', 'label'],
    ]);
    const own = await harness.core.txLog.entries();
    expect(own.map((e) => toHex(e.hash))).toEqual(results.map((r) => r.txHash));
    for (const e of own.slice(8)) {
      const tx = decodeTx(e.tx);
      expect(tx.type === 'label' && toHex(tx.target)).toBe(results[2]!.txHash);
    }
    expect(await anchorAll(harness)).toBe(10);
    expect((await harness.ledger.leaf(a!.idHash))?.seq).toBe(8);
    expect((await harness.ledger.leaf(b!.idHash))?.seq).toBe(2);
    expect(JSON.parse(await decryptRecord(harness, results[9]!.pointer, a!))).toEqual(
      observation('w-9', 9),
    );
    // The author state continues where the bundle left the leaves: a second bundle pins too.
    const more = await harness.core.ingestor.ingest(
      Array.from({ length: 8 }, (_, k) => record(a!, observation(`x-${k}`, k))),
    );
    expect(more.every((r) => r.outcome === 'created')).toBe(true);
    expect(await anchorAll(harness)).toBe(8);
    expect((await harness.ledger.leaf(a!.idHash))?.seq).toBe(16);
    expect(harness.warnings).toEqual([]);
  });
});
