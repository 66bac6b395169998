/**
 * The validation worker (a piscina worker thread, see validate.ts): parses a resource's JSON text
 * and validates it with validate-core.ts, off the main event loop. The definitions are loaded when
 * the worker starts, so the first task does not pay for them.
 */
import { threadId } from 'node:worker_threads';
import type { OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import { loadFhirDefinitions, validateHere } from './validate-core.ts';

export interface ValidateTask {
  /** The resource as JSON text: cheaper to pass between threads than the parsed object. */
  readonly text: string;
}

export interface ValidateTaskResult {
  readonly issues: OperationOutcomeIssue[];
  /** The worker's thread id: tests and metrics tell where validation ran. */
  readonly threadId: number;
  readonly ms: number;
}

loadFhirDefinitions();

export default function validateTask(task: ValidateTask): ValidateTaskResult {
  const started = performance.now();
  const resource = JSON.parse(task.text) as Resource;
  const issues = validateHere(resource);
  return { issues, threadId, ms: performance.now() - started };
}
