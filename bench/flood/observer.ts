import { Worker } from 'node:worker_threads';
import { CLK_TCK } from '../measure.js';
import type { LogCounts } from '../service.js';
import { latencySummary, within, type Probe } from './report.js';
import type { Service } from './service.js';

// Observer: a worker thread, so the load generator's own busy event loop does not delay probes.
// It samples the server's RSS and CPU every 100 ms, GETs /healthz every 200 ms and, if asked,
// runs a legitimate `ssh ... whoami` every 500 ms and counts the server's open files every
// `fdEveryMs`.

export type Sample = { t: number; rssKb: number; cpuMs: number };
export type FdSample = { t: number; fds: number };
export type Observed = { samples: Sample[]; fdSamples: FdSample[]; probes: Probe[]; sshRuns: Probe[] };

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

export class Observer {
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

/** What the service's probes saw over an attack, and how its RSS and open files went. */
export type ServiceUnderAttack = {
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

export function underAttack(observed: Observed, from: number, to: number, logBefore: LogCounts, logAfter: LogCounts): ServiceUnderAttack {
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
