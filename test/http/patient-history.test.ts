/**
 * The patient's whole history from any sidecar (issue 6 part 7; paper 5.2 retrieval), over the
 * in-process network (share-net.ts: real LevelDB stores, libp2p on loopback, one replica pinning
 * for all). A Synthea patient's bundle is split between A (home, 0) and B (1, a leaf under the
 * patient's upload grant); C (2) holds nothing and has no grant. The patient asks C, by block
 * number, for the holders and then each holder's pages: C serves A's and B's records by relaying
 * the patient's signature over p2p, as the holders' original ciphertexts (C cannot open them).
 *
 * Each institution's records routes are served here by registerPatientRoutes with the p2p relay
 * (sidecar/own-records.ts relayOwnRecords) as `ownRecords`: createFhirApi does not pass one yet.
 */

import type { Bundle } from '@medplum/fhirtypes';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { splitBundle } from '../../scripts/demo.ts';
import { PATIENT_REQUEST_HEADER, signPatientRequest } from '../../src/authz/patient-request.ts';
import { toHex } from '../../src/crypto/bytes.ts';
import { sign } from '../../src/crypto/sign.ts';
import { decodeCapsule, decryptOriginal } from '../../src/crypto/umbral/index.ts';
import { AuditLog } from '../../src/fhir/audit.ts';
import { ResourceStore } from '../../src/fhir/resource-store.ts';
import { bearerAuthoriser } from '../../src/http/auth.ts';
import { registerPatientRoutes } from '../../src/http/patient-routes.ts';
import { buildHttpServer } from '../../src/http/server.ts';
import { decodeResourceEntry, resourceKey } from '../../src/sidecar/entries.ts';
import { relayOwnRecords } from '../../src/sidecar/own-records.ts';
import {
  decodeOwnRecordsResponse,
  encodeOwnRecordsRequest,
  type OwnRecordsResponse,
} from '../../src/sidecar/share-wire.ts';
import type { TestPatient } from '../sidecar/ledger.ts';
import { TEST_ID_COST } from '../sidecar/ledger.ts';
import { closeSharedParts, SSN, sharedParts, syntheaBundles, TOKEN } from './harness.ts';
import { call, giveLeaf, openShareApiNet, type ShareApiNet } from './share-net.ts';

const A = 0;
const B = 1;
const C = 2;

let s: ShareApiNet;
let P: TestPatient;
let Q: TestPatient;
let pid: string;
let blockPath: string;
/** The patient's records routes of each institution, with the p2p relay. */
const relays: FastifyInstance[] = [];
/** The records each holder took (`Type/id`). */
const posted: Record<number, string[]> = { [A]: [], [B]: [] };

interface Answer {
  status: number;
  json: Record<string, unknown>;
}

interface RecordJson {
  resourceType: string;
  id: string;
  version: string;
  kind: string;
  txHash: string;
  capsule: string;
  ciphertext: string;
  anchoring: { state: string };
}

function signedBy(
  patient: TestPatient,
  path: string,
  opts: { ts?: number; signer?: Uint8Array } = {},
): Record<string, string> {
  return {
    [PATIENT_REQUEST_HEADER]: signPatientRequest({
      chainId: s.net.fixture.genesis.chainId,
      method: 'GET',
      path,
      ts: opts.ts ?? s.net.now,
      idHash: patient.idHash,
      signingSecret: opts.signer ?? patient.signingSecret,
    }),
  };
}

async function get(at: number, path: string, headers = signedBy(P, path)): Promise<Answer> {
  const res = await relays[at]!.inject({ method: 'GET', url: path, headers });
  return { status: res.statusCode, json: JSON.parse(res.body) as Record<string, unknown> };
}

const issueText = (a: Answer) =>
  ((a.json.issue as { details?: { text?: string } }[] | undefined)?.[0]?.details?.text ??
    '') as string;

