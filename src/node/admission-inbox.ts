/**
 * The admission inbox: `<dataDir>/admissions/*.json`, admission files (admission-file.ts) that this
 * institution's operator submitted (`spchain member submit`) for its node to carry into a keyblock
 * it mines. Access is the data directory's: whoever may write there runs the node anyway.
 *
 * Each scan hands every waiting file to the node's admit pool (which keeps one copy of each) until
 * the member is pinned; then the file is renamed `.admitted`. A file the node refuses for good (it
 * does not parse, is for another chain, lacks approvals, a signature fails) is renamed `.refused`
 * and the reason is reported, so the operator sees it and nothing is retried for ever.
 */
import { readdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { equalBytes } from '../crypto/bytes.ts';
import type { Verdict } from '../ledger/errors.ts';
import { nextMemberIndex } from '../ledger/membership.ts';
import type { AdmitTx, Member } from '../ledger/types.ts';
import { parseAdmissionFile } from './admission-file.ts';

/** Admission files scanned per pass at most (the pool holds few anyway). */
const MAX_FILES = 64;

export interface InboxPorts {
  readonly dir: string;
  readonly chainId: string;
  /** The members as of the pinned keyblock. */
  members(): readonly Member[];
  submit(tx: AdmitTx): Verdict;
  /** A file was refused (`reason`), or its member is pinned. */
  report(e: {
    file: string;
    member: number | null;
    outcome: 'refused' | 'admitted';
    reason?: string;
  }): void;
}

export const inboxDir = (dataDir: string) => join(dataDir, 'admissions');

/** One pass over the inbox; resolves when every file was handled. Never throws on a bad file. */
export async function scanAdmissionInbox(p: InboxPorts): Promise<void> {
  let names: string[];
  try {
    names = (await readdir(p.dir)).filter((n) => n.endsWith('.json')).sort();
  } catch {
    return; // no inbox yet
  }
  for (const name of names.slice(0, MAX_FILES)) {
    const path = join(p.dir, name);
    let tx: AdmitTx;
    try {
      const file = parseAdmissionFile(await readFile(path, 'utf8'), path);
      if (file.chainId !== p.chainId) throw new Error(`it is for chain ${file.chainId}`);
      tx = file.tx;
    } catch (err) {
      await settle(p, path, name, null, 'refused', (err as Error).message);
      continue;
    }
    const pinned = p.members().find((m) => m.index === tx.member.index);
    if (pinned !== undefined) {
      if (equalBytes(pinned.signingKey, tx.member.signingKey)) {
        await settle(p, path, name, tx.member.index, 'admitted');
      } else {
        await settle(
          p,
          path,
          name,
          tx.member.index,
          'refused',
          'its index was taken by another member',
        );
      }
      continue;
    }
    // A later index waits for the admissions before it.
    if (tx.member.index > nextMemberIndex(p.members())) continue;
    const verdict = p.submit(tx);
    // Held already, or the pool is full for now: tried again on the next pass.
    if (verdict.ok || verdict.error.code === 'REPLAYED_TX' || verdict.error.code === 'TOO_LARGE') {
      continue;
    }
    const { code, message } = verdict.error;
    await settle(p, path, name, tx.member.index, 'refused', `${code}: ${message}`);
  }
}

async function settle(
  p: InboxPorts,
  path: string,
  name: string,
  member: number | null,
  outcome: 'refused' | 'admitted',
  reason?: string,
): Promise<void> {
  await rename(path, `${path}.${outcome}`).catch(() => {});
  p.report({ file: name, member, outcome, ...(reason === undefined ? {} : { reason }) });
}
