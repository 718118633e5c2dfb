/**
 * Know the floor: a BARE ssh2 server against a BARE Go x/crypto/ssh server, in one run, so the
 * CPU-per-SSH-op gap between shell-auth and Go (bench/rig.ts) splits into what the library costs
 * and what shell-auth adds.
 *
 * The op is the rig's (PERF_DIR/README.md) minus the database: TCP connect, curve25519-sha256 kex,
 * ed25519 host key, chacha20-poly1305, auth none → publickey query → signed publickey (verified by
 * the server), session, exec `create --label perfx`, 100 bytes on stdout, exit-status 0, EOF,
 * close. Three servers do it:
 *   ssh2-plain  bench/floor/bare-ssh2.ts plain: ssh2 as shipped
 *   ssh2-tuned  bench/floor/bare-ssh2.ts tuned: with src/ssh/ssh2-tuning.ts, as shell-auth uses it
 *   go          bench/floor/gobare/main.go: x/crypto/ssh (built like the rig's gosshd, into a temp dir)
 * driven by the rig's native libssh load generator (PERF_DIR/lsshload, worker i uses
 * PERF_DIR/keys/client<i>). At each (rep, level) the servers take turns, in ABBA order; each is
 * warmed up 2 s at c=4 right before its measured run. The servers are started once and stay up for the
 * whole run (like the rig's), so "peak" RSS is the peak so far. Server CPU is the server's process tree
 * from /proc/PID/stat (utime+stime, plus reaped children), RSS is its VmRSS and VmHWM.
 *
 * `node --import tsx bench/floor.ts` runs it alone and prints the table. Env: FLOOR_LEVELS
 * (default 8; comma or space separated), FLOOR_SECONDS (10), FLOOR_REPS (3), PERF_DIR
 * (/opt/shell-auth-perf).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLK_TCK, descendants, table } from './measure.js';
import { killGroup, stopGroup } from './service.js';

export type FloorServer = 'ssh2-plain' | 'ssh2-tuned' | 'go';

export type FloorRow = {
  server: FloorServer;
  conc: number;
  rep: number;
  secs: number;
  /** OK ops, including those that finished just after the deadline. */
  ok: number;
  ok_in_window: number;
  failed: number;
  /** OK ops that finished inside the window ÷ secs. */
  ops_per_s: number;
  p50_ms: number | null;
  p99_ms: number | null;
  server_cpu_ms: number;
  server_cpu_ms_per_op: number | null;
  client_cpu_ms_per_op: number | null;
  server_rss_kb_after: number | null;
  server_hwm_kb_after: number | null;
  /** lsshload's `# algo` line: what its first connection negotiated. */
  algo: string | null;
  /** Distinct error lines from lsshload, with counts. */
  errors: Record<string, number>;
};

const ROOT = path.resolve(import.meta.dirname, '..');
const SERVERS: FloorServer[] = ['ssh2-plain', 'ssh2-tuned', 'go'];
const OP_CMD = 'create --label perfx';
const WARMUP = { conc: 4, secs: 2 };
/** What the op must negotiate (lsshload reports the cipher as out/in). */
const EXPECTED_ALGO = /kex=curve25519-sha256(@libssh\.org)? hostkey=ssh-ed25519 cipher=chacha20-poly1305(@openssh\.com)?\/chacha20-poly1305/;

const perfDir = () => process.env.PERF_DIR ?? '/opt/shell-auth-perf';

// ---------------------------------------------------------------- processes (each in its own group)

type Started = { name: string; child: ChildProcess; stderr: () => string };
const running = new Set<ChildProcess>();

/** Spawned detached: its own process group, killed as a group (the server's children too). */
function start(name: string, command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; keepStderr?: number } = {}): Started {
  const { keepStderr = 20_000, ...spawnOptions } = options;
  const child = spawn(command, args, { ...spawnOptions, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  child.once('exit', () => running.delete(child));
  let err = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    if (err.length < keepStderr) err += chunk.toString();
  });
  child.on('error', (e) => (err += `${e.message}\n`));
  return { name, child, stderr: () => err };
}

/** Only while it runs: once it has exited its group id may be another's. */
function signalChild(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  killGroup(child.pid, signal);
}

