/**
 * The patient portal end to end, in headless Chromium (Debian's /usr/bin/chromium driven by
 * playwright-core), against two institutions with real HTTP listeners on 127.0.0.1
 * (portal-net.ts): home (0), where the patient registers and the EHR writes, and D (1), which
 * the patient grants. Every cryptographic step of the patient happens in the page.
 *
 *   front desk (test, EHR token): enrolment code at home
 *   page: create keys (default scrypt cost), register with the code; test pins keyblock 2
 *   EHR (test): a small bundle for the patient at home, anchored
 *   page: my records, decrypted in the browser; grant D; share link and its QR code
 *   D (test, EHR token at D): opens the link at D, reads D's $everything (verified records)
 *   page: export the key file (opened in Node: the CLI's format); revoke
 *   D: $everything serves none of the records; a fresh link for the revoked Consent is refused
 *   page: who read what lists D's read
 * Screenshots of each step go to test-artifacts/portal/.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Bundle, Observation, OperationOutcome, Provenance } from '@medplum/fhirtypes';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { makeShareLink, parseShareLink } from '../../src/authz/share-link.ts';
import { openKeyFileAsync } from '../../src/crypto/keyfile.ts';
import { systemRandom } from '../../src/crypto/random.ts';
import { ledgerValue } from '../../src/fhir/provenance.ts';
import { AUTH, closeSharedParts, smallTransaction } from '../http/harness.ts';
import { openPortalNet, type PortalNet } from './portal-net.ts';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = 'test-artifacts/portal';
const HOME = 0;
const D = 1;
const PASSPHRASE = 'a long and patient passphrase';
const IDENTITY = {
  system: 'http://hl7.org/fhir/sid/us-ssn',
  value: '999-55-0142',
  birthDate: '1984-03-09',
};
const JSON_HEADERS = { 'content-type': 'application/json', accept: 'application/json' };

let s: PortalNet;
let browser: Browser;
let page: Page;
let home: string;
let idHash: string;
let link: string;
let consent: string;
let recordIds: string[] = [];
let keyFileText: string;
const pageErrors: string[] = [];
let shot = 0;

async function screenshot(name: string): Promise<void> {
  shot++;
  await page.screenshot({
    path: join(ARTIFACTS, `${String(shot).padStart(2, '0')}-${name}.png`),
    fullPage: true,
  });
}

/** Waits for the status region to say something of `kind` (the page's answer to an action). */
async function status(kind: 'ok' | 'error', timeout = 30_000): Promise<string> {
  const region = page.locator(`#status.${kind}`);
  await region.waitFor({ timeout });
  return (await region.textContent()) ?? '';
}

/** Clicks `button` and waits for the page's verdict, which must be success. */
async function act(button: string, timeout = 30_000): Promise<string> {
  await page.evaluate(() => {
    const region = document.getElementById('status')!;
    region.className = '';
    region.textContent = '';
  });
  await page.getByRole('button', { name: button, exact: true }).click();
  await page.locator('#status.ok, #status.error').waitFor({ timeout });
  const said = (await page.locator('#status').textContent()) ?? '';
  expect(await page.locator('#status').getAttribute('class'), `the page said: ${said}`).toBe('ok');
  return said;
}

async function http(
  url: string,
  method: 'GET' | 'POST',
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, {
    method,
    headers: { ...AUTH, ...(body === undefined ? {} : JSON_HEADERS) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

const matches = (b: Bundle) =>
  (b.entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource!);
const ofType = <T>(b: Bundle, type: string) =>
  (b.entry ?? []).filter((e) => e.resource?.resourceType === type).map((e) => e.resource as T);

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `${CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; .ci/run does)`,
    );
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  s = await openPortalNet('portal-e2e', 2);
  home = s.urls[HOME]!;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
    ],
  });
  const context = await browser.newContext({ acceptDownloads: true });
  page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('console', (m) => {
    if (m.type() === 'error') pageErrors.push(m.text());
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await s?.close();
  await closeSharedParts();
}, 60_000);

