/**
 * `npm run build && npx tsx bench/flood.ts`: two resource-exhaustion attacks on the SSH door, measured from outside.
 *
 * Starts the service the way bench/create.ts does (the compiled service as a child process, fresh
 * database on the local Postgres, SSH_PORT/HTTP_PORT 0, ports read from its JSON log), one fresh
 * service process per scenario so memory numbers do not carry over, and measures:
 *
 *  A. Shell flood: a key linked to no account (any key gets a shell) opens an interactive shell
 *     with a pty and writes FLOOD_KB KB of '\r' as fast as the channel accepts, (1) never reading
 *     the output, (2) reading and discarding it, (3) FLOOD_CONNS such connections at once, not
 *     reading. Server RSS (VmRSS of the node process) is sampled every 100 ms during the flood and
 *     FLOOD_AFTER_S after it; `GET /healthz` latency every 200 ms during the flood (open loop: a
 *     request every 200 ms whether or not the previous one answered; one that fails or gets no
 *     answer within 10 s counts at the time it took, and is listed under the table). A flood ends
 *     when everything is written (or writes have stalled) and the server has been idle for 1 s,
 *     or after FLOOD_MAX_S.
 *  B. Crafted RSA keys: RSA_CONCURRENCY clients keep connecting for RSA_SECONDS, each offering an
 *     ssh-rsa public key with a 16384-bit modulus and signing with garbage (an ssh2 agent that
 *     holds no private key: the attacker needs none). Two variants: the same ssh-keygen key every
 *     time, and a freshly made-up modulus per connection (defeats any per-key cache). Meanwhile
 *     `/healthz` every 200 ms and a legitimate OpenSSH `ssh ... whoami` every 500 ms, plus the
 *     server's CPU time per second of attack. An idle phase first gives the baseline.
 *
 * C, D and E attack the service as a whole rather than one address's budgets, so they start it
 * with its own defaults (A and B raise SSH_MAX_UNAUTH_PER_IP, since all their clients are
 * 127.0.0.1) and come from other loopback addresses than the observer's 127.0.0.1. Each measures,
 * from 2 s before the attack to its end: the server's RSS (every 100 ms) and open files (entries
 * of /proc/PID/fd, every 500 ms), `/healthz` from 127.0.0.1 every 200 ms (as in A), and a
 * legitimate OpenSSH `ssh -o BatchMode=yes ... whoami` with a throwaway key every 500 ms (as in B;
 * ok = exit 0 with the key's fingerprint, killed after 20 s). Raw TCP attackers (C, D) run in
 * child processes of at most ATTACK_SOCKETS_PER_PROCESS sockets each, so the attacker never runs
 * out of its own file descriptors (the bench's fd limit is printed; the service's too); they
 * count connections accepted (TCP handshake done), refused (connect failed or no handshake within
 * 10 s), closed at once (by the server within 1 s of connecting), closed later, and still open at
 * 5 s, 20 s and 40 s after the attack starts. A slot whose connection is closed reconnects after
 * FLOOD_RECONNECT_S seconds (0: never: the attacker only holds what it got).
 *
 *  C. Idle HTTP from one address: IDLE_HTTP_CONNS TCP connections to the HTTP port from
 *     IDLE_HTTP_FROM (bound as the local address), sending nothing, held for IDLE_HTTP_SECONDS.
 *     Beyond the service's file limit both doors fail (and new database connections would: the
 *     table counts the service's error and EMFILE log lines); the 5/20/40 s counts show when the
 *     header/idle timeout really closes them.
 *  D. Unauthenticated SSH from many addresses: UNAUTH_ADDRESSES loopback addresses (127.0.0.2,
 *     127.0.0.3, …, skipping .0/.255) × UNAUTH_PER_ADDRESS TCP connections to the SSH port, each
 *     sending only `SSH-2.0-` (no end of line: the server waits for the rest of its identification
 *     until the login grace time), held for UNAUTH_SECONDS. Connections are opened in rounds of one
 *     per address, UNAUTH_RATE rounds a second (under the default 10 new connections per address a
 *     second, so the per-address rate limit does not hide the attack; the per-address caps stay at
 *     their defaults: the point is many addresses each inside its budget). UNAUTH_SEND=line sends
 *     a whole identification line (`SSH-2.0-flood\r\n`) instead.
 *  E. Authenticated sessions from many addresses: SESSIONS_ADDRESSES addresses ×
 *     SESSIONS_PER_ADDRESS ssh2 connections authenticating with one key linked to no account (any
 *     key gets in), each then opening interactive shells (pty 80x24, output read and discarded)
 *     one after another until the server refuses one or SESSIONS_MAX are open; SESSIONS_INFLIGHT
 *     connections being set up at once, round-robin over the addresses (so per-address rates stay
 *     low), for at most SESSIONS_RAMP_S, then everything held SESSIONS_HOLD_S. RSS and open files
 *     in total and per connection held (growth over the baseline divided by the connections still
 *     open at the end). These connections are held by this process, so the total is capped at 15,000.
 *
 * Env: BENCH_ROOT (service checkout, default: this one), BENCH_PG_URL (default
 * postgres://postgres@127.0.0.1:5432/test: a database is created beside it and dropped),
 * BENCH_ATTACKS (A,B,C,D,E), FLOOD_KB (50), FLOOD_CONNS (5), FLOOD_MAX_S (20), FLOOD_AFTER_S (3),
 * RSA_SECONDS (10), RSA_CONCURRENCY (16), RSA_TRIES (3 keys offered per connection),
 * RSA_MODES (same,fresh; also bige: 3072-bit modulus with a 3070-bit exponent), RSA_KEY (default /tmp/shell-auth-bench-rsa16384, made with ssh-keygen
 * if missing, which takes minutes), IDLE_HTTP_CONNS (22000: more than the 20,000 files a process
 * may open here), IDLE_HTTP_FROM (127.0.0.9), IDLE_HTTP_SECONDS (45), UNAUTH_ADDRESSES (320),
 * UNAUTH_PER_ADDRESS (64, the default SSH_MAX_UNAUTH_PER_IP), UNAUTH_RATE (8), UNAUTH_SECONDS (40),
 * UNAUTH_SEND (prefix | line), FLOOD_RECONNECT_S (0), ATTACK_SOCKETS_PER_PROCESS (8000),
 * SESSIONS_ADDRESSES (160), SESSIONS_PER_ADDRESS (32), SESSIONS_MAX (16), SESSIONS_INFLIGHT (32),
 * SESSIONS_RAMP_S (40), SESSIONS_HOLD_S (10). All attacks stop by themselves within their time
 * bounds (C, D: the hold time; E: ramp + hold) and close every connection they opened; no more
 * than 60,000 attacker sockets are allowed in all, and no more per address than 80% of the local
 * ports the attackers bind explicitly (10000-65535).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import pg from 'pg';
import ssh2 from 'ssh2';

const HERE = path.resolve(import.meta.dirname, '..');
const ROOT = path.resolve(process.env.BENCH_ROOT || HERE);
const adminUrl = process.env.BENCH_PG_URL || 'postgres://postgres@127.0.0.1:5432/test';
const num = (name: string, fallback: number) => {
  const value = Number(process.env[name] || fallback);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number`);
  return value;
};
const wholeNum = (name: string, fallback: number) => {
  const value = Number(process.env[name] || fallback);
  if (!Number.isInteger(value) || value < 0) throw new Error(`${name} must be a whole number`);
  return value;
};
const attacks = (process.env.BENCH_ATTACKS || 'A,B,C,D,E').toUpperCase().split(',');
const FLOOD_KB = num('FLOOD_KB', 50);
const FLOOD_CONNS = num('FLOOD_CONNS', 5);
const FLOOD_MAX_MS = num('FLOOD_MAX_S', 20) * 1000;
const FLOOD_AFTER_MS = num('FLOOD_AFTER_S', 3) * 1000;
const RSA_MS = num('RSA_SECONDS', 10) * 1000;
const RSA_CONCURRENCY = num('RSA_CONCURRENCY', 16);
const RSA_TRIES = num('RSA_TRIES', 3);
const rsaModes = (process.env.RSA_MODES || 'same,fresh').split(',');
const RSA_KEY = process.env.RSA_KEY || '/tmp/shell-auth-bench-rsa16384';
const IDLE_HTTP_CONNS = num('IDLE_HTTP_CONNS', 22_000);
const IDLE_HTTP_FROM = process.env.IDLE_HTTP_FROM || '127.0.0.9';
const IDLE_HTTP_MS = num('IDLE_HTTP_SECONDS', 45) * 1000;
const UNAUTH_ADDRESSES = num('UNAUTH_ADDRESSES', 320);
const UNAUTH_PER_ADDRESS = num('UNAUTH_PER_ADDRESS', 64);
const UNAUTH_RATE = num('UNAUTH_RATE', 8);
const UNAUTH_MS = num('UNAUTH_SECONDS', 40) * 1000;
const UNAUTH_SEND = process.env.UNAUTH_SEND || 'prefix';
const RECONNECT_MS = wholeNum('FLOOD_RECONNECT_S', 0) * 1000;
const SOCKETS_PER_PROCESS = num('ATTACK_SOCKETS_PER_PROCESS', 8000);
const SESSIONS_ADDRESSES = num('SESSIONS_ADDRESSES', 160);
const SESSIONS_PER_ADDRESS = num('SESSIONS_PER_ADDRESS', 32);
const SESSIONS_MAX = num('SESSIONS_MAX', 16);
const SESSIONS_INFLIGHT = num('SESSIONS_INFLIGHT', 32);
const SESSIONS_RAMP_MS = num('SESSIONS_RAMP_S', 40) * 1000;
const SESSIONS_HOLD_MS = num('SESSIONS_HOLD_S', 10) * 1000;
/** Bounds on what the attackers may open: the machine's, not the service's. */
const MAX_ATTACK_SOCKETS = 60_000;
const MAX_HELD_SESSION_CONNS = 15_000;
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

