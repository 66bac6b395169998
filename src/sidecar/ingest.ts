/**
 * Ingest: one FHIR bundle's records become durable ciphertexts and signed txs, all or nothing
 * (DESIGN section 7, step 1).
 *
 * For each record: find the patient (UNKNOWN_PATIENT, UNREGISTERED_PATIENT, NO_LEAF), encrypt the
 * resource to the patient's PRE key (Umbral), pointer = SHA-256(ciphertext), and sign the next tx
 * on this institution's leaf of the patient's block: a medical tx for a new resource, a label tx
 * for a correction (an update of a stored resource, or a record naming the resource it corrects in
 * `correctionOf`). Then ONE atomic LevelDB batch writes the ciphertexts, the record index (resource
 * -> versions; patient -> resources), the author state and the outbox entry of every tx. The
 * caller acknowledges the bundle only once `ingest` resolves; the txs then go to the queue in the
 * background (`handOverSoon`; the outbox hands them over again after a crash, outbox.ts).
 *
 * The per-record crypto (encryption, pointer, the collision that signs the tx: ingest-worker-seal.ts)
 * is most of an ingest's CPU; a bundle with at least `workerMinRecords` new records is sealed in a
 * worker thread (ingest-worker.ts, randomness from the system CSPRNG there), in one message per
 * bundle, so the event loop keeps serving other requests meanwhile. Planning (which records are new,
 * their versions and label targets) and the one atomic write stay here, under the locks.
 *
 * Idempotent: a record whose resource's latest stored version has the same content hash
 * (canonical.ts) makes no tx and returns the stored version ('unchanged'), so re-posting a bundle
 * is harmless.
 *
 * Concurrency: an ingest holds keyed locks on its patients and resources for its whole run, so
 * ingests of one patient are serialised (each continues the leaf where the previous left it) and
 * ingests of different patients run in parallel.
 *
 * A label's target: the ledger lets a label correct only a medical tx, so every correction of a
 * resource targets the resource's latest medical tx (normally its first version's); a reader
 * applies the label with the highest seq.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { Piscina } from 'piscina';
import { equalBytes, toHex } from '../crypto/bytes.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { systemRandom } from '../crypto/random.ts';
import type { InstitutionSecrets } from '../ledger/author.ts';
import type { Microblock } from '../ledger/microblock.ts';
import type { Bytes } from '../ledger/types.ts';
import { rememberChameleonCheck } from '../ledger/verify-cache.ts';
import { authorBase, authorStateOf, ownLeaf } from './author-view.ts';
import { contentHash, parseResource } from './canonical.ts';
import {
  decodeAuthorState,
  decodeResourceEntry,
  encodeAuthorState,
  encodeResourceEntry,
  MAX_ID_LENGTH,
  MAX_VERSION_LENGTH,
  patientRecordKey,
  type RecordKind,
  type ResourceEntry,
  resourceKey,
  type VersionEntry,
} from './entries.ts';
import { SidecarError } from './errors.ts';
import { Sealer, type SealJob, type SealTask, type SealTaskResult } from './ingest-worker-seal.ts';
import { KeyedLocks } from './locks.ts';
import type { OwnTxEntry, TxLog } from './outbox.ts';
import type { PatientIdentifier, PatientRegistry } from './patients.ts';
import type { EnqueuePort, Warn } from './ports.ts';
import type { SidecarStore, WriteOp } from './store.ts';

export interface ResourceRef {
  readonly resourceType: string;
  readonly id: string;
}

/** One record of a bundle, as the FHIR mapping hands it over. */
export interface IngestRecord extends ResourceRef {
  /** The patient, by an identifier linked to them in the registry (patients.ts). */
  readonly patient: PatientIdentifier;
  /** The version id to record; default: the resource's stored version count + 1. */
  readonly version?: string;
  /**
   * The record as FHIR JSON (UTF-8): the resource itself (its id, if any, must match), or a
   * document holding it, such as the mapper's collection Bundle of the record's resources.
   */
  readonly content: Uint8Array;
  /** The stored resource this record corrects, when it is not the record's own resource. */
  readonly correctionOf?: ResourceRef;
}

