/**
 * The share decision (authz/grant.ts) and the Consent it rests on (authz/consent.ts): vectors for
 * each refusal (expired, not yet valid, revoked, inactive, wrong actor, bad signature, wrong
 * patient, bad kfrag, malformed), the Consent as valid FHIR R4, and properties over periods,
 * requesters and tampering.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type ConsentJson,
  makeConsent,
  parseConsent,
  parseFhirDateTime,
  revocationFromJson,
  revocationToJson,
  signConsent,
  signRevocation,
  verifyConsentSignature,
  verifyRevocation,
} from '../../src/authz/consent.ts';
import { isAuthzError } from '../../src/authz/errors.ts';
import {
  checkGrant,
  decideAmong,
  decideShare,
  decodeGrant,
  encodeGrant,
  type Grant,
  grantFromJson,
  grantToJson,
  makeGrant,
  type ShareSubject,
} from '../../src/authz/grant.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';
import { encodeKeyFrag, generateKFrags } from '../../src/crypto/umbral/index.ts';
import { hasErrors, validateHere } from '../../src/fhir/validate-core.ts';
import { makeNetwork, makePatient } from '../helpers/ledger-fixtures.ts';

const { genesis, random } = makeNetwork(3, 'sharing-authz');
const chainId = genesis.chainId;
const patient = makePatient(random);
const other = makePatient(random);
const idHash = random(32);
const subject: ShareSubject = {
  chainId,
  idHash,
  patientPreKey: patient.preKey,
  patientSigningKey: patient.signingKey,
};
const preKeyOf = (i: number) => genesis.members[i]?.preKey;
const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 0, 1);
const D = 2;

function grantFor(opts: { grantee?: number; start?: number; end?: number; id?: string } = {}) {
  const grantee = opts.grantee ?? D;
  return makeGrant({
    chainId,
    idHash,
    patientPreSecret: patient.preSecret,
    patientSigningSecret: patient.signingSecret,
    grantee: {
      index: grantee,
      preKey: genesis.members[grantee]!.preKey,
      name: `hospital-${grantee}`,
    },
    consentId: opts.id ?? 'grant-1',
    start: opts.start ?? T0,
    end: opts.end ?? T0 + 24 * HOUR,
    now: T0 - HOUR,
    random,
  });
}

/** The grant with its Consent edited and signed again by the patient (a valid signature). */
function resigned(grant: Grant, edit: (c: Record<string, unknown>) => void): Grant {
  const consent = structuredClone(grant.consent) as Record<string, unknown>;
  edit(consent);
  return { ...grant, consent, signature: signConsent(chainId, consent, patient.signingSecret) };
}

const ctx = (now: number, requester = D, revoked: string[] = []) => ({
  requester,
  now,
  revoked: new Set(revoked),
});

const valid = grantFor();

