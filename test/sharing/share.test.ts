/**
 * Sharing end to end: three institutions in one process, each with real LevelDB stores and a real
 * libp2p node on loopback (network.ts). A patient's records are at two holders (A = 0, home; B = 1,
 * given a leaf); the patient grants C = 2, which fetches them over the p2p record service and gets
 * every record verified and decrypted, with corrections applied. Then: tampering holders (each
 * case a warning, the record not served), revocation and expiry (the holder refuses and
 * re-encrypts nothing; the receiver drops its cache), caching, an unreachable holder, and bad
 * input at both ends.
 */

import { sha256 } from '@noble/hashes/sha2.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signConsent, signRevocation } from '../../src/authz/consent.ts';
import { type Grant, makeGrant } from '../../src/authz/grant.ts';
import { equalBytes, fromHex, toHex, utf8 } from '../../src/crypto/bytes.ts';
import {
  encodeCapsule,
  encodeCapsuleFrag,
  encrypt,
  reencrypt,
} from '../../src/crypto/umbral/index.ts';
import { makeRecordTx } from '../../src/ledger/author.ts';
import type { Microblock } from '../../src/ledger/microblock.ts';
import { isSidecarError } from '../../src/sidecar/errors.ts';
import type { SharedFetch } from '../../src/sidecar/share.ts';
import { ShareReceiver, type ShareReceiverOpts } from '../../src/sidecar/share-receiver.ts';
import {
  decodeShareResponse,
  encodeShareItem,
  encodeSharePage,
  type ShareItem,
  type SharePageRequest,
} from '../../src/sidecar/share-wire.ts';
import { observation, record } from '../sidecar/harness.ts';
import type { TestPatient } from '../sidecar/ledger.ts';
import { type NetInstitution, openShareNet, type ShareNet, type Tamper } from './network.ts';

const HOUR = 3_600_000;
const A = 0;
const B = 1;
const C = 2;

function grantTo(
  net: ShareNet,
  p: TestPatient,
  grantee: number,
  id = 'grant-1',
  hours = 24,
): Grant {
  const { genesis } = net.fixture;
  return makeGrant({
    chainId: genesis.chainId,
    idHash: p.idHash,
    patientPreSecret: p.preSecret,
    patientSigningSecret: p.signingSecret,
    grantee: { index: grantee, preKey: genesis.members[grantee]!.preKey },
    consentId: id,
    start: net.now - HOUR,
    end: net.now + hours * HOUR,
    now: net.now,
  });
}

const ids = (f: SharedFetch) => f.records.map((r) => `${r.resourceType}/${r.id}`).sort();
const byId = (f: SharedFetch, id: string) => f.records.find((r) => r.id === id);

/** P's records: at A three Observations (one corrected), at B two (one entered in error). */
async function loadRecords(net: ShareNet, p: TestPatient): Promise<void> {
  await net.addLeaf(p, B);
  await net.ingest(A, [
    record(p, observation('a1', 71)),
    record(p, observation('a2', 72)),
    record(p, observation('a3', 73)),
  ]);
  await net.ingest(B, [record(p, observation('b1', 81)), record(p, observation('b2', 82))]);
  await net.anchorAll();
  await net.ingest(A, [record(p, observation('a1', 75))]); // an update: a label tx
  await net.ingest(B, [record(p, observation('b2', 82, { status: 'entered-in-error' }))]);
  expect(await net.anchorAll()).toBe(2);
}