/** created: a new resource; updated: a new version of a stored one; unchanged: idempotent. */
export type IngestOutcome = 'created' | 'updated' | 'unchanged';

export interface IngestResult extends ResourceRef {
  readonly version: string;
  readonly outcome: IngestOutcome;
  readonly kind: RecordKind;
  /** The record's tx (hex): its anchoring status is anchor.ts `status(txHash)`. */
  readonly txHash: string;
  /** The ciphertext's vault address (hex). */
  readonly pointer: string;
}

export interface IngestOpts {
  /** Records per ingest (a Synthea patient's bundle reaches 1,111 entries). */
  readonly maxRecords: number;
  /** Bytes of one resource's JSON. */
  readonly maxRecordBytes: number;
  /** The fee each tx offers (at least the chain's minFee). */
  readonly fee: number;
  /** Yield to the event loop after this many records' crypto (when sealed inline). */
  readonly yieldEvery: number;
  /**
   * Worker threads for the records' crypto (0: all inline). Used only with the system's
   * randomness (deps.random unset): an injected RandomBytes cannot cross threads.
   */
  readonly cryptoThreads: number;
  /** Bundles with fewer new records than this are sealed inline (not worth a worker's trip). */
  readonly workerMinRecords: number;
}

export const defaultIngestOpts: Omit<IngestOpts, 'fee'> = {
  maxRecords: 10_000,
  maxRecordBytes: 16 * 1024 * 1024,
  yieldEvery: 32,
  cryptoThreads: 1,
  workerMinRecords: 8,
};

const WORKER_FILE = new URL('./ingest-worker.ts', import.meta.url).href;

/**
 * `stage` runs under the ingest's locks once every record is planned, with the results, and may
 * stage more writes into the ingest's one atomic batch (the HTTP edge's own copy of what its EHR
 * sent, its AuditEvent): they land together with the records or not at all. Throwing from it
 * fails the ingest with nothing written.
 */
export interface IngestHooks {
  readonly stage?: (results: readonly IngestResult[], ops: WriteOp[]) => void | Promise<void>;
  /** Receives the wall time of each stage of the ingest (the request's Server-Timing). */
  readonly timings?: { add(stage: string, ms: number): void };
}

export interface IngestDeps {
  readonly store: SidecarStore;
  readonly patients: PatientRegistry;
  readonly txLog: TxLog;
  readonly queue: EnqueuePort;
  /** This institution: its index, chameleon hash key and trapdoor. */
  readonly institution: InstitutionSecrets;
  readonly random?: RandomBytes;
  readonly warn?: Warn;
}

const RESOURCE_TYPE = /^[A-Z][A-Za-z]{0,63}$/;
const FHIR_ID = new RegExp(`^[A-Za-z0-9\\-.]{1,${MAX_ID_LENGTH}}$`);
const VERSION = new RegExp(`^[A-Za-z0-9\\-.]{1,${MAX_VERSION_LENGTH}}$`);

/** A record after the checks that need no state. */
interface Checked {
  readonly index: number;
  readonly record: IngestRecord;
  /** How errors name it: entry index, type and id (never content or patient). */
  readonly where: string;
  readonly key: Bytes;
  readonly keyHex: string;
  readonly contentHash: Bytes;
  readonly correction: { readonly key: Bytes; readonly keyHex: string } | null;
}

/** Per patient in one ingest: the block its records continue. */
interface PatientPlan {
  readonly idHash: Bytes;
  readonly block: Microblock;
}

function invalid(where: string, problem: string): SidecarError {
  return new SidecarError('INVALID_RECORD', `${where}: ${problem}`, { where });
}

function checkRef(ref: unknown, where: string, field: string): ResourceRef {
  const r = ref as Partial<ResourceRef> | null;
  if (typeof r !== 'object' || r === null) throw invalid(where, `${field} must be an object`);
  if (typeof r.resourceType !== 'string' || !RESOURCE_TYPE.test(r.resourceType)) {
    throw invalid(where, `${field}.resourceType must be a FHIR resource type name`);
  }
  if (typeof r.id !== 'string' || !FHIR_ID.test(r.id)) {
    throw invalid(where, `${field}.id must be a FHIR id ([A-Za-z0-9-.]{1,64})`);
  }
  return { resourceType: r.resourceType, id: r.id };
}

