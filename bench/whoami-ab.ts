/**
 * `whoami-ab`: this checkout against another (BENCH_AB_OTHER, built: `npm ci && npm run build`
 * there), served side by side from one database and driven in turn. On a machine whose speed
 * drifts by 30% within the hour (seen on the 2-core VMs), two runs a minute apart cannot show a
 * 10% change; short bursts alternating between the two services, many rounds, with the order
 * flipped each round, can: each round's ratio compares two bursts seconds apart.
 *
 * Both services as `npm run bench` starts its own (WORKERS=1, metrics, access lines at info,
 * JSON to a pipe), key cache on, no failure budget (a bad key is answered 401, not counted). Per
 * round and per service: wrk -t2 -c32 for BENCH_AB_SECONDS (3) with the valid key, then with a bad
 * checksum; server CPU per request from /proc. Prints each side's median and the median of the
 * per-round ratios (this / other). BENCH_AB_ROUNDS (12). Both checkouts must have the same
 * migrations: they share the bench's database.
 */
import fs from 'node:fs';
import path from 'node:path';
import { cpuMsOf, table } from './measure.js';
import { startCompiledService, type CompiledService } from './service.js';
import { runWrk, withBadChecksum } from './whoami.js';

const ROOT = path.resolve(import.meta.dirname, '..');

export async function benchWhoamiAb(options: { databaseUrl: string; work: string; apiKey: string; other: string }): Promise<void> {
  const seconds = Number(process.env.BENCH_AB_SECONDS ?? 3);
  const rounds = Number(process.env.BENCH_AB_ROUNDS ?? 12);
  const other = path.resolve(options.other);
  if (!fs.existsSync(path.join(other, 'dist/src/main.js'))) throw new Error(`BENCH_AB_OTHER=${other} has no dist/src/main.js: run npm ci && npm run build there`);
  const sides = { this: ROOT, other };
  const started: Partial<Record<keyof typeof sides, CompiledService>> = {};
  try {
    for (const [name, root] of Object.entries(sides) as Array<[keyof typeof sides, string]>) {
      const work = path.join(options.work, `ab-${name}`);
      fs.mkdirSync(work, { recursive: true });
      started[name] = await startCompiledService({
        root,
        databaseUrl: options.databaseUrl,
        work,
        detached: true,
        env: { WORKERS: '1', METRICS_PORT: '0', LOG_FORMAT: 'json', HTTP_LOOKUPS_PER_MINUTE: '0' },
      });
    }
    const services = started as Record<keyof typeof sides, CompiledService>;
    const kinds = { cached: options.apiKey, 'bad checksum': withBadChecksum(options.apiKey) };
    const perRequest: Record<string, Record<keyof typeof sides, number[]>> = {};
    for (const kind of Object.keys(kinds)) perRequest[kind] = { this: [], other: [] };
    for (const service of Object.values(services)) await runWrk(service.httpUrl, options.apiKey, 1, null); // warm-up
    for (let round = 0; round < rounds; round++) {
      const order: Array<keyof typeof sides> = round % 2 === 0 ? ['this', 'other'] : ['other', 'this'];
      for (const [kind, key] of Object.entries(kinds)) {
        for (const side of order) {
          const pid = services[side].child.pid!;
          const before = cpuMsOf(pid);
          const result = await runWrk(services[side].httpUrl, key, seconds, null);
          const expectedFailures = kind === 'cached' ? 0 : result.requests;
          if (result.non2xx !== expectedFailures || result.socketErrors > 0) {
            throw new Error(`${side} answered ${result.non2xx} of ${result.requests} ${kind} requests with non-2xx (expected ${expectedFailures}), ${result.socketErrors} socket errors`);
          }
          perRequest[kind]![side].push((cpuMsOf(pid) - before) / result.requests);
        }
      }
    }
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
    const rows = Object.entries(perRequest).map(([kind, bySide]) => {
      const ratios = bySide.this.map((value, i) => value / bySide.other[i]!);
      return [kind, median(bySide.other).toFixed(4), median(bySide.this).toFixed(4), median(ratios).toFixed(3), ratios.map((r) => r.toFixed(2)).join(' ')];
    });
    console.log(`\nwhoami A/B: this checkout vs ${other}, ${rounds} rounds of ${seconds} s bursts (wrk -t2 -c32), alternating`);
    console.log(table(['requests', 'other: server CPU ms/req (median)', 'this', 'this / other (median of rounds)', 'each round'], rows));
  } finally {
    for (const service of Object.values(started)) {
      try {
        process.kill(-service.child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}
