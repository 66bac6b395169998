/**
 * The read-only sections: my records (every holder's, asked of this page's own sidecar by block
 * number with the patient's request signature per page, decrypted here), the institutions of the network (name, index, reputation, consensus
 * group), and who read what (the AuditEvents about the patient at each institution concerned).
 */
import {
  type Directory,
  holdersOf,
  loadDirectory,
  loadRegistration,
  memberOf,
  type PortalContext,
  type Registration,
  signerOf,
  urlOf,
} from './context.ts';
import { announce, busy, byId, row } from './dom.ts';
import { HttpError, signedGet } from './net.ts';
import { decryptRecord, recordResource, type StoredRecord, summarise } from './records.ts';

const MAX_RECORD_PAGES = 50;

export function initViews(ctx: PortalContext): void {
  const records = byId('records-button', HTMLButtonElement);
  records.addEventListener('click', () => {
    void busy(records, 'Fetching and decrypting your records…', () => showRecords(ctx));
  });
  const institutions = byId('institutions-button', HTMLButtonElement);
  institutions.addEventListener('click', () => {
    void busy(institutions, 'Loading the institutions…', () => showInstitutions(ctx));
  });
  const audit = byId('audit-button', HTMLButtonElement);
  audit.addEventListener('click', () => {
    void busy(audit, 'Loading the access log…', () => showAudit(ctx));
  });
}

/** Takes the decrypted records, the access log and the share link off the page (on lock). */
export function clearPrivateViews(): void {
  byId('records-body').replaceChildren();
  byId('records-table').hidden = true;
  byId('audit-body').replaceChildren();
  byId('audit-table').hidden = true;
  byId('share-link').hidden = true;
  byId('share-link-text', HTMLInputElement).value = '';
  byId('share-qr').replaceChildren();
}

const nameOf = (d: Directory, index: number): string =>
  memberOf(d, index)?.name ?? `institution ${index}`;

