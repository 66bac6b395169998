/**
 * One sidecar process, composed (the composition root `npm start` runs, src/main.ts): the
 * embedded SPChain node, the sidecar store, the tx queue, the sidecar core (ingest, anchor worker)
 * and the FHIR HTTP API.
 *
 * Embedded defaults, so that `npm start` needs nothing else: on first start the data directory
 * gets a one-institution network (its genesis, the institution's keys sealed in a key file with a
 * generated passphrase, the node's config: `<data>/network`, made with src/node/localnet.ts), and
 * the EHR's interim bearer token (`<data>/ehr-token`); later starts reuse them. The embedded queue
 * lives in the sidecar's LevelDB (`<data>/sidecar`) unless REDIS_URL names a Redis for BullMQ.
 *
 * To join an existing network instead (several institutions: src/node/localnet.ts makes one, as
 * `npm run localnet` and `npm run demo` do), `nodeConfig` names this institution's node config;
 * its genesis, peers and key file come from there, and the data directory holds only the
 * sidecar's own state.
 *
 * Sharing (src/sidecar/share.ts) is wired here: the node's p2p 'record' service answers other
 * institutions with this sidecar's holder (re-encryption under the patients' grants), and the
 * receiver fetches through the node (requestRecord) with this institution's PRE secret key from
 * its key file. The HTTP API takes grants and revocations (share-routes.ts), makes leaf txs for
 * this institution's patients (leaf-author.ts), and serves shared records as FHIR
 * (src/fhir/patient-reads.ts).
 *
 * Start order: node (it owns the pinned ledger; its record service refuses until sharing is
 * attached) -> sidecar store -> sharing -> queue -> core (recovers its outbox) -> mapping and
 * validator -> HTTP. Stop order is the reverse: HTTP first (in-flight requests finish, new ones
 * get 503), then the anchor worker, the validator, the queue, the node and the store.
 *
 * Observability: one metrics registry per sidecar (metrics.ts) fed by the node's events, the HTTP
 * hooks, the shared-record fetches and, for pin latency, the hand-over of own txs to the queue
 * (PinClock); readiness (health.ts) checks the sidecar's LevelDB, the node and the queue.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { loadMappingFile } from '../fhir/mapping-file.ts';
import { FhirValidator } from '../fhir/validate.ts';
import { readNodeConfig } from '../node/config.ts';
import type { NodeEvent } from '../node/events.ts';
import { createLocalnet } from '../node/localnet.ts';
import { type SpchainNode, startNode } from '../node/node.ts';
import { P2pError } from '../p2p/index.ts';
import { openTxQueue, redactRedisUrl, type TxQueue } from '../queue/index.ts';
import { SidecarCore } from '../sidecar/core.ts';
import { type ShareRecordHandler, Sharing } from '../sidecar/share.ts';
import { SidecarStore } from '../sidecar/store.ts';
import { ClientRegistry, readClientsFile } from '../smart/clients.ts';
import { loadOrCreateSigningKey, TokenService } from '../smart/tokens.ts';
import { createFhirApi } from './api.ts';
import { checkToken } from './auth.ts';
import { defaultMinPeers, healthOf, NodeState, sidecarChecks } from './health.ts';
import { PinClock, SidecarMetrics } from './metrics.ts';
import { defaultHttpOpts } from './server.ts';

export interface SidecarOpts {
  /** Everything the sidecar keeps: network files, keys, LevelDBs, the EHR token. */
  readonly dataDir: string;
  /**
   * This institution's node config in an existing network (src/node/config.ts); unset: the
   * one-institution network made under the data directory.
   */
  readonly nodeConfig?: string;
  readonly host: string;
  /** 0: any free port. */
  readonly port: number;
  /** BullMQ on this Redis; unset: the embedded queue. */
  readonly redisUrl?: string;
  /** INTERIM: the EHR's static bearer token; unset: `<data>/ehr-token`, made on first start. */
  readonly ehrToken?: string;
  /** A mapping file (fhir-mappings/); unset: fhir-mappings/default.json. */
  readonly mappingFile?: string;
  /** The FHIR base URL clients see (behind a proxy); unset: http://host:port/fhir. */
  readonly baseUrl?: string;
  /**
   * The network's sidecars, member index -> public base URL (SPCHAIN_DIRECTORY), for the patient
   * portal to reach the holders of a patient's records.
   */
  readonly directory?: ReadonlyMap<number, string>;
  readonly bodyLimit?: number;
  readonly logLevel?: string;
  /** Serve `GET /metrics` without a token (default false: the EHR's token is needed). */
  readonly metricsPublic?: boolean;
  /**
   * Connected members the node needs for `GET /health/ready`; default 0 in a one-institution
   * network, else 1.
   */
  readonly readyMinPeers?: number;
  /** Calls per client address and window to the routes that reveal whether a guess was right. */
  readonly guessLimit?: { readonly max: number; readonly windowMs: number };
  /** The environment (REDIS_URL aside), for the node config's passphraseEnv. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** The node's events (node/events.ts). */
  readonly onNodeEvent?: (e: NodeEvent) => void;
  /** The sidecar core's operational warnings (code and message, no patient data). */
  readonly onWarn?: (code: string, message: string) => void;
  /** Called if the node stops on a failure it cannot run past. */
  readonly onFatal?: (err: unknown) => void;
}

