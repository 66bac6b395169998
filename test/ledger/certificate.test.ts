import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { deterministicRandom } from '../../src/crypto/random.ts';
import { generateSigningKey, type SigningKeyPair } from '../../src/crypto/sign.ts';
import {
  type ConsensusGroup,
  checkQuorum,
  decodeCertificate,
  encodeCertificate,
  encodeVote,
  exceedsOneThird,
  isQuorum,
  makeCertificate,
  signVote,
  verifyCertificate,
  verifyVote,
} from '../../src/ledger/certificate.ts';
import { isLedgerError, type LedgerErrorCode, type Verdict } from '../../src/ledger/errors.ts';
import { ledgerHash } from '../../src/ledger/hash.ts';
import type { Certificate } from '../../src/ledger/types.ts';

const CHAIN = 'spchain-test';
const keys: SigningKeyPair[] = Array.from({ length: 10 }, (_, i) =>
  generateSigningKey(deterministicRandom(`cert-key-${i}`)),
);
const outsider = generateSigningKey(deterministicRandom('cert-outsider'));

function groupOf(reputations: readonly number[]): ConsensusGroup {
  return reputations.map((reputation, i) => ({
    member: i * 3 + 1, // sparse, unordered-friendly indices
    signingKey: keys[i]!.publicKey,
    reputation,
  }));
}

const VALUE = ledgerHash('value', new TextEncoder().encode('batch 7'));
const OTHER = ledgerHash('value', new TextEncoder().encode('batch 7 bis'));
const SUBJECT = { kind: 'batch', height: 7, round: 2, value: VALUE } as const;

/** Precommit signatures of the given group positions over `subject`. */
function signed(
  group: ConsensusGroup,
  positions: readonly number[],
  subject: Omit<Certificate, 'signatures'> = SUBJECT,
  type: 'prevote' | 'precommit' = 'precommit',
): Certificate {
  const signatures = positions.map((p) => ({
    member: group[p]!.member,
    signature: signVote(
      keys[p]!.secretKey,
      CHAIN,
      { ...subject, type },
      deterministicRandom(`sig-${p}`),
    ),
  }));
  return makeCertificate(subject, signatures);
}

function code(v: Verdict): LedgerErrorCode | 'OK' {
  return v.ok ? 'OK' : v.error.code;
}

function members(group: ConsensusGroup, positions: readonly number[]): number[] {
  return positions.map((p) => group[p]!.member);
}