// ---------------------------------------------------------------------------------------------
// /proc helpers

function cpuMsOf(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK; // utime + stime
}

/** pid -> parent pid, for every process we can see. */
function processTable(): Map<number, number> {
  const table = new Map<number, number>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      table.set(Number(entry), Number(stat.split(') ')[1]!.split(' ')[1]));
    } catch {
      // gone meanwhile
    }
  }
  return table;
}

/** The process itself and all its descendants, parents before children, with their depth. */
function descendants(root: number): { pid: number; depth: number }[] {
  const table = processTable();
  const out = [{ pid: root, depth: 0 }];
  for (let i = 0; i < out.length; i++) {
    for (const [pid, ppid] of table) if (ppid === out[i]!.pid) out.push({ pid, depth: out[i]!.depth + 1 });
  }
  return out;
}

function listeningInodes(port: number): Set<string> {
  const inodes = new Set<string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10) continue;
      const localPort = parseInt(cols[1]!.split(':')[1]!, 16);
      if (localPort === port && cols[3] === '0A') inodes.add(cols[9]!);
    }
  }
  return inodes;
}

/**
 * The node process that actually serves: bench/create.ts's way of starting it (node dist/src/main.js)
 * makes it the spawned process itself, but a `tsx` CLI wrapper would put it one level down. We
 * take the process in the tree that holds the listening SSH socket, else the deepest one.
 */
function serverPid(root: number, sshPort: number): number {
  const tree = descendants(root);
  const inodes = listeningInodes(sshPort);
  for (const { pid } of [...tree].reverse()) {
    try {
      for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
        const target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
        const match = /^socket:\[(\d+)\]$/.exec(target);
        if (match && inodes.has(match[1]!)) return pid;
      }
    } catch {
      // not ours to read, or gone
    }
  }
  return tree.reduce((a, b) => (b.depth > a.depth ? b : a)).pid;
}

// ---------------------------------------------------------------------------------------------
// The service under test

/** Lines the service has logged: all, at level error or above, and naming EMFILE. */
type LogCounts = { lines: number; errors: number; emfile: number };
type Service = { child: ChildProcess; group: number; pid: number; sshPort: number; httpPort: number; log: () => string; counts: LogCounts };

const groups = new Set<number>();
/** Attacker child processes (C, D): not in the service's group, killed by pid. */
const attackerPids = new Set<number>();

function killGroup(group: number, signal: NodeJS.Signals) {
  try {
    process.kill(-group, signal);
  } catch {
    // already gone
  }
}

function groupAlive(group: number): boolean {
  try {
    process.kill(-group, 0);
    return true;
  } catch {
    return false;
  }
}

// Whatever happens to this script, no service is left behind.
function killEverything() {
  for (const group of groups) killGroup(group, 'SIGKILL');
  for (const pid of attackerPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
process.on('exit', killEverything);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    killEverything();
    process.exit(130);
  });
}

/** A and B: every client comes from 127.0.0.1, so its unauthenticated cap is raised. */
const ONE_ADDRESS_ENV = { SSH_MAX_UNAUTH_PER_IP: '1000' };

async function startService(dbUrl: string, work: string, extraEnv: Record<string, string> = ONE_ADDRESS_ENV): Promise<Service> {
  // As bench/create.ts: the compiled service (run `npm run build` first), in its own directory.
  // detached: its own process group, so the whole tree can be killed at once.
  const child = spawn(process.execPath, ['dist/src/main.js'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      DATABASE_URL: dbUrl,
      HTTP_PORT: '0',
      SSH_PORT: '0',
      HOST_KEYS_DIR: path.join(work, 'host_keys'),
      DATA_DIR: work,
      LOG_LEVEL: 'info',
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const group = child.pid!;
  groups.add(group);
  const lines: string[] = [];
  const counts: LogCounts = { lines: 0, errors: 0, emfile: 0 };
  const keep = (line: string) => {
    counts.lines++;
    const level = /"level":(\d+)/.exec(line);
    if (level && Number(level[1]) >= 50) counts.errors++;
    if (line.includes('EMFILE')) counts.emfile++;
    lines.push(line);
    if (lines.length > 400) lines.splice(0, lines.length - 200);
  };
  let sshPort = 0;
  let httpPort = 0;
  let pendingOut = '';
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`service did not start in 60 s:\n${lines.join('\n')}`)), 60_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      pendingOut += chunk.toString();
      const parts = pendingOut.split('\n');
      pendingOut = parts.pop()!;
      for (const line of parts) {
        keep(line);
        if (sshPort && httpPort) continue;
        let entry: { msg?: string; port?: number; url?: string };
        try {
          entry = JSON.parse(line);
        } catch {
          continue;
        }
        if (entry.msg === 'SSH door listening' && typeof entry.port === 'number') sshPort = entry.port;
        if (entry.msg === 'HTTP API listening' && typeof entry.url === 'string') httpPort = Number(new URL(entry.url).port);
        if (sshPort && httpPort) {
          clearTimeout(timer);
          resolve();
        }
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => keep(chunk.toString().trimEnd()));
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`service exited (${code ?? signal}) before listening:\n${lines.join('\n')}`));
    });
  });
  try {
    await ready;
  } catch (err) {
    await stopService({ child, group, pid: group, sshPort: 0, httpPort: 0, log: () => '', counts });
    throw err;
  }
  return { child, group, pid: serverPid(group, sshPort), sshPort, httpPort, log: () => lines.join('\n'), counts };
}

async function stopService(service: Service): Promise<void> {
  const { group } = service;
  killGroup(group, 'SIGTERM');
  const deadline = Date.now() + 5000;
  while (groupAlive(group) && Date.now() < deadline) await sleep(100);
  if (groupAlive(group)) killGroup(group, 'SIGKILL');
  while (groupAlive(group) && Date.now() < deadline + 2000) await sleep(50);
  groups.delete(group);
}

// ---------------------------------------------------------------------------------------------
// Observer: a worker thread, so the load generator's own busy event loop does not delay probes.
// It samples the server's RSS and CPU every 100 ms, GETs /healthz every 200 ms and, if asked,
// runs a legitimate `ssh ... whoami` every 500 ms and counts the server's open files every
// `fdEveryMs`.

