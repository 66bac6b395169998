/**
 * The sidecar's HTTP API assembled from its parts: the FHIR service (over the sidecar core's
 * ingest, store and anchor worker, the mapping and the validator), the AuditEvent log, the
 * interim static-token authoriser, and the routes. The composition root (sidecar.ts) and the
 * tests both build the API here, so they run the same thing.
 */
import type { Resource } from '@medplum/fhirtypes';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { RandomBytes } from '../crypto/random.ts';
import { AuditLog } from '../fhir/audit.ts';
import { capabilityStatement } from '../fhir/capability.ts';
import { PatientBinder } from '../fhir/patient-binding.ts';
import { PatientLookup } from '../fhir/patient-lookup.ts';
import { PatientReads } from '../fhir/patient-reads.ts';
import { PatientRecords, type SharedSource } from '../fhir/patient-records.ts';
import { ResourceStore } from '../fhir/resource-store.ts';
import { registerFhirRoutes } from '../fhir/routes.ts';
import { FhirService } from '../fhir/service.ts';
import type { TransactionOpts } from '../fhir/transaction.ts';
import type { ValidationResult } from '../fhir/validate.ts';
import type { InstitutionSecrets } from '../ledger/author.ts';
import type { Verdict } from '../ledger/errors.ts';
import type { IdHashCost } from '../ledger/idhash.ts';
import { rosterLookup } from '../ledger/membership.ts';
import type { Bytes, Genesis, Member, RegisterTx, Bundle as TxBundle } from '../ledger/types.ts';
import type { FhirMapping } from '../mapping/mapping.ts';
import type { SidecarCore } from '../sidecar/core.ts';
import type { PatientLedger } from '../sidecar/patients.ts';
import type { Sharing } from '../sidecar/share.ts';
import type { ClientRegistry } from '../smart/clients.ts';
import { registerSmartRoutes } from '../smart/routes.ts';
import type { TokenService } from '../smart/tokens.ts';
import { registerAccessRequestRoutes } from './access-request-routes.ts';
import { bearerAuthoriser } from './auth.ts';
import { LeafAuthor } from './leaf-author.ts';
import { type ReputationView, registerPatientRoutes } from './patient-routes.ts';
import { registerPortalRoutes } from './portal-assets.ts';
import { type RegistrationDeps, registerSpchainRoutes } from './registration.ts';
import { buildHttpServer, type HttpOpts } from './server.ts';
import { registerShareLinkRoutes } from './share-link-routes.ts';
import { registerShareRoutes } from './share-routes.ts';

export const SOFTWARE = { name: 'spchain-sidecar', version: '0.1.0' };