export const defaultSidecarOpts = { dataDir: './data', host: '127.0.0.1', port: 8080 };

export interface RunningSidecar {
  /** http://host:port */
  readonly url: string;
  readonly fhirBase: string;
  readonly tokenFile: string | null;
  readonly institution: { readonly index: number; readonly name: string };
  readonly chainId: string;
  readonly queueKind: string;
  readonly app: FastifyInstance;
  readonly node: SpchainNode;
  readonly sharing: Sharing;
  /** This sidecar's metrics registry (served by GET /metrics). */
  readonly metrics: SidecarMetrics;
  close(): Promise<void>;
}

/** Where the generated network lives in the data directory. */
export const networkPaths = (dataDir: string) => {
  const dir = join(dataDir, 'network');
  return {
    dir,
    genesis: join(dir, 'genesis.json'),
    config: join(dir, 'inst-0', 'config.json'),
  };
};

/** The SMART files of a data directory: registered clients, the token signing key. */
export const smartPaths = (dataDir: string) => ({
  clients: join(dataDir, 'smart-clients.json'),
  signingKey: join(dataDir, 'smart-signing-key.json'),
});

/** Makes the one-institution network on first start (atomically: a half-made one is remade). */
export async function ensureNetwork(dataDir: string): Promise<void> {
  const paths = networkPaths(dataDir);
  if (existsSync(paths.config)) return;
  await mkdir(dataDir, { recursive: true });
  const tmp = join(dataDir, `network.tmp-${randomBytes(4).toString('hex')}`);
  await createLocalnet({ institutions: 1, dir: tmp, patientsPerInstitution: 0, load: null });
  await rm(paths.dir, { recursive: true, force: true });
  await rename(tmp, paths.dir);
}

/** The EHR token: given, or read from (made on first start into) `<data>/ehr-token`. */
async function ehrToken(
  dataDir: string,
  given?: string,
): Promise<{ token: string; file: string | null }> {
  if (given !== undefined && given !== '') {
    checkToken(given);
    return { token: given, file: null };
  }
  const file = join(dataDir, 'ehr-token');
  if (!existsSync(file)) {
    await writeFile(file, `${randomBytes(24).toString('hex')}\n`, { mode: 0o600 });
  }
  const token = (await readFile(file, 'utf8')).trim();
  checkToken(token);
  return { token, file };
}

