/**
 * Runs one request's work and leaves its AuditEvent (audit.ts) whether it succeeds or fails: the
 * success with the entities and patients the result names, a failure with its status and issue
 * codes (outcome.ts), and then the failure is thrown on.
 */
import type { AuditInteraction, AuditLog } from './audit.ts';
import { outcomeOf } from './outcome.ts';
import type { RequestContext } from './transaction.ts';

export interface AuditedCall<T> {
  readonly interaction: AuditInteraction;
  readonly ctx: RequestContext;
  /** The status of a success (from the result, or known before). */
  readonly status: number | ((result: T) => number);
  /** `Type/id` or `Type/id/_history/v`, from the result or known before. */
  readonly entities?: readonly string[] | ((result: T) => readonly string[]);
  /** `Patient/id`. */
  readonly patients?: readonly string[] | ((result: T) => readonly string[]);
  readonly now: () => number;
}

export async function audited<T>(
  audit: Pick<AuditLog, 'record'>,
  call: AuditedCall<T>,
  act: () => Promise<T>,
): Promise<T> {
  const { ctx } = call;
  const pick = (v: AuditedCall<T>['entities'], result: T | undefined) =>
    v === undefined ? [] : typeof v === 'function' ? (result === undefined ? [] : v(result)) : v;
  const record = (status: number, result: T | undefined, failure?: string) =>
    audit.record({
      interaction: call.interaction,
      agent: ctx.agent,
      status,
      entities: pick(call.entities, result),
      patients: pick(call.patients, result),
      requestId: ctx.requestId,
      ...(failure === undefined ? {} : { failure }),
      now: call.now(),
    });
  let result: T;
  try {
    result = await act();
  } catch (err) {
    const o = outcomeOf(err);
    await record(o.status, undefined, o.outcome.issue?.map((i) => i.code).join(',') ?? 'error');
    throw err;
  }
  await record(typeof call.status === 'function' ? call.status(result) : call.status, result);
  return result;
}
