import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { startApp, type App } from '../../src/process/app.js';
import { loadConfig } from '../../src/config/config.js';
import { createLogger } from '../../src/observability/log.js';
import { outboxBacklog } from '../../src/core/index.js';
import { openTestDatabase } from './database.js';
import { startSmtpServer, type SmtpServer } from './smtp.js';

const sharedHostKeysDir = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-hostkeys-'));

export type HttpResult = { status: number; body: any; text: string; headers: Headers };

export type TestApp = {
  app: App;
  url: string;
  smtp: SmtpServer;
  /** Every log line the app wrote, for asserting that no secret leaks. */
  logs: string[];
  post(path: string, body: unknown): Promise<HttpResult>;
  request(path: string, init?: RequestInit): Promise<HttpResult>;
  /** The whole email round trip: initiate, receive the mail, GET the page, POST the form. */
  verifyByEmail(email: string, publicKey: string): Promise<void>;
  /** Takes the next mail to `email`, opens its page and presses Confirm. */
  confirmMailTo(email: string): Promise<void>;
  /** Verification mails to `email` ever queued (sent or not): written with the request, so no waiting. */
  mailsQueuedTo(email: string): Promise<number>;
  /** Waits until the outbox has sent (or given up on) everything queued so far. */
  mailSettled(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
};

/** Starts the real service (HTTP on an ephemeral port) on the test database, with a real SMTP server. */
export async function startTestApp(
  env: Record<string, string> = {},
  options: { smtp?: SmtpServer; headers?: Record<string, string> } = {},
): Promise<TestApp> {
  const smtp = options.smtp ?? (await startSmtpServer());
  const config = loadConfig({
    HOST: '127.0.0.1',
    HTTP_PORT: '0',
    SMTP_URL: smtp.url,
    DATA_DIR: '/nonexistent-data-dir',
    LOG_LEVEL: 'info',
    // Every test request comes from 127.0.0.1; the per-IP limit has its own test.
    MAIL_PER_IP_HOURLY: '0',
    HTTP_LOOKUPS_PER_MINUTE: '0',
    // Likewise every SSH client: the per-address SSH rates have their own tests.
    SSH_AUTH_PER_MINUTE: '1000000',
    SSH_CONNECTIONS_PER_SECOND: '100000',
    SSH_PORT: '0',
    HOST_KEYS_DIR: sharedHostKeysDir,
    ...env,
  });
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, callback) {
      logs.push(...chunk.toString().split('\n').filter(Boolean));
      callback();
    },
  });
  const log = createLogger(config.logLevel, sink);
  const database = await openTestDatabase();
  const app = await startApp(config, log, { database });
  // PUBLIC_URL must point at the real port for links in mails to work.
  app.deps.settings.publicUrl = env.PUBLIC_URL ?? app.httpUrl;

  async function request(path: string, init: RequestInit = {}): Promise<HttpResult> {
    const headers = { ...options.headers, ...(init.headers as Record<string, string> | undefined) };
    const response = await fetch(app.httpUrl + path, { redirect: 'manual', ...init, headers });
    const text = await response.text();
    let body: unknown = undefined;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    return { status: response.status, body, text, headers: response.headers };
  }

  const post = (path: string, body: unknown) =>
    request(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

  async function confirmMailTo(email: string): Promise<void> {
    const mail = await smtp.waitForMail(email);
    const token = tokenOf(mail.link!);
    const page = await request(`/shell-auth/verify?token=${token}`);
    if (page.status !== 200) throw new Error(`confirm page failed: ${page.status}`);
    const confirmed = await request('/shell-auth/verify', confirmForm(token));
    if (confirmed.status !== 200) throw new Error(`confirm failed: ${confirmed.status} ${confirmed.text}`);
  }

  return {
    app,
    url: app.httpUrl,
    smtp,
    logs,
    post,
    request,
    async verifyByEmail(email, publicKey) {
      const started = await post('/api/shell-auth', { email, ssh_public_key: publicKey });
      if (started.status !== 200) throw new Error(`initiate failed: ${started.status} ${started.text}`);
      if (!started.body.already_verified) await confirmMailTo(email);
    },
    confirmMailTo,
    async mailsQueuedTo(email) {
      const row = await app.deps.db
        .selectFrom('mail_outbox')
        .select((eb) => eb.fn.countAll<string>().as('count'))
        .where('recipient', '=', email)
        .executeTakeFirstOrThrow();
      return Number(row.count);
    },
    async mailSettled(timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      while ((await outboxBacklog(app.deps)).pending > 0) {
        if (Date.now() > deadline) throw new Error(`mail still unsent after ${timeoutMs} ms`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    async close() {
      await app.close();
      if (!options.smtp) await smtp.close();
    },
  };
}

export function tokenOf(link: string): string {
  return new URL(link).searchParams.get('token')!;
}

export function confirmForm(token: string): RequestInit {
  return {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }).toString(),
  };
}