/** Every page of `holder`'s records asked of institution `at` (one signature per page). */
async function history(at: number, holder: number, count = 4): Promise<RecordJson[]> {
  const out: RecordJson[] = [];
  let after: string | undefined;
  for (let n = 0; n < 100; n++) {
    const path = `${blockPath}?holder=${holder}&count=${count}${after ? `&after=${after}` : ''}`;
    const r = await get(at, path);
    expect(r.status, issueText(r)).toBe(200);
    expect(r.json.holder).toBe(holder);
    const records = r.json.records as RecordJson[];
    expect(records.length).toBeLessThanOrEqual(count);
    out.push(...records);
    after = r.json.next as string | undefined;
    if (after === undefined) return out;
  }
  throw new Error('too many pages');
}

/** The record's content, decrypted with the patient's PRE secret. */
function open(rec: RecordJson, preSecret = P.preSecret): { resourceType: string; id: string }[] {
  const plain = decryptOriginal(
    preSecret,
    decodeCapsule(Buffer.from(rec.capsule, 'base64')),
    Buffer.from(rec.ciphertext, 'base64'),
  );
  const content = JSON.parse(new TextDecoder().decode(plain)) as Bundle;
  return content.resourceType === 'Bundle'
    ? (content.entry ?? []).map((e) => e.resource as { resourceType: string; id: string })
    : [content as unknown as { resourceType: string; id: string }];
}

beforeAll(async () => {
  const bundles = syntheaBundles().slice(0, 1);
  // A second patient (registered, no records): its keys sign the foreign requests.
  const other = { system: SSN, value: '999-00-7117', birthDate: '1980-01-02' };
  s = await openShareApiNet('patient-history', [bundles[0]!.identity, other], 3);
  P = s.patients[0]!;
  Q = s.patients[1]!;
  pid = toHex(P.idHash);
  const { genesis } = s.net.fixture;
  const { chainId } = genesis;

  // B gets a leaf under the patient's upload grant (at A, the home), pinned.
  await giveLeaf(s, P, B);
  const { mapping } = await sharedParts();
  const halves = splitBundle(bundles[0]!.bundle, mapping);
  for (const [n, at] of [A, B].entries()) {
    const r = await call(s, at, 'POST', '/fhir', halves[n]);
    expect(r.status, JSON.stringify(r.json).slice(0, 400)).toBe(200);
    for (const e of (r.json as unknown as Bundle).entry ?? []) {
      const ref = e.response!.location!.split('/_history')[0]!;
      if (mapping.records.has(ref.split('/')[0]!)) posted[at]!.push(ref);
    }
  }
  expect(posted[A]!.length).toBeGreaterThan(3);
  expect(posted[B]!.length).toBeGreaterThan(3);
  expect(await s.net.anchorAll()).toBe(posted[A]!.length + posted[B]!.length);

  const block = (await s.net.institutions[C]!.ledger.store.getMicroblockByIdHash(P.idHash))!;
  blockPath = `/spchain/blocks/${block.header.i}/${block.header.j}/records`;

  for (const inst of s.net.institutions) {
    const db = inst.store.db;
    const audit = new AuditLog(db, `history test ${inst.index}`);
    const anchorStatus = (tx: string) => inst.core.anchorer.status(tx);
    const now = () => s.net.now;
    const app = buildHttpServer(
      bearerAuthoriser({ staticToken: TOKEN }),
      (server) =>
        registerPatientRoutes(server, {
          chainId,
          institution: { index: inst.index, name: genesis.members[inst.index]!.name },
          members: () => genesis.members,
          minFee: genesis.params.minFee,
          idHashKey: genesis.idHashKey,
          idHashCost: TEST_ID_COST,
          store: inst.store,
          resources: new ResourceStore(db),
          ledger: inst.ledger.store,
          registration: {
            chainId,
            self: inst.index,
            submitRegister: () => ({ ok: true }),
            ledger: inst.ledger.store,
            anchorStatus,
            audit,
            now,
          },
          anchorStatus,
          audit,
          ownRecords: relayOwnRecords(inst.p2p, { requestTimeoutMs: 10_000 }),
          base: () => 'http://127.0.0.1/fhir',
          now,
        }),
      { logLevel: 'silent' },
    );
    await app.ready();
    relays.push(app);
  }
}, 180_000);

afterAll(async () => {
  for (const app of relays) await app.close();
  await s?.close();
  await closeSharedParts();
});