export class Ingestor {
  private readonly deps: IngestDeps;
  private readonly opts: IngestOpts;
  private readonly random: RandomBytes;
  private readonly locks = new KeyedLocks();
  private pool: Piscina<SealTask, SealTaskResult> | undefined;
  /** The background hand-over (handOverSoon), and whether another run is wanted after it. */
  private handing: Promise<void> | null = null;
  private handAgain = false;
  /** Bundles sealed so far, by where their crypto ran (metrics and tests). */
  readonly sealedBundles = { worker: 0, inline: 0 };

  constructor(deps: IngestDeps, opts: Pick<IngestOpts, 'fee'> & Partial<IngestOpts>) {
    if (!Number.isSafeInteger(opts.fee) || opts.fee < 0) {
      throw new RangeError(`fee: expected an integer >= 0, got ${opts.fee}`);
    }
    this.deps = deps;
    this.opts = { ...defaultIngestOpts, ...opts };
    this.random = deps.random ?? systemRandom;
  }

  /**
   * Ingests one bundle's records, all or nothing: resolves with one result per record (in order)
   * once everything is durable, or rejects with a SidecarError naming the first failing record,
   * having written nothing.
   */
  async ingest(records: readonly IngestRecord[], hooks: IngestHooks = {}): Promise<IngestResult[]> {
    const lap = lapper(hooks);
    const checked = this.check(records);
    const idHashes = await Promise.all(
      checked.map((c) => this.deps.patients.idHashOf(c.record.patient, c.where)),
    );
    const keys = new Set<string>();
    for (const [k, c] of checked.entries()) {
      keys.add(`p:${toHex(idHashes[k]!)}`);
      keys.add(`r:${c.keyHex}`);
      if (c.correction !== null) keys.add(`r:${c.correction.keyHex}`);
    }
    lap('check');
    const { results, own } = await this.locks.with(keys, () => {
      lap('lock-patient');
      return this.write(checked, idHashes, hooks, lap);
    });
    if (own.length > 0) this.handOverSoon();
    return results;
  }

  /**
   * Starts handing the outbox to the queue in the background, after the ingest has answered: its
   * txs are durable in the outbox already (they were written in the ingest's batch, and a restart
   * hands them over again), so the EHR need not wait for the queue. One hand-over runs at a time;
   * ingests that finish during it are handed over together by one more run right after it. The
   * sidecar's timer (core.ts) calls it too, while the outbox holds txs a failed run left.
   */
  handOverSoon(): void {
    if (this.handing !== null) {
      this.handAgain = true;
      return;
    }
    this.handing = (async () => {
      do {
        this.handAgain = false;
        await this.handOver();
      } while (this.handAgain);
    })().finally(() => {
      this.handing = null;
    });
  }

  /** Whether a background hand-over is running. */
  get handingOver(): boolean {
    return this.handing !== null;
  }

  /** Resolves once no background hand-over is running (for shutdown, metrics and tests). */
  async handedOver(): Promise<void> {
    while (this.handing !== null) await this.handing;
  }

  /**
   * Hands the outbox to the queue. A failure is reported (warn) and leaves the txs in the outbox:
   * the records are durable, and the next ingest or `handOver` call tries again.
   */
  async handOver(): Promise<void> {
    try {
      await this.deps.txLog.handOver(this.deps.queue);
    } catch (err) {
      this.deps.warn?.(
        'HANDOVER_FAILED',
        `queue refused ${this.deps.txLog.outboxSize} outbox txs: ${(err as Error).message}`,
      );
    }
  }

