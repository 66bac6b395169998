/**
 * A bounded FIFO of async jobs run one at a time: every input that reads and then changes the
 * consensus state or the pinned chain (a BFT message, a timeout, a decision being persisted, a
 * synced page) goes through one queue, so no job sees another's half-done work across an await.
 * Callers await their job (a network handler awaiting it gives the stream backpressure).
 */
import { NodeError } from './errors.ts';

export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private waiting = 0;
  private readonly max: number;
  private closed = false;

  constructor(max: number) {
    this.max = max;
  }

  /** Jobs queued or running. */
  get size(): number {
    return this.waiting;
  }

  /** Runs `job` after every job queued before it; BUSY when `max` jobs wait, STOPPED once closed. */
  run<T>(job: () => T | Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new NodeError('STOPPED', 'node is stopping'));
    if (this.waiting >= this.max) {
      return Promise.reject(new NodeError('BUSY', `${this.waiting} jobs are waiting`));
    }
    this.waiting++;
    const run = this.tail.then(() =>
      this.closed ? Promise.reject(new NodeError('STOPPED', 'node is stopping')) : job(),
    );
    const done = run.finally(() => {
      this.waiting--;
    });
    this.tail = done.catch(() => undefined);
    return done;
  }

  /** Refuses new jobs and resolves once the running one (if any) has finished. */
  async close(): Promise<void> {
    this.closed = true;
    await this.tail;
  }
}
