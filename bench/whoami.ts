/**
 * The platform's hot path: `GET /api/whoami` with one valid key, by autocannon (c=32), beside a
 * raw `pg` loop doing the same lookup (api_keys joined with orgs, by id) at the same concurrency,
 * in one run: what the service adds over the database round trip it would otherwise make.
 */
import autocannon from 'autocannon';
import pg from 'pg';
import { around, percentile, table } from './measure.js';

const CONCURRENCY = 32;

const LOOKUP = `SELECT api_keys.id, api_keys.secret_hash, api_keys.org_id, orgs.name AS org_name, api_keys.label,
  api_keys.permissions, api_keys.expires_at, api_keys.revoked_at
  FROM api_keys JOIN orgs ON orgs.id = api_keys.org_id WHERE api_keys.id = $1`;

export async function benchWhoami(options: {
  httpUrl: string;
  metricsUrl: string;
  serverPid: number;
  databaseUrl: string;
  apiKey: string;
  seconds: number;
}): Promise<void> {
  const { httpUrl, metricsUrl, serverPid, databaseUrl, apiKey, seconds } = options;
  const headers = { authorization: `Bearer ${apiKey}` };
  const check = await fetch(`${httpUrl}/api/whoami`, { headers });
  if (check.status !== 200) throw new Error(`whoami answered ${check.status}`);

  const service = await around(serverPid, metricsUrl, async () => {
    const result = await autocannon({ url: `${httpUrl}/api/whoami`, connections: CONCURRENCY, duration: seconds, headers });
    return { result, ops: result.requests.total };
  });
  const { result } = service;
  const failed = result.non2xx + result.errors + result.timeouts;

  const raw = await around(serverPid, null, () => rawLookupLoop(databaseUrl, apiKey.slice(0, 36), seconds));

  const rows = [
    [
      'GET /api/whoami (autocannon)',
      String(result.requests.total),
      String(failed),
      (result.requests.total / (result.duration || seconds)).toFixed(0),
      result.latency.p50.toFixed(2),
      result.latency.p90.toFixed(2),
      result.latency.p99.toFixed(2),
      service.server_cpu_ms_per_op.toFixed(3),
      service.postgres_cpu_ms_per_op.toFixed(3),
      (service.statements_per_op ?? NaN).toFixed(3),
      service.rss_mb.toFixed(0),
    ],
    [
      'raw pg loop, same lookup',
      String(raw.ops),
      '0',
      (raw.ops / (raw.wallMs / 1000)).toFixed(0),
      raw.p50.toFixed(2),
      raw.p90.toFixed(2),
      raw.p99.toFixed(2),
      '-',
      raw.postgres_cpu_ms_per_op.toFixed(3),
      '1.000',
      '-',
    ],
  ];
  console.log(`\nwhoami, c=${CONCURRENCY}, ${seconds} s each (autocannon's own latency figures; the raw loop's from performance.now())`);
  console.log(table(['', 'requests', 'failed', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'server CPU ms/req', 'Postgres CPU ms/req', 'statements/req', 'RSS MB'], rows));
  console.log(
    `\n${JSON.stringify({ whoami: { requests: result.requests.total, failed, rps: result.requests.average, p50: result.latency.p50, p90: result.latency.p90, p99: result.latency.p99, server_cpu_ms: service.server_cpu_ms_per_op, postgres_cpu_ms: service.postgres_cpu_ms_per_op, statements: service.statements_per_op }, raw: { ops: raw.ops, rps: raw.ops / (raw.wallMs / 1000), p50: raw.p50, p99: raw.p99, postgres_cpu_ms: raw.postgres_cpu_ms_per_op } })}\n`,
  );
}

/** CONCURRENCY loops, each awaiting one lookup at a time on a pool of that size, for `seconds`. */
async function rawLookupLoop(databaseUrl: string, id: string, seconds: number) {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: CONCURRENCY });
  try {
    await Promise.all(Array.from({ length: CONCURRENCY }, () => pool.query(LOOKUP, [id]))); // connect them all first
    const latencies: number[] = [];
    const started = performance.now();
    const deadline = started + seconds * 1000;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (performance.now() < deadline) {
          const t0 = performance.now();
          const { rows } = await pool.query(LOOKUP, [id]);
          if (rows.length !== 1) throw new Error('the raw lookup found no key');
          latencies.push(performance.now() - t0);
        }
      }),
    );
    const wallMs = performance.now() - started;
    latencies.sort((a, b) => a - b);
    return { ops: latencies.length, wallMs, p50: percentile(latencies, 50), p90: percentile(latencies, 90), p99: percentile(latencies, 99) };
  } finally {
    await pool.end();
  }
}
