/**
 * A/B in alternation: this checkout against another (BENCH_AB_OTHER, built: `npm ci && npm run
 * build` there, with the same migrations, as both serve the bench's one database). On a machine
 * whose speed drifts by 30% within the hour (seen on the 2-core VMs), two runs a minute apart
 * cannot show a 10% change; short bursts alternating between two services running side by side,
 * many rounds, the order flipped each round, can: each round's ratio compares two bursts seconds
 * apart. The same build on both sides reads within ~5% of 1.
 */
import fs from 'node:fs';
import path from 'node:path';
import { table } from './measure.js';

export type Side = 'this' | 'other';

export const AB_ROUNDS = Number(process.env.BENCH_AB_ROUNDS ?? 12);
export const AB_SECONDS = Number(process.env.BENCH_AB_SECONDS ?? 3);

/** The other checkout's root, checked to be built. */
export function otherCheckout(): string {
  const other = process.env.BENCH_AB_OTHER;
  if (!other) throw new Error('the whoami-ab and create-ab parts need BENCH_AB_OTHER: the other checkout (built) to compare with');
  const root = path.resolve(other);
  if (!fs.existsSync(path.join(root, 'dist/src/main.js'))) throw new Error(`BENCH_AB_OTHER=${root} has no dist/src/main.js: run npm ci && npm run build there`);
  return root;
}

/**
 * What a side starts with besides its checkout: for the other side, node flags
 * (BENCH_AB_OTHER_NODE_ARGS) and settings (BENCH_AB_OTHER_ENV, `NAME=value` pairs), space-separated;
 * nothing for this one. With BENCH_AB_OTHER=. this compares one build under two settings.
 */
export function sideStart(side: Side): { nodeArgs: string[]; env: Record<string, string> } {
  if (side === 'this') return { nodeArgs: [], env: {} };
  const words = (name: string) => process.env[name]?.split(/\s+/).filter(Boolean) ?? [];
  const env: Record<string, string> = {};
  for (const pair of words('BENCH_AB_OTHER_ENV')) {
    const match = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(pair);
    if (!match) throw new Error(`BENCH_AB_OTHER_ENV: ${pair} is not NAME=value`);
    env[match[1]!] = match[2]!;
  }
  return { nodeArgs: words('BENCH_AB_OTHER_NODE_ARGS'), env };
}

/** Says what the other side is, for the table's heading. */
export function otherSideName(root: string): string {
  const { nodeArgs, env } = sideStart('other');
  const extra = [...nodeArgs, ...Object.entries(env).map(([name, value]) => `${name}=${value}`)];
  return extra.length ? `${root} (${extra.join(' ')})` : root;
}

/** `measure(side, kind)` for every kind and both sides, `rounds` times, the sides' order flipped each round. */
export async function alternating<Kind extends string>(
  rounds: number,
  kinds: readonly Kind[],
  measure: (side: Side, kind: Kind) => Promise<number>,
): Promise<Record<Kind, Record<Side, number[]>>> {
  const values = Object.fromEntries(kinds.map((kind) => [kind, { this: [] as number[], other: [] as number[] }])) as Record<Kind, Record<Side, number[]>>;
  for (let round = 0; round < rounds; round++) {
    const order: Side[] = round % 2 === 0 ? ['this', 'other'] : ['other', 'this'];
    for (const kind of kinds) for (const side of order) values[kind][side].push(await measure(side, kind));
  }
  return values;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

/** One row per kind: each side's median and the median of the per-round ratios (this / other). */
export function abTable(unit: string, values: Record<string, Record<Side, number[]>>): string {
  const rows = Object.entries(values).map(([kind, bySide]) => {
    const ratios = bySide.this.map((value, i) => value / bySide.other[i]!);
    return [kind, median(bySide.other).toFixed(4), median(bySide.this).toFixed(4), median(ratios).toFixed(3), ratios.map((r) => r.toFixed(2)).join(' ')];
  });
  return table([`${unit}`, 'other (median)', 'this (median)', 'this / other (median of rounds)', 'each round'], rows);
}
