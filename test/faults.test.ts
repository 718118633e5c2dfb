import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { openDatabase } from '../src/db/database.js';
import { createLogger } from '../src/log.js';
import { openTestDatabase, postgresUrl, usingPostgres } from './support/database.js';
import { makeKey, uniqueEmail } from './support/keys.js';
import { startSmtpServer } from './support/smtp.js';
import { startTestApp } from './support/app.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

describe('SMTP down', () => {
  it('gives a clear 503, withdraws the link so it does not count, and works once SMTP is back', async () => {
    const smtp = await startSmtpServer();
    const port = smtp.port;
    await smtp.close();
    const t = await startTestApp({ SMTP_URL: `smtp://127.0.0.1:${port}` });
    cleanups.push(() => t.close());
    const email = uniqueEmail('nomail');
    const key = makeKey();
    const res = await t.post('/api/shell-auth', { email, ssh_public_key: key.publicKey });
    expect(res.status).toBe(503);
    expect(res.body).toEqual({ success: false, error: 'Verification email could not be sent; try again later' });
    const pending = await t.app.deps.db.selectFrom('verification_requests').select('id').where('email', '=', email).execute();
    expect(pending).toHaveLength(0);
    expect(t.logs.join('\n')).toContain('verification email could not be sent');

    // Bring a mail server up on the same port: the retry is not rate-limited and the mail arrives.
    const revived = await startSmtpServerOn(port);
    cleanups.push(() => revived.close());
    const retry = await t.post('/api/shell-auth', { email, ssh_public_key: key.publicKey });
    expect(retry.status).toBe(200);
    // The failed attempt left no account behind: this is still the account's creation.
    expect(retry.body.is_new_user).toBe(true);
    expect((await revived.waitForMail(email)).link).toBeTruthy();
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

describe.runIf(usingPostgres)('Postgres down (a Postgres-server fault; PGlite is in-process)', () => {
  it('answers 503 while the database is unreachable, stays up, and recovers', async () => {
    const real = new URL(postgresUrl());
    const proxy = await startCuttableProxy(real);
    cleanups.push(proxy.close);
    const viaProxy = new URL(real);
    viaProxy.port = String(proxy.port);
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

    proxy.restore();
    const after = await post('/api/shell-auth/verify-key', { email, ssh_public_key: key.publicKey });
    expect(after.status).toBe(401); // answered from the database again
    expect((await fetch(`${app.httpUrl}/healthz`)).status).toBe(200);
  });
});

describe.runIf(usingPostgres)('Postgres stalled (connections open, nothing answers)', () => {
  it('answers 503 within the configured timeouts, never 500, and recovers when the network does', async () => {
    const real = new URL(postgresUrl());
    const proxy = await startCuttableProxy(real);
    cleanups.push(proxy.close);
    const viaProxy = new URL(real);
    viaProxy.port = String(proxy.port);
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
  it('an HTTP port in use fails the start and undoes it: the SSH listener is closed and the database released', async () => {
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
    const database = await openTestDatabase();
    await expect(startApp(config, log, { database })).rejects.toMatchObject({ code: 'EADDRINUSE' });

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