describe('decideShare', () => {
  it('allows the granted institution within the period, with verified kfrags', () => {
    const d = decideShare(valid, subject, preKeyOf, ctx(T0 + HOUR));
    expect(d.allow).toBe(true);
    if (d.allow) {
      expect(d.kfrags).toHaveLength(1);
      expect(d.consent).toMatchObject({ id: 'grant-1', grantee: D, start: T0, status: 'active' });
    }
  });

  it('refuses each case with its reason', () => {
    const cases: [string, Grant, ReturnType<typeof ctx>, string][] = [
      ['expired', valid, ctx(T0 + 25 * HOUR), 'EXPIRED'],
      ['expired at the end instant', valid, ctx(T0 + 24 * HOUR), 'EXPIRED'],
      ['not yet valid', valid, ctx(T0 - 1), 'NOT_YET_VALID'],
      ['revoked', valid, ctx(T0 + HOUR, D, ['grant-1']), 'REVOKED'],
      ['wrong actor', valid, ctx(T0 + HOUR, 1), 'WRONG_ACTOR'],
      [
        'inactive (signed so by the patient)',
        resigned(valid, (c) => {
          c.status = 'inactive';
        }),
        ctx(T0 + HOUR),
        'INACTIVE',
      ],
      [
        'signed by another key',
        { ...valid, signature: signConsent(chainId, valid.consent, other.signingSecret) },
        ctx(T0 + HOUR),
        'BAD_SIGNATURE',
      ],
      [
        'period extended after signing',
        {
          ...valid,
          consent: {
            ...valid.consent,
            provision: {
              ...(valid.consent.provision as object),
              period: { start: '2026-01-01', end: '2030-01-01' },
            },
          },
        },
        ctx(T0 + HOUR),
        'BAD_SIGNATURE',
      ],
      [
        'signed for another chain',
        { ...valid, signature: signConsent('another-chain', valid.consent, patient.signingSecret) },
        ctx(T0 + HOUR),
        'BAD_SIGNATURE',
      ],
      [
        'another patient',
        resigned(valid, (c) => {
          c.patient = { identifier: { system: 'urn:spchain:idhash', value: 'ab'.repeat(32) } };
        }),
        ctx(T0 + HOUR),
        'WRONG_PATIENT',
      ],
      [
        'kfrag for another institution',
        { ...valid, kfrags: grantFor({ grantee: 1 }).kfrags },
        ctx(T0 + HOUR),
        'BAD_KFRAG',
      ],
      [
        'kfrag signed by another key',
        {
          ...valid,
          kfrags: generateKFrags({
            delegatingSk: patient.preSecret,
            receivingPk: genesis.members[D]!.preKey,
            signerSk: other.signingSecret,
            threshold: 1,
            shares: 1,
            signDelegatingKey: true,
            signReceivingKey: true,
            random,
          }).map(encodeKeyFrag),
        },
        ctx(T0 + HOUR),
        'BAD_KFRAG',
      ],
      [
        'kfrag not binding the keys',
        {
          ...valid,
          kfrags: generateKFrags({
            delegatingSk: patient.preSecret,
            receivingPk: genesis.members[D]!.preKey,
            signerSk: patient.signingSecret,
            threshold: 1,
            shares: 1,
            signDelegatingKey: false,
            signReceivingKey: false,
            random,
          }).map(encodeKeyFrag),
        },
        ctx(T0 + HOUR),
        'BAD_KFRAG',
      ],
      ['garbage kfrag', { ...valid, kfrags: [random(200)] }, ctx(T0 + HOUR), 'BAD_KFRAG'],
      ['no kfrag', { ...valid, kfrags: [] }, ctx(T0 + HOUR), 'MALFORMED'],
      [
        'grantee not a member',
        resigned(valid, (c) => {
          (c.provision as { actor: unknown }).actor = [
            { reference: { identifier: { system: 'urn:spchain:institution', value: '7' } } },
          ];
        }),
        ctx(T0 + HOUR, 7),
        'UNKNOWN_INSTITUTION',
      ],
    ];
    for (const [name, grant, c, reason] of cases) {
      const d = decideShare(grant, subject, preKeyOf, c);
      expect(d.allow, name).toBe(false);
      if (!d.allow) expect(d.reason, name).toBe(reason);
    }
  });

  it('accepts a key order other than the signed one (RFC 8785 canonical form)', () => {
    const reordered = Object.fromEntries(Object.entries(valid.consent).reverse()) as ConsentJson;
    expect(JSON.stringify(reordered)).not.toBe(JSON.stringify(valid.consent));
    expect(decideShare({ ...valid, consent: reordered }, subject, preKeyOf, ctx(T0)).allow).toBe(
      true,
    );
  });

  it('decideAmong: the first grant that allows, else the refusal closest to allowed', () => {
    const expired = grantFor({ id: 'old', start: T0 - 48 * HOUR, end: T0 - 24 * HOUR });
    const forged = {
      ...valid,
      signature: signConsent(chainId, valid.consent, other.signingSecret),
    };
    expect(decideAmong([], subject, preKeyOf, ctx(T0))).toMatchObject({ reason: 'NO_GRANT' });
    expect(decideAmong([expired, valid], subject, preKeyOf, ctx(T0)).allow).toBe(true);
    expect(decideAmong([forged, expired], subject, preKeyOf, ctx(T0))).toMatchObject({
      allow: false,
      reason: 'EXPIRED',
    });
  });
});

