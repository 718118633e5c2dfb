import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const groups: number[] = [];

/**
 * How `npm start` runs a program: the compiled JavaScript (built by build-setup.ts), node itself
 * with no wrapper process, so a signal reaches the service and a kill leaves no orphan.
 */
export function compiledProgram(entry: 'main' | 'admin'): { command: string; args: string[]; cwd: string } {
  return { command: process.execPath, args: [path.join('dist', 'src', entry === 'main' ? 'main.js' : path.join('admin', 'main.js'))], cwd: ROOT };
}

export type SpawnedService = {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
};

/**
 * The service as its own process, as `npm start` runs it (compiledProgram),
 * on 127.0.0.1 with ephemeral ports, JSON logs and fresh key and data directories. It gets a
 * process group of its own (a cluster's workers included), which `killSpawnedServices` kills
 * whole: call it in afterAll, pass or fail.
 */
export function spawnService(env: Record<string, string>): SpawnedService {
  const program = compiledProgram('main');
  const child = spawn(program.command, program.args, {
    cwd: program.cwd,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH,
      HOST: '127.0.0.1',
      HTTP_PORT: '0',
      SSH_PORT: '0',
      LOG_FORMAT: 'json',
      HOST_KEYS_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-svc-keys-')),
      DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-svc-data-')),
      ...env,
    },
  });
  groups.push(child.pid!);
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  // 'close', not 'exit': its output pipes are drained by then, so output() holds its last lines.
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, output: () => output, exited };
}

/** Waits for the service's "listening" lines; its HTTP URL and SSH port. */
export async function listeningOf(service: SpawnedService, timeoutMs = 45_000): Promise<{ httpUrl: string; sshPort: number }> {
  const deadline = Date.now() + timeoutMs;
  const http = await outputMatching(service, /"url":"(http:\/\/[^"]+)".*"msg":"HTTP API listening"/, timeoutMs);
  const ssh = await outputMatching(service, /"port":(\d+),"user":"keys".*"msg":"SSH door listening"/, Math.max(0, deadline - Date.now()));
  return { httpUrl: http[1]!, sshPort: Number(ssh[1]) };
}

/**
 * Waits until the service's output matches `pattern` (a listening line, or one logged after them
 * such as "metrics listening"); the match. Throws if the service exits first or the time runs out.
 */
export async function outputMatching(service: SpawnedService, pattern: RegExp, timeoutMs = 45_000): Promise<RegExpExecArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const match = pattern.exec(service.output());
    if (match) return match;
    if (service.child.exitCode !== null || Date.now() > deadline) throw new Error(`no ${pattern} in the service's output:\n${service.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export function killSpawnedServices(): void {
  for (const pid of groups.splice(0)) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