/** TERM to every group this module started that still runs, KILL after 2 s to any that is left. */
async function stopAll(): Promise<void> {
  const children = [...running].filter((c) => c.pid !== undefined && c.exitCode === null && c.signalCode === null);
  await Promise.all(children.map((child) => stopGroup(child.pid!, 2000)));
}

function stopAllNow(): void {
  for (const child of running) signalChild(child, 'SIGKILL');
}

/** Resolves with the port once the server prints `listening PORT`. */
function listeningPort(server: Started, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => fail(`did not say "listening PORT" within ${timeoutMs / 1000} s`), timeoutMs);
    const fail = (why: string) => {
      clearTimeout(timer);
      server.child.stdout!.off('data', onData);
      reject(new Error(`${server.name} ${why}: ${server.stderr().trim().slice(-2000)}`));
    };
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      const match = /^listening (\d+)$/m.exec(out);
      if (!match) return;
      clearTimeout(timer);
      server.child.stdout!.off('data', onData);
      server.child.stdout!.resume(); // nothing more is read
      resolve(Number(match[1]));
    };
    server.child.stdout!.on('data', onData);
    server.child.once('exit', (code, signal) => fail(`exited (${signal ?? code})`));
  });
}

// ---------------------------------------------------------------- the Go server: built like the rig's gosshd

