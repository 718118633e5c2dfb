import http from 'node:http';
import net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { confirmForm, startTestApp, tokenOf } from '../support/app.js';
import { MIGRATION_NAMES } from '../../src/db/database.js';
import { freshPostgresUrl } from '../support/database.js';
import { makeKey, uniqueEmail, type TestKey } from '../support/keys.js';
import type { ClientChannel } from 'ssh2';
import { connectClient, openssh } from '../support/ssh.js';
import { killSpawnedServices, listeningOf, spawnService } from '../support/service.js';
import { startSmtpServer, type SmtpServer } from '../support/smtp.js';

// SIGTERM to the real process: readiness fails, listeners close, a command in flight finishes,
// a shell is told, a waiting login stops with advice, and the process exits 0.

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  killSpawnedServices();
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** A billing endpoint that holds each answer until the test lets it go. */
async function startHeldBilling() {
  const held: Array<() => void> = [];
  let arrivedWake: (() => void) | null = null;
  const server = http.createServer((req, res) => {
    req.resume();
    held.push(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"active":true}'));
    arrivedWake?.();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => (server.closeAllConnections(), server.close(resolve))));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/billing`,
    /** Resolves when `count` billing checks are waiting. */
    async arrived(count: number) {
      while (held.length < count) await new Promise<void>((resolve) => (arrivedWake = resolve));
    },
    release() {
      for (const answer of held.splice(0)) answer();
    },
  };
}

type DatabaseKind = 'postgres' | 'pglite';

/** The compiled service on a fresh database: Postgres, or the embedded one (no DATABASE_URL). */
async function startService(env: Record<string, string>, database: DatabaseKind = 'postgres') {
  const service = spawnService({
    MAIL_PER_IP_HOURLY: '0',
    HTTP_LOOKUPS_PER_MINUTE: '0',
    SSH_CONNECTIONS_PER_SECOND: '1000',
    ...(database === 'postgres' ? { DATABASE_URL: await freshPostgresUrl() } : {}),
    ...env,
  });
  return { ...service, ...(await listeningOf(service)) };
}

type Service = Awaited<ReturnType<typeof startService>>;

/** `ssh login` with a fresh key, confirmed through the emailed link. */
async function linkedKey(service: Service, smtp: SmtpServer): Promise<TestKey> {
  const key = makeKey();
  const email = uniqueEmail('drain');
  const login = openssh(service.sshPort, key.privateKeyPath, ['login', email]);
  const mail = await smtp.waitForMail(email, 20_000);
  const confirmed = await fetch(`${service.httpUrl}/shell-auth/verify`, confirmForm(tokenOf(mail.link!)));
  expect(confirmed.status).toBe(200);
  expect((await login).code).toBe(0);
  return key;
}

/** An interactive shell (ssh2, no pty), resolved once it shows its prompt. */
async function openShell(port: number, key: TestKey) {
  const client = await connectClient(port, key.privateKeyPath);
  client.on('error', () => undefined); // the server going away is the point of the test
  cleanups.push(async () => client.end());
  const channel = await new Promise<ClientChannel>((resolve, reject) => client.shell(false, (err, ch) => (err ? reject(err) : resolve(ch))));
  let stdout = '';
  let code: number | null = null;
  channel.on('data', (d: Buffer) => (stdout += d));
  channel.stderr.resume();
  channel.on('exit', (c: number | null) => (code = c));
  const done = new Promise<{ stdout: string; code: number | null }>((resolve) => channel.on('close', () => resolve({ stdout, code })));
  for (let i = 0; i < 400 && !stdout.includes('keys> '); i++) await new Promise((resolve) => setTimeout(resolve, 25));
  expect(stdout).toContain('keys> ');
  return { done };
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('connect', () => (socket.destroy(), resolve(false)));
    socket.on('error', () => resolve(true));
  });
}

describe('SIGTERM', () => {
  // On both databases: the embedded one (npm start's default) shuts down with queries in flight too.
  it.each<DatabaseKind>(['postgres', 'pglite'])('drains (%s): not ready, no new connections, the command in flight finishes, a shell is told, a waiting login is advised, exit 0', async (database) => {
    const smtp = await startSmtpServer();
    cleanups.push(smtp.close);
    const billing = await startHeldBilling();
    const service = await startService({ SMTP_URL: smtp.url, BILLING_URL: billing.url, BILLING_TIMEOUT_MS: '60000', SHUTDOWN_GRACE: '20s' }, database);
    const ready = await fetch(`${service.httpUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({
      ready: true,
      checks: { draining: 'no', ssh: 'listening', http: 'listening', database: 'ok', migrations: 'applied' },
    });

    const key = await linkedKey(service, smtp);
    // In flight: a create waiting on billing; a shell at its prompt; a login waiting for its click.
    const create = openssh(service.sshPort, key.privateKeyPath, ['create', '--label', 'in-flight', '--json']);
    await billing.arrived(1);
    const shell = await openShell(service.sshPort, key);
    const stranger = makeKey();
    let loginErr = '';
    const login = openssh(service.sshPort, stranger.privateKeyPath, ['login', uniqueEmail('waiting')], { onStderr: (s) => (loginErr += s) });
    for (let i = 0; i < 400 && !loginErr.includes('Waiting for confirmation'); i++) await new Promise((resolve) => setTimeout(resolve, 25));
    expect(loginErr).toContain('Waiting for confirmation');

    const signalled = Date.now();
    service.child.kill('SIGTERM');
    for (let i = 0; i < 400 && !service.output().includes('"msg":"draining'); i++) await new Promise((resolve) => setTimeout(resolve, 25));
    expect(await refused(Number(new URL(service.httpUrl).port))).toBe(true);
    expect(await refused(service.sshPort)).toBe(true);

    const shellDone = await shell.done;
    expect(shellDone.stdout).toContain('shell-auth is restarting: this session closes now');
    expect(shellDone.code).toBe(0);
    const loginDone = await login;
    expect(loginDone.stderr).toMatch(/The service is restarting, so this session stops waiting\. The link still works: confirm it within \d+ minutes?,/);
    expect(loginDone.code).toBe(1);

    // The command in flight is still running; let billing answer: it completes, key and all.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(service.child.exitCode).toBeNull();
    billing.release();
    const created = await create;
    expect(created.code, created.stderr).toBe(0);
    expect(JSON.parse(created.stdout)).toMatchObject({ success: true, api_key: expect.stringMatching(/\S{20,}/) });

    expect(await service.exited).toBe(0);
    expect(Date.now() - signalled).toBeLessThan(20_000); // it did not need the grace
    const lines = service.output();
    expect(lines).toContain('"msg":"drained"');
    expect(lines).not.toContain('shutdown grace over');
  });

  it('cuts what is still running when SHUTDOWN_GRACE is over, and still exits 0', async () => {
    const smtp = await startSmtpServer();
    cleanups.push(smtp.close);
    const billing = await startHeldBilling(); // never released
    const service = await startService({ SMTP_URL: smtp.url, BILLING_URL: billing.url, BILLING_TIMEOUT_MS: '60000', SHUTDOWN_GRACE: '2s' });
    const key = await linkedKey(service, smtp);
    const create = openssh(service.sshPort, key.privateKeyPath, ['create', '--label', 'stuck']);
    await billing.arrived(1);
    const signalled = Date.now();
    service.child.kill('SIGTERM');
    expect(await service.exited).toBe(0);
    expect(Date.now() - signalled).toBeGreaterThanOrEqual(1_900);
    expect((await create).code).not.toBe(0);
    expect(service.output()).toContain('ssh: shutdown grace over, closing the connections still open');
  });
});

describe('GET /readyz', () => {
  it('fails while a migration this code needs is missing, and from the first moment of a drain', async () => {
    const t = await startTestApp();
    cleanups.push(() => t.close());
    expect((await t.request('/readyz')).status).toBe(200);
    const latest = MIGRATION_NAMES.at(-1)!;
    const row = await t.app.deps.db.selectFrom('kysely_migration' as never).selectAll().where('name' as never, '=', latest as never).executeTakeFirstOrThrow();
    await t.app.deps.db.deleteFrom('kysely_migration' as never).where('name' as never, '=', latest as never).execute();
    const pending = await t.request('/readyz');
    expect([pending.status, pending.body]).toEqual([503, { ready: false, checks: expect.objectContaining({ database: 'ok', migrations: `pending: ${latest}` }) }]);
    await t.app.deps.db.insertInto('kysely_migration' as never).values(row as never).execute();
    expect((await t.request('/readyz')).status).toBe(200);

    const drained = t.app.drain(5_000);
    expect(await t.app.readiness()).toMatchObject({ ready: false, checks: { draining: 'yes' } });
    await drained;
  });
});
