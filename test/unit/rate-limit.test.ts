import { expect, it } from 'vitest';
import { PerIpRateLimiter } from '../../src/http/rate-limit.js';

it('per-address budget: counts within a minute, tells how long to wait, resets after the window', () => {
  let now = 1_000_000;
  const limiter = new PerIpRateLimiter(2, () => now);
  expect(limiter.take('a')).toBeNull();
  expect(limiter.take('a')).toBeNull();
  now += 15_000;
  expect(limiter.take('a')).toBe(45);
  expect(limiter.take('b')).toBeNull();
  now += 45_000;
  expect(limiter.take('a')).toBeNull();
});
