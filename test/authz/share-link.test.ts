/**
 * Share links (authz/share-link.ts): base64url against Node's own codec, the signed message built
 * byte by byte, a pinned link for a seeded key, both link forms, every refusal (malformed, wrong
 * network, bad signature, expired) with the expiry's boundary, the institution's redemption
 * signature, and properties: tampering with any field or signature byte breaks the link.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  fromBase64Url,
  makeShareLink,
  parseShareLink,
  SHARE_LINK_SCHEME,
  type ShareLinkPayload,
  shareLinkMessage,
  signShareLinkRedemption,
  toBase64Url,
  verifyShareLink,
  verifyShareLinkRedemption,
} from '../../src/authz/share-link.ts';
import { concatBytes, fromHex, toHex, utf8 } from '../../src/crypto/bytes.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';
import { generateSigningKey } from '../../src/crypto/sign.ts';

const patient = generateSigningKey(deterministicRandom('share-link/patient'));
const stranger = generateSigningKey(deterministicRandom('share-link/stranger'));
const institution = generateSigningKey(deterministicRandom('share-link/institution'));
const chainId = 'spchain-test';
const exp = 1_750_000_600_000;
const fields = {
  chainId,
  idHash: 'cd'.repeat(32),
  block: { i: 3, j: 1 },
  consent: 'consent-1',
  grantee: 2,
  issuer: 'http://127.0.0.1:8080',
  exp,
};
const made = makeShareLink(fields, patient.secretKey, deterministicRandom('share-link/made'));
const { payload } = made;
const ctx = { chainId, signingKey: patient.publicKey, now: exp - 60_000 };

function parsed(text: string): ShareLinkPayload {
  const p = parseShareLink(text);
  if (!p.ok) throw new Error(p.message);
  return p.payload;
}

describe('base64url', () => {
  it('agrees with Node for every length up to 40, and refuses non-canonical text', () => {
    for (let n = 0; n <= 40; n++) {
      const bytes = deterministicRandom(`b64/${n}`)(n);
      const text = toBase64Url(bytes);
      expect(text).toBe(Buffer.from(bytes).toString('base64url'));
      expect(fromBase64Url(text)).toEqual(bytes);
    }
    expect(fromBase64Url('AB')).toBeNull(); // stray bits: 'AA' is the one encoding of 0x00
    expect(fromBase64Url('A')).toBeNull();
    expect(fromBase64Url('AA==')).toBeNull();
    expect(fromBase64Url('A+/A')).toBeNull();
  });
});

describe('making a link', () => {
  it('signs the canonical message: u8 v, chainId, idHash, i, j, consent, grantee, issuer, exp, nonce', () => {
    const lp = (s: string) => concatBytes(Uint8Array.of(utf8(s).length), utf8(s));
    const { sig: _sig, ...unsigned } = payload;
    const leb = (n: number) => {
      const out: number[] = [];
      for (; n >= 128; n = Math.floor(n / 128)) out.push((n % 128) | 0x80);
      out.push(n);
      return Uint8Array.from(out);
    };
    expect(toHex(shareLinkMessage(unsigned))).toBe(
      toHex(
        concatBytes(
          Uint8Array.of(1),
          lp(chainId),
          fromHex(fields.idHash),
          Uint8Array.of(3, 1),
          lp('consent-1'),
          Uint8Array.of(2),
          lp('http://127.0.0.1:8080'),
          leb(exp),
          fromHex(payload.nonce),
        ),
      ),
    );
  });

  it('is a pinned vector for a seeded key, nonce and hedge', () => {
    expect(made.link.startsWith('http://127.0.0.1:8080/portal/#share=')).toBe(true);
    expect(payload.nonce).toMatch(/^[0-9a-f]{32}$/);
    const again = makeShareLink(fields, patient.secretKey, deterministicRandom('share-link/made'));
    expect(again.link).toBe(made.link);
    // The JSON inside, in the spec's field order.
    const json = new TextDecoder().decode(
      fromBase64Url(made.link.slice(made.link.indexOf('#share=') + 7))!,
    );
    expect(Object.keys(JSON.parse(json))).toEqual([
      'v',
      'chainId',
      'idHash',
      'block',
      'consent',
      'grantee',
      'issuer',
      'exp',
      'nonce',
      'sig',
    ]);
    expect(payload.sig).toBe(PINNED_SIG);
    expect(payload.nonce).toBe(PINNED_NONCE);
  });

  it('takes the idHash as bytes too, and refuses bad fields by name', () => {
    const fromBytes = makeShareLink(
      { ...fields, idHash: fromHex(fields.idHash) },
      patient.secretKey,
      deterministicRandom('share-link/made'),
    );
    expect(fromBytes.link).toBe(made.link);
    const bad: [Partial<typeof fields> | Record<string, unknown>, RegExp][] = [
      [{ chainId: '' }, /chainId/],
      [{ idHash: 'cd' }, /idHash/],
      [{ block: { i: -1, j: 0 } }, /block/],
      [{ consent: 'has space' }, /consent/],
      [{ grantee: 1.5 }, /grantee/],
      [{ issuer: 'ftp://x' }, /issuer/],
      [{ issuer: 'http://x/' }, /issuer/],
      [{ issuer: 'http://x?q=1' }, /issuer/],
      [{ exp: -1 }, /exp/],
    ];
    for (const [change, why] of bad) {
      expect(() =>
        makeShareLink(
          { ...fields, ...change } as typeof fields,
          patient.secretKey,
          deterministicRandom('x'),
        ),
      ).toThrow(why);
    }
  });
});

describe('parsing', () => {
  it('reads both forms to the same payload', () => {
    const encoded = made.link.slice(made.link.indexOf('#share=') + 7);
    expect(parsed(made.link)).toEqual(payload);
    expect(parsed(`${SHARE_LINK_SCHEME}${encoded}`)).toEqual(payload);
    expect(parsed(`  ${made.link}\n`)).toEqual(payload);
  });

  it('refuses malformed links with the reason', () => {
    const encode = (v: unknown) =>
      `${SHARE_LINK_SCHEME}${toBase64Url(utf8(typeof v === 'string' ? v : JSON.stringify(v)))}`;
    const cases: [unknown, RegExp][] = [
      [42, /non-empty string/],
      ['', /non-empty string/],
      ['https://example.org/portal/', /must be/],
      [`${SHARE_LINK_SCHEME}!!!`, /base64url/],
      [`${SHARE_LINK_SCHEME}`, /base64url/],
      [encode('not json'), /not JSON/],
      [encode([1]), /JSON object/],
      [encode({ ...payload, extra: 1 }), /unknown field/],
      [encode({ ...payload, sig: undefined }), /sig is missing/],
      [encode({ ...payload, v: 2 }), /v must be 1/],
      [encode({ ...payload, block: { i: 1, j: 2, k: 3 } }), /block/],
      [encode({ ...payload, nonce: 'ab' }), /nonce/],
      [encode({ ...payload, sig: payload.sig.toUpperCase() }), /sig/],
      [`${SHARE_LINK_SCHEME}${'A'.repeat(5000)}`, /too long/],
      // The address and the payload's issuer disagree.
      [made.link.replace('127.0.0.1:8080', '127.0.0.1:9090'), /issuer's portal/],
    ];
    for (const [text, why] of cases) {
      const p = parseShareLink(text);
      expect(p.ok, String(text).slice(0, 80)).toBe(false);
      if (!p.ok) {
        expect(p.reason).toBe('MALFORMED');
        expect(p.message).toMatch(why);
      }
    }
  });
});

describe('verification', () => {
  it('accepts the patient’s link before it expires; the boundary is exclusive', () => {
    expect(verifyShareLink(parsed(made.link), ctx)).toEqual({ ok: true });
    expect(verifyShareLink(payload, { ...ctx, now: exp - 1 }).ok).toBe(true);
    expect(verifyShareLink(payload, { ...ctx, now: exp })).toMatchObject({
      ok: false,
      reason: 'EXPIRED',
    });
    expect(verifyShareLink(payload, { ...ctx, now: exp + 1 }).ok).toBe(false);
  });

  it('names the refusal: wrong network, bad signature, malformed', () => {
    expect(verifyShareLink(payload, { ...ctx, chainId: 'other' })).toMatchObject({
      reason: 'WRONG_NETWORK',
    });
    expect(verifyShareLink(payload, { ...ctx, signingKey: stranger.publicKey })).toMatchObject({
      reason: 'BAD_SIGNATURE',
    });
    expect(verifyShareLink({ ...payload, nonce: 'zz' } as ShareLinkPayload, ctx)).toMatchObject({
      reason: 'MALFORMED',
    });
    // A link made by someone else for the same patient is a bad signature, even if unexpired.
    const forged = makeShareLink(fields, stranger.secretKey, deterministicRandom('forged'));
    expect(verifyShareLink(forged.payload, ctx)).toMatchObject({ reason: 'BAD_SIGNATURE' });
    expect(() => verifyShareLink(payload, { ...ctx, now: Number.NaN })).toThrow(/now/);
  });

  it('property: changing any field (or any signature byte) breaks the signature', () => {
    const hex = (n: number) => fc.uint8Array({ minLength: n, maxLength: n }).map((b) => toHex(b));
    const change = fc.oneof(
      hex(32).map((idHash) => ({ idHash })),
      fc.nat({ max: 1e6 }).map((i) => ({ block: { i, j: payload.block.j } })),
      fc.nat({ max: 1e6 }).map((j) => ({ block: { i: payload.block.i, j } })),
      fc.stringMatching(/^[A-Za-z0-9\-.]{1,64}$/).map((consent) => ({ consent })),
      fc.nat({ max: 1000 }).map((grantee) => ({ grantee })),
      fc.constantFrom('http://127.0.0.1:8081', 'https://a.example', 'http://x/y').map((issuer) => ({
        issuer,
      })),
      fc.integer({ min: exp + 1, max: exp + 1e9 }).map((e) => ({ exp: e })),
      hex(16).map((nonce) => ({ nonce })),
      fc.tuple(fc.nat({ max: 63 }), fc.integer({ min: 1, max: 255 })).map(([i, x]) => {
        const sig = fromHex(payload.sig);
        sig[i]! ^= x;
        return { sig: toHex(sig) };
      }),
    );
    fc.assert(
      fc.property(change, (c) => {
        const tampered = { ...payload, ...c } as ShareLinkPayload;
        fc.pre(JSON.stringify(tampered) !== JSON.stringify(payload));
        const r = verifyShareLink(tampered, ctx);
        return !r.ok && r.reason === 'BAD_SIGNATURE';
      }),
      { numRuns: 150 },
    );
  });

  it('property: the expiry decides exactly at exp, for any exp and now', () => {
    fc.assert(
      fc.property(fc.nat({ max: 2 ** 45 }), fc.integer({ min: -1e6, max: 1e6 }), (e, d) => {
        const link = makeShareLink(
          { ...fields, exp: e },
          patient.secretKey,
          deterministicRandom(`exp/${e}`),
        );
        const r = verifyShareLink(link.payload, { ...ctx, now: e + d });
        return d < 0 ? r.ok : !r.ok && r.reason === 'EXPIRED';
      }),
      { numRuns: 40 },
    );
  });
});

describe('redemption signature', () => {
  const r = { chainId, nonce: payload.nonce, institution: 2, ts: exp - 1000 };
  const sig = signShareLinkRedemption(r, institution.secretKey, deterministicRandom('redeem'));

  it('verifies for the institution and nothing else', () => {
    expect(sig).toMatch(/^[0-9a-f]{128}$/);
    expect(verifyShareLinkRedemption(r, sig, institution.publicKey)).toBe(true);
    expect(verifyShareLinkRedemption(r, sig, patient.publicKey)).toBe(false);
    for (const change of [
      { chainId: 'other' },
      { nonce: '00'.repeat(16) },
      { institution: 1 },
      { ts: r.ts + 1 },
    ]) {
      expect(verifyShareLinkRedemption({ ...r, ...change }, sig, institution.publicKey)).toBe(
        false,
      );
    }
    expect(verifyShareLinkRedemption(r, sig.toUpperCase(), institution.publicKey)).toBe(false);
    expect(verifyShareLinkRedemption(r, 'ab', institution.publicKey)).toBe(false);
    expect(() => signShareLinkRedemption({ ...r, nonce: 'x' }, institution.secretKey)).toThrow(
      /nonce/,
    );
  });
});

const PINNED_SIG =
  '609fc6fce05be31b0497f5f1b9b5446a85b7d55f7fc45a3c1474a9d7a98c64015087c5c83975efe377fe7715fbd0db1dcd54295b3aa087817e50edff62988897';
const PINNED_NONCE = 'da058a51d439a2809d0e55acdefad710';
