import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { MIGRATION_NAMES } from '../../src/db/database.js';
import { freshPostgresUrl } from '../support/database.js';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { compiledProgram } from '../support/service.js';

const children: ChildProcess[] = [];
const groupsToKill: number[] = [];
afterAll(() => {
  for (const child of children) child.kill('SIGKILL');
  for (const group of groupsToKill) {
    try {
      process.kill(-group, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** On a fresh Postgres database unless `extra` names one, or `embedded` asks for PGlite in DATA_DIR (no DATABASE_URL). */
async function baseEnv(extra: Record<string, string>, options: { embedded?: boolean } = {}): Promise<NodeJS.ProcessEnv> {
  // Test files share 127.0.0.1: the per-IP limits would couple them.
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, MAIL_PER_IP_HOURLY: '0', HTTP_LOOKUPS_PER_MINUTE: '0', SSH_PORT: '0', HOST_KEYS_DIR: tempDir(), ...extra };
  if (!options.embedded && !('DATABASE_URL' in extra)) env.DATABASE_URL = await freshPostgresUrl();
  return env;
}

/** Runs a command to completion. */
function run(entry: 'main' | 'admin', args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const program = compiledProgram(entry);
    const child = spawn(program.command, [...program.args, ...args], { cwd: program.cwd, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Starts the service like `npm start` and waits for its "listening" log line. */
async function startService(env: NodeJS.ProcessEnv) {
  const program = compiledProgram('main');
  const child = spawn(program.command, program.args, { cwd: program.cwd, env });
  children.push(child);
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`service did not start:\n${output}`)), 45_000);
    const check = () => {
      const match = /"url":"(http:\/\/[^"]+)".*"msg":"HTTP API listening"/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    };
    child.stdout!.on('data', check);
    child.on('exit', (code) => reject(new Error(`service exited with ${code}:\n${output}`)));
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, url, output: () => output, exited };
}

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-proc-'));
}

describe('the service as a process', () => {
  it('starts on a fresh data directory with no mail server: the email lands in the outbox and the link is logged', async () => {
    const dataDir = tempDir();
    const service = await startService(await baseEnv({ DATA_DIR: dataDir, HTTP_PORT: '0', HOST: '127.0.0.1' }, { embedded: true }));
    const email = uniqueEmail('fresh');
    const res = await fetch(`${service.url}/api/shell-auth`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, ssh_public_key: makeKey().publicKey }),
    });
    expect(res.status).toBe(200);
    // The mail is sent after the response, by the outbox's sender: wait for its log line.
    for (let i = 0; i < 200 && !service.output().includes('dev mail transport'); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(service.output()).toContain('dev mail transport: verification email written to outbox');
    const outbox = path.join(dataDir, 'outbox');
    const files = fs.readdirSync(outbox).filter((f) => f.endsWith('.eml'));
    expect(files).toHaveLength(1);
    const eml = fs.readFileSync(path.join(outbox, files[0]!), 'utf8');
    expect(eml).toContain(`To: ${email}`);
    expect(eml).toMatch(/shell-auth\/verify\?token=/);
    // The .eml wraps the link (quoted-printable); links.txt has it whole, ready to open.
    const lastLink = fs.readFileSync(path.join(outbox, 'links.txt'), 'utf8').trim().split('\n').at(-1) ?? '';
    expect(lastLink).toMatch(/^http:\/\/\S+\/shell-auth\/verify\?token=[A-Za-z0-9_-]{20,}$/); // the link alone
    const linkedPage = await fetch(lastLink.replace(/^http:\/\/localhost:\d+/, service.url));
    expect(linkedPage.status).toBe(200);
    expect(fs.existsSync(path.join(dataDir, 'pglite'))).toBe(true);

    service.child.kill('SIGTERM');
    expect(await service.exited).toBe(0);
  }, 90_000); // an embedded start is allowed startService's 45 s

  it('`npm start` serves compiled JavaScript: the listening process is node dist/src/main.js (no loader), and SIGTERM stops it cleanly', async () => {
    const env = await baseEnv({ DATA_DIR: tempDir(), HTTP_PORT: '0', HOST: '127.0.0.1', LOG_FORMAT: 'json' });
    const npm = spawn('npm', ['start'], { cwd: path.resolve(import.meta.dirname, '..', '..'), env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    const group = npm.pid!;
    groupsToKill.push(group);
    let output = '';
    npm.stdout!.on('data', (d) => (output += d));
    npm.stderr!.on('data', (d) => (output += d));
    // 'close': npm and the service share the pipes, so this waits for the service too.
    const closed = new Promise<void>((resolve) => npm.on('close', () => resolve()));
    for (let i = 0; i < 1200 && !output.includes('HTTP API listening'); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(output).toContain('HTTP API listening');
    const processes = execFileSync('ps', ['-o', 'pid=,args=', '-g', String(group)], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map((line) => line.trim().replace(/^\d+\s+/, ''));
    expect(processes.filter((args) => args.startsWith('node ') || args.startsWith(process.execPath))).toEqual([`node dist/src/main.js`]);
    expect(processes.join('\n')).not.toMatch(/tsx|typescript/);
    process.kill(group, 'SIGTERM'); // to npm alone: it passes the signal on to the service
    await closed;
    expect(output).toContain('"signal":"SIGTERM"');
    expect(output).toContain('"msg":"shutting down"');
    for (let i = 0; i < 100 && spawnSync('ps', ['-g', String(group)]).status === 0; i++) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(spawnSync('ps', ['-o', 'pid=,args=', '-g', String(group)], { encoding: 'utf8' }).stdout).toBe(''); // nothing left behind
  });

  it('bad configuration values: one line each, naming the variable, the value as given and the form expected; exit 1', async () => {
    const result = await run(
      'main',
      [],
      await baseEnv({ HTTP_TRUST_WINDOW: 'soon', HTTP_PORT: 'abc', SMTP_URL: 'http://mail:secret@x', DATA_DIR: tempDir() }),
    );
    expect(result.code).toBe(1);
    expect(result.stderr.trim().split('\n').sort()).toEqual([
      'shell-auth: HTTP_PORT="abc": must be a whole number from 0 to 65535 (0: any free port)',
      'shell-auth: HTTP_TRUST_WINDOW="soon": must be a duration (15m, 90s, 1h), 0 (off) or forever',
      'shell-auth: SMTP_URL="http://mail:***@x/": must be a URL like smtp://host:25 or smtps://user:password@host:465',
    ]);
    expect(result.stdout).toBe('');
  });

  it('a port in use: one line naming the variable, no stack trace; exit 1', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const busy = (blocker.address() as net.AddressInfo).port;
    try {
      const result = await run('main', [], await baseEnv({ HOST: '127.0.0.1', HTTP_PORT: String(busy), DATA_DIR: tempDir(), LOG_LEVEL: 'warn' }));
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(`shell-auth: could not start: HTTP_PORT=${busy}: 127.0.0.1:${busy} is already in use by another process\n`);
      expect(result.stdout).not.toMatch(/stack|    at /);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });

  it('refuses a second instance on the same embedded database', async () => {
    const dataDir = tempDir();
    const first = await startService(await baseEnv({ DATA_DIR: dataDir, HTTP_PORT: '0' }, { embedded: true }));
    const second = await run('main', [], await baseEnv({ DATA_DIR: dataDir, HTTP_PORT: '0' }, { embedded: true }));
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/the embedded database in .* is in use by process \d+/);
    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);
  }, 120_000); // two embedded starts, each allowed startService's 45 s

  it('several instances starting at once migrate a fresh database once and share one host key', async () => {
    const url = await freshPostgresUrl({ migrated: false });
    const hostKeys = tempDir(); // shared, as instances behind one load balancer should
    const services = await Promise.all(
      [0, 1, 2].map(async () =>
        startService(await baseEnv({ DATABASE_URL: url, HTTP_PORT: '0', DATA_DIR: tempDir(), HOST_KEYS_DIR: hostKeys })),
      ),
    );
    const fingerprints = services.map((s) => /"fingerprint":"(SHA256:[^"]+)"/.exec(s.output())?.[1]);
    expect(new Set(fingerprints).size).toBe(1);
    expect(fingerprints[0]).toMatch(/^SHA256:/);
    const check = new pg.Client({ connectionString: url });
    await check.connect();
    const { rows } = await check.query('SELECT name FROM kysely_migration');
    await check.end();
    expect(rows.map((r) => r.name)).toEqual([...MIGRATION_NAMES]); // each once
    const migratedLogs = services.filter((s) => s.output().includes('"msg":"database migrated"'));
    expect(migratedLogs).toHaveLength(1);
    for (const s of services) s.child.kill('SIGTERM');
    await Promise.all(services.map((s) => s.exited));
  });
});

