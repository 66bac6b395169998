/** The simulations' virtual-time event queue: a binary min-heap on (at, seq). */
export interface Queued<E> {
  readonly at: number;
  readonly seq: number;
  readonly event: E;
}

function before<E>(a: Queued<E>, b: Queued<E>): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

/** Events at equal times come out in insertion order, so runs are deterministic. */
export class EventQueue<E> {
  private readonly heap: Queued<E>[] = [];
  private seq = 0;

  get size(): number {
    return this.heap.length;
  }

  push(at: number, event: E): void {
    const h = this.heap;
    h.push({ at, seq: this.seq++, event });
    for (let i = h.length - 1; i > 0; ) {
      const p = (i - 1) >> 1;
      if (!before(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  pop(): Queued<E> | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last !== undefined) {
      h[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        let m = i;
        if (l < h.length && before(h[l]!, h[m]!)) m = l;
        if (l + 1 < h.length && before(h[l + 1]!, h[m]!)) m = l + 1;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}
