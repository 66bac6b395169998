/**
 * Ingest against a real one-institution ledger: records become ciphertexts in the vault and txs
 * that the ledger's own rules accept and pin, in order, with corrections as label txs; failures
 * write nothing; re-posting is idempotent; concurrent ingests keep every leaf chain valid.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { fromHex, toHex, utf8 } from '../../src/crypto/bytes.ts';
import { verifyChameleon } from '../../src/crypto/chameleon.ts';
import { makeLeafTx } from '../../src/ledger/author.ts';
import { appendRecord, leafContext, nextRunning } from '../../src/ledger/microblock.ts';
import { decodeTx, signBundle, signGrant } from '../../src/ledger/tx.ts';
import { chameleonCheckKey } from '../../src/ledger/verify-cache.ts';
import { isSidecarError, type SidecarErrorCode } from '../../src/sidecar/errors.ts';
import type { IngestRecord } from '../../src/sidecar/ingest.ts';
import { sealAll } from '../../src/sidecar/ingest-worker-seal.ts';
import {
  anchorAll,
  decryptRecord,
  dumpDb,
  type Harness,
  observation,
  openHarness,
  record,
} from './harness.ts';
import { type LedgerFixture, makeLedgerFixture } from './ledger.ts';

// Patients 0-2 have their home (and so a leaf) at institution 0; patient 3 only at institution 1.
let fixture: LedgerFixture;
let dir: string;
let h: Harness;

beforeAll(() => {
  fixture = makeLedgerFixture('sidecar-ingest', [0, 0, 0, 1], 2);
});

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'spchain-sidecar-'));
  h = await openHarness(dir, fixture);
});

afterEach(async () => {
  await h.close();
  rmSync(dir, { recursive: true, force: true });
});

const P = () => fixture.patients;

async function expectCode(p: Promise<unknown>, code: SidecarErrorCode) {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(isSidecarError(err), `expected SidecarError ${code}, got ${String(err)}`).toBe(true);
  expect((err as { code: string }).code).toBe(code);
  return err as Error & { detail: Record<string, unknown> };
}

describe('ingest', () => {
  it('encrypts each record to the patient, and the ledger pins its txs', async () => {
    const [a, b] = P();
    const records = [
      record(a!, observation('obs-a1', 71)),
      record(a!, observation('obs-a2', 72)),
      record(b!, observation('obs-b1', 80)),
    ];
    const results = await h.core.ingestor.ingest(records);
    expect(results.map((r) => [r.id, r.outcome, r.kind, r.version])).toEqual([
      ['obs-a1', 'created', 'medical', '1'],
      ['obs-a2', 'created', 'medical', '1'],
      ['obs-b1', 'created', 'medical', '1'],
    ]);
    // Decrypt round trip with the patient's secret key; another patient's key does not open it.
    const plain = await decryptRecord(h, results[0]!.pointer, a!);
    expect(JSON.parse(plain)).toEqual(observation('obs-a1', 71));
    await expect(decryptRecord(h, results[0]!.pointer, b!)).rejects.toThrow();
    // The txs point at the ciphertexts and are queued (handed over in the background after the
    // answer: then the outbox is empty).
    await h.core.ingestor.handedOver();
    expect(h.core.txLog.outboxSize).toBe(0);
    expect((await h.queue.stats()).waiting).toBe(3);
    for (const r of results) {
      expect(await h.core.anchorer.status(r.txHash)).toEqual({ state: 'queued', handedOver: true });
    }

    await h.core.anchorer.runOnce();
    expect(await h.core.anchorer.status(results[0]!.txHash)).toEqual({ state: 'mempool' });
    expect(await h.ledger.pinAll()).toBe(3);
    const status = await h.core.anchorer.status(results[2]!.txHash);
    expect(status.state).toBe('pinned');
    if (status.state === 'pinned') {
      expect(status.height).toBe(1);
      expect(status.certificate.height).toBe(1);
      expect(status.certificate.signatures.length).toBe(2);
      const proof = await h.ledger.store.getRecordProof(fromHex(results[2]!.txHash));
      const tx = proof?.tx;
      expect(tx?.type === 'medical' && toHex(tx.pointer)).toBe(results[2]!.pointer);
    }
    expect((await h.ledger.leaf(a!.idHash))?.seq).toBe(2);
    expect((await h.ledger.leaf(b!.idHash))?.seq).toBe(1);
    expect(h.warnings).toEqual([]);
  });

  it('makes a correction a label tx on the corrected medical tx, which the ledger accepts', async () => {
    const [a] = P();
    const [v1] = await h.core.ingestor.ingest([record(a!, observation('obs-1', 60))]);
    await anchorAll(h);
    // An update of a stored resource, then an entered-in-error, then a correction of it made by
    // another resource naming it; only the last anchoring round pins them.
    const [v2] = await h.core.ingestor.ingest([record(a!, observation('obs-1', 61))]);
    const [v3] = await h.core.ingestor.ingest([
      record(a!, observation('obs-1', 61, { status: 'entered-in-error' })),
    ]);
    const [other] = await h.core.ingestor.ingest([
      record(a!, observation('obs-2', 62), {
        correctionOf: { resourceType: 'Observation', id: 'obs-1' },
      }),
    ]);
    expect([v2, v3, other].map((r) => [r!.outcome, r!.kind, r!.version])).toEqual([
      ['updated', 'label', '2'],
      ['updated', 'label', '3'],
      ['created', 'label', '1'],
    ]);
    const own = await h.core.txLog.entries();
    expect(own.map((e) => toHex(e.hash))).toEqual([v2!.txHash, v3!.txHash, other!.txHash]);
    for (const e of own) {
      const tx = decodeTx(e.tx);
      expect(tx.type === 'label' && toHex(tx.target)).toBe(v1!.txHash);
    }
    // The ledger's mempool and batch validation accept the labels: they are pinned.
    expect(await anchorAll(h)).toBe(3);
    for (const r of [v2, v3, other]) {
      expect((await h.core.anchorer.status(r!.txHash)).state).toBe('pinned');
    }
    expect((await h.ledger.leaf(a!.idHash))?.seq).toBe(4);
    expect(JSON.parse(await decryptRecord(h, v3!.pointer, a!)).status).toBe('entered-in-error');
  });

  it('seals a bundle with one capsule per patient and resource type, a fresh nonce per record', async () => {
    const [a, b] = P();
    const condition = (id: string) => ({
      resourceType: 'Condition',
      id,
      subject: { reference: 'Patient/x' },
      code: { text: `condition ${id}` },
    });
    const records = [
      ...[1, 2, 3, 4, 5].map((k) => record(a!, observation(`grp-a-obs${k}`, 60 + k))),
      ...[1, 2, 3].map((k) => record(a!, condition(`grp-a-cond${k}`))),
      record(b!, observation('grp-b-obs1', 70)),
      record(b!, observation('grp-b-obs2', 70)),
    ];
    const before = h.core.ingestor.sealedBundles.worker;
    const results = await h.core.ingestor.ingest(records);
    expect(h.core.ingestor.sealedBundles.worker).toBe(before + 1);
    const envelopes = await Promise.all(
      results.map(async (r) => (await h.store.vault.get(fromHex(r.pointer)))!),
    );
    const capsuleOf = (k: number) => toHex(envelopes[k]!.capsule);
    expect(new Set([0, 1, 2, 3, 4].map(capsuleOf)).size).toBe(1);
    expect(new Set([5, 6, 7].map(capsuleOf)).size).toBe(1);
    expect(new Set([8, 9].map(capsuleOf)).size).toBe(1);
    expect(new Set([0, 5, 8].map(capsuleOf)).size).toBe(3);
    // Same plaintext value for b's two records, yet distinct nonces and ciphertexts.
    expect(new Set(envelopes.map((e) => toHex(e.ciphertext.subarray(0, 24)))).size).toBe(10);
    for (const [k, r] of results.entries()) {
      const owner = k < 8 ? a! : b!;
      const other = k < 8 ? b! : a!;
      expect(JSON.parse(await decryptRecord(h, r.pointer, owner)).id).toBe(r.id);
      await expect(decryptRecord(h, r.pointer, other)).rejects.toThrow();
    }
    expect(await anchorAll(h)).toBe(10);
  });

  it('gives, per sealed tx, the key of the chameleon check the node would make itself', async () => {
    const [a] = P();
    const block = (await h.ledger.store.getMicroblockByIdHash(a!.idHash))!;
    const institution = fixture.institutions[0]!;
    const content = (k: number) => utf8(JSON.stringify(observation(`sealed-${k}`, k)));
    const { sealed } = sealAll(
      {
        blocks: [block],
        jobs: [0, 1, 2].map((k) => ({ block: 0, content: content(k), target: null, group: 'x' })),
        institution,
        fee: fixture.genesis.params.minFee,
      },
      fixture.random,
    );
    let at = block;
    for (const s of sealed) {
      // What appendRecord checks, from the pinned view of the block and the member's public key.
      const leaf = at.leaves.find((l) => l.institution === 0)!;
      const member = fixture.genesis.members[0]!;
      const ctx = leafContext(at.header.idHash, 0);
      const running = nextRunning(leaf.running, s.tx);
      expect(s.checked).toBe(
        chameleonCheckKey(member.chameleonKey, ctx, running, leaf.digest, s.tx.opening),
      );
      expect(verifyChameleon(member.chameleonKey, ctx, running, leaf.digest, s.tx.opening)).toBe(
        true,
      );
      const next = appendRecord(
        at,
        s.tx,
        (i) => fixture.genesis.members[i],
        () => true,
      );
      expect(next.ok).toBe(true);
      if (!next.ok) return;
      at = next.block;
    }
  });

  it('is idempotent: an identical version makes no tx and returns the stored result', async () => {
    const [a] = P();
    const resource = observation('obs-idem', 90, { meta: { versionId: '1', source: 'ehr' } });
    const first = await h.core.ingestor.ingest([record(a!, resource)]);
    await h.core.ingestor.handedOver();
    const before = await dumpDb(h.store);
    // Same content: re-posted as is, with other key order and spacing, with our meta fields.
    const reordered = Object.fromEntries(Object.entries(resource).reverse());
    const variants: IngestRecord[] = [
      record(a!, resource),
      { ...record(a!, resource), content: utf8(JSON.stringify(reordered, null, 2)) },
      record(a!, {
        ...resource,
        meta: { source: 'ehr', versionId: '7', lastUpdated: '2024-01-01T00:00:00Z' },
      }),
    ];
    for (const v of variants) {
      const again = await h.core.ingestor.ingest([v]);
      expect(again).toEqual([{ ...first[0], outcome: 'unchanged' }]);
    }
    expect(await dumpDb(h.store)).toEqual(before);
    // A change of content is a new version.
    const changed = await h.core.ingestor.ingest([
      record(a!, { ...resource, meta: { versionId: '1', source: 'other' } }),
    ]);
    expect(changed[0]!.outcome).toBe('updated');
    expect(await anchorAll(h)).toBe(2);
  });

  it('takes a record as the mapper hands it: a collection Bundle, stamped per write', async () => {
    const [a] = P();
    const payload = (stamp: string, value: number) => ({
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        { resource: observation('in-bundle', value, { meta: { lastUpdated: stamp } }) },
        { resource: { resourceType: 'Encounter', id: 'enc-1', meta: { versionId: stamp } } },
      ],
    });
    const rec = (stamp: string, value: number) => ({
      ...record(a!, { resourceType: 'Observation', id: 'in-bundle' }),
      content: utf8(JSON.stringify(payload(stamp, value))),
    });
    const [first] = await h.core.ingestor.ingest([rec('2024-01-01T00:00:00Z', 1)]);
    const [again] = await h.core.ingestor.ingest([rec('2025-06-01T12:00:00Z', 1)]);
    expect(again).toEqual({ ...first, outcome: 'unchanged' });
    const [next] = await h.core.ingestor.ingest([rec('2025-06-01T12:00:00Z', 2)]);
    expect([next!.outcome, next!.kind]).toEqual(['updated', 'label']);
    expect(
      JSON.parse(await decryptRecord(h, next!.pointer, a!)).entry[0].resource.valueQuantity.value,
    ).toBe(2);
    expect(await anchorAll(h)).toBe(2);
  });

  it('writes nothing when record k fails, and the author state does not move', async () => {
    const [a, b, , d] = P();
    await h.core.ingestor.ingest([record(a!, observation('seed', 1))]);
    await anchorAll(h);
    const failing: [string, IngestRecord[], SidecarErrorCode][] = [
      [
        'unknown patient',
        [
          record(a!, observation('x1', 1)),
          record(b!, observation('x2', 2)),
          {
            ...record(a!, observation('x3', 3)),
            patient: { system: 'urn:test:national-id', value: 'NOBODY' },
          },
        ],
        'UNKNOWN_PATIENT',
      ],
      [
        'no leaf of this institution',
        [record(a!, observation('x1', 1)), record(d!, observation('x4', 4))],
        'NO_LEAF',
      ],
      [
        'correction of an unknown resource',
        [
          record(a!, observation('x1', 1)),
          record(b!, observation('x2', 2)),
          record(a!, observation('x5', 5), {
            correctionOf: { resourceType: 'Observation', id: 'never-stored' },
          }),
        ],
        'UNKNOWN_RESOURCE',
      ],
      [
        'a resource of another patient',
        [record(a!, observation('x1', 1)), record(b!, observation('seed', 2))],
        'PATIENT_MISMATCH',
      ],
      [
        'malformed content',
        [
          record(a!, observation('x1', 1)),
          { ...record(a!, observation('x6', 6)), content: utf8('{"resourceType": "Observ') },
        ],
        'INVALID_RECORD',
      ],
    ];
    for (const [what, records, code] of failing) {
      const before = await dumpDb(h.store);
      const err = await expectCode(h.core.ingestor.ingest(records), code);
      expect(err.message, what).toMatch(/^entry \d+ \(Observation\/[\w-]+\)/);
      expect(await dumpDb(h.store), what).toEqual(before);
    }
    expect((await h.queue.stats()).waiting).toBe(0);
    expect(h.core.txLog.outboxSize).toBe(0);
    // The leaf continues where the last successful ingest left it: the ledger accepts the next tx.
    await h.core.ingestor.ingest([record(a!, observation('after', 7))]);
    expect(await anchorAll(h)).toBe(1);
    expect((await h.ledger.leaf(a!.idHash))?.seq).toBe(2);
  });

  it('writes for a patient of another home once the patient granted this institution a leaf', async () => {
    const d = P()[3]!;
    const [home, self] = [fixture.institutions[1]!, fixture.institutions[0]!];
    const { chainId } = fixture.genesis;
    await expectCode(h.core.ingestor.ingest([record(d, observation('g1', 1))]), 'NO_LEAF');
    // The patient signs the grant on their own device; the home institution adds the leaf.
    const grant = signGrant(chainId, d.idHash, self.index, d.signingSecret);
    const block = (await h.ledger.store.getMicroblockByIdHash(d.idHash))!;
    const leafTx = makeLeafTx({ chainId, block, home, newcomer: self, fee: 1, grant });
    expect(
      h.ledger.submitBundle(signBundle(chainId, home.index, [leafTx], home.signingSecret)).ok,
    ).toBe(true);
    expect(await h.ledger.pinAll()).toBe(1);
    const [r] = await h.core.ingestor.ingest([record(d, observation('g1', 1))]);
    expect(await anchorAll(h)).toBe(1);
    expect((await h.core.anchorer.status(r!.txHash)).state).toBe('pinned');
    expect((await h.ledger.leaf(d.idHash, self.index))?.seq).toBe(1);
  });

  it('names records by entry, type and id only: no identifier or content in errors', async () => {
    const [a] = P();
    const secretValue = 'SECRET-PATIENT-ID-4711';
    const content = { ...observation('obs-leak', 1), note: [{ text: 'Jane Doe, very private' }] };
    const cases: IngestRecord[] = [
      { ...record(a!, content), patient: { system: 'urn:x', value: secretValue } },
      { ...record(a!, content), content: utf8(`${JSON.stringify(content)} Jane Doe`) },
      { ...record(a!, content), id: 'another-id' },
    ];
    for (const c of cases) {
      const err = await h.core.ingestor.ingest([c]).catch((e: Error) => e);
      expect(isSidecarError(err)).toBe(true);
      const text = `${(err as Error).message} ${JSON.stringify((err as unknown as { detail: unknown }).detail)}`;
      expect(text).not.toContain(secretValue.slice(0, 10));
      expect(text).not.toContain('Jane');
      expect(text).toMatch(/entry 0/);
    }
  });

  it('rejects malformed input naming the entry and field', async () => {
    const [a] = P();
    const good = record(a!, observation('ok', 1));
    const bad: [Partial<IngestRecord> & Record<string, unknown>, RegExp][] = [
      [{ resourceType: 'observation' }, /entry 0: record.resourceType/],
      [{ id: 'has space' }, /entry 0: record.id/],
      [{ id: 'x'.repeat(65) }, /entry 0: record.id/],
      [{ content: new Uint8Array(0) }, /content must be non-empty/],
      [{ content: utf8('[1,2]') }, /content is not a JSON object/],
      [{ content: Uint8Array.of(0xff, 0xfe) }, /content is not valid UTF-8/],
      [{ version: 'v 1' }, /version must be/],
      [{ correctionOf: { resourceType: 'Observation' } as never }, /correctionOf.id/],
    ];
    for (const [patch, message] of bad) {
      const err = await expectCode(
        h.core.ingestor.ingest([{ ...good, ...patch }]),
        'INVALID_RECORD',
      );
      expect(err.message).toMatch(message);
    }
    await expectCode(h.core.ingestor.ingest([]), 'INVALID_RECORD');
    const dup = await expectCode(h.core.ingestor.ingest([good, good]), 'INVALID_RECORD');
    expect(dup.message).toMatch(/entry 1 .*repeats the resource of entry 0/);
  });

  it('serialises concurrent ingests of one patient and runs other patients alongside', async () => {
    const [a, b, c] = P();
    const bundles = Array.from({ length: 12 }, (_, k) => {
      const p = [a, b, c][k % 3]!;
      return [record(p, observation(`c-${k}-1`, k)), record(p, observation(`c-${k}-2`, k + 100))];
    });
    const results = await Promise.all(bundles.map((b) => h.core.ingestor.ingest(b)));
    expect(results.flat().every((r) => r.outcome === 'created')).toBe(true);
    // Concurrent corrections of one resource and re-posts of the same bundle.
    const again = await Promise.all([
      h.core.ingestor.ingest(bundles[0]!),
      h.core.ingestor.ingest([record(a!, observation('c-0-1', 999))]),
      h.core.ingestor.ingest(bundles[0]!.slice(1)),
    ]);
    expect(again[0]!.map((r) => r.outcome)).toEqual(['unchanged', 'unchanged']);
    expect(again[1]![0]!.outcome).toBe('updated');
    expect(await anchorAll(h)).toBe(25);
    for (const p of [a, b, c]) expect((await h.ledger.leaf(p!.idHash))?.seq).toBeGreaterThan(0);
    const seqs = await Promise.all([a, b, c].map((p) => h.ledger.leaf(p!.idHash)));
    expect(seqs.map((l) => l?.seq)).toEqual([9, 8, 8]);
    expect(h.warnings).toEqual([]);
  });
});
