/**
 * `whoami-ab` (bench/ab.ts says why alternating): this checkout's service and the other's, as
 * `npm run bench` starts its own (WORKERS=1, metrics, access lines at info, JSON to a pipe), key
 * cache on (`BENCH_AB_KEY_CACHE=off`: API_KEY_CACHE_TTL=0 on both, every valid key looked up),
 * no failure budget (a bad key is answered 401, not counted). Per round and per service: wrk
 * -t2 -c32 for BENCH_AB_SECONDS with the valid key, then with a bad checksum; server CPU per
 * request from /proc. Any unexpected status stops the run.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { AB_ROUNDS, AB_SECONDS, abTable, alternating, otherCheckout, otherSideName, sideStart } from './ab.js';
import { cpuMsOf } from './measure.js';
import { killGroup, startCompiledService, type CompiledService } from './service.js';
import { runWrk, withBadChecksum } from './whoami.js';

const ROOT = path.resolve(import.meta.dirname, '..');

export async function benchWhoamiAb(options: { databaseUrl: string; work: string; apiKey: string }): Promise<void> {
  const roots = { this: ROOT, other: otherCheckout() };
  const spawned: ChildProcess[] = [];
  const cacheOff = process.env.BENCH_AB_KEY_CACHE === 'off';
  const valid = cacheOff ? 'uncached' : 'cached';
  try {
    const services = {} as Record<keyof typeof roots, CompiledService>;
    for (const side of ['this', 'other'] as const) {
      const work = path.join(options.work, `whoami-ab-${side}`);
      fs.mkdirSync(work, { recursive: true });
      const extra = sideStart(side);
      services[side] = await startCompiledService({
        root: roots[side],
        nodeArgs: extra.nodeArgs,
        databaseUrl: options.databaseUrl,
        work,
        detached: true,
        spawned: (child) => spawned.push(child),
        env: { WORKERS: '1', METRICS_PORT: '0', LOG_FORMAT: 'json', HTTP_LOOKUPS_PER_MINUTE: '0', ...(cacheOff ? { API_KEY_CACHE_TTL: '0' } : {}), ...extra.env },
      });
    }
    const badKey = withBadChecksum(options.apiKey);
    for (const service of Object.values(services)) await runWrk(service.httpUrl, options.apiKey, 1, null); // warm-up
    const values = await alternating(AB_ROUNDS, [valid, 'bad checksum'], async (side, kind) => {
      const pid = services[side].child.pid!;
      const before = cpuMsOf(pid);
      const result = await runWrk(services[side].httpUrl, kind === valid ? options.apiKey : badKey, AB_SECONDS, null);
      const expectedFailures = kind === valid ? 0 : result.requests;
      if (result.non2xx !== expectedFailures || result.socketErrors > 0) {
        throw new Error(`${side} answered ${result.non2xx} of ${result.requests} ${kind} requests with non-2xx (expected ${expectedFailures}), ${result.socketErrors} socket errors`);
      }
      return (cpuMsOf(pid) - before) / result.requests;
    });
    console.log(`\nwhoami A/B: this checkout vs ${otherSideName(roots.other)}, ${AB_ROUNDS} rounds of ${AB_SECONDS} s bursts (wrk -t2 -c32), alternating`);
    console.log(abTable('server CPU ms/request', values));
  } finally {
    for (const child of spawned) if (child.pid) killGroup(child.pid, 'SIGKILL');
  }
}