export interface FhirApiParts {
  readonly core: Pick<SidecarCore, 'store' | 'patients' | 'ingestor' | 'anchorer' | 'txLog'>;
  readonly ledger: PatientLedger;
  readonly genesis: Pick<Genesis, 'chainId' | 'idHashKey' | 'members' | 'params'>;
  /** The members now (the node's pinned roster); default: the genesis members. */
  readonly roster?: () => readonly Member[];
  /** This institution: its member index and name. */
  readonly institution: { readonly index: number; readonly name: string };
  readonly submitRegister: (tx: RegisterTx) => Verdict;
  /**
   * Sharing (src/sidecar/share.ts): holds patients' grants (POST /spchain/grants, revocations) and
   * fetches what others share ($everything, searches by patient). Without it, those serve this
   * institution's own records only, and the grant routes do not exist.
   */
  readonly sharing?: Pick<Sharing, 'acceptGrant' | 'revoke'> &
    Partial<Pick<Sharing, 'consentState' | 'consentIds' | 'consents' | 'ownRecords'>> &
    SharedSource;
  /**
   * What makes leaf txs for this institution's patients (POST /spchain/leaves): its keys and its
   * node's mempool. Without it, that route does not exist.
   */
  readonly leafAuthor?: {
    readonly keys: InstitutionSecrets & { readonly signingSecret: Bytes };
    readonly submitBundle: (bundle: TxBundle) => Verdict;
  };
  /**
   * The network's sidecars: member index -> public base URL (e.g. from SPCHAIN_DIRECTORY, see
   * patient-routes.ts parseDirectory), listed by GET /spchain/institutions.
   */
  readonly directory?: ReadonlyMap<number, string>;
  /** The node's current reputations and consensus group: GET /spchain/institutions, access requests. */
  readonly reputation?: () => ReputationView | Promise<ReputationView>;
  /** The members the node is connected to now (GET /spchain/institutions `connected`). */
  readonly connectedPeers?: () => readonly number[];
  /** The HTTP client the share-link open route reaches the link's issuer with (default fetch). */
  readonly fetch?: typeof fetch;
  readonly random?: RandomBytes;
  readonly mapping: FhirMapping;
  readonly validator: { validate(resource: Resource, text?: string): Promise<ValidationResult> };
  /** INTERIM: the EHR's static bearer token (auth.ts). */
  readonly ehrToken: string;
  /**
   * The SMART authorisation server (src/smart): its token service and registered clients. With
   * it, FHIR routes also take its access tokens, and /smart/* and discovery exist.
   */
  readonly smart?: { readonly tokens: TokenService; readonly clients: ClientRegistry };
  /** The FHIR base URL clients see; default: from each request's Host. */
  readonly baseUrl?: string;
  readonly idHashCost?: IdHashCost;
  readonly http?: Partial<HttpOpts>;
  readonly transaction?: Partial<TransactionOpts>;
  readonly now?: () => number;
}

export interface FhirApi {
  readonly app: FastifyInstance;
  readonly service: FhirService;
  readonly reads: PatientReads;
  readonly audit: AuditLog;
  readonly resources: ResourceStore;
}

