/**
 * Network faults, each against its own local network of 4 institutions in 4 node processes on
 * 127.0.0.1 (the same setup as localnet.test.ts):
 * - the leader of the height in progress is killed (SIGKILL) the moment it sends its proposal: a
 *   view change follows, and the other three keep pinning the same chain;
 * - one node is cut off from the others while its process keeps running (src/node/faults.ts:
 *   SIGUSR2 drops every connection and refuses every peer), then rejoins: the three keep pinning,
 *   the cut-off node pins nothing alone, and after rejoining it converges to their chain;
 * - one institution is Byzantine (src/node/faults.ts): it equivocates its votes, forges proposals
 *   and bundles, and replays old messages. No invalid item is pinned, the honest nodes agree and
 *   keep pinning, its misbehaviour is proved and the proof pinned, and its reputation falls to 0
 *   in the honest nodes' own view.
 * Conditions are polled with generous bounds; nothing depends on how fast this machine is.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toHex } from '../../src/crypto/bytes.ts';
import { systemRandom } from '../../src/crypto/random.ts';
import { batchHash } from '../../src/ledger/batch.ts';
import { evidenceCulprit } from '../../src/ledger/evidence.ts';
import {
  hasPinnedEvidence,
  integrityOf,
  receiveBundle,
  reputations,
} from '../../src/ledger/replica.ts';
import { txHash, verifyBundleSignature } from '../../src/ledger/tx.ts';
import { Chain } from '../../src/node/chain.ts';
import { readNodeConfig } from '../../src/node/config.ts';
import { FAULTS_ENV, type FaultOpts, Faults, FORGED_KINDS } from '../../src/node/faults.ts';
import { parseGenesisFile } from '../../src/node/genesis-file.ts';
import { Author, defaultLoadOpts } from '../../src/node/load.ts';
import {
  type Cluster,
  type NodeLine,
  type NodeProc,
  openTestNet,
  patchConfig,
  storedBatches,
  type TestNet,
  waitFor,
} from './cluster.ts';

const N = 4;
const WAIT_MS = 45_000;
const FAULTS_ON = { [FAULTS_ENV]: '1' };
const NET = {
  institutions: N,
  patientsPerInstitution: 2,
  load: { txPerSecond: 6, txsPerBundle: 3 },
};

/** Gives node `i` a faults section (through `change`) and the variable that lets it start. */
async function makeFaulty(
  t: TestNet,
  i: number,
  change: (config: Record<string, unknown>) => void,
) {
  await patchConfig(t.net.configPaths[i]!, change);
  t.cluster.nodes[i]!.env = FAULTS_ON;
}

const minHeight = (nodes: readonly NodeProc[]) => Math.min(...nodes.map((n) => n.height));
const maxHeight = (nodes: readonly NodeProc[]) => Math.max(...nodes.map((n) => n.height));

/** Pinned lines of a node above `height`. */
const pinsAbove = (n: NodeProc, height: number) =>
  n.events('pinned').filter((l) => (l.height as number) > height);

/** No fatal stop, no two hashes at one height, and no penalty against any of `honest`. */
function expectAgreement(cluster: Cluster, honest: readonly number[]): void {
  expect(cluster.fatal).toEqual([]);
  expect(cluster.conflicts).toEqual([]);
  const against = penalties(cluster).filter((p) => honest.includes(p.member as number));
  expect(against).toEqual([]);
}

/** Every node of `nodes` reports every height from `from` to `to`, with the same hash. */
function expectSameChain(nodes: readonly NodeProc[], from: number, to: number): void {
  for (let h = from; h <= to; h++) {
    const hashes = new Set(nodes.map((n) => n.hashes.get(h)));
    const each = nodes.map((n) => `node ${n.index}: ${n.hashes.get(h)?.slice(0, 12)}`).join(', ');
    expect(hashes.size, `height ${h}: ${each}`).toBe(1);
    expect([...hashes][0], `height ${h}`).toBeDefined();
  }
}

interface Penalty {
  readonly by: string;
  readonly type: string;
  readonly member?: number;
  readonly reason?: string;
}

/** The penalised and banned p2p events every node reported (as warn lines). */
function penalties(cluster: Cluster): Penalty[] {
  return cluster.warnings
    .filter((w) => /^node \d+: (PENALISED|BANNED): /.test(w))
    .map((w) => {
      const [, by, json] = /^node (\d+): \w+: (.*)$/.exec(w)!;
      return { by: by!, ...(JSON.parse(json!) as Omit<Penalty, 'by'>) };
    });
}

