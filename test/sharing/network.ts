/**
 * Several institutions in one process, each with its own real parts: a LevelDB ledger store (the
 * pinned chain, identical at every institution), a sidecar store, an embedded queue, a sidecar
 * core, the sharing service, and a libp2p node on 127.0.0.1 whose 'record' service is that
 * sharing service. Consensus is stood in for by one replica (institution 0's test ledger)
 * certifying batches with every member's precommit; each pinned batch is then written to every
 * institution's store, as consensus and sync would leave it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { equalBytes } from '../../src/crypto/bytes.ts';
import { generateChameleonKey } from '../../src/crypto/chameleon.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';
import { generateSigningKey } from '../../src/crypto/sign.ts';
import { generateSecretKey, publicKeyOf } from '../../src/crypto/umbral/index.ts';
import { makeLeafTx } from '../../src/ledger/author.ts';
import { refKey } from '../../src/ledger/batch.ts';
import type { PatientIdentity } from '../../src/ledger/idhash.ts';
import { signBundle, signGrant } from '../../src/ledger/tx.ts';
import type { BlockRef, Bytes, InstitutionIndex } from '../../src/ledger/types.ts';
import { makePeerBinding } from '../../src/p2p/binding.ts';
import { peerIdFromSeed } from '../../src/p2p/keys.ts';
import { createP2pNode, type P2pNode } from '../../src/p2p/node.ts';
import type { PeerEntry } from '../../src/p2p/peers.ts';
import { EmbeddedQueue } from '../../src/queue/embedded.ts';
import { SidecarCore } from '../../src/sidecar/core.ts';
import type { IngestRecord, IngestResult } from '../../src/sidecar/ingest.ts';
import { Sharing } from '../../src/sidecar/share.ts';
import type { SharePageRequest } from '../../src/sidecar/share-wire.ts';
import { decodeShareRequest } from '../../src/sidecar/share-wire.ts';
import { SidecarStore } from '../../src/sidecar/store.ts';
import { freePort, peerSeed, testLimits, waitFor } from '../p2p/helpers.ts';
import {
  type LedgerFixture,
  makeLedgerFixture,
  TEST_ID_COST,
  TestLedger,
  type TestPatient,
} from '../sidecar/ledger.ts';

/** Rewrites a holder's answer (a misbehaving holder in tamper tests). */
export type Tamper = (
  answer: Uint8Array,
  request: SharePageRequest,
  from: InstitutionIndex,
) => Uint8Array | Promise<Uint8Array>;

export interface NetInstitution {
  readonly index: InstitutionIndex;
  readonly ledger: TestLedger;
  readonly store: SidecarStore;
  readonly queue: EmbeddedQueue;
  readonly core: SidecarCore;
  readonly sharing: Sharing;
  readonly p2p: P2pNode;
  readonly preKey: Bytes;
  readonly preSecret: Bytes;
  readonly warnings: string[];
  /** When set, every answer of this institution's record service goes through it. */
  tamper: Tamper | null;
}

export interface ShareNet {
  readonly fixture: LedgerFixture;
  readonly institutions: readonly NetInstitution[];
  /** The clock every sharing service reads (ms); tests move it. */
  now: number;
  ingest(at: number, records: readonly IngestRecord[]): Promise<IngestResult[]>;
  /** Anchors every institution's queued txs and pins them everywhere. */
  anchorAll(): Promise<number>;
  /** Gives `institution` a leaf (upload grant) in the patient's block, pinned everywhere. */
  addLeaf(patient: TestPatient, institution: InstitutionIndex): Promise<void>;
  close(): Promise<void>;
}

/**
 * The PRE secret keys makeNetwork draws but does not keep: its key draws replayed from the same
 * seed (signing, chameleon, PRE per institution), checked against the genesis.
 */
function preSecrets(fixture: LedgerFixture, seed: string): Bytes[] {
  const random = deterministicRandom(seed);
  return fixture.genesis.members.map((m) => {
    generateSigningKey(random);
    generateChameleonKey(random);
    const secret = generateSecretKey(random);
    if (!equalBytes(publicKeyOf(secret), m.preKey)) {
      throw new Error('makeNetwork no longer draws keys as preSecrets replays them: update both');
    }
    return secret;
  });
}