describe('quorum arithmetic', () => {
  const table: [string, number[], number[], LedgerErrorCode | 'OK'][] = [
    ['3 of 4 equal members', [1, 1, 1, 1], [0, 1, 2], 'OK'],
    ['2 of 4 equal members', [1, 1, 1, 1], [0, 1], 'QUORUM_SHORT_MEMBERS'],
    ['4 of 4', [1, 1, 1, 1], [0, 1, 2, 3], 'OK'],
    ['exactly 2/3 of members (2 of 3) is not more', [1, 1, 1], [0, 1], 'QUORUM_SHORT_MEMBERS'],
    [
      'exactly 2/3 of members (4 of 6) is not more',
      [1, 1, 1, 1, 1, 1],
      [0, 1, 2, 3],
      'QUORUM_SHORT_MEMBERS',
    ],
    ['5 of 6', [1, 1, 1, 1, 1, 1], [0, 1, 2, 3, 4], 'OK'],
    ['3 of 4 members holding 60%', [0.2, 0.2, 0.2, 0.4], [0, 1, 2], 'QUORUM_SHORT_REPUTATION'],
    ['2 of 4 members holding 90%', [0.45, 0.45, 0.05, 0.05], [0, 1], 'QUORUM_SHORT_MEMBERS'],
    ['3 of 4 holding exactly 2/3', [1, 1, 1, 1.5], [0, 1, 2], 'QUORUM_SHORT_REPUTATION'],
    // Floats would say 3·0.12 > 2·0.18 (0.36000000000000004 > 0.36); fixed-point says equal.
    [
      'exactly 2/3 where floats drift',
      [0.01, 0.01, 0.1, 0.06],
      [0, 1, 2],
      'QUORUM_SHORT_REPUTATION',
    ],
    ['3 of 4 holding 2/3 + 10^-9', [1, 1, 1.000000001, 1.5], [0, 1, 2], 'OK'],
    [
      'zero-reputation members count as members only',
      [0, 0, 0, 1],
      [0, 1, 2],
      'QUORUM_SHORT_REPUTATION',
    ],
    ['all reputations zero: never a quorum', [0, 0, 0], [0, 1, 2], 'QUORUM_SHORT_REPUTATION'],
    ['7 of 10 unequal', [5, 1, 1, 1, 1, 1, 1, 1, 1, 1], [0, 1, 2, 3, 4, 5, 6], 'OK'],
    [
      '7 of 10 without the heavy one',
      [5, 1, 1, 1, 1, 1, 1, 1, 1, 1],
      [1, 2, 3, 4, 5, 6, 7],
      'QUORUM_SHORT_REPUTATION',
    ],
  ];
  it.each(table)('%s', (_name, reps, positions, expected) => {
    const group = groupOf(reps);
    expect(code(checkQuorum(group, members(group, positions)))).toBe(expected);
    expect(isQuorum(group, members(group, positions))).toBe(expected === 'OK');
  });

  it('counts each member once and ignores non-members', () => {
    const group = groupOf([1, 1, 1, 1]);
    const m = members(group, [0, 1]);
    expect(isQuorum(group, [...m, ...m, m[0]!])).toBe(false);
    expect(isQuorum(group, [...m, 999, 1000, 1001])).toBe(false);
    expect(isQuorum(group, [...m, group[2]!.member])).toBe(true);
  });

  it('more than 1/3 of members OR of reputation exceeds one third', () => {
    const equal = groupOf([1, 1, 1, 1]);
    expect(exceedsOneThird(equal, members(equal, [0]))).toBe(false);
    expect(exceedsOneThird(equal, members(equal, [0, 1]))).toBe(true);
    const heavy = groupOf([0.4, 0.2, 0.2, 0.2]);
    expect(exceedsOneThird(heavy, members(heavy, [0]))).toBe(true); // 40% of reputation
    expect(exceedsOneThird(heavy, members(heavy, [1]))).toBe(false);
    const six = groupOf([1, 1, 1, 1, 1, 1]);
    expect(exceedsOneThird(six, members(six, [0, 1]))).toBe(false); // exactly 1/3
    expect(exceedsOneThird(six, members(six, [0, 1, 2]))).toBe(true);
  });

  it('rejects malformed groups', () => {
    expect(() => isQuorum([], [])).toThrow(RangeError);
    expect(() => isQuorum(groupOf([1, -1]), [])).toThrow(RangeError);
    expect(() => isQuorum(groupOf([1, Number.NaN]), [])).toThrow(RangeError);
    const g = groupOf([1, 1]);
    expect(() => isQuorum([g[0]!, { ...g[1]!, member: g[0]!.member }], [])).toThrow(/twice/);
    expect(() => isQuorum([{ ...g[0]!, signingKey: new Uint8Array(32) }], [])).toThrow(/33 bytes/);
  });

  it('property: a subset is a quorum iff 3·count > 2·n and 3·rep > 2·total (exact)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 1000 }), { minLength: 1, maxLength: 10 }),
        fc.array(fc.boolean(), { minLength: 10, maxLength: 10 }),
        (milli, pick) => {
          const group = groupOf(milli.map((k) => k / 1000));
          const chosen = milli.map((_, i) => i).filter((i) => pick[i]);
          const sum = chosen.reduce((a, i) => a + milli[i]!, 0);
          const total = milli.reduce((a, k) => a + k, 0);
          const expected = 3 * chosen.length > 2 * milli.length && 3 * sum > 2 * total;
          const oneThird = 3 * chosen.length > milli.length || 3 * sum > total;
          return (
            isQuorum(group, members(group, chosen)) === expected &&
            exceedsOneThird(group, members(group, chosen)) === oneThird
          );
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('votes', () => {
  it('sign (chainId, kind, height, round, type, value) under spchain/vote', () => {
    const vote = { kind: 'batch', height: 3, round: 1, type: 'prevote', value: VALUE } as const;
    const sig = signVote(keys[0]!.secretKey, CHAIN, vote);
    expect(verifyVote(keys[0]!.publicKey, CHAIN, vote, sig)).toBe(true);
    expect(verifyVote(keys[0]!.publicKey, 'other-chain', vote, sig)).toBe(false);
    expect(verifyVote(keys[0]!.publicKey, CHAIN, { ...vote, kind: 'keyblock' }, sig)).toBe(false);
    expect(verifyVote(keys[0]!.publicKey, CHAIN, { ...vote, height: 4 }, sig)).toBe(false);
    expect(verifyVote(keys[0]!.publicKey, CHAIN, { ...vote, round: 2 }, sig)).toBe(false);
    expect(verifyVote(keys[0]!.publicKey, CHAIN, { ...vote, type: 'precommit' }, sig)).toBe(false);
    expect(verifyVote(keys[0]!.publicKey, CHAIN, { ...vote, value: OTHER }, sig)).toBe(false);
    expect(verifyVote(keys[0]!.publicKey, CHAIN, { ...vote, value: null }, sig)).toBe(false);
    expect(verifyVote(keys[1]!.publicKey, CHAIN, vote, sig)).toBe(false);
    expect(verifyVote(keys[0]!.publicKey, CHAIN, { ...vote, value: new Uint8Array(31) }, sig)).toBe(
      false,
    );
  });

  it('nil and a value encode differently; the encoding is canonical', () => {
    const base = { kind: 'keyblock', height: 300, round: 0, type: 'precommit' } as const;
    const nil = encodeVote(CHAIN, { ...base, value: null });
    const v = encodeVote(CHAIN, { ...base, value: VALUE });
    expect(v.length).toBe(nil.length + 32);
    expect(encodeVote(CHAIN, { ...base, value: VALUE })).toEqual(v);
  });
});

describe('certificates', () => {
  const group = groupOf([0.9, 0.8, 0.7, 0.6]);

  it('a quorum of valid precommits verifies', () => {
    expect(verifyCertificate(signed(group, [0, 1, 2]), group, CHAIN)).toEqual({ ok: true });
    expect(verifyCertificate(signed(group, [0, 1, 2, 3]), group, CHAIN)).toEqual({ ok: true });
    expect(verifyCertificate(signed(group, [3, 1, 2]), group, CHAIN)).toEqual({ ok: true });
  });

  it('rejects with the typed reason', () => {
    const good = signed(group, [0, 1, 2]);
    const cases: [string, Certificate, LedgerErrorCode][] = [
      ['short of members', signed(group, [0, 1]), 'QUORUM_SHORT_MEMBERS'],
      [
        'a non-member signature',
        {
          ...good,
          signatures: [
            ...good.signatures,
            {
              member: 999,
              signature: signVote(outsider.secretKey, CHAIN, { ...SUBJECT, type: 'precommit' }),
            },
          ],
        },
        'NOT_IN_GROUP',
      ],
      [
        'a duplicate signer',
        { ...good, signatures: [...good.signatures, good.signatures[0]!] },
        'DUPLICATE_VOTE',
      ],
      ['another height', { ...good, height: 8 }, 'BAD_SIGNATURE'],
      ['another round', { ...good, round: 3 }, 'BAD_SIGNATURE'],
      ['another value', { ...good, value: OTHER }, 'BAD_SIGNATURE'],
      ['another kind', { ...good, kind: 'keyblock' }, 'BAD_SIGNATURE'],
      [
        'prevotes instead of precommits',
        signed(group, [0, 1, 2], SUBJECT, 'prevote'),
        'BAD_SIGNATURE',
      ],
      ['a value that is not a hash', { ...good, value: new Uint8Array(31) }, 'MALFORMED'],
    ];
    for (const [name, cert, expected] of cases) {
      expect(code(verifyCertificate(cert, group, CHAIN)), name).toBe(expected);
    }
    expect(code(verifyCertificate(good, group, 'other-chain'))).toBe('BAD_SIGNATURE');
    const light = groupOf([0.2, 0.2, 0.2, 0.4]);
    expect(code(verifyCertificate(signed(light, [0, 1, 2]), light, CHAIN))).toBe(
      'QUORUM_SHORT_REPUTATION',
    );
  });

  it('rejects any tampered signature byte, naming the member', () => {
    const good = signed(group, [0, 1, 2]);
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 }),
        fc.integer({ min: 0, max: 63 }),
        fc.integer({ min: 1, max: 255 }),
        (s, i, x) => {
          const signatures = good.signatures.map((sig, k) => {
            if (k !== s) return sig;
            const bad = Uint8Array.from(sig.signature);
            bad[i] = bad[i]! ^ x;
            return { ...sig, signature: bad };
          });
          const v = verifyCertificate({ ...good, signatures }, group, CHAIN);
          return (
            !v.ok &&
            v.error.code === 'BAD_SIGNATURE' &&
            v.error.detail.member === good.signatures[s]!.member
          );
        },
      ),
      { numRuns: 40 },
    );
  });

  it('property: a signed subset verifies iff both thresholds hold', () => {
    const sigCache = new Map<string, Certificate>();
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 100 }), { minLength: 1, maxLength: 10 }),
        fc.array(fc.boolean(), { minLength: 10, maxLength: 10 }),
        (reps, pick) => {
          const g = groupOf(reps);
          const chosen = reps.map((_, i) => i).filter((i) => pick[i]);
          const key = `${reps.length}:${chosen.join(',')}`;
          let cert = sigCache.get(key);
          if (!cert) {
            cert = signed(g, chosen);
            sigCache.set(key, cert);
          }
          const sum = chosen.reduce((a, i) => a + reps[i]!, 0);
          const total = reps.reduce((a, r) => a + r, 0);
          const expected =
            3 * chosen.length <= 2 * reps.length
              ? 'QUORUM_SHORT_MEMBERS'
              : 3 * sum <= 2 * total
                ? 'QUORUM_SHORT_REPUTATION'
                : 'OK';
          return code(verifyCertificate(cert, g, CHAIN)) === expected;
        },
      ),
      { numRuns: 150 },
    );
  });

  it('makeCertificate sorts by member and refuses a repeated member', () => {
    const cert = signed(group, [2, 0, 1]);
    expect(cert.signatures.map((s) => s.member)).toEqual(members(group, [0, 1, 2]));
    expect(() => makeCertificate(SUBJECT, [...cert.signatures, cert.signatures[1]!])).toThrow(
      expect.objectContaining({ code: 'DUPLICATE_VOTE' }),
    );
  });
});

