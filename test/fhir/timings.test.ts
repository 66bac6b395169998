import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseServerTiming, Timings } from '../../src/fhir/timings.ts';

describe('Server-Timing', () => {
  it('adds up stages of one name, times failures too, and writes the header', async () => {
    let now = 0;
    const t = new Timings(() => now);
    await t.time('validate', async () => {
      now += 12.34;
    });
    t.add('seal', 5);
    t.add('seal', 2.5);
    await expect(
      t.time('write', async () => {
        now += 3;
        throw new Error('disk full');
      }),
    ).rejects.toThrow('disk full');
    expect(t.header()).toBe('validate;dur=12.3, seal;dur=7.5, write;dur=3.0');
    expect(new Timings().header()).toBe('');
  });

  it('refuses a stage name that is not an HTTP token', () => {
    expect(() => new Timings().add('a b', 1)).toThrow(/token/);
    expect(() => new Timings().add('x;dur=1', 1)).toThrow(/token/);
  });

  it('parses what it writes, and skips what is not a duration', () => {
    expect([...parseServerTiming('a;dur=1.5, b;desc="x";dur=2, c, d;dur=x, ;dur=3')]).toEqual([
      ['a', 1.5],
      ['b', 2],
    ]);
    fc.assert(
      fc.property(
        fc.dictionary(fc.stringMatching(/^[a-z][a-z-]{0,9}$/), fc.integer({ min: 0, max: 1e6 })),
        (stages) => {
          const t = new Timings();
          for (const [k, ms] of Object.entries(stages)) t.add(k, ms / 10);
          const back = parseServerTiming(t.header());
          expect([...back.keys()]).toEqual(Object.keys(stages));
          for (const [k, ms] of Object.entries(stages)) expect(back.get(k)).toBeCloseTo(ms / 10, 1);
        },
      ),
    );
  });
});
