import { nowOf, type CoreDeps } from './context.js';

/**
 * "Last seen" and "last used" times are for people reading a list, to the minute: written at
 * most once a minute per row, so a key used a hundred times a minute costs one write, not a
 * hundred (and, on this instance, no query at all in between).
 */
export const TOUCH_EVERY_MS = 60_000;
const MAX_REMEMBERED = 10_000;

// Per database (each app, and each test core, has its own), then per row.
const written = new WeakMap<object, Map<string, number>>();

/** True when `id` has not been written by this instance within the last minute; records the write. */
export function dueForTouch(deps: Pick<CoreDeps, 'db' | 'now'>, id: string): boolean {
  let rows = written.get(deps.db);
  if (!rows) written.set(deps.db, (rows = new Map()));
  const now = nowOf(deps).getTime();
  const last = rows.get(id);
  if (last !== undefined && now - last < TOUCH_EVERY_MS && now >= last) return false;
  if (rows.size >= MAX_REMEMBERED) rows.clear(); // a bound, not an LRU: forgetting costs one extra write
  rows.set(id, now);
  return true;
}
