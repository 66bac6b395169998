/**
 * FHIR R4 validation of what the EHR posts, kept off the event loop for large bundles.
 *
 * Validation costs roughly 0.3-0.5 ms per bundle entry (the largest Synthea bundle, 676 entries and
 * 0.8 MB as compact JSON, takes 0.25-0.4 s), and a sidecar that spends that long on its event loop
 * stops answering everyone else. So a bundle with more than `inlineMaxEntries` entries goes to a
 * small pool of worker threads (piscina, `threads` of them, each with its own copy of the
 * definitions) behind a bounded queue: when `maxQueue` bundles already wait, `validate` fails at
 * once with FhirError BUSY (HTTP 503 + Retry-After) instead of queueing without limit; while a
 * worker validates that bundle the main loop stalls for tens of milliseconds at most. Smaller
 * resources are validated inline: up to 32 entries (about 40 KiB) validation takes some 5-25 ms,
 * no more than the round trip to a worker costs (`npm run bench:validate`, which writes
 * bench/results/validate.json).
 *
 * The result is every issue found, as OperationOutcome issues (errors and warnings, each with its
 * FHIRPath `expression`); `ok` is false when any issue is an error.
 */
import { threadId } from 'node:worker_threads';
import type { Bundle, OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import { Piscina } from 'piscina';
import { FhirError } from './errors.ts';
import { hasErrors, loadFhirDefinitions, validateHere } from './validate-core.ts';
import type { ValidateTask, ValidateTaskResult } from './validate-worker.ts';

export interface ValidatorOpts {
  /** Bundles with at most this many entries (and all other resources) are validated inline. */
  readonly inlineMaxEntries: number;
  /** Worker threads (1 or 2: validation is CPU-bound and the machine is shared). */
  readonly threads: number;
  /** Large bundles that may wait for a worker before `validate` answers BUSY. */
  readonly maxQueue: number;
}

export const defaultValidatorOpts: ValidatorOpts = {
  inlineMaxEntries: 32,
  threads: 1,
  maxQueue: 16,
};

export interface ValidationResult {
  /** Every issue found; empty when the resource is valid. */
  readonly issues: readonly OperationOutcomeIssue[];
  /** No issue is an error (warnings allowed). */
  readonly ok: boolean;
  readonly ranIn: 'inline' | 'worker';
  /** The thread that validated (the main thread's id is 0). */
  readonly threadId: number;
  /** Time spent validating in that thread (excludes queueing and the trip to a worker). */
  readonly validateMs: number;
}

const WORKER_FILE = new URL('./validate-worker.ts', import.meta.url).href;
const WARM_UP = JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: [] });

export class FhirValidator {
  private readonly opts: ValidatorOpts;
  private pool: Piscina<ValidateTask, ValidateTaskResult> | undefined;
  private closed = false;

  constructor(opts: Partial<ValidatorOpts> = {}) {
    this.opts = { ...defaultValidatorOpts, ...opts };
    const { threads, maxQueue, inlineMaxEntries } = this.opts;
    if (!Number.isInteger(threads) || threads < 1 || threads > 2) {
      throw new RangeError(`validator threads must be 1 or 2, got ${threads}`);
    }
    if (!Number.isInteger(maxQueue) || maxQueue < 0) {
      throw new RangeError(`validator maxQueue must be a non-negative integer, got ${maxQueue}`);
    }
    if (!Number.isInteger(inlineMaxEntries) || inlineMaxEntries < 0) {
      throw new RangeError(`validator inlineMaxEntries must be >= 0, got ${inlineMaxEntries}`);
    }
  }

  /** Loads the definitions here and in every worker, so that no request waits for that. */
  async start(): Promise<void> {
    loadFhirDefinitions();
    const pool = this.workers();
    await Promise.all(Array.from({ length: this.opts.threads }, () => pool.run({ text: WARM_UP })));
  }

  /**
   * Validates a resource. `text`, if the caller has it, is the resource's JSON as received: a
   * worker is sent that instead of a fresh serialisation.
   */
  async validate(resource: Resource, text?: string): Promise<ValidationResult> {
    if (this.closed) throw new FhirError('INTERNAL', 'the validator is closed');
    const entries =
      resource.resourceType === 'Bundle' ? ((resource as Bundle).entry?.length ?? 0) : 0;
    if (entries <= this.opts.inlineMaxEntries) {
      const started = performance.now();
      const issues = validateHere(resource);
      return result(issues, 'inline', threadId, performance.now() - started);
    }
    const pool = this.workers();
    let done: ValidateTaskResult;
    try {
      done = await pool.run({ text: text ?? JSON.stringify(resource) });
    } catch (err) {
      if (QUEUE_FULL.includes((err as Error).message)) throw busy(this.opts.maxQueue);
      throw new FhirError('INTERNAL', 'a validation worker failed', {}, err);
    }
    return result(done.issues, 'worker', done.threadId, done.ms);
  }

  async close(): Promise<void> {
    this.closed = true;
    const pool = this.pool;
    this.pool = undefined;
    await pool?.destroy();
  }

  private workers(): Piscina<ValidateTask, ValidateTaskResult> {
    this.pool ??= new Piscina<ValidateTask, ValidateTaskResult>({
      filename: WORKER_FILE,
      minThreads: this.opts.threads,
      maxThreads: this.opts.threads,
      maxQueue: this.opts.maxQueue,
    });
    return this.pool;
  }
}

/** piscina's messages when its queue is full (maxQueue > 0) or absent (maxQueue 0). */
const QUEUE_FULL = ['Task queue is at limit', 'No task queue available and all Workers are busy'];

function result(
  issues: readonly OperationOutcomeIssue[],
  ranIn: 'inline' | 'worker',
  thread: number,
  validateMs: number,
): ValidationResult {
  return { issues, ok: !hasErrors(issues), ranIn, threadId: thread, validateMs };
}

function busy(maxQueue: number): FhirError {
  return new FhirError('BUSY', `validation is busy: ${maxQueue} large bundles are waiting`, {
    maxQueue,
  });
}
