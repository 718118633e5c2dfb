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
 * Env: BENCH_ROOT (service checkout, default: this one), BENCH_PG_URL (default
 * postgres://postgres@127.0.0.1:5432/test: a database is created beside it and dropped),
 * BENCH_ATTACKS (A,B), FLOOD_KB (50), FLOOD_CONNS (5), FLOOD_MAX_S (20), FLOOD_AFTER_S (3),
 * RSA_SECONDS (10), RSA_CONCURRENCY (16), RSA_TRIES (3 keys offered per connection),
 * RSA_MODES (same,fresh; also bige: 3072-bit modulus with a 3070-bit exponent), RSA_KEY (default /tmp/shell-auth-bench-rsa16384, made with ssh-keygen
 * if missing, which takes minutes).
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
const attacks = (process.env.BENCH_ATTACKS || 'A,B').toUpperCase().split(',');
const FLOOD_KB = num('FLOOD_KB', 50);
const FLOOD_CONNS = num('FLOOD_CONNS', 5);
const FLOOD_MAX_MS = num('FLOOD_MAX_S', 20) * 1000;
const FLOOD_AFTER_MS = num('FLOOD_AFTER_S', 3) * 1000;
const RSA_MS = num('RSA_SECONDS', 10) * 1000;
const RSA_CONCURRENCY = num('RSA_CONCURRENCY', 16);
const RSA_TRIES = num('RSA_TRIES', 3);
const rsaModes = (process.env.RSA_MODES || 'same,fresh').split(',');
const RSA_KEY = process.env.RSA_KEY || '/tmp/shell-auth-bench-rsa16384';
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

type Service = { child: ChildProcess; group: number; pid: number; sshPort: number; httpPort: number; log: () => string };

const groups = new Set<number>();

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
process.on('exit', () => {
  for (const group of groups) killGroup(group, 'SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    for (const group of groups) killGroup(group, 'SIGKILL');
    process.exit(130);
  });
}

async function startService(dbUrl: string, work: string): Promise<Service> {
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
      // Every client comes from 127.0.0.1 here.
      SSH_MAX_UNAUTH_PER_IP: '1000',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const group = child.pid!;
  groups.add(group);
  const lines: string[] = [];
  const keep = (line: string) => {
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
    await stopService({ child, group, pid: group, sshPort: 0, httpPort: 0, log: () => '' });
    throw err;
  }
  return { child, group, pid: serverPid(group, sshPort), sshPort, httpPort, log: () => lines.join('\n') };
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
// runs a legitimate `ssh ... whoami` every 500 ms.

type Sample = { t: number; rssKb: number; cpuMs: number };
type Probe = { t: number; ms: number; ok: boolean; detail: string };
type Observed = { samples: Sample[]; probes: Probe[]; sshRuns: Probe[] };

const OBSERVER_SOURCE = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const http = require('node:http');
const { spawn } = require('node:child_process');
const { pid, httpPort, clkTck, sshArgs } = workerData;
const samples = [], probes = [], sshRuns = [];
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
  for (const abandon of [...inFlight]) abandon();
  if (sshChild) sshChild.kill('SIGKILL');
  await Promise.all(loops);
  parentPort.postMessage({ samples, probes, sshRuns });
});
`;

class Observer {
  private readonly worker: Worker;
  constructor(service: Service, sshArgs?: string[]) {
    this.worker = new Worker(OBSERVER_SOURCE, { eval: true, workerData: { pid: service.pid, httpPort: service.httpPort, clkTck: CLK_TCK, sshArgs } });
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
    max,
    text: `${ms(percentile(all, 50))} / ${ms(percentile(all, 95))} / ${ms(max)} (n=${probes.length}${failed ? `, ${failed} failed` : ''})`,
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

function sshConnect(port: number, config: Omit<ssh2.ConnectConfig, 'sock'>): Promise<ssh2.Client> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    client.once('ready', () => resolve(client));
    client.on('error', reject);
    const sock = net.connect(port, '127.0.0.1', () => {
      sock.setNoDelay(true);
      client.connect({ ...config, sock });
    });
    sock.on('error', reject);
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
        const sshArgs = ['-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-p', String(service.sshPort), '-i', legitKey, 'keys@127.0.0.1', 'whoami'];
        const observer = new Observer(service, sshArgs);
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
