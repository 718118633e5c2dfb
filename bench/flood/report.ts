import { percentile } from '../measure.js';

/** One timed probe of the service while it is attacked (/healthz, or an honest ssh). */
export type Probe = { t: number; ms: number; ok: boolean; detail: string };

// How the flood bench reports: Markdown tables, latencies as p50 / p95 (or p99) / max.

export const mb = (kb: number) => (Number.isFinite(kb) ? (kb / 1024).toFixed(0) : '?');
export const ms = (v: number) => (Number.isFinite(v) ? (v >= 100 ? v.toFixed(0) : v.toFixed(1)) : '–');

/** Failed requests count at the time they took to fail (a lower bound), so a stall is not hidden. */
export function latencySummary(probes: Probe[]) {
  const all = probes.map((p) => p.ms);
  const sorted = [...all].sort((a, b) => a - b);
  const failed = probes.filter((p) => !p.ok).length;
  const max = all.length ? Math.max(...all) : NaN;
  return {
    n: probes.length,
    failed,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    max,
    text: `${ms(percentile(sorted, 50))} / ${ms(percentile(sorted, 95))} / ${ms(max)} (n=${probes.length}${failed ? `, ${failed} failed` : ''})`,
    text99: `${ms(percentile(sorted, 50))} / ${ms(percentile(sorted, 99))} / ${ms(max)} (n=${probes.length}${failed ? `, ${failed} failed` : ''})`,
    failures: [...new Set(probes.filter((p) => !p.ok).map((p) => p.detail))].map(
      (detail) => `${probes.filter((p) => !p.ok && p.detail === detail).length}× ${detail}`,
    ),
  };
}

export const within = <T extends { t: number }>(items: T[], from: number, to: number) => items.filter((i) => i.t >= from && i.t < to);

/** A Markdown table, as the README's results are. */
export function markdownTable(headers: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n');
}
