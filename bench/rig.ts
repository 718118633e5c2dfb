/**
 * The side-by-side rig (../shared/perf-rig, installed by its setup.sh into PERF_DIR, default
 * /opt/shell-auth-perf): shell-auth and a Go x/crypto/ssh server doing the same create against
 * the same Postgres, driven by one native libssh load generator, in one run. `npm run bench`
 * runs it when it is installed and prints the ratios the performance work is judged by: server
 * CPU per op and Postgres CPU per op, shell-auth / Go, per concurrency.
 *
 * The rig measures the checkout's committed HEAD (it clones it), built and run as production
 * runs it (`npm run build`, `node dist/src/main.js`).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { table } from './measure.js';

export type RigRow = {
  server: string;
  conc: number;
  rep: number;
  ok: number;
  failed: number;
  ops_per_s: number;
  server_cpu_ms_per_op: number | null;
  pg_cpu_ms_per_op: number | null;
  server_rss_kb_after: number | null;
  server_hwm_kb_after: number | null;
};

const PERF_DIR = process.env.PERF_DIR ?? '/opt/shell-auth-perf';

/** Where the rig's compare.sh is, or null when it is not installed. */
export function rigScript(): string | null {
  const script = path.join(PERF_DIR, 'compare.sh');
  return fs.existsSync(script) ? script : null;
}

/** Runs the rig over `checkout` (shell-auth vs Go; levels and seconds as given) and returns its rows. */
export async function runRig(checkout: string, options: { levels: string; seconds: number; reps: number }): Promise<RigRow[]> {
  const script = rigScript();
  if (!script) throw new Error(`no rig at ${PERF_DIR} (bash ../shared/perf-rig/setup.sh installs it)`);
  const before = new Set(fs.readdirSync(path.join(PERF_DIR, 'results')));
  const env = {
    ...process.env,
    CHECKOUT: checkout,
    SERVERS: 'app go',
    LEVELS: options.levels,
    SECS: String(options.seconds),
    REPS: String(options.reps),
    APP_BUILD: 'npm run build',
    APP_CMD: 'node dist/src/main.js',
  };
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn('bash', [script], { env, stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('error', reject);
    child.on('exit', resolve);
  });
  if (code !== 0) throw new Error(`the rig failed (exit ${code})`);
  const run = fs
    .readdirSync(path.join(PERF_DIR, 'results'))
    .filter((name) => !before.has(name) && fs.existsSync(path.join(PERF_DIR, 'results', name, 'results.jsonl')))
    .sort()
    .at(-1);
  if (!run) throw new Error('the rig wrote no results');
  return fs
    .readFileSync(path.join(PERF_DIR, 'results', run, 'results.jsonl'), 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as RigRow);
}

const ratio = (a: number | null | undefined, b: number | null | undefined) => (a == null || b == null || b === 0 ? null : a / b);
const fixed = (n: number | null, digits: number) => (n === null || Number.isNaN(n) ? '-' : n.toFixed(digits));

/** The median server-CPU ratio per concurrency, over the repetitions: the number the issue quotes. */
export function medianRatios(rows: RigRow[]): Map<number, number> {
  const byLevel = new Map<number, number[]>();
  for (const app of rows.filter((r) => r.server === 'app')) {
    const go = rows.find((r) => r.server === 'go' && r.conc === app.conc && r.rep === app.rep);
    const value = ratio(app.server_cpu_ms_per_op, go?.server_cpu_ms_per_op);
    if (value !== null) byLevel.set(app.conc, [...(byLevel.get(app.conc) ?? []), value]);
  }
  return new Map([...byLevel].map(([level, values]) => [level, values.sort((a, b) => a - b)[Math.floor(values.length / 2)]!]));
}

/** One line per (concurrency, repetition): both servers' CPU per op and shell-auth's ratio to Go. */
export function rigRatios(rows: RigRow[]): string {
  const lines: string[][] = [];
  for (const app of rows.filter((r) => r.server === 'app')) {
    const go = rows.find((r) => r.server === 'go' && r.conc === app.conc && r.rep === app.rep);
    if (!go) continue;
    lines.push([
      String(app.conc),
      String(app.rep),
      fixed(app.server_cpu_ms_per_op, 2),
      fixed(go.server_cpu_ms_per_op, 2),
      fixed(ratio(app.server_cpu_ms_per_op, go.server_cpu_ms_per_op), 2),
      fixed(app.pg_cpu_ms_per_op, 2),
      fixed(go.pg_cpu_ms_per_op, 2),
      fixed(ratio(app.pg_cpu_ms_per_op, go.pg_cpu_ms_per_op), 2),
      app.server_hwm_kb_after === null ? '-' : String(Math.round(app.server_hwm_kb_after / 1024)),
      `${app.failed + go.failed}`,
    ]);
  }
  return table(
    ['c', 'rep', 'server CPU ms/op', 'Go', 'ratio', 'Postgres CPU ms/op', 'Go', 'ratio', 'RSS peak MB', 'failed'],
    lines,
  );
}