describe('the Consent', () => {
  it('is valid FHIR R4 (@medplum/core validation)', () => {
    const issues = validateHere(valid.consent as never);
    expect(hasErrors(issues), JSON.stringify(issues)).toBe(false);
  });

  it('refuses shapes it cannot enforce, naming the field', () => {
    type Json = Record<string, unknown>;
    const top = (field: string, value: unknown) => (c: Json) => {
      if (value === undefined) delete c[field];
      else c[field] = value;
    };
    const prov = (field: string, value: unknown) => (c: Json) => {
      (c.provision as Json)[field] = value;
    };
    const edits: [string, (c: Json) => void, RegExp][] = [
      ['other resource', top('resourceType', 'Patient'), /resourceType/],
      ['no id', top('id', undefined), /Consent\.id/],
      ['unknown status', top('status', 'on'), /Consent\.status/],
      ['other scope', top('scope', { coding: [{ code: 'research' }] }), /scope/],
      ['patient by reference', top('patient', { reference: 'Patient/1' }), /patient/],
      ['deny', prov('type', 'deny'), /type/],
      [
        'restricted to a class',
        prov('class', [{ code: 'Observation' }]),
        /provision\.class is not supported/,
      ],
      ['nested provision', prov('provision', [{ type: 'deny' }]), /provision\.provision/],
      [
        'two actors',
        (c) => {
          const p = c.provision as { actor: unknown[] };
          p.actor = [p.actor[0], p.actor[0]];
        },
        /exactly one/,
      ],
      ['no end', prov('period', { start: '2026-01-01' }), /period\.end/],
      [
        'impossible date',
        prov('period', { start: '2026-02-30', end: '2026-03-01' }),
        /period\.start/,
      ],
      [
        'end before start',
        prov('period', { start: '2026-03-02', end: '2026-03-01' }),
        /before its end/,
      ],
    ];
    for (const [name, edit, pattern] of edits) {
      const c = structuredClone(valid.consent) as Record<string, unknown>;
      edit(c);
      const parsed = parseConsent(c);
      expect(parsed.ok, name).toBe(false);
      if (!parsed.ok) expect(parsed.problem, name).toMatch(pattern);
    }
  });

  it('reads FHIR dateTimes: zones, day precision, the whole end day', () => {
    expect(parseFhirDateTime('2026-01-01T00:00:00Z')).toBe(T0);
    expect(parseFhirDateTime('2026-01-01T01:30:00+01:30')).toBe(T0);
    expect(parseFhirDateTime('2025-12-31T19:00:00.5-05:00')).toBe(T0 + 500);
    expect(parseFhirDateTime('2026-01-01')).toBe(T0);
    expect(parseFhirDateTime('2026-01-01', true)).toBe(T0 + 24 * HOUR);
    for (const bad of [
      '2026',
      '2026-01',
      '2026-01-01T00:00:00',
      '2026-13-01',
      '2026-01-01T24:00:00Z',
      7,
    ]) {
      expect(parseFhirDateTime(bad), String(bad)).toBeUndefined();
    }
  });

  it('makeConsent checks its arguments', () => {
    const base = { id: 'x', idHash, grantee: 1, start: T0, end: T0 + 1, dateTime: T0 };
    expect(() => makeConsent({ ...base, id: 'not an id!' })).toThrow(/FHIR id/);
    expect(() => makeConsent({ ...base, end: T0 })).toThrow(/before end/);
    expect(() => makeConsent({ ...base, grantee: -1 })).toThrow(/member index/);
    expect(() => makeConsent({ ...base, idHash: random(5) })).toThrow(/32 bytes/);
  });
});

