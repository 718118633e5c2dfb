/**
 * What every bench starts from: a fresh database beside BENCH_PG_URL's, and the service as
 * operators run it (the compiled JavaScript: `npm run build` first) as a child process, so its
 * pid (and its workers') do the work measured. Its ports are 0, read back from its JSON log.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import pg from 'pg';

export const BENCH_PG_URL = process.env.BENCH_PG_URL || 'postgres://postgres@127.0.0.1:5432/test';

/** Runs `use` with the URL of a database made for it (named `prefix` and the time), dropped afterwards. */
export async function withFreshDatabase<T>(prefix: string, use: (url: string) => Promise<T>): Promise<T> {
  const name = `${prefix}_${Date.now()}`;
  const admin = new pg.Client({ connectionString: BENCH_PG_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
    const url = new URL(BENCH_PG_URL);
    url.pathname = `/${name}`;
    return await use(url.toString());
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
}

/** A signal to a process group (a service spawned `detached`, with whatever it started); quiet if it is gone. */
export function killGroup(group: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-group, signal);
  } catch {
    // already gone
  }
}

/** Whether any process of the group is left (the leader included, until it is reaped). */
export function groupAlive(group: number): boolean {
  try {
    process.kill(-group, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * TERM to a process group, then KILL to whatever of it is left after `graceMs`, and a moment
 * more for the KILL to land: how every bench stops what it started detached (a KILL to a wrapper
 * alone would orphan the node process under it). Call it only for a group whose leader this
 * process started and has not yet seen reaped, or whose members it knows are left: once a
 * group is empty its id may be reused.
 */
export async function stopGroup(group: number, graceMs: number): Promise<void> {
  killGroup(group, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (groupAlive(group) && Date.now() < deadline) await sleep(50);
  if (!groupAlive(group)) return;
  killGroup(group, 'SIGKILL');
  while (groupAlive(group) && Date.now() < deadline + 2000) await sleep(50);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Lines the service has logged: all, at level error or above, and naming EMFILE. */
export type LogCounts = { lines: number; errors: number; emfile: number };

export type CompiledService = {
  child: ChildProcess;
  sshPort: number;
  httpUrl: string;
  /** Null unless the environment sets METRICS_PORT. */
  metricsUrl: string | null;
  exited: Promise<void>;
  /** The last few hundred lines it logged. */
  log(): string;
  counts: LogCounts;
};

/**
 * Starts `node dist/src/main.js` in `root` with DATABASE_URL, ports 0, HOST_KEYS_DIR and DATA_DIR
 * in `work`, and `env` on top; resolves once its listening lines are logged (under WORKERS the
 * primary logs them once, when every worker listens). If it does not start, it is killed.
 */
export async function startCompiledService(options: {
  root: string;
  databaseUrl: string;
  work: string;
  env: Record<string, string>;
  nodeArgs?: string[];
  /** Its own process group, so the caller can kill the whole tree at once. */
  detached?: boolean;
  /** Told the child at once, before it listens: to kill it whatever happens to the bench. */
  spawned?: (child: ChildProcess) => void;
}): Promise<CompiledService> {
  // BENCH_NODE_ARGS: flags for every server the bench starts (e.g. --perf-basic-prof-only-functions for `perf`).
  const fromEnv = process.env.BENCH_NODE_ARGS?.split(/\s+/).filter(Boolean) ?? [];
  const child = spawn(process.execPath, [...fromEnv, ...(options.nodeArgs ?? []), 'dist/src/main.js'], {
    cwd: options.root,
    env: {
      PATH: process.env.PATH,
      DATABASE_URL: options.databaseUrl,
      HTTP_PORT: '0',
      SSH_PORT: '0',
      HOST_KEYS_DIR: path.join(options.work, 'host_keys'),
      DATA_DIR: options.work,
      LOG_LEVEL: 'info',
      ...options.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: options.detached ?? false,
  });
  options.spawned?.(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
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
  const wantsMetrics = Boolean(options.env.METRICS_PORT);
  let sshPort = 0;
  let httpUrl = '';
  let metricsUrl: string | null = null;
  const listening = () => sshPort !== 0 && httpUrl !== '' && (!wantsMetrics || metricsUrl !== null);
  let pendingOut = '';
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`service did not start in 60 s:\n${lines.join('\n')}`)), 60_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      pendingOut += chunk.toString();
      const parts = pendingOut.split('\n');
      pendingOut = parts.pop()!;
      for (const line of parts) {
        keep(line);
        if (listening()) continue;
        let entry: { msg?: string; port?: number; url?: string };
        try {
          entry = JSON.parse(line);
        } catch {
          continue;
        }
        if (entry.msg === 'SSH door listening' && typeof entry.port === 'number') sshPort = entry.port;
        if (entry.msg === 'HTTP API listening' && typeof entry.url === 'string') httpUrl = entry.url;
        if (entry.msg?.startsWith('metrics listening') && typeof entry.url === 'string') metricsUrl = entry.url;
        if (listening()) {
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
    child.kill('SIGKILL');
    throw err;
  }
  return { child, sshPort, httpUrl, metricsUrl, exited, log: () => lines.join('\n'), counts };
}
