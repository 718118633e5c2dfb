import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { freshPostgresUrl } from '../support/database.js';
import { killSpawnedServices, spawnService } from '../support/service.js';
import { childrenOf, until } from '../support/processes.js';

// Under WORKERS the primary's scrape adds up the workers' metrics: right for the service's
// counters, wrong for a process's own figures (two workers' open-file limits of 20,000 read
// 40,000). Those carry a `worker` label instead, one series per worker.

afterAll(killSpawnedServices);

/** A process's soft limit on open files, as the kernel reports it. */
const openFileLimit = (pid: number) => Number(/^Max open files\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'))![1]);

/** `name{labels} value` lines of an exposition, for one metric name. */
const samples = (text: string, name: string) =>
  [...text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, 'gm'))].map((m) => ({ labels: m[1] ?? '', value: Number(m[2]) }));

describe('WORKERS=2 metrics', () => {
  it('process metrics are per worker (label worker="1", "2"), not summed; the service\'s counters are summed', async () => {
    const service = spawnService({ WORKERS: '2', METRICS_PORT: '0', DATABASE_URL: await freshPostgresUrl() });
    const { output } = service;
    await until(() => /"msg":"HTTP API listening"/.test(output()) && childrenOf(service.child.pid!).length === 2, 'workers listening', output);
    // Before the change each worker said its own line; wait for both either way.
    await until(() => output().includes('"workers":2,"msg":"HTTP API listening"') || output().split('"msg":"HTTP API listening"').length - 1 >= 2, 'both workers', output);
    const metricsUrl = /"url":"(http:\/\/[^"]+\/metrics)"/.exec(output())![1]!;
    const limits = childrenOf(service.child.pid!).map(openFileLimit);
    expect(new Set(limits).size).toBe(1);

    const text = await (await fetch(metricsUrl)).text();
    expect(samples(text, 'process_max_fds').sort((a, b) => a.labels.localeCompare(b.labels))).toEqual([
      { labels: '{worker="1"}', value: limits[0] },
      { labels: '{worker="2"}', value: limits[0] },
    ]);
    for (const name of ['process_start_time_seconds', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'process_open_fds']) {
      expect(samples(text, name).map((s) => s.labels).sort(), name).toEqual(['{worker="1"}', '{worker="2"}']);
    }
    // A worker's process metrics describe one process: its resident memory is that of one, not two.
    for (const { value } of samples(text, 'process_resident_memory_bytes')) expect(value).toBeLessThan(1024 ** 3);
    // The service's own metrics stay one series, added up over the workers (the pool: 2 x DB_POOL_SIZE).
    expect(samples(text, 'shell_auth_ssh_connections_open')).toEqual([{ labels: '', value: 0 }]);
    expect(samples(text, 'shell_auth_db_pool_max_connections')).toEqual([{ labels: '', value: 40 }]);
    service.child.kill('SIGTERM');
    expect(await service.exited).toBe(0);
  }, 90_000);
});