describe('grant encoding and revocation', () => {
  it('round-trips a grant; damaged bytes are AuthzError MALFORMED', () => {
    const bytes = encodeGrant(valid);
    const back = decodeGrant(bytes);
    expect(back.consent).toEqual(valid.consent);
    expect(checkGrant(back, subject, preKeyOf).ok).toBe(true);
    for (const damaged of [
      bytes.subarray(0, 40),
      Uint8Array.of(...bytes, 0),
      Uint8Array.of(3, 1, 2, 3),
    ]) {
      let err: unknown;
      try {
        decodeGrant(damaged);
      } catch (e) {
        err = e;
      }
      expect(isAuthzError(err, 'MALFORMED'), String(err)).toBe(true);
    }
  });

  it('JSON forms round-trip; wrong shapes are AuthzError MALFORMED naming the field', () => {
    const json = JSON.parse(JSON.stringify(grantToJson(valid)));
    const back = grantFromJson(json);
    expect(decideShare(back, subject, preKeyOf, ctx(T0)).allow).toBe(true);
    const bad: [unknown, RegExp][] = [
      [null, /JSON object/],
      [{ ...json, consent: 'x' }, /grant\.consent/],
      [{ ...json, signature: 'ABCD' }, /grant\.signature/],
      [{ ...json, kfrags: [] }, /grant\.kfrags/],
      [{ ...json, kfrags: ['zz'] }, /grant\.kfrags\[0\]/],
    ];
    for (const [v, pattern] of bad) {
      expect(() => grantFromJson(v)).toThrow(pattern);
    }
    const rev = signRevocation(chainId, idHash, 'grant-1', patient.signingSecret, random);
    const revBack = revocationFromJson(JSON.parse(JSON.stringify(revocationToJson(rev))));
    expect(verifyRevocation(chainId, revBack, patient.signingKey)).toBe(true);
    expect(() => revocationFromJson({ ...revocationToJson(rev), consentId: '' })).toThrow(
      /consentId/,
    );
  });

  it('verifies the patient signed a revocation, for this patient and Consent only', () => {
    const rev = signRevocation(chainId, idHash, 'grant-1', patient.signingSecret, random);
    expect(verifyRevocation(chainId, rev, patient.signingKey)).toBe(true);
    expect(verifyRevocation(chainId, rev, other.signingKey)).toBe(false);
    expect(verifyRevocation(chainId, { ...rev, consentId: 'grant-2' }, patient.signingKey)).toBe(
      false,
    );
    expect(verifyRevocation(chainId, { ...rev, idHash: random(32) }, patient.signingKey)).toBe(
      false,
    );
    expect(verifyRevocation('other', rev, patient.signingKey)).toBe(false);
  });
});

describe('properties', () => {
  const g = grantFor({ start: T0, end: T0 + 10 * HOUR });

  it('allows exactly when start <= now < end, for the grantee only', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: -20 * HOUR, max: 30 * HOUR }),
        fc.integer({ min: 0, max: 2 }),
        (offset, requester) => {
          const now = T0 + offset;
          const d = decideShare(g, subject, preKeyOf, ctx(now, requester));
          const inPeriod = now >= T0 && now < T0 + 10 * HOUR;
          expect(d.allow).toBe(inPeriod && requester === D);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('any change to a signed Consent string value is refused', () => {
    const paths: string[][] = [];
    const walk = (v: unknown, path: string[]) => {
      if (typeof v === 'string') paths.push(path);
      else if (v !== null && typeof v === 'object') {
        for (const [k, x] of Object.entries(v)) walk(x, [...path, k]);
      }
    };
    walk(g.consent, []);
    fc.assert(
      fc.property(
        fc.constantFrom(...paths),
        fc.string({ minLength: 1, maxLength: 8 }),
        (path, s) => {
          const c = structuredClone(g.consent) as Record<string, unknown>;
          let at = c as Record<string, unknown>;
          for (const k of path.slice(0, -1)) at = at[k] as Record<string, unknown>;
          const last = path[path.length - 1]!;
          const changed = `${String(at[last])}${s}`;
          at[last] = changed;
          expect(verifyConsentSignature(chainId, c, patient.signingKey, g.signature)).toBe(false);
          expect(decideShare({ ...g, consent: c }, subject, preKeyOf, ctx(T0 + HOUR)).allow).toBe(
            false,
          );
        },
      ),
      { numRuns: 60 },
    );
  });

  it('grants from any patient key pair verify under that patient only', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1000 }), (n) => {
        const r = deterministicRandom(`p-${n}`);
        const p = makePatient(r);
        const s = { ...subject, patientPreKey: p.preKey, patientSigningKey: p.signingKey };
        const grant = makeGrant({
          chainId,
          idHash,
          patientPreSecret: p.preSecret,
          patientSigningSecret: p.signingSecret,
          grantee: { index: D, preKey: genesis.members[D]!.preKey },
          consentId: `g${n}`,
          start: T0,
          end: T0 + HOUR,
          now: T0,
          random: r,
        });
        expect(decideShare(grant, s, preKeyOf, ctx(T0)).allow).toBe(true);
        expect(decideShare(grant, subject, preKeyOf, ctx(T0)).allow).toBe(false);
      }),
      { numRuns: 15 },
    );
  });

  it('decodeGrant of arbitrary bytes returns a grant or throws AuthzError, nothing else', () => {
    const bytes = encodeGrant(g);
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: bytes.length - 1 }),
        fc.integer({ min: 1, max: 255 }),
        (at, x) => {
          const damaged = bytes.slice();
          damaged[at]! ^= x;
          try {
            decodeGrant(damaged);
          } catch (err) {
            expect(isAuthzError(err), String(err)).toBe(true);
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});