  /** Shape checks, content hashes and in-bundle duplicates; no state read. */
  private check(records: readonly IngestRecord[]): Checked[] {
    if (!Array.isArray(records) || records.length === 0) {
      throw invalid('bundle', 'has no records');
    }
    if (records.length > this.opts.maxRecords) {
      throw invalid(
        'bundle',
        `has ${records.length} records, above the limit ${this.opts.maxRecords}`,
      );
    }
    const seen = new Map<string, number>();
    return records.map((record, index): Checked => {
      const at = `entry ${index}`;
      const { resourceType, id } = checkRef(record, at, 'record');
      const where = `${at} (${resourceType}/${id})`;
      if (
        record.version !== undefined &&
        (typeof record.version !== 'string' || !VERSION.test(record.version))
      ) {
        throw invalid(where, 'version must be a FHIR id ([A-Za-z0-9-.]{1,64})');
      }
      const content = record.content;
      if (!(content instanceof Uint8Array) || content.length === 0) {
        throw invalid(where, 'content must be non-empty FHIR JSON bytes');
      }
      if (content.length > this.opts.maxRecordBytes) {
        throw invalid(where, `content exceeds ${this.opts.maxRecordBytes} bytes`);
      }
      const parsed = parseResource(content);
      if (!parsed.ok) throw invalid(where, `content ${parsed.problem}`);
      const own = parsed.resource.resourceType === resourceType;
      if (own && parsed.resource.id !== undefined && parsed.resource.id !== id) {
        throw invalid(where, 'content id differs from the record');
      }
      let hash: Bytes;
      try {
        hash = contentHash(parsed.resource);
      } catch {
        throw invalid(where, 'content has no canonical JSON form');
      }
      const key = resourceKey(resourceType, id);
      const keyHex = toHex(key);
      const first = seen.get(keyHex);
      if (first !== undefined) throw invalid(where, `repeats the resource of entry ${first}`);
      seen.set(keyHex, index);
      let correction: Checked['correction'] = null;
      if (record.correctionOf !== undefined) {
        const ref = checkRef(record.correctionOf, where, 'correctionOf');
        const ck = resourceKey(ref.resourceType, ref.id);
        correction = { key: ck, keyHex: toHex(ck) };
      }
      return { index, record, where, key, keyHex, contentHash: hash, correction };
    });
  }

  /**
   * Under the locks: plans every record, seals the new ones (ingest-worker-seal.ts, in a worker
   * for a large bundle), then writes everything in one batch.
   */
  private async write(
    checked: readonly Checked[],
    idHashes: readonly Bytes[],
    hooks: IngestHooks,
    lap: (stage: string) => void,
  ): Promise<{ results: IngestResult[]; own: OwnTxEntry[] }> {
    const { store, institution, txLog } = this.deps;
    const plans = await this.loadPlans(checked, idHashes);
    const entries = await this.loadResources(checked);
    lap('plan');
    const planList = [...plans.values()];
    const planIndex = new Map(planList.map((p, n) => [toHex(p.idHash), n]));
    const jobs: SealJob[] = [];
    const jobOf = new Map<string, { n: number; idHash: Bytes }>();
    /** Per record: its stored version ('unchanged') or its job. */
    const slots: Array<{ unchanged: VersionEntry } | { job: number; entry?: ResourceEntry }> = [];
    for (const [k, c] of checked.entries()) {
      const idHash = idHashes[k]!;
      const entry = entries.get(c.keyHex);
      if (entry !== undefined && !equalBytes(entry.idHash, idHash)) {
        throw new SidecarError(
          'PATIENT_MISMATCH',
          `${c.where}: the resource belongs to another patient`,
          { where: c.where },
        );
      }
      const latest = entry?.versions.at(-1);
      if (latest !== undefined && equalBytes(latest.contentHash, c.contentHash)) {
        slots.push({ unchanged: latest });
        continue;
      }
      const target = this.targetOf(c, entry, entries, idHash, jobOf, jobs);
      jobOf.set(c.keyHex, { n: jobs.length, idHash });
      slots.push(entry === undefined ? { job: jobs.length } : { job: jobs.length, entry });
      jobs.push({
        block: planIndex.get(toHex(idHash))!,
        content: c.record.content,
        target,
        group: c.record.resourceType,
      });
    }
    const { sealed, blocks } = await this.seal({
      blocks: planList.map((p) => p.block),
      jobs,
      institution,
      fee: this.opts.fee,
    });
    lap('seal');
    const ops: WriteOp[] = [];
    const own: OwnTxEntry[] = [];
    const changed = new Map<string, Bytes>();
    const results: IngestResult[] = [];
    for (const [k, c] of checked.entries()) {
      const slot = slots[k]!;
      if ('unchanged' in slot) {
        results.push(resultOf(c.record, slot.unchanged, 'unchanged'));
        continue;
      }
      const s = sealed[slot.job]!;
      rememberChameleonCheck(s.checked);
      const pointer = store.vault.stage(ops, { capsule: s.capsule, ciphertext: s.ciphertext });
      if (!equalBytes(pointer, s.pointer)) throw new Error(`${c.where}: sealed pointer mismatch`);
      own.push(txLog.stage(ops, s.txHash, s.encodedTx));
      const { entry } = slot;
      const version: VersionEntry = {
        version: c.record.version ?? String((entry?.versions.length ?? 0) + 1),
        kind: s.tx.type,
        txHash: s.txHash,
        pointer,
        contentHash: c.contentHash,
        target: s.target,
      };
      const idHash = idHashes[k]!;
      entries.set(c.keyHex, { idHash, versions: [...(entry?.versions ?? []), version] });
      if (entry === undefined) {
        store.put(ops, 'patientRecord', patientRecordKey(idHash, c.key), new Uint8Array(0));
      }
      changed.set(c.keyHex, c.key);
      results.push(resultOf(c.record, version, entry === undefined ? 'created' : 'updated'));
    }
    for (const [keyHex, key] of changed) {
      store.put(ops, 'resource', key, encodeResourceEntry(entries.get(keyHex)!));
    }
    const moved = new Set(jobs.map((j) => j.block));
    for (const [n, plan] of planList.entries()) {
      const block = blocks[n]!;
      if (moved.has(n)) {
        store.put(
          ops,
          'author',
          plan.idHash,
          encodeAuthorState(authorStateOf(block, institution.index)),
        );
      }
    }
    lap('index');
    await hooks.stage?.(results, ops);
    lap('stage');
    await store.write(ops);
    txLog.committed(own);
    lap('write');
    return { results, own };
  }