async function showRecords(ctx: PortalContext): Promise<void> {
  const signer = signerOf(ctx);
  const session = ctx.session!;
  const directory = await loadDirectory(ctx);
  const reg = await loadRegistration(ctx, signer.idHash);
  const body = byId('records-body');
  body.replaceChildren();
  let shown = 0;
  const problems: string[] = [];
  for (const holder of holdersOf(reg)) {
    const holderName = nameOf(directory, holder);
    try {
      for await (const rec of holderRecords(ctx, directory, reg, holder, signer)) {
        const d = decryptRecord(session.preSecret, rec);
        body.append(
          row([
            rec.resourceType,
            rec.id,
            String(rec.version),
            d.ok ? summarise(recordResource(d.resource, rec)) : `(${d.problem})`,
            holderName,
            anchoringText(rec.anchoring),
          ]),
        );
        shown++;
      }
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  byId('records-table').hidden = false;
  await renderInstitutions(ctx);
  const summary = `${shown} record${shown === 1 ? '' : 's'} decrypted in this browser.`;
  announce(
    problems.length ? `${summary} Problems: ${problems.join('; ')}` : summary,
    problems.length ? 'error' : 'ok',
  );
}

type RecordsPage = { records?: StoredRecord[]; next?: string };

/**
 * Every record `holder` keeps of the patient, page by page, asked of this page's own sidecar by
 * block number (GET /spchain/blocks/:i/:j/records?holder=: it relays the signed request to the
 * holder over p2p; the records stay encrypted to the patient). A sidecar that cannot relay (503)
 * is bypassed: the holder's own sidecar is asked directly, at its address in the directory.
 */
async function* holderRecords(
  ctx: PortalContext,
  directory: Directory,
  reg: Registration,
  holder: number,
  signer: ReturnType<typeof signerOf>,
): AsyncGenerator<StoredRecord> {
  const block = reg.block;
  let direct = block === undefined;
  let after: string | undefined;
  for (let page = 0; page < MAX_RECORD_PAGES; page++) {
    const cursor = after ? `&after=${encodeURIComponent(after)}` : '';
    let answer: RecordsPage | undefined;
    if (!direct && block !== undefined) {
      const path = `/spchain/blocks/${block.i}/${block.j}/records?holder=${holder}&count=200${cursor}`;
      try {
        answer = (await signedGet<RecordsPage>(ctx.origin, path, signer)).body;
      } catch (err) {
        if (!(err instanceof HttpError && err.status === 503)) throw err;
        direct = true;
      }
    }
    if (answer === undefined) {
      const base = urlOf(ctx, directory, holder);
      if (!base) throw new Error(`${nameOf(directory, holder)} has no address in the directory`);
      const path = `/spchain/patients/${signer.idHash}/records?count=200${cursor}`;
      answer = (await signedGet<RecordsPage>(base, path, signer)).body;
    }
    yield* answer.records ?? [];
    if (!answer.next) return;
    after = answer.next;
  }
}

function anchoringText(a: unknown): string {
  if (typeof a === 'string') return a;
  const state = (a as { state?: unknown } | null)?.state;
  return typeof state === 'string' ? state : '';
}

/** Fills the institutions table (quietly: callers say what they did). */
export async function renderInstitutions(ctx: PortalContext): Promise<Directory> {
  const directory = await loadDirectory(ctx);
  let holders: number[] = [];
  if (ctx.state.idHash && ctx.state.block) {
    holders = holdersOf(await loadRegistration(ctx, ctx.state.idHash));
  }
  const body = byId('institutions-body');
  body.replaceChildren(
    ...directory.institutions.map((i) =>
      row([
        i.index === directory.self ? `${i.name} (this hospital)` : i.name,
        String(i.index),
        i.reputation.toFixed(3),
        i.inGroup ? 'yes' : 'no',
        holders.includes(i.index) ? 'yes' : 'no',
      ]),
    ),
  );
  ctx.refresh();
  return directory;
}

export async function showInstitutions(ctx: PortalContext): Promise<void> {
  const directory = await renderInstitutions(ctx);
  announce(`${directory.institutions.length} institutions in network ${directory.chainId}.`);
}

interface AuditEventJson {
  recorded?: string;
  action?: string;
  agent?: { who?: { display?: string; identifier?: { value?: string } }; name?: string }[];
  entity?: { what?: { reference?: string } }[];
  outcome?: string;
  subtype?: { code?: string }[];
}

/** Who an AuditEvent's agent is, in words: the sidecars name their clients by a short id. */
function agentText(d: Directory, a: NonNullable<AuditEventJson['agent']>[number]): string {
  const id = a.who?.identifier?.value;
  const named = a.who?.display ?? a.name;
  if (named) return named;
  const member = /^institution-(\d{1,6})$/.exec(id ?? '');
  if (member) return `${nameOf(d, Number(member[1]))}'s sidecar`;
  if (id === 'patient') return 'you (this portal or your key)';
  if (id === 'ehr') return "the institution's clinical system";
  if (id === 'anonymous') return 'anyone (public request)';
  return id ?? 'unknown';
}

const ACTIONS: Record<string, string> = {
  C: 'created',
  R: 'read',
  U: 'updated',
  D: 'deleted',
  E: 'operation',
};

/** The institutions that may have logged something about the patient: home, holders, grantees. */
function concerned(ctx: PortalContext, reg: { leaves?: readonly { institution: number }[] }) {
  const set = new Set<number>();
  if (ctx.state.home !== undefined) set.add(ctx.state.home);
  for (const l of reg.leaves ?? []) set.add(l.institution);
  for (const g of ctx.state.grants) set.add(g.grantee);
  return [...set];
}

async function showAudit(ctx: PortalContext): Promise<void> {
  const signer = signerOf(ctx);
  const directory = await loadDirectory(ctx);
  const reg = await loadRegistration(ctx, signer.idHash);
  const rows: { time: string; cells: string[] }[] = [];
  const problems: string[] = [];
  for (const index of concerned(ctx, reg)) {
    const base = urlOf(ctx, directory, index);
    if (!base) continue;
    try {
      const path = `/spchain/patients/${signer.idHash}/audit?count=100`;
      const { body } = await signedGet<{ entry?: { resource?: AuditEventJson }[] }>(
        base,
        path,
        signer,
      );
      for (const e of body.entry ?? []) {
        const ev = e.resource ?? {};
        const who = (ev.agent ?? []).map((a) => agentText(directory, a)).join(', ');
        const what = (ev.entity ?? [])
          .map((x) => x.what?.reference)
          .filter((r): r is string => typeof r === 'string' && !r.startsWith('Patient/'))
          .join(', ');
        const action = ACTIONS[ev.action ?? ''] ?? ev.action ?? '';
        const sub = ev.subtype?.[0]?.code;
        const time = ev.recorded ?? '';
        rows.push({
          time,
          cells: [
            time ? new Date(time).toLocaleString() : '',
            who || 'unknown',
            sub && sub !== action ? `${action} (${sub})` : action,
            what || '(your patient record)',
            nameOf(directory, index),
          ],
        });
      }
    } catch (err) {
      problems.push(`${nameOf(directory, index)}: ${(err as Error).message}`);
    }
  }
  rows.sort((a, b) => b.time.localeCompare(a.time));
  byId('audit-body').replaceChildren(...rows.map((r) => row(r.cells)));
  byId('audit-table').hidden = false;
  const summary = `${rows.length} logged access${rows.length === 1 ? '' : 'es'}.`;
  announce(
    problems.length ? `${summary} Problems: ${problems.join('; ')}` : summary,
    problems.length ? 'error' : 'ok',
  );
}