describe('the whole history by block number, from an institution that holds nothing', () => {
  it('lists the holders of the block with their pinned record counts', async () => {
    const r = await get(C, blockPath);
    expect(r.status, issueText(r)).toBe(200);
    const { members } = s.net.fixture.genesis;
    expect(r.json).toEqual({
      holders: [
        { index: A, name: members[A]!.name, records: posted[A]!.length },
        { index: B, name: members[B]!.name, records: posted[B]!.length },
      ],
    });
  });

  it('serves every record of both holders as ciphertext the patient’s PRE secret opens', async () => {
    for (const holder of [A, B]) {
      const records = await history(C, holder);
      const seen = records.map((rec) => {
        const inside = open(rec);
        expect(inside.some((x) => x.resourceType === rec.resourceType && x.id === rec.id)).toBe(
          true,
        );
        expect(rec.kind).toBe('medical');
        expect(rec.anchoring.state).toBe('pinned');
        return `${rec.resourceType}/${rec.id}`;
      });
      expect(seen.sort()).toEqual([...posted[holder]!].sort());
      // Pages of another size give the same history.
      expect((await history(C, holder, 200)).map((r) => r.txHash)).toEqual(
        records.map((r) => r.txHash),
      );
    }
  });

  it('relays the holders’ own ciphertexts byte for byte: the relaying sidecar cannot read them', async () => {
    for (const holder of [A, B]) {
      const inst = s.net.institutions[holder]!;
      for (const rec of await history(C, holder, 200)) {
        const entry = await inst.store.read(
          'resource',
          resourceKey(rec.resourceType, rec.id),
          decodeResourceEntry,
        );
        const v = entry!.versions.find((x) => toHex(x.txHash) === rec.txHash)!;
        const envelope = (await inst.store.vault.get(v.pointer))!;
        expect(Buffer.from(rec.capsule, 'base64').equals(Buffer.from(envelope.capsule))).toBe(true);
        expect(Buffer.from(rec.ciphertext, 'base64').equals(Buffer.from(envelope.ciphertext))).toBe(
          true,
        );
        // C's own PRE secret does not open them (nothing was re-encrypted for C).
        expect(() => open(rec, s.net.institutions[C]!.preSecret)).toThrow();
      }
    }
    // C's vault holds none of them.
    const mine = await get(C, `${blockPath}?holder=${C}`);
    expect(mine.status, issueText(mine)).toBe(200);
    expect(mine.json.records).toEqual([]);
  });

  it('serves the same pages at the holder itself and through the patients route', async () => {
    const atA = await get(A, `${blockPath}?holder=${A}&count=200`);
    const viaC = await get(C, `${blockPath}?holder=${A}&count=200`);
    expect(atA.status).toBe(200);
    expect(viaC.json).toEqual(atA.json);
    const path = `/spchain/patients/${pid}/records?holder=${B}&count=200`;
    const byId = await get(C, path);
    expect(byId.status, issueText(byId)).toBe(200);
    expect(
      (byId.json.records as RecordJson[]).map((r) => `${r.resourceType}/${r.id}`).sort(),
    ).toEqual([...posted[B]!].sort());
  });
});

