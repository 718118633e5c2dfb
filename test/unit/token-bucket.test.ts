import { expect, it } from 'vitest';
import { TokenBuckets } from '../../src/limits/token-buckets.js';

it('token buckets: a burst, then the refill rate, per address', () => {
  let now = 0;
  const buckets = new TokenBuckets(2, 3, () => now); // 2 a second, burst 3
  expect([1, 2, 3, 4].map(() => buckets.take('a'))).toEqual([true, true, true, false]);
  expect(buckets.take('b')).toBe(true);
  now += 499;
  expect(buckets.take('a')).toBe(false);
  now += 1; // half a second: one token back
  expect(buckets.take('a')).toBe(true);
  expect(buckets.take('a')).toBe(false);
  now += 60_000; // never more than the burst
  expect([1, 2, 3, 4].map(() => buckets.take('a'))).toEqual([true, true, true, false]);
});

it('token buckets: many addresses still spending are bounded, and a take does not walk them all each time', () => {
  let now = 0;
  const buckets = new TokenBuckets(1, 2, () => now);
  for (let i = 0; i < 30_000; i++) {
    buckets.take(`10.0.${i >> 8}.${i & 255}`);
    buckets.take(`10.0.${i >> 8}.${i & 255}`); // spent: no sweep can drop it as full
    if (i % 1_000 === 0) now += 1_001;
  }
  const size = (buckets as unknown as { buckets: Map<string, unknown> }).buckets.size;
  expect(size).toBeLessThanOrEqual(11_000);
  const started = performance.now();
  for (let i = 0; i < 20_000; i++) buckets.take(`10.1.${i >> 8}.${i & 255}`); // within one second: at most one sweep
  expect(performance.now() - started).toBeLessThan(1_000);
});
