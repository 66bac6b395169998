/**
 * The patient portal (issue 6 part 5), bundled for the browser by src/http/portal-assets.ts and
 * served by the patient's home sidecar at /portal. It runs the project's own crypto in the page,
 * on @noble/curves (no native addon in a browser) with the browser's CSPRNG: the patient's secret
 * keys are made, sealed, opened and used here, and never sent anywhere. Sections:
 *   keys (keys.ts), registration (here), records, institutions, access log (views.ts),
 *   grant, share link and revocation (sharing.ts), approving a SMART app (approve.ts), and
 *   institutions' access requests with the patient's threshold (access.ts).
 */
import { parseShareLink } from '../authz/share-link.ts';
import { fromHex } from '../crypto/bytes.ts';
import { nobleBackend, useCurveBackend } from '../crypto/curve/backend.ts';
import { systemRandom } from '../crypto/random.ts';
import { makeRegisterTx } from '../ledger/author.ts';
import { encodeTx } from '../ledger/tx.ts';
import { clearAccess, initAccess, refreshAccess } from './access.ts';
import { initApprove, refreshApprove } from './approve.ts';
import {
  loadDirectory,
  loadRegistration,
  loadState,
  memberOf,
  type PortalContext,
  saveState,
} from './context.ts';
import { ACTION_DONE, announce, busy, byId, el } from './dom.ts';
import {
  checkPatientKeyFile,
  createPatientKeys,
  forgetKeyFile,
  KEYFILE_DOWNLOAD_NAME,
  openPatientKeys,
  storedKeyFile,
  storeKeyFile,
  wipe,
} from './keys.ts';
import { HttpError, postJson, requestJson, signedGet } from './net.ts';
import { toBase64 } from './records.ts';
import { initSharing, refreshSharing } from './sharing.ts';
import { clearPrivateViews, initViews, showInstitutions } from './views.ts';

useCurveBackend(nobleBackend);

const button = (id: string) => byId(id, HTMLButtonElement);
const input = (id: string) => byId(id, HTMLInputElement);

const REGISTRATION_WAIT_MS = 120_000;

function start(): void {
  const ctx: PortalContext = {
    session: null,
    state: loadState(localStorage),
    directory: null,
    random: systemRandom,
    storage: localStorage,
    origin: location.origin,
    save() {
      saveState(this.storage, this.state);
      this.refresh();
    },
    refresh: () => refresh(ctx),
  };
  document.addEventListener(ACTION_DONE, () => ctx.refresh());
  showShareNotice();
  initKeys(ctx);
  initRegistration(ctx);
  initViews(ctx);
  initSharing(ctx);
  initAccess(ctx);
  initApprove(ctx);
  ctx.refresh();
  showInstitutions(ctx).catch((err: Error) => announce(err.message, 'error'));
  if (ctx.state.idHash && !ctx.state.block) {
    waitForRegistration(ctx).catch((err: Error) => announce(err.message, 'error'));
  }
}

/** What a person opening a share link in a browser sees. */
function showShareNotice(): void {
  if (!location.hash.startsWith('#share=')) return;
  const parsed = parseShareLink(location.href);
  const details = byId('share-notice-details');
  if (parsed.ok) {
    const p = parsed.payload;
    details.append(
      el('dt', {}, 'For institution'),
      el('dd', {}, String(p.grantee)),
      el('dt', {}, 'Valid until'),
      el('dd', {}, new Date(p.exp).toLocaleString()),
      el('dt', {}, 'Grant'),
      el('dd', {}, p.consent),
    );
  } else {
    details.append(el('dt', {}, 'Problem'), el('dd', {}, parsed.message));
  }
  byId('share-notice').hidden = false;
}

