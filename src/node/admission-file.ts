/**
 * The admission file: an admit tx (src/ledger/membership.ts) as JSON, passed from the joining
 * institution to the members that approve it and to the node that carries it into a keyblock.
 *
 *   { "format": "spchain-admission", "version": 1, "chainId",
 *     "member": { "index", "name", "signingKey", "chameleonKey", "preKey" },   (hex keys)
 *     "peer": { "peerId", "multiaddr", "binding" },                             (binding hex)
 *     "proof": hex64, "approvals": [{ "member", "signature": hex64 }] }
 *
 * Every field is validated and a wrong one is named; the signatures are checked by the ledger
 * (checkAdmits) against the members of the chain when the tx is submitted and when it is mined.
 */
import { toHex } from '../crypto/bytes.ts';
import { SIGNATURE_BYTES } from '../crypto/sign.ts';
import { MAX_MEMBERS, MAX_MULTIADDR, MAX_PEER_ID } from '../ledger/membership.ts';
import type { AdmitTx, Approval } from '../ledger/types.ts';
import { FieldReader } from './fields.ts';
import { readMemberAt } from './genesis-file.ts';

export const ADMISSION_FORMAT = 'spchain-admission';
const VERSION = 1;

export interface AdmissionFile {
  readonly chainId: string;
  readonly tx: AdmitTx;
}

export function formatAdmissionFile(file: AdmissionFile): string {
  const { member, peer } = file.tx;
  const json = {
    format: ADMISSION_FORMAT,
    version: VERSION,
    chainId: file.chainId,
    member: {
      index: member.index,
      name: member.name,
      signingKey: toHex(member.signingKey),
      chameleonKey: toHex(member.chameleonKey),
      preKey: toHex(member.preKey),
    },
    peer: { peerId: peer.peerId, multiaddr: peer.multiaddr, binding: toHex(peer.binding) },
    proof: toHex(file.tx.proof),
    approvals: file.tx.approvals.map((a) => ({ member: a.member, signature: toHex(a.signature) })),
  };
  return `${JSON.stringify(json, null, 2)}\n`;
}

/** Parses an admission file (`source` names it in errors: BAD_CONFIG with the field). */
export function parseAdmissionFile(text: string, source: string): AdmissionFile {
  const f = new FieldReader('BAD_CONFIG', source);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    f.fail('(file)', `is not JSON: ${(err as Error).message}`);
  }
  const o = f.object(json, '', [
    'format',
    'version',
    'chainId',
    'member',
    'peer',
    'proof',
    'approvals',
  ]);
  if (o.format !== ADMISSION_FORMAT) f.fail('format', `must be "${ADMISSION_FORMAT}"`);
  if (o.version !== VERSION) f.fail('version', `must be ${VERSION}`);
  const chainId = f.string(o.chainId, 'chainId', /^[A-Za-z0-9._:-]{1,64}$/, 'a chain id');
  const member = readMemberAt(f, o.member, 'member');
  const p = f.object(o.peer, 'peer', ['peerId', 'multiaddr', 'binding']);
  const peer = {
    peerId: f.string(
      p.peerId,
      'peer.peerId',
      new RegExp(`^[1-9A-HJ-NP-Za-km-z]{1,${MAX_PEER_ID}}$`),
      'a base58 peer id',
    ),
    multiaddr: f.string(
      p.multiaddr,
      'peer.multiaddr',
      new RegExp(`^/.{1,${MAX_MULTIADDR - 1}}$`),
      'a multiaddr',
    ),
    binding: f.hex(p.binding, 'peer.binding', SIGNATURE_BYTES),
  };
  const approvals: Approval[] = f
    .array(o.approvals, 'approvals', 0, MAX_MEMBERS)
    .map((value, i) => {
      const a = f.object(value, `approvals[${i}]`, ['member', 'signature']);
      return {
        member: f.int(a.member, `approvals[${i}].member`, 0, MAX_MEMBERS - 1),
        signature: f.hex(a.signature, `approvals[${i}].signature`, SIGNATURE_BYTES),
      };
    });
  return {
    chainId,
    tx: {
      type: 'admit',
      member,
      peer,
      proof: f.hex(o.proof, 'proof', SIGNATURE_BYTES),
      approvals: sortApprovals(approvals),
    },
  };
}

/**
 * Approvals in the canonical order (by member), one per member: an approval added again replaces
 * the earlier one, so collecting them from several files in any order gives one tx.
 */
export function sortApprovals(approvals: readonly Approval[]): Approval[] {
  const byMember = new Map<number, Approval>();
  for (const a of approvals) byMember.set(a.member, a);
  return [...byMember.values()].sort((x, y) => x.member - y.member);
}
