import { expect, it } from 'vitest';
import { TokenBuckets } from '../src/ssh/token-bucket.js';

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