function refresh(ctx: PortalContext): void {
  const stored = storedKeyFile(ctx.storage) !== null;
  const open = ctx.session !== null;
  const registered = ctx.state.block !== undefined;
  byId('keys-state').textContent = open
    ? 'Your keys are unlocked in this page.'
    : stored
      ? 'Your keys are stored in this browser, locked.'
      : 'No keys in this browser yet.';
  byId('create-form').hidden = stored;
  byId('import-form').hidden = stored;
  byId('unlock-form').hidden = !stored || open;
  button('export-button').disabled = !stored;
  button('lock-button').disabled = !open;
  button('forget-button').disabled = !stored;
  button('register-button').disabled = !open || registered;
  const s = ctx.state;
  byId('register-state').textContent = registered
    ? `Registered: your patient block is (${s.block!.i}, ${s.block!.j}) at institution ${s.home}.`
    : s.idHash
      ? 'Registration submitted; waiting for the ledger to pin it.'
      : 'Not registered from this browser yet.';
  button('records-button').disabled = !open || !registered;
  button('audit-button').disabled = !open || !registered;
  refreshSharing(ctx);
  refreshAccess(ctx);
  refreshApprove(ctx);
}

// ---------------------------------------------------------------------------------------------
// Keys

function initKeys(ctx: PortalContext): void {
  byId('create-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const pass = input('create-passphrase');
    const confirm = input('create-confirm');
    void busy(button('create-button'), 'Creating and sealing your keys…', async () => {
      if (pass.value !== confirm.value) throw new Error('the two passphrases differ');
      const t0 = performance.now();
      const { keyFile, session } = await createPatientKeys(pass.value, ctx.random);
      const seconds = ((performance.now() - t0) / 1000).toFixed(1);
      storeKeyFile(ctx.storage, keyFile);
      ctx.state = { grants: [] };
      ctx.session = session;
      pass.value = '';
      confirm.value = '';
      ctx.save();
      announce(`Keys created and sealed in ${seconds} s. Export the key file and keep it.`, 'ok');
    });
  });

  byId('import-form').addEventListener('submit', (e) => {
    e.preventDefault();
    void busy(button('import-button'), 'Reading the key file…', async () => {
      const file = input('import-file').files?.[0];
      if (!file) throw new Error('choose a key file');
      if (file.size > 64 * 1024) throw new Error('this file is too large to be a key file');
      const text = await file.text();
      checkPatientKeyFile(text);
      storeKeyFile(ctx.storage, text);
      ctx.state = { grants: [] };
      ctx.save();
      announce('Key file imported. Unlock it with its passphrase.', 'ok');
      input('unlock-passphrase').focus();
    });
  });

  byId('unlock-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const pass = input('unlock-passphrase');
    void busy(button('unlock-button'), 'Opening your keys…', async () => {
      const text = storedKeyFile(ctx.storage);
      if (text === null) throw new Error('no key file in this browser');
      const t0 = performance.now();
      ctx.session = await openPatientKeys(text, pass.value);
      const seconds = ((performance.now() - t0) / 1000).toFixed(1);
      pass.value = '';
      ctx.refresh();
      announce(`Keys unlocked in ${seconds} s.`, 'ok');
    });
  });

  button('export-button').addEventListener('click', () => {
    const text = storedKeyFile(ctx.storage);
    if (text === null) return;
    const url = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
    const a = el('a', { href: url, download: KEYFILE_DOWNLOAD_NAME });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    announce(`Key file saved as ${KEYFILE_DOWNLOAD_NAME}. Keep it safe, with its passphrase.`);
  });

  button('lock-button').addEventListener('click', () => lock(ctx, 'Keys locked.'));

  button('forget-button').addEventListener('click', () => {
    lock(ctx, 'Keys and registration removed from this browser.');
    forgetKeyFile(ctx.storage);
    ctx.state = { grants: [] };
    ctx.save();
  });
}

function lock(ctx: PortalContext, message: string): void {
  if (ctx.session) wipe(ctx.session);
  ctx.session = null;
  clearPrivateViews();
  clearAccess();
  ctx.refresh();
  announce(message);
}

// ---------------------------------------------------------------------------------------------
// Registration

/** An enrolment code as typed (spaces, dashes, lower case) in its canonical form. */
export function normaliseCode(text: string): string {
  return text.replace(/[\s-]/g, '').toUpperCase();
}