type Sample = { t: number; rssKb: number; cpuMs: number };
type FdSample = { t: number; fds: number };
type Probe = { t: number; ms: number; ok: boolean; detail: string };
type Observed = { samples: Sample[]; fdSamples: FdSample[]; probes: Probe[]; sshRuns: Probe[] };

const OBSERVER_SOURCE = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const http = require('node:http');
const { spawn } = require('node:child_process');
const { pid, httpPort, clkTck, sshArgs, fdEveryMs } = workerData;
const samples = [], fdSamples = [], probes = [], sshRuns = [];
let stopped = false;
let sshChild = null;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function sample() {
  try {
    const rss = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync('/proc/' + pid + '/status', 'utf8'));
    const f = fs.readFileSync('/proc/' + pid + '/stat', 'utf8').split(') ')[1].split(' ');
    samples.push({ t: Date.now(), rssKb: rss ? Number(rss[1]) : NaN, cpuMs: ((Number(f[11]) + Number(f[12])) * 1000) / clkTck });
  } catch {}
}
sample();
const sampler = setInterval(sample, 100);
function countFds() {
  try {
    fdSamples.push({ t: Date.now(), fds: fs.readdirSync('/proc/' + pid + '/fd').length });
  } catch {}
}
if (fdEveryMs) countFds();
const fdCounter = fdEveryMs ? setInterval(countFds, fdEveryMs) : null;
const inFlight = new Set();
function healthz() {
  const t = Date.now(), start = performance.now();
  const probe = { t, ms: NaN, ok: false, detail: '' };
  probes.push(probe);
  let done = false;
  const finish = (ok, detail) => {
    if (done) return;
    done = true;
    inFlight.delete(abandon);
    probe.ms = performance.now() - start;
    probe.ok = ok;
    probe.detail = detail;
  };
  const req = http.get({ host: '127.0.0.1', port: httpPort, path: '/healthz', agent: false, timeout: 10000 }, (res) => {
    res.resume();
    res.on('end', () => finish(res.statusCode === 200, 'HTTP ' + res.statusCode));
    res.on('error', (e) => finish(false, e.message));
  });
  req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
  req.on('error', (e) => finish(false, e.message));
  const abandon = () => { finish(false, 'no answer by the end of the run'); req.destroy(); };
  inFlight.add(abandon);
}
function sshWhoami() {
  return new Promise((resolve) => {
    const t = Date.now(), start = performance.now();
    let out = '';
    const child = spawn('ssh', sshArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
    sshChild = child;
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20000);
    child.on('error', (e) => { out += e.message; });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      sshChild = null;
      const ok = code === 0 && /SHA256:/.test(out);
      resolve({ t, ms: performance.now() - start, ok, detail: ok ? '' : 'exit ' + (code ?? signal) + ': ' + out.trim().slice(0, 200) });
    });
  });
}
async function every(periodMs, op, sink) {
  let next = Date.now();
  while (!stopped) {
    sink.push(await op());
    next += periodMs;
    const wait = next - Date.now();
    if (wait > 0) await sleep(wait);
    else next = Date.now();
  }
}
// /healthz is open-loop: one request every 200 ms whether or not the last one answered, so a
// stalled server shows up as many slow requests rather than one (no coordinated omission).
const prober = setInterval(healthz, 200);
healthz();
const loops = [];
if (sshArgs) loops.push(every(500, sshWhoami, sshRuns));
parentPort.on('message', async (m) => {
  if (m !== 'stop') return;
  stopped = true;
  clearInterval(sampler);
  clearInterval(prober);
  if (fdCounter) clearInterval(fdCounter);
  for (const abandon of [...inFlight]) abandon();
  if (sshChild) sshChild.kill('SIGKILL');
  await Promise.all(loops);
  parentPort.postMessage({ samples, fdSamples, probes, sshRuns });
});
`;

class Observer {
  private readonly worker: Worker;
  constructor(service: Service, sshArgs?: string[], fdEveryMs = 0) {
    this.worker = new Worker(OBSERVER_SOURCE, {
      eval: true,
      workerData: { pid: service.pid, httpPort: service.httpPort, clkTck: CLK_TCK, sshArgs, fdEveryMs },
    });
  }
  stop(): Promise<Observed> {
    return new Promise((resolve, reject) => {
      this.worker.once('message', (data: Observed) => {
        void this.worker.terminate();
        resolve(data);
      });
      this.worker.once('error', reject);
      this.worker.postMessage('stop');
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function sleep(ms: number) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const mb = (kb: number) => (Number.isFinite(kb) ? (kb / 1024).toFixed(0) : '?');
const ms = (v: number) => (Number.isFinite(v) ? (v >= 100 ? v.toFixed(0) : v.toFixed(1)) : '–');

/** Failed requests count at the time they took to fail (a lower bound), so a stall is not hidden. */
function latencySummary(probes: Probe[]) {
  const all = probes.map((p) => p.ms);
  const failed = probes.filter((p) => !p.ok).length;
  const max = all.length ? Math.max(...all) : NaN;
  return {
    n: probes.length,
    failed,
    p50: percentile(all, 50),
    p95: percentile(all, 95),
    p99: percentile(all, 99),
    max,
    text: `${ms(percentile(all, 50))} / ${ms(percentile(all, 95))} / ${ms(max)} (n=${probes.length}${failed ? `, ${failed} failed` : ''})`,
    text99: `${ms(percentile(all, 50))} / ${ms(percentile(all, 99))} / ${ms(max)} (n=${probes.length}${failed ? `, ${failed} failed` : ''})`,
    failures: [...new Set(probes.filter((p) => !p.ok).map((p) => p.detail))].map(
      (detail) => `${probes.filter((p) => !p.ok && p.detail === detail).length}× ${detail}`,
    ),
  };
}

const within = <T extends { t: number }>(items: T[], from: number, to: number) => items.filter((i) => i.t >= from && i.t < to);

function table(headers: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n');
}

function keygen(file: string) {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', path.basename(file), '-f', file]);
}

/** A legitimate OpenSSH client from 127.0.0.1: `ssh -o BatchMode=yes … keys@127.0.0.1 whoami`. */
function legitSshArgs(service: Service, keyFile: string): string[] {
  return ['-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-p', String(service.sshPort), '-i', keyFile, 'keys@127.0.0.1', 'whoami'];
}

function sshConnect(port: number, config: Omit<ssh2.ConnectConfig, 'sock'>, localAddress?: string): Promise<ssh2.Client> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    client.once('ready', () => resolve(client));
    client.on('error', reject);
    // A server at a connection cap closes before its banner: ssh2 then reports only 'close'.
    client.once('close', () => reject(new Error('closed by the server before authentication')));
    const sock = net.connect({ port, host: '127.0.0.1', localAddress }, () => {
      sock.setNoDelay(true);
      client.connect({ ...config, sock });
    });
    sock.on('error', reject);
    sock.once('close', () => reject(new Error('closed by the server before authentication')));
  });
}

// ---------------------------------------------------------------------------------------------
// A. Shell flood

type FloodResult = {
  variant: string;
  connections: number;
  reading: boolean;
  kbSentPerConn: number;
  busyMs: number;
  capped: boolean;
  closedByServer: number;
  outputMb: number | null;
  rssBeforeKb: number;
  rssPeakKb: number;
  rssEndKb: number;
  serverCpuMs: number;
  healthz: ReturnType<typeof latencySummary>;
};

async function shellFlood(service: Service, keyFile: string, variant: string, connections: number, reading: boolean): Promise<FloodResult> {
  const privateKey = fs.readFileSync(keyFile);
  const clients: ssh2.Client[] = [];
  const channels: ssh2.ClientChannel[] = [];
  let outputBytes = 0;
  let closedByServer = 0;
  let ending = false;
  try {
    for (let i = 0; i < connections; i++) {
      const client = await sshConnect(service.sshPort, { username: 'keys', privateKey, readyTimeout: 30_000 });
      client.on('error', () => undefined);
      clients.push(client);
      const channel = await new Promise<ssh2.ClientChannel>((resolve, reject) =>
        client.shell({ term: 'xterm', rows: 24, cols: 80 }, (err, ch) => (err ? reject(err) : resolve(ch))),
      );
      if (reading) {
        channel.on('data', (d: Buffer) => (outputBytes += d.length));
        channel.stderr.on('data', (d: Buffer) => (outputBytes += d.length));
      } else {
        // Never read: ssh2 stops granting window once 2 MB sit unread, so the server must hold the rest.
        channel.pause();
        channel.stderr.pause();
      }
      channel.on('close', () => {
        if (!ending) closedByServer++;
      });
      channel.on('error', () => undefined);
      channels.push(channel);
    }
    await sleep(500); // greeting and prompt out of the way

    const observer = new Observer(service);
    await sleep(300);
    const start = Date.now();
    const cpuStart = cpuMsOf(service.pid);
    const sent = channels.map(() => 0);
    let lastProgress = Date.now();
    const chunk = Buffer.alloc(1024, '\r');
    const writers = channels.map(async (channel, i) => {
      let open = true;
      channel.once('close', () => (open = false));
      while (open && sent[i]! < FLOOD_KB && Date.now() - start < FLOOD_MAX_MS) {
        const more = channel.write(chunk);
        sent[i]!++;
        lastProgress = Date.now();
        if (!more) {
          await new Promise<void>((resolve) => {
            const done = () => {
              channel.off('drain', done);
              channel.off('close', done);
              clearTimeout(timer);
              resolve();
            };
            const timer = setTimeout(done, Math.max(0, FLOOD_MAX_MS - (Date.now() - start)));
            channel.once('drain', done);
            channel.once('close', done);
          });
        }
      }
    });
    let allWritten = false;
    void Promise.all(writers).then(() => (allWritten = true));

    // The flood lasts while the server works on it: until writing is over (done or stalled for
    // 1 s) and the server has used < 10% of a core over the last second, or FLOOD_MAX_S.
    const cpuTrail: { t: number; cpu: number }[] = [];
    let end = 0;
    let capped = false;
    while (!end) {
      await sleep(100);
      const now = Date.now();
      cpuTrail.push({ t: now, cpu: cpuMsOf(service.pid) });
      const old = cpuTrail.find((s) => s.t >= now - 1000)!;
      const idle = now - start >= 1000 && now - old.t >= 900 && cpuTrail.at(-1)!.cpu - old.cpu < 100;
      const writingOver = allWritten || now - lastProgress >= 1000;
      if (idle && writingOver) end = now;
      else if (now - start >= FLOOD_MAX_MS) {
        end = now;
        capped = true;
      }
    }
    const cpuEnd = cpuMsOf(service.pid);
    await sleep(FLOOD_AFTER_MS);
    const afterEnd = Date.now();
    const observed = await observer.stop();

    const before = observed.samples.filter((s) => s.t <= start).at(-1) ?? observed.samples[0]!;
    const window = within(observed.samples, start, afterEnd + 1);
    return {
      variant,
      connections,
      reading,
      kbSentPerConn: Math.min(...sent),
      busyMs: end - start,
      capped,
      closedByServer,
      outputMb: reading ? outputBytes / 1048576 : null,
      rssBeforeKb: before.rssKb,
      rssPeakKb: Math.max(before.rssKb, ...window.map((s) => s.rssKb)),
      rssEndKb: observed.samples.at(-1)!.rssKb,
      serverCpuMs: cpuEnd - cpuStart,
      healthz: latencySummary(within(observed.probes, start, end)),
    };
  } finally {
    ending = true;
    for (const client of clients) client.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// B. Crafted RSA keys

function sshString(data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  return Buffer.concat([length, data]);
}

/** A made-up odd number of exactly `bits` bits (top bit set), big-endian. */
function oddNumber(bits: number): Buffer {
  const bytes = randomBytes(Math.ceil(bits / 8));
  const top = (bits - 1) % 8;
  bytes[0] = (bytes[0]! & ((1 << top) - 1)) | (1 << top);
  bytes[bytes.length - 1]! |= 1;
  return bytes;
}

/** As an SSH mpint: a leading zero byte when the top bit is set. */
const mpint = (n: Buffer) => sshString(n[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), n]) : n);

/**
 * An ssh-rsa public key line with a made-up odd modulus (no primes needed): 16384 bits with
 * e = 65537, or ('bige') 3072 bits with a 3070-bit exponent. OpenSSL caps e at 64 bits only for
 * moduli above 3072 bits, so the latter makes each verify cost about a private-key operation.
 */
function craftedRsaLine(kind: 'big-n' | 'big-e'): string {
  const exponent = kind === 'big-e' ? oddNumber(3070) : Buffer.from([0x01, 0x00, 0x01]);
  const modulus = oddNumber(kind === 'big-e' ? 3072 : 16384);
  const blob = Buffer.concat([sshString(Buffer.from('ssh-rsa')), mpint(exponent), mpint(modulus)]);
  return `ssh-rsa ${blob.toString('base64')} crafted`;
}

/** An agent that holds only public keys and "signs" with random bytes of the modulus's length. */
class GarbageAgent extends ssh2.BaseAgent {
  signatures = 0;
  constructor(
    private readonly lines: string[],
    private readonly modulusBytes: number,
  ) {
    super();
  }
  override getIdentities(cb: (err: Error | undefined, keys?: string[]) => void) {
    cb(undefined, this.lines);
  }
  override sign(_key: unknown, _data: Buffer, options: unknown, cb?: (err: Error | undefined, signature?: Buffer) => void) {
    const done = (typeof options === 'function' ? options : cb) as (err: Error | undefined, signature?: Buffer) => void;
    this.signatures++;
    const signature = randomBytes(this.modulusBytes);
    signature[0] = 0x01; // below the modulus, so the server does the full modexp
    done(undefined, signature);
  }
}

function attackOnce(port: number, agent: GarbageAgent): Promise<void> {
  return new Promise((resolve) => {
    const client = new ssh2.Client();
    const timer = setTimeout(() => client.destroy(), 30_000);
    const finish = () => {
      clearTimeout(timer);
      resolve();
    };
    client.on('error', () => undefined); // "All configured authentication methods failed" is the point
    client.on('ready', () => client.end()); // would be a bug in the server
    client.on('close', finish);
    const sock = net.connect(port, '127.0.0.1', () => {
      sock.setNoDelay(true);
      client.connect({ sock, username: 'keys', agent, authHandler: ['agent'], readyTimeout: 30_000 });
    });
    sock.on('error', () => {
      client.destroy();
      finish();
    });
  });
}

async function rsaAttack(port: number, mode: string, sameKeyLine: string) {
  let connections = 0;
  let signatures = 0;
  const deadline = Date.now() + RSA_MS;
  await Promise.all(
    Array.from({ length: RSA_CONCURRENCY }, async () => {
      while (Date.now() < deadline) {
        const lines = Array.from({ length: RSA_TRIES }, () =>
          mode === 'fresh' ? craftedRsaLine('big-n') : mode === 'bige' ? craftedRsaLine('big-e') : sameKeyLine,
        );
        const agent = new GarbageAgent(lines, mode === 'bige' ? 384 : 2048);
        await attackOnce(port, agent);
        connections++;
        signatures += agent.signatures;
      }
    }),
  );
  return { connections, signatures };
}

function rsaKeyLine(): string {
  if (!fs.existsSync(`${RSA_KEY}.pub`)) {
    console.error(`generating ${RSA_KEY} (ssh-keygen -t rsa -b 16384, takes minutes; cached for next time)`);
    execFileSync('ssh-keygen', ['-q', '-t', 'rsa', '-b', '16384', '-N', '', '-C', 'bench-rsa16384', '-f', RSA_KEY]);
  }
  return fs.readFileSync(`${RSA_KEY}.pub`, 'utf8').trim();
}

// ---------------------------------------------------------------------------------------------
// C and D: raw TCP attackers in child processes
//
// Each child holds at most ATTACK_SOCKETS_PER_PROCESS sockets, so no attacker process comes near
// its own file limit (the same as the service's here: whoever runs out must be the service). A
// child opens its slots (address, count) round-robin over the addresses, `roundsPerSecond` rounds
// of one connection per address a second (0: as fast as `inFlight` pending connects allow),
// optionally writes `payload` once connected, reads and discards whatever comes back, and exits
// when told to stop or when this process goes away (its IPC channel closes). Each slot binds its
// own window of local ports (bind(address, 0) would make the kernel search the port range on
// every connect, which costs the attacker more than the service once thousands are taken);
// a port its server closed is reused last. On stop, connections end with a reset, so no port
// is left in TIME_WAIT for the next run.

type AttackSlot = { address: string; count: number; portLow: number; portHigh: number };
type AttackJob = { port: number; slots: AttackSlot[]; payload: string | null; roundsPerSecond: number; inFlight: number; reconnectMs: number };
type AttackStats = {
  attempted: number;
  accepted: number;
  refused: number;
  closedAtOnce: number;
  closedLater: number;
  open: number;
  greeted: number;
  errors: Record<string, number>;
};

/** Local ports the attackers bind, per address (explicitly: any port, not just the ephemeral range). */
const LOCAL_PORTS = { low: 10_000, high: 65_535 };

const ATTACKER_SOURCE = String.raw`
const net = require('node:net');
const stats = { attempted: 0, accepted: 0, refused: 0, closedAtOnce: 0, closedLater: 0, open: 0, greeted: 0, errors: {} };
const sockets = new Set();
const queue = [];
let head = 0, pending = 0, stopping = false, job = null;
const note = (key) => (stats.errors[key] = (stats.errors[key] || 0) + 1);
function takePort(slot) {
  if (slot.cursor <= slot.portHigh) return slot.cursor++;
  if (slot.freeHead < slot.free.length) return slot.free[slot.freeHead++];
  return 0;
}
function releasePort(slot, port) {
  slot.free.push(port);
  if (slot.freeHead > 4096 && slot.freeHead * 2 > slot.free.length) { slot.free = slot.free.slice(slot.freeHead); slot.freeHead = 0; }
}
function pump() {
  while (!stopping && pending < job.inFlight && head < queue.length) open(queue[head++]);
  if (head > 4096 && head === queue.length) { queue.length = 0; head = 0; }
}
function open(slot) {
  const localPort = takePort(slot);
  if (!localPort) { stats.attempted++; stats.refused++; note('no free local port'); return; }
  pending++;
  let connectedAt = 0, greeted = false, settled = false, portTaken = false;
  const socket = net.connect({ host: '127.0.0.1', port: job.port, localAddress: slot.address, localPort });
  sockets.add(socket);
  const settle = () => { if (!settled) { settled = true; pending--; pump(); } };
  const timer = setTimeout(() => { if (!connectedAt) { note('no handshake within 10 s'); socket.destroy(); } }, 10000);
  socket.on('connect', () => {
    clearTimeout(timer);
    connectedAt = Date.now();
    stats.attempted++;
    stats.accepted++;
    stats.open++;
    slot.inUseRetries = 0;
    settle();
    if (job.payload) socket.write(job.payload);
  });
  socket.on('data', () => { if (!greeted) { greeted = true; stats.greeted++; } });
  socket.on('error', (err) => {
    if (stopping) return;
    // A local port someone else holds: not the service's doing; take another one.
    if (!connectedAt && err.code === 'EADDRINUSE' && ++slot.inUseRetries < 1000) portTaken = true;
    else note((connectedAt ? 'after connect: ' : '') + (err.code || err.message));
  });
  socket.on('close', () => {
    clearTimeout(timer);
    sockets.delete(socket);
    if (portTaken) { settle(); queue.push(slot); pump(); return; }
    releasePort(slot, localPort);
    if (connectedAt) {
      stats.open--;
      if (!stopping) Date.now() - connectedAt <= 1000 ? stats.closedAtOnce++ : stats.closedLater++;
    } else if (!stopping) { stats.attempted++; stats.refused++; }
    settle();
    if (!stopping && job.reconnectMs > 0) setTimeout(() => { queue.push(slot); pump(); }, job.reconnectMs);
  });
}
process.on('disconnect', () => process.exit(0));
process.on('message', (m) => {
  if (m.type === 'start') {
    job = m.job;
    for (const slot of job.slots) Object.assign(slot, { cursor: slot.portLow, free: [], freeHead: 0, inUseRetries: 0 });
    const rounds = Math.max(...job.slots.map((s) => s.count));
    const round = (r) => { for (const s of job.slots) if (s.count > r) queue.push(s); pump(); };
    if (!job.roundsPerSecond) for (let r = 0; r < rounds; r++) round(r);
    else for (let r = 0; r < rounds; r++) setTimeout(() => { if (!stopping) round(r); }, (r * 1000) / job.roundsPerSecond);
  } else if (m.type === 'stats') {
    process.send({ type: 'stats', stats });
  } else if (m.type === 'stop') {
    stopping = true;
    for (const socket of sockets) socket.connecting ? socket.destroy() : socket.resetAndDestroy();
    process.send({ type: 'stats', stats }, () => process.exit(0));
  }
});
`;

/**
 * Splits (address, count) slots over as few children as hold them, an address split if need be,
 * and gives each part its own share of LOCAL_PORTS for its address, in proportion to its count.
 */
function splitSlots(slots: { address: string; count: number }[], perProcess: number): AttackSlot[][] {
  const out: AttackSlot[][] = [[]];
  let room = perProcess;
  for (const { address, count } of slots) {
    const ports = LOCAL_PORTS.high - LOCAL_PORTS.low + 1;
    let left = count;
    let portLow = LOCAL_PORTS.low;
    while (left > 0) {
      if (room === 0) {
        out.push([]);
        room = perProcess;
      }
      const take = Math.min(left, room);
      const share = left === take ? LOCAL_PORTS.high + 1 - portLow : Math.floor((ports * take) / count);
      out.at(-1)!.push({ address, count: take, portLow, portHigh: portLow + share - 1 });
      portLow += share;
      left -= take;
      room -= take;
    }
  }
  return out;
}

class Attackers {
  private readonly children: ChildProcess[] = [];
  private readonly waiting = new Map<ChildProcess, ((stats: AttackStats) => void)[]>();
  private readonly last = new Map<ChildProcess, AttackStats>();

  constructor(job: Omit<AttackJob, 'slots'>, slots: { address: string; count: number }[]) {
    for (const part of splitSlots(slots, SOCKETS_PER_PROCESS)) {
      const child = spawn(process.execPath, ['-e', ATTACKER_SOURCE], { env: { PATH: process.env.PATH }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      attackerPids.add(child.pid!);
      child.once('exit', () => {
        attackerPids.delete(child.pid!);
        // A child that died answers every later question with what it last said.
        for (const resolve of this.waiting.get(child)?.splice(0) ?? []) resolve(this.last.get(child) ?? emptyStats());
      });
      this.waiting.set(child, []);
      child.on('message', (m: { type: string; stats: AttackStats }) => {
        if (m.type !== 'stats') return;
        this.last.set(child, m.stats);
        this.waiting.get(child)!.shift()?.(m.stats);
      });
      child.send({ type: 'start', job: { ...job, slots: part } satisfies AttackJob });
      this.children.push(child);
    }
  }

  get processes() {
    return this.children.length;
  }

  private ask(type: 'stats' | 'stop'): Promise<AttackStats> {
    return Promise.all(
      this.children.map(
        (child) =>
          new Promise<AttackStats>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null || !child.connected) return resolve(this.last.get(child) ?? emptyStats());
            this.waiting.get(child)!.push(resolve);
            child.send({ type });
          }),
      ),
    ).then(sumStats);
  }

  stats(): Promise<AttackStats> {
    return this.ask('stats');
  }

  /** Closes every attacker socket; the children exit (killed if they have not within 5 s). */
  async stop(): Promise<AttackStats> {
    const final = await Promise.race([this.ask('stop'), sleep(10_000).then(() => null)]);
    const deadline = Date.now() + 5000;
    while (this.children.some((c) => c.exitCode === null && c.signalCode === null) && Date.now() < deadline) await sleep(50);
    for (const child of this.children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    return final ?? sumStats([...this.last.values()]);
  }
}

function emptyStats(): AttackStats {
  return { attempted: 0, accepted: 0, refused: 0, closedAtOnce: 0, closedLater: 0, open: 0, greeted: 0, errors: {} };
}

function sumStats(all: AttackStats[]): AttackStats {
  const sum = emptyStats();
  for (const s of all) {
    for (const key of ['attempted', 'accepted', 'refused', 'closedAtOnce', 'closedLater', 'open', 'greeted'] as const) sum[key] += s[key];
    for (const [error, count] of Object.entries(s.errors)) sum.errors[error] = (sum.errors[error] ?? 0) + count;
  }
  return sum;
}

/** 127.0.0.2, 127.0.0.3, … 127.0.0.254, 127.0.1.1, …: never 127.0.0.1 (the observer's), .0 or .255. */
function loopbackAddresses(count: number): string[] {
  const out: string[] = [];
  for (let n = 2; out.length < count; n++) {
    if (n >= 1 << 16) throw new Error(`at most ${254 * 256 - 1} loopback addresses`);
    if ((n & 255) === 0 || (n & 255) === 255) continue;
    out.push(`127.0.${n >> 8}.${n & 255}`);
  }
  return out;
}

function openFileLimit(pid: number | 'self'): string {
  try {
    const line = fs.readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    return line ? line.split(/\s{2,}/)[1]!.trim() : '?';
  } catch {
    return '?';
  }
}

function checkAttackSize(name: string, slots: { address: string; count: number }[]) {
  const total = slots.reduce((n, s) => n + s.count, 0);
  if (total > MAX_ATTACK_SOCKETS) throw new Error(`${name}: ${total} connections, more than the ${MAX_ATTACK_SOCKETS} this bench allows`);
  const perAddress = new Map<string, number>();
  for (const s of slots) perAddress.set(s.address, (perAddress.get(s.address) ?? 0) + s.count);
  // Room for reconnects: a port is reused only once its slot has gone round its whole window.
  const ports = Math.floor((LOCAL_PORTS.high - LOCAL_PORTS.low + 1) * 0.8);
  for (const [address, count] of perAddress) {
    if (count > ports) throw new Error(`${name}: ${count} connections from ${address}, more than the ${ports} local ports this bench uses per address`);
  }
}

/** What the service's probes saw over an attack, and how its RSS and open files went. */
type ServiceUnderAttack = {
  rssBeforeKb: number;
  rssPeakKb: number;
  rssEndKb: number;
  fdsBefore: number;
  fdsPeak: number;
  fdsEnd: number;
  healthz: ReturnType<typeof latencySummary>;
  ssh: { ok: number; failed: number; summary: ReturnType<typeof latencySummary> };
  log: LogCounts;
};

function underAttack(observed: Observed, from: number, to: number, logBefore: LogCounts, logAfter: LogCounts): ServiceUnderAttack {
  const rssBefore = observed.samples.filter((s) => s.t <= from).at(-1) ?? observed.samples[0]!;
  const fdsBefore = observed.fdSamples.filter((s) => s.t <= from).at(-1) ?? observed.fdSamples[0] ?? { t: 0, fds: NaN };
  const rss = within(observed.samples, from, to + 1);
  const fds = within(observed.fdSamples, from, to + 1);
  const sshRuns = within(observed.sshRuns, from, to);
  return {
    rssBeforeKb: rssBefore.rssKb,
    rssPeakKb: Math.max(rssBefore.rssKb, ...rss.map((s) => s.rssKb)),
    rssEndKb: rss.at(-1)?.rssKb ?? NaN,
    fdsBefore: fdsBefore.fds,
    fdsPeak: Math.max(fdsBefore.fds, ...fds.map((s) => s.fds)),
    fdsEnd: fds.at(-1)?.fds ?? NaN,
    healthz: latencySummary(within(observed.probes, from, to)),
    ssh: { ok: sshRuns.filter((r) => r.ok).length, failed: sshRuns.filter((r) => !r.ok).length, summary: latencySummary(sshRuns) },
    log: { lines: logAfter.lines - logBefore.lines, errors: logAfter.errors - logBefore.errors, emfile: logAfter.emfile - logBefore.emfile },
  };
}

const CHECKPOINTS_S = [5, 20, 40];

type TcpFloodResult = {
  name: string;
  planned: number;
  processes: number;
  seconds: number;
  stats: AttackStats;
  openAt: { s: number; open: number }[];
  openPeak: number;
  service: ServiceUnderAttack;
};

/** Runs one raw TCP attack for `holdMs` against a service, observed throughout. */
async function tcpFlood(
  service: Service,
  legitKey: string,
  name: string,
  job: Omit<AttackJob, 'slots'>,
  slots: { address: string; count: number }[],
  holdMs: number,
): Promise<TcpFloodResult> {
  checkAttackSize(name, slots);
  const observer = new Observer(service, legitSshArgs(service, legitKey), 500);
  await sleep(2000); // baseline
  const logBefore = { ...service.counts };
  const start = Date.now();
  const attackers = new Attackers(job, slots);
  const openAt: { s: number; open: number }[] = [];
  let openPeak = 0;
  let final: AttackStats;
  let end = 0;
  let observed: Observed;
  // Polled every second by the wall clock; a checkpoint takes the poll answered nearest to it.
  const polls: { s: number; open: number }[] = [];
  try {
    for (let tick = 1; Date.now() - start < holdMs; tick++) {
      await sleep(Math.min(start + tick * 1000, start + holdMs) - Date.now());
      const stats = await attackers.stats();
      const s = (Date.now() - start) / 1000;
      polls.push({ s, open: stats.open });
      openPeak = Math.max(openPeak, stats.open);
      if (tick % 5 === 0) console.error(`${name}: ${s.toFixed(1)} s, ${stats.open} open, ${stats.accepted} accepted, ${stats.refused} refused, ${stats.closedAtOnce} closed at once`);
    }
    for (const c of CHECKPOINTS_S) {
      if (c * 1000 > holdMs) continue;
      const nearest = polls.reduce((a, b) => (Math.abs(b.s - c) < Math.abs(a.s - c) ? b : a));
      openAt.push({ s: c, open: nearest.open });
    }
  } finally {
    end = Date.now();
    final = await attackers.stop();
    observed = await observer.stop();
  }
  return {
    name,
    planned: slots.reduce((n, s) => n + s.count, 0),
    processes: attackers.processes,
    seconds: (end - start) / 1000,
    stats: final,
    openAt,
    openPeak,
    service: underAttack(observed, start, end, logBefore, service.counts),
  };
}

function printTcpFlood(title: string, r: TcpFloodResult) {
  console.log(`## ${title}\n`);
  const s = r.service;
  console.log(
    table(
      ['attack', 'accepted / refused', 'closed at once / later', `open at ${CHECKPOINTS_S.join(' / ')} s (peak)`, 'RSS before / peak MB', 'open files before / peak', 'healthz p50 / p99 / max ms', 'legit ssh ok / failed', 'service log lines (errors, EMFILE)'],
      [
        [
          `${r.planned} conns, ${r.seconds.toFixed(0)} s`,
          `${r.stats.accepted} / ${r.stats.refused}`,
          `${r.stats.closedAtOnce} / ${r.stats.closedLater}`,
          `${CHECKPOINTS_S.map((c) => r.openAt.find((o) => o.s === c)?.open ?? '–').join(' / ')} (${r.openPeak})`,
          `${mb(s.rssBeforeKb)} / ${mb(s.rssPeakKb)}`,
          `${s.fdsBefore} / ${s.fdsPeak}`,
          s.healthz.text99,
          `${s.ssh.ok} / ${s.ssh.failed}`,
          `${s.log.lines} (${s.log.errors}, ${s.log.emfile})`,
        ],
      ],
    ),
  );
  const errors = Object.entries(r.stats.errors).sort((a, b) => b[1] - a[1]);
  if (errors.length) console.log(`\nattacker socket errors: ${errors.map(([e, n]) => `${n}× ${e}`).join(', ')}`);
  if (r.stats.greeted) console.log(`\nattacker connections that received bytes from the server: ${r.stats.greeted}`);
  for (const failure of s.healthz.failures) console.log(`\n/healthz failures: ${failure}`);
  for (const failure of s.ssh.summary.failures) console.log(`\nlegit ssh failures: ${failure}`);
  console.log();
}

