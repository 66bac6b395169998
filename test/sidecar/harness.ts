/**
 * A sidecar core over real parts for the tests: the test ledger (ledger.ts: LedgerStore + replica
 * mempool, pinned by `pin`), the sidecar's LevelDB store, and the embedded durable queue in that
 * same database (src/queue). The node port is the ledger's mempool.
 */
import { join } from 'node:path';
import { toHex, utf8 } from '../../src/crypto/bytes.ts';
import { decodeCapsule, decryptOriginal } from '../../src/crypto/umbral/index.ts';
import { EmbeddedQueue } from '../../src/queue/embedded.ts';
import { SidecarCore } from '../../src/sidecar/core.ts';
import type { IngestOpts, IngestRecord } from '../../src/sidecar/ingest.ts';
import type { EnqueuePort, JobSource } from '../../src/sidecar/ports.ts';
import { SidecarStore } from '../../src/sidecar/store.ts';
import { type LedgerFixture, TEST_ID_COST, TestLedger, type TestPatient } from './ledger.ts';

export interface Harness {
  readonly ledger: TestLedger;
  readonly store: SidecarStore;
  readonly queue: EmbeddedQueue;
  readonly core: SidecarCore;
  readonly warnings: string[];
  close(): Promise<void>;
}

export interface HarnessOpts {
  /** Wraps the queue the core sees (e.g. to make enqueue fail). */
  readonly wrapQueue?: (q: EmbeddedQueue) => EnqueuePort & JobSource;
  /** Institution the sidecar runs as (default 0). */
  readonly institution?: number;
  readonly maxBundleTxs?: number;
  /** Ingest options (e.g. cryptoThreads 0: seal every bundle inline). */
  readonly ingest?: Partial<IngestOpts>;
}

export async function openHarness(
  dir: string,
  fixture: LedgerFixture,
  opts: HarnessOpts = {},
): Promise<Harness> {
  const ledger = await TestLedger.open(join(dir, 'ledger'), fixture);
  const store = await SidecarStore.open(join(dir, 'sidecar'), { syncWrites: false });
  const queue = await EmbeddedQueue.open(store.db, { syncWrites: false, backoffMs: 10 });
  const warnings: string[] = [];
  const inst = fixture.institutions[opts.institution ?? 0]!;
  const core = await SidecarCore.open({
    store,
    genesis: fixture.genesis,
    keys: inst,
    ledger: ledger.store,
    node: ledger,
    queue: opts.wrapQueue?.(queue) ?? queue,
    idHashCost: TEST_ID_COST,
    anchor: { takeWaitMs: 0, busyRetryMs: 5, maxBundleTxs: opts.maxBundleTxs ?? 256 },
    warn: (code, message) => warnings.push(`${code}: ${message}`),
    ...(opts.ingest === undefined ? {} : { ingest: opts.ingest }),
  });
  for (const p of fixture.patients) await core.patients.add(p.identity);
  return {
    ledger,
    store,
    queue,
    core,
    warnings,
    async close() {
      await core.stop();
      await queue.close();
      await store.close();
      await ledger.close();
    },
  };
}

/** Hands every queued job to the node, pins everything eligible, forgets pinned txs. */
export async function anchorAll(h: Harness): Promise<number> {
  for (;;) {
    const n = await h.core.anchorer.runOnce();
    if (n === 0) break;
  }
  const pinned = await h.ledger.pinAll();
  await h.core.anchorer.sweep();
  return pinned;
}

/** Polls `cond` every 10 ms; fails naming `what` after `limitMs` (a generous bound, not a timing check). */
export async function waitFor(cond: () => boolean, what: string, limitMs = 60_000): Promise<void> {
  const end = Date.now() + limitMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A small FHIR Observation for `patient` (test data, not real). */
export function observation(id: string, value: number, extra: Record<string, unknown> = {}) {
  return {
    resourceType: 'Observation',
    id,
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
    valueQuantity: { value, unit: 'beats/minute' },
    ...extra,
  };
}

export function record(
  patient: TestPatient,
  resource: { resourceType: string; id: string } & Record<string, unknown>,
  more: Partial<IngestRecord> = {},
): IngestRecord {
  return {
    patient: { system: patient.identity.system, value: patient.identity.value },
    resourceType: resource.resourceType,
    id: resource.id,
    content: utf8(JSON.stringify(resource)),
    ...more,
  };
}

/** The plaintext of the record at `pointer`, decrypted with the patient's secret key. */
export async function decryptRecord(
  h: Harness,
  pointerHex: string,
  patient: TestPatient,
): Promise<string> {
  const envelope = await h.store.vault.get(Uint8Array.from(Buffer.from(pointerHex, 'hex')));
  if (envelope === undefined) throw new Error(`no vault entry ${pointerHex.slice(0, 16)}`);
  const plain = decryptOriginal(
    patient.preSecret,
    decodeCapsule(envelope.capsule),
    envelope.ciphertext,
  );
  return new TextDecoder().decode(plain);
}

/** Every key and value of the sidecar database (queue included), as hex. */
export async function dumpDb(store: SidecarStore): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const [k, v] of store.db.iterator()) out.set(toHex(k), toHex(v));
  return out;
}
