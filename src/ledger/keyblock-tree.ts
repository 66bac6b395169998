/**
 * The keyblock tree: which keyblocks are known, which one is the head (fork choice), and which are
 * pinned. Pinned is final: a keyblock that does not descend from the latest pinned keyblock is
 * invalid (CONFLICTS_WITH_PINNED). Among the descendants of the pinned keyblock, the head is the tip
 * with the most cumulative work (ties: the smaller hash), so every node picks the same head.
 *
 * Pure and small: the tree keeps the unpinned keyblocks plus the few pinned ancestors the rules
 * still need (the retarget window and the i-2 link); the registered-patient set is asked through a
 * port, and pinning returns the newly final keyblocks for the caller to persist.
 */
import { toHex } from '../crypto/bytes.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { isLedgerError, LedgerError, OK, reject, type Verdict } from './errors.ts';
import {
  blockWork,
  expectedTarget,
  genesisHash,
  keyblockHash,
  keyblockTxRoot,
  searchNonce,
  signKeyblock,
  validateKeyblock,
  ZERO_HASH,
} from './keyblock.ts';
import { checkAdmits } from './membership.ts';
import { createMicroblock, microblockHash } from './microblock.ts';
import { checkTxStateless, verifyRegisterSignature } from './tx.ts';
import type { AdmitTx, Bytes, Genesis, Keyblock, Member } from './types.ts';

export interface KeyblockNode {
  readonly hash: Bytes;
  readonly id: string;
  readonly parent: string | null;
  readonly height: number;
  readonly time: number;
  readonly target: bigint;
  readonly work: bigint;
  /** G of the last patient block created at or below this height on this branch. */
  readonly lastMicroblock: Bytes;
  readonly keyblock: Keyblock | null;
}

export interface KeyblockTree {
  readonly genesis: Genesis;
  /** The members as of the pinned keyblock: the genesis members and those admitted since. */
  readonly roster: readonly Member[];
  readonly nodes: ReadonlyMap<string, KeyblockNode>;
  readonly pinned: string;
  readonly head: string;
}

/** Whether a patient (idHash, hex) is already registered in a pinned keyblock. */
export type RegisteredLookup = (idHashHex: string) => boolean;

export function createKeyblockTree(genesis: Genesis): KeyblockTree {
  const hash = genesisHash(genesis);
  const id = toHex(hash);
  const root: KeyblockNode = {
    hash,
    id,
    parent: null,
    height: 0,
    time: genesis.time,
    target: genesis.params.initialTarget,
    work: 0n,
    lastMicroblock: ZERO_HASH,
    keyblock: null,
  };
  return { genesis, roster: genesis.members, nodes: new Map([[id, root]]), pinned: id, head: id };
}

export function node(tree: KeyblockTree, id: string): KeyblockNode {
  const n = tree.nodes.get(id);
  if (!n) throw new LedgerError('WRONG_PARENT', `unknown keyblock ${id.slice(0, 16)}`);
  return n;
}

/** The ancestor of `from` at `height` (which must still be in the tree). */
export function ancestorAt(tree: KeyblockTree, from: KeyblockNode, height: number): KeyblockNode {
  let n = from;
  while (n.height > height) {
    if (n.parent === null) break;
    const p = tree.nodes.get(n.parent);
    if (!p) throw new LedgerError('WRONG_PARENT', `ancestor at height ${height} was pruned`);
    n = p;
  }
  return n;
}

function descendsFrom(tree: KeyblockTree, n: KeyblockNode, ancestor: KeyblockNode): boolean {
  return n.height >= ancestor.height && ancestorAt(tree, n, ancestor.height).id === ancestor.id;
}

/** What a keyblock at height parent+1 must carry: the target and the i-2 link. */
export function childRequirements(tree: KeyblockTree, parent: KeyblockNode) {
  const height = parent.height + 1;
  const target = expectedTarget(
    tree.genesis.params,
    height,
    parent.target,
    (h) => ancestorAt(tree, parent, h).time,
  );
  const i2Link = height >= 2 ? ancestorAt(tree, parent, height - 2).lastMicroblock : ZERO_HASH;
  return { height, target, i2Link };
}

function lastMicroblockOf(kb: Keyblock, parent: KeyblockNode): Bytes {
  const j = kb.registers.length - 1;
  const last = kb.registers[j];
  if (!last) return parent.lastMicroblock;
  return microblockHash({
    i: kb.height,
    j,
    idHash: last.idHash,
    home: last.home,
    rootDigest: last.rootDigest,
  });
}

/**
 * The patients (idHash, hex) registered on the branch from `from` up to, not including, the pinned
 * keyblock: registered for a child of `from`, though not yet in the pinned lookup.
 */
