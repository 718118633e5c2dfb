import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { freshPostgresUrl } from '../support/database.js';
import { compiledProgram } from '../support/service.js';

// What an operator sees when the service or the admin CLI cannot start, or is called wrongly:
// one line, in words, with what to do; no JSON error line, no stack trace.

const groups: number[] = [];
afterAll(() => {
  for (const group of groups.splice(0)) {
    try {
      process.kill(-group, 'SIGKILL'); // its whole process group
    } catch {
      // already gone
    }
  }
});

const tempDir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-start-err-'));

/** The compiled program, to its exit (in a process group of its own, killed in afterAll if it hangs). */
function run(entry: 'main' | 'admin', args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const program = compiledProgram(entry);
  const child = spawn(program.command, [...program.args, ...args], {
    cwd: program.cwd,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', HOST: '127.0.0.1', HTTP_PORT: '0', SSH_PORT: '0', LOG_FORMAT: 'json', HOST_KEYS_DIR: tempDir(), DATA_DIR: tempDir(), ...env },
  });
  groups.push(child.pid!);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

const databaseEnv = async (): Promise<Record<string, string>> => ({ DATABASE_URL: await freshPostgresUrl() });

/** Log lines at error level or above (pino: 50 error, 60 fatal). */
const errorLines = (stdout: string) => stdout.split('\n').filter((line) => /"level":(5|6)\d/.test(line));

describe('start-up errors, one line each', () => {
  it('SSH_PORT in use: the one line naming the variable, and no "ssh listener error" with a stack beside it', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const busy = (blocker.address() as net.AddressInfo).port;
    try {
      const result = await run('main', [], { SSH_PORT: String(busy), ...(await databaseEnv()) });
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(`shell-auth: could not start: SSH_PORT=${busy}: 127.0.0.1:${busy} is already in use by another process\n`);
      expect(errorLines(result.stdout), result.stdout).toEqual([]);
      expect(result.stdout).not.toContain('ssh listener error');
      expect(result.stdout).not.toMatch(/stack|    at /);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });

  it('a database that does not exist: one line with the createdb command that makes it (which works); the admin CLI says the same', async () => {
    const { adminUrl, prefix } = inject('postgres');
    const name = `${prefix}_${randomBytes(4).toString('hex')}_missing`; // dropped with the run's databases
    const url = new URL(adminUrl);
    url.pathname = `/${name}`;
    const target = `${url.hostname}:${url.port || 5432}`;

    for (const workers of ['1', '2']) {
      const result = await run('main', [], { DATABASE_URL: url.toString(), WORKERS: workers });
      expect(result.code).toBe(1);
      expect(result.stdout, result.stdout).toBe(''); // no level-60 line with a stack
      expect(result.stderr.split('\n')).toHaveLength(2); // one line and its newline
      expect(result.stderr).toMatch(new RegExp(`^shell-auth: could not start: DATABASE_URL: database "${name}" does not exist on ${url.host}: create it with \`createdb [^\`]*${name}\`\\n$`));
    }
    const admin = await run('admin', ['org', 'list'], { DATABASE_URL: url.toString() });
    expect(admin.code).toBe(1);
    expect(admin.stderr).toMatch(new RegExp(`^error: DATABASE_URL: database "${name}" does not exist on ${url.host}: create it with \`createdb [^\`]*${name}\`\\n$`));

    // The command as printed makes the database, and the service then starts on it.
    const command = /`(createdb [^`]+)`/.exec(admin.stderr)![1]!;
    const createdb = spawnSync('sh', ['-c', command], { encoding: 'utf8', env: { PATH: process.env.PATH, PGCONNECT_TIMEOUT: '5' } });
    if (createdb.error || createdb.status === 127) {
      console.warn(`startup-errors.test.ts: no createdb here (${target}); the printed command was not run`);
      return;
    }
    expect(createdb.status, createdb.stderr).toBe(0);
    const listed = await run('admin', ['org', 'list'], { DATABASE_URL: url.toString() });
    expect(listed.stderr).toBe('');
    expect(listed.code).toBe(0);
  }, 60_000);
});

describe('admin CLI usage errors, in words', () => {
  it('a value outside a fixed set names the choices and what was given, not zod\'s wording', async () => {
    const env = { DATA_DIR: tempDir(), ...(await databaseEnv()) }; // one database, migrated once
    const status = await run('admin', ['billing', 'set', 'some-org', 'frozen'], env);
    expect(status.code).toBe(2);
    expect(status.stderr).toBe('error: status must be active or suspended, not "frozen"\nusage: billing set ORG active|suspended [--json]\n');

    const role = await run('admin', ['org', 'add-member', 'some-org', 'bob@example.com', '--role', 'king'], env);
    expect(role.code).toBe(2);
    expect(role.stderr.split('\n')[0]).toBe('error: --role must be owner, admin or member, not "king"');

    const missing = await run('admin', ['org', 'add-member', 'some-org', 'bob@example.com'], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr.split('\n')[0]).toBe('error: --role is required: owner, admin or member');
    for (const result of [status, role, missing]) expect(result.stderr).not.toMatch(/Invalid (option|input)|expected one of/);
  }, 60_000);
});
