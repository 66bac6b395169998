/**
 * Keyed locks: an async job holds every key it names, and jobs that share no key run in parallel.
 * Keys are taken one at a time in sorted order, so two jobs that want overlapping sets cannot
 * each hold a key the other waits for (no deadlock). Waiters on one key are served in order.
 */
export class KeyedLocks {
  private readonly tails = new Map<string, Promise<void>>();

  /** Runs `job` once it holds all `keys`; releases them when it settles. */
  async with<T>(keys: Iterable<string>, job: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(keys)].sort();
    const releases: (() => void)[] = [];
    try {
      for (const key of sorted) releases.push(await this.lock(key));
      return await job();
    } finally {
      for (const release of releases.reverse()) release();
    }
  }

  /** Keys held or waited for (for tests and stats). */
  get size(): number {
    return this.tails.size;
  }

  private async lock(key: string): Promise<() => void> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    await previous;
    return () => {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    };
  }
}
