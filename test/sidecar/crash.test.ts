/**
 * SIGKILL of a sidecar process during a stream of ingests (ingest-child.ts), twice, each restart
 * recovering and going on. Then every acknowledged record is there (index, vault, decryptable
 * with the patient's key) and anchored exactly once: the pinned txs of this institution are
 * exactly the txs of the stored record versions, and each patient's pinned leaf seq equals the
 * number of stored versions of its records (seq is strictly sequential, so none is missing and
 * none was signed twice).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { toHex } from '../../src/crypto/bytes.ts';
import { txHash } from '../../src/ledger/tx.ts';
import { decodeResourceEntry } from '../../src/sidecar/entries.ts';
import type { IngestResult } from '../../src/sidecar/ingest.ts';
import { anchorAll, decryptRecord, type Harness, openHarness } from './harness.ts';
import { makeLedgerFixture } from './ledger.ts';

const CHILD = fileURLToPath(new URL('./ingest-child.ts', import.meta.url));
const SEED = 'sidecar-crash';

interface Ack {
  readonly bundle: number;
  readonly results: readonly IngestResult[];
}

/** Runs the child until it has acknowledged `minAcks` bundles, then SIGKILLs it mid-stream. */
async function runAndKill(dir: string, round: number, minAcks: number): Promise<Ack[]> {
  const child = spawn(process.execPath, [CHILD, dir, SEED, String(round)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const acks: Ack[] = [];
  let stderr = '';
  let buffered = '';
  child.stderr.on('data', (b: Buffer) => {
    stderr += b.toString();
  });
  const exited = new Promise<string | number | null>((resolve) =>
    child.on('exit', (code, signal) => resolve(signal ?? code)),
  );
  const read = (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop()!;
    for (const line of lines) if (line.startsWith('ACK ')) acks.push(JSON.parse(line.slice(4)));
  };
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (b: Buffer) => {
      read(b.toString());
      if (acks.length >= minAcks) {
        child.kill('SIGKILL');
        resolve();
      }
    });
    exited.then((how) => reject(new Error(`sidecar child exited early (${how}): ${stderr}`)));
  });
  expect(await exited).toBe('SIGKILL');
  read('\n');
  return acks;
}

let dir: string;
let h: Harness | undefined;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'spchain-crash-'));
});

afterEach(async () => {
  await h?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('sidecar crash', () => {
  it('keeps every acknowledged record and anchors each exactly once across SIGKILLs', async () => {
    const acks = [...(await runAndKill(dir, 0, 12)), ...(await runAndKill(dir, 1, 12))];
    expect(acks.length).toBeGreaterThanOrEqual(24);
    const fixture = makeLedgerFixture(SEED, [0, 0]);
    h = await openHarness(dir, fixture);
    // Anchor whatever the dead processes left on its way, until nothing is left.
    for (let k = 0; k < 20 && (await h.core.txLog.entries()).length > 0; k++) await anchorAll(h);
    expect(await h.core.txLog.entries()).toEqual([]);

    // Every acknowledged record is stored, decryptable, and pinned.
    for (const ack of acks) {
      const patient = fixture.patients[ack.bundle % 2]!;
      for (const r of ack.results) {
        expect(r.outcome).not.toBe('unchanged');
        expect((await h.core.anchorer.status(r.txHash)).state).toBe('pinned');
        const plain = JSON.parse(await decryptRecord(h, r.pointer, patient));
        expect(plain.id).toBe(r.id);
      }
    }

    // The stored versions (acknowledged or written just before a kill) are exactly the pinned
    // txs of this institution, each once.
    const stored = new Set<string>();
    const versionsOf = new Map<string, number>();
    for await (const [key, value] of h.store.spaces.resource.iterator()) {
      const entry = h.store.decodeStored('resource', key, value, decodeResourceEntry);
      for (const v of entry.versions) stored.add(toHex(v.txHash));
      const p = toHex(entry.idHash);
      versionsOf.set(p, (versionsOf.get(p) ?? 0) + entry.versions.length);
    }
    const pinned: string[] = [];
    const tip = h.ledger.store.tip().batch?.height ?? 0;
    for (let height = 1; height <= tip; height++) {
      const batch = await h.ledger.store.getBatch(height);
      for (const b of batch!.bundles) for (const tx of b.txs) pinned.push(toHex(txHash(tx)));
    }
    expect(new Set(pinned).size).toBe(pinned.length);
    expect(new Set(pinned)).toEqual(stored);
    for (const ack of acks) for (const r of ack.results) expect(stored.has(r.txHash)).toBe(true);
    for (const p of fixture.patients) {
      expect((await h.ledger.leaf(p.idHash))?.seq).toBe(versionsOf.get(toHex(p.idHash)));
    }
    expect(h.warnings).toEqual([]);
  }, 180_000);
});