describe('admin CLI (npm run admin)', () => {
  it('creates orgs, manages members and billing, lists and revokes keys; clear errors and exit codes', async () => {
    const env = await baseEnv({ DATA_DIR: tempDir() });
    const admin = (...args: string[]) => run('admin', [...args], env);
    const org = `cli-${Date.now().toString(36)}`;
    const owner = uniqueEmail('cliowner');

    const created = await admin('org', 'create', org, '--owner', owner);
    expect(created.code).toBe(0);
    expect(created.stdout).toMatch(new RegExp(`^Created org ${org} \\([0-9a-f-]{36}\\), owner ${owner}\\n$`));

    const dup = await admin('org', 'create', org, '--owner', owner);
    expect(dup.code).toBe(1);
    expect(dup.stderr).toBe('error: Organization already exists\n');

    // The commands' behaviour is tested in-process (commands.test.ts); here, the real process:
    // arguments, output streams, exit codes, and the database it opens.
    const badRole = await admin('org', 'add-member', org, uniqueEmail('climember'), '--role', 'king');
    expect(badRole.code).toBe(2);
    expect(badRole.stderr).toContain('--role');

    const list = await admin('org', 'list', '--json');
    expect(list.code).toBe(0);
    const listed = JSON.parse(list.stdout).find((o: { name: string }) => o.name === org);
    expect(listed).toMatchObject({ name: org, plan: 'free', status: 'active', members: 1 });

    const unknown = await admin('frobnicate');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toBe('error: unknown command "frobnicate": run "npm run admin -- --help" for the list\n');

    // An empty variable is unset everywhere, LOG_LEVEL included (it used to crash the CLI in pino).
    const emptyLogLevel = await run('admin', ['org', 'list'], { ...env, LOG_LEVEL: '' });
    expect(emptyLogLevel.stderr).toBe('');
    expect(emptyLogLevel.code).toBe(0);
    expect(emptyLogLevel.stdout).toContain(org);
  }, 120_000);
});
