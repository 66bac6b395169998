/**
 * Access requests (authz/access-request.ts): the signed message built byte by byte, a pinned
 * request for a seeded key, parsing that names the bad field, every refusal of the institution
 * check (unknown institution, bad signature, stale, with the window's boundary) and of the
 * patient's policy (no policy, below the threshold naming both numbers, too many pending), and
 * properties: the decision is monotone in reputation, and tampering with any field or signature
 * byte breaks the signature.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ACCESS_PURPOSE_MAX_CHARS,
  ACCESS_REQUEST_WINDOW_MS,
  type AccessRequestDocument,
  accessRequestMessage,
  checkAccessRequest,
  decideAccessRequest,
  formatReputation,
  MAX_PENDING_ACCESS_REQUESTS,
  makeAccessRequest,
  parseAccessRequest,
  signAccessRequest,
} from '../../src/authz/access-request.ts';
import { isAuthzError } from '../../src/authz/errors.ts';
import { concatBytes, fromHex, toHex, utf8 } from '../../src/crypto/bytes.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';
import { generateSigningKey } from '../../src/crypto/sign.ts';

const institution = generateSigningKey(deterministicRandom('access-request/institution'));
const other = generateSigningKey(deterministicRandom('access-request/other'));
const chainId = 'spchain-test';
const ts = 1_750_000_000_000;
const fields = {
  idHash: 'cd'.repeat(32),
  institution: 2,
  purpose: 'Cardiology referral follow-up',
  ts,
};
const doc = makeAccessRequest(
  chainId,
  fields,
  institution.secretKey,
  deterministicRandom('access-request/made'),
);
const PINNED_NONCE = 'bc19c708a946e000442aab1c8b9f527c';
const PINNED_SIG =
  '5f945a15b8e97d20c44211d478458e288b6466f6254b8b564b47738e9ad9bdc2' +
  '3dd85ba49e19f611fcd56906c11148f406d9c4d9ff705dc837dbc02c71f8c803';
const keys = new Map([
  [2, institution.publicKey],
  [3, other.publicKey],
]);
const ctx = { chainId, now: ts + 1_000, signingKeyOf: (i: number) => keys.get(i) };

describe('the signed request', () => {
  it('signs chainId, idHash, institution, purpose, ts, nonce in the codec encoding', () => {
    const lp = (s: string) => concatBytes(Uint8Array.of(utf8(s).length), utf8(s));
    const leb = (n: number) => {
      const out: number[] = [];
      for (; n >= 128; n = Math.floor(n / 128)) out.push((n % 128) | 0x80);
      out.push(n);
      return Uint8Array.from(out);
    };
    const { signature: _s, ...unsigned } = doc;
    expect(toHex(accessRequestMessage(chainId, unsigned))).toBe(
      toHex(
        concatBytes(
          lp(chainId),
          fromHex(fields.idHash),
          Uint8Array.of(2),
          lp(fields.purpose),
          leb(ts),
          fromHex(doc.nonce),
        ),
      ),
    );
  });

  it('is a pinned vector for a seeded key, nonce and hedge', () => {
    expect(doc.nonce).toBe(PINNED_NONCE);
    expect(doc.signature).toBe(PINNED_SIG);
    const again = makeAccessRequest(
      chainId,
      { ...fields, idHash: fromHex(fields.idHash) },
      institution.secretKey,
      deterministicRandom('access-request/made'),
    );
    expect(again).toEqual(doc);
    expect(checkAccessRequest(doc, ctx)).toEqual({ ok: true });
  });

  it('parses a body, naming the first bad field', () => {
    expect(parseAccessRequest(JSON.parse(JSON.stringify(doc)))).toEqual({ ok: true, value: doc });
    const cases: [Record<string, unknown>, string][] = [
      [{ idHash: 'CD'.repeat(32) }, 'idHash'],
      [{ institution: -1 }, 'institution'],
      [{ institution: '2' }, 'institution'],
      [{ purpose: '' }, 'purpose'],
      [{ purpose: '   ' }, 'purpose'],
      [{ purpose: 'x'.repeat(ACCESS_PURPOSE_MAX_CHARS + 1) }, 'purpose'],
      [{ purpose: 'line\nbreak' }, 'purpose'],
      [{ ts: 1.5 }, 'ts'],
      [{ nonce: 'ab' }, 'nonce'],
      [{ signature: 'ab'.repeat(63) }, 'signature'],
      [{ extra: 1 }, 'body'],
    ];
    for (const [change, field] of cases) {
      const r = parseAccessRequest({ ...doc, ...change });
      expect(r.ok, field).toBe(false);
      if (!r.ok) expect(r.field, JSON.stringify(change)).toBe(field);
    }
    expect(parseAccessRequest({ ...doc, purpose: 'x'.repeat(ACCESS_PURPOSE_MAX_CHARS) }).ok).toBe(
      true,
    );
    for (const body of [null, [], 'x', 3]) expect(parseAccessRequest(body).ok).toBe(false);
  });

  it('refuses to sign bad fields, by name', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ idHash: 'cd' }, /idHash/],
      [{ institution: 1.5 }, /institution/],
      [{ purpose: '' }, /purpose/],
      [{ ts: -1 }, /ts/],
    ];
    for (const [change, why] of bad) {
      expect(() =>
        makeAccessRequest(
          chainId,
          { ...fields, ...change } as typeof fields,
          institution.secretKey,
          deterministicRandom('x'),
        ),
      ).toThrow(why);
    }
    try {
      accessRequestMessage('', doc);
      expect.unreachable();
    } catch (err) {
      expect(isAuthzError(err, 'INVALID_ARGUMENT')).toBe(true);
    }
  });
});

describe('checking the institution', () => {
  it('refuses an unknown institution, a wrong signer or network, and a stale request', () => {
    const check = (d: AccessRequestDocument, over: Partial<typeof ctx> = {}) =>
      checkAccessRequest(d, { ...ctx, ...over });
    expect(check({ ...doc, institution: 9 })).toMatchObject({
      ok: false,
      reason: 'UNKNOWN_INSTITUTION',
    });
    // Institution 3 claims the request that institution 2 signed, and the other way round.
    expect(check({ ...doc, institution: 3 })).toMatchObject({ ok: false, reason: 'BAD_SIGNATURE' });
    const forged = {
      ...doc,
      signature: signAccessRequest(chainId, doc, other.secretKey, deterministicRandom('f')),
    };
    expect(check(forged)).toMatchObject({
      ok: false,
      reason: 'BAD_SIGNATURE',
      message: "the signature is not institution 2's",
    });
    expect(check(doc, { chainId: 'another-net' })).toMatchObject({ reason: 'BAD_SIGNATURE' });
    expect(check({ ...doc, signature: 'zz' })).toMatchObject({ reason: 'BAD_SIGNATURE' });
    // The window holds at its edges, both ways, and not a millisecond beyond.
    for (const d of [-ACCESS_REQUEST_WINDOW_MS, ACCESS_REQUEST_WINDOW_MS]) {
      expect(check(doc, { now: ts + d })).toEqual({ ok: true });
    }
    for (const d of [-ACCESS_REQUEST_WINDOW_MS - 1, ACCESS_REQUEST_WINDOW_MS + 1]) {
      expect(check(doc, { now: ts + d })).toMatchObject({ ok: false, reason: 'STALE' });
    }
    expect(() => check(doc, { now: Number.NaN })).toThrow(/now/);
  });
});

describe("the patient's policy", () => {
  it('is a table of decisions', () => {
    const cases: [Parameters<typeof decideAccessRequest>[0], string | undefined, string?][] = [
      [{ institution: 1, reputation: 0.9, threshold: undefined }, 'NO_POLICY'],
      [
        { institution: 2, reputation: 0.31, threshold: 0.5 },
        'BELOW_THRESHOLD',
        'institution 2 has reputation 0.31, below the 0.5 the patient set',
      ],
      [{ institution: 2, reputation: 0.5, threshold: 0.5 }, undefined],
      [{ institution: 2, reputation: 0.75, threshold: 0.5 }, undefined],
      [{ institution: 2, reputation: 0, threshold: 0 }, undefined],
      [
        { institution: 4, reputation: undefined, threshold: 0.2 },
        'BELOW_THRESHOLD',
        'institution 4 has reputation 0, below the 0.2 the patient set',
      ],
      [{ institution: 2, reputation: 1, threshold: 1.5 }, 'BELOW_THRESHOLD'],
      [
        { institution: 2, reputation: 0.8, threshold: 0.5, pending: MAX_PENDING_ACCESS_REQUESTS },
        'TOO_MANY_PENDING',
      ],
      [{ institution: 2, reputation: 0.8, threshold: 0.5, pending: 2, maxPending: 3 }, undefined],
      [
        { institution: 2, reputation: 0.8, threshold: 0.5, pending: 3, maxPending: 3 },
        'TOO_MANY_PENDING',
      ],
    ];
    for (const [input, reason, message] of cases) {
      const d = decideAccessRequest(input);
      if (reason === undefined) {
        expect(d, JSON.stringify(input)).toEqual({ ok: true });
      } else {
        expect(d, JSON.stringify(input)).toMatchObject({ ok: false, reason });
        if (message !== undefined && !d.ok) expect(d.message).toBe(message);
      }
    }
    expect(() => decideAccessRequest({ institution: 1, reputation: 0.5, threshold: -1 })).toThrow(
      /threshold/,
    );
    expect(() =>
      decideAccessRequest({ institution: 1, reputation: Number.NaN, threshold: 0.5 }),
    ).toThrow(/reputation/);
  });

  it('never shows a reputation below the threshold as reaching it', () => {
    expect(formatReputation(0.30999999999999994)).toBe('0.31');
    expect(formatReputation(0.49999, 0.5)).toBe('0.4999');
    expect(formatReputation(0.49999)).toBe('0.5');
    const d = decideAccessRequest({ institution: 1, reputation: 0.499999, threshold: 0.5 });
    expect(d).toMatchObject({
      message: 'institution 1 has reputation 0.4999, below the 0.5 the patient set',
    });
  });

  it('is monotone in reputation: whom it admits, it admits with more reputation too', () => {
    const rep = fc.double({ min: 0, max: 1, noNaN: true });
    fc.assert(
      fc.property(
        rep,
        rep,
        fc.option(fc.double({ min: 0, max: 1.5, noNaN: true }), { nil: undefined }),
        fc.nat({ max: 30 }),
        (a, b, threshold, pending) => {
          const [low, high] = a <= b ? [a, b] : [b, a];
          const decide = (reputation: number) =>
            decideAccessRequest({ institution: 1, reputation, threshold, pending }).ok;
          if (decide(low)) expect(decide(high)).toBe(true);
          // And the refusal below the threshold is exactly the comparison.
          if (threshold !== undefined && pending < MAX_PENDING_ACCESS_REQUESTS) {
            expect(decide(low)).toBe(low >= threshold);
          }
        },
      ),
    );
  });

  it('tampering with any field or any signature byte breaks the signature', () => {
    const hex = (n: number) => fc.uint8Array({ minLength: n, maxLength: n }).map((b) => toHex(b));
    const change = fc.oneof(
      hex(32).map((idHash) => ({ idHash })),
      fc.nat({ max: 1000 }).map((i) => ({ institution: i === 2 ? 3 : i })),
      fc
        .string({ minLength: 1, maxLength: ACCESS_PURPOSE_MAX_CHARS })
        .filter((p) => parseAccessRequest({ ...doc, purpose: p }).ok)
        .map((purpose) => ({ purpose })),
      fc.integer({ min: -1_000, max: 1_000 }).map((d) => ({ ts: ts + d })),
      hex(16).map((nonce) => ({ nonce })),
      fc.tuple(fc.nat({ max: 63 }), fc.integer({ min: 1, max: 255 })).map(([i, x]) => {
        const sig = fromHex(doc.signature);
        sig[i] = sig[i]! ^ x;
        return { signature: toHex(sig) };
      }),
    );
    const anyKey = { ...ctx, signingKeyOf: (i: number) => keys.get(i) ?? institution.publicKey };
    fc.assert(
      fc.property(change, (c) => {
        const tampered = { ...doc, ...c } as AccessRequestDocument;
        fc.pre(JSON.stringify(tampered) !== JSON.stringify(doc));
        expect(checkAccessRequest(tampered, anyKey)).toMatchObject({
          ok: false,
          reason: 'BAD_SIGNATURE',
        });
      }),
    );
  });
});