export function branchRegistrations(tree: KeyblockTree, from: KeyblockNode): Set<string> {
  const seen = new Set<string>();
  for (
    let n: KeyblockNode | undefined = from;
    n && n.id !== tree.pinned;
    n = n.parent ? tree.nodes.get(n.parent) : undefined
  ) {
    for (const tx of n.keyblock?.registers ?? []) seen.add(toHex(tx.idHash));
  }
  return seen;
}

/**
 * The members as of `from`: the pinned roster and the members admitted on the branch from the
 * pinned keyblock up to `from`, in admission order.
 */
export function rosterAt(tree: KeyblockTree, from: KeyblockNode): readonly Member[] {
  const branch: AdmitTx[][] = [];
  for (
    let n: KeyblockNode | undefined = from;
    n && n.id !== tree.pinned;
    n = n.parent ? tree.nodes.get(n.parent) : undefined
  ) {
    if (n.keyblock !== null && n.keyblock.admits.length > 0) branch.unshift([...n.keyblock.admits]);
  }
  return branch.length === 0
    ? tree.roster
    : [...tree.roster, ...branch.flat().map((a) => a.member)];
}

/**
 * Register txs: patient signature, fee, home member, the home's root opening (the patient block
 * the tx creates), and no patient registered twice.
 */
export function checkRegisters(
  tree: KeyblockTree,
  kb: Keyblock,
  parent: KeyblockNode,
  isRegistered: RegisteredLookup,
  roster: readonly Member[] = rosterAt(tree, parent),
): Verdict {
  const { genesis } = tree;
  const seen = branchRegistrations(tree, parent);
  const members = (i: number) => roster.find((m) => m.index === i);
  for (const [j, tx] of kb.registers.entries()) {
    const fee = checkTxStateless(tx, genesis.params.minFee);
    if (!fee.ok) return fee;
    if (members(tx.home) === undefined) {
      return reject('UNKNOWN_INSTITUTION', `register tx names unknown home institution ${tx.home}`);
    }
    const id = toHex(tx.idHash);
    if (seen.has(id) || isRegistered(id)) {
      return reject('DUPLICATE_PATIENT', 'patient is already registered', {
        idHash: id.slice(0, 16),
      });
    }
    seen.add(id);
    if (!verifyRegisterSignature(genesis.chainId, tx)) {
      return reject('BAD_SIGNATURE', 'register tx is not signed by the patient');
    }
    const made = createMicroblock(tx, { i: kb.height, j }, members);
    if (!made.ok) return made.verdict;
  }
  return OK;
}

function bestTip(
  tree: KeyblockTree,
  nodes: ReadonlyMap<string, KeyblockNode>,
  pinned: KeyblockNode,
): string {
  let best = pinned;
  for (const n of nodes.values()) {
    if (!descendsFrom({ ...tree, nodes }, n, pinned)) continue;
    if (n.work > best.work || (n.work === best.work && n.id < best.id)) best = n;
  }
  return best.id;
}

/** Adds a keyblock after checking it against its parent, the pinned keyblock and chain state. */
export function addKeyblock(
  tree: KeyblockTree,
  kb: Keyblock,
  now: number,
  isRegistered: RegisteredLookup,
): { tree: KeyblockTree; verdict: Verdict } {
  const fail = (verdict: Verdict) => ({ tree, verdict });
  const id = toHex(keyblockHash(kb));
  if (tree.nodes.has(id))
    return fail(reject('REPLAYED_TX', `keyblock ${kb.height} is already known`));
  const parent = tree.nodes.get(toHex(kb.prev));
  if (!parent) return fail(reject('WRONG_PARENT', `keyblock ${kb.height} has an unknown parent`));
  const pinned = node(tree, tree.pinned);
  if (!descendsFrom(tree, parent, pinned)) {
    return fail(
      reject(
        'CONFLICTS_WITH_PINNED',
        `keyblock ${kb.height} conflicts with pinned keyblock ${pinned.height}`,
      ),
    );
  }
  try {
    const req = childRequirements(tree, parent);
    const roster = rosterAt(tree, parent);
    const verdict = validateKeyblock(kb, {
      genesis: tree.genesis,
      roster,
      parentHash: parent.hash,
      parentHeight: parent.height,
      parentTime: parent.time,
      expectedTarget: req.target,
      expectedI2Link: req.i2Link,
      now,
    });
    if (!verdict.ok) return fail(verdict);
    const registers = checkRegisters(tree, kb, parent, isRegistered, roster);
    if (!registers.ok) return fail(registers);
    const admits = checkAdmits(tree.genesis.chainId, roster, kb.admits).verdict;
    if (!admits.ok) return fail(admits);
  } catch (err) {
    if (isLedgerError(err)) return fail({ ok: false, error: err });
    throw err;
  }
  const nodes = new Map(tree.nodes).set(id, childNode(parent, kb));
  return { tree: { ...tree, nodes, head: bestTip(tree, nodes, pinned) }, verdict: OK };
}