describe('sharing between three institutions over libp2p', () => {
  let net: ShareNet;
  let P: TestPatient;
  let Q: TestPatient;
  let inst: readonly NetInstitution[];

  beforeAll(async () => {
    net = await openShareNet({ seed: 'share-e2e', homes: [A, A], members: 3 });
    [P, Q] = net.fixture.patients as [TestPatient, TestPatient];
    inst = net.institutions;
    await loadRecords(net, P!);
    await net.ingest(A, [record(Q!, observation('q1', 99))]);
    await net.anchorAll();
  }, 120_000);

  afterAll(async () => {
    await net?.close();
  });

  it('the granted institution gets every record verified, decrypted and corrected', async () => {
    const grant = grantTo(net, P, C);
    expect(await inst[A]!.sharing.acceptGrant(grant)).toEqual({
      outcome: 'stored',
      consentId: 'grant-1',
      grantee: C,
    });
    await inst[B]!.sharing.acceptGrant(grant);

    const got = await inst[C]!.sharing.fetchShared(P.idHash);
    expect(got.warnings).toEqual([]);
    expect(ids(got)).toEqual([
      'Observation/a1',
      'Observation/a2',
      'Observation/a3',
      'Observation/b1',
      'Observation/b2',
    ]);
    expect(got.holders).toEqual([
      { holder: A, status: 'served', fetched: 4, cached: 0 },
      { holder: B, status: 'served', fetched: 3, cached: 0 },
    ]);
    // The correction replaced a1's first version; b2 is marked entered in error.
    const a1 = byId(got, 'a1')!;
    expect(a1.resource).toEqual(observation('a1', 75));
    expect(a1.version).toBe('2');
    expect(a1.provenance).toMatchObject({ holder: A, kind: 'label', seq: 4, cached: false });
    expect(a1.provenance.supersedes).toEqual([a1.provenance.origin]);
    expect(byId(got, 'b2')!.enteredInError).toBe(true);
    expect(byId(got, 'b1')!.enteredInError).toBe(false);
    expect(byId(got, 'b1')!.resource).toEqual(observation('b1', 81));
    // Provenance names txs pinned in C's own chain, in the batches its certificates sign.
    const store = inst[C]!.ledger.store;
    for (const r of got.records) {
      const proof = await store.getRecordProof(fromHex(r.provenance.txHash));
      expect(proof?.height).toBe(r.provenance.batchHeight);
      expect(toHex(proof!.certificate.value)).toBe(r.provenance.batchHash);
      expect(r.provenance.block).toEqual(got.block);
    }
    // Nothing in C's warnings or the holders' logs.
    expect(inst.flatMap((i) => i.warnings)).toEqual([]);
  });

  it('serves from its cache and asks holders only for what is new', async () => {
    const before = inst[A]!.sharing.holder.reencrypted + inst[B]!.sharing.holder.reencrypted;
    const again = await inst[C]!.sharing.fetchShared(P.idHash);
    expect(again.holders.map((h) => [h.fetched, h.cached])).toEqual([
      [0, 4],
      [0, 3],
    ]);
    expect(ids(again)).toHaveLength(5);
    expect(again.records.every((r) => r.provenance.cached)).toBe(true);
    expect(inst[A]!.sharing.holder.reencrypted + inst[B]!.sharing.holder.reencrypted).toBe(before);

    await net.ingest(A, [record(P, observation('a4', 74))]);
    await net.anchorAll();
    const more = await inst[C]!.sharing.fetchShared(P.idHash);
    expect(more.holders[0]).toMatchObject({ holder: A, fetched: 1, cached: 4 });
    expect(byId(more, 'a4')!.resource).toEqual(observation('a4', 74));
    expect(more.warnings).toEqual([]);
  });

  it('pages through long histories within the record and byte bounds asked', async () => {
    let requests = 0;
    const c = inst[C]!;
    const counted = {
      requestRecord: (to: number, body: Uint8Array, o?: { timeoutMs?: number }) => {
        requests++;
        return c.p2p.requestRecord(to, body, o);
      },
    };
    const receiver = (o: Partial<ShareReceiverOpts>) =>
      new ShareReceiver(
        {
          store: c.store,
          ledger: c.ledger.store,
          transport: counted,
          self: { index: C, preKey: c.preKey, preSecret: c.preSecret },
          members: (i) => net.fixture.genesis.members[i],
        },
        o,
      );
    await c.sharing.forget(P.idHash);
    const paged = await receiver({ pageRecords: 2 }).fetchShared(P.idHash);
    expect(paged.warnings).toEqual([]);
    expect(ids(paged)).toHaveLength(6);
    expect(paged.holders.map((h) => h.fetched)).toEqual([5, 3]);
    expect(requests).toBe(3 + 2); // A: 5 records in pages of 2; B: 3
    // Pages of about one record's bytes: one record per answer.
    await c.sharing.forget(P.idHash);
    requests = 0;
    const narrow = await receiver({ pageBytes: 1500 }).fetchShared(P.idHash);
    expect(narrow.warnings).toEqual([]);
    expect(ids(narrow)).toHaveLength(6);
    expect(requests).toBe(5 + 3);
    // A page too small for any record: each is named as skipped, none is served.
    await c.sharing.forget(P.idHash);
    const tiny = await receiver({ pageBytes: 300 }).fetchShared(P.idHash);
    expect(tiny.records).toEqual([]);
    expect(new Set(tiny.warnings.map((w) => w.code))).toEqual(new Set(['SKIPPED']));
    expect(tiny.warnings).toHaveLength(8);
    expect(tiny.warnings[0]!.message).toMatch(/TOO_LARGE/);
    await c.sharing.forget(P.idHash);
  });

  it('a holder that cannot be reached leaves its cached records served, with a warning', async () => {
    const idle = await openShareNet({ seed: 'share-idle', homes: [A], members: 3 });
    try {
      const [p] = idle.fixture.patients as [TestPatient];
      await loadRecords(idle, p);
      const g = grantTo(idle, p, C);
      await idle.institutions[A]!.sharing.acceptGrant(g);
      await idle.institutions[B]!.sharing.acceptGrant(g);
      expect(ids(await idle.institutions[C]!.sharing.fetchShared(p.idHash))).toHaveLength(5);
      await idle.institutions[B]!.p2p.stop();
      const got = await idle.institutions[C]!.sharing.fetchShared(p.idHash);
      expect(got.holders[1]).toMatchObject({ holder: B, status: 'unreachable', cached: 3 });
      expect(got.warnings.map((w) => [w.code, w.holder])).toEqual([['UNREACHABLE', B]]);
      expect(ids(got)).toHaveLength(5);
    } finally {
      await idle.close();
    }
  }, 120_000);

  describe('a tampering holder: a warning naming record and holder, the record not served', () => {
    /** A's answers to C for P, with item `id` replaced by `f(item)` (null: left out). */
    function tamperItem(id: string, f: (item: ShareItem, all: ShareItem[]) => ShareItem): Tamper {
      return (answer, request) => {
        const res = decodeShareResponse(answer, request);
        if (res.type !== 'page') return answer;
        const items = res.items.map((i) => (i.meta.id === id ? f(i, [...res.items]) : i));
        return encodeSharePage({ ...res, items: items.map(encodeShareItem) });
      };
    }

    async function fetchFresh(): Promise<SharedFetch> {
      await inst[C]!.sharing.forget(P.idHash);
      try {
        return await inst[C]!.sharing.fetchShared(P.idHash);
      } finally {
        inst[A]!.tamper = null;
      }
    }

    function expectOnly(got: SharedFetch, code: string, id: string): void {
      expect(got.warnings.map((w) => [w.code, w.holder, w.record?.id])).toEqual([[code, A, id]]);
      expect(got.records.find((r) => r.id === id)).toBeUndefined();
      expect(got.records.length).toBe(5); // the other records are served
    }

    it('a wrong ciphertext', async () => {
      inst[A]!.tamper = tamperItem('a2', (i) => {
        const ciphertext = i.ciphertext.slice();
        ciphertext[40]! ^= 0x80;
        return { ...i, ciphertext };
      });
      expectOnly(await fetchFresh(), 'WRONG_CIPHERTEXT', 'a2');
    });

    it('a cfrag for another capsule', async () => {
      inst[A]!.tamper = tamperItem('a2', (i, all) => {
        // a2 and a3 came in one bundle and share a capsule; a1's update came in another.
        expect(all.find((x) => x.meta.id === 'a3')!.capsule).toEqual(i.capsule);
        const other = all.find((x) => !equalBytes(x.capsule, i.capsule));
        if (other === undefined) throw new Error('the test needs a record with another capsule');
        return { ...i, cfrags: other.cfrags };
      });
      expectOnly(await fetchFresh(), 'BAD_CFRAG', 'a2');
    });

    it('a tx not pinned (forged with a valid opening: A holds its trapdoor)', async () => {
      const decision = await inst[A]!.sharing.grants.decide(P.idHash, C, net.now);
      if (!decision.allow) throw new Error('the grant should allow');
      const pinned = (await inst[A]!.ledger.store.getMicroblockByIdHash(P.idHash))!;
      inst[A]!.tamper = tamperItem('a2', (i) => {
        // Another a2 in the same place of A's leaf: same seq, same running hash before it.
        const before: Microblock = {
          ...pinned,
          leaves: pinned.leaves.map((l) =>
            l.institution === A ? { ...l, seq: i.tx.seq - 1, running: i.prevRunning } : l,
          ),
        };
        const fake = encrypt(P.preKey, utf8(JSON.stringify(observation('a2', 1))));
        const tx = makeRecordTx(
          before,
          net.fixture.institutions[A]!,
          { type: 'medical', pointer: sha256(fake.ciphertext) },
          i.tx.fee,
        );
        return {
          ...i,
          tx,
          capsule: encodeCapsule(fake.capsule),
          cfrags: decision.kfrags.map((k) => encodeCapsuleFrag(reencrypt(fake.capsule, k))),
          ciphertext: fake.ciphertext,
        };
      });
      expectOnly(await fetchFresh(), 'NOT_PINNED', 'a2');
    });

    it('a record of another patient', async () => {
      await inst[A]!.sharing.acceptGrant(grantTo(net, Q, C, 'grant-q'));
      inst[A]!.tamper = async (answer, request, from) => {
        const res = decodeShareResponse(answer, request);
        if (res.type !== 'page') return answer;
        const theirs: SharePageRequest = { ...request, idHash: Q.idHash, after: 0 };
        const other = decodeShareResponse(
          await inst[A]!.sharing.holder.answer(theirs, from),
          theirs,
        );
        if (other.type !== 'page') throw new Error('the Q grant should allow');
        const items = [...res.items, { ...other.items[0]!, meta: { ...other.items[0]!.meta } }];
        return encodeSharePage({ ...res, items: items.map(encodeShareItem) });
      };
      const got = await fetchFresh();
      expect(got.warnings.map((w) => [w.code, w.holder, w.record?.id])).toEqual([
        ['OTHER_PATIENT', A, 'q1'],
      ]);
      expect(got.records.find((r) => r.id === 'q1')).toBeUndefined();
      expect(got.records.length).toBe(6);
    });

    it('an answer that does not decode', async () => {
      inst[A]!.tamper = (answer) => answer.subarray(0, answer.length - 3);
      const got = await fetchFresh();
      expect(got.holders[0]).toMatchObject({ holder: A, status: 'bad-response' });
      expect(got.warnings.map((w) => [w.code, w.holder])).toEqual([['BAD_RESPONSE', A]]);
      expect(got.records.every((r) => r.provenance.holder === B)).toBe(true);
    });

    it('records withheld', async () => {
      inst[A]!.tamper = (answer, request) => {
        const res = decodeShareResponse(answer, request);
        if (res.type !== 'page') return answer;
        const items = res.items.filter((i) => i.meta.id !== 'a3');
        return encodeSharePage({ ...res, items: items.map(encodeShareItem) });
      };
      const got = await fetchFresh();
      expect(got.warnings.map((w) => [w.code, w.holder])).toEqual([['WITHHELD', A]]);
      expect(got.warnings[0]!.message).toMatch(/seq 3\b/);
      expect(got.records.find((r) => r.id === 'a3')).toBeUndefined();
    });
  });
});

