/**
 * What the benches read around each run, from /proc and the service's own metrics: CPU of the
 * service (a process tree: a cluster primary and its workers), of Postgres (every `postgres`
 * process, plus the postmaster's reaped children: backends that ended during the run), of the
 * load generator (this process), memory, and statements sent to the database.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';

/** Clock ticks a second, the unit of /proc CPU times. */
export const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

/** The fields of /proc/PID/stat after the command name: index 1 is ppid, 11..14 utime, stime, cutime, cstime. */
function statFields(pid: number): string[] {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

function pids(): number[] {
  return fs.readdirSync('/proc').filter((name) => /^\d+$/.test(name)).map(Number);
}

function ticksToMs(ticks: number): number {
  return (ticks * 1000) / CLK_TCK;
}

export function cpuMsOf(pid: number): number {
  const f = statFields(pid);
  return ticksToMs(Number(f[11]) + Number(f[12]));
}

/** A process and all its descendants, parents before children, with their depth below it. */
export function descendants(root: number): { pid: number; depth: number }[] {
  const parents = new Map<number, number>();
  for (const pid of pids()) {
    try {
      parents.set(pid, Number(statFields(pid)[1]));
    } catch {
      // gone meanwhile
    }
  }
  const tree = [{ pid: root, depth: 0 }];
  for (let i = 0; i < tree.length; i++) {
    for (const [pid, ppid] of parents) if (ppid === tree[i]!.pid) tree.push({ pid, depth: tree[i]!.depth + 1 });
  }
  return tree;
}

/** A process and its descendants (a cluster primary and its workers). */
function treeOf(pid: number): number[] {
  return descendants(pid).map((member) => member.pid);
}

export function cpuMsOfTree(pid: number): number {
  let total = 0;
  for (const member of treeOf(pid)) {
    try {
      total += cpuMsOf(member);
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

/** Resident memory of a process tree, in MB. */
export function rssMbOfTree(pid: number): number {
  let kb = 0;
  for (const member of treeOf(pid)) {
    try {
      const match = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${member}/status`, 'utf8'));
      kb += Number(match?.[1] ?? 0);
    } catch {
      // gone meanwhile
    }
  }
  return kb / 1024;
}

/** All of Postgres's CPU so far: every `postgres` process, and the postmaster's reaped children. */
export function postgresCpuMs(): number {
  let total = 0;
  const postgres = new Set<number>();
  for (const pid of pids()) {
    try {
      if (fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'postgres') postgres.add(pid);
    } catch {
      // gone meanwhile
    }
  }
  for (const pid of postgres) {
    try {
      const f = statFields(pid);
      total += ticksToMs(Number(f[11]) + Number(f[12]));
      if (!postgres.has(Number(f[1]))) total += ticksToMs(Number(f[13]) + Number(f[14])); // the postmaster
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

/** This process's CPU (the load generator), in ms. */
export function clientCpuMs(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}

/** One unlabelled counter or gauge from a Prometheus text exposition. */
export async function scrapeValue(metricsUrl: string, name: string): Promise<number> {
  const text = await (await fetch(metricsUrl)).text();
  const match = new RegExp(`^${name} ([0-9.e+-]+)$`, 'm').exec(text);
  if (!match) throw new Error(`${name} not in ${metricsUrl}`);
  return Number(match[1]);
}

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** Before/after readings around one run; `ops` divides them. */
export async function around<T>(
  serverPid: number,
  metricsUrl: string | null,
  run: () => Promise<T & { ops: number }>,
): Promise<T & { ops: number; server_cpu_ms_per_op: number; postgres_cpu_ms_per_op: number; client_cpu_ms_per_op: number; statements_per_op: number | null; rss_mb: number }> {
  const statementsBefore = metricsUrl ? await scrapeValue(metricsUrl, 'shell_auth_db_statements_total') : null;
  const server = cpuMsOfTree(serverPid);
  const pg = postgresCpuMs();
  const client = clientCpuMs();
  const result = await run();
  const per = (ms: number) => ms / Math.max(result.ops, 1);
  const out = {
    ...result,
    server_cpu_ms_per_op: per(cpuMsOfTree(serverPid) - server),
    postgres_cpu_ms_per_op: per(postgresCpuMs() - pg),
    client_cpu_ms_per_op: per(clientCpuMs() - client),
    statements_per_op: null as number | null,
    rss_mb: rssMbOfTree(serverPid),
  };
  if (metricsUrl && statementsBefore !== null) out.statements_per_op = per((await scrapeValue(metricsUrl, 'shell_auth_db_statements_total')) - statementsBefore);
  return out;
}

/**
 * The machine a run's figures belong to: the same build's ratio to the Go server moved by a fifth
 * between two machines, and OpenSSL picks its code by CPU feature while Go's x/crypto ChaCha20
 * does not, so a figure is quoted with the CPU it was read on.
 */
export function machineLine(): string {
  const cpus = os.cpus();
  let flags: string[] = [];
  try {
    const info = fs.readFileSync('/proc/cpuinfo', 'utf8');
    flags = /^flags\s*:\s*(.*)$/m.exec(info)?.[1]?.split(' ') ?? [];
  } catch {
    // not Linux: the model alone
  }
  const wanted = ['avx2', 'avx512f', 'adx', 'bmi2', 'sha_ni'];
  const present = wanted.filter((flag) => flags.includes(flag));
  let features = '';
  if (flags.length > 0) features = present.length > 0 ? `, ${present.join(' ')}` : `, none of ${wanted.join(' ')}`;
  return `machine: ${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${cpus.length} CPUs${features}; node ${process.version}`;
}

/** A right-aligned text table. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i]!)).join('  ');
  return [line(headers), ...rows.map(line)].join('\n');
}