describe('a leader killed mid-round', () => {
  let t: TestNet;
  beforeAll(async () => {
    t = await openTestNet(NET);
  }, 60_000);
  afterAll(() => t?.close());

  it('is replaced by a view change, and the other three keep pinning the same chain', async () => {
    const { cluster } = t;
    cluster.startAll();
    await waitFor(
      () => minHeight(cluster.nodes) >= 3,
      'every node to pin 3 batches',
      WAIT_MS,
      cluster,
    );
    // The proposer of the height in progress, killed as soon as it reports sending its proposal.
    const killed: { node?: NodeProc; line?: NodeLine } = {};
    const off = cluster.listen((p, line) => {
      if (killed.node !== undefined || line.event !== 'proposing') return;
      p.killNow();
      Object.assign(killed, { node: p, line });
    });
    await waitFor(() => killed.node !== undefined, 'a node to propose', WAIT_MS, cluster);
    off();
    const victim = killed.node!;
    const line = killed.line!;
    const height = line.height as number;
    const others = cluster.nodes.filter((n) => n !== victim);

    await waitFor(
      () => minHeight(others) >= height + 2 * N,
      `the other three to pin ${2 * N} heights past the one in progress (${height})`,
      WAIT_MS,
      cluster,
    );
    expect(victim.running).toBe(false);
    expectAgreement(cluster, [0, 1, 2, 3]);
    expectSameChain(others, 1, height + 2 * N);
    for (const n of others) {
      const later = pinsAbove(n, height);
      // The dead leader proposes nothing more; its turns go to the next proposer after the
      // propose timeout: a round change, so some of these heights are pinned at round >= 1.
      expect(later.filter((l) => l.proposer === victim.index)).toEqual([]);
      expect(
        later.some((l) => (l.round as number) >= 1),
        `node ${n.index} rounds`,
      ).toBe(true);
    }
  }, 120_000);
});

describe('a node cut off from the others', () => {
  let t: TestNet;
  const CUT = 3;
  beforeAll(async () => {
    t = await openTestNet(NET);
    await makeFaulty(t, CUT, (c) => {
      c.faults = { partitionSignal: true };
    });
  }, 60_000);
  afterAll(() => t?.close());

  it('pins nothing alone while the others go on, and converges once it rejoins', async () => {
    const { cluster } = t;
    const cut = cluster.nodes[CUT]!;
    const others = cluster.nodes.filter((n) => n !== cut);
    cluster.startAll();
    await waitFor(
      () => minHeight(cluster.nodes) >= 3 && cut.connected()?.length === N - 1,
      'every node to pin 3 batches, connected to all',
      WAIT_MS,
      cluster,
    );

    const cutAt = Date.now();
    cut.signal('SIGUSR2');
    await waitFor(
      () =>
        cut.events('fault', cutAt).some((l) => l.fault === 'partition' && l.on === true) &&
        cut.connected()?.length === 0 &&
        others.every((n) => !n.connected()?.includes(CUT)),
      'the node to be cut off from every peer',
      WAIT_MS,
      cluster,
    );
    const cutHeight = cut.height;
    const before = maxHeight(others);
    await waitFor(
      () => minHeight(others) >= before + 6,
      'the other three to pin 6 more batches',
      WAIT_MS,
      cluster,
    );
    // Alone it cannot pin (at most a decision already under way when it was cut).
    expect(cut.height).toBeLessThanOrEqual(cutHeight + 1);
    expect(cluster.conflicts).toEqual([]);

    const rejoinAt = Date.now();
    cut.signal('SIGUSR2');
    await waitFor(
      () => cut.events('fault', rejoinAt).some((l) => l.fault === 'partition' && l.on === false),
      'the node to rejoin',
      WAIT_MS,
      cluster,
    );
    const target = maxHeight(others);
    await waitFor(
      () =>
        minHeight(cluster.nodes) >= target + 3 &&
        cut.events('pinned', rejoinAt).some((l) => l.via === 'consensus'),
      'the rejoined node to catch up and pin with the others again',
      WAIT_MS,
      cluster,
    );
    expectAgreement(cluster, [0, 1, 2, 3]);
    expect(cut.events('synced', rejoinAt).length).toBeGreaterThan(0);
    expectSameChain(cluster.nodes, 1, target + 3);
  }, 120_000);
});

