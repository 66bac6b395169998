/**
 * The own-records request and response of the p2p record service (sidecar/share-wire.ts kind 2)
 * and the records query the patient signs (authz/own-records.ts): round trips, and every bound
 * and malformation refused with an error naming the field.
 */
import { describe, expect, it } from 'vitest';
import {
  checkOwnRecordsRequest,
  formatRecordsCursor,
  parseRecordsCursor,
  parseRecordsPath,
} from '../../src/authz/own-records.ts';
import { signPatientRequest } from '../../src/authz/patient-request.ts';
import { fromHex, toHex } from '../../src/crypto/bytes.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';
import { generateSigningKey } from '../../src/crypto/sign.ts';
import { encode } from '../../src/ledger/codec.ts';
import {
  decodeOwnRecordsRequest,
  decodeOwnRecordsResponse,
  encodeOwnRecordItem,
  encodeOwnRecordsPage,
  encodeOwnRecordsRequest,
  encodeOwnRecordsResponse,
  encodeShareRequest,
  type OwnRecordItem,
  type OwnRecordsRequest,
} from '../../src/sidecar/share-wire.ts';

const idHash = Uint8Array.from({ length: 32 }, (_, i) => i);
const request: OwnRecordsRequest = {
  idHash,
  ts: 1_700_000_000_000,
  sig: Uint8Array.from({ length: 64 }, (_, i) => 255 - i),
  path: '/spchain/blocks/3/1/records?holder=1&count=2&after=0a0b.4',
  maxBytes: 4096,
};
const record = (over: Partial<OwnRecordItem> = {}): OwnRecordItem => ({
  resourceType: 'Observation',
  id: 'obs-1',
  version: '2',
  kind: 'medical',
  txHash: new Uint8Array(32).fill(7),
  target: null,
  capsule: new Uint8Array(98).fill(1),
  ciphertext: new Uint8Array(300).fill(2),
  anchoring: { state: 'pinned', batch: 12, index: 3, round: 0 },
  ...over,
});
const bounds = { maxRecords: 2, maxBytes: 4096 };

describe('own-records request', () => {
  it('round-trips', () => {
    expect(decodeOwnRecordsRequest(encodeOwnRecordsRequest(request))).toEqual(request);
  });

  it('refuses another kind, short fields, a relative path, maxBytes 0 and trailing bytes', () => {
    const good = encodeOwnRecordsRequest(request);
    expect(() =>
      decodeOwnRecordsRequest(encodeShareRequest({ idHash, after: 0, maxRecords: 1, maxBytes: 1 })),
    ).toThrow(/kind/);
    expect(() => decodeOwnRecordsRequest(good.subarray(0, 40))).toThrow(/ts|sig/);
    expect(() => decodeOwnRecordsRequest(Uint8Array.from([...good, 0]))).toThrow(/trailing/);
    expect(() =>
      decodeOwnRecordsRequest(encodeOwnRecordsRequest({ ...request, path: 'spchain/x' })),
    ).toThrow(/path/);
    expect(() =>
      decodeOwnRecordsRequest(encodeOwnRecordsRequest({ ...request, maxBytes: 0 })),
    ).toThrow(/maxBytes/);
    expect(() =>
      decodeOwnRecordsRequest(
        encodeOwnRecordsRequest({ ...request, path: `/${'a'.repeat(1024)}` }),
      ),
    ).toThrow(/path/);
    expect(() => encodeOwnRecordsRequest({ ...request, sig: new Uint8Array(63) })).toThrow(/sig/);
  });
});

describe('own-records response', () => {
  it('round-trips a page (records, skipped, next) and a denial', () => {
    const page = {
      type: 'page' as const,
      records: [
        record(),
        record({
          kind: 'label',
          target: new Uint8Array(32).fill(9),
          anchoring: { state: 'pending' },
        }),
      ],
      skipped: [
        {
          resourceType: 'Condition',
          id: 'c',
          version: '1',
          txHash: new Uint8Array(32),
          reason: 'TOO_LARGE',
        },
      ],
      next: '0a0b.4',
    };
    expect(decodeOwnRecordsResponse(encodeOwnRecordsResponse(page), bounds)).toEqual(page);
    const last = { type: 'page' as const, records: [record()], skipped: [] };
    expect(decodeOwnRecordsResponse(encodeOwnRecordsResponse(last), bounds)).toEqual(last);
    const denied = { type: 'denied' as const, reason: 'STALE', message: 'too old' };
    expect(decodeOwnRecordsResponse(encodeOwnRecordsResponse(denied), bounds)).toEqual(denied);
  });

  it('refuses more records than asked, a ciphertext over the bound, a bad cursor or tag', () => {
    const three = encodeOwnRecordsPage({
      records: [record(), record(), record()].map(encodeOwnRecordItem),
      skipped: [],
    });
    expect(() => decodeOwnRecordsResponse(three, bounds)).toThrow(/records count/);
    const big = encodeOwnRecordsPage({
      records: [encodeOwnRecordItem(record({ ciphertext: new Uint8Array(5000) }))],
      skipped: [],
    });
    expect(() => decodeOwnRecordsResponse(big, bounds)).toThrow(/ciphertext/);
    const cursor = encodeOwnRecordsPage({ records: [], skipped: [], next: 'zz' });
    expect(() => decodeOwnRecordsResponse(cursor, bounds)).toThrow(/next/);
    expect(() => decodeOwnRecordsResponse(Uint8Array.from([3]), bounds)).toThrow(/type/);
    // A label without its target, a medical record with one.
    for (const bad of [
      record({ kind: 'label', target: null }),
      record({ target: new Uint8Array(32) }),
    ]) {
      const bytes = encodeOwnRecordsPage({ records: [encodeOwnRecordItem(bad)], skipped: [] });
      expect(() => decodeOwnRecordsResponse(bytes, bounds)).toThrow(/target/);
    }
    // An unknown anchoring state (the item's last byte).
    const item = encodeOwnRecordItem(record({ anchoring: { state: 'pending' } }));
    item[item.length - 1] = 2;
    const anchoring = encodeOwnRecordsPage({ records: [item], skipped: [] });
    expect(() => decodeOwnRecordsResponse(anchoring, bounds)).toThrow(/anchoring/);
    // An empty resource type.
    const empty = encodeOwnRecordsPage({
      records: [encodeOwnRecordItem(record({ resourceType: '' }))],
      skipped: [],
    });
    expect(() => decodeOwnRecordsResponse(empty, bounds)).toThrow(/resourceType/);
    // Trailing bytes after a page.
    const extra = encode((w) => w.u8(1).varint(0).varint(0).bool(false).u8(0));
    expect(() => decodeOwnRecordsResponse(extra, bounds)).toThrow(/trailing/);
  });
});

