/** Durations as people type them: `90s`, `15m`, `1h`, `30d`, `2w`, or combined like `5d4h`. */

const UNIT_MS: Record<string, number> = {
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

const MAX_DURATION_MS = 100 * 365 * 86_400_000;
const DURATION_PATTERN = /^(?:\d+[smhdw])+$/;

/** Milliseconds for a duration string, or null when it is not one. `0` is zero. */
export function parseDuration(input: string): number | null {
  const text = input.trim().toLowerCase();
  if (text === '0') return 0;
  if (!DURATION_PATTERN.test(text)) return null;
  let total = 0;
  for (const [, amount, unit] of text.matchAll(/(\d+)([smhdw])/g)) {
    total += Number(amount) * UNIT_MS[unit!]!;
  }
  // Beyond a century is a typo, and past what timestamps can hold if added to now.
  return total <= MAX_DURATION_MS ? total : null;
}

/** Short human form, largest units first: 90061000 -> "1d1h1m1s". */
export function formatDuration(ms: number): string {
  if (ms <= 0) return '0s';
  let rest = Math.floor(ms / 1000) * 1000;
  let out = '';
  for (const unit of ['w', 'd', 'h', 'm', 's']) {
    const size = UNIT_MS[unit]!;
    const count = Math.floor(rest / size);
    if (count > 0) {
      out += `${count}${unit}`;
      rest -= count * size;
    }
  }
  return out || '0s';
}

/** A lifetime as people set them: whole days as days (30d, not 4w2d), anything else as formatDuration. */
export function formatLifetime(ms: number): string {
  const day = UNIT_MS.d!;
  return ms > 0 && ms % day === 0 ? `${ms / day}d` : formatDuration(ms);
}
