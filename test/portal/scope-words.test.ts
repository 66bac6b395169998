/**
 * The portal's words for what a SMART app asks (src/portal/scope-words.ts), the checks of a
 * pasted request code and of the redirect the browser is sent to, and of the threshold a patient
 * types (src/portal/access.ts): pure functions, tested here in Node by tables.
 */
import { describe, expect, it } from 'vitest';
import { thresholdInputProblem } from '../../src/portal/access.ts';
import { checkRedirect, describeScopes, parseApprovalInput } from '../../src/portal/scope-words.ts';

const CODE = '0123456789abcdef0123456789abcdef';

describe('scopes in words', () => {
  it.each([
    ['patient/*.rs', 'read all your records'],
    ['patient/*.read', 'read all your records'],
    ['patient/*.s', 'search all your records'],
    ['patient/*.cruds', 'read, add to, change and delete all your records'],
    ['patient/*.write', 'add to, change and delete all your records'],
    ['patient/Observation.rs', 'read your test results and measurements'],
    ['patient/Condition.read', 'read your conditions and diagnoses'],
    ['patient/Goal.rs', 'read your Goal records'],
    [
      'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory',
      'read your test results and measurements (category laboratory only)',
    ],
    ['user/*.rs', "read all a user's records"],
    ['system/*.rs', "read all every patient's records"],
    ['launch/patient', 'know which patient record is yours'],
    ['offline_access', 'keep access after you close the app (until you revoke it)'],
    ['online_access', 'keep access while you use the app'],
    ['openid', 'know who you are'],
    ['patient/*.xyz', 'something this portal does not understand'],
    ['<b>', 'something this portal does not understand'],
  ])('%s: %s', (scope, text) => {
    expect(describeScopes(scope)).toEqual([{ text, scope }]);
  });

  it('keeps every asked scope, in order, with its raw text', () => {
    expect(describeScopes('launch/patient  patient/*.rs offline_access')).toEqual([
      { text: 'know which patient record is yours', scope: 'launch/patient' },
      { text: 'read all your records', scope: 'patient/*.rs' },
      {
        text: 'keep access after you close the app (until you revoke it)',
        scope: 'offline_access',
      },
    ]);
    expect(describeScopes('')).toEqual([]);
  });
});

describe('what the patient pastes', () => {
  it.each([
    [CODE, { ok: true, request: CODE }],
    [` ${CODE.toUpperCase()}\n`, { ok: true, request: CODE }],
    [
      `http://127.0.0.1:8080/portal/#approve=${CODE}`,
      { ok: true, request: CODE, origin: 'http://127.0.0.1:8080' },
    ],
    [
      `https://hospital.example/portal/#approve=${CODE.toUpperCase()}`,
      { ok: true, request: CODE, origin: 'https://hospital.example' },
    ],
  ])('%s is a request', (text, expected) => {
    expect(parseApprovalInput(text)).toEqual(expected);
  });

  it.each([
    ['', 'the request code has 32 letters and digits (0-9, a-f)'],
    [CODE.slice(1), 'the request code has 32 letters and digits (0-9, a-f)'],
    [`${CODE}0`, 'the request code has 32 letters and digits (0-9, a-f)'],
    [
      `https://h.example/portal/#share=${CODE}`,
      'this link is not an approval link of a patient portal',
    ],
    [
      `javascript:alert(1)#approve=${CODE}`,
      'this link is not an approval link of a patient portal',
    ],
    [
      `https://h.example/portal/#approve=${CODE}&x=1`,
      'this link is not an approval link of a patient portal',
    ],
  ])('%j is refused', (text, message) => {
    expect(parseApprovalInput(text)).toEqual({ ok: false, message });
  });
});

describe('the redirect after a decision', () => {
  it('follows http(s) only', () => {
    expect(checkRedirect('http://127.0.0.1:7777/callback?code=a&state=b')).toBe(
      'http://127.0.0.1:7777/callback?code=a&state=b',
    );
    expect(checkRedirect('https://app.example/cb?error=access_denied')).toBe(
      'https://app.example/cb?error=access_denied',
    );
    expect(() => checkRedirect('javascript:alert(1)')).toThrow(/not http\(s\)/);
    expect(() => checkRedirect('data:text/html,x')).toThrow(/not http\(s\)/);
    expect(() => checkRedirect('/relative')).toThrow(/not a URL/);
    expect(() => checkRedirect(undefined)).toThrow(/did not say where/);
  });
});

describe('the threshold the patient types', () => {
  it.each(['0', '1', '0.5', ' 0.62 ', '.25'])('%j is a threshold', (text) => {
    expect(thresholdInputProblem(text)).toBeUndefined();
  });
  it.each(['', ' ', '-0.1', '1.01', 'half', 'NaN', 'Infinity', '0x1'])('%j is not', (text) => {
    expect(thresholdInputProblem(text)).toMatch(/a number from 0 to 1/);
  });
});