describe('a Byzantine institution', () => {
  let t: TestNet;
  const BYZ = 3;
  const HONEST = [0, 1, 2];
  const faults: FaultOpts = {
    partitionSignal: false,
    equivocate: true,
    forgeProposals: true,
    // 6 of the 9 are rejected at the gossip edge: 6 penalty points, below the ban at 20, so the
    // Byzantine node stays connected and keeps misbehaving for the whole test.
    forgeBundles: 9,
    forgeBundleMs: 400,
    replayMs: 700,
  };
  beforeAll(async () => {
    t = await openTestNet(NET);
    // No load of its own: every bundle in its name is a forgery, so none may be pinned.
    await makeFaulty(t, BYZ, (c) => {
      c.faults = faults;
      delete c.load;
    });
  }, 60_000);
  afterAll(() => t?.close());

  it('has its faults config refused unless the fault-test variable is set', async () => {
    const path = t.net.configPaths[BYZ]!;
    await expect(readNodeConfig(path, {})).rejects.toThrow(
      /faults is for fault tests only, and is refused unless SPCHAIN_TEST_FAULTS=1/,
    );
    expect((await readNodeConfig(path, FAULTS_ON)).faults).toEqual(faults);
    expect((await readNodeConfig(t.net.configPaths[0]!, {})).faults).toBeNull();
  });

  it('gets nothing invalid pinned, is proved and its proof pinned, and loses its reputation', async () => {
    const { cluster } = t;
    const byz = cluster.nodes[BYZ]!;
    const honest = HONEST.map((i) => cluster.nodes[i]!);
    const acts = () => {
      const out = new Set<string>();
      for (const l of byz.events('fault')) {
        if (l.fault === 'forged-bundle') out.add(`forged-bundle:${l.kind}`);
        else if (l.fault === 'replay') {
          if ((l.messages as number) > 0) out.add('replay:messages');
          if ((l.bundles as number) > 0) out.add('replay:bundles');
        } else out.add(l.fault as string);
      }
      return out;
    };
    const expectedActs = [
      'equivocation',
      'forged-proposal',
      ...FORGED_KINDS.map((k) => `forged-bundle:${k}`),
      'replay:messages',
      'replay:bundles',
    ];
    const judged = (n: NodeProc) =>
      n
        .events('reputation')
        .some(
          (l) =>
            l.member === BYZ &&
            l.evidencePinned === true &&
            l.integrity === 0 &&
            l.reputation === 0,
        );
    cluster.startAll();
    await waitFor(
      () =>
        minHeight(honest) >= 12 && expectedActs.every((a) => acts().has(a)) && honest.every(judged),
      'the Byzantine node to commit every fault, and every honest node to pin proof of it',
      WAIT_MS,
      cluster,
    );
    const proved = minHeight(honest);
    await waitFor(
      () => minHeight(honest) >= proved + 5,
      'the honest nodes to pin 5 more batches',
      WAIT_MS,
      cluster,
    );

    // The honest nodes agree, and nobody penalised them; the Byzantine one was penalised for
    // what the gossip edge rejects outright (bad signatures, forged openings).
    expectAgreement(cluster, HONEST);
    expectSameChain(honest, 1, minHeight(honest));
    const reasons = penalties(cluster)
      .filter((p) => p.member === BYZ)
      .map((p) => p.reason ?? '');
    expect(reasons.some((r) => r.includes('BAD_SIGNATURE'))).toBe(true);
    expect(reasons.some((r) => r.includes('BAD_CHAMELEON_OPENING'))).toBe(true);
    // Every honest node proved the misbehaviour (its first proof, whichever came first).
    for (const n of honest) {
      const proofs = n.events('misbehaviour');
      expect(proofs.length, `node ${n.index} proofs`).toBeGreaterThan(0);
      for (const p of proofs) {
        expect(p.member).toBe(BYZ);
        expect(['EQUIVOCATION', 'UNAUTHORISED_INSTITUTION', 'BAD_CHAMELEON_OPENING']).toContain(
          p.code,
        );
      }
      expect(
        n.events('pinned').filter((l) => (l.by as Record<string, number>)[BYZ] !== undefined),
      ).toEqual([]);
    }
    // A forged proposal is never decided: the height goes to another round's proposal.
    for (const f of byz.events('fault').filter((l) => l.fault === 'forged-proposal')) {
      for (const n of honest) {
        const pin = n.events('pinned').find((l) => l.height === f.height);
        if (pin !== undefined) expect(pin.round, `height ${f.height}`).not.toBe(f.round);
      }
    }

    await cluster.stopAll('SIGTERM');
    const forged = new Set(
      byz
        .events('fault')
        .filter((l) => l.fault === 'forged-bundle' || l.fault === 'forged-proposal')
        .map((l) => l.signature as string),
    );
    const genesisFile = parseGenesisFile(readFileSync(t.net.genesisPath, 'utf8'), 'genesis.json');
    const { genesis } = genesisFile;
    const chains = await Promise.all(HONEST.map((i) => storedBatches(t.net.dataDirs[i]!)));
    const common = Math.min(...chains.map((c) => c.length));
    for (let h = 0; h < common; h++) {
      const hashes = new Set(chains.map((c) => toHex(batchHash(c[h]!))));
      expect(hashes.size, `stored height ${h + 1}`).toBe(1);
    }
    for (const [k, chain] of chains.entries()) {
      const txs = new Set<string>();
      let evidence = 0;
      for (const batch of chain) {
        for (const b of batch.bundles) {
          const where = `node ${HONEST[k]} height ${batch.height}`;
          expect(b.institution, where).not.toBe(BYZ);
          expect(forged.has(toHex(b.signature)), where).toBe(false);
          const key = genesis.members[b.institution]!.signingKey;
          expect(verifyBundleSignature(genesis.chainId, b, key), where).toBe(true);
          for (const tx of b.txs) {
            const id = toHex(txHash(tx));
            expect(txs.has(id), `${where}: tx ${id} pinned twice`).toBe(false);
            txs.add(id);
          }
        }
        for (const e of batch.evidence) expect(evidenceCulprit(e)).toBe(BYZ);
        evidence += batch.evidence.length;
      }
      // One proof per culprit is pinned, ever.
      expect(evidence, `node ${HONEST[k]} pinned evidence`).toBe(1);
    }

    // A restarted honest node rebuilds the same judgement from its store; and each kind of forged
    // bundle is refused by the ledger, the two only its signer can commit proving misbehaviour.
    const chain = await Chain.open({ dataDir: t.net.dataDirs[0]!, genesisFile, now: Date.now() });
    try {
      const replica = chain.replica;
      expect(hasPinnedEvidence(replica, BYZ)).toBe(true);
      expect(integrityOf(replica, BYZ)).toBe(0);
      expect(reputations(replica).find((r) => r.index === BYZ)?.reputation).toBe(0);
      for (const i of HONEST) expect(integrityOf(replica, i)).toBe(1);

      const honestKeys = (await readNodeConfig(t.net.configPaths[0]!, {})).keys;
      const author = new Author({
        keys: honestKeys,
        chainId: genesis.chainId,
        patients: chain.patientsOf(0),
        fee: genesis.params.minFee,
        random: systemRandom,
      });
      const fresh = author.makeBundle(replica, defaultLoadOpts)!;
      const now = Date.now();
      expect(chain.receiveBundle(fresh, now).verdict).toEqual({ ok: true });
      // Judged by a replica that holds no proof yet, so that a new proof shows.
      const unproved = { ...chain.replica, misbehaviour: new Map() };
      const byzKeys = (await readNodeConfig(t.net.configPaths[BYZ]!, FAULTS_ON)).keys;
      const forger = new Faults(faults, {
        self: BYZ,
        chainId: genesis.chainId,
        keys: byzKeys,
        others: HONEST,
        random: systemRandom,
        replica: () => unproved,
        patients: () => chain.patientsOf(BYZ),
        emit: () => {},
      });
      const expected = {
        'foreign-tx': ['UNAUTHORISED_INSTITUTION', true],
        'bad-opening': ['BAD_CHAMELEON_OPENING', true],
        'bad-signature': ['BAD_SIGNATURE', false],
      } as const;
      for (const kind of FORGED_KINDS) {
        const bundle = forger.forgeBundle(kind)!;
        expect(bundle, kind).not.toBeNull();
        const u = receiveBundle(unproved, bundle, now);
        const [code, blamed] = expected[kind];
        expect(u.verdict.ok ? 'OK' : u.verdict.error.code, kind).toBe(code);
        expect(
          u.misbehaviour.map((m) => [m.institution, m.code]),
          kind,
        ).toEqual(blamed ? [[BYZ, code]] : []);
      }
    } finally {
      await chain.close();
    }
  }, 150_000);
});