export async function openShareNet(opts: {
  seed: string;
  /** Home institution of each patient (every patient has a leaf at its home). */
  homes: readonly number[];
  members: number;
  /** Patient k's identity (default: a test identifier); e.g. Synthea patients for FHIR tests. */
  identities?: readonly PatientIdentity[];
}): Promise<ShareNet> {
  const fixture = makeLedgerFixture(opts.seed, opts.homes, opts.members, opts.identities);
  const secrets = preSecrets(fixture, opts.seed);
  const { genesis } = fixture;
  const dir = mkdtempSync(join(tmpdir(), 'spchain-share-'));
  const label = `share-${opts.seed}`;
  const peers: PeerEntry[] = [];
  const listens: string[] = [];
  for (const inst of fixture.institutions) {
    const peerId = await peerIdFromSeed(peerSeed(label, inst.index));
    const listen = `/ip4/127.0.0.1/tcp/${await freePort()}`;
    listens.push(listen);
    peers.push({
      index: inst.index,
      peerId,
      multiaddr: listen,
      binding: makePeerBinding(genesis.chainId, peerId, inst.index, inst.signingSecret),
    });
  }
  const institutions: NetInstitution[] = [];
  const net: ShareNet = {
    fixture,
    institutions,
    now: genesis.time + 10_000,
    ingest: (at, records) => institutions[at]!.core.ingestor.ingest(records),
    anchorAll,
    addLeaf,
    close,
  };
  let primary: TestLedger | undefined;
  try {
    for (const inst of fixture.institutions) {
      const k = inst.index;
      const ledger = await TestLedger.open(join(dir, `${k}`, 'ledger'), fixture);
      primary ??= ledger;
      const store = await SidecarStore.open(join(dir, `${k}`, 'sidecar'), { syncWrites: false });
      const queue = await EmbeddedQueue.open(store.db, { syncWrites: false, backoffMs: 10 });
      const warnings: string[] = [];
      const warn = (code: string, message: string) => warnings.push(`${code}: ${message}`);
      const node = primary;
      const core = await SidecarCore.open({
        store,
        genesis,
        keys: inst,
        ledger: ledger.store,
        node: { submitBundle: (b) => node.submitBundle(b) },
        queue,
        idHashCost: TEST_ID_COST,
        anchor: { takeWaitMs: 0, busyRetryMs: 5, maxBundleTxs: 256 },
        warn,
      });
      for (const p of fixture.patients) await core.patients.add(p.identity);
      const preKey = publicKeyOf(secrets[k]!);
      const sharing = new Sharing({
        store,
        ledger: ledger.store,
        genesis,
        self: { index: k, preKey, preSecret: secrets[k]! },
        now: () => net.now,
        warn,
      });
      const entry: Omit<NetInstitution, 'p2p'> & { p2p?: P2pNode } = {
        index: k,
        ledger,
        store,
        queue,
        core,
        sharing,
        preKey,
        preSecret: secrets[k]!,
        warnings,
        tamper: null,
      };
      entry.p2p = await createP2pNode({
        chain: genesis,
        self: k,
        peerKeySeed: peerSeed(label, k),
        listen: listens[k],
        peers,
        limits: testLimits,
        record: async (request, from, signal) => {
          const answer = await sharing.recordHandler(request, from, signal);
          const tamper = entry.tamper;
          return tamper === null ? answer : tamper(answer, decodeShareRequest(request), from);
        },
      });
      sharing.connect(entry.p2p);
      institutions.push(entry as NetInstitution);
    }
    await waitFor(
      () => institutions.every((i) => i.p2p.connectedMembers().length === institutions.length - 1),
      'every institution connected to every other',
      30_000,
    );
  } catch (err) {
    await close();
    throw err;
  }
  return net;

  /** Pins one batch at a time at institution 0 and writes it to every other store. */
  async function pinAll(): Promise<number> {
    const main = institutions[0]!.ledger;
    let total = 0;
    while (main.mempool().eligible > 0) {
      const n = await main.pin();
      const h = main.height;
      const batch = (await main.store.getBatch(h))!;
      const cert = (await main.store.getCertificate('batch', h))!;
      const refs = new Map<string, BlockRef>();
      for (const b of batch.bundles) for (const tx of b.txs) refs.set(refKey(tx.block), tx.block);
      const blocks = await Promise.all([...refs.values()].map((r) => main.store.getMicroblock(r)));
      for (const other of institutions.slice(1)) {
        await other.ledger.store.putPinnedBatch(
          batch,
          cert,
          blocks.map((b) => b!),
        );
      }
      if (n === 0) break;
      total += n;
    }
    return total;
  }

  async function anchorAll(): Promise<number> {
    for (const inst of institutions) {
      while ((await inst.core.anchorer.runOnce()) > 0) {}
    }
    const pinned = await pinAll();
    for (const inst of institutions) await inst.core.anchorer.sweep();
    return pinned;
  }

  async function addLeaf(patient: TestPatient, institution: InstitutionIndex): Promise<void> {
    const { chainId } = genesis;
    const home = fixture.institutions[patient.home]!;
    const newcomer = fixture.institutions[institution]!;
    const block = (await institutions[0]!.ledger.store.getMicroblockByIdHash(patient.idHash))!;
    const grant = signGrant(chainId, patient.idHash, institution, patient.signingSecret);
    const leafTx = makeLeafTx({ chainId, block, home, newcomer, fee: 1, grant });
    const verdict = institutions[0]!.ledger.submitBundle(
      signBundle(chainId, home.index, [leafTx], home.signingSecret),
    );
    if (!verdict.ok) throw verdict.error;
    await pinAll();
  }

  async function close(): Promise<void> {
    for (const inst of institutions) {
      await inst.p2p.stop().catch(() => {});
      await inst.core.stop();
      await inst.queue.close();
      await inst.store.close();
      await inst.ledger.close();
    }
    rmSync(dir, { recursive: true, force: true });
  }
}
