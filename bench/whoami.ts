/**
 * The platform's hot path: `GET /api/whoami`, driven by `wrk` (its own process, C: the load
 * generator costs little of the 2 cores it shares with the service and Postgres) at c=32, beside
 * a raw `pg` loop doing the same lookup (api_keys joined with orgs, by id) at the same
 * concurrency, in one run: what the service adds over the database round trip it would make.
 *
 * Rows: a valid key on the service `npm run bench` started (key cache on, its default TTL); the
 * same on a second service started here with API_KEY_CACHE_TTL=0 (0 is "off": no cache, no
 * revocation listener, every request looks the key up); a key whose checksum fails (the shape of
 * a real key, its last 8 hex changed), refused before any lookup: on the second service, started
 * with HTTP_LOOKUPS_PER_MINUTE=0 so the refusal itself is measured (401s, no statement), and on
 * the first with the default per-address failure budget (120 a minute: its first failures each
 * write the budget, then 429s from memory); then the raw loop. wrk's own CPU is read from this
 * process's reaped-children times (/proc/self/stat cutime+cstime) around each run.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { parseApiKey } from '../src/core/secrets.js';
import { CLK_TCK, around, percentile, table } from './measure.js';
import { killGroup, startCompiledService, stopGroup, type CompiledService } from './service.js';

const CONCURRENCY = 32;
const WRK_THREADS = 2;
const WARM_UP_SECONDS = 1;
const ROOT = path.resolve(import.meta.dirname, '..');

const LOOKUP = `SELECT api_keys.id, api_keys.secret_hash, api_keys.org_id, orgs.name AS org_name, api_keys.label,
  api_keys.permissions, api_keys.expires_at, api_keys.revoked_at
  FROM api_keys JOIN orgs ON orgs.id = api_keys.org_id WHERE api_keys.id = $1`;

/**
 * Counts responses by status across wrk's threads (each has its own Lua state: `done` gathers
 * them). Used only where refusals are the expected answer: a `response` hook makes wrk parse each
 * response for the script, a little more client CPU.
 */
const STATUS_SCRIPT = `local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do total[code] = (total[code] or 0) + n end
  end
  for code, n in pairs(total) do io.write(string.format("status %d %d\\n", code, n)) end
end
`;

type WrkResult = {
  requests: number;
  seconds: number;
  rps: number;
  non2xx: number;
  socketErrors: number;
  /** By status, when the status script ran. */
  statuses: Record<number, number> | null;
  p50: number;
  p75: number;
  p90: number;
  p99: number;
  /** wrk's own CPU (user + system), ms. */
  clientCpuMs: number;
};

type Row = {
  name: string;
  requests: number;
  /** Answers that were not the expected one, plus socket errors. */
  failed: number;
  /** The expected answers, when they are refusals (`401:n 429:n`); '' otherwise. */
  answers: string;
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  serverCpu: number | null;
  postgresCpu: number;
  clientCpu: number;
  statements: number | null;
  rssMb: number | null;
};

