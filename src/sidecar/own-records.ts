/**
 * The patient's own records, from any sidecar (issue 6 part 7; paper 5.2 "retrieval"):
 *
 *   - `readOwnRecords`: one page of the records this institution holds for a patient, every
 *     version in resource-key order, as stored (capsule + ciphertext, encrypted to the patient's
 *     PRE key). The HTTP records route pages its own vault with it, and a holder answers a relayed
 *     request with it, so cursors mean the same everywhere.
 *   - `answerOwnRecords`: the holder side on the p2p 'record' service (kind 2 of share-wire.ts):
 *     checks the patient's relayed signature (authz/own-records.ts) against the patient's pinned
 *     signing key and answers a page of ORIGINAL envelopes. Nothing is re-encrypted: only the
 *     patient's PRE secret opens them, so the relaying sidecar learns nothing but their sizes.
 *   - `relayOwnRecords`: the relaying side: sends the patient's signed request to a holder and
 *     decodes its answer strictly (bounded by the signed query's count and the frame budget).
 *
 * Refusals are answers (`denied` with an authz OwnRecordsDenial), so a patient's stale or bad
 * signature never counts against the relaying institution; only undecodable bytes throw
 * (LedgerError MALFORMED, which the p2p layer answers as an error).
 */
import {
  checkOwnRecordsRequest,
  DEFAULT_OWN_RECORDS,
  formatRecordsCursor,
  parseRecordsPath,
  type RecordsCursor,
} from '../authz/own-records.ts';
import { equalBytes, toHex } from '../crypto/bytes.ts';
import type { Microblock } from '../ledger/microblock.ts';
import type { Bytes, Certificate, InstitutionIndex } from '../ledger/types.ts';
import type { TxLocation } from '../store/values.ts';
import { decodeResourceEntry, decodeResourceKey, resourceKey } from './entries.ts';
import { prefixRange } from './share-grants.ts';
import type { RecordTransport } from './share-receiver.ts';
import {
  decodeOwnRecordsResponse,
  encodeOwnRecordItem,
  encodeOwnRecordsPage,
  encodeOwnRecordsRequest,
  encodeShareDenied,
  type OwnAnchoring,
  type OwnRecordItem,
  type OwnRecordsRequest,
  type OwnRecordsResponse,
  type OwnSkipped,
} from './share-wire.ts';
import type { SidecarStore } from './store.ts';

/** A stored record without its anchoring (the caller says where it is on its way to the chain). */
export type StoredOwnRecord = Omit<OwnRecordItem, 'anchoring'>;

export interface OwnRecordsPage {
  readonly records: StoredOwnRecord[];
  readonly skipped: OwnSkipped[];
  readonly next?: string;
}

/** Room per record for everything but its capsule and ciphertext (three strings <= 256, ...). */
const RECORD_OVERHEAD = 1024;

/**
 * A page of the patient's records held here: at most `count`, and (for a p2p answer) at most
 * `maxBytes` of encoded records; a record that alone exceeds `maxBytes` is named in `skipped`.
 * `next` is the cursor after the last record looked at, when more follow.
 */
export async function readOwnRecords(
  store: Pick<SidecarStore, 'spaces' | 'read' | 'vault'>,
  idHash: Bytes,
  opts: { count: number; after?: RecordsCursor; maxBytes?: number },
): Promise<OwnRecordsPage> {
  const { count, after } = opts;
  const maxBytes = opts.maxBytes ?? Number.POSITIVE_INFINITY;
  const range = prefixRange(idHash);
  const start = after === undefined ? range.gte : Uint8Array.from([...idHash, ...after.key]);
  const records: StoredOwnRecord[] = [];
  const skipped: OwnSkipped[] = [];
  let last: string | undefined;
  let bytes = 0;
  let more = false;
  for await (const key of store.spaces.patientRecord.keys({ ...range, gte: start })) {
    const rk = key.subarray(idHash.length);
    const { resourceType, id } = decodeResourceKey(rk);
    const entry = await store.read('resource', resourceKey(resourceType, id), decodeResourceEntry);
    if (entry === undefined) continue;
    const skip = after !== undefined && equalBytes(rk, after.key) ? after.version + 1 : 0;
    for (let n = skip; n < entry.versions.length; n++) {
      const v = entry.versions[n]!;
      const envelope = await store.vault.get(v.pointer);
      if (envelope === undefined) continue;
      if (records.length === count || skipped.length === count) {
        more = true;
        break;
      }
      const size = RECORD_OVERHEAD + envelope.capsule.length + envelope.ciphertext.length;
      if (size > maxBytes) {
        skipped.push({
          resourceType,
          id,
          version: v.version,
          txHash: v.txHash,
          reason: 'TOO_LARGE',
        });
      } else if (bytes + size > maxBytes) {
        more = true;
        break;
      } else {
        bytes += size;
        records.push({
          resourceType,
          id,
          version: v.version,
          kind: v.kind,
          txHash: v.txHash,
          target: v.target,
          capsule: envelope.capsule,
          ciphertext: envelope.ciphertext,
        });
      }
      last = formatRecordsCursor(rk, n);
    }
    if (more) break;
  }
  const next = more ? last : undefined;
  return next === undefined ? { records, skipped } : { records, skipped, next };
}

