/** The service under attack: one per scenario, in its own process group, never left behind. */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { descendants } from '../measure.js';
import { killGroup, startCompiledService, stopGroup as stopProcessGroup, type LogCounts } from '../service.js';

/** The service checkout under test (BENCH_ROOT), default this one. */
export const ROOT = path.resolve(process.env.BENCH_ROOT || path.resolve(import.meta.dirname, '../..'));

export type Service = { child: ChildProcess; group: number; pid: number; sshPort: number; httpPort: number; log: () => string; counts: LogCounts };

const groups = new Set<number>();
/** Attacker child processes (C, D): not in the service's group, killed by pid. */
export const attackerPids = new Set<number>();

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
 * The node process that actually serves: started as `node dist/src/main.js` it is the spawned
 * process itself, but a wrapper (a `tsx` CLI) would put it one level down. We take the process
 * in the tree that holds the listening SSH socket, else the deepest one.
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

/** A and B: all their attackers share one address (A: 127.0.0.1, B: RSA_FROM), so its unauthenticated cap is raised. */
export const ONE_ADDRESS_ENV = { SSH_MAX_UNAUTH_PER_IP: '1000' };

/** One fresh service process per scenario, so memory numbers do not carry over. */
export async function startService(dbUrl: string, work: string, extraEnv: Record<string, string> = ONE_ADDRESS_ENV): Promise<Service> {
  let group = 0;
  try {
    // detached: its own process group, so the whole tree can be killed at once.
    const started = await startCompiledService({
      root: ROOT,
      databaseUrl: dbUrl,
      work,
      env: extraEnv,
      detached: true,
      spawned: (child) => groups.add((group = child.pid!)),
    });
    const { child, sshPort, httpUrl, log, counts } = started;
    return { child, group, pid: serverPid(group, sshPort), sshPort, httpPort: Number(new URL(httpUrl).port), log, counts };
  } catch (err) {
    if (group) await stopGroup(group);
    throw err;
  }
}

export async function stopService(service: Service): Promise<void> {
  await stopGroup(service.group);
}

async function stopGroup(group: number): Promise<void> {
  await stopProcessGroup(group, 5000);
  groups.delete(group);
}

/** Runs `use` on a fresh service, stopped afterwards; if `use` fails, says the end of the service's log. */
export async function withService<T>(dbUrl: string, work: string, extraEnv: Record<string, string> | undefined, use: (service: Service) => Promise<T>): Promise<T> {
  const service = await startService(dbUrl, work, extraEnv);
  try {
    return await use(service);
  } catch (err) {
    console.error(`service log tail:\n${service.log().split('\n').slice(-30).join('\n')}`);
    throw err;
  } finally {
    await stopService(service);
  }
}

/** What every scenario gets: the database, a working directory, and two ed25519 keys linked to no account. */
export type Run = { dbUrl: string; work: string; floodKey: string; legitKey: string };
