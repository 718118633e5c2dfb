/**
 * `npm run bench`: API keys minted through the SSH door (`create`) against real Postgres, then
 * the platform's `GET /api/whoami` (bench/whoami.ts) and memory for idle sessions
 * (bench/idle-sessions.ts). The service runs compiled (`npm run bench` builds it first).
 *
 * Starts the service as a child process on a fresh database, verifies one key per client through
 * the core, then drives `ssh keys@HOST create --label ...` with an ssh2-based load generator at
 * several concurrencies. Each operation is what a user's terminal does: TCP connect, SSH
 * handshake, publickey auth, exec, read the key, disconnect.
 *
 * Runs the whole series once per BENCH_WORKERS value (default `1,2`: the service's WORKERS), so
 * the table shows one process against a cluster side by side.
 *
 * Env: BENCH_PROFILE=DIR writes a V8 CPU profile of the server there. BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test: a database is created
 * beside it and dropped afterwards), BENCH_SECONDS per level (default 10), BENCH_LEVELS (1,8,32),
 * BENCH_PARTS (create,whoami,idle,pgshape,rig,floor; and create-ab, whoami-ab, only when named:
 * bench/ab.ts, with BENCH_AB_OTHER), BENCH_IDLE_SESSIONS (1000).
 * `pgshape` (bench/postgres-shape.ts): Postgres CPU per create for the real statements and for
 * variants without their row locks, audit row and foreign keys, beside the Go server's shape.
 * `floor` (bench/floor.ts): a bare ssh2 server (as shipped and with our tuning) vs a bare Go
 * x/crypto/ssh server, no database, FLOOR_LEVELS/FLOOR_SECONDS/FLOOR_REPS: what the library costs.
 * `rig` (bench/rig.ts) runs the side-by-side rig when it is installed (PERF_DIR): shell-auth vs
 * Go x/crypto/ssh on the committed HEAD, BENCH_RIG_LEVELS (8), BENCH_RIG_SECONDS (10),
 * BENCH_RIG_REPS (3), and prints the ratios.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import ssh2 from 'ssh2';
import { confirmVerificationLink, deliverNextMail, findUserByEmail, orgsOfUser, parsePublicKeyLine, setOrgPolicy, startVerification, subscriptionBilling, type CoreDeps, type VerificationMail } from '../src/core/index.js';
import { migrateToLatest, openDatabase } from '../src/db/database.js';
import { benchFloor, floorTable } from './floor.js';
import { benchIdleSessions } from './idle-sessions.js';
import { benchPostgresShape } from './postgres-shape.js';
import { medianRatios, rigRatios, rigScript, runRig } from './rig.js';
import { AB_ROUNDS, AB_SECONDS, abTable, alternating, otherCheckout, otherSideName, sideStart } from './ab.js';
import { around, cpuMsOfTree, machineLine, percentile, table } from './measure.js';
import { startCompiledService, withFreshDatabase } from './service.js';
import { benchWhoami } from './whoami.js';
import { benchWhoamiAb } from './whoami-ab.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const levels = (process.env.BENCH_LEVELS ?? '1,8,32').split(',').map(Number);
const workerCounts = (process.env.BENCH_WORKERS ?? '1,2').split(',').map(Number);
/** Which parts run: `create` (per WORKERS value), `whoami` and `idle` (WORKERS=1). */
const parts = new Set((process.env.BENCH_PARTS ?? 'create,whoami,idle,pgshape,rig,floor').split(','));
const fixed = (n: number | null, digits: number) => (n === null || Number.isNaN(n) ? '-' : n.toFixed(digits));