describe('refusals', () => {
  it('401 for another patient’s key or a stale signature, at the relay', async () => {
    const path = `${blockPath}?holder=${B}`;
    const foreign = await get(C, path, signedBy(P, path, { signer: Q.signingSecret }));
    expect(foreign.status).toBe(401);
    expect(issueText(foreign)).toMatch(/signature/);
    const stale = await get(C, path, signedBy(P, path, { ts: s.net.now - 300_001 }));
    expect(stale.status).toBe(401);
    expect(issueText(stale)).toMatch(/timestamp/);
    // Q's own valid signature names Q: P's block is not Q's.
    const other = await get(C, path, signedBy(Q, path));
    expect(other.status).toBe(401);
    expect(issueText(other)).toMatch(/another patient/);
    // Signed for another page than the one asked.
    const moved = await get(C, `${path}&count=5`, signedBy(P, path));
    expect(moved.status).toBe(401);
  });

  it('404 for a holder that is not a leaf with records, or a block that is not pinned', async () => {
    const r = await get(C, `${blockPath}?holder=7`);
    expect(r.status).toBe(404);
    expect(issueText(r)).toMatch(/holds no records/);
    // C is no leaf of the block: A does not ask it.
    expect((await get(A, `${blockPath}?holder=${C}`)).status).toBe(404);
    expect((await get(C, '/spchain/blocks/999/0/records')).status).toBe(404);
  });

  it('400 for a malformed query: names the field', async () => {
    for (const [query, field] of [
      ['?holder=x', 'holder'],
      ['?holder=1&count=0', 'count'],
      ['?holder=1&count=201', 'count'],
      ['?holder=1&after=zz', 'after'],
      ['?holder=1&holder=0', 'holder'],
      ['?holder=1&format=json', 'query'],
      ['?count=5', 'holder'],
    ] as const) {
      const r = await get(C, `${blockPath}${query}`);
      expect(r.status, query).toBe(400);
      expect((r.json.issue as { expression?: string[] }[])[0]!.expression, query).toEqual([field]);
    }
    expect((await get(C, '/spchain/blocks/01/0/records')).status).toBe(400);
  });

  it('the holder checks the patient’s signature itself: a relay cannot forge or alter one', async () => {
    const ask = async (opts: {
      path: string;
      ts?: number;
      secret?: Uint8Array;
      signedPath?: string;
      to?: number;
    }): Promise<OwnRecordsResponse> => {
      const ts = opts.ts ?? s.net.now;
      const header = signedBy(P, opts.signedPath ?? opts.path, {
        ts,
        ...(opts.secret ? { signer: opts.secret } : {}),
      })[PATIENT_REQUEST_HEADER]!;
      const sig = Buffer.from(/sig=([0-9a-f]{128})/.exec(header)![1]!, 'hex');
      const bytes = await s.net.institutions[C]!.p2p.requestRecord(
        opts.to ?? B,
        encodeOwnRecordsRequest({ idHash: P.idHash, ts, sig, path: opts.path, maxBytes: 1 << 20 }),
      );
      return decodeOwnRecordsResponse(bytes, { maxRecords: 200, maxBytes: 1 << 20 });
    };
    const path = `${blockPath}?holder=${B}&count=200`;
    const good = await ask({ path });
    expect(good.type).toBe('page');
    expect(good.type === 'page' && good.records.length).toBe(posted[B]!.length);
    // C's own signing key (a relay forging the patient's signature).
    const forged = await ask({ path, secret: s.net.fixture.institutions[C]!.signingSecret });
    expect(forged).toMatchObject({ type: 'denied', reason: 'BAD_SIGNATURE' });
    // A signature over another page, sent with a path the relay changed.
    const altered = await ask({ path, signedPath: `${blockPath}?holder=${B}&count=1` });
    expect(altered).toMatchObject({ type: 'denied', reason: 'BAD_SIGNATURE' });
    expect(await ask({ path, ts: s.net.now - 300_001 })).toMatchObject({
      type: 'denied',
      reason: 'STALE',
    });
    // A request for A's records, sent to B.
    expect(await ask({ path: `${blockPath}?holder=${A}` })).toMatchObject({
      type: 'denied',
      reason: 'NOT_HOLDER',
    });
    // Another block's path under this patient's signature.
    expect(await ask({ path: `/spchain/blocks/999/0/records?holder=${B}` })).toMatchObject({
      type: 'denied',
      reason: 'NOT_THIS_BLOCK',
    });
    // A path that is no records query.
    const sig = sign(P.signingSecret, 'spchain/patient-request', new Uint8Array(1));
    const bytes = await s.net.institutions[C]!.p2p.requestRecord(
      B,
      encodeOwnRecordsRequest({
        idHash: P.idHash,
        ts: s.net.now,
        sig,
        path: '/fhir/Patient',
        maxBytes: 1024,
      }),
    );
    expect(decodeOwnRecordsResponse(bytes, { maxRecords: 1, maxBytes: 1024 })).toMatchObject({
      type: 'denied',
      reason: 'MALFORMED',
    });
  });
});
