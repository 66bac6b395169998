/**
 * `spchain member approve | submit`: admitting an institution to a running network
 * (src/ledger/membership.ts). The joining institution runs `spchain init --genesis --peers --index`,
 * which writes its admission request (admission.json). Then:
 *
 *   approve  a member signs the request with its chain key (read through its node config, so the
 *            key file's passphrase is asked for as the node asks for it) and the approval is added
 *            to the file; the file goes on to the next member.
 *   submit   once more than 2/3 of the members approved, one member puts the file in its node's
 *            admission inbox (<dataDir>/admissions), and the node carries it into a keyblock it
 *            mines; the members' nodes then accept and dial the new institution.
 *
 * The request is checked before anything is signed or submitted: it must be for this network,
 * name an index past the genesis members, keys no genesis member holds, and carry the joining
 * institution's own signature. The ledger checks all of it again, with the members of the day.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { toHex } from '../crypto/bytes.ts';
import { systemRandom } from '../crypto/random.ts';
import { admitQuorum, approveAdmission, checkAdmitRequest } from '../ledger/membership.ts';
import {
  type AdmissionFile,
  formatAdmissionFile,
  parseAdmissionFile,
  sortApprovals,
} from '../node/admission-file.ts';
import { inboxDir } from '../node/admission-inbox.ts';
import { type NodeConfig, readNodeConfig } from '../node/config.ts';
import { verifyPeers } from '../p2p/index.ts';
import type { Print } from './share.ts';

type Env = Readonly<Record<string, string | undefined>>;

export interface MemberOpts {
  /** The admission file. */
  readonly admission: string;
  /** This member's node config (its keys, genesis, data directory). */
  readonly nodeConfig: string;
  readonly env: Env;
  readonly print: Print;
}

/** The request, read and checked against this member's network. */
async function readRequest(o: MemberOpts): Promise<{ config: NodeConfig; file: AdmissionFile }> {
  const config = await readNodeConfig(o.nodeConfig, o.env);
  const text = await readFile(o.admission, 'utf8').catch(() => {
    throw new Error(`cannot read the admission file ${o.admission}`);
  });
  const file = parseAdmissionFile(text, o.admission);
  const { genesis } = config.genesisFile;
  if (file.chainId !== genesis.chainId) {
    throw new Error(
      `${o.admission} is for network ${file.chainId}, this node's is ${genesis.chainId}`,
    );
  }
  const { member } = file.tx;
  if (member.index < genesis.members.length) {
    throw new Error(`${o.admission} asks for index ${member.index}, a genesis member's`);
  }
  const verdict = checkAdmitRequest(genesis.chainId, genesis.members, file.tx);
  if (!verdict.ok) throw new Error(`${o.admission}: ${verdict.error.message}`);
  // The peer record: the members' nodes will dial it and trust it as this member's.
  const { peer } = file.tx;
  const known = { chainId: genesis.chainId, members: [...genesis.members, member] };
  const listed = [...config.peers, { index: member.index, ...peer }];
  const checked = verifyPeers(known, listed);
  const refused = checked.refused.find((r) => r.entry.index === member.index);
  if (refused !== undefined || checked.byIndex.get(member.index) === undefined) {
    throw new Error(
      `${o.admission}: its peer record is refused: ${refused?.reason ?? 'peer id listed twice'}`,
    );
  }
  return { config, file };
}

function describe(file: AdmissionFile, members: number): string {
  const { member, approvals } = file.tx;
  const needed = admitQuorum(members);
  return `${member.name} as member ${member.index}: ${approvals.length} approval(s) (${approvals.map((a) => a.member).join(', ') || 'none'}); more than 2/3 of the members are needed (${needed} of ${members} at genesis)`;
}

/** Adds this member's approval to the admission file (written anew in one rename). */
export async function approveAdmissionFile(o: MemberOpts): Promise<AdmissionFile> {
  const { config, file } = await readRequest(o);
  const approval = approveAdmission(
    file.chainId,
    file.tx,
    config.index,
    config.keys.signingSecret,
    systemRandom,
  );
  const approved: AdmissionFile = {
    ...file,
    tx: { ...file.tx, approvals: sortApprovals([...file.tx.approvals, approval]) },
  };
  const tmp = `${o.admission}.tmp`;
  await writeFile(tmp, formatAdmissionFile(approved));
  await rename(tmp, o.admission);
  o.print(
    `approved by member ${config.index}: ${describe(approved, config.genesisFile.genesis.members.length)}`,
  );
  return approved;
}

/** Puts the admission file in this member's node inbox; returns the path written. */
export async function submitAdmissionFile(o: MemberOpts): Promise<string> {
  const { config, file } = await readRequest(o);
  const members = config.genesisFile.genesis.members.length;
  if (file.tx.approvals.length < admitQuorum(members)) {
    throw new Error(`not enough approvals yet: ${describe(file, members)}`);
  }
  const dir = inboxDir(config.dataDir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const { member } = file.tx;
  const name = `member-${member.index}-${toHex(member.signingKey.subarray(1, 9))}.json`;
  const path = join(dir, name);
  const tmp = `${path}.tmp`;
  await writeFile(tmp, formatAdmissionFile(file));
  await rename(tmp, path);
  o.print(`submitted to node ${config.index}: ${path}`);
  o.print(
    'the node carries it in the next keyblock it mines; the file is renamed .admitted once pinned (.refused with the reason in the node log otherwise)',
  );
  return path;
}