describe('the patient portal in Chromium', () => {
  // One story: once a step fails, the later ones fail at once instead of waiting for the page.
  let failed: string | undefined;
  beforeEach(() => {
    if (failed !== undefined) throw new Error(`an earlier step failed: ${failed}`);
  });
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') failed ??= ctx.task.name;
  });

  it('serves the page with its strict CSP, and creates sealed keys in the browser', async () => {
    const res = await fetch(`${home}/portal/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(res.headers.get('cache-control')).toBe('no-cache');
    expect(await res.text()).toContain('<main>');
    const js = await fetch(`${home}/portal/app.js`);
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect((await js.text()).length).toBeGreaterThan(10_000);

    await page.goto(`${home}/portal/`);
    await expect(page.locator('h1').textContent()).resolves.toBe('SPChain patient portal');
    await page.getByLabel('New passphrase', { exact: true }).fill(PASSPHRASE);
    await page.getByLabel('New passphrase again').fill(PASSPHRASE);
    const said = await act('Create keys', 60_000);
    console.log(`portal: ${said}`);
    expect(said).toMatch(/^Keys created and sealed in [0-9.]+ s/);
    await expect(page.locator('#keys-state').textContent()).resolves.toBe(
      'Your keys are unlocked in this page.',
    );
    const stored = await page.evaluate(() => localStorage.getItem('spchain.portal.keyfile'));
    expect(JSON.parse(stored!)).toMatchObject({ kind: 'patient', kdf: { N: 2 ** 17 } });
    // Locked, the secrets are gone from the page; a wrong passphrase does not open the file.
    await page.getByRole('button', { name: 'Lock', exact: true }).click();
    await page.getByLabel('Passphrase of your keys').fill('not the passphrase');
    await page.getByRole('button', { name: 'Unlock', exact: true }).click();
    await expect(status('error', 60_000)).resolves.toContain('wrong passphrase');
    await page.getByLabel('Passphrase of your keys').fill(PASSPHRASE);
    const opened = await act('Unlock', 60_000);
    console.log(`portal: ${opened}`);
    expect(opened).toMatch(/^Keys unlocked in [0-9.]+ s/);
    await screenshot('keys');
  });

  it('registers with an enrolment code from the front desk', async () => {
    const enrol = await http(`${home}/spchain/enrolments`, 'POST', {
      identifier: `${IDENTITY.system}|${IDENTITY.value}`,
      birthDate: IDENTITY.birthDate,
    });
    expect(enrol.status).toBe(201);
    const code = enrol.json.code as string;
    idHash = enrol.json.idHash as string;

    await page.getByLabel('Enrolment code from the hospital desk').fill(code.toLowerCase());
    await page.getByRole('button', { name: 'Register', exact: true }).click();
    // The sidecar hands the register tx to its node (captured here); the page says if it failed.
    for (const end = Date.now() + 30_000; s.registers.length === 0; ) {
      const refused = await page.locator('#status.error').count();
      if (refused > 0)
        throw new Error(`the page said: ${await page.locator('#status').textContent()}`);
      if (Date.now() > end) throw new Error('no register tx reached the sidecar in 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(s.registers).toHaveLength(1);
    expect(Buffer.from(s.registers[0]!.idHash).toString('hex')).toBe(idHash);
    const blocks = await s.pinRegistrations();
    expect(blocks).toHaveLength(1);
    const said = await status('ok');
    expect(said).toBe('Registered: your patient block (2, 0) is pinned.');
    await expect(page.locator('#register-state').textContent()).resolves.toContain('(2, 0)');
    // The code is single use.
    expect((await http(`${home}/spchain/enrolments/${code}`, 'GET')).status).toBe(404);
    await screenshot('registered');
  });

  it('shows the records the EHR wrote, decrypted in the browser', async () => {
    const posted = await http(`${home}/fhir`, 'POST', smallTransaction(IDENTITY, 2, 'portal'));
    expect(posted.status, JSON.stringify(posted.json).slice(0, 400)).toBe(200);
    await s.net.anchorAll();
    await act('Show my records');
    const rows = page.locator('#records-body tr');
    // The Observations are the records (the Patient is the identity, carried by each one).
    await expect(rows.count()).resolves.toBe(2);
    const cells = await rows.evaluateAll((trs) =>
      trs.map((tr) => Array.from(tr.querySelectorAll('td'), (td) => td.textContent)),
    );
    const byType = (t: string) => cells.filter((c) => c[0] === t);
    expect(
      byType('Observation')
        .map((c) => c[3])
        .sort(),
    ).toEqual(['Heart rate: 60 beats/minute', 'Heart rate: 61 beats/minute']);
    recordIds = cells.map((c) => `Observation/${c[1]}`);
    for (const c of cells) {
      expect(c[4]).toBe(s.net.fixture.genesis.members[HOME]!.name);
      expect(c[5]).toBe('pinned');
    }
    await screenshot('records');
  });

  it('grants institution D and shows the share link with its QR code', async () => {
    await page.getByLabel('Institution that may read your records').selectOption(String(D));
    const said = await act('Grant access');
    expect(said).toContain('Access granted to');
    link = await page.getByLabel('Link', { exact: true }).inputValue();
    expect(link.startsWith(`${home}/portal/#share=`)).toBe(true);
    const parsed = parseShareLink(link);
    if (!parsed.ok) throw new Error(parsed.message);
    expect(parsed.payload).toMatchObject({
      idHash,
      grantee: D,
      issuer: home,
      block: { i: 2, j: 0 },
    });
    consent = parsed.payload.consent;
    await expect(page.locator('#share-qr svg path').count()).resolves.toBeGreaterThan(0);
    await expect(page.locator('#share-qr svg').getAttribute('aria-label')).resolves.toBe(
      'QR code of the share link',
    );
    await screenshot('granted');
    // A person opening the link in a browser is told what it is (nothing is redeemed).
    const other = await page.context().newPage();
    await other.goto(link);
    await other.locator('#share-notice').waitFor();
    await expect(other.locator('#share-notice-details').textContent()).resolves.toContain(consent);
    await other.close();
  });

  it('lets D open the link and read the records, verified against the ledger', async () => {
    const opened = await http(`${s.urls[D]}/spchain/share-links/open`, 'POST', { link });
    expect(opened.status, JSON.stringify(opened.json).slice(0, 400)).toBe(200);
    expect(opened.json.patient).toBe(`Patient/${idHash}`);
    const everything = await http(
      `${s.urls[D]}/fhir/Patient/${idHash}/$everything?_count=100`,
      'GET',
    );
    expect(everything.status).toBe(200);
    const bundle = everything.json as unknown as Bundle;
    const observations = matches(bundle).filter(
      (r) => r.resourceType === 'Observation',
    ) as Observation[];
    expect(observations.map((o) => o.valueQuantity?.value).sort()).toEqual([60, 61]);
    const provs = ofType<Provenance>(bundle, 'Provenance');
    expect(provs.length).toBeGreaterThanOrEqual(2);
    for (const p of provs) {
      expect(ledgerValue(p, 'verified')).toBe(true);
      expect(ledgerValue(p, 'block')).toBe('2/0');
    }
    // Single use: the same link does not open twice.
    const again = await http(`${s.urls[D]}/spchain/share-links/open`, 'POST', { link });
    expect(again.status).toBe(409);
  });

  it('exports a key file the CLI opens, and revokes the grant', async () => {
    const download = page.waitForEvent('download');
    await page.getByRole('button', { name: 'Export key file' }).click();
    const file = await download;
    expect(file.suggestedFilename()).toBe('spchain-patient-keys.json');
    keyFileText = readFileSync((await file.path())!, 'utf8');
    const keys = await openKeyFileAsync(keyFileText, PASSPHRASE);
    expect(keys.kind).toBe('patient');
    expect(Object.keys(keys.secretKeys).sort()).toEqual(['pre', 'signing']);

    await page.getByLabel('Grant to revoke').selectOption(consent);
    const said = await act('Revoke');
    expect(said).toContain(`revoked (${consent})`);
    await expect(page.locator('#share-link').isHidden()).resolves.toBe(true);
    await screenshot('revoked');

    // D's next $everything serves none of the records.
    const everything = await http(
      `${s.urls[D]}/fhir/Patient/${idHash}/$everything?_count=100`,
      'GET',
    );
    const bundle = everything.json as unknown as Bundle;
    if (everything.status === 200) {
      expect(matches(bundle).filter((r) => r.resourceType === 'Observation')).toEqual([]);
    } else {
      expect((everything.json as unknown as OperationOutcome).resourceType).toBe(
        'OperationOutcome',
      );
    }
    // A fresh link for the revoked Consent (signed with the exported key) no longer redeems.
    const { link: fresh } = makeShareLink(
      {
        chainId: s.net.fixture.genesis.chainId,
        idHash,
        block: { i: 2, j: 0 },
        consent,
        grantee: D,
        issuer: home,
        exp: Date.now() + 3_600_000,
      },
      keys.secretKeys.signing!,
      systemRandom,
    );
    const refused = await http(`${s.urls[D]}/spchain/share-links/open`, 'POST', { link: fresh });
    expect(refused.status).toBe(403);
    expect(JSON.stringify(refused.json)).toMatch(/revoked/i);
  });

  it("lists D's read under who read what", async () => {
    await act('Show the access log');
    const cells = await page
      .locator('#audit-body tr')
      .evaluateAll((trs) =>
        trs.map((tr) => Array.from(tr.querySelectorAll('td'), (td) => td.textContent ?? '')),
      );
    const dName = s.net.fixture.genesis.members[D]!.name;
    const atD = cells.filter((c) => c[4] === dName);
    expect(atD.length, JSON.stringify(cells)).toBeGreaterThan(0);
    // D's clinical system read exactly the patient's records there.
    const read = atD.find((c) => recordIds.every((id) => c[3]!.includes(id)));
    expect(read, JSON.stringify(atD)).toBeDefined();
    expect(read![1]).toMatch(/clinical system/);
    await screenshot('audit');
  });

  it('removes the keys, imports the exported file and finds the registration again', async () => {
    await page.getByRole('button', { name: 'Remove keys from this browser' }).click();
    await expect(page.locator('#import-form').isVisible()).resolves.toBe(true);
    // Nothing decrypted stays on the page once the keys are gone.
    await expect(page.locator('#records-body tr').count()).resolves.toBe(0);
    await expect(page.locator('#audit-body tr').count()).resolves.toBe(0);
    await page.getByLabel('Key file (from this portal or the command line tool)').setInputFiles({
      name: 'keys.json',
      mimeType: 'application/json',
      buffer: Buffer.from(keyFileText),
    });
    await act('Import');
    await page.getByLabel('Passphrase of your keys').fill(PASSPHRASE);
    await act('Unlock', 60_000);
    const enrol = await http(`${home}/spchain/enrolments`, 'POST', {
      identifier: `${IDENTITY.system}|${IDENTITY.value}`,
      birthDate: IDENTITY.birthDate,
    });
    await page.getByLabel('Enrolment code from the hospital desk').fill(enrol.json.code as string);
    const said = await act('Register');
    expect(said).toBe('You were already registered: your patient block is (2, 0).');
    expect(s.registers).toEqual([]);
    await expect(
      page.getByRole('button', { name: 'Register', exact: true }).isDisabled(),
    ).resolves.toBe(true);
    await act('Show my records');
    await expect(page.locator('#records-body tr').count()).resolves.toBe(2);
    await screenshot('imported');
    expect(pageErrors).toEqual([]);
  });
});