// ---------------------------------------------------------------------------------------------
// Holder side

/** Reads of this node's pinned ledger the holder needs (the node's LedgerStore). */
export interface OwnRecordsLedger {
  getMicroblockByIdHash(idHash: Bytes): Promise<Microblock | undefined>;
  getTxLocation(hash: Bytes): Promise<TxLocation | undefined>;
  getCertificate(kind: 'batch', height: number): Promise<Certificate | undefined>;
}

export interface OwnRecordsHolderDeps {
  readonly store: Pick<SidecarStore, 'spaces' | 'read' | 'vault'>;
  readonly ledger: OwnRecordsLedger;
  /** The network's chain id (the signature covers it). */
  readonly chainId: (idHash: Bytes) => Promise<string | undefined>;
  readonly self: InstitutionIndex;
  readonly now: () => number;
  /** Bytes of one answer at most: the p2p frame limit less room for framing. */
  readonly maxPageBytes: number;
}

const denied = (reason: string, message: string) => encodeShareDenied(reason, message);

/** Where a record's tx is, as this holder's pinned ledger says. */
async function anchoringOf(ledger: OwnRecordsLedger, txHash: Bytes): Promise<OwnAnchoring> {
  const loc = await ledger.getTxLocation(txHash);
  if (loc?.kind !== 'batch') return { state: 'pending' };
  const certificate = await ledger.getCertificate('batch', loc.height);
  if (certificate === undefined) return { state: 'pending' };
  return { state: 'pinned', batch: loc.height, index: loc.index, round: certificate.round };
}

/** The holder's answer to a relayed own-records request (encoded response bytes). */
export async function answerOwnRecords(
  deps: OwnRecordsHolderDeps,
  req: OwnRecordsRequest,
): Promise<Uint8Array> {
  const block = await deps.ledger.getMicroblockByIdHash(req.idHash);
  const chainId = block === undefined ? undefined : await deps.chainId(req.idHash);
  if (block === undefined || chainId === undefined) {
    return denied('UNREGISTERED', 'no patient with this idHash is pinned here');
  }
  const checked = checkOwnRecordsRequest(
    { idHash: toHex(req.idHash), ts: req.ts, sig: req.sig, path: req.path },
    {
      chainId,
      now: deps.now(),
      self: deps.self,
      block: { i: block.header.i, j: block.header.j, signingKey: block.patientSigningKey },
    },
  );
  if (!checked.ok) return denied(checked.reason, checked.message);
  const { query } = checked;
  const page = await readOwnRecords(deps.store, req.idHash, {
    count: query.count ?? DEFAULT_OWN_RECORDS,
    ...(query.after ? { after: query.after } : {}),
    maxBytes: Math.min(req.maxBytes, deps.maxPageBytes),
  });
  const records: Bytes[] = [];
  for (const r of page.records) {
    records.push(
      encodeOwnRecordItem({ ...r, anchoring: await anchoringOf(deps.ledger, r.txHash) }),
    );
  }
  return encodeOwnRecordsPage({ ...page, records });
}

// ---------------------------------------------------------------------------------------------
// Relaying side

/** Asks holder `holder` for one page of the patient's records, on the patient's signature. */
export type OwnRecordsRelay = (
  holder: InstitutionIndex,
  request: Omit<OwnRecordsRequest, 'maxBytes'>,
  opts?: { signal?: AbortSignal },
) => Promise<OwnRecordsResponse>;

export interface OwnRecordsRelayOpts {
  /** Bytes asked per page (a holder answers at most its own frame budget). */
  readonly pageBytes: number;
  readonly requestTimeoutMs: number;
}

export const defaultOwnRecordsRelayOpts: OwnRecordsRelayOpts = {
  pageBytes: 4 * 1024 * 1024 - 64 * 1024,
  requestTimeoutMs: 30_000,
};

/**
 * The relay over the p2p record service. Throws a LedgerError MALFORMED for an answer that breaks
 * the wire's bounds, and the transport's error when the holder cannot be reached.
 */
export function relayOwnRecords(
  transport: RecordTransport,
  options: Partial<OwnRecordsRelayOpts> = {},
): OwnRecordsRelay {
  const opts = { ...defaultOwnRecordsRelayOpts, ...options };
  return async (holder, request, ropts = {}) => {
    const parsed = parseRecordsPath(request.path);
    if (!parsed.ok) throw new RangeError(`own records path: ${parsed.field} ${parsed.message}`);
    const full: OwnRecordsRequest = { ...request, maxBytes: opts.pageBytes };
    const answer = await transport.requestRecord(holder, encodeOwnRecordsRequest(full), {
      timeoutMs: opts.requestTimeoutMs,
      ...(ropts.signal ? { signal: ropts.signal } : {}),
    });
    return decodeOwnRecordsResponse(answer, {
      maxRecords: parsed.value.count ?? DEFAULT_OWN_RECORDS,
      maxBytes: opts.pageBytes,
    });
  };
}