  /**
   * Seals the jobs: in the worker pool when there is one, the deps bring no randomness of their
   * own and the bundle has at least `workerMinRecords` new records; else here, yielding to the
   * event loop every `yieldEvery` records.
   */
  private async seal(task: SealTask): Promise<SealTaskResult> {
    if (task.jobs.length === 0) return { sealed: [], blocks: [...task.blocks] };
    if (
      this.opts.cryptoThreads > 0 &&
      this.deps.random === undefined &&
      task.jobs.length >= this.opts.workerMinRecords
    ) {
      this.pool ??= new Piscina<SealTask, SealTaskResult>({
        filename: WORKER_FILE,
        minThreads: this.opts.cryptoThreads,
        maxThreads: this.opts.cryptoThreads,
      });
      try {
        const done = await this.pool.run(task);
        this.sealedBundles.worker++;
        return done;
      } catch (err) {
        throw new Error('an ingest crypto worker failed', { cause: err });
      }
    }
    const sealer = new Sealer(task, this.random);
    while (!sealer.done) {
      sealer.sealNext();
      if (sealer.sealed.length % this.opts.yieldEvery === 0) await yieldToLoop();
    }
    this.sealedBundles.inline++;
    return { sealed: sealer.sealed, blocks: sealer.blocks };
  }

  /** Waits for the background hand-over and stops the crypto workers (a later large ingest starts them again). */
  async close(): Promise<void> {
    await this.handedOver();
    const pool = this.pool;
    this.pool = undefined;
    await pool?.destroy();
  }

