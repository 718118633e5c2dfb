import { escapeUnsafeChars } from '../core/text.js';

/**
 * A string from the database on its way to a person's terminal: control, bidi and zero-width
 * characters (and broken UTF-16) are shown as `\uXXXX`, so no stored label, org name or email,
 * however old, can move the cursor, recolour the screen or reorder what is displayed.
 * JSON output needs none of this: JSON escapes on its own.
 */
export function escapeForTerminal(text: string): string {
  return escapeUnsafeChars(text);
}

/**
 * Plain aligned columns, like `docker ps`: for people; scripts use --json. Every cell is escaped.
 * With `fit`, the table is kept within `width` characters by narrowing the `shrink` columns (the
 * widest first, none below `min`), their long cells cut with `…`.
 */
export function formatTable(headers: string[], rows: string[][], fit?: { width: number; shrink: number[]; min: number }): string {
  if (rows.length === 0) return '(none)';
  const safeHeaders = headers.map(escapeForTerminal);
  let safeRows = rows.map((row) => row.map((cell) => escapeForTerminal(cell ?? '')));
  const widths = safeHeaders.map((h, i) => Math.max(h.length, ...safeRows.map((r) => (r[i] ?? '').length)));
  if (fit) {
    const total = () => widths.reduce((sum, w) => sum + w, 0) + 2 * (widths.length - 1);
    for (let excess = total() - fit.width; excess > 0; excess--) {
      const widest = fit.shrink.filter((i) => widths[i]! > Math.max(fit.min, safeHeaders[i]!.length)).sort((a, b) => widths[b]! - widths[a]!)[0];
      if (widest === undefined) break;
      widths[widest]!--;
    }
    safeRows = safeRows.map((row) => row.map((cell, i) => (cell.length > widths[i]! ? `${cutAt(cell, widths[i]! - 1)}…` : cell)));
  }
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(safeHeaders), ...safeRows.map(line)].join('\n');
}

/** The first `n` UTF-16 units of `text`, one fewer rather than half a surrogate pair. */
function cutAt(text: string, n: number): string {
  const code = text.charCodeAt(n - 1);
  return text.slice(0, code >= 0xd800 && code <= 0xdbff ? n - 1 : n);
}

export function isoOrDash(value: Date | string | null | undefined): string {
  return value === null || value === undefined ? '-' : new Date(value).toISOString();
}
