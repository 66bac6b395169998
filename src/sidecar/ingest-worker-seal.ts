/**
 * The per-record crypto of an ingest (ingest.ts), apart from its state and IO so that it can run
 * in a worker thread (ingest-worker.ts) as well as inline: encrypt the record to the patient's PRE
 * key (Umbral), pointer = SHA-256(ciphertext) (vault.ts), and the next record tx on this
 * institution's leaf (makeRecordTx: the trapdoor's collision), with its encoding and hash.
 *
 * The records of one task with the same patient block and `group` share one capsule (Umbral's
 * KEM, the costliest part of an encryption, once per group: `encryptMany`), each with its own
 * nonce. Whoever can open a capsule opens all its records, so a group must hold only records that
 * are always disclosed together: a grant covers all of a patient's records (authz/consent.ts), and
 * ingest.ts groups by resource type, so that a later grant narrowed by type still has a capsule
 * per type.
 *
 * Jobs run in order and continue each patient's block where the previous job left it, so the
 * result is the same whether a bundle is sealed here or in a worker. A label's target is either a
 * stored medical tx or, for a correction of a resource created earlier in the same bundle, the
 * index of that earlier job (its tx hash is known only once it is sealed).
 */
import type { RandomBytes } from '../crypto/random.ts';
import { encodeCapsule, encryptMany } from '../crypto/umbral/index.ts';
import { advanceLeaf, type InstitutionSecrets, makeRecordTxWithKey } from '../ledger/author.ts';
import { leafContext, type Microblock } from '../ledger/microblock.ts';
import { encodeTx, txHash } from '../ledger/tx.ts';
import type { Bytes, LabelTx, MedicalTx } from '../ledger/types.ts';
import { chameleonCheckKey } from '../ledger/verify-cache.ts';
import { pointerOf } from '../store/vault.ts';

export interface SealJob {
  /** Index into the task's blocks: the patient's block this record continues. */
  readonly block: number;
  readonly content: Uint8Array;
  /** null: a medical tx; bytes: a label on that tx; a number: a label on that earlier job's tx. */
  readonly target: Bytes | number | null;
  /** Jobs of one block and group share a capsule (see above). */
  readonly group: string;
}

export interface SealTask {
  readonly blocks: readonly Microblock[];
  readonly jobs: readonly SealJob[];
  readonly institution: InstitutionSecrets;
  readonly fee: number;
}

export interface Sealed {
  readonly capsule: Bytes;
  readonly ciphertext: Bytes;
  readonly pointer: Bytes;
  readonly tx: MedicalTx | LabelTx;
  readonly txHash: Bytes;
  readonly encodedTx: Bytes;
  /** The label's resolved target, null for a medical tx. */
  readonly target: Bytes | null;
  /**
   * The key of the chameleon check the collision passed here (ledger/verify-cache.ts): the thread
   * that runs the node remembers it, instead of checking the opening again.
   */
  readonly checked: string;
}

export interface SealTaskResult {
  readonly sealed: Sealed[];
  /** Each patient's block after the task's jobs. */
  readonly blocks: Microblock[];
}

/** Seals a task's jobs one by one (inline callers yield to the event loop between jobs). */
export class Sealer {
  readonly sealed: Sealed[] = [];
  readonly blocks: Microblock[];
  private readonly task: SealTask;
  private readonly random: RandomBytes;
  /** Per job, once its group is encrypted: its capsule (encoded) and ciphertext. */
  private readonly encrypted = new Map<number, { capsule: Bytes; ciphertext: Bytes }>();

  constructor(task: SealTask, random: RandomBytes) {
    this.task = task;
    this.blocks = [...task.blocks];
    this.random = random;
  }

  get done(): boolean {
    return this.sealed.length === this.task.jobs.length;
  }

  /** Seals the next job. */
  sealNext(): void {
    const n = this.sealed.length;
    const job = this.task.jobs[n];
    const block = this.blocks[job?.block ?? -1];
    if (job === undefined || block === undefined) {
      throw new RangeError(`seal job ${n}: no such job or block`);
    }
    const target = this.resolve(job.target, n);
    const { capsule, ciphertext } = this.encrypted.get(n) ?? this.encryptGroupOf(n);
    this.encrypted.delete(n);
    const pointer = pointerOf(ciphertext);
    const fields =
      target === null
        ? { type: 'medical' as const, pointer }
        : { type: 'label' as const, pointer, target };
    const tx = makeRecordTxWithKey(
      block,
      this.task.institution,
      fields,
      this.task.fee,
      this.random,
    );
    const advanced = advanceLeaf(block, tx);
    this.blocks[job.block] = advanced;
    const { index, chameleonKey } = this.task.institution;
    const ownLeaf = (b: Microblock) => b.leaves.find((l) => l.institution === index)!;
    this.sealed.push({
      // The inputs the collision was checked with: the leaf's digest, and the running hash after
      // the tx (advanceLeaf computed it; the digest does not change).
      checked: chameleonCheckKey(
        chameleonKey,
        leafContext(block.header.idHash, index),
        ownLeaf(advanced).running,
        ownLeaf(block).digest,
        tx.opening,
      ),
      capsule,
      ciphertext,
      pointer,
      tx,
      txHash: txHash(tx),
      encodedTx: encodeTx(tx),
      target,
    });
  }

  /** Encrypts job `n` and every later job of its block and group under one capsule. */
  private encryptGroupOf(n: number): { capsule: Bytes; ciphertext: Bytes } {
    const { jobs, blocks } = this.task;
    const job = jobs[n]!;
    const members: number[] = [];
    for (let k = n; k < jobs.length; k++) {
      if (jobs[k]!.block === job.block && jobs[k]!.group === job.group) members.push(k);
    }
    const { capsule, ciphertexts } = encryptMany(
      blocks[job.block]!.patientPreKey,
      members.map((k) => jobs[k]!.content),
      this.random,
    );
    const encoded = encodeCapsule(capsule);
    members.forEach((k, i) => {
      this.encrypted.set(k, { capsule: encoded, ciphertext: ciphertexts[i]! });
    });
    return this.encrypted.get(n)!;
  }

  private resolve(target: SealJob['target'], n: number): Bytes | null {
    if (typeof target !== 'number') return target;
    const earlier = this.sealed[target];
    if (earlier === undefined || target >= n) {
      throw new RangeError(`seal job ${n}: target job ${target} is not an earlier job`);
    }
    return earlier.target ?? earlier.txHash;
  }
}

/** Seals every job of a task at once (the worker's whole task). */
export function sealAll(task: SealTask, random: RandomBytes): SealTaskResult {
  const sealer = new Sealer(task, random);
  while (!sealer.done) sealer.sealNext();
  return { sealed: sealer.sealed, blocks: sealer.blocks };
}