// ---------------------------------------------------------------------------------------------
// E. Authenticated sessions from many addresses

type SessionFloodResult = {
  planned: number;
  rampS: number;
  authenticated: number;
  refused: number;
  refusals: Record<string, number>;
  sessions: number;
  sessionRefusals: number;
  maxSessionsSeen: number;
  closedByServer: number;
  heldAtEnd: number;
  service: ServiceUnderAttack;
};

async function sessionFlood(service: Service, keyFile: string, legitKey: string): Promise<SessionFloodResult> {
  const addresses = loopbackAddresses(SESSIONS_ADDRESSES);
  const planned = SESSIONS_ADDRESSES * SESSIONS_PER_ADDRESS;
  if (planned > MAX_HELD_SESSION_CONNS) throw new Error(`E: ${planned} connections, more than the ${MAX_HELD_SESSION_CONNS} this process may hold`);
  const privateKey = fs.readFileSync(keyFile);
  const observer = new Observer(service, legitSshArgs(service, legitKey), 500);
  await sleep(2000); // baseline
  const logBefore = { ...service.counts };
  const start = Date.now();
  const clients = new Set<ssh2.Client>();
  const refusals: Record<string, number> = {};
  let next = 0;
  let authenticated = 0;
  let refused = 0;
  let sessions = 0;
  let sessionRefusals = 0;
  let maxSessionsSeen = 0;
  let closedByServer = 0;
  let ending = false;
  const reason = (err: unknown) => (err instanceof Error ? err.message : String(err)).slice(0, 80);
  let rampEnd = 0;
  let reported = start;
  let end = 0;
  let heldAtEnd = 0;
  let observed: Observed;
  try {
    await Promise.all(
      Array.from({ length: SESSIONS_INFLIGHT }, async () => {
        while (next < planned && Date.now() - start < SESSIONS_RAMP_MS) {
          const address = addresses[next++ % addresses.length]!;
          let client: ssh2.Client;
          try {
            client = await sshConnect(service.sshPort, { username: 'keys', privateKey, readyTimeout: 20_000 }, address);
          } catch (err) {
            refused++;
            refusals[reason(err)] = (refusals[reason(err)] ?? 0) + 1;
            continue;
          }
          authenticated++;
          clients.add(client);
          client.on('error', () => undefined);
          client.once('close', () => {
            clients.delete(client);
            if (!ending) closedByServer++;
          });
          let opened = 0;
          while (opened < SESSIONS_MAX && Date.now() - start < SESSIONS_RAMP_MS) {
            const channel = await new Promise<ssh2.ClientChannel | null>((resolve) => {
              try {
                client.shell({ term: 'xterm', rows: 24, cols: 80 }, (err, ch) => resolve(err ? null : ch));
              } catch {
                resolve(null); // the connection is gone
              }
            });
            if (!channel) {
              sessionRefusals++;
              break;
            }
            channel.on('data', () => undefined);
            channel.stderr.on('data', () => undefined);
            channel.on('error', () => undefined);
            opened++;
            sessions++;
          }
          maxSessionsSeen = Math.max(maxSessionsSeen, opened);
          if (Date.now() - reported >= 5000) {
            reported = Date.now();
            console.error(`E: ${((reported - start) / 1000).toFixed(0)} s, ${authenticated} connections, ${sessions} sessions, ${refused} refused`);
          }
        }
      }),
    );
    rampEnd = Date.now();
    console.error(`E: ramp done in ${((rampEnd - start) / 1000).toFixed(1)} s: ${authenticated} connections, ${sessions} sessions; holding ${SESSIONS_HOLD_MS / 1000} s`);
    await sleep(SESSIONS_HOLD_MS);
    heldAtEnd = clients.size;
    end = Date.now();
  } finally {
    ending = true;
    for (const client of clients) client.destroy();
    observed = await observer.stop();
  }
  return {
    planned,
    rampS: (rampEnd - start) / 1000,
    authenticated,
    refused,
    refusals,
    sessions,
    sessionRefusals,
    maxSessionsSeen,
    closedByServer,
    heldAtEnd,
    service: underAttack(observed, start, end, logBefore, service.counts),
  };
}

