/**
 * Sharing between institutions (issue 5 part 6; DESIGN sections 6-7): the one object the
 * composition root wires and the HTTP API calls.
 *
 * Roles (one sidecar plays both):
 *   - holder: keeps patients' grants (share-grants.ts) and answers other institutions' requests
 *     on the p2p 'record' service by re-encrypting the patient's records (share-holder.ts);
 *   - receiver: `fetchShared(idHash)` asks every holder named by the patient's pinned block,
 *     verifies, decrypts, applies corrections and caches (share-receiver.ts).
 * Pure parts: authz/consent.ts and authz/grant.ts (Consent, grant, decideShare),
 * ledger/shared-record.ts (record verification, corrections); share-wire.ts is the protocol.
 *
 * Wiring (the p2p node needs the handler before it starts; the receiver needs the started node):
 *
 *   const sharing = new Sharing({ store, ledger: ledgerStore, genesis, self: keys });
 *   const p2p = await createP2pNode({ ..., record: sharing.recordHandler });
 *   sharing.connect(p2p);                       // P2pNode.requestRecord is the transport
 *
 * API:
 *   acceptGrant(grant)     holder: check and keep a patient's grant (authz/grant.ts makeGrant
 *                          makes one on the patient's device); a non-active Consent revokes.
 *                          SidecarError GRANT_REFUSED (detail.reason: authz DenyReason, or
 *                          UNREGISTERED) when refused.
 *   revoke(revocation)     holder: the patient's signed revoke (authz/consent.ts signRevocation);
 *                          no re-encryption under that Consent from the next request on.
 *   fetchShared(idHash)    receiver: -> SharedFetch { records: SharedRecord[] (FHIR JSON +
 *                          provenance: holder, tx, batch, keyblock; enteredInError),
 *                          warnings: ShareWarning[] (record + holder + code, never content),
 *                          holders: HolderOutcome[] }. Throws SidecarError UNREGISTERED_PATIENT
 *                          when this node has no pinned block for the patient. A record that
 *                          fails any check is a warning and is never in `records`.
 *   forget(idHash)         receiver: drop the cached shared records of a patient.
 *   consentState(idHash, consentId, grantee), consentIds(idHash)
 *                          holder, read-only: whether a Consent is active for its grantee
 *                          now; the patient's Consent ids known here (share links, audit).
 *
 * Grants and revocations over HTTP or in files: authz/grant.ts grantToJson / grantFromJson and
 * authz/consent.ts revocationToJson / revocationFromJson (bytes as lowercase hex; the decoders
 * check the shape and name the field; acceptGrant / revoke check the rest).
 */
import type { ConsentRevocation } from '../authz/consent.ts';
import type { Grant } from '../authz/grant.ts';
import type { RandomBytes } from '../crypto/random.ts';
import type { Bytes, Genesis, InstitutionIndex, Member } from '../ledger/types.ts';
import { SidecarError } from './errors.ts';
import { type OwnRecordsRelay, relayOwnRecords } from './own-records.ts';
import type { Warn } from './ports.ts';
import {
  type AcceptedGrant,
  type ConsentState,
  type GrantLedger,
  ShareGrants,
} from './share-grants.ts';
import { type HolderLedger, ShareHolder, type ShareHolderOpts } from './share-holder.ts';
import {
  type ReceiverLedger,
  type RecordTransport,
  type SharedFetch,
  ShareReceiver,
  type ShareReceiverOpts,
} from './share-receiver.ts';
import type { SidecarStore } from './store.ts';

export type { ConsentRevocation } from '../authz/consent.ts';
export type { DenyReason, Grant } from '../authz/grant.ts';
export type { AcceptedGrant, ConsentState } from './share-grants.ts';
export type {
  HolderOutcome,
  RecordTransport,
  SharedFetch,
  SharedProvenance,
  SharedRecord,
  ShareWarning,
  ShareWarningCode,
} from './share-receiver.ts';

import { rosterLookup } from '../ledger/membership.ts';