export function createFhirApi(p: FhirApiParts): FhirApi {
  const { core } = p;
  const db = core.store.db;
  const resources = new ResourceStore(db);
  const audit = new AuditLog(
    db,
    `${p.institution.name} (SPChain institution ${p.institution.index})`,
  );
  const anchorStatus = (tx: string) => core.anchorer.status(tx);
  const service = new FhirService(
    {
      mapping: p.mapping,
      validator: p.validator,
      resources,
      audit,
      binder: new PatientBinder({
        registry: core.patients,
        ledger: p.ledger,
        idHashKey: p.genesis.idHashKey,
        ...(p.idHashCost ? { cost: p.idHashCost } : {}),
      }),
      ingestor: core.ingestor,
      write: (ops) => core.store.write(ops),
      outboxSize: () => core.txLog.outboxSize,
      anchorStatus,
      ...(p.now ? { now: p.now } : {}),
    },
    p.transaction,
  );
  const roster = p.roster ?? (() => p.genesis.members);
  const memberOf = rosterLookup(roster);
  const reads = new PatientReads({
    lookup: new PatientLookup({
      resources,
      registry: core.patients,
      ledger: p.ledger,
      mapping: p.mapping,
      idHashKey: p.genesis.idHashKey,
      ...(p.idHashCost ? { cost: p.idHashCost } : {}),
    }),
    records: new PatientRecords({
      resources,
      store: core.store,
      db,
      mapping: p.mapping,
      ...(p.sharing ? { shared: p.sharing } : {}),
      anchorStatus,
      institution: p.institution,
      memberName: (i) => memberOf(i)?.name,
      ...(p.now ? { now: p.now } : {}),
    }),
    audit,
    mapping: p.mapping,
    ...(p.now ? { now: p.now } : {}),
  });
  const leaves =
    p.leafAuthor === undefined
      ? undefined
      : new LeafAuthor({
          chainId: p.genesis.chainId,
          self: p.leafAuthor.keys,
          members: memberOf,
          ledger: p.ledger,
          submitBundle: p.leafAuthor.submitBundle,
          fee: p.genesis.params.minFee,
          ...(p.now ? { now: p.now } : {}),
        });
  const types = new Set(['Patient', ...p.mapping.records.keys(), ...p.mapping.contextTypes]);
  const date = new Date((p.now ?? Date.now)()).toISOString();
  const base = (req: FastifyRequest) => p.baseUrl ?? `${req.protocol}://${req.host}/fhir`;
  const registration: RegistrationDeps = {
    chainId: p.genesis.chainId,
    self: p.institution.index,
    submitRegister: p.submitRegister,
    ledger: p.ledger,
    anchorStatus,
    audit,
    ...(p.now ? { now: p.now } : {}),
  };
  const sharing = p.sharing;
  const consentState = sharing?.consentState?.bind(sharing);
  const consentIds = sharing?.consentIds?.bind(sharing);
  const consents = sharing?.consents?.bind(sharing);
  const app = buildHttpServer(
    bearerAuthoriser({ staticToken: p.ehrToken, ...(p.smart ? { tokens: p.smart.tokens } : {}) }),
    (server) => {
      registerFhirRoutes(server, {
        service,
        types,
        base,
        reads,
        capability: (b) =>
          capabilityStatement(p.mapping, {
            base: b,
            software: SOFTWARE,
            institution: p.institution.name,
            date,
          }),
      });
      if (p.smart !== undefined) {
        registerSmartRoutes(server, {
          chainId: p.genesis.chainId,
          clients: p.smart.clients,
          tokens: p.smart.tokens,
          ledger: p.ledger,
          audit,
          ...(p.now ? { now: p.now } : {}),
        });
      }
      registerSpchainRoutes(server, registration);
      registerPortalRoutes(server);
      registerPatientRoutes(server, {
        chainId: p.genesis.chainId,
        institution: p.institution,
        members: roster,
        minFee: p.genesis.params.minFee,
        ...(p.connectedPeers ? { connectedPeers: p.connectedPeers } : {}),
        idHashKey: p.genesis.idHashKey,
        ...(p.idHashCost ? { idHashCost: p.idHashCost } : {}),
        store: core.store,
        resources,
        ledger: p.ledger,
        registration,
        anchorStatus,
        audit,
        ...(consentIds ? { consentIds } : {}),
        ...(consents ? { consents } : {}),
        ...(sharing?.ownRecords ? { ownRecords: sharing.ownRecords } : {}),
        ...(p.directory ? { directory: p.directory } : {}),
        ...(p.reputation ? { reputation: p.reputation } : {}),
        base,
        ...(p.now ? { now: p.now } : {}),
        ...(p.random ? { random: p.random } : {}),
      });
      registerShareLinkRoutes(server, {
        chainId: p.genesis.chainId,
        institution: p.institution,
        members: roster,
        ledger: p.ledger,
        db,
        audit,
        ...(consentState ? { consentState } : {}),
        ...(p.leafAuthor ? { signingSecret: p.leafAuthor.keys.signingSecret } : {}),
        base,
        ...(p.fetch ? { fetch: p.fetch } : {}),
        ...(p.now ? { now: p.now } : {}),
        ...(p.random ? { random: p.random } : {}),
      });
      registerAccessRequestRoutes(server, {
        chainId: p.genesis.chainId,
        institution: p.institution,
        members: roster,
        ledger: p.ledger,
        db,
        audit,
        ...(p.reputation ? { reputation: p.reputation } : {}),
        ...(p.leafAuthor ? { signingSecret: p.leafAuthor.keys.signingSecret } : {}),
        ...(p.directory ? { directory: p.directory } : {}),
        ...(p.fetch ? { fetch: p.fetch } : {}),
        ...(p.now ? { now: p.now } : {}),
        ...(p.random ? { random: p.random } : {}),
      });
      registerShareRoutes(server, {
        chainId: p.genesis.chainId,
        institution: p.institution,
        ...(p.sharing ? { sharing: p.sharing } : {}),
        ...(leaves ? { leaves } : {}),
        audit,
        ...(p.now ? { now: p.now } : {}),
      });
    },
    p.http,
  );
  return { app, service, reads, audit, resources };
}