function printSessionFlood(r: SessionFloodResult) {
  const s = r.service;
  const perConn = (growth: number) => (r.heldAtEnd ? growth / r.heldAtEnd : NaN);
  console.log(
    `## E. Authenticated sessions: ${SESSIONS_ADDRESSES} addresses × ${SESSIONS_PER_ADDRESS} connections, an unlinked ed25519 key, up to ${SESSIONS_MAX} shells (pty) each, ramp ≤ ${SESSIONS_RAMP_MS / 1000} s, held ${SESSIONS_HOLD_MS / 1000} s\n`,
  );
  console.log(
    table(
      ['connections ok / refused (held at end)', 'sessions (max per conn; refused)', 'ramp s', 'RSS before / peak / end MB', 'RSS per conn KB', 'open files before / peak', 'files per conn', 'healthz p50 / p99 / max ms', 'legit ssh ok / failed', 'service log lines (errors, EMFILE)'],
      [
        [
          `${r.authenticated} / ${r.refused} (${r.heldAtEnd})`,
          `${r.sessions} (${r.maxSessionsSeen}; ${r.sessionRefusals})`,
          r.rampS.toFixed(1),
          `${mb(s.rssBeforeKb)} / ${mb(s.rssPeakKb)} / ${mb(s.rssEndKb)}`,
          perConn(s.rssEndKb - s.rssBeforeKb).toFixed(0),
          `${s.fdsBefore} / ${s.fdsPeak}`,
          perConn(s.fdsEnd - s.fdsBefore).toFixed(2),
          s.healthz.text99,
          `${s.ssh.ok} / ${s.ssh.failed}`,
          `${s.log.lines} (${s.log.errors}, ${s.log.emfile})`,
        ],
      ],
    ),
  );
  const refusals = Object.entries(r.refusals).sort((a, b) => b[1] - a[1]);
  if (refusals.length) console.log(`\nconnections refused: ${refusals.map(([e, n]) => `${n}× ${e}`).join(', ')}`);
  if (r.closedByServer) console.log(`\nconnections closed by the server while held: ${r.closedByServer}`);
  for (const failure of s.healthz.failures) console.log(`\n/healthz failures: ${failure}`);
  for (const failure of s.ssh.summary.failures) console.log(`\nlegit ssh failures: ${failure}`);
  console.log();
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const commit = (() => {
    try {
      return execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']).toString().trim();
    } catch {
      return '?';
    }
  })();
  const dirty = (() => {
    try {
      return execFileSync('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no']).toString().trim() ? ' + uncommitted changes' : '';
    } catch {
      return '';
    }
  })();
  const sameKeyLine = attacks.includes('B') && rsaModes.includes('same') ? rsaKeyLine() : '';

  const dbName = `shell_auth_flood_${Date.now()}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`);
  const dbUrl = new URL(adminUrl);
  dbUrl.pathname = `/${dbName}`;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-flood-'));
  const floodKey = path.join(work, 'flood_ed25519');
  const legitKey = path.join(work, 'legit_ed25519');
  keygen(floodKey);
  keygen(legitKey);
  let service: Service | undefined;
  const results: Record<string, unknown> = { root: ROOT, commit: commit + dirty };
  console.log(`# shell-auth flood bench: ${ROOT} @ ${commit}${dirty}`);
  console.log(`${os.cpus().length} CPUs shared by service, Postgres and load generator; node ${process.version}\n`);
  try {
    if (attacks.includes('A')) {
      const variants: [string, number, boolean][] = [
        ['1: not reading', 1, false],
        ['2: reading', 1, true],
        [`3: ${FLOOD_CONNS} conns, not reading`, FLOOD_CONNS, false],
      ];
      const flood: FloodResult[] = [];
      for (const [name, conns, reading] of variants) {
        service = await startService(dbUrl.toString(), work);
        try {
          const result = await shellFlood(service, floodKey, name, conns, reading);
          flood.push(result);
          console.error(`A ${name}: done (${(result.busyMs / 1000).toFixed(1)} s)`);
        } finally {
          await stopService(service);
          service = undefined;
        }
      }
      results.flood = flood;
      console.log(`## A. Shell flood: ${FLOOD_KB} KB of '\\r' per connection, unlinked ed25519 key, pty 80x24\n`);
      console.log(
        table(
          ['variant', 'KB sent/conn', 'busy s', 'server CPU s', 'RSS before MB', 'RSS peak MB', `RSS +${FLOOD_AFTER_MS / 1000}s MB`, 'healthz p50 / p95 / max ms', 'notes'],
          flood.map((r) => [
            r.variant,
            `${r.kbSentPerConn}/${FLOOD_KB}`,
            `${(r.busyMs / 1000).toFixed(1)}${r.capped ? ' (cap)' : ''}`,
            (r.serverCpuMs / 1000).toFixed(1),
            mb(r.rssBeforeKb),
            mb(r.rssPeakKb),
            mb(r.rssEndKb),
            r.healthz.text,
            [r.outputMb !== null ? `read ${r.outputMb.toFixed(1)} MB` : '', r.closedByServer ? `${r.closedByServer} closed by server` : '']
              .filter(Boolean)
              .join('; ') || '–',
          ]),
        ),
      );
      for (const r of flood) for (const failure of r.healthz.failures) console.log(`\n/healthz failures during "${r.variant}": ${failure}`);
      console.log();
    }

    if (attacks.includes('B')) {
      service = await startService(dbUrl.toString(), work);
      try {
        const observer = new Observer(service, legitSshArgs(service, legitKey));
        const phases: { name: string; from: number; to: number; cpuMs: number; genCpuMs: number; connections?: number; signatures?: number }[] = [];
        const genCpu = () => {
          const usage = process.cpuUsage();
          return (usage.user + usage.system) / 1000;
        };
        const idleFrom = Date.now();
        const idleCpu = cpuMsOf(service.pid);
        const idleGen = genCpu();
        await sleep(2500);
        phases.push({ name: 'idle (baseline)', from: idleFrom, to: Date.now(), cpuMs: cpuMsOf(service.pid) - idleCpu, genCpuMs: genCpu() - idleGen });
        for (const mode of rsaModes) {
          const from = Date.now();
          const cpu = cpuMsOf(service.pid);
          const gen = genCpu();
          const { connections, signatures } = await rsaAttack(service.sshPort, mode, sameKeyLine);
          const name =
            mode === 'fresh'
              ? 'attack: new made-up 16384-bit modulus per connection'
              : mode === 'bige'
                ? 'attack: made-up 3072-bit modulus, 3070-bit exponent'
                : 'attack: same ssh-keygen 16384-bit key';
          phases.push({ name, from, to: Date.now(), cpuMs: cpuMsOf(service.pid) - cpu, genCpuMs: genCpu() - gen, connections, signatures });
          console.error(`B ${mode}: ${connections} connections`);
          await sleep(1000); // let the tail of the attack drain before the next phase
        }
        const observed = await observer.stop();
        const rows = phases.map((p) => {
          const seconds = (p.to - p.from) / 1000;
          return {
            ...p,
            seconds,
            cpuMsPerS: p.cpuMs / seconds,
            healthz: latencySummary(within(observed.probes, p.from, p.to)),
            ssh: latencySummary(within(observed.sshRuns, p.from, p.to)),
          };
        });
        results.rsa = rows;
        console.log(`## B. Crafted RSA keys: ${RSA_CONCURRENCY} concurrent attackers, ${RSA_TRIES} offers of an ssh-rsa key per connection (as named per phase), garbage signatures from a key-less agent\n`);
        console.log(
          table(
            ['phase', 's', 'connections (/s)', 'garbage sigs sent', 'server CPU ms/s', 'server CPU ms/conn', 'generator CPU ms/s', 'healthz p50 / p95 / max ms', 'ssh whoami p50 / p95 / max ms'],
            rows.map((r) => [
              r.name,
              r.seconds.toFixed(1),
              r.connections === undefined ? '–' : `${r.connections} (${(r.connections / r.seconds).toFixed(1)})`,
              r.signatures === undefined ? '–' : String(r.signatures),
              r.cpuMsPerS.toFixed(0),
              r.connections ? (r.cpuMs / r.connections).toFixed(1) : '–',
              (r.genCpuMs / r.seconds).toFixed(0),
              r.healthz.text,
              r.ssh.text,
            ]),
          ),
        );
        for (const r of rows) {
          for (const failure of r.healthz.failures) console.log(`\n/healthz failures during "${r.name}": ${failure}`);
          for (const failure of r.ssh.failures) console.log(`\nssh whoami failures during "${r.name}": ${failure}`);
        }
        console.log();
      } finally {
        await stopService(service);
        service = undefined;
      }
    }

    if (attacks.includes('C')) {
      service = await startService(dbUrl.toString(), work, {});
      try {
        console.log(`service open-file limit ${openFileLimit(service.pid)}; this bench's ${openFileLimit('self')}, its attackers' the same, each holding ≤ ${SOCKETS_PER_PROCESS} sockets\n`);
        const result = await tcpFlood(
          service,
          legitKey,
          'C',
          { port: service.httpPort, payload: null, roundsPerSecond: 0, inFlight: 256, reconnectMs: RECONNECT_MS },
          [{ address: IDLE_HTTP_FROM, count: IDLE_HTTP_CONNS }],
          IDLE_HTTP_MS,
        );
        results.idleHttp = result;
        printTcpFlood(
          `C. Idle HTTP from one address: ${IDLE_HTTP_CONNS} TCP connections from ${IDLE_HTTP_FROM} sending nothing, held ${IDLE_HTTP_MS / 1000} s (${result.processes} attacker processes${RECONNECT_MS ? `, reconnecting after ${RECONNECT_MS / 1000} s` : ''})`,
          result,
        );
      } finally {
        await stopService(service);
        service = undefined;
      }
    }

    if (attacks.includes('D')) {
      service = await startService(dbUrl.toString(), work, {});
      try {
        if (!attacks.includes('C')) console.log(`service open-file limit ${openFileLimit(service.pid)}; this bench's ${openFileLimit('self')}, its attackers' the same, each holding ≤ ${SOCKETS_PER_PROCESS} sockets\n`);
        const payload = UNAUTH_SEND === 'line' ? 'SSH-2.0-flood\r\n' : 'SSH-2.0-';
        const result = await tcpFlood(
          service,
          legitKey,
          'D',
          { port: service.sshPort, payload, roundsPerSecond: UNAUTH_RATE, inFlight: 256, reconnectMs: RECONNECT_MS },
          loopbackAddresses(UNAUTH_ADDRESSES).map((address) => ({ address, count: UNAUTH_PER_ADDRESS })),
          UNAUTH_MS,
        );
        results.unauthSsh = result;
        printTcpFlood(
          `D. Unauthenticated SSH from many addresses: ${UNAUTH_ADDRESSES} addresses × ${UNAUTH_PER_ADDRESS} connections sending only ${JSON.stringify(payload)}, ${UNAUTH_RATE} new per address a second, held ${UNAUTH_MS / 1000} s (${result.processes} attacker processes${RECONNECT_MS ? `, reconnecting after ${RECONNECT_MS / 1000} s` : ''})`,
          result,
        );
      } finally {
        await stopService(service);
        service = undefined;
      }
    }

    if (attacks.includes('E')) {
      service = await startService(dbUrl.toString(), work, {});
      try {
        const result = await sessionFlood(service, floodKey, legitKey);
        results.sessions = result;
        printSessionFlood(result);
      } finally {
        await stopService(service);
        service = undefined;
      }
    }

    console.log(`\n<!-- ${JSON.stringify(results)} -->`);
  } catch (err) {
    if (service) console.error(`service log tail:\n${service.log().split('\n').slice(-30).join('\n')}`);
    throw err;
  } finally {
    if (service) await stopService(service);
    await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await admin.end();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

await main();