export interface SharingOpts {
  readonly store: SidecarStore;
  /** This node's pinned ledger (LedgerStore). */
  readonly ledger: GrantLedger & HolderLedger & ReceiverLedger;
  readonly genesis: Pick<Genesis, 'chainId' | 'members'>;
  /** The members now (the node's pinned roster); default: the genesis members. */
  readonly roster?: () => readonly Member[];
  /** This institution: its member index and PRE key pair. */
  readonly self: {
    readonly index: InstitutionIndex;
    readonly preKey: Bytes;
    readonly preSecret: Bytes;
  };
  readonly now?: () => number;
  readonly random?: RandomBytes;
  readonly warn?: Warn;
  readonly holder?: Partial<ShareHolderOpts>;
  readonly receiver?: Partial<ShareReceiverOpts>;
}

export type ShareRecordHandler = (
  request: Uint8Array,
  from: InstitutionIndex,
  signal: AbortSignal,
) => Promise<Uint8Array>;

export class Sharing {
  readonly grants: ShareGrants;
  readonly holder: ShareHolder;
  /** For the p2p node: createP2pNode({ record: sharing.recordHandler }). */
  readonly recordHandler: ShareRecordHandler;
  private readonly opts: SharingOpts;
  private readonly now: () => number;
  private readonly members: (index: InstitutionIndex) => Member | undefined;
  private receiverRef: ShareReceiver | null = null;
  private relay: OwnRecordsRelay | undefined;

  constructor(opts: SharingOpts) {
    this.opts = opts;
    this.now = opts.now ?? Date.now;
    this.members = rosterLookup(opts.roster ?? (() => opts.genesis.members));
    this.grants = new ShareGrants({
      store: opts.store,
      ledger: opts.ledger,
      chainId: opts.genesis.chainId,
      preKeyOf: (i) => this.members(i)?.preKey,
    });
    this.holder = new ShareHolder(
      {
        store: opts.store,
        grants: this.grants,
        ledger: opts.ledger,
        self: opts.self.index,
        now: this.now,
        random: opts.random,
        warn: opts.warn,
      },
      opts.holder,
    );
    this.recordHandler = this.holder.handle;
  }

  /** Attaches the record transport (the started p2p node); fetchShared and ownRecords need it. */
  connect(transport: RecordTransport): void {
    this.relay = relayOwnRecords(transport);
    this.receiverRef = new ShareReceiver(
      {
        store: this.opts.store,
        ledger: this.opts.ledger,
        transport,
        self: this.opts.self,
        members: this.members,
        random: this.opts.random,
        warn: this.opts.warn,
      },
      this.opts.receiver,
    );
  }

  get receiver(): ShareReceiver {
    if (this.receiverRef === null) {
      throw new SidecarError('CLOSED', 'sharing has no record transport yet (call connect)');
    }
    return this.receiverRef;
  }

  acceptGrant(grant: Grant): Promise<AcceptedGrant> {
    return this.grants.accept(grant, this.now());
  }

  revoke(revocation: ConsentRevocation): Promise<void> {
    return this.grants.revoke(revocation);
  }

  /** Read-only: the state of one Consent for `grantee` now (ShareGrants.consentState). */
  consentState(idHash: Bytes, consentId: string, grantee: InstitutionIndex): Promise<ConsentState> {
    return this.grants.consentState(idHash, consentId, grantee, this.now());
  }

  /**
   * The patient's own records held by another institution, for the patient's device: the
   * patient's signed request relayed over p2p, the holder's page of original ciphertexts back
   * (sidecar/own-records.ts). Nothing in it is readable here.
   */
  ownRecords: OwnRecordsRelay = (holder, request, opts) => {
    if (this.relay === undefined) {
      return Promise.reject(new SidecarError('CLOSED', 'sharing has no record transport yet'));
    }
    return this.relay(holder, request, opts);
  };

  /** Read-only: the patient's signed Consents held here with their state (ShareGrants.consents). */
  consents(idHash: Bytes): ReturnType<ShareGrants['consents']> {
    return this.grants.consents(idHash, this.now());
  }

  /** Read-only: the patient's Consent ids known here, held or revoked (ShareGrants.consentIds). */
  consentIds(idHash: Bytes): Promise<string[]> {
    return this.grants.consentIds(idHash);
  }

  fetchShared(idHash: Bytes, opts: { signal?: AbortSignal } = {}): Promise<SharedFetch> {
    return this.receiver.fetchShared(idHash, opts);
  }

  forget(idHash: Bytes): Promise<number> {
    return this.receiver.forget(idHash);
  }
}