async function main() {
  console.log(machineLine());
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-bench-'));
  try {
    if (['create', 'create-ab', 'whoami', 'whoami-ab', 'idle', 'pgshape'].some((part) => parts.has(part))) await withFreshDatabase('shell_auth_bench', async (dbUrl) => {
      // Before any server runs: its mail sender would take the links this setup reads.
      const maxClients = Math.max(...levels);
      const keys = await verifiedKeys(dbUrl, work, maxClients);
      if (parts.has('create')) await benchCreate(dbUrl, work, keys);
      if (parts.has('create-ab')) await benchCreateAb(dbUrl, work, keys);
      if (parts.has('whoami') || parts.has('whoami-ab') || parts.has('idle')) {
        const server = await startServer(dbUrl, work, 1);
        try {
          if (parts.has('whoami')) {
            const apiKey = await createOnce(server.sshPort, keys[0]!, 'bench-whoami');
            await benchWhoami({ httpUrl: server.httpUrl, metricsUrl: server.metricsUrl, serverPid: server.pid, databaseUrl: dbUrl, apiKey, seconds });
          }
          if (parts.has('whoami-ab')) {
            const apiKey = await createOnce(server.sshPort, keys[0]!, 'bench-whoami-ab');
            await benchWhoamiAb({ databaseUrl: dbUrl, work, apiKey });
          }
          if (parts.has('idle')) await benchIdleSessions({ sshPort: server.sshPort, serverPid: server.pid, privateKey: keys[0]! });
        } finally {
          await server.stop();
        }
      }
      if (parts.has('pgshape')) {
        console.log(`\npgshape: Postgres CPU per SSH create, piece by piece (${process.env.PGSHAPE_CLIENTS ?? 4} connections, prepared statements)`);
        console.log(await benchPostgresShape(dbUrl, 'bench0@example.com', fs.readFileSync(path.join(work, 'client0.pub'), 'utf8')));
      }
    });
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  if (parts.has('rig')) await benchRig();
  if (parts.has('floor')) await benchFloorPart();
}

/** The library's floor beside Go's, when the rig's load generator is installed. */
async function benchFloorPart() {
  if (!rigScript()) {
    console.log('\nfloor: the rig is not installed (bash ../shared/perf-rig/setup.sh): no floor measurement');
    return;
  }
  console.log('\nfloor: bare ssh2 (plain, tuned) vs bare Go x/crypto/ssh, no database');
  const rows = await benchFloor({
    levels: (process.env.FLOOR_LEVELS ?? '8').split(',').map(Number),
    seconds: Number(process.env.FLOOR_SECONDS ?? 10),
    reps: Number(process.env.FLOOR_REPS ?? 3),
  });
  console.log(floorTable(rows));
}

/** The rig's comparison with the Go server, when the rig is installed; a line saying how to get it otherwise. */
async function benchRig() {
  if (!rigScript()) {
    console.log('\nrig: not installed (bash ../shared/perf-rig/setup.sh): no comparison with the Go server');
    return;
  }
  const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
  const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
  console.log(`\nrig: shell-auth ${head}${dirty ? ' (committed HEAD: uncommitted changes are not measured)' : ''} vs Go x/crypto/ssh, one run`);
  const rows = await runRig(ROOT, {
    levels: process.env.BENCH_RIG_LEVELS ?? '8',
    seconds: Number(process.env.BENCH_RIG_SECONDS ?? 10),
    reps: Number(process.env.BENCH_RIG_REPS ?? 3),
  });
  console.log('\nshell-auth / Go (server CPU per SSH create; Postgres CPU per create)');
  console.log(rigRatios(rows));
  for (const [level, median] of medianRatios(rows)) console.log(`c=${level}: median server CPU ratio ${median.toFixed(2)}`);
  console.log(`\n${JSON.stringify(rows)}`);
}

/**
 * SSH `create`, per WORKERS value and concurrency. Server-side CPU per op is the headline: the
 * ssh2 load generator costs about as much CPU as the server, on the same 2 cores.
 */
async function benchCreate(dbUrl: string, work: string, keys: Buffer[]) {
  const rows: string[][] = [];
  const results: unknown[] = [];
  for (const workers of workerCounts) {
    const server = await startServer(dbUrl, work, workers);
    try {
      console.log(`WORKERS=${workers}: server pid ${server.pid}, ssh port ${server.sshPort}, ${keys.length} verified keys, ${seconds}s per level, ${os.cpus().length} CPUs shared by server, Postgres and load generator`);
      await runLevel(server.sshPort, keys, 4, 2); // warm-up: JIT, pool, caches
      for (const concurrency of levels) {
        const measured = await around(server.pid, server.metricsUrl, async () => {
          const { latencies, wallMs, failures } = await runLevel(server.sshPort, keys.slice(0, concurrency), concurrency, seconds);
          return { latencies, wallMs, failures, ops: latencies.length };
        });
        const sorted = [...measured.latencies].sort((a, b) => a - b);
        const result = {
          workers,
          concurrency,
          ops: measured.ops,
          failures: measured.failures,
          ops_per_s: (measured.ops / measured.wallMs) * 1000,
          p50_ms: percentile(sorted, 50),
          p90_ms: percentile(sorted, 90),
          p99_ms: percentile(sorted, 99),
          server_cpu_ms_per_op: measured.server_cpu_ms_per_op,
          postgres_cpu_ms_per_op: measured.postgres_cpu_ms_per_op,
          client_cpu_ms_per_op: measured.client_cpu_ms_per_op,
          statements_per_op: measured.statements_per_op,
          rss_mb: measured.rss_mb,
        };
        results.push(result);
        rows.push([
          String(workers),
          String(concurrency),
          String(result.ops),
          String(result.failures),
          fixed(result.ops_per_s, 1),
          fixed(result.p50_ms, 1),
          fixed(result.p90_ms, 1),
          fixed(result.p99_ms, 1),
          fixed(result.server_cpu_ms_per_op, 2),
          fixed(result.postgres_cpu_ms_per_op, 2),
          fixed(result.client_cpu_ms_per_op, 2),
          fixed(result.statements_per_op, 2),
          fixed(result.rss_mb, 0),
        ]);
      }
    } finally {
      await server.stop();
    }
  }
  console.log('\nSSH create (server CPU is the headline: the load generator shares the cores)');
  const headers = ['WORKERS', 'c', 'ops', 'failed', 'ops/s', 'p50 ms', 'p90 ms', 'p99 ms', 'server CPU ms/op', 'Postgres CPU ms/op', 'client CPU ms/op', 'statements/op', 'RSS MB'];
  console.log(table(headers, rows));
  console.log(`\n${JSON.stringify(results)}\n`);
}

/**
 * `create-ab` (bench/ab.ts says why alternating): SSH create at c=8 (fewer with fewer keys) against
 * this checkout's service and the other's, side by side, BENCH_AB_SECONDS bursts in turn; server
 * CPU per create. The ssh2 load generator shares the cores, alike for both sides.
 */
async function benchCreateAb(dbUrl: string, work: string, keys: Buffer[]) {
  const roots = { this: ROOT, other: otherCheckout() };
  const concurrency = Math.min(8, keys.length);
  const bySide: Partial<Record<keyof typeof roots, Awaited<ReturnType<typeof startServer>>>> = {};
  try {
    for (const side of ['this', 'other'] as const) {
      const dir = path.join(work, `create-ab-${side}`);
      fs.mkdirSync(dir, { recursive: true });
      const server = (bySide[side] = await startServer(dbUrl, dir, 1, roots[side], sideStart(side)));
      await runLevel(server.sshPort, keys, 4, 2); // warm-up: JIT, pool, caches
    }
    const values = await alternating(AB_ROUNDS, [`create, c=${concurrency}`], async (side) => {
      const server = bySide[side]!;
      const before = cpuMsOfTree(server.pid);
      const { latencies, failures } = await runLevel(server.sshPort, keys.slice(0, concurrency), concurrency, AB_SECONDS);
      if (failures > 0 || latencies.length === 0) throw new Error(`${side}: ${failures} creates failed of ${failures + latencies.length}`);
      return (cpuMsOfTree(server.pid) - before) / latencies.length;
    });
    console.log(`
SSH create A/B: this checkout vs ${otherSideName(roots.other)}, ${AB_ROUNDS} rounds of ${AB_SECONDS} s bursts, alternating`);
    console.log(abTable('server CPU ms/create', values));
  } finally {
    for (const server of Object.values(bySide)) await server.stop();
  }
}

/** The service with its metrics, as operators run it (`npm run bench` builds it first); `root`: another checkout's (create-ab). */
async function startServer(dbUrl: string, work: string, workers: number, root = ROOT, extra = sideStart('this')) {
  const profile = process.env.BENCH_PROFILE ? [`--cpu-prof`, `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : [];
  const server = await startCompiledService({
    root,
    databaseUrl: dbUrl,
    work,
    nodeArgs: [...profile, ...extra.nodeArgs],
    env: {
      WORKERS: String(workers),
      METRICS_PORT: '0',
      LOG_FORMAT: 'json',
      // Every client comes from 127.0.0.1 here.
      SSH_MAX_UNAUTH_PER_IP: '1000',
      // The load generator is one address: lift the per-address rates it would hit.
      SSH_AUTH_PER_MINUTE: '1000000',
      SSH_CONNECTIONS_PER_SECOND: '100000',
      // The idle part holds BENCH_IDLE_SESSIONS shells from four addresses: 250 each, over the default 64.
      SSH_MAX_SESSIONS_PER_IP: '1000',
      ...extra.env,
    },
  });
  return {
    pid: server.child.pid!,
    sshPort: server.sshPort,
    httpUrl: server.httpUrl,
    metricsUrl: server.metricsUrl!,
    async stop() {
      // The compiled service itself (no wrapper to orphan it): KILL if its drain outlasts 30 s.
      server.child.kill('SIGTERM');
      if (await exitsWithin(server.exited, 30_000)) return;
      server.child.kill('SIGKILL');
      await exitsWithin(server.exited, 5_000);
    },
  };
}

async function exitsWithin(exited: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<false>((resolve) => (timer = setTimeout(resolve, ms, false)));
  try {
    return await Promise.race([exited.then(() => true as const), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/** Users with verified keys, made through the same core calls the doors use (mail captured). */
async function verifiedKeys(url: string, dir: string, count: number): Promise<Buffer[]> {
  const database = await openDatabase({ kind: 'postgres', url });
  await migrateToLatest(database.db);
  let lastLink = '';
  const deps: CoreDeps = {
    db: database.db,
    mailer: { sendVerification: async (mail: VerificationMail) => void (lastLink = mail.link), sendNotice: async () => undefined },
    billing: subscriptionBilling(),
    log: pino({ level: 'silent' }),
    settings: { publicUrl: 'http://bench', httpTrust: { window: 'off', mintsPerConfirmation: 1 }, keyMaxTtlMs: null, mailPerIpHourly: null },
  };
  const keys: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const file = path.join(dir, `client${i}`);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', file]);
    const parsed = parsePublicKeyLine(fs.readFileSync(`${file}.pub`, 'utf8'));
    if (!parsed.ok) throw new Error(parsed.reason);
    const origin = { channel: 'ssh' as const, ip: '127.0.0.1' };
    await startVerification(deps, { email: `bench${i}@example.com`, key: parsed.key, note: null, keyProven: true, origin });
    while ((await deliverNextMail(deps)) !== 'idle');
    await confirmVerificationLink(deps, new URL(lastLink).searchParams.get('token')!, origin);
    // Each org has a key policy of its own (not the defaults): every create is judged under it,
    // so statements/op shows what the policy costs (it is read with the identity: nothing).
    const user = (await findUserByEmail(database.db, `bench${i}@example.com`))!;
    const [org] = await orgsOfUser(database.db, user);
    await setOrgPolicy(deps, { actor: null, orgName: org!.name, setting: 'max-ttl', value: '365d', origin: { channel: 'admin', ip: null } });
    keys.push(fs.readFileSync(file));
  }
  await database.close();
  return keys;
}

/** One operation: connect, authenticate, `create`, read the key, disconnect. Resolves with the key. */
function createOnce(port: number, privateKey: Buffer, label: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    client.on('error', reject);
    client.on('ready', () => {
      client.exec(`create --label ${label}`, (err, channel) => {
        if (err) return reject(err);
        let out = '';
        let code: number | null = null;
        channel.on('data', (d: Buffer) => (out += d));
        channel.stderr.on('data', () => undefined);
        channel.on('exit', (c: number) => (code = c));
        channel.on('close', () => {
          client.end();
          if (code === 0 && /^[0-9a-f-]{36}[0-9a-f]{64}\n$/.test(out)) resolve(out.trim());
          else reject(new Error(`create failed: exit ${code}, ${JSON.stringify(out)}`));
        });
      });
    });
    // Like the server, the generator turns Nagle off: otherwise its own small writes wait for
    // delayed ACKs and the numbers measure the client's TCP stack rather than the server.
    const sock = net.connect(port, '127.0.0.1', () => {
      sock.setNoDelay(true);
      client.connect({ sock, username: 'keys', privateKey, readyTimeout: 30_000 });
    });
    sock.on('error', reject);
  });
}

async function runLevel(port: number, keys: Buffer[], concurrency: number, durationS: number) {
  const latencies: number[] = [];
  let failures = 0;
  let counter = 0;
  const started = performance.now();
  const deadline = started + durationS * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, worker) => {
      while (performance.now() < deadline) {
        const t0 = performance.now();
        try {
          await createOnce(port, keys[worker % keys.length]!, `bench-${concurrency}-${++counter}`);
          latencies.push(performance.now() - t0);
        } catch (err) {
          failures++;
          if (failures <= 3) console.error(`op failed: ${(err as Error).message}`);
        }
      }
    }),
  );
  return { latencies, wallMs: performance.now() - started, failures };
}

await main();