describe('certificate encoding', () => {
  const group = groupOf([1, 1, 1, 1, 1, 1, 1]);
  const cert = signed(group, [0, 2, 3, 4, 6]);

  it('round-trips and is compact: one (member varint, 64-byte signature) per signer', () => {
    const bytes = encodeCertificate(cert);
    expect(decodeCertificate(bytes, group.length)).toEqual(cert);
    // kind 1 + height 1 + round 1 + hash 32 + count 1 + 5 × (member 1 + signature 64)
    expect(bytes.length).toBe(36 + 5 * 65);
    expect(encodeCertificate({ ...cert, signatures: [...cert.signatures].reverse() })).toEqual(
      bytes,
    );
  });

  it('property: round-trips any certificate shape', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('keyblock' as const, 'batch' as const),
        fc.nat({ max: 2 ** 40 }),
        fc.nat({ max: 1000 }),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uniqueArray(fc.nat({ max: 5000 }), { maxLength: 12 }),
        (kind, height, round, value, ms) => {
          const c = makeCertificate(
            { kind, height, round, value },
            ms.map((member) => ({ member, signature: new Uint8Array(64).fill(member % 256) })),
          );
          const back = decodeCertificate(encodeCertificate(c), 12);
          return JSON.stringify(back, replacer) === JSON.stringify(c, replacer);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('rejects malformed bytes with a LedgerError', () => {
    const bytes = encodeCertificate(cert);
    const expectCode = (b: Uint8Array, c: LedgerErrorCode, max = group.length) => {
      let caught: unknown;
      try {
        decodeCertificate(b, max);
      } catch (err) {
        caught = err;
      }
      expect(isLedgerError(caught, c), `${c}: ${String(caught)}`).toBe(true);
    };
    expectCode(bytes.slice(0, bytes.length - 1), 'MALFORMED'); // truncated
    expectCode(Uint8Array.of(...bytes, 0), 'MALFORMED'); // trailing byte
    expectCode(bytes, 'MALFORMED', 4); // more signers than the group has
    const badKind = Uint8Array.from(bytes);
    badKind[0] = 2;
    expectCode(badKind, 'MALFORMED');
    // Swap the first two signers: members out of order are not canonical (and hide duplicates).
    const swapped = Uint8Array.from(bytes);
    const first = 36;
    swapped.set(bytes.slice(first + 65, first + 130), first);
    swapped.set(bytes.slice(first, first + 65), first + 65);
    expectCode(swapped, 'NON_CANONICAL');
    const dup = Uint8Array.from(bytes);
    dup.set(bytes.slice(first, first + 65), first + 65);
    expectCode(dup, 'NON_CANONICAL');
    // A non-minimal varint height (0x87 0x00 for 7).
    expectCode(Uint8Array.of(bytes[0]!, 0x87, 0x00, ...bytes.slice(2)), 'NON_CANONICAL');
    fc.assert(
      fc.property(fc.integer({ min: 0, max: bytes.length - 1 }), (cut) => {
        try {
          decodeCertificate(bytes.slice(0, cut), group.length);
          return false;
        } catch (err) {
          return isLedgerError(err);
        }
      }),
      { numRuns: 100 },
    );
  });
});

function replacer(_key: string, value: unknown): unknown {
  return value instanceof Uint8Array ? Array.from(value) : value;
}