  /** Each patient's registration, leaf check and author view. */
  private async loadPlans(
    checked: readonly Checked[],
    idHashes: readonly Bytes[],
  ): Promise<Map<string, PatientPlan>> {
    const { patients, store, institution } = this.deps;
    const plans = new Map<string, PatientPlan>();
    for (const [k, c] of checked.entries()) {
      const idHash = idHashes[k]!;
      const hex = toHex(idHash);
      if (plans.has(hex)) continue;
      const reg = await patients.registered(idHash, c.where);
      if (ownLeaf(reg.block, institution.index) === undefined) {
        throw new SidecarError(
          'NO_LEAF',
          `${c.where}: this institution has no leaf in the patient's block (no upload grant: the patient runs \`patient allow-upload\` at their home institution)`,
          { where: c.where },
        );
      }
      const state = await store.read('author', idHash, decodeAuthorState);
      const base = authorBase(reg.block, institution.index, state);
      if (base.diverged) {
        this.deps.warn?.(
          'AUTHOR_STATE_DIVERGED',
          `patient block ${reg.ref.i}/${reg.ref.j}: the pinned leaf is not where this institution's own txs left it; unpinned own txs for it cannot be pinned`,
        );
      }
      plans.set(hex, { idHash, block: base.block });
    }
    return plans;
  }

  /** The stored entries of every resource the records name or correct. */
  private async loadResources(checked: readonly Checked[]): Promise<Map<string, ResourceEntry>> {
    const keys = new Map<string, Bytes>();
    for (const c of checked) {
      keys.set(c.keyHex, c.key);
      if (c.correction !== null) keys.set(c.correction.keyHex, c.correction.key);
    }
    const list = [...keys];
    const stored = await this.deps.store.spaces.resource.getMany(list.map(([, key]) => key));
    const out = new Map<string, ResourceEntry>();
    list.forEach(([hex, key], n) => {
      const value = stored[n];
      if (value !== undefined) {
        out.set(hex, this.deps.store.decodeStored('resource', key, value, decodeResourceEntry));
      }
    });
    return out;
  }

  /**
   * The medical tx a record corrects, or null for a new resource: the resource named by
   * `correctionOf`, else the record's own resource when it is stored already (an update). A
   * resource written earlier in this bundle (`jobOf`) is corrected through that job's tx.
   */
  private targetOf(
    c: Checked,
    entry: ResourceEntry | undefined,
    entries: ReadonlyMap<string, ResourceEntry>,
    idHash: Bytes,
    jobOf: ReadonlyMap<string, { readonly n: number; readonly idHash: Bytes }>,
    jobs: readonly SealJob[],
  ): SealJob['target'] {
    const earlier = c.correction === null ? undefined : jobOf.get(c.correction.keyHex);
    if (earlier !== undefined) {
      if (!equalBytes(earlier.idHash, idHash)) {
        throw new SidecarError(
          'PATIENT_MISMATCH',
          `${c.where}: correctionOf names a resource of another patient`,
          { where: c.where },
        );
      }
      return jobs[earlier.n]!.target ?? earlier.n;
    }
    const corrected = c.correction === null ? entry : entries.get(c.correction.keyHex);
    if (c.correction === null && corrected === undefined) return null;
    if (corrected === undefined) {
      throw new SidecarError(
        'UNKNOWN_RESOURCE',
        `${c.where}: correctionOf names a resource this institution does not hold`,
        { where: c.where },
      );
    }
    if (!equalBytes(corrected.idHash, idHash)) {
      throw new SidecarError(
        'PATIENT_MISMATCH',
        `${c.where}: correctionOf names a resource of another patient`,
        { where: c.where },
      );
    }
    return medicalTarget(corrected);
  }
}

/**
 * The medical tx a correction of this resource targets: the latest version's tx if it is a
 * medical tx, else the medical tx that (label) version corrects.
 */
function medicalTarget(entry: ResourceEntry): Bytes {
  const latest = entry.versions.at(-1);
  if (latest === undefined) throw new RangeError('a stored resource has no versions');
  return latest.kind === 'medical' ? latest.txHash : latest.target!;
}

/** A function that adds the time since its previous call to a stage (nothing without timings). */
function lapper(hooks: IngestHooks): (stage: string) => void {
  const timings = hooks.timings;
  if (timings === undefined) return () => {};
  let last = performance.now();
  return (stage) => {
    const now = performance.now();
    timings.add(stage, now - last);
    last = now;
  };
}

function resultOf(ref: ResourceRef, v: VersionEntry, outcome: IngestOutcome): IngestResult {
  return {
    resourceType: ref.resourceType,
    id: ref.id,
    version: v.version,
    outcome,
    kind: v.kind,
    txHash: toHex(v.txHash),
    pointer: toHex(v.pointer),
  };
}
