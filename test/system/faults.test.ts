import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import { startApp } from '../../src/process/app.js';
import { loadConfig } from '../../src/config/config.js';
import { openDatabase } from '../../src/db/database.js';
import { postgresNotifications } from '../../src/db/notifications.js';
import { createLogger } from '../../src/observability/log.js';
import { freshPostgresUrl, openTestDatabase } from '../support/database.js';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { startSmtpServer } from '../support/smtp.js';
import { confirmForm, startTestApp, tokenOf } from '../support/app.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

describe('SMTP down', () => {
  it('the request still succeeds; the mail waits in the outbox and arrives exactly once when SMTP is back, and its link works', async () => {
    const smtp = await startSmtpServer();
    const port = smtp.port;
    await smtp.close();
    const t = await startTestApp({ SMTP_URL: `smtp://127.0.0.1:${port}` });
    cleanups.push(() => t.close());
    const email = uniqueEmail('nomail');
    const key = makeKey();
    const res = await t.post('/api/shell-auth', { email, ssh_public_key: key.publicKey });
    expect(res.status).toBe(200);
    expect(res.body.is_new_user).toBe(true);

    // The sender has tried, failed, and scheduled a retry; the mail is kept, the link is not withdrawn.
    const outboxRow = () =>
      t.app.deps.db
        .selectFrom('mail_outbox')
        .innerJoin('verification_requests', 'verification_requests.id', 'mail_outbox.request_id')
        .select(['mail_outbox.attempts', 'mail_outbox.last_error', 'mail_outbox.sent_at', 'mail_outbox.token'])
        .where('verification_requests.email', '=', email)
        .executeTakeFirstOrThrow();
    for (let i = 0; i < 200 && (await outboxRow()).attempts < 2; i++) await new Promise((resolve) => setTimeout(resolve, 50));
    const failing = await outboxRow();
    expect(failing.attempts).toBeGreaterThanOrEqual(2);
    expect(failing.last_error).toMatch(/ECONNREFUSED/);
    expect(failing.sent_at).toBeNull();
    expect(t.logs.join('\n')).toContain('verification email not sent yet; will retry');

    const revived = await startSmtpServerOn(port);
    cleanups.push(() => revived.close());
    const mail = await revived.waitForMail(email, 20_000);
    const confirmed = await t.request('/shell-auth/verify', confirmForm(tokenOf(mail.link ?? '')));
    expect(confirmed.status).toBe(200);
    const sent = await outboxRow();
    expect(sent.sent_at).not.toBeNull();
    expect(sent.token).toBeNull(); // the token is not kept once the mail is out
    // Exactly one: give a duplicate the time to show up (the sender's next retry would be due by now).
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect(revived.mailsTo(email)).toHaveLength(1);
  });

  it('a mail server that accepts connections and never answers does not hold up the request', async () => {
    const held: net.Socket[] = [];
    const blackhole = net.createServer((socket) => {
      socket.on('error', () => undefined); // the app hanging up on it is expected
      held.push(socket); // no greeting, ever
    });
    await new Promise<void>((resolve) => blackhole.listen(0, '127.0.0.1', resolve));
    cleanups.push(async () => {
      for (const socket of held) socket.destroy();
      await new Promise((resolve) => blackhole.close(resolve));
    });
    const t = await startTestApp({ SMTP_URL: `smtp://127.0.0.1:${(blackhole.address() as net.AddressInfo).port}` });
    cleanups.push(() => t.close());
    const started = Date.now();
    const res = await t.post('/api/shell-auth', { email: uniqueEmail('blackhole'), ssh_public_key: makeKey().publicKey });
    expect(res.status).toBe(200);
    // Answered before the transport's 10 s greeting timeout could have ended the attempt: it never waited for it.
    expect(Date.now() - started).toBeLessThan(8_000);
  });
});