export async function benchWhoami(options: {
  httpUrl: string;
  metricsUrl: string;
  serverPid: number;
  databaseUrl: string;
  apiKey: string;
  seconds: number;
}): Promise<void> {
  const { httpUrl, metricsUrl, serverPid, databaseUrl, apiKey, seconds } = options;
  const badKey = withBadChecksum(apiKey);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-whoami-'));
  const script = path.join(work, 'statuses.lua');
  fs.writeFileSync(script, STATUS_SCRIPT);
  try {
    await expectStatus(httpUrl, apiKey, 200);
    await expectStatus(httpUrl, badKey, 401);

    // 1. Cached: the service as `npm run bench` started it.
    await runWrk(httpUrl, apiKey, WARM_UP_SECONDS, null);
    const cached = await measureWrk('whoami, cached (default TTL)', serverPid, metricsUrl, () => runWrk(httpUrl, apiKey, seconds, null), [200]);
    // 4'. A bad checksum under the default failure budget (HTTP_LOOKUPS_PER_MINUTE=120).
    const badBudget = await measureWrk('bad checksum, default budget', serverPid, metricsUrl, () => runWrk(httpUrl, badKey, seconds, script), [401, 429]);

    // 2. and 3. A second service: no key cache, no per-address budget (valid keys never touch it).
    let uncached: Row;
    let bad: Row;
    const second = await startUncached(databaseUrl, work);
    try {
      const pid = second.child.pid!;
      await expectStatus(second.httpUrl, apiKey, 200);
      await expectStatus(second.httpUrl, badKey, 401);
      await runWrk(second.httpUrl, apiKey, WARM_UP_SECONDS, null);
      uncached = await measureWrk('whoami, uncached (TTL=0)', pid, second.metricsUrl!, () => runWrk(second.httpUrl, apiKey, seconds, null), [200]);
      bad = await measureWrk('bad checksum, no budget', pid, second.metricsUrl!, () => runWrk(second.httpUrl, badKey, seconds, script), [401]);
    } finally {
      await stopGroup(second.child.pid!, 30_000);
    }

    // 4. The raw loop, Postgres alone (both services idle).
    const raw = await around(serverPid, null, () => rawLookupLoop(databaseUrl, parseApiKey(apiKey)!.id, seconds));
    const rawRps = raw.ops / (raw.wallMs / 1000);
    const rawRow: Row = {
      name: 'raw pg loop, same lookup',
      requests: raw.ops,
      failed: 0,
      answers: '',
      rps: rawRps,
      p50: raw.p50,
      p90: raw.p90,
      p99: raw.p99,
      serverCpu: null,
      postgresCpu: raw.postgres_cpu_ms_per_op,
      clientCpu: raw.client_cpu_ms_per_op,
      statements: 1,
      rssMb: null,
    };

    const rows = [cached, uncached, bad, badBudget, rawRow];
    const n = (v: number | null, digits: number) => (v === null || Number.isNaN(v) ? '-' : v.toFixed(digits));
    console.log(
      `\nwhoami, c=${CONCURRENCY}, ${seconds} s each; wrk -t${WRK_THREADS} -c${CONCURRENCY} --latency (p50/p90/p99 from its distribution), the raw loop's from performance.now().` +
        `\nClient CPU: wrk's own (reaped-child times), for the raw loop this node process (the pg client). "failed": non-2xx (or, for a bad key, anything but the expected refusals) plus socket errors.`,
    );
    console.log(
      table(
        ['', 'requests', 'failed', 'refusals', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'server CPU ms/req', 'Postgres CPU ms/req', 'client CPU ms/req', 'statements/req', 'RSS MB'],
        rows.map((r) => [r.name, String(r.requests), String(r.failed), r.answers || '-', n(r.rps, 0), n(r.p50, 2), n(r.p90, 2), n(r.p99, 2), n(r.serverCpu, 3), n(r.postgresCpu, 3), n(r.clientCpu, 3), n(r.statements, 4), n(r.rssMb, 0)]),
      ),
    );
    const ratios = { cached_over_raw: cached.rps / rawRps, uncached_over_raw: uncached.rps / rawRps, bad_over_raw: bad.rps / rawRps };
    const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');
    console.log(`\nratios to the raw loop's rate: cached ${ratios.cached_over_raw.toFixed(2)}x, uncached ${ratios.uncached_over_raw.toFixed(2)}x, bad checksum ${ratios.bad_over_raw.toFixed(2)}x`);
    console.log('targets (issue 21):');
    console.log(`  cached >= 2x raw: ${ratios.cached_over_raw.toFixed(2)}x, ${verdict(ratios.cached_over_raw >= 2)}`);
    console.log(`  cached p99 <= 5 ms: ${cached.p99.toFixed(2)} ms, ${verdict(cached.p99 <= 5)}`);
    console.log(`  cached server CPU <= 0.05 ms/req: ${n(cached.serverCpu, 3)}, ${verdict((cached.serverCpu ?? Infinity) <= 0.05)}`);
    console.log(`  uncached >= 0.8x raw: ${ratios.uncached_over_raw.toFixed(2)}x, ${verdict(ratios.uncached_over_raw >= 0.8)}`);
    console.log(`  bad checksum, 0 statements/req: ${n(bad.statements, 4)}, ${verdict(bad.statements === 0)} (default budget: ${n(badBudget.statements, 4)}, its budget writes)`);
    console.log(`\n${JSON.stringify({ whoami: rows, ratios })}\n`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** The same key with its 8 checksum hex changed (each digit + 1): well-formed, checksum wrong. */
export function withBadChecksum(apiKey: string): string {
  const body = apiKey.slice(0, -8);
  const sum = apiKey.slice(-8).replace(/[0-9a-f]/g, (d) => ((parseInt(d, 16) + 1) % 16).toString(16));
  const bad = body + sum;
  if (bad.length !== apiKey.length || parseApiKey(bad) !== null) throw new Error('could not make a key with a bad checksum');
  return bad;
}

async function expectStatus(httpUrl: string, key: string, status: number): Promise<void> {
  const res = await fetch(`${httpUrl}/api/whoami`, { headers: { authorization: `Bearer ${key}` } });
  await res.arrayBuffer();
  if (res.status !== status) throw new Error(`whoami answered ${res.status}, expected ${status}`);
}

/** One wrk run, measured around (server and Postgres CPU, statements, RSS); `expected` statuses are not failures. */
async function measureWrk(name: string, serverPid: number, metricsUrl: string, run: () => Promise<WrkResult>, expected: number[]): Promise<Row> {
  const m = await around(serverPid, metricsUrl, async () => {
    const result = await run();
    return { result, ops: result.requests };
  });
  const r = m.result;
  let failed = r.socketErrors;
  let answers = '';
  if (r.statuses) {
    for (const [code, count] of Object.entries(r.statuses)) if (!expected.includes(Number(code))) failed += count;
    answers = expected.map((code) => `${code}:${r.statuses![code] ?? 0}`).join(' ');
  } else {
    failed += r.non2xx;
  }
  return {
    name,
    requests: r.requests,
    failed,
    answers,
    rps: r.rps,
    p50: r.p50,
    p90: r.p90,
    p99: r.p99,
    serverCpu: m.server_cpu_ms_per_op,
    postgresCpu: m.postgres_cpu_ms_per_op,
    clientCpu: r.clientCpuMs / Math.max(r.requests, 1),
    statements: m.statements_per_op,
    rssMb: m.rss_mb,
  };
}

/** CPU of this process's waited-for children (user + system), ms: wrk's, once reaped. */
function reapedChildrenCpuMs(): number {
  const stat = fs.readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[13]) + Number(f[14])) * 1000) / CLK_TCK;
}

