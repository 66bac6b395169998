/**
 * Membership changes (src/ledger/membership.ts): admit txs in keyblocks, judged against the members
 * before the keyblock, carried through the keyblock tree and the replica.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { merkleRoot } from '../../src/crypto/merkle.ts';
import { decodeKeyblock, encodeKeyblock, keyblockTxRoot } from '../../src/ledger/keyblock.ts';
import {
  addKeyblock,
  createKeyblockTree,
  type KeyblockTree,
  mineKeyblock,
  pinKeyblock,
  rosterAt,
} from '../../src/ledger/keyblock-tree.ts';
import {
  admitQuorum,
  approveAdmission,
  checkAdmits,
  decodeAdmit,
  encodeAdmit,
  rosterLookup,
  signAdmitRequest,
} from '../../src/ledger/membership.ts';
import {
  consensusGroupOf,
  createReplica,
  pinKeyblock as pinInReplica,
  pinnedReputations,
} from '../../src/ledger/replica.ts';
import { pinnedBatchContext } from '../../src/ledger/replica-batch.ts';
import type { AdmitTx, Genesis, Keyblock, Member } from '../../src/ledger/types.ts';
import { makeNetwork } from '../helpers/ledger-fixtures.ts';

const all = makeNetwork(6, 'membership');
const genesis: Genesis = { ...all.genesis, members: all.genesis.members.slice(0, 4) };
const { institutions, random } = all;
const chainId = genesis.chainId;
const peer = (i: number) => ({
  peerId: `12D3KooWPeer${i}`,
  multiaddr: `/ip4/127.0.0.1/tcp/${4000 + i}`,
  binding: random(64),
});

/** An admit tx for candidate `i` (4 or 5) with the approvals of `approvers`. */
function admit(i: number, approvers: readonly number[], member?: Partial<Member>): AdmitTx {
  const m = { ...institutions[i]!.member, ...member };
  const p = peer(i);
  const request = { member: m, peer: p };
  return {
    type: 'admit',
    member: m,
    peer: p,
    proof: signAdmitRequest(chainId, m, p, institutions[i]!.signingSecret, random),
    approvals: approvers.map((a) =>
      approveAdmission(chainId, request, a, institutions[a]!.signingSecret, random),
    ),
  };
}

const codeOf = (v: { ok: boolean; error?: { code: string } }) => (v.ok ? 'ok' : v.error!.code);
const check = (admits: readonly AdmitTx[], roster = genesis.members) =>
  codeOf(checkAdmits(chainId, roster, admits).verdict);

