/**
 * Admission files and the node's admission inbox (src/node/admission-file.ts, admission-inbox.ts):
 * every bad field is named, and the inbox refuses for good what can never be admitted, keeps
 * what may be later, and marks what is pinned, on real files.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { OK, reject } from '../../src/ledger/errors.ts';
import { approveAdmission, signAdmitRequest } from '../../src/ledger/membership.ts';
import type { AdmitTx, Member } from '../../src/ledger/types.ts';
import {
  formatAdmissionFile,
  parseAdmissionFile,
  sortApprovals,
} from '../../src/node/admission-file.ts';
import { scanAdmissionInbox } from '../../src/node/admission-inbox.ts';
import { makeNetwork } from '../helpers/ledger-fixtures.ts';

const all = makeNetwork(6, 'admission-files');
const members = all.genesis.members.slice(0, 4);
const chainId = all.genesis.chainId;
const dir = mkdtempSync(join(tmpdir(), 'spchain-admission-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function request(i: number, approvers: readonly number[]): AdmitTx {
  const member = all.institutions[i]!.member;
  const peer = {
    peerId: '12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf',
    multiaddr: `/ip4/127.0.0.1/tcp/${4000 + i}`,
    binding: all.random(64),
  };
  return {
    type: 'admit',
    member,
    peer,
    proof: signAdmitRequest(chainId, member, peer, all.institutions[i]!.signingSecret, all.random),
    approvals: approvers.map((a) =>
      approveAdmission(
        chainId,
        { member, peer },
        a,
        all.institutions[a]!.signingSecret,
        all.random,
      ),
    ),
  };
}

describe('admission files', () => {
  it('round-trip, with approvals in canonical order whatever order they were added in', () => {
    const tx = request(4, [2, 0, 1]);
    const parsed = parseAdmissionFile(formatAdmissionFile({ chainId, tx }), 'a.json');
    expect(parsed.chainId).toBe(chainId);
    expect(parsed.tx.approvals.map((a) => a.member)).toEqual([0, 1, 2]);
    expect(parsed.tx).toEqual({ ...tx, approvals: sortApprovals(tx.approvals) });
    // The same member approving twice keeps the later approval only.
    const again = sortApprovals([
      ...tx.approvals,
      { ...tx.approvals[0]!, signature: all.random(64) },
    ]);
    expect(again).toHaveLength(3);
  });

  it('name the field that is wrong', () => {
    type Json = {
      [k: string]: unknown;
      member: Record<string, unknown>;
      peer: Record<string, unknown>;
      approvals: Record<string, unknown>[];
    };
    const good = JSON.parse(formatAdmissionFile({ chainId, tx: request(4, [0]) })) as Json;
    const cases: [string, (j: Json) => void, RegExp][] = [
      ['not JSON', () => {}, /\(file\) is not JSON/],
      ['format', (j) => (j.format = 'x'), /format must be "spchain-admission"/],
      ['an unknown field', (j) => (j.extra = 1), /extra is not a known field/],
      ['a short key', (j) => (j.member.preKey = 'ab'), /member\.preKey/],
      ['a peer id', (j) => (j.peer.peerId = 'not base58 0OIl'), /peer\.peerId/],
      ['a multiaddr', (j) => (j.peer.multiaddr = 'tcp/1'), /peer\.multiaddr/],
      ['a binding', (j) => (j.peer.binding = 'zz'), /peer\.binding/],
      ['an approval', (j) => (j.approvals[0]!.member = -1), /approvals\[0\]\.member/],
      ['a proof', (j) => delete j.proof, /proof is missing/],
    ];
    for (const [what, change, message] of cases) {
      const j = structuredClone(good);
      change(j);
      const text = what === 'not JSON' ? '{' : JSON.stringify(j);
      expect(() => parseAdmissionFile(text, 'a.json'), what).toThrow(message);
    }
  });
});

describe('the admission inbox', () => {
  it('submits what may be admitted, refuses for good what cannot, and marks what is pinned', async () => {
    const inbox = join(dir, 'admissions');
    await mkdir(inbox);
    const put = (name: string, text: string) => writeFile(join(inbox, name), text);
    await put('a-good.json', formatAdmissionFile({ chainId, tx: request(4, [0, 1, 2]) }));
    await put('b-later.json', formatAdmissionFile({ chainId, tx: request(5, [0, 1, 2]) }));
    await put('c-other-chain.json', formatAdmissionFile({ chainId: 'other', tx: request(4, [0]) }));
    await put('d-broken.json', '{"format":');
    await put('e-short.json', formatAdmissionFile({ chainId, tx: request(4, [0]) }));
    await put('notes.txt', 'not an admission');

    let roster: readonly Member[] = members;
    const submitted: number[] = [];
    const reports: { file: string; outcome: string; reason?: string }[] = [];
    const ports = {
      dir: inbox,
      chainId,
      members: () => roster,
      submit: (tx: AdmitTx) => {
        submitted.push(tx.member.index);
        return tx.approvals.length >= 3 ? OK : reject('QUORUM_SHORT_MEMBERS', 'too few');
      },
      report: (e: { file: string; outcome: string; reason?: string }) => reports.push(e),
    };
    await scanAdmissionInbox(ports);
    // Index 5 waits for 4; the short one is refused by the pool; the others never reach it.
    expect(submitted).toEqual([4, 4]);
    expect(reports.map((r) => [r.file, r.outcome])).toEqual([
      ['c-other-chain.json', 'refused'],
      ['d-broken.json', 'refused'],
      ['e-short.json', 'refused'],
    ]);
    expect(reports[0]!.reason).toMatch(/for chain other/);
    expect(reports[2]!.reason).toMatch(/QUORUM_SHORT_MEMBERS/);

    // Member 4 is pinned: its file is marked admitted, and 5 is tried now.
    roster = [...members, all.institutions[4]!.member];
    reports.length = 0;
    submitted.length = 0;
    await scanAdmissionInbox(ports);
    expect(reports.map((r) => [r.file, r.outcome])).toEqual([['a-good.json', 'admitted']]);
    expect(submitted).toEqual([5]);
    expect((await readdir(inbox)).sort()).toEqual([
      'a-good.json.admitted',
      'b-later.json',
      'c-other-chain.json.refused',
      'd-broken.json.refused',
      'e-short.json.refused',
      'notes.txt',
    ]);
    // No inbox at all is no error.
    await scanAdmissionInbox({ ...ports, dir: join(dir, 'none') });
  });
});
