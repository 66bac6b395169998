/**
 * Admitting an institution to a running network, the way operators do it: four institutions in
 * node processes on 127.0.0.1; a fifth makes its keys and its admission request with `spchain
 * init --index 4`; members 0, 1 and 2 approve it (`spchain member approve`), member 1 submits it
 * (`spchain member submit`) to its node's inbox; the keyblock admitting it is pinned alike at
 * every node; the new institution's node starts from the genesis file and its admission, syncs
 * the chain, is dialled by the members (none of whose peers files names it), pins what they pin,
 * and mines a keyblock the others pin; all five restart from their stores and go on together. A
 * request with a forged approval is refused with the reason.
 * Conditions are polled with generous bounds; the processes are killed in afterAll.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initInstitution } from '../../src/cli/init.ts';
import { approveAdmissionFile, submitAdmissionFile } from '../../src/cli/member.ts';
import { fromHex, toHex } from '../../src/crypto/bytes.ts';
import { signAdmitRequest } from '../../src/ledger/membership.ts';
import { formatAdmissionFile, parseAdmissionFile } from '../../src/node/admission-file.ts';
import { parseGenesisFile } from '../../src/node/genesis-file.ts';
import { openInstitutionKeys } from '../../src/node/keys.ts';
import { findFreePorts } from '../../src/node/localnet.ts';
import { peersFromJson } from '../../src/p2p/index.ts';
import { type Cluster, type NodeLine, openTestNet, type TestNet, waitFor } from './cluster.ts';

const WAIT_MS = 120_000;
const env = {};
const quiet = () => {};

let testNet: TestNet;
let cluster: Cluster;
let joinDir: string;

beforeAll(async () => {
  testNet = await openTestNet({
    institutions: 4,
    patientsPerInstitution: 1,
    kdf: { N: 2 ** 10, r: 8, p: 1 },
    load: { txPerSecond: 4, txsPerBundle: 2 },
    // Five seats: the new institution takes the fifth once the chunk admitting it is complete.
    params: { keyblockIntervalMs: 2000, chunkSize: 3, groupSize: 5 },
  });
  cluster = testNet.cluster;
  joinDir = join(testNet.dir, 'inst-4');
}, 60_000);

afterAll(() => testNet?.close());

const keyblockLines = (i: number) => cluster.nodes[i]!.lines.filter((l) => l.event === 'keyblock');
const pinnedKeyblock = (i: number) =>
  Math.max(0, ...keyblockLines(i).map((l) => l.height as number));
const admittedAt = (i: number): NodeLine | undefined =>
  keyblockLines(i).find((l) => (l.admitted as number[]).includes(4));

describe('admitting an institution to a running network', () => {
  it('admits it through init, approve and submit, and pins the admission alike', async () => {
    cluster.startAll();
    await waitFor(
      () => [0, 1, 2, 3].every((i) => pinnedKeyblock(i) >= 2),
      'the four members to pin keyblocks',
      WAIT_MS,
      cluster,
    );
    const { genesisPath, peersPath, configPaths } = testNet.net;
    const [port] = await findFreePorts(1);
    await initInstitution({ dir: joinDir, name: 'St Elsewhere', env, print: quiet });
    await initInstitution({
      dir: joinDir,
      genesis: genesisPath,
      peers: peersPath,
      index: 4,
      listen: `/ip4/127.0.0.1/tcp/${port}`,
      env,
      print: quiet,
    });
    const admission = join(joinDir, 'admission.json');
    const opts = (i: number) => ({ admission, nodeConfig: configPaths[i]!, env, print: quiet });
    // Requests the joining institution signs with a peer record that is not its own (another
    // member's peer id, a binding it did not make): not approved.
    const { chainId, tx } = parseAdmissionFile(await readFile(admission, 'utf8'), admission);
    const { genesis } = parseGenesisFile(await readFile(genesisPath, 'utf8'), genesisPath);
    const known = { ...genesis, members: [...genesis.members, tx.member] };
    const keyFile = join(joinDir, 'institution.key.json');
    const passphrase = (await readFile(join(joinDir, 'passphrase'), 'utf8')).trim();
    const keys = await openInstitutionKeys(
      await readFile(keyFile, 'utf8'),
      passphrase,
      known,
      4,
      keyFile,
    );
    const peers = peersFromJson(JSON.parse(await readFile(peersPath, 'utf8')));
    const resigned = async (peer: typeof tx.peer) => {
      const proof = signAdmitRequest(chainId, tx.member, peer, keys.signingSecret);
      const path = join(testNet.dir, 'bad-peer-admission.json');
      await writeFile(path, formatAdmissionFile({ chainId, tx: { ...tx, peer, proof } }));
      return approveAdmissionFile({ ...opts(0), admission: path });
    };
    await expect(resigned({ ...tx.peer, peerId: peers[2]!.peerId })).rejects.toThrow(
      /peer record is refused/,
    );
    await expect(resigned({ ...tx.peer, binding: tx.proof })).rejects.toThrow(
      /peer record is refused: binding is not member 4's signature/,
    );
    await approveAdmissionFile(opts(0));
    // Two of four is not more than 2/3: not submitted.
    await expect(submitAdmissionFile(opts(1))).rejects.toThrow(/not enough approvals yet/);
    await approveAdmissionFile(opts(2));
    await approveAdmissionFile(opts(1));
    const request = JSON.parse(await readFile(admission, 'utf8'));
    expect(request.approvals.map((a: { member: number }) => a.member)).toEqual([0, 1, 2]);

    // A copy with a forged approval goes to node 3's inbox: refused, with the reason.
    const forged = structuredClone(request);
    const sig = fromHex(forged.approvals[2].signature);
    sig[10]! ^= 1;
    forged.approvals[2].signature = toHex(sig);
    const inbox3 = join(testNet.net.dataDirs[3]!, 'admissions');
    await submitAdmissionFile({ ...opts(3), admission: await writeTemp(forged) });
    await waitFor(
      () => cluster.nodes[3]!.lines.some((l) => l.event === 'admission'),
      'node 3 to judge the forged request',
      WAIT_MS,
      cluster,
    );
    const refused = cluster.nodes[3]!.lines.find((l) => l.event === 'admission');
    expect(refused).toMatchObject({ outcome: 'refused', member: 4 });
    expect(refused!.reason as string).toMatch(/BAD_SIGNATURE: .*approval by 2 does not verify/);
    expect((await readdir(inbox3)).some((n) => n.endsWith('.json.refused'))).toBe(true);

    await submitAdmissionFile(opts(1));
    await waitFor(
      () => [0, 1, 2, 3].every((i) => admittedAt(i) !== undefined),
      'the keyblock admitting member 4 at every member',
      WAIT_MS,
      cluster,
    );
    const at = new Set([0, 1, 2, 3].map((i) => `${admittedAt(i)!.height}:${admittedAt(i)!.hash}`));
    expect(at.size).toBe(1);
    await waitFor(
      () =>
        cluster.nodes[1]!.lines.some((l) => l.event === 'admission' && l.outcome === 'admitted'),
      'node 1 to mark the admission file admitted',
      WAIT_MS,
      cluster,
    );
    expect(cluster.fatal).toEqual([]);
    expect(cluster.conflicts).toEqual([]);
  }, 300_000);

  it('runs the new institution: synced, dialled by the members, pinning and mining with them', async () => {
    const joined = cluster.add(join(joinDir, 'config.json'));
    cluster.start(joined.index);
    const target = Math.max(...[0, 1, 2, 3].map(pinnedKeyblock));
    await waitFor(
      () => pinnedKeyblock(4) >= target && joined.height >= cluster.nodes[1]!.height - 2,
      'the new institution to sync the keyblocks and batches',
      WAIT_MS,
      cluster,
    );
    await waitFor(
      () =>
        (joined.connected() ?? []).length === 4 &&
        [0, 1, 2, 3].every((i) => (cluster.nodes[i]!.connected() ?? []).includes(4)),
      'the members and the new institution to connect',
      WAIT_MS,
      cluster,
    );
    await waitFor(
      () => keyblockLines(0).some((l) => l.miner === 4),
      'a keyblock mined by the new institution, pinned by the others',
      WAIT_MS,
      cluster,
    );
    const h = Math.min(...[0, 1, 2, 3, 4].map(pinnedKeyblock));
    const hashes = new Set(
      [0, 1, 2, 3, 4].map((i) => keyblockLines(i).find((l) => l.height === h)?.hash),
    );
    expect(hashes.size).toBe(1);
    expect(cluster.fatal).toEqual([]);
    expect(cluster.conflicts).toEqual([]);
    expect(cluster.misbehaviour).toEqual([]);
    // It holds a seat now (groupSize 5), so it pins batches by consensus, not only by sync.
    await waitFor(
      () => joined.consensusPins > 0,
      'the new institution to pin a batch by consensus',
      WAIT_MS,
      cluster,
    );
    expect(cluster.warnings.filter((w) => /PENALISED|BANNED/.test(w))).toEqual([]);
  }, 300_000);

  it('keeps the admission across a restart of every node', async () => {
    await cluster.stopAll('SIGTERM');
    const heights = cluster.nodes.map((n) => n.height);
    const keyblocks = [0, 1, 2, 3, 4].map(pinnedKeyblock);
    cluster.startAll();
    await waitFor(
      () =>
        cluster.nodes.every(
          (n, i) => n.height > heights[i]! && pinnedKeyblock(i) > keyblocks[i]!,
        ) && cluster.nodes.every((n) => (n.connected() ?? []).length === 4),
      'all five to reconnect and pin batches and keyblocks again',
      WAIT_MS,
      cluster,
    );
    // Started again from their stores: member 4 is known from the replayed keyblock alone.
    const started = cluster.nodes.map((n) => n.lines.findLast((l) => l.event === 'started'));
    expect(started.every((l) => (l?.keyblockHeight as number) >= keyblocks[0]! - 1)).toBe(true);
    expect(cluster.fatal).toEqual([]);
    expect(cluster.conflicts).toEqual([]);
    expect(cluster.warnings.filter((w) => /PENALISED|BANNED|REFUSED_PEER/.test(w))).toEqual([]);
  }, 300_000);
});

async function writeTemp(json: unknown): Promise<string> {
  const path = join(testNet.dir, 'forged-admission.json');
  await writeFile(path, `${JSON.stringify(json, null, 2)}\n`);
  return path;
}