/** Builds bench/floor/gobare into a temp dir when the source is newer than the binary; returns the binary. */
export function buildGoBare(): string {
  const dir = path.join(os.tmpdir(), 'shell-auth-floor');
  const source = path.join(ROOT, 'bench', 'floor', 'gobare', 'main.go');
  const binary = path.join(dir, 'gobare');
  fs.mkdirSync(dir, { recursive: true });
  if (fs.existsSync(binary) && fs.statSync(binary).mtimeMs >= fs.statSync(source).mtimeMs) return binary;
  try {
    execFileSync('go', ['build', '-o', binary, 'main.go'], {
      cwd: path.dirname(source),
      env: { ...process.env, GO111MODULE: 'off', GOPATH: '/usr/share/gocode', GOPROXY: 'off', GOFLAGS: '', GOCACHE: path.join(dir, 'go-build-cache') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim() ?? String(err);
    throw new Error(
      `building ${source} failed (needs Debian's golang-go and golang-golang-x-crypto-dev: apt-get install -y golang-go golang-golang-x-crypto-dev): ${stderr}`,
    );
  }
  return binary;
}

function startServer(server: FloorServer, goBinary: string): Started {
  // Like the rig: a bare environment (GOMAXPROCS, NODE_OPTIONS and the like unset).
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp' };
  if (server === 'go') return start(server, goBinary, ['-listen', '127.0.0.1:0'], { env });
  const mode = server === 'ssh2-plain' ? 'plain' : 'tuned';
  return start(server, process.execPath, ['--import', 'tsx', path.join('bench', 'floor', 'bare-ssh2.ts'), mode], { cwd: ROOT, env });
}

// ---------------------------------------------------------------- /proc

type Snapshot = { t: number; cpuMs: number; rssKb: number | null; hwmKb: number | null };

/** utime+stime+cutime+cstime of `pid` and its live descendants (as the rig counts), and its own VmRSS/VmHWM. */
function snapshot(pid: number): Snapshot {
  let ticks = 0;
  for (const { pid: member } of descendants(pid)) {
    try {
      const stat = fs.readFileSync(`/proc/${member}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    } catch {
      // gone meanwhile
    }
  }
  let rssKb: number | null = null;
  let hwmKb: number | null = null;
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    rssKb = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? NaN) || null;
    hwmKb = Number(/^VmHWM:\s+(\d+)/m.exec(status)?.[1] ?? NaN) || null;
  } catch {
    // gone
  }
  return { t: Date.now(), cpuMs: (ticks * 1000) / CLK_TCK, rssKb, hwmKb };
}

// ---------------------------------------------------------------- lsshload

type LoadResult = { stdout: string; stderr: string; code: number | null; timedOut: boolean };

function lsshload(port: number, conc: number, secs: number): Promise<LoadResult> {
  const dir = perfDir();
  const load = start('lsshload', path.join(dir, 'lsshload'), [String(port), String(conc), String(secs), path.join(dir, 'keys', 'client%d'), OP_CMD, '100'], {
    keepStderr: Infinity, // one line per failed op: all are counted
  });
  let stdout = '';
  load.child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  let timedOut = false;
  // Like the rig's `timeout SECS+45`: every blocking step in lsshload has a 30 s timeout anyway.
  const timer = setTimeout(() => {
    timedOut = true;
    signalChild(load.child, 'SIGKILL');
  }, (secs + 45) * 1000);
  return new Promise((resolve, reject) => {
    load.child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    load.child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ stdout, stderr: load.stderr(), code, timedOut });
    });
  });
}

const round = (n: number, digits: number) => Math.round(n * 10 ** digits) / 10 ** digits;
const pick = (sorted: number[], p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! : null);

function parseLoad(result: LoadResult) {
  const latencies: number[] = [];
  let okInWindow = 0;
  let failed = 0;
  let clientCpuMs: number | null = null;
  let algo: string | null = null;
  for (const line of result.stdout.split('\n')) {
    const p = line.trim().split(/\s+/);
    if (p[0] === '' || p[0] === undefined) continue;
    if (p[0] === '#') {
      if (p[1] === 'cpu_ms') clientCpuMs = Number(p[2]);
      else if (p[1] === 'algo') algo = p.slice(2).join(' ');
    } else if (p[0] === '1') {
      latencies.push(Number(p[1]));
      if (p[2] === '1') okInWindow++;
    } else {
      failed++;
    }
  }
  const errors: Record<string, number> = {};
  for (const line of result.stderr.split('\n')) {
    const text = line.trim().slice(0, 160);
    if (text) errors[text] = (errors[text] ?? 0) + 1;
  }
  if (result.timedOut) errors['lsshload killed after SECS+45 s'] = 1;
  else if (result.code !== 0) errors[`lsshload exited ${result.code}`] = 1;
  latencies.sort((a, b) => a - b);
  return { latencies, okInWindow, failed, clientCpuMs, algo, errors };
}

async function measure(server: FloorServer, pid: number, port: number, conc: number, secs: number, rep: number): Promise<FloorRow> {
  const before = snapshot(pid);
  const load = parseLoad(await lsshload(port, conc, secs));
  const after = snapshot(pid);
  const ok = load.latencies.length;
  const serverCpuMs = after.cpuMs - before.cpuMs;
  const p50 = pick(load.latencies, 0.5);
  const p99 = pick(load.latencies, 0.99);
  return {
    server,
    conc,
    rep,
    secs,
    ok,
    ok_in_window: load.okInWindow,
    failed: load.failed,
    ops_per_s: round(load.okInWindow / secs, 1),
    p50_ms: p50 === null ? null : round(p50, 1),
    p99_ms: p99 === null ? null : round(p99, 1),
    server_cpu_ms: round(serverCpuMs, 1),
    server_cpu_ms_per_op: ok ? round(serverCpuMs / ok, 3) : null,
    client_cpu_ms_per_op: ok && load.clientCpuMs !== null ? round(load.clientCpuMs / ok, 3) : null,
    server_rss_kb_after: after.rssKb,
    server_hwm_kb_after: after.hwmKb,
    algo: load.algo,
    errors: load.errors,
  };
}

// ---------------------------------------------------------------- the run

/** The rig's load generator and enough client keys for the largest level (and the warm-up). */
function checkRig(levels: number[]): void {
  const dir = perfDir();
  const binary = path.join(dir, 'lsshload');
  try {
    fs.accessSync(binary, fs.constants.X_OK);
  } catch {
    throw new Error(`no load generator at ${binary}: run \`bash ../shared/perf-rig/setup.sh\` (from the project root) to install the rig, or set PERF_DIR`);
  }
  const needed = Math.max(WARMUP.conc, ...levels);
  const missing = Array.from({ length: needed }, (_, i) => path.join(dir, 'keys', `client${i}`)).filter((file) => !fs.existsSync(file));
  if (missing.length) {
    throw new Error(
      `the rig has too few client keys for c=${needed} (missing ${missing[0]}${missing.length > 1 ? ` and ${missing.length - 1} more` : ''}): ` +
        `run the rig once with LEVELS=${needed} (it creates them), or ssh-keygen -q -t ed25519 -N '' -f FILE for each`,
    );
  }
}

/**
 * Runs the three bare servers at each level, `reps` times, and returns one row per measured run.
 * Everything it starts is killed by process group before it returns (also on error, SIGINT and SIGTERM).
 */
export async function benchFloor(options: { levels: number[]; seconds: number; reps: number }): Promise<FloorRow[]> {
  const { levels, seconds, reps } = options;
  if (!levels.length || levels.some((l) => !Number.isInteger(l) || l < 1)) throw new Error(`bad levels: ${levels.join(',')}`);
  if (!(seconds > 0) || !Number.isInteger(reps) || reps < 1) throw new Error(`bad seconds (${seconds}) or reps (${reps})`);
  checkRig(levels);
  const goBinary = buildGoBare();
  const onSigint = () => {
    stopAllNow();
    process.exit(130);
  };
  process.once('SIGINT', onSigint);
  process.once('SIGTERM', onSigint);
  const rows: FloorRow[] = [];
  try {
    const servers = new Map<FloorServer, { pid: number; port: number }>();
    for (const name of SERVERS) {
      const started = startServer(name, goBinary);
      const port = await listeningPort(started, 60_000);
      servers.set(name, { pid: started.child.pid!, port });
    }
    let turn = 0;
    for (let rep = 1; rep <= reps; rep++) {
      for (const conc of levels) {
        const order = turn++ % 2 === 0 ? SERVERS : [...SERVERS].reverse();
        for (const name of order) {
          const { pid, port } = servers.get(name)!;
          const warm = parseLoad(await lsshload(port, WARMUP.conc, WARMUP.secs));
          if (warm.latencies.length === 0) {
            throw new Error(`${name}: no op succeeded in the warm-up: ${Object.keys(warm.errors).slice(0, 3).join(' | ') || 'no error reported'}`);
          }
          const row = await measure(name, pid, port, conc, seconds, rep);
          rows.push(row);
          console.error(
            `floor: ${name} c=${conc} rep=${rep}: ${row.ok} ok, ${row.failed} failed, ${row.ops_per_s} ops/s, ` +
              `server ${row.server_cpu_ms_per_op ?? '-'} ms CPU/op`,
          );
        }
      }
    }
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
    await stopAll();
  }
  return rows;
}

// ---------------------------------------------------------------- the table

const fixed = (n: number | null | undefined, digits: number) => (n === null || n === undefined || Number.isNaN(n) ? '-' : n.toFixed(digits));
const mb = (kb: number | null) => (kb === null ? '-' : (kb / 1024).toFixed(0));
const median = (values: number[]) => {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor(sorted.length / 2)]! : null;
};

/** The median over repetitions of a per-row number, for one server at one level. */
function medianOf(rows: FloorRow[], server: FloorServer, conc: number, value: (row: FloorRow) => number | null): number | null {
  return median(rows.filter((r) => r.server === server && r.conc === conc).map(value).filter((v): v is number => v !== null));
}

/** The median over repetitions of server/go's CPU per op, paired by level and repetition (as bench/rig.ts pairs them). */
export function floorRatio(rows: FloorRow[], server: FloorServer, conc: number): number | null {
  const ratios: number[] = [];
  for (const row of rows.filter((r) => r.server === server && r.conc === conc)) {
    const go = rows.find((r) => r.server === 'go' && r.conc === conc && r.rep === row.rep);
    if (row.server_cpu_ms_per_op !== null && go?.server_cpu_ms_per_op) ratios.push(row.server_cpu_ms_per_op / go.server_cpu_ms_per_op);
  }
  return median(ratios);
}

/** Every run, the medians per server and level, the ratios to Go, what was negotiated, and the errors. */
export function floorTable(rows: FloorRow[]): string {
  const out: string[] = [];
  out.push(
    table(
      ['server', 'c', 'rep', 'ok', 'failed', 'ops/s', 'p50 ms', 'p99 ms', 'server CPU ms/op', 'client CPU ms/op', 'RSS MB after (peak)'],
      rows.map((r) => [
        r.server,
        String(r.conc),
        String(r.rep),
        String(r.ok),
        String(r.failed),
        fixed(r.ops_per_s, 1),
        fixed(r.p50_ms, 1),
        fixed(r.p99_ms, 1),
        fixed(r.server_cpu_ms_per_op, 2),
        fixed(r.client_cpu_ms_per_op, 2),
        `${mb(r.server_rss_kb_after)} (${mb(r.server_hwm_kb_after)})`,
      ]),
    ),
  );
  const levels = [...new Set(rows.map((r) => r.conc))];
  const medians: string[][] = [];
  for (const conc of levels) {
    for (const server of SERVERS) {
      if (!rows.some((r) => r.server === server && r.conc === conc)) continue;
      medians.push([
        server,
        String(conc),
        String(rows.filter((r) => r.server === server && r.conc === conc).length),
        fixed(medianOf(rows, server, conc, (r) => r.ops_per_s), 1),
        fixed(medianOf(rows, server, conc, (r) => r.p50_ms), 1),
        fixed(medianOf(rows, server, conc, (r) => r.p99_ms), 1),
        fixed(medianOf(rows, server, conc, (r) => r.server_cpu_ms_per_op), 2),
        mb(medianOf(rows, server, conc, (r) => r.server_hwm_kb_after)),
        server === 'go' ? '1.00' : fixed(floorRatio(rows, server, conc), 2),
      ]);
    }
  }
  out.push('', 'medians over repetitions (ratio: the median of the per-repetition ratios of server CPU per op to go\'s)');
  out.push(table(['server', 'c', 'runs', 'ops/s', 'p50 ms', 'p99 ms', 'server CPU ms/op', 'RSS peak MB', 'CPU/op ÷ go'], medians));
  for (const conc of levels) {
    out.push(`c=${conc}: ssh2-plain/go ${fixed(floorRatio(rows, 'ssh2-plain', conc), 2)}, ssh2-tuned/go ${fixed(floorRatio(rows, 'ssh2-tuned', conc), 2)} (server CPU per op)`);
  }
  const algos = new Map<string, Set<string>>();
  for (const r of rows) if (r.algo) algos.set(r.server, (algos.get(r.server) ?? new Set()).add(r.algo));
  if (algos.size) {
    out.push('', 'negotiated (lsshload, first connection of each run):');
    for (const [server, seen] of algos) {
      const odd = [...seen].some((a) => !EXPECTED_ALGO.test(a));
      out.push(`  ${server}: ${[...seen].join(' | ')}${odd ? '  <- NOT the op (curve25519-sha256, ssh-ed25519, chacha20-poly1305)' : ''}`);
    }
  }
  const errors = new Map<string, number>();
  for (const r of rows) for (const [text, count] of Object.entries(r.errors)) errors.set(`${r.server}: ${text}`, (errors.get(`${r.server}: ${text}`) ?? 0) + count);
  if (errors.size) {
    out.push('', 'errors (server: message × count):');
    for (const [text, count] of [...errors].sort((a, b) => b[1] - a[1]).slice(0, 20)) out.push(`  ${text} × ${count}`);
  }
  return out.join('\n');
}

// ---------------------------------------------------------------- alone: node --import tsx bench/floor.ts

async function main() {
  const levels = (process.env.FLOOR_LEVELS ?? '8').split(/[\s,]+/).filter(Boolean).map(Number);
  const seconds = Number(process.env.FLOOR_SECONDS ?? 10);
  const reps = Number(process.env.FLOOR_REPS ?? 3);
  console.log(
    `floor: bare ssh2 (plain, tuned) vs bare Go x/crypto/ssh, op "${OP_CMD}" without a database; levels ${levels.join(',')}, ` +
      `${seconds} s each, ${reps} rep(s), warm-up ${WARMUP.secs} s at c=${WARMUP.conc}; node ${process.version}, ${os.cpus().length} CPUs, load avg ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`,
  );
  const rows = await benchFloor({ levels, seconds, reps });
  console.log(floorTable(rows));
  console.log(`\n${JSON.stringify(rows)}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  });
}