export async function startSidecar(o: SidecarOpts): Promise<RunningSidecar> {
  const dataDir = resolve(o.dataDir);
  if (o.nodeConfig === undefined) await ensureNetwork(dataDir);
  else await mkdir(dataDir, { recursive: true });
  const token = await ehrToken(dataDir, o.ehrToken);
  const config = await readNodeConfig(o.nodeConfig ?? networkPaths(dataDir).config, o.env ?? {});
  const { genesis } = config.genesisFile;
  // A member admitted after genesis is named by its admission until the node has synced it.
  const member = genesis.members.find((m) => m.index === config.index) ?? config.admission!.member;
  const minPeers = o.readyMinPeers ?? defaultMinPeers(genesis.members.length);
  if (!Number.isSafeInteger(minPeers) || minPeers < 0) {
    throw new RangeError(`readyMinPeers must be an integer >= 0, got ${o.readyMinPeers}`);
  }
  const closers: (() => Promise<unknown>)[] = [];
  const closeAll = async () => {
    for (const c of closers.splice(0).reverse()) await c().catch(() => undefined);
  };
  // The node must have its record handler before it starts; sharing needs the started node.
  let holder: ShareRecordHandler | null = null;
  const record: ShareRecordHandler = (request, from, signal) => {
    if (holder === null) {
      return Promise.reject(new P2pError('NO_HANDLER', 'sharing is not ready here yet'));
    }
    return holder(request, from, signal);
  };
  const metrics = new SidecarMetrics();
  const nodeState = new NodeState();
  // Pin latency: own txs from their first hand-over to the queue to the batch that pins them.
  let pinnedBatches: SpchainNode['ledger'] | null = null;
  const pinClock = new PinClock({
    self: config.index,
    getBatch: async (height) => pinnedBatches?.getBatch(height),
    observe: (seconds) => metrics.observePinLatency(seconds),
  });
  try {
    // Reputations and the consensus group as the last closed chunk left them (the portal lists them).
    let reputation = { reputations: new Map<number, number>(), group: [] as number[] };
    const node = await startNode({
      config,
      onEvent: (e) => {
        if (e.event === 'chunk') {
          reputation = {
            reputations: new Map(Object.entries(e.reputations).map(([k, v]) => [Number(k), v])),
            group: [...e.group],
          };
        }
        metrics.onNodeEvent(e);
        nodeState.onNodeEvent(e);
        pinClock.onNodeEvent(e);
        o.onNodeEvent?.(e);
      },
      onFatal: (err) => o.onFatal?.(err),
      record,
    });
    closers.push(() => node.stop());
    pinnedBatches = node.ledger;
    const store = await SidecarStore.open(join(dataDir, 'sidecar'));
    closers.push(() => store.close());
    const warn = (code: string, message: string) => o.onWarn?.(code, message);
    const sharing = new Sharing({
      store,
      ledger: node.ledger,
      genesis,
      roster: () => node.members(),
      self: { index: config.index, preKey: config.keys.preKey, preSecret: config.keys.preSecret },
      warn,
    });
    sharing.connect(node);
    holder = sharing.recordHandler;
    // No answers from a closing store: the handler goes before the store closes.
    closers.push(async () => {
      holder = null;
    });
    const queue: TxQueue = await openTxQueue({ redisUrl: o.redisUrl, db: store.db });
    closers.push(() => queue.close());
    const core = await SidecarCore.open({
      store,
      genesis,
      keys: config.keys,
      ledger: node.ledger,
      node,
      queue: {
        enqueue: (jobs) => {
          pinClock.handed(jobs.map((j) => j.id));
          return queue.enqueue(jobs);
        },
        take: (max, opts) => queue.take(max, opts),
        ack: (ids) => queue.ack(ids),
        fail: (id, reason) => queue.fail(id, reason),
        extend: (ids) => queue.extend(ids),
      },
      warn,
    });
    core.start();
    closers.push(() => core.stop());
    metrics.attach({
      node,
      queue: async () => ({ outbox: core.txLog.outboxSize, ...(await queue.stats()) }),
    });
    const health = healthOf(
      sidecarChecks({
        db: store.db,
        node: { state: nodeState, peers: () => node.stats().peers.length, minPeers },
        queue,
      }),
    );
    const mapping = await loadMappingFile(o.mappingFile);
    const validator = new FhirValidator();
    closers.push(() => validator.close());
    await validator.start();
    // SMART: the registered clients, and the key access tokens are signed with (made once).
    const paths = smartPaths(dataDir);
    const clients = new ClientRegistry(await readClientsFile(paths.clients));
    let fhirBase = o.baseUrl ?? '';
    const tokens = new TokenService({
      fhirBase: () => fhirBase,
      key: await loadOrCreateSigningKey(paths.signingKey),
      db: store.db,
    });
    const { app } = createFhirApi({
      core,
      ledger: node.ledger,
      genesis,
      roster: () => node.members(),
      institution: { index: config.index, name: member.name },
      submitRegister: (tx) => node.submitRegister(tx),
      sharing: {
        acceptGrant: (grant) => sharing.acceptGrant(grant),
        revoke: (revocation) => sharing.revoke(revocation),
        consentState: (idHash, consentId, grantee) =>
          sharing.consentState(idHash, consentId, grantee),
        consentIds: (idHash) => sharing.consentIds(idHash),
        consents: (idHash) => sharing.consents(idHash),
        ownRecords: sharing.ownRecords,
        fetchShared: async (idHash, opts) => {
          const fetched = await sharing.fetchShared(idHash, opts);
          metrics.observeShareFetch(fetched);
          return fetched;
        },
      },
      leafAuthor: { keys: config.keys, submitBundle: (b) => node.submitBundle(b) },
      mapping,
      validator,
      ehrToken: token.token,
      smart: { tokens, clients },
      reputation: () => reputation,
      connectedPeers: () => node.stats().peers,
      ...(o.directory ? { directory: o.directory } : {}),
      ...(o.baseUrl ? { baseUrl: o.baseUrl } : {}),
      http: {
        bodyLimit: o.bodyLimit ?? defaultHttpOpts.bodyLimit,
        logLevel: o.logLevel ?? defaultHttpOpts.logLevel,
        metrics,
        metricsPublic: o.metricsPublic ?? defaultHttpOpts.metricsPublic,
        guessLimit: o.guessLimit ?? defaultHttpOpts.guessLimit,
        health,
      },
    });
    closers.push(() => app.close());
    await app.listen({ host: o.host, port: o.port });
    const address = app.server.address();
    const port = typeof address === 'object' && address !== null ? address.port : o.port;
    const host = o.host.includes(':') ? `[${o.host}]` : o.host;
    const url = `http://${host}:${port}`;
    fhirBase ||= `${url}/fhir`;
    return {
      url,
      fhirBase: o.baseUrl ?? `${url}/fhir`,
      tokenFile: token.file,
      institution: { index: config.index, name: member.name },
      chainId: genesis.chainId,
      queueKind: o.redisUrl ? `BullMQ on ${redactRedisUrl(o.redisUrl)}` : 'embedded (LevelDB)',
      app,
      node,
      sharing,
      metrics,
      close: closeAll,
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