describe('revocation and expiry', () => {
  let net: ShareNet;
  let P: TestPatient;
  let inst: readonly NetInstitution[];
  let grant: Grant;

  beforeAll(async () => {
    net = await openShareNet({ seed: 'share-revoke', homes: [A], members: 3 });
    [P] = net.fixture.patients as [TestPatient];
    inst = net.institutions;
    await loadRecords(net, P);
    grant = grantTo(net, P, C, 'grant-r', 2);
    await inst[A]!.sharing.acceptGrant(grant);
    await inst[B]!.sharing.acceptGrant(grant);
  }, 120_000);

  afterAll(async () => {
    await net?.close();
  });

  it('no grant: refused, nothing re-encrypted', async () => {
    const other = await openShareNet({ seed: 'share-nogrant', homes: [A], members: 3 });
    try {
      const [p] = other.fixture.patients as [TestPatient];
      await loadRecords(other, p);
      const got = await other.institutions[C]!.sharing.fetchShared(p.idHash);
      expect(got.records).toEqual([]);
      expect(got.holders.map((h) => [h.status, h.reason])).toEqual([
        ['denied', 'NO_GRANT'],
        ['denied', 'NO_GRANT'],
      ]);
      expect(other.institutions[A]!.sharing.holder.reencrypted).toBe(0);
      // B (a holder itself) has no grant either: A refuses it too.
      const asB = await other.institutions[B]!.sharing.fetchShared(p.idHash);
      expect(asB.holders.map((h) => h.reason)).toEqual(['NO_GRANT']);
    } finally {
      await other.close();
    }
  }, 120_000);

  it('a signed revoke stops re-encryption at the holder at once; the receiver drops its cache', async () => {
    const first = await inst[C]!.sharing.fetchShared(P.idHash);
    expect(first.records).toHaveLength(5);
    const reencrypted = inst[A]!.sharing.holder.reencrypted;
    const { chainId } = net.fixture.genesis;
    await inst[A]!.sharing.revoke(signRevocation(chainId, P.idHash, 'grant-r', P.signingSecret));
    const got = await inst[C]!.sharing.fetchShared(P.idHash);
    expect(got.holders[0]).toMatchObject({ holder: A, status: 'denied', reason: 'REVOKED' });
    expect(inst[A]!.sharing.holder.reencrypted).toBe(reencrypted);
    expect(got.records.every((r) => r.provenance.holder === B)).toBe(true);
    expect(got.records).toHaveLength(2);
    const kept: Uint8Array[] = [];
    for await (const k of inst[C]!.store.spaces.sharedRecord.keys()) kept.push(k);
    expect(kept.every((k) => k[33] === B)).toBe(true);
    // The old grant cannot be given again.
    const again = await inst[A]!.sharing.acceptGrant(grant).catch((e: unknown) => e);
    expect(isSidecarError(again, 'GRANT_REFUSED')).toBe(true);
    expect((again as { detail: { reason: string } }).detail.reason).toBe('REVOKED');
    // A revoke not signed by the patient is refused.
    const forged = signRevocation(chainId, P.idHash, 'grant-r', net.fixture.patients[0]!.preSecret);
    const err = await inst[B]!.sharing.revoke(forged).catch((e: unknown) => e);
    expect((err as { detail: { reason: string } }).detail.reason).toBe('BAD_SIGNATURE');
  });

  it('a Consent re-signed inactive revokes too', async () => {
    const inactive = { ...grant.consent, status: 'inactive' };
    const signature = signConsent(net.fixture.genesis.chainId, inactive, P.signingSecret);
    expect(
      await inst[B]!.sharing.acceptGrant({ ...grant, consent: inactive, signature }),
    ).toMatchObject({ outcome: 'revoked', consentId: 'grant-r' });
    const got = await inst[C]!.sharing.fetchShared(P.idHash);
    expect(got.records).toEqual([]);
    expect(got.holders.map((h) => h.reason)).toEqual(['REVOKED', 'REVOKED']);
  });

  it('an expired grant is refused by the holder', async () => {
    const g = grantTo(net, P, C, 'grant-e', 1);
    await inst[A]!.sharing.acceptGrant(g);
    expect((await inst[C]!.sharing.fetchShared(P.idHash)).holders[0]!.status).toBe('served');
    net.now += 2 * HOUR;
    const got = await inst[C]!.sharing.fetchShared(P.idHash);
    expect(got.holders[0]).toMatchObject({ status: 'denied', reason: 'EXPIRED' });
    const late = await inst[A]!.sharing.acceptGrant(g).catch((e: unknown) => e);
    expect((late as { detail: { reason: string } }).detail.reason).toBe('EXPIRED');
  });

  it("bad input: grants not the patient's, an unknown patient, a malformed request", async () => {
    const forged = { ...grant, signature: signConsent('x', grant.consent, P.signingSecret) };
    const e1 = await inst[A]!.sharing.acceptGrant(forged).catch((e: unknown) => e);
    expect((e1 as { detail: { reason: string } }).detail.reason).toBe('BAD_SIGNATURE');
    const stranger = {
      ...grant.consent,
      patient: { identifier: { system: 'urn:spchain:idhash', value: 'cd'.repeat(32) } },
    };
    const e2 = await inst[A]!.sharing.acceptGrant({ ...grant, consent: stranger }).catch(
      (e: unknown) => e,
    );
    expect((e2 as { detail: { reason: string } }).detail.reason).toBe('UNREGISTERED');
    await expect(inst[C]!.sharing.fetchShared(new Uint8Array(32))).rejects.toMatchObject({
      code: 'UNREGISTERED_PATIENT',
    });
    await expect(inst[C]!.p2p.requestRecord(A, Uint8Array.of(9, 9, 9))).rejects.toThrow(/kind/);
  });
});