async function startSmtpServerOn(port: number) {
  // smtp-server picks its own port; relay our fixed port to it.
  const smtp = await startSmtpServer();
  const relay = net.createServer((client) => {
    const upstream = net.connect(smtp.port, '127.0.0.1');
    client.pipe(upstream).pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((resolve) => relay.listen(port, '127.0.0.1', resolve));
  return {
    ...smtp,
    close: async () => {
      await new Promise((resolve) => relay.close(resolve));
      await smtp.close();
    },
  };
}

/**
 * A TCP relay in front of Postgres that the test can cut and restore, like a database going
 * away, or stall: connections stay open but nothing passes either way (a network partition).
 */
async function startCuttableProxy(target: URL) {
  let open = true;
  let stalled = false;
  const sockets = new Set<net.Socket>();
  const relay = (from: net.Socket, to: net.Socket) =>
    from.on('data', (chunk) => {
      if (!stalled) to.write(chunk);
    });
  const server = net.createServer((client) => {
    if (!open) return void client.destroy();
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    sockets.add(client).add(upstream);
    relay(client, upstream);
    relay(upstream, client);
    for (const s of [client, upstream]) {
      s.on('error', () => undefined);
      s.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    cut() {
      open = false;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    restore() {
      open = true;
    },
    stall(on: boolean) {
      stalled = on;
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** A fresh test database, reached through a cuttable proxy (closed after the test). */
async function freshDatabaseBehindProxy() {
  const real = new URL(await freshPostgresUrl());
  const proxy = await startCuttableProxy(real);
  cleanups.push(proxy.close);
  const viaProxy = new URL(real);
  viaProxy.port = String(proxy.port);
  return { proxy, viaProxy };
}

describe('Postgres down (a Postgres-server fault; PGlite is in-process)', () => {
  it('answers 503 while the database is unreachable, stays up, and recovers', async () => {
    const { proxy, viaProxy } = await freshDatabaseBehindProxy();
    const smtp = await startSmtpServer();
    cleanups.push(smtp.close);
    const config = loadConfig({ HTTP_PORT: '0', SMTP_URL: smtp.url, DATABASE_URL: viaProxy.toString(), LOG_LEVEL: 'silent', MAIL_PER_IP_HOURLY: '0' });
    const app = await startApp(config, createLogger('silent'), {
      database: await openDatabase({ kind: 'postgres', url: viaProxy.toString() }),
    });
    cleanups.push(() => app.close());
    const post = (path: string, body: unknown) =>
      fetch(app.httpUrl + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

    const key = makeKey();
    const email = uniqueEmail('dbdown');
    expect((await post('/api/shell-auth', { email, ssh_public_key: key.publicKey })).status).toBe(200);

    proxy.cut();
    for (const path of ['/api/shell-auth/verify-key', '/api/shell-auth/api-keys', '/api/shell-auth']) {
      const res = await post(path, { email: uniqueEmail('down'), ssh_public_key: makeKey().publicKey, label: 'while-down' });
      expect(res.status, path).toBe(503);
      expect(await res.json()).toEqual({ success: false, error: 'Service temporarily unavailable; try again later' });
    }
    const health = await fetch(`${app.httpUrl}/healthz`);
    expect(health.status).toBe(503);
    const readiness = await fetch(`${app.httpUrl}/readyz`);
    expect(readiness.status).toBe(503);
    expect(await readiness.json()).toMatchObject({ ready: false, checks: { database: 'unreachable', ssh: 'listening', http: 'listening' } });

    proxy.restore();
    const after = await post('/api/shell-auth/verify-key', { email, ssh_public_key: key.publicKey });
    expect(after.status).toBe(401); // answered from the database again
    expect((await fetch(`${app.httpUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${app.httpUrl}/readyz`)).status).toBe(200);
  });
});

describe('Postgres connection lost while a request holds it', () => {
  it('rejects that request, does not take the process down, and the next request gets a fresh connection', async () => {
    const { proxy, viaProxy } = await freshDatabaseBehindProxy();
    const database = await openDatabase({ kind: 'postgres', url: viaProxy.toString() });
    cleanups.push(() => database.close());
    // Any listener keeps Node alive through an uncaught error, so collect them and assert none.
    const uncaught: Error[] = [];
    const collect = (err: Error) => uncaught.push(err);
    process.on('uncaughtException', collect);
    try {
      const held = database.db.transaction().execute(async (trx) => {
        await sql`select 1`.execute(trx);
        proxy.cut(); // the connection is checked out: between two statements of one transaction
        await sql`select pg_sleep(0.2)`.execute(trx);
      });
      await expect(held).rejects.toThrow(/Connection terminated|not queryable|ECONNRESET/);
      await new Promise((resolve) => setTimeout(resolve, 50)); // let the socket's own events land
      expect(uncaught.map((e) => e.message)).toEqual([]);
    } finally {
      process.off('uncaughtException', collect);
    }
    proxy.restore();
    const { rows } = await sql<{ n: number }>`select 1 as n`.execute(database.db);
    expect(rows).toEqual([{ n: 1 }]);
  });
});

describe('the LISTEN connection stalls (half-open TCP: no error, no end)', () => {
  it('its heartbeat goes unheard: it stops counting as listening, reconnects when the network is back, and tells subscribers to recheck', async () => {
    const { proxy, viaProxy } = await freshDatabaseBehindProxy();
    const notifications = postgresNotifications(viaProxy.toString(), 'test_heartbeat', createLogger('silent'), { heartbeatMs: 100, heartbeatDeadlineMs: 300 });
    cleanups.push(() => notifications.close());
    let rechecks = 0;
    notifications.subscribe({ message: () => undefined, recheck: () => void rechecks++ });
    const waitFor = async (condition: () => boolean, what: string) => {
      for (let i = 0; i < 200 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 25));
      expect(condition(), what).toBe(true);
    };
    await waitFor(() => notifications.listening(), 'listening at first');
    const before = rechecks;
    await new Promise((resolve) => setTimeout(resolve, 500)); // heartbeats heard: still listening
    expect(notifications.listening()).toBe(true);
    proxy.stall(true);
    await waitFor(() => !notifications.listening(), 'noticed the stall');
    proxy.stall(false);
    await waitFor(() => notifications.listening(), 'listening again');
    expect(rechecks).toBeGreaterThan(before);
  });
});

describe('Postgres stalled (connections open, nothing answers)', () => {
  it('answers 503 within the configured timeouts, never 500, and recovers when the network does', async () => {
    const { proxy, viaProxy } = await freshDatabaseBehindProxy();
    const smtp = await startSmtpServer();
    cleanups.push(smtp.close);
    const config = loadConfig({
      HTTP_PORT: '0',
      SSH_PORT: '0',
      SMTP_URL: smtp.url,
      DATABASE_URL: viaProxy.toString(),
      DB_QUERY_TIMEOUT: '1s',
      DB_CONNECT_TIMEOUT: '1s',
      LOG_LEVEL: 'silent',
      MAIL_PER_IP_HOURLY: '0',
      HOST_KEYS_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-stall-')),
    });
    const app = await startApp(config, createLogger('silent'));
    cleanups.push(() => app.close());
    const post = (path: string, body: unknown) =>
      fetch(app.httpUrl + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const key = makeKey();
    const email = uniqueEmail('stall');
    expect((await post('/api/shell-auth/verify-key', { email, ssh_public_key: key.publicKey })).status).toBe(401);

    proxy.stall(true);
    // Requests on pooled connections hit the read timeout; once those are dropped, new connections
    // hit the connect timeout. Either way: 503 in about a second, never a hang or a 500.
    for (const path of ['/api/shell-auth/verify-key', '/api/shell-auth', '/api/shell-auth/verify-key', '/api/shell-auth/api-keys']) {
      const started = Date.now();
      const res = await post(path, { email: uniqueEmail('stalled'), ssh_public_key: makeKey().publicKey, label: 'while-stalled' });
      const elapsed = Date.now() - started;
      expect(res.status, path).toBe(503);
      expect(await res.json()).toEqual({ success: false, error: 'Service temporarily unavailable; try again later' });
      expect(elapsed, path).toBeLessThan(4_000);
    }
    expect((await fetch(`${app.httpUrl}/healthz`)).status).toBe(503);

    proxy.stall(false);
    let after = 0;
    for (let i = 0; i < 20 && after !== 401; i++) {
      after = (await post('/api/shell-auth/verify-key', { email, ssh_public_key: key.publicKey })).status;
    }
    expect(after).toBe(401); // answered from the database again
    expect((await fetch(`${app.httpUrl}/healthz`)).status).toBe(200);
  });
});

describe('start-up failure', () => {
  it.each(['postgres', 'pglite'] as const)('an HTTP port in use fails the start and undoes it: the SSH listener is closed and the database released (%s)', async (kind) => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => blocker.close(resolve)));
    const busyPort = (blocker.address() as net.AddressInfo).port;
    const lines: string[] = [];
    const log = createLogger('info', { write: (line: string) => void lines.push(line) });
    const config = loadConfig({
      HOST: '127.0.0.1',
      HTTP_PORT: String(busyPort),
      SSH_PORT: '0',
      SMTP_URL: 'smtp://127.0.0.1:9',
      HOST_KEYS_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-fail-')),
    });
    const database = await openTestDatabase(kind);
    await expect(startApp(config, log, { database })).rejects.toThrow(`HTTP_PORT=${busyPort}: 127.0.0.1:${busyPort} is already in use by another process`);

    const sshLine = lines.find((line) => line.includes('SSH door listening'));
    expect(sshLine).toBeDefined();
    const sshPort = Number(/"port":(\d+)/.exec(sshLine ?? '')?.[1]);
    const refused = await new Promise<string>((resolve) => {
      const socket = net.connect(sshPort, '127.0.0.1');
      socket.on('connect', () => {
        socket.destroy();
        resolve('connected');
      });
      socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    });
    expect(refused).toBe('ECONNREFUSED');
    await expect(database.db.selectFrom('users').select('id').execute()).rejects.toThrow();
  });
});