interface Enrolment {
  idHash: string;
  home: number;
  chainId: string;
  expires: string;
}

function initRegistration(ctx: PortalContext): void {
  byId('register-form').addEventListener('submit', (e) => {
    e.preventDefault();
    void busy(button('register-button'), 'Registering…', async () => {
      const session = ctx.session;
      if (!session) throw new Error('unlock your keys first');
      const code = normaliseCode(input('enrolment-code').value);
      if (!/^[A-Z0-9]{10}$/.test(code)) throw new Error('the enrolment code has 10 characters');
      const { body: enrolment } = await requestJson<Enrolment>(
        `${ctx.origin}/spchain/enrolments/${encodeURIComponent(code)}`,
      );
      const directory = ctx.directory ?? (await loadDirectory(ctx));
      if (enrolment.chainId !== directory.chainId || enrolment.home !== directory.self) {
        throw new Error("this code is from another hospital's desk: use that hospital's portal");
      }
      const known = await loadRegistration(ctx, enrolment.idHash);
      if (known.registered && known.block) {
        await adoptRegistration(ctx, enrolment, known.block);
        input('enrolment-code').value = '';
        return;
      }
      const home = memberOf(directory, enrolment.home);
      if (!home?.chameleonKey) {
        throw new Error('the hospital did not publish its chameleon hash key: cannot register');
      }
      const tx = makeRegisterTx({
        chainId: directory.chainId,
        idHash: fromHex(enrolment.idHash),
        home: { index: home.index, chameleonKey: fromHex(home.chameleonKey) },
        patient: session,
        fee: directory.minFee ?? 1,
        random: ctx.random,
      });
      await postJson(
        `${ctx.origin}/spchain/patients/self`,
        { code, registerTx: toBase64(encodeTx(tx)) },
        { ok: [202] },
      );
      ctx.state = {
        idHash: enrolment.idHash,
        chainId: directory.chainId,
        home: home.index,
        grants: [],
      };
      input('enrolment-code').value = '';
      ctx.save();
      await waitForRegistration(ctx);
    });
  });
}

/**
 * A patient registered before (keys imported from the CLI or another browser): the block is taken
 * as this browser's once a request signed with these keys is accepted for it (401 otherwise).
 */
async function adoptRegistration(
  ctx: PortalContext,
  enrolment: Enrolment,
  block: { i: number; j: number },
): Promise<void> {
  const session = ctx.session!;
  const signer = {
    chainId: enrolment.chainId,
    idHash: enrolment.idHash,
    signingSecret: session.signingSecret,
    random: ctx.random,
  };
  try {
    await signedGet(ctx.origin, `/spchain/patients/${enrolment.idHash}/audit?count=1`, signer);
  } catch (err) {
    if (err instanceof HttpError && err.status === 401) {
      throw new Error(
        'you are registered with other keys: import the key file you registered with',
      );
    }
    throw err;
  }
  ctx.state = {
    idHash: enrolment.idHash,
    chainId: enrolment.chainId,
    home: enrolment.home,
    block,
    grants: [],
  };
  ctx.save();
  announce(`You were already registered: your patient block is (${block.i}, ${block.j}).`, 'ok');
}

/** Polls the home sidecar until the patient's block is pinned (or a deadline). */
async function waitForRegistration(ctx: PortalContext): Promise<void> {
  const idHash = ctx.state.idHash;
  if (!idHash) return;
  announce('Registration submitted; waiting for the ledger to pin your patient block…');
  const end = Date.now() + REGISTRATION_WAIT_MS;
  while (Date.now() < end) {
    const reg = await loadRegistration(ctx, idHash);
    if (reg.registered && reg.block) {
      ctx.state.block = reg.block;
      ctx.state.home = reg.home ?? ctx.state.home;
      ctx.save();
      announce(`Registered: your patient block (${reg.block.i}, ${reg.block.j}) is pinned.`, 'ok');
      return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  announce('Not pinned yet. This page checks again when you reload it.');
}

start();