describe('admit txs', () => {
  it('admits the next index with the approvals of more than 2/3 of the members', () => {
    expect(admitQuorum(4)).toBe(3);
    expect(admitQuorum(3)).toBe(3);
    expect(admitQuorum(6)).toBe(5);
    const tx = admit(4, [0, 1, 3]);
    const out = checkAdmits(chainId, genesis.members, [tx]);
    expect(out.verdict).toEqual({ ok: true });
    expect(out.roster.map((m) => m.index)).toEqual([0, 1, 2, 3, 4]);
    // Two in one keyblock: each judged by the members before the keyblock, indexes in order.
    const two = checkAdmits(chainId, genesis.members, [tx, admit(5, [0, 1, 2])]);
    expect(two.verdict).toEqual({ ok: true });
    expect(two.roster.map((m) => m.index)).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('refuses too few approvals, outsiders, forgeries, a taken index, name or key', () => {
    expect(check([admit(4, [0, 1])])).toBe('QUORUM_SHORT_MEMBERS');
    expect(check([admit(4, [])])).toBe('QUORUM_SHORT_MEMBERS');
    // Approved by a non-member (5), or listed out of order.
    expect(check([admit(4, [0, 1, 5])])).toBe('UNAUTHORISED_INSTITUTION');
    const tx = admit(4, [0, 1, 2]);
    expect(check([{ ...tx, approvals: [...tx.approvals].reverse() }])).toBe(
      'UNAUTHORISED_INSTITUTION',
    );
    // An approval by 2 over another request.
    const other = admit(5, [2], { index: 4 });
    expect(
      check([{ ...tx, approvals: [tx.approvals[0]!, tx.approvals[1]!, other.approvals[0]!] }]),
    ).toBe('BAD_SIGNATURE');
    // The proof must be the new member's own signature.
    expect(check([{ ...tx, proof: other.proof }])).toBe('BAD_SIGNATURE');
    // Index: the next one only (4), never reused or skipped.
    expect(check([admit(5, [0, 1, 2])])).toBe('UNKNOWN_INSTITUTION');
    expect(check([admit(4, [0, 1, 2], { index: 3 })])).toBe('UNKNOWN_INSTITUTION');
    // A member's name (any case) or key: refused, though not as malformed (it depends on the
    // members the judge knows).
    expect(check([admit(4, [0, 1, 2], { name: 'HOSPITAL-1' })])).toBe('UNAUTHORISED_INSTITUTION');
    const m0 = genesis.members[0]!;
    expect(check([admit(4, [0, 1, 2], { preKey: m0.preKey })])).toBe('UNAUTHORISED_INSTITUTION');
    expect(check([admit(4, [0, 1, 2], { name: ' padded' })])).toBe('MALFORMED');
    expect(check([admit(4, [0, 1, 2], { chameleonKey: new Uint8Array(33).fill(5) })])).toBe(
      'MALFORMED',
    );
    // The same institution twice in one keyblock: the second takes index 5 with the first's keys.
    expect(check([tx, admit(4, [0, 1, 2], { index: 5 })])).toBe('UNAUTHORISED_INSTITUTION');
  });

  it('breaks on any changed byte of the request, proof or an approval', () => {
    const tx = admit(4, [0, 1, 2]);
    const bytes = encodeAdmit(tx);
    fc.assert(
      fc.property(fc.nat({ max: bytes.length - 1 }), fc.integer({ min: 1, max: 255 }), (at, x) => {
        const changed = bytes.slice();
        changed[at]! ^= x;
        let decoded: AdmitTx;
        try {
          decoded = decodeAdmit(changed);
        } catch {
          return true; // no longer decodes: refused as malformed
        }
        expect(check([decoded])).not.toBe('ok');
      }),
      { numRuns: 300 },
    );
  });
});

describe('rosterLookup', () => {
  it('follows the roster as it is replaced', () => {
    let roster: readonly Member[] = genesis.members;
    let calls = 0;
    const lookup = rosterLookup(() => {
      calls++;
      return roster;
    });
    expect(lookup(4)).toBeUndefined();
    expect(lookup(1)?.name).toBe('hospital-1');
    roster = [...roster, institutions[4]!.member];
    expect(lookup(4)?.name).toBe('hospital-4');
    expect(calls).toBe(3);
  });
});

describe('admit txs in keyblocks', () => {
  const miner = (i: number) => ({
    index: i,
    signingKey: institutions[i]!.member.signingKey,
    signingSecret: institutions[i]!.signingSecret,
  });
  const mine = (tree: KeyblockTree, parentId: string, by: number, admits: AdmitTx[] = []) => {
    const parent = tree.nodes.get(parentId)!;
    const kb = mineKeyblock(tree, {
      parentId,
      miner: miner(by),
      registers: [],
      admits,
      time: parent.time + 1000,
      attempts: 1_000_000,
      random,
    });
    if (kb === null) throw new Error('no nonce found');
    return kb;
  };
  const add = (tree: KeyblockTree, kb: Keyblock) => addKeyblock(tree, kb, kb.time, () => false);

  it('encodes them, roots them after the registers, and keeps the root of a keyblock without', () => {
    let tree = createKeyblockTree(genesis);
    const tx = admit(4, [0, 1, 2]);
    const kb = mine(tree, tree.pinned, 1, [tx]);
    expect(decodeKeyblock(encodeKeyblock(kb))).toEqual(kb);
    expect(kb.txRoot).toEqual(keyblockTxRoot([], [tx]));
    expect(keyblockTxRoot([])).toEqual(merkleRoot([]));
    const empty = mine(tree, tree.pinned, 1);
    expect(decodeKeyblock(encodeKeyblock(empty)).admits).toEqual([]);
    tree = add(tree, kb).tree;
    // Swapping the admit tx for another breaks the tx root.
    const swapped = { ...kb, admits: [admit(4, [1, 2, 3])] };
    expect(codeOf(add(createKeyblockTree(genesis), swapped).verdict)).toBe('BAD_TX_ROOT');
  });

  it('lets the new member mine on the branch that admits it, and pins it with the keyblock', () => {
    let tree = createKeyblockTree(genesis);
    const admitting = mine(tree, tree.pinned, 1, [admit(4, [0, 1, 2])]);
    tree = add(tree, admitting).tree;
    const parent = tree.nodes.get(tree.head)!;
    expect(rosterAt(tree, parent).map((m) => m.index)).toEqual([0, 1, 2, 3, 4]);
    expect(tree.roster.map((m) => m.index)).toEqual([0, 1, 2, 3]);
    // On another branch (the pinned genesis as parent) member 4 is nobody.
    const outsider = mine(tree, tree.pinned, 4);
    expect(codeOf(add(tree, outsider).verdict)).toBe('UNKNOWN_INSTITUTION');
    const byNew = mine(tree, tree.head, 4);
    const added = add(tree, byNew);
    expect(added.verdict).toEqual({ ok: true });
    tree = pinKeyblock(added.tree, tree.head).tree;
    expect(tree.roster.map((m) => m.index)).toEqual([0, 1, 2, 3, 4]);
    // Admitted once: the same tx again on top is a taken index.
    const again = mine(tree, tree.head, 0, [admit(4, [0, 1, 2])]);
    expect(codeOf(add(tree, again).verdict)).toBe('UNKNOWN_INSTITUTION');
  });

  it('judges a batch alike at replicas that have and have not pinned the admitting keyblock', () => {
    // Replicas at different keyblock heights judge a batch by its anchor: the members it may carry
    // and the group must not depend on whether the admission is pinned here yet.
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 12 }),
        fc.integer({ min: 0, max: 12 }),
        (chunkSize, admitAt, extra) => {
          const g: Genesis = { ...genesis, params: { ...genesis.params, chunkSize, groupSize: 5 } };
          const pinTo = (height: number) => {
            let r = createReplica({ genesis: g });
            for (let h = 1; h <= height; h++) {
              const admits = h === admitAt ? [admit(4, [0, 1, 2])] : [];
              r = pinInReplica(r, { height: h, miner: h % 4, registers: [], admits });
            }
            return r;
          };
          const before = pinTo(admitAt - 1);
          const after = pinTo(admitAt + extra);
          // Every anchor both may judge (at most the lower one's pinned keyblock).
          for (let anchor = 1; anchor <= admitAt - 1; anchor++) {
            const x = pinnedBatchContext(before, anchor);
            const y = pinnedBatchContext(after, anchor);
            expect(y.members(4)).toBe(x.members(4));
            expect(y.group.map((m) => m.member)).toEqual(x.group.map((m) => m.member));
          }
          // From the chunk after the admitting one on, the new member counts.
          const firstCounting = (Math.floor((admitAt - 1) / chunkSize) + 1) * chunkSize + 1;
          if (admitAt + extra >= firstCounting) {
            expect(pinnedBatchContext(after, firstCounting).members(4)?.index).toBe(4);
            expect(pinnedBatchContext(after, firstCounting).group.map((m) => m.member)).toContain(
              4,
            );
          }
          if (firstCounting - 1 >= admitAt) {
            expect(pinnedBatchContext(after, firstCounting - 1).members(4)).toBeUndefined();
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('adds the member to the replica: account, history from the next chunk, bundles from then', () => {
    const { chunkSize } = genesis.params;
    let replica = createReplica({ genesis });
    const admits = [admit(4, [0, 1, 2])];
    replica = pinInReplica(replica, { height: 1, miner: 0, registers: [], admits });
    // On the roster at once; taking part (its bundles judged) only from the next chunk.
    expect(replica.chain.roster.find((m) => m.index === 4)?.name).toBe('hospital-4');
    expect(replica.chain.members(4)).toBeUndefined();
    expect(replica.chain.accounts.get(4)).toBe(0);
    expect(replica.histories.find((h) => h.index === 4)?.joinedChunk).toBe(0);
    // In its own chunk it counts for nothing: not in reputations, the group or a batch's members.
    expect(pinnedReputations(replica).map((r) => r.index)).toEqual([0, 1, 2, 3]);
    expect(pinnedBatchContext(replica, 1).members(4)).toBeUndefined();
    for (let h = 2; h <= chunkSize + 1; h++) {
      replica = pinInReplica(replica, { height: h, miner: h % 4, registers: [] });
    }
    // The chunk that admitted it is complete: it counts now, alike at every replica.
    expect(pinnedReputations(replica).map((r) => r.index)).toEqual([0, 1, 2, 3, 4]);
    expect(replica.chain.members(4)?.name).toBe('hospital-4');
    expect(pinnedBatchContext(replica, chunkSize + 1).members(4)?.index).toBe(4);
    expect(pinnedBatchContext(replica, chunkSize).members(4)).toBeUndefined();
    // Reputation earned by others keeps it out of a 4-seat group until it earns its seat.
    expect(consensusGroupOf(replica).map((g) => g.member)).not.toContain(4);
  });
});
