/**
 * SMART App Launch 2 scopes: vectors for every form (v1, v2, granular, special, and the ways a
 * scope can be wrong), the downscoping and decision rules, and properties over random scope sets:
 * v1 and v2 decide alike, a grant never allows more than the allowed set, parse/toV2 is stable.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isAuthzError } from '../../src/authz/errors.ts';
import {
  type AccessRequest,
  allows,
  filterResources,
  grantScopes,
  INTERACTIONS,
  type Interaction,
  MAX_SCOPE_CHARS,
  MAX_SCOPES,
  needsPatientContext,
  parseScope,
  parseScopes,
  type ResourceScope,
  SCOPE_CONTEXTS,
  type Scope,
  type ScopeContext,
  scopeContexts,
  toV2,
} from '../../src/authz/scopes.ts';

const OBS_CAT = 'http://terminology.hl7.org/CodeSystem/observation-category';
const LAB = `${OBS_CAT}|laboratory`;

function one(text: string): Scope {
  const p = parseScope(text);
  if (!p.ok) throw new Error(p.problem);
  return p.scope;
}

function many(text: string): Scope[] {
  const p = parseScopes(text);
  if (!p.ok) throw new Error(p.problem);
  return [...p.scopes];
}

function resourceScope(text: string): ResourceScope {
  const s = one(text);
  if (s.kind !== 'resource') throw new Error(`${text} is not a resource scope`);
  return s;
}

const perms = (s: ResourceScope) => INTERACTIONS.filter((i) => s.permissions.has(i)).join('');

function observation(...categories: { system?: string; code: string }[]) {
  return {
    resourceType: 'Observation',
    status: 'final',
    code: { text: 'x' },
    category: categories.map((c) => ({ coding: [c] })),
  };
}

describe('parseScope: valid forms', () => {
  const vectors: [text: string, v2: string, ctx: ScopeContext, type: string, perms: string][] = [
    ['patient/Observation.read', 'patient/Observation.rs', 'patient', 'Observation', 'rs'],
    ['patient/Observation.write', 'patient/Observation.cud', 'patient', 'Observation', 'cud'],
    ['patient/Observation.*', 'patient/Observation.cruds', 'patient', 'Observation', 'cruds'],
    ['user/*.read', 'user/*.rs', 'user', '*', 'rs'],
    ['system/*.*', 'system/*.cruds', 'system', '*', 'cruds'],
    ['patient/Observation.rs', 'patient/Observation.rs', 'patient', 'Observation', 'rs'],
    ['patient/Observation.cud', 'patient/Observation.cud', 'patient', 'Observation', 'cud'],
    ['user/Condition.s', 'user/Condition.s', 'user', 'Condition', 's'],
    ['patient/*.cruds', 'patient/*.cruds', 'patient', '*', 'cruds'],
    ['system/Patient.c', 'system/Patient.c', 'system', 'Patient', 'c'],
    ['system/Patient.cd', 'system/Patient.cd', 'system', 'Patient', 'cd'],
  ];
  it.each(vectors)('%s', (text, v2, ctx, type, p) => {
    const s = resourceScope(text);
    expect(s.context).toBe(ctx);
    expect(s.resourceType).toBe(type);
    expect(perms(s)).toBe(p);
    expect(s.params.size).toBe(0);
    expect(s.text).toBe(text);
    expect(toV2(s)).toBe(v2);
  });

  it('granular: category as system|code, as code, and percent-escaped', () => {
    const lab = resourceScope(`patient/Observation.rs?category=${LAB}`);
    expect([...lab.params]).toEqual([['category', LAB]]);
    expect(toV2(lab)).toBe(`patient/Observation.rs?category=${LAB}`);
    const code = resourceScope('patient/Observation.rs?category=vital-signs');
    expect(code.params.get('category')).toBe('vital-signs');
    const escaped = resourceScope(`user/Observation.rs?category=${OBS_CAT}%7Claboratory`);
    expect(escaped.params.get('category')).toBe(LAB);
    expect(toV2(escaped)).toBe(toV2(lab).replace('patient/', 'user/'));
    const odd = resourceScope('patient/*.s?category=a%26b%3Dc%25');
    expect(odd.params.get('category')).toBe('a&b=c%');
    expect(toV2(odd)).toBe('patient/*.s?category=a%26b%3Dc%25');
  });

  it.each([
    'openid',
    'fhirUser',
    'profile',
    'launch',
    'launch/patient',
    'launch/encounter',
    'offline_access',
    'online_access',
  ])('special scope %s is kept as it is', (text) => {
    const s = one(text);
    expect(s).toEqual({ kind: 'special', name: text, text });
    expect(toV2(s)).toBe(text);
  });
});

describe('parseScope: invalid forms are refused, naming the scope and why', () => {
  const vectors: [text: string, why: RegExp][] = [
    ['patient/Observation.sr', /out of order/],
    ['patient/Observation.rr', /repeats the permission "r"/],
    ['patient/Observation.rsr', /repeats the permission "r"/],
    ['patient/Observation.rx', /unknown permission "x"/],
    ['patient/Observation.READ', /unknown permission "R"/],
    ['patient/.rs', /no resource type/],
    ['patient/Observation.', /no permissions/],
    ['patient/Observation', /no "\.permissions"/],
    ['patient/Obs-ervation.rs', /invalid resource type/],
    ['patient/observation.rs', /invalid resource type/],
    ['patient/Observation.read?x=1', /v1 permissions/],
    ['patient/Observation.*?category=laboratory', /v1 permissions/],
    ['patient/Observation.rs?x=1', /"x", which this server cannot enforce/],
    ['patient/Observation.rs?code=http://loinc.org|1234-5', /"code", which this server cannot/],
    ['patient/Observation.rs?category:text=lab', /cannot enforce/],
    ['patient/Observation.rs?', /empty query/],
    ['patient/Observation.rs?category', /not name=value/],
    ['patient/Observation.rs?=lab', /not name=value/],
    ['patient/Observation.rs?category=', /empty system or code/],
    ['patient/Observation.rs?category=a|', /empty system or code/],
    ['patient/Observation.rs?category=|a', /empty system or code/],
    ['patient/Observation.rs?category=a|b|c', /more than one "\|"/],
    ['patient/Observation.rs?category=a,b', /","/],
    ['patient/Observation.rs?category=a%20b', /whitespace/],
    ['patient/Observation.rs?category=%E0%A4%A', /malformed percent-escape/],
    ['patient/Observation.rs?category=a&category=b', /repeats the parameter "category"/],
    ['bogus', /not a known scope/],
    ['Patient/Observation.rs', /unknown context/],
    ['launch/other', /unknown context/],
    ['patient/Observation.rs\u00e9', /character no OAuth scope may have/],
    ['patient/Observation."rs"', /character no OAuth scope may have/],
    ['', /empty/],
  ];
  it.each(vectors)('%j', (text, why) => {
    const p = parseScope(text);
    expect(p.ok).toBe(false);
    if (p.ok) return;
    expect(p.problem).toMatch(why);
    if (text !== '') expect(p.problem).toContain(JSON.stringify(text.slice(0, 20)).slice(0, -1));
  });

  it('an oversize scope is refused and its text cut short in the message', () => {
    const text = `patient/${'A'.repeat(MAX_SCOPE_CHARS)}.rs`;
    const p = parseScope(text);
    expect(p.ok).toBe(false);
    if (!p.ok) {
      expect(p.problem).toMatch(/at most 4096/);
      expect(p.problem.length).toBeLessThan(200);
    }
  });
});

describe('parseScopes', () => {
  it('parses a space-separated list, keeping order and dropping repeats', () => {
    const p = parseScopes('openid patient/Observation.rs launch/patient openid user/*.read');
    expect(p.ok).toBe(true);
    if (p.ok) {
      expect(p.scopes.map((s) => s.text)).toEqual([
        'openid',
        'patient/Observation.rs',
        'launch/patient',
        'user/*.read',
      ]);
    }
  });

  it('the empty string is no scopes', () => {
    expect(parseScopes('')).toEqual({ ok: true, scopes: [] });
  });

  it('names every bad scope', () => {
    const p = parseScopes('openid bogus patient/Observation.sr');
    expect(p.ok).toBe(false);
    if (!p.ok) {
      expect(p.problem).toContain('"bogus"');
      expect(p.problem).toContain('"patient/Observation.sr"');
    }
  });

  it.each([
    ['openid  profile', /scope 2 is empty/],
    [' openid', /scope 1 is empty/],
    ['openid ', /scope 2 is empty/],
    ['openid\tprofile', /character no OAuth scope may have/],
    ['openid\nprofile', /character no OAuth scope may have/],
  ])('refuses bad separators: %j', (text, why) => {
    const p = parseScopes(text);
    expect(p.ok).toBe(false);
    if (!p.ok) expect(p.problem).toMatch(why);
  });

  it('refuses oversize input: too long, too many scopes', () => {
    const long = parseScopes(`patient/Observation.rs?category=${'a'.repeat(MAX_SCOPE_CHARS)}`);
    expect(long.ok).toBe(false);
    if (!long.ok) expect(long.problem).toMatch(/at most 4096/);
    const names = Array.from(
      { length: MAX_SCOPES + 1 },
      (_, i) => `patient/T${'a'.repeat(i % 20)}.r`,
    );
    const lots = parseScopes(names.join(' '));
    expect(lots.ok).toBe(false);
    if (!lots.ok) expect(lots.problem).toMatch(/101 scopes; at most 100/);
    expect(parseScopes(names.slice(0, MAX_SCOPES).join(' ')).ok).toBe(true);
  });

  it('refuses a non-string', () => {
    expect(parseScopes(42 as unknown as string).ok).toBe(false);
    expect(parseScope(undefined as unknown as string).ok).toBe(false);
  });
});

describe('allows', () => {
  const req = (r: Partial<AccessRequest>): AccessRequest => ({
    resourceType: 'Observation',
    interaction: 'r',
    ...r,
  });

  it('v1 read permits read and search, not writes', () => {
    const s = many('patient/Observation.read');
    expect(allows(s, req({ interaction: 'r' }))).toBe(true);
    expect(allows(s, req({ interaction: 's' }))).toBe(true);
    for (const i of ['c', 'u', 'd'] as const)
      expect(allows(s, req({ interaction: i }))).toBe(false);
    expect(allows(s, req({ resourceType: 'Condition' }))).toBe(false);
  });

  it('matches the context when the request names one', () => {
    const s = many('user/Observation.rs');
    expect(allows(s, req({}))).toBe(true);
    expect(allows(s, req({ context: 'user' }))).toBe(true);
    expect(allows(s, req({ context: 'patient' }))).toBe(false);
    expect(allows(s, req({ context: 'system' }))).toBe(false);
  });

  it('* type covers every type; special scopes permit nothing', () => {
    const s = many('patient/*.s');
    expect(allows(s, req({ resourceType: 'Condition', interaction: 's' }))).toBe(true);
    expect(allows(s, req({ resourceType: 'Condition', interaction: 'r' }))).toBe(false);
    expect(allows(many('openid fhirUser launch/patient'), req({}))).toBe(false);
    expect(allows([], req({}))).toBe(false);
  });

  it('granular category: system|code needs that coding; code alone any system', () => {
    const lab = many(`patient/Observation.rs?category=${LAB}`);
    expect(
      allows(lab, req({ resource: observation({ system: OBS_CAT, code: 'laboratory' }) })),
    ).toBe(true);
    expect(
      allows(
        lab,
        req({
          resource: observation(
            { system: OBS_CAT, code: 'vital-signs' },
            { system: OBS_CAT, code: 'laboratory' },
          ),
        }),
      ),
    ).toBe(true);
    expect(
      allows(lab, req({ resource: observation({ system: 'urn:other', code: 'laboratory' }) })),
    ).toBe(false);
    expect(allows(lab, req({ resource: observation({ code: 'laboratory' }) }))).toBe(false);
    expect(
      allows(lab, req({ resource: observation({ system: OBS_CAT, code: 'vital-signs' }) })),
    ).toBe(false);
    expect(allows(lab, req({ resource: { resourceType: 'Observation' } }))).toBe(false);
    expect(allows(lab, req({ resource: { resourceType: 'Observation', category: 'x' } }))).toBe(
      false,
    );
    // No resource yet: a provisional yes (the search may start), but only within the permissions.
    expect(allows(lab, req({ interaction: 's' }))).toBe(true);
    expect(allows(lab, req({ interaction: 'c' }))).toBe(false);

    const code = many('patient/Observation.rs?category=laboratory');
    expect(
      allows(code, req({ resource: observation({ system: 'urn:any', code: 'laboratory' }) })),
    ).toBe(true);
    expect(allows(code, req({ resource: observation({ code: 'laboratory' }) }))).toBe(true);
    expect(allows(code, req({ resource: observation({ code: 'social-history' }) }))).toBe(false);
  });

  it('granular category on a single CodeableConcept and on plain codes', () => {
    const proc = many('patient/Procedure.r?category=http://snomed.info/sct|387713003');
    const procedure = (code: string) => ({
      resourceType: 'Procedure',
      category: { coding: [{ system: 'http://snomed.info/sct', code }] },
    });
    expect(
      allows(proc, {
        resourceType: 'Procedure',
        interaction: 'r',
        resource: procedure('387713003'),
      }),
    ).toBe(true);
    expect(
      allows(proc, { resourceType: 'Procedure', interaction: 'r', resource: procedure('1') }),
    ).toBe(false);
    const allergy = { resourceType: 'AllergyIntolerance', category: ['food'] };
    const r = { resourceType: 'AllergyIntolerance', interaction: 'r', resource: allergy } as const;
    expect(allows(many('patient/AllergyIntolerance.r?category=food'), r)).toBe(true);
    expect(allows(many('patient/AllergyIntolerance.r?category=medication'), r)).toBe(false);
    expect(allows(many('patient/AllergyIntolerance.r?category=urn:x|food'), r)).toBe(false);
  });

  it('a wider ungranular scope next to a granular one still permits', () => {
    const s = many(`patient/Observation.rs?category=${LAB} patient/Observation.r`);
    expect(allows(s, req({ resource: observation({ code: 'vital-signs' }) }))).toBe(true);
    expect(
      allows(s, req({ interaction: 's', resource: observation({ code: 'vital-signs' }) })),
    ).toBe(false);
  });

  it.each([
    [{ resourceType: '*', interaction: 'r' }, /request\.resourceType/],
    [{ resourceType: 'Obs-ervation', interaction: 'r' }, /request\.resourceType/],
    [{ resourceType: 'Observation', interaction: 'x' }, /request\.interaction/],
    [{ resourceType: 'Observation', interaction: 'r', context: 'admin' }, /request\.context/],
    [{ resourceType: 'Observation', interaction: 'r', resource: 'text' }, /request\.resource /],
    [
      { resourceType: 'Observation', interaction: 'r', resource: { resourceType: 'Condition' } },
      /request\.resource\.resourceType/,
    ],
  ])('a malformed request is an AuthzError, not a decision: %j', (request, why) => {
    let caught: unknown;
    try {
      allows(many('patient/*.cruds'), request as unknown as AccessRequest);
    } catch (err) {
      caught = err;
    }
    expect(isAuthzError(caught, 'INVALID_ARGUMENT')).toBe(true);
    expect((caught as Error).message).toMatch(why);
  });
});

describe('filterResources', () => {
  it('keeps what the scopes permit, deciding each resource by its own type and content', () => {
    const scopes = many(`patient/Observation.rs?category=${LAB} patient/Condition.s user/*.rs`);
    const lab = observation({ system: OBS_CAT, code: 'laboratory' });
    const vitals = observation({ system: OBS_CAT, code: 'vital-signs' });
    const condition = { resourceType: 'Condition' };
    const patient = { resourceType: 'Patient' };
    const junk = [null, 'x', { resourceType: 'bad-type' }, { category: [] }];
    const all = [lab, vitals, condition, patient, ...junk];
    expect(filterResources(scopes, 'patient', 's', all)).toEqual([lab, condition]);
    expect(filterResources(scopes, 'patient', 'r', all)).toEqual([lab]);
    expect(filterResources(scopes, 'user', 'r', all)).toEqual([lab, vitals, condition, patient]);
    expect(filterResources(scopes, undefined, 's', all)).toEqual([lab, vitals, condition, patient]);
    expect(filterResources(scopes, 'system', 's', all)).toEqual([]);
  });

  it('refuses a bad context or interaction', () => {
    expect(() => filterResources([], 'nobody' as ScopeContext, 'r', [])).toThrow(/context/);
    expect(() => filterResources([], undefined, 'q' as Interaction, [])).toThrow(/interaction/);
  });
});

describe('grantScopes', () => {
  const grant = (requested: string, allowed: string) => {
    const g = grantScopes(many(requested), many(allowed));
    return { granted: g.scope, dropped: g.dropped.map((s) => s.text).join(' ') };
  };

  it.each([
    // [requested, allowed, granted, dropped]
    ['patient/Observation.rs', 'patient/Observation.rs', 'patient/Observation.rs', ''],
    ['patient/Observation.read', 'patient/Observation.rs', 'patient/Observation.read', ''],
    ['patient/Observation.r', 'patient/Observation.read', 'patient/Observation.r', ''],
    ['patient/Observation.rs', 'patient/*.cruds', 'patient/Observation.rs', ''],
    ['patient/Observation.cruds', 'patient/Observation.rs', '', 'patient/Observation.cruds'],
    [
      'patient/Observation.cruds',
      'patient/Observation.rs patient/*.cud',
      'patient/Observation.cruds',
      '',
    ],
    ['patient/Observation.rs', 'user/Observation.rs', '', 'patient/Observation.rs'],
    ['user/Observation.rs', 'patient/Observation.rs', '', 'user/Observation.rs'],
    ['patient/*.rs', 'patient/Observation.rs', '', 'patient/*.rs'],
    ['patient/Condition.rs', 'patient/Observation.rs', '', 'patient/Condition.rs'],
    // A granular allowed scope never widens to an ungranular request...
    [
      'patient/Observation.rs',
      `patient/Observation.rs?category=${LAB}`,
      '',
      'patient/Observation.rs',
    ],
    // ...but covers the same or a narrower granular one; an ungranular allowed scope covers both.
    [
      `patient/Observation.rs?category=${LAB}`,
      `patient/Observation.rs?category=${LAB}`,
      `patient/Observation.rs?category=${LAB}`,
      '',
    ],
    [
      `patient/Observation.rs?category=${LAB}`,
      'patient/Observation.read',
      `patient/Observation.rs?category=${LAB}`,
      '',
    ],
    [
      `patient/Observation.rs?category=${LAB}`,
      'patient/Observation.rs?category=laboratory',
      `patient/Observation.rs?category=${LAB}`,
      '',
    ],
    [
      'patient/Observation.rs?category=laboratory',
      `patient/Observation.rs?category=${LAB}`,
      '',
      'patient/Observation.rs?category=laboratory',
    ],
    [
      `patient/Observation.rs?category=${OBS_CAT}|vital-signs`,
      `patient/Observation.rs?category=${LAB}`,
      '',
      `patient/Observation.rs?category=${OBS_CAT}|vital-signs`,
    ],
    // Special scopes by name only.
    ['openid fhirUser launch/patient', 'openid launch', 'openid', 'fhirUser launch/patient'],
    [
      'offline_access patient/Observation.rs',
      'patient/*.cruds',
      'patient/Observation.rs',
      'offline_access',
    ],
  ])('%s within %s', (requested, allowed, granted, dropped) => {
    expect(grant(requested, allowed)).toEqual({ granted, dropped });
  });

  it('keeps the requested order and texts, once each', () => {
    const requested = [...many('user/Condition.read openid patient/Observation.rs'), one('openid')];
    const g = grantScopes(requested, many('openid user/*.read patient/*.read'));
    expect(g.scope).toBe('user/Condition.read openid patient/Observation.rs');
    expect(g.dropped).toEqual([]);
  });
});

describe('contexts', () => {
  it('scopeContexts lists the resource scopes contexts', () => {
    expect([
      ...scopeContexts(many('openid user/*.rs patient/Observation.rs user/Patient.r')),
    ]).toEqual(['user', 'patient']);
    expect(scopeContexts(many('openid launch')).size).toBe(0);
  });

  it('needsPatientContext: a patient/ scope or launch/patient', () => {
    expect(needsPatientContext(many('openid patient/Observation.rs'))).toBe(true);
    expect(needsPatientContext(many('launch/patient'))).toBe(true);
    expect(needsPatientContext(many('openid user/*.rs system/*.rs launch'))).toBe(false);
  });
});

// ---- properties ----------------------------------------------------------------------------

const TYPES = ['Observation', 'Condition', 'Patient'] as const;
const CATEGORIES = ['laboratory', `${OBS_CAT}|laboratory`, 'vital-signs', `urn:x|vital-signs`];

const contextArb = fc.constantFrom(...SCOPE_CONTEXTS);
const scopeTypeArb = fc.constantFrom('*', ...TYPES);
const permsArb = fc.subarray([...INTERACTIONS], { minLength: 1 }).map((p) => p.join(''));
/** Any scope over a small alphabet, written as v1 or v2, granular or not, or special. */
const scopeTextArb: fc.Arbitrary<string> = fc.oneof(
  fc
    .tuple(contextArb, scopeTypeArb, fc.constantFrom('read', 'write', '*'))
    .map(([c, t, p]) => `${c}/${t}.${p}`),
  fc
    .tuple(
      contextArb,
      scopeTypeArb,
      permsArb,
      fc.option(fc.constantFrom(...CATEGORIES), { nil: undefined }),
    )
    .map(([c, t, p, cat]) => `${c}/${t}.${p}${cat === undefined ? '' : `?category=${cat}`}`),
  fc.constantFrom('openid', 'launch', 'launch/patient', 'offline_access'),
);
const scopeSetArb = fc.array(scopeTextArb, { maxLength: 6 }).map((texts) => texts.map(one));

