import { expect, it } from 'vitest';
import { FixedWindows } from '../../src/limits/fixed-windows.js';

it('per-address budget: counts within a minute, tells how long to wait, resets after the window', () => {
  let now = 1_000_000;
  const windows = new FixedWindows(2, () => now);
  expect(windows.takeOrWait('a')).toBeNull();
  expect(windows.takeOrWait('a')).toBeNull();
  now += 15_000;
  expect(windows.takeOrWait('a')).toBe(45);
  expect(windows.takeOrWait('b')).toBeNull();
  now += 45_000;
  expect(windows.takeOrWait('a')).toBeNull();
});