function childNode(parent: KeyblockNode, kb: Keyblock): KeyblockNode {
  const hash = keyblockHash(kb);
  return {
    hash,
    id: toHex(hash),
    parent: parent.id,
    height: kb.height,
    time: kb.time,
    target: kb.target,
    work: parent.work + blockWork(kb.target),
    lastMicroblock: lastMicroblockOf(kb, parent),
    keyblock: kb,
  };
}

/**
 * Adds and pins the next keyblock of the pinned chain WITHOUT validating it: for a node replaying
 * its own store, whose keyblocks were validated and certified when they were pinned. The keyblock
 * must name the pinned keyblock as its parent (else WRONG_PARENT is thrown: the store is damaged).
 */
export function adoptPinned(tree: KeyblockTree, kb: Keyblock): KeyblockTree {
  const pinned = node(tree, tree.pinned);
  if (toHex(kb.prev) !== pinned.id || kb.height !== pinned.height + 1) {
    throw new LedgerError(
      'WRONG_PARENT',
      `keyblock ${kb.height} does not extend pinned keyblock ${pinned.height}`,
    );
  }
  const child = childNode(pinned, kb);
  const nodes = new Map(tree.nodes).set(child.id, child);
  return pinKeyblock({ ...tree, nodes }, child.id).tree;
}

/**
 * Pins a keyblock (its certificate was checked by the caller): it must descend from the current
 * pinned keyblock. Branches that do not contain it are dropped, and so are pinned ancestors the
 * rules no longer need. Returns the keyblocks that became final, oldest first.
 */
export function pinKeyblock(
  tree: KeyblockTree,
  id: string,
): { tree: KeyblockTree; verdict: Verdict; finalised: Keyblock[] } {
  const target = tree.nodes.get(id);
  if (!target)
    return {
      tree,
      verdict: reject('WRONG_PARENT', 'cannot pin an unknown keyblock'),
      finalised: [],
    };
  const pinned = node(tree, tree.pinned);
  if (!descendsFrom(tree, target, pinned)) {
    return {
      tree,
      verdict: reject('CONFLICTS_WITH_PINNED', 'cannot pin a keyblock off the pinned branch'),
      finalised: [],
    };
  }
  const finalised: Keyblock[] = [];
  for (let n: KeyblockNode = target; n.id !== pinned.id; n = node(tree, n.parent!)) {
    if (n.keyblock) finalised.unshift(n.keyblock);
  }
  const keepFrom = Math.max(0, target.height - tree.genesis.params.retargetWindow - 2);
  const nodes = new Map<string, KeyblockNode>();
  for (const n of tree.nodes.values()) {
    const onPinnedChain =
      n.height <= target.height && ancestorAt(tree, target, n.height).id === n.id;
    if (descendsFrom(tree, n, target) || (onPinnedChain && n.height >= keepFrom))
      nodes.set(n.id, n);
  }
  // The oldest kept ancestor loses its parent link (the store has it); the rules never go below it.
  const admitted = finalised.flatMap((kb) => kb.admits.map((a) => a.member));
  const roster = admitted.length === 0 ? tree.roster : [...tree.roster, ...admitted];
  const next: KeyblockTree = { ...tree, roster, nodes, pinned: id, head: id };
  return { tree: { ...next, head: bestTip(next, nodes, target) }, verdict: OK, finalised };
}

export function headNode(tree: KeyblockTree): KeyblockNode {
  return node(tree, tree.head);
}

export function pinnedNode(tree: KeyblockTree): KeyblockNode {
  return node(tree, tree.pinned);
}

/**
 * Builds and mines a keyblock on `parentId` (bounded: null if no nonce below the target was found
 * in `attempts` tries, so the caller can retry later with a fresh time or more attempts).
 */
export function mineKeyblock(
  tree: KeyblockTree,
  opts: {
    parentId: string;
    miner: { index: number; signingKey: Bytes; signingSecret: Bytes };
    registers: readonly Keyblock['registers'][number][];
    admits?: readonly AdmitTx[];
    time: number;
    startNonce?: number;
    attempts: number;
    random?: RandomBytes;
  },
): Keyblock | null {
  const parent = node(tree, opts.parentId);
  const req = childRequirements(tree, parent);
  const header = {
    height: req.height,
    prev: parent.hash,
    i2Link: req.i2Link,
    txRoot: keyblockTxRoot(opts.registers, opts.admits),
    miner: opts.miner.index,
    time: opts.time,
    target: req.target,
    nonce: 0,
  };
  const nonce = searchNonce(header, opts.miner.signingKey, opts.startNonce ?? 0, opts.attempts);
  if (nonce === null) return null;
  return signKeyblock(
    tree.genesis.chainId,
    { ...header, nonce },
    opts.registers,
    opts.miner.signingSecret,
    opts.random,
    opts.admits,
  );
}