describe('the signed records query', () => {
  it('parses both paths and the three parameters', () => {
    expect(parseRecordsPath('/spchain/blocks/3/1/records')).toEqual({
      ok: true,
      value: { target: { kind: 'block', i: 3, j: 1 } },
    });
    const hex = 'ab'.repeat(32);
    expect(
      parseRecordsPath(`/spchain/patients/${hex}/records?holder=2&after=00ff.7&count=9`),
    ).toEqual({
      ok: true,
      value: {
        target: { kind: 'patient', idHash: hex },
        holder: 2,
        after: { key: fromHex('00ff'), version: 7 },
        count: 9,
      },
    });
    const cursor = formatRecordsCursor(fromHex('0a0b'), 4);
    expect(cursor).toBe('0a0b.4');
    expect(parseRecordsCursor(cursor)).toEqual({ key: fromHex('0a0b'), version: 4 });
    expect(parseRecordsCursor('0a0.4')).toBeUndefined();
  });

  it('names the field of a bad query', () => {
    for (const [path, field] of [
      ['/spchain/blocks/x/1/records', 'path'],
      ['/fhir/Patient', 'path'],
      ['/spchain/blocks/1/1/records?holder=-1', 'holder'],
      ['/spchain/blocks/1/1/records?count=0', 'count'],
      ['/spchain/blocks/1/1/records?count=201', 'count'],
      ['/spchain/blocks/1/1/records?after=1.1', 'after'],
      ['/spchain/blocks/1/1/records?after=%zz', 'after'],
      ['/spchain/blocks/1/1/records?count=1&count=2', 'count'],
      ['/spchain/blocks/1/1/records?x=1', 'query'],
      [`/spchain/blocks/1/1/records?after=${'00'.repeat(600)}.1`, 'path'],
    ] as const) {
      const r = parseRecordsPath(path);
      expect(r.ok, path).toBe(false);
      expect(!r.ok && r.field, path).toBe(field);
    }
  });

  it('checks the relayed signature: holder, block, window and key', () => {
    const patient = generateSigningKey(deterministicRandom('own-records-wire'));
    const other = generateSigningKey(deterministicRandom('own-records-wire/other'));
    const now = 1_700_000_000_000;
    const block = { i: 3, j: 1, signingKey: patient.publicKey };
    const ctx = { chainId: 'test-chain', now, self: 1, block };
    const signed = (path: string, secret = patient.secretKey, ts = now) => {
      const header = signPatientRequest({
        chainId: 'test-chain',
        method: 'GET',
        path,
        ts,
        idHash,
        signingSecret: secret,
      });
      const sig = fromHex(/sig=([0-9a-f]{128})/.exec(header)![1]!);
      return { idHash: toHex(idHash), ts, sig, path };
    };
    const path = '/spchain/blocks/3/1/records?holder=1&count=5';
    expect(checkOwnRecordsRequest(signed(path), ctx)).toMatchObject({
      ok: true,
      query: { holder: 1, count: 5 },
    });
    const reason = (r: ReturnType<typeof checkOwnRecordsRequest>) => (r.ok ? 'ok' : r.reason);
    expect(reason(checkOwnRecordsRequest(signed(path, other.secretKey), ctx))).toBe(
      'BAD_SIGNATURE',
    );
    expect(reason(checkOwnRecordsRequest({ ...signed(path), path: `${path}0` }, ctx))).toBe(
      'BAD_SIGNATURE',
    );
    expect(
      reason(checkOwnRecordsRequest(signed(path, patient.secretKey, now - 300_001), ctx)),
    ).toBe('STALE');
    expect(reason(checkOwnRecordsRequest(signed('/spchain/blocks/3/1/records'), ctx))).toBe(
      'NOT_HOLDER',
    );
    expect(
      reason(checkOwnRecordsRequest(signed('/spchain/blocks/3/2/records?holder=1'), ctx)),
    ).toBe('NOT_THIS_BLOCK');
    const byId = `/spchain/patients/${'cd'.repeat(32)}/records?holder=1`;
    expect(reason(checkOwnRecordsRequest(signed(byId), ctx))).toBe('NOT_THIS_BLOCK');
    expect(reason(checkOwnRecordsRequest(signed('/spchain/x'), ctx))).toBe('MALFORMED');
  });
});
