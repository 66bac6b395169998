/**
 * `spchain status` and `spchain peers`: what a sidecar tells about the ledger.
 *
 * - status of a record tx (64 hex digits): `GET /spchain/tx/:hash` (EHR token): queued, in the
 *   node's mempool, pinned (batch height, position, certificate round), or unknown here; of a
 *   record (`Type/id`): each version's anchoring from its history (`GET /fhir/Type/id/_history`).
 *   `waitSeconds` polls until pinned. Pinned (or, without waiting, known) is success.
 * - peers: the network's institutions with reputation and consensus group, as the sidecar lists
 *   them (`GET /spchain/institutions`, public; records.ts showInstitutions). The node's live
 *   whether its node is connected to each (GET /spchain/institutions `connected`).
 */
import { ANCHORING_EXTENSION } from '../fhir/service.ts';
import { UsageError } from './args.ts';
import { describe, fetchJson } from './patient.ts';
import { showInstitutions } from './records.ts';
import { baseUrl, type Print } from './share.ts';

const HEX64 = /^[0-9a-f]{64}$/;
const RECORD = /^([A-Z][A-Za-z]{0,63})\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/\d+)?$/;

export interface TxState {
  readonly tx: string;
  readonly state: string;
  readonly batch?: number;
  readonly index?: number;
  readonly round?: number;
  readonly handedOver?: boolean;
}

export function describeTx(s: TxState): string {
  switch (s.state) {
    case 'pinned':
      return `pinned in batch ${s.batch} at position ${s.index} (certified in round ${s.round})`;
    case 'mempool':
      return "in the node's mempool, not pinned yet";
    case 'queued':
      return s.handedOver
        ? 'queued (handed to the node queue)'
        : "queued (in the sidecar's outbox)";
    case 'unknown':
      return 'unknown to this sidecar (not a record tx of this institution)';
    default:
      return s.state;
  }
}

async function txState(base: string, hash: string, token: string): Promise<TxState> {
  const r = await fetchJson(`${base}/spchain/tx/${hash}`, {
    headers: { authorization: `Bearer ${token}` },
  });
  const b = r.body as Partial<TxState> | null;
  if (r.status !== 200 || typeof b?.state !== 'string') {
    throw new Error(`${base} did not answer the tx's status: ${describe(r)}`);
  }
  return b as TxState;
}

interface VersionAnchoring {
  readonly version: string;
  readonly state: string;
  readonly tx?: string;
  readonly batch?: number;
}

async function recordAnchoring(
  base: string,
  type: string,
  id: string,
  token: string,
): Promise<VersionAnchoring[]> {
  const r = await fetchJson(`${base}/fhir/${type}/${id}/_history`, {
    headers: { authorization: `Bearer ${token}`, accept: 'application/fhir+json' },
  });
  const entries = (r.body as { entry?: unknown[] } | null)?.entry;
  if (r.status !== 200 || !Array.isArray(entries)) {
    throw new Error(`${base} did not answer the record's history: ${describe(r)}`);
  }
  return entries.map((e) => {
    const x = e as {
      resource?: { meta?: { versionId?: string } };
      extension?: { url: string; extension?: Record<string, unknown>[] }[];
    };
    const parts = x.extension?.find((v) => v.url === ANCHORING_EXTENSION)?.extension ?? [];
    const part = (name: string) => parts.find((p) => p.url === name);
    const batch = part('batch')?.valueUnsignedInt;
    const tx = part('tx')?.valueString;
    return {
      version: x.resource?.meta?.versionId ?? '?',
      state: String(part('state')?.valueCode ?? 'unknown'),
      ...(typeof tx === 'string' ? { tx } : {}),
      ...(typeof batch === 'number' ? { batch } : {}),
    };
  });
}

/** Prints the anchoring of a tx or a record; true when pinned (or known, without waiting). */
export async function showStatus(o: {
  readonly target: string;
  readonly sidecar: string;
  readonly token: string;
  readonly waitSeconds: number;
  readonly json: boolean;
  readonly print: Print;
}): Promise<boolean> {
  const base = baseUrl(o.sidecar);
  const record = RECORD.exec(o.target);
  if (!HEX64.test(o.target) && record === null) {
    throw new UsageError('the target must be a tx hash (64 lowercase hex digits) or Type/id');
  }
  const end = Date.now() + o.waitSeconds * 1000;
  for (;;) {
    if (record === null) {
      const s = await txState(base, o.target, o.token);
      const pinned = s.state === 'pinned';
      if (pinned || Date.now() >= end) {
        o.print(o.json ? JSON.stringify(s) : `tx ${s.tx}: ${describeTx(s)}`);
        if (!pinned && o.waitSeconds > 0) o.print(`not pinned after ${o.waitSeconds} s`);
        return pinned || (o.waitSeconds === 0 && s.state !== 'unknown');
      }
    } else {
      const versions = await recordAnchoring(base, record[1]!, record[2]!, o.token);
      const pinned = versions.length > 0 && versions.every((v) => v.state === 'pinned');
      if (pinned || Date.now() >= end) {
        if (o.json) o.print(JSON.stringify({ record: `${record[1]}/${record[2]}`, versions }));
        for (const v of o.json ? [] : versions) {
          const where = v.batch === undefined ? '' : ` in batch ${v.batch}`;
          o.print(
            `${record[1]}/${record[2]} version ${v.version}: ${v.state}${where}, tx ${v.tx ?? '-'}`,
          );
        }
        if (!pinned && o.waitSeconds > 0) o.print(`not pinned after ${o.waitSeconds} s`);
        return pinned || (o.waitSeconds === 0 && versions.length > 0);
      }
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** The institutions, reputation, group, and whether the sidecar's node is connected to each. */
export async function showPeers(o: {
  readonly sidecar: string;
  readonly json: boolean;
  readonly print: Print;
}): Promise<void> {
  if (o.json) {
    const r = await fetchJson(`${baseUrl(o.sidecar)}/spchain/institutions`, {});
    if (r.status !== 200)
      throw new Error(`${baseUrl(o.sidecar)} did not list the institutions: ${describe(r)}`);
    o.print(JSON.stringify(r.body));
    return;
  }
  const rows = await showInstitutions({ sidecar: o.sidecar, print: o.print });
  const known = rows.filter((x) => x.connected !== undefined);
  o.print(
    known.length === 0
      ? 'connected peers: none listed (a one-institution network, or a sidecar that does not say)'
      : `connected peers: ${known.filter((x) => x.connected).length} of ${known.length}`,
  );
}
