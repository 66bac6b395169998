/**
 * The patient portal end to end, in headless Chromium (Debian's /usr/bin/chromium driven by
 * playwright-core), against four institutions with real HTTP listeners on 127.0.0.1
 * (portal-net.ts): home (0), where the patient registers and the EHR writes, with a SMART
 * authorisation server; D (1), which the patient grants; ASKER (2) and LOW (3), which ask for
 * access. Every cryptographic step of the patient happens in the page.
 *
 * Reputations come from a STUB ReputationView given to the APIs (portal-net.ts `reputations`:
 * 0.75, 0.5, 0.62, 0.31): the in-process network closes no chunks of keyblocks, so it has no real
 * reputations. Everything else is real: signatures, LevelDB, the grant, the SMART tokens.
 *
 *   front desk (test, EHR token): enrolment code at home
 *   page: create keys (default scrypt cost), register with the code; test pins keyblock 2
 *   EHR (test): a small bundle for the patient at home, anchored
 *   page: my records, decrypted in the browser; grant D; share link and its QR code
 *   D (test, EHR token at D): opens the link at D, reads D's $everything (verified records)
 *   page: export the key file (opened in Node: the CLI's format); revoke
 *   D: $everything serves none of the records; a fresh link for the revoked Consent is refused
 *   page: who read what lists D's read
 *   app (test): a SMART standalone launch at home (PKCE S256); Chromium opens the authorize page,
 *     follows its link to the portal, unlocks, approves (signed in the page) and lands on the
 *     app's redirect URI with code and state; the test exchanges the code and reads $everything;
 *     a second launch, looked up by its pasted request code, is declined (error=access_denied)
 *   page: sets a threshold of 0.5; ASKER (0.62) asks through its own sidecar, LOW (0.31) is
 *     refused by the home (403 BELOW_THRESHOLD); the page lists ASKER's request and approves it
 *     (a grant made in the page, then the decision with its Consent id, then a share link);
 *     ASKER polls, sees approved + the Consent id, reads $everything; the home's own request is
 *     declined in the page
 * Screenshots of each step go to test-artifacts/portal/.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Bundle, Observation, OperationOutcome, Provenance } from '@medplum/fhirtypes';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { makeShareLink, parseShareLink } from '../../src/authz/share-link.ts';
import { openKeyFileAsync } from '../../src/crypto/keyfile.ts';
import { systemRandom } from '../../src/crypto/random.ts';
import { ledgerValue } from '../../src/fhir/provenance.ts';
import { ClientRegistry, parseClients } from '../../src/smart/clients.ts';
import { AUTH, closeSharedParts, smallTransaction } from '../http/harness.ts';
import { openPortalNet, type PortalNet } from './portal-net.ts';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = 'test-artifacts/portal';
const HOME = 0;
const D = 1;
const ASKER = 2;
const LOW = 3;
/** The stub reputations (see the header). */
const REPUTATIONS = [0.75, 0.5, 0.62, 0.31];
const APP_ID = 'chart-app';
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
/** The SMART app's own server: answers every request, and remembers the callbacks it got. */
let app: Server;
let appOrigin: string;
const callbacks: string[] = [];
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
  app = createServer((req, res) => {
    if (req.url?.startsWith('/callback')) callbacks.push(req.url);
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(
      '<!doctype html><html lang="en"><head><title>Chart app</title><link rel="icon" href="data:,">' +
        '</head><body><h1>Chart app</h1></body></html>',
    );
  });
  await new Promise<void>((ok) => app.listen(0, '127.0.0.1', ok));
  appOrigin = `http://127.0.0.1:${(app.address() as AddressInfo).port}`;
  const clients = new ClientRegistry(
    parseClients(
      {
        clients: [
          {
            clientId: APP_ID,
            name: 'Chart app',
            kind: 'public',
            redirectUris: [`${appOrigin}/callback`],
            scope: 'launch/patient offline_access patient/*.rs',
          },
        ],
      },
      'test clients',
    ),
  );
  s = await openPortalNet('portal-e2e', 4, { reputations: REPUTATIONS, clients });
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
  await new Promise((ok) => app?.close(ok));
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
  /** A standalone launch of the SMART app at home, as the app builds it (PKCE S256). */
  function launch(state: string): { url: string; verifier: string } {
    const verifier = randomBytes(32).toString('base64url');
    const url = new URL(`${home}/smart/authorize`);
    const params = {
      response_type: 'code',
      client_id: APP_ID,
      redirect_uri: `${appOrigin}/callback`,
      scope: 'launch/patient patient/*.rs',
      state,
      aud: `${home}/fhir`,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
    };
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
    return { url: url.toString(), verifier };
  }

  /** Waits until the browser is at the app's redirect URI; its query. */
  async function landedAtApp(): Promise<URLSearchParams> {
    await page.waitForURL((u) => u.origin === appOrigin && u.pathname === '/callback', {
      timeout: 30_000,
    });
    const url = new URL(page.url());
    expect(callbacks).toContain(`${url.pathname}${url.search}`);
    return url.searchParams;
  }

  it("approves a SMART app's launch in the page and sends the browser back with a code", async () => {
    const { url, verifier } = launch('state-approve-1');
    await page.goto(url);
    await expect(page.locator('h1').textContent()).resolves.toBe(
      'Chart app asks to read your records',
    );
    await page.getByRole('link', { name: 'Open the patient portal to approve or decline' }).click();
    await page.waitForURL(/\/portal\/#approve=[0-9a-f]{32}$/);
    const request = new URL(page.url()).hash.slice('#approve='.length);
    await page.locator('#approve-request').waitFor();
    await expect(page.locator('#approve-title').textContent()).resolves.toBe(
      'Chart app asks to read your records',
    );
    const asks = await page.locator('#approve-details li').allTextContents();
    expect(asks).toEqual([
      'know which patient record is yours launch/patient',
      'read all your records patient/*.rs',
    ]);
    const details = (await page.locator('#approve-details').textContent()) ?? '';
    expect(details).toContain(`Chart app (${APP_ID})`);
    expect(details).toContain(`Server${home}/fhir`);
    expect(details).toContain(request);
    // The page opened with locked keys: approving needs them (declining does not).
    const approve = page.getByRole('button', { name: 'Approve', exact: true });
    await expect(approve.isDisabled()).resolves.toBe(true);
    await expect(page.locator('#approve-needs').textContent()).resolves.toMatch(
      /^Unlock your keys/,
    );
    await page.getByLabel('Passphrase of your keys').fill(PASSPHRASE);
    await act('Unlock', 60_000);
    await expect(approve.isEnabled()).resolves.toBe(true);
    await page.locator('#approve').scrollIntoViewIfNeeded();
    await screenshot('app-approval');
    await approve.click();

    const back = await landedAtApp();
    expect(back.get('state')).toBe('state-approve-1');
    const code = back.get('code');
    expect(code).toBeTruthy();
    expect(back.get('error')).toBeNull();
    // The app exchanges the code (PKCE) and reads the patient's records with the token.
    const res = await fetch(`${home}/smart/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code: code!,
        redirect_uri: `${appOrigin}/callback`,
        code_verifier: verifier,
        client_id: APP_ID,
      }),
    });
    const token = (await res.json()) as { access_token?: string; patient?: string; scope?: string };
    expect(res.status, JSON.stringify(token)).toBe(200);
    expect(token.patient).toBe(idHash);
    expect(token.scope?.split(' ')).toEqual(['launch/patient', 'patient/*.rs']);
    const everything = await fetch(`${home}/fhir/Patient/${idHash}/$everything?_count=100`, {
      headers: { authorization: `Bearer ${token.access_token}`, accept: 'application/fhir+json' },
    });
    expect(everything.status).toBe(200);
    const observations = ofType<Observation>((await everything.json()) as Bundle, 'Observation');
    expect(observations.map((o) => o.valueQuantity?.value).sort()).toEqual([60, 61]);
    // The code is single use.
    const again = await fetch(`${home}/smart/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code: code!,
        redirect_uri: `${appOrigin}/callback`,
        code_verifier: verifier,
        client_id: APP_ID,
      }),
    });
    expect(again.status).toBe(400);
  });

  it('declines a launch whose request code the patient pastes', async () => {
    const { url } = launch('state-decline-2');
    const view = (await (await fetch(url, { headers: { accept: 'application/json' } })).json()) as {
      request: string;
    };
    await page.goto(`${home}/portal/`);
    const field = page.getByLabel("Request code (or the link from the app's approval page)");
    await field.fill('not a code');
    await page.getByRole('button', { name: 'Look up', exact: true }).click();
    await expect(status('error')).resolves.toBe(
      'the request code has 32 letters and digits (0-9, a-f)',
    );
    await field.fill(` ${view.request.toUpperCase()} `);
    await act('Look up');
    await expect(page.locator('#approve-title').textContent()).resolves.toBe(
      'Chart app asks to read your records',
    );
    await page.getByRole('button', { name: 'Decline', exact: true }).click();
    const back = await landedAtApp();
    expect(back.get('error')).toBe('access_denied');
    expect(back.get('state')).toBe('state-decline-2');
    expect(back.get('code')).toBeNull();
    const gone = await fetch(`${home}/smart/authorize/requests/${view.request}`);
    expect(gone.status).toBe(404);
  });

  const PURPOSE = 'Referral: cardiology follow-up';
  /** Institution `from`'s staff ask through their own sidecar (EHR token there). */
  const send = (from: number) =>
    http(`${s.urls[from]}/spchain/access-requests/send`, 'POST', { idHash, purpose: PURPOSE });
  const accessRows = () =>
    page
      .locator('#access-body tr')
      .evaluateAll((trs) =>
        trs.map((tr) => Array.from(tr.querySelectorAll('td'), (td) => td.textContent ?? '')),
      );
  const nameOf = (i: number) => s.net.fixture.genesis.members[i]!.name;

  it('sets a threshold; an institution below it is refused by the home, with the reason', async () => {
    await page.goto(`${home}/portal/`);
    await page.getByLabel('Passphrase of your keys').fill(PASSPHRASE);
    await act('Unlock', 60_000);
    await act('Show the requests');
    await expect(page.locator('#threshold-state').textContent()).resolves.toBe(
      'No threshold set: institutions cannot ask you for access.',
    );
    const early = await send(ASKER);
    expect(early.status).toBe(403);
    expect(JSON.stringify(early.json)).toContain('NO_POLICY');

    await page.getByLabel('Lowest reputation allowed to ask (0 to 1)').fill('0.5');
    await expect(act('Save threshold')).resolves.toBe(
      'Threshold saved. Institutions with a reputation below 0.5 are refused automatically.',
    );
    const refused = await send(LOW);
    expect(refused.status).toBe(403);
    expect(refused.json).toMatchObject({
      resourceType: 'OperationOutcome',
      issue: [
        {
          severity: 'error',
          code: 'forbidden',
          details: {
            coding: [{ system: 'urn:spchain:access-request', code: 'BELOW_THRESHOLD' }],
            text: "the patient's home refused it: institution 3 has reputation 0.31, below the 0.5 the patient set",
          },
        },
      ],
    });
  });

  it('lists the request of an institution above it; approving grants it, and it reads', async () => {
    const asked = await send(ASKER);
    expect(asked.status, JSON.stringify(asked.json).slice(0, 300)).toBe(201);
    const id = asked.json.id as string;
    expect(asked.json).toEqual({
      id,
      state: 'pending',
      reputation: 0.62,
      poll: `${home}/spchain/access-requests/${id}`,
    });
    expect((await http(asked.json.poll as string, 'GET')).json).toEqual({ state: 'pending' });

    await act('Show the requests');
    const before = await accessRows();
    expect(before.map((c) => c.slice(0, 4))).toEqual([
      [`${nameOf(ASKER)} (${ASKER})`, '0.62', '0.62', PURPOSE],
    ]);
    expect(before[0]![5]).toBe('waiting for you');
    await page.locator('#access').scrollIntoViewIfNeeded();
    await screenshot('access-requests');

    const said = await act(`Approve the request of ${nameOf(ASKER)}`);
    expect(said).toMatch(new RegExp(`^Request of ${nameOf(ASKER)} approved: access granted`));
    const accessLink = await page.getByLabel('Share link', { exact: true }).inputValue();
    const parsed = parseShareLink(accessLink);
    if (!parsed.ok) throw new Error(parsed.message);
    expect(parsed.payload).toMatchObject({ idHash, grantee: ASKER, issuer: home });
    await expect(page.locator('#access-qr svg path').count()).resolves.toBeGreaterThan(0);
    const after = await accessRows();
    expect(after[0]![5]).toBe(`approved (${parsed.payload.consent})`);
    await screenshot('access-approved');

    // The requester polls: approved, with the Consent id of the grant the page made.
    const polled = await http(asked.json.poll as string, 'GET');
    expect(polled.json).toEqual({ state: 'approved', consentId: parsed.payload.consent });
    const everything = await http(
      `${s.urls[ASKER]}/fhir/Patient/${idHash}/$everything?_count=100`,
      'GET',
    );
    expect(everything.status).toBe(200);
    const observations = matches(everything.json as unknown as Bundle).filter(
      (r) => r.resourceType === 'Observation',
    ) as Observation[];
    expect(observations.map((o) => o.valueQuantity?.value).sort()).toEqual([60, 61]);
  });

  it('declines a request in the page', async () => {
    const asked = await send(HOME);
    expect(asked.status, JSON.stringify(asked.json).slice(0, 300)).toBe(201);
    expect(asked.json.reputation).toBe(0.75);
    await act('Show the requests');
    const said = await act(`Decline the request of ${nameOf(HOME)}`);
    expect(said).toBe(`Request of ${nameOf(HOME)} declined.`);
    const rows = await accessRows();
    expect(rows.map((c) => [c[0], c[5]])).toEqual([
      [`${nameOf(HOME)} (${HOME})`, 'declined'],
      [`${nameOf(ASKER)} (${ASKER})`, expect.stringMatching(/^approved \(consent-/)],
    ]);
    expect((await http(asked.json.poll as string, 'GET')).json).toEqual({ state: 'declined' });
    expect(pageErrors).toEqual([]);
  });
});