/** `wrk -t2 -c32 -d Ns --latency`, in its own process; `script`: the status-counting Lua. */
export async function runWrk(httpUrl: string, key: string, seconds: number, script: string | null): Promise<WrkResult> {
  const args = [`-t${WRK_THREADS}`, `-c${CONCURRENCY}`, `-d${seconds}s`, '--latency', '-H', `Authorization: Bearer ${key}`];
  if (script) args.push('-s', script);
  args.push(`${httpUrl}/api/whoami`);
  const cpuBefore = reapedChildrenCpuMs();
  const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c) => resolve(c));
  });
  const clientCpuMs = reapedChildrenCpuMs() - cpuBefore;
  if (code !== 0) throw new Error(`wrk exited ${code}: ${err}${out}`);
  return { ...parseWrk(out), clientCpuMs };
}

const TIME_UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

function parseWrk(out: string): Omit<WrkResult, 'clientCpuMs'> {
  const must = (re: RegExp) => {
    const match = re.exec(out);
    if (!match) throw new Error(`wrk output without ${re}:\n${out}`);
    return match;
  };
  const percentileMs = (p: number) => {
    const [, value, unit] = must(new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m|h)\\s*$`, 'm'));
    return Number(value) * TIME_UNIT_MS[unit!]!;
  };
  const [, requests, duration, durationUnit] = must(/(\d+) requests in ([\d.]+)(us|ms|s|m|h),/);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  let statuses: Record<number, number> | null = null;
  for (const [, code, count] of out.matchAll(/^status (\d+) (\d+)$/gm)) (statuses ??= {})[Number(code)] = Number(count);
  return {
    requests: Number(requests),
    seconds: (Number(duration) * TIME_UNIT_MS[durationUnit!]!) / 1000,
    rps: Number(must(/Requests\/sec:\s+([\d.]+)/)[1]),
    non2xx: Number(non2xx?.[1] ?? 0),
    socketErrors: socket ? socket.slice(1).reduce((sum, v) => sum + Number(v), 0) : 0,
    statuses,
    p50: percentileMs(50),
    p75: percentileMs(75),
    p90: percentileMs(90),
    p99: percentileMs(99),
  };
}

/** The service as `npm run bench` starts it (WORKERS=1, metrics), with no key cache and no per-address budget; its own process group. */
async function startUncached(databaseUrl: string, work: string): Promise<CompiledService> {
  let spawned: CompiledService['child'] | undefined;
  try {
    return await startCompiledService({
      root: ROOT,
      databaseUrl,
      work,
      detached: true,
      spawned: (child) => (spawned = child),
      env: {
        WORKERS: '1',
        METRICS_PORT: '0',
        LOG_FORMAT: 'json',
        // 0 is "off" (src/config: durationOrOff): no cache, no revocation listener.
        API_KEY_CACHE_TTL: '0',
        // 0 is "no limit": bad keys are answered 401 rather than counted (a budget write each) and then 429.
        HTTP_LOOKUPS_PER_MINUTE: '0',
      },
    });
  } catch (err) {
    if (spawned?.pid) killGroup(spawned.pid, 'SIGKILL');
    throw err;
  }
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
