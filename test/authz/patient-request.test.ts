/**
 * Patient request signatures (authz/patient-request.ts): the signed message's encoding (a vector
 * built byte by byte), a pinned header for a seeded key, the header's grammar, the time window's
 * boundaries, and properties: any change to the network, method, path, timestamp, body or
 * signature breaks it.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isAuthzError } from '../../src/authz/errors.ts';
import {
  PATIENT_REQUEST_WINDOW_MS,
  type ParsedPatientRequest,
  parsePatientRequestHeader,
  patientRequestMessage,
  signPatientRequest,
  verifyPatientRequest,
} from '../../src/authz/patient-request.ts';
import { concatBytes, toHex, utf8 } from '../../src/crypto/bytes.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';
import { generateSigningKey } from '../../src/crypto/sign.ts';

const key = generateSigningKey(deterministicRandom('patient-request/key'));
const other = generateSigningKey(deterministicRandom('patient-request/other'));
const chainId = 'spchain-test';
const idHash = 'ab'.repeat(32);
const path = `/spchain/patients/${idHash}/records?count=5`;
const ts = 1_750_000_000_000;

function parsed(header: string): ParsedPatientRequest {
  const p = parsePatientRequestHeader(header);
  if (!p.ok) throw new Error(p.message);
  return p.value;
}

const signed = (over: Partial<Parameters<typeof signPatientRequest>[0]> = {}) =>
  signPatientRequest({
    chainId,
    method: 'GET',
    path,
    ts,
    idHash,
    signingSecret: key.secretKey,
    random: deterministicRandom('patient-request/sig'),
    ...over,
  });

describe('the signed message', () => {
  it('is string chainId, string METHOD, string path, varint ts, sha256(body)', () => {
    const lp = (s: string) => concatBytes(Uint8Array.of(utf8(s).length), utf8(s));
    // 1_750_000_000_000 as LEB128, low 7 bits first.
    const leb: number[] = [];
    for (let n = ts; ; n = Math.floor(n / 128)) {
      if (n < 128) {
        leb.push(n);
        break;
      }
      leb.push((n % 128) | 0x80);
    }
    const expected = concatBytes(
      lp(chainId),
      lp('GET'),
      lp(path),
      Uint8Array.from(leb),
      sha256(new Uint8Array(0)),
    );
    expect(toHex(patientRequestMessage(chainId, { method: 'get', path }, ts))).toBe(
      toHex(expected),
    );
    expect(leb).toEqual([0x80, 0xb8, 0x83, 0xa1, 0xf7, 0x32]);
    // A string body is its UTF-8 bytes.
    expect(patientRequestMessage(chainId, { method: 'POST', path, body: '{"a":1}' }, ts)).toEqual(
      patientRequestMessage(chainId, { method: 'POST', path, body: utf8('{"a":1}') }, ts),
    );
  });

  it('rejects bad arguments by name', () => {
    const bad = [
      () => patientRequestMessage('', { method: 'GET', path }, ts),
      () => patientRequestMessage(chainId, { method: 'G T', path }, ts),
      () => patientRequestMessage(chainId, { method: 'GET', path: 'relative' }, ts),
      () => patientRequestMessage(chainId, { method: 'GET', path }, -1),
      () => patientRequestMessage(chainId, { method: 'GET', path }, 1.5),
      () => signed({ idHash: 'AB'.repeat(32) }),
    ];
    for (const f of bad) expect(() => f()).toThrow(/chainId|method|path|ts|idHash/);
    try {
      bad[0]!();
    } catch (err) {
      expect(isAuthzError(err, 'INVALID_ARGUMENT')).toBe(true);
    }
  });
});

describe('header', () => {
  it('is a pinned vector for a seeded key and hedge', () => {
    const header = signed();
    expect(header).toMatch(/^idHash=[0-9a-f]{64}, ts=1750000000000, sig=[0-9a-f]{128}$/);
    // Same key, same request, same hedge: the same header (RFC 6979 with the hedge as extra data).
    expect(signed()).toBe(header);
    expect(toHex(key.publicKey)).toBe(
      '02bf38a0423a882abdf5a8fc84d50bc6830b64091f7675dbf9bbc46b66d53691f9',
    );
    expect(header.slice(header.indexOf('sig=') + 4)).toBe(
      '758642af23a7b0d80521cdf45989b47d15a13a7b4f2ff7099ce168c7df23fc96608a7e6b8fe1cfb0b37b840b446dfa721241d6e194785e38723bd4941a57781e',
    );
  });

  it('parses in any order and with or without spaces; idHash as bytes signs the same', () => {
    const header = signed();
    const p = parsed(header);
    expect(p.idHash).toBe(idHash);
    expect(p.ts).toBe(ts);
    const [a, b, c] = header.split(', ');
    expect(parsed(`${c},${a} ,  ${b}`)).toEqual(p);
    expect(signed({ idHash: Uint8Array.from({ length: 32 }, () => 0xab) })).toBe(header);
  });

  it('refuses a missing or malformed header, naming the part', () => {
    const sig = 'cd'.repeat(64);
    const cases: [unknown, RegExp][] = [
      [undefined, /missing/],
      ['', /missing/],
      ['x'.repeat(600), /too long/],
      ['Bearer abc', /must be/],
      [`idHash=${idHash}, ts=1`, /sig must be/],
      [`idHash=${idHash}, ts=1, sig=${sig}, ts=2`, /ts appears twice/],
      [`idHash=${idHash.toUpperCase()}, ts=1, sig=${sig}`, /must be/],
      [`idHash=${idHash.slice(2)}, ts=1, sig=${sig}`, /idHash must be 64/],
      [`idHash=${idHash}, ts=01, sig=${sig}`, /ts must be an integer/],
      [`idHash=${idHash}, ts=99999999999999999, sig=${sig}`, /ts must be an integer/],
      [`idHash=${idHash}, ts=1, sig=${sig}00`, /sig must be 128/],
      [`idHash=${idHash}, ts=1, sig=${sig}, extra=1`, /must be/],
    ];
    for (const [text, why] of cases) {
      const p = parsePatientRequestHeader(text);
      expect(p.ok, String(text)).toBe(false);
      if (!p.ok) {
        expect(p.reason).toBe('MALFORMED');
        expect(p.message).toMatch(why);
      }
    }
  });
});

describe('verification', () => {
  const ctx = { chainId, method: 'GET', path, now: ts, signingKey: key.publicKey };

  it('accepts the request it signs, and a POST with its body', () => {
    expect(verifyPatientRequest(parsed(signed()), ctx)).toEqual({ ok: true });
    const body = '{"code":"ABCDEFGHJK"}';
    const header = signed({ method: 'POST', path: '/spchain/patients/self', body });
    expect(
      verifyPatientRequest(parsed(header), {
        ...ctx,
        method: 'POST',
        path: '/spchain/patients/self',
        body,
      }),
    ).toEqual({ ok: true });
  });

  it('has inclusive boundaries at now ± 300 s', () => {
    const p = parsed(signed());
    for (const d of [-PATIENT_REQUEST_WINDOW_MS, 0, PATIENT_REQUEST_WINDOW_MS]) {
      expect(verifyPatientRequest(p, { ...ctx, now: ts + d }).ok).toBe(true);
    }
    for (const d of [-PATIENT_REQUEST_WINDOW_MS - 1, PATIENT_REQUEST_WINDOW_MS + 1]) {
      const r = verifyPatientRequest(p, { ...ctx, now: ts + d });
      expect(r).toMatchObject({ ok: false, reason: 'STALE' });
    }
    expect(() => verifyPatientRequest(p, { ...ctx, now: Number.NaN })).toThrow(/now/);
  });

  it('refuses another key', () => {
    expect(
      verifyPatientRequest(parsed(signed()), { ...ctx, signingKey: other.publicKey }),
    ).toMatchObject({ ok: false, reason: 'BAD_SIGNATURE' });
  });

  it('property: changing any signed field, or any signature byte, breaks it', () => {
    const p = parsed(signed({ body: 'body' }));
    const base = { ...ctx, body: 'body' };
    expect(verifyPatientRequest(p, base).ok).toBe(true);
    const mutation = fc.oneof(
      fc.string({ minLength: 1, maxLength: 20 }).map((s) => ({ chainId: `${chainId}${s}` })),
      fc.constantFrom('POST', 'PUT', 'DELETE', 'HEAD').map((method) => ({ method })),
      fc.string({ minLength: 1, maxLength: 20 }).map((s) => ({ path: `${path}${s}` })),
      fc.string({ maxLength: 20 }).map((s) => ({ body: `body${s}x` })),
      fc.integer({ min: 1, max: PATIENT_REQUEST_WINDOW_MS }).map((d) => ({ ts: ts + d })),
      fc
        .tuple(fc.integer({ min: 0, max: 63 }), fc.integer({ min: 1, max: 255 }))
        .map(([i, x]) => ({ flip: [i, x] as const })),
    );
    fc.assert(
      fc.property(mutation, (m) => {
        let q: ParsedPatientRequest = p;
        let c: typeof base = base;
        if ('ts' in m) q = { ...p, ts: m.ts };
        else if ('flip' in m) {
          const sig = p.sig.slice();
          sig[m.flip[0]]! ^= m.flip[1];
          q = { ...p, sig };
        } else c = { ...base, ...m };
        const r = verifyPatientRequest(q, { ...c, now: ts });
        return !r.ok && r.reason === 'BAD_SIGNATURE';
      }),
      { numRuns: 100 },
    );
  });
});