const codingArb = fc.record({
  system: fc.constantFrom(OBS_CAT, 'urn:x', undefined),
  code: fc.constantFrom('laboratory', 'vital-signs', 'other'),
});
const requestArb: fc.Arbitrary<AccessRequest> = fc
  .record({
    context: fc.option(contextArb, { nil: undefined }),
    resourceType: fc.constantFrom(...TYPES),
    interaction: fc.constantFrom(...INTERACTIONS),
    codings: fc.option(fc.array(codingArb, { maxLength: 3 }), { nil: undefined }),
  })
  .map(({ codings, ...r }) => ({
    ...r,
    resource:
      codings === undefined
        ? undefined
        : {
            resourceType: r.resourceType,
            category: codings.map(({ system, code }) => ({
              coding: [system === undefined ? { code } : { system, code }],
            })),
          },
  }));

describe('properties', () => {
  it('v1 read/write/* and v2 rs/cud/cruds decide alike for every request', () => {
    const pairs = [
      ['read', 'rs'],
      ['write', 'cud'],
      ['*', 'cruds'],
    ] as const;
    fc.assert(
      fc.property(
        contextArb,
        scopeTypeArb,
        fc.constantFrom(...pairs),
        requestArb,
        (c, t, [v1, v2], request) => {
          const a = one(`${c}/${t}.${v1}`);
          const b = one(`${c}/${t}.${v2}`);
          expect(toV2(a)).toBe(toV2(b));
          expect(allows([a], request)).toBe(allows([b], request));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('a grant never allows what the allowed set does not, and keeps only requested scopes', () => {
    fc.assert(
      fc.property(
        scopeSetArb,
        scopeSetArb,
        fc.array(requestArb, { minLength: 1, maxLength: 8 }),
        (requested, allowed, requests) => {
          const g = grantScopes(requested, allowed);
          const texts = new Set(requested.map((s) => s.text));
          for (const s of g.granted) expect(texts.has(s.text)).toBe(true);
          expect(g.granted.length + g.dropped.length).toBe(texts.size);
          for (const request of requests) {
            if (allows(g.granted, request)) expect(allows(allowed, request)).toBe(true);
            // and never more than was asked for
            if (allows(g.granted, request)) expect(allows(requested, request)).toBe(true);
          }
        },
      ),
      { numRuns: 1000 },
    );
  });

  it('whatever is allowed, asking for exactly it is granted whole', () => {
    fc.assert(
      fc.property(scopeSetArb, (allowed) => {
        expect(grantScopes(allowed, allowed).dropped).toEqual([]);
      }),
    );
  });

  const valueArb = fc
    .string({ minLength: 1, maxLength: 12 })
    .filter((s) => !/[\s\p{Cc},$\\|]/u.test(s));
  it('parse -> toV2 -> parse is stable, with any category value percent-encoded', () => {
    fc.assert(
      fc.property(
        contextArb,
        scopeTypeArb,
        permsArb,
        fc.option(fc.tuple(fc.option(valueArb, { nil: undefined }), valueArb), { nil: undefined }),
        (c, t, p, cat) => {
          const value =
            cat === undefined ? undefined : cat[0] === undefined ? cat[1] : `${cat[0]}|${cat[1]}`;
          const text = `${c}/${t}.${p}${value === undefined ? '' : `?category=${encodeURIComponent(value)}`}`;
          const first = resourceScope(text);
          expect(first.params.get('category')).toBe(value);
          const canonical = toV2(first);
          const second = resourceScope(canonical);
          expect({ ...second, text: '' }).toEqual({ ...first, text: '' });
          expect(toV2(second)).toBe(canonical);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('v2 permissions are accepted exactly when strictly in c r u d s order', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(...INTERACTIONS), { minLength: 1, maxLength: 6 }),
        (letters) => {
          const ordered = letters.every(
            (l, i) => i === 0 || INTERACTIONS.indexOf(l) > INTERACTIONS.indexOf(letters[i - 1]!),
          );
          expect(parseScope(`user/Patient.${letters.join('')}`).ok).toBe(ordered);
        },
      ),
    );
  });

  it('parseScope never throws, and what it accepts survives toV2', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 40 }),
          scopeTextArb.map((s) => `${s}x`),
          scopeTextArb,
        ),
        (text) => {
          const p = parseScope(text);
          if (p.ok) expect(parseScope(toV2(p.scope)).ok).toBe(true);
          else expect(p.problem.length).toBeGreaterThan(0);
        },
      ),
      { numRuns: 1000 },
    );
  });
});
