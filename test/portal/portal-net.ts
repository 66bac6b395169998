/**
 * Institutions for the portal's end-to-end test, each a real HTTP server on 127.0.0.1: the
 * in-process network of test/sharing/network.ts (LevelDB ledger and sidecar stores, embedded
 * queues, sharing over libp2p) with each institution's API built as the composition root builds
 * it (createFhirApi, as test/http/share-net.ts does), plus the portal's routes, and a directory
 * of every sidecar's URL (listed by GET /spchain/institutions, used by the page).
 *
 * Consensus is stood in for as in those harnesses: register txs that the sidecars accept are
 * captured (`registers`), and `pinRegistrations` puts them in the next keyblock, mined and
 * certified by every member, written to every institution's ledger store and applied to the
 * replica that takes the sidecars' bundles; record batches are pinned by `net.anchorAll()`.
 *
 * Options: `reputations` (by member index) is a STUB ReputationView given to every API (the
 * default: an equal share each); a real network's reputations come from closed chunks of
 * keyblocks, which this in-process network does not run. `clients` puts a SMART authorisation
 * server (src/smart, its tokens in the home's LevelDB) on the home institution's API (index 0),
 * for those registered apps.
 */
import { createFhirApi, type FhirApi } from '../../src/http/api.ts';
import { makeCertificate, signVote } from '../../src/ledger/certificate.ts';
import { keyblockHash } from '../../src/ledger/keyblock.ts';
import { adoptPinned, createKeyblockTree, mineKeyblock } from '../../src/ledger/keyblock-tree.ts';
import { createMicroblock, type Microblock } from '../../src/ledger/microblock.ts';
import { pinKeyblock, type Replica } from '../../src/ledger/replica.ts';
import type { Keyblock, RegisterTx } from '../../src/ledger/types.ts';
import type { ClientRegistry } from '../../src/smart/clients.ts';
import { newSigningKey, TokenService } from '../../src/smart/tokens.ts';
import { sharedParts, TOKEN } from '../http/harness.ts';
import { freePort } from '../p2p/helpers.ts';
import { openShareNet, type ShareNet } from '../sharing/network.ts';
import { TEST_ID_COST } from '../sidecar/ledger.ts';

export interface PortalNet {
  readonly net: ShareNet;
  readonly apis: readonly FhirApi[];
  /** Base URL of each institution's sidecar, by index. */
  readonly urls: readonly string[];
  /** Register txs the sidecars accepted, not yet pinned. */
  readonly registers: RegisterTx[];
  /** The home's SMART token service (with the `clients` option). */
  readonly tokens?: TokenService;
  /** Pins the captured register txs in the next keyblock everywhere; the blocks made. */
  pinRegistrations(): Promise<Microblock[]>;
  close(): Promise<void>;
}

export interface PortalNetOpts {
  /** A stub reputation per member index (see the header). */
  readonly reputations?: readonly number[];
  /** SMART apps registered at the home's authorisation server. */
  readonly clients?: ClientRegistry;
}

export async function openPortalNet(
  seed: string,
  members: number,
  opts: PortalNetOpts = {},
): Promise<PortalNet> {
  // One patient of the fixture's own (keyblock 1); the portal's patient registers in keyblock 2.
  const net = await openShareNet({ seed, homes: [0], members });
  // The sharing services read the real clock: grants made in the browser use it.
  Object.defineProperty(net, 'now', { get: () => Date.now(), set: () => {} });
  const { genesis } = net.fixture;
  const parts = await sharedParts();
  const ports = [];
  for (let k = 0; k < members; k++) ports.push(await freePort());
  const urls = ports.map((p) => `http://127.0.0.1:${p}`);
  const directory = new Map(urls.map((u, k) => [k, u]));
  const registers: RegisterTx[] = [];
  const primary = net.institutions[0]!.ledger;
  const apis: FhirApi[] = [];
  const share = 1 / members;
  const reputations = new Map(
    genesis.members.map((m) => [m.index, opts.reputations?.[m.index] ?? share]),
  );
  const tokens =
    opts.clients === undefined
      ? undefined
      : new TokenService({
          fhirBase: () => `${urls[0]}/fhir`,
          key: await newSigningKey(),
          db: net.institutions[0]!.core.store.db,
        });
  try {
    for (const inst of net.institutions) {
      const api = createFhirApi({
        core: inst.core,
        ledger: inst.ledger.store,
        genesis,
        institution: { index: inst.index, name: genesis.members[inst.index]!.name },
        submitRegister: (tx) => {
          registers.push(tx);
          return { ok: true };
        },
        sharing: inst.sharing,
        leafAuthor: {
          keys: net.fixture.institutions[inst.index]!,
          submitBundle: (b) => primary.submitBundle(b),
        },
        directory,
        reputation: () => ({ reputations, group: genesis.members.map((m) => m.index) }),
        ...(inst.index === 0 && tokens && opts.clients
          ? { smart: { tokens, clients: opts.clients } }
          : {}),
        mapping: parts.mapping,
        validator: parts.validator,
        ehrToken: TOKEN,
        idHashCost: TEST_ID_COST,
        http: { logLevel: 'silent' },
      });
      apis.push(api);
      await api.app.listen({ host: '127.0.0.1', port: ports[inst.index]! });
    }
  } catch (err) {
    for (const api of apis) await api.app.close();
    await net.close();
    throw err;
  }
  let keyblock: Keyblock = net.fixture.keyblock;

  async function pinRegistrations(): Promise<Microblock[]> {
    if (registers.length === 0) return [];
    const txs = registers.splice(0);
    const tree = adoptPinned(createKeyblockTree(genesis), net.fixture.keyblock);
    if (keyblock !== net.fixture.keyblock) throw new Error('pinRegistrations: only keyblock 2');
    const miner = net.fixture.institutions[0]!;
    const kb = mineKeyblock(tree, {
      parentId: tree.pinned,
      miner: { index: 0, signingKey: miner.member.signingKey, signingSecret: miner.signingSecret },
      registers: txs,
      time: keyblock.time + 1000,
      attempts: 10_000_000,
      random: net.fixture.random,
    });
    if (kb === null) throw new Error('keyblock 2: no nonce found');
    const subject = { kind: 'keyblock' as const, height: kb.height, round: 0 };
    const value = keyblockHash(kb);
    const certificate = makeCertificate(
      { ...subject, value },
      net.fixture.institutions.map((i) => ({
        member: i.index,
        signature: signVote(
          i.signingSecret,
          genesis.chainId,
          { ...subject, value, type: 'precommit' },
          net.fixture.random,
        ),
      })),
    );
    const blocks = txs.map((tx, j) => {
      const made = createMicroblock(tx, { i: kb.height, j }, (i) => genesis.members[i]);
      if (!made.ok) throw new Error(`register ${j} makes no block: ${made.verdict}`);
      return made.block;
    });
    for (const inst of net.institutions) {
      await inst.ledger.store.putPinnedKeyblock(kb, certificate, blocks);
    }
    // The replica that takes the sidecars' bundles learns the new patients' blocks, as a node's
    // keyblock flow tells its replica (TestLedger keeps it private: reached here on purpose).
    const holder = primary as unknown as { replica: Replica };
    holder.replica = pinKeyblock(holder.replica, kb);
    keyblock = kb;
    return blocks;
  }

  return {
    net,
    apis,
    urls,
    registers,
    ...(tokens ? { tokens } : {}),
    pinRegistrations,
    async close() {
      for (const api of apis) await api.app.close();
      await net.close();
    },
  };
}
