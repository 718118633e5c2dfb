import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { setBilling } from '../../src/core/index.js';
import { createLogger } from '../../src/observability/log.js';
import { startApp, type App } from '../../src/process/app.js';
import { openTestDatabase } from '../support/database.js';
import { makeKey, uniqueEmail, type TestKey } from '../support/keys.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { openssh, parsedKey, ssh2Exec, TrickAgent } from '../support/ssh.js';

type Sample = { name: string; labels: Record<string, string>; value: number };
type Exposition = { samples: Sample[]; types: Map<string, string>; text: string };

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: -?\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/y;

/** A strict reading of the Prometheus text format (0.0.4): any line it cannot read fails the test. */
function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      const [, keyword, name, rest] = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line) ?? [];
      if (!keyword || !name || !NAME.test(name)) throw new Error(`bad comment line: ${line}`);
      if (keyword === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest ?? '')) throw new Error(`bad type: ${line}`);
        types.set(name, rest!);
      }
      continue;
    }
    const match = SAMPLE.exec(line);
    if (!match) throw new Error(`bad sample line: ${line}`);
    const [, name, labelText = '', valueText] = match;
    const labels: Record<string, string> = {};
    LABEL.lastIndex = 0;
    while (LABEL.lastIndex < labelText.length) {
      const label = LABEL.exec(labelText);
      if (!label) throw new Error(`bad labels: ${line}`);
      labels[label[1]!] = label[2]!.replace(/\\n/g, '\n').replace(/\\(["\\])/g, '$1');
    }
    // Prometheus reads values with Go's ParseFloat: NaN and Inf in any case (prom-client writes "Nan").
    const special = /^(nan|([+-])?inf)$/i.exec(valueText!);
    const value = special ? (special[1]!.toLowerCase() === 'nan' ? NaN : special[2] === '-' ? -Infinity : Infinity) : Number(valueText);
    if (!special && (valueText === '' || Number.isNaN(value))) throw new Error(`bad value: ${line}`);
    const family = name!.replace(/_(bucket|sum|count)$/, '');
    if (!types.has(name!) && !types.has(family)) throw new Error(`sample without a TYPE: ${line}`);
    samples.push({ name: name!, labels, value });
  }
  return { samples, types, text };
}

/** The sample with exactly these labels; 0 when it is not there yet. */
function valueOf(exposition: Exposition, name: string, labels: Record<string, string> = {}): number {
  const wanted = Object.entries(labels);
  const sample = exposition.samples.find(
    (s) => s.name === name && Object.keys(s.labels).length === wanted.length && wanted.every(([k, v]) => s.labels[k] === v),
  );
  return sample?.value ?? 0;
}

async function scrape(target: { app: App }): Promise<Exposition> {
  const response = await fetch(target.app.metricsUrl!);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseExposition(await response.text());
}

/** Retries `check` until it passes: a connection's metrics are recorded when the server sees it close. */
async function eventually(check: () => Promise<void>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

/** How much each listed sample moved between two scrapes. */
function deltas(before: Exposition, after: Exposition, wanted: Array<[string, Record<string, string>]>): Record<string, number> {
  return Object.fromEntries(
    wanted.map(([name, labels]) => [`${name}${JSON.stringify(labels)}`, valueOf(after, name, labels) - valueOf(before, name, labels)]),
  );
}

/** Our metric families and their types, on any database. */
const OUR_METRICS: Array<[string, string]> = [
  ['shell_auth_ssh_connections_total', 'counter'],
  ['shell_auth_ssh_connections_open', 'gauge'],
  ['shell_auth_ssh_auth_attempts_total', 'counter'],
  ['shell_auth_ssh_commands_total', 'counter'],
  ['shell_auth_ssh_command_duration_seconds', 'histogram'],
  ['shell_auth_http_requests_total', 'counter'],
  ['shell_auth_http_connections_refused_total', 'counter'],
  ['shell_auth_http_request_duration_seconds', 'histogram'],
  ['shell_auth_api_keys_minted_total', 'counter'],
  ['shell_auth_emails_queued_total', 'counter'],
  ['shell_auth_emails_sent_total', 'counter'],
  ['shell_auth_email_send_errors_total', 'counter'],
  ['shell_auth_emails_failed_total', 'counter'],
  ['shell_auth_emails_pending', 'gauge'],
  ['shell_auth_rate_limited_total', 'counter'],
  ['shell_auth_billing_checks_total', 'counter'],
  ['shell_auth_api_key_lookups_total', 'counter'],
  ['shell_auth_ssh_identity_lookups_total', 'counter'],
];
/** The Postgres pool's, read at each scrape: PGlite has none. */
const POOL_METRICS: Array<[string, string]> = [
  ['shell_auth_db_pool_connections', 'gauge'],
  ['shell_auth_db_pool_waiting', 'gauge'],
  ['shell_auth_db_pool_max_connections', 'gauge'],
  ['shell_auth_db_statements_total', 'counter'],
];

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp({ METRICS_PORT: '0' });
});
afterAll(async () => {
  await t?.close();
});

async function verifiedUser(): Promise<{ email: string; key: TestKey; org: string }> {
  const email = uniqueEmail('metrics');
  const key = makeKey();
  await t.verifyByEmail(email, key.publicKey);
  const proved = await openssh(t.app.sshPort, key.privateKeyPath, ['login', email]);
  if (proved.code !== 0) throw new Error(`login failed: ${proved.stderr}`);
  // The server counts a connection when it sees it close, a moment after the client exits.
  await eventually(async () => expect(valueOf(await scrape(t), 'shell_auth_ssh_connections_open')).toBe(0));
  return { email, key, org: email.split('@')[0]! };
}

describe('the metrics listener', () => {
  it('is off unless METRICS_PORT is set; serves only GET /metrics, on its own port', async () => {
    expect(loadConfig({}).metricsPort).toBeNull();
    expect(() => loadConfig({ METRICS_PORT: 'x' })).toThrow(/METRICS_PORT/);
    const url = new URL(t.app.metricsUrl!);
    expect(url.pathname).toBe('/metrics');
    expect(url.hostname).toBe('127.0.0.1');
    expect(url.port).not.toBe(new URL(t.url).port);
    expect((await fetch(new URL('/', url))).status).toBe(404);
    expect((await fetch(url, { method: 'POST' })).status).toBe(405);
    // The service's own port does not serve them.
    expect((await t.request('/metrics')).status).toBe(404);
  });

  it('parses as the Prometheus text format, with the default process metrics and conventional names', async () => {
    const exposition = await scrape(t);
    for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) {
      expect(exposition.types.has(name), name).toBe(true);
    }
    const ours = [...exposition.types].filter(([name]) => name.startsWith('shell_auth_'));
    expect(new Map(ours)).toEqual(new Map([...OUR_METRICS, ...POOL_METRICS]));
    for (const [name, type] of ours) {
      if (type === 'counter') expect(name).toMatch(/_total$/);
      else expect(name).not.toMatch(/_total$/);
    }
    // Known label values are there from the first scrape, at 0 or more.
    expect(exposition.samples.some((s) => s.name === 'shell_auth_rate_limited_total' && s.labels.limit === 'ssh_auth')).toBe(true);
    expect(exposition.samples.some((s) => s.name === 'shell_auth_ssh_connections_total' && s.labels.outcome === 'refused_limit')).toBe(true);
  });

  it('reads the Postgres pool at each scrape, with the statements sent', async () => {
    await t.request('/healthz');
    const exposition = await scrape(t);
    expect(valueOf(exposition, 'shell_auth_db_pool_max_connections')).toBe(20);
    expect(valueOf(exposition, 'shell_auth_db_pool_waiting')).toBe(0);
    const inUse = valueOf(exposition, 'shell_auth_db_pool_connections', { state: 'in_use' });
    const idle = valueOf(exposition, 'shell_auth_db_pool_connections', { state: 'idle' });
    expect(inUse).toBeGreaterThanOrEqual(0);
    expect(idle).toBeGreaterThanOrEqual(1); // /healthz left its connection in the pool
    expect(inUse + idle).toBeLessThanOrEqual(20);
    // One /healthz is one statement (its `select 1`), counted by the next scrape.
    const before = valueOf(exposition, 'shell_auth_db_statements_total');
    expect(before).toBeGreaterThan(0);
    await t.request('/healthz');
    expect(valueOf(await scrape(t), 'shell_auth_db_statements_total') - before).toBeGreaterThanOrEqual(1);
  });

  it('PGlite has no pool, so those stay absent: the same families but the pool\'s, no "state" label', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-metrics-pglite-'));
    const config = loadConfig({
      HOST: '127.0.0.1',
      HTTP_PORT: '0',
      SSH_PORT: '0',
      METRICS_PORT: '0',
      DATA_DIR: path.join(dir, 'data'),
      HOST_KEYS_DIR: path.join(dir, 'host_keys'),
    });
    const embedded = await startApp(config, createLogger('silent'), { database: await openTestDatabase('pglite') });
    try {
      await fetch(`${embedded.httpUrl}/healthz`);
      const exposition = await scrape({ app: embedded });
      const ours = [...exposition.types].filter(([name]) => name.startsWith('shell_auth_'));
      expect(new Map(ours)).toEqual(new Map(OUR_METRICS));
      expect(exposition.samples.filter((s) => s.name.startsWith('shell_auth_db_'))).toEqual([]);
      expect(exposition.samples.some((s) => 'state' in s.labels && s.name.startsWith('shell_auth_'))).toBe(false);
    } finally {
      await embedded.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the SSH door', () => {
  it('counts connections by outcome, authentication attempts by result, commands by name and exit code, and minted keys', async () => {
    const { key, org } = await verifiedUser();
    const stranger = makeKey();
    const before = await scrape(t);

    const ssh = (k: TestKey, args: string[], user?: string) => openssh(t.app.sshPort, k.privateKeyPath, args, user ? { user } : {});
    expect((await ssh(key, ['create', '--label', 'metrics-key'])).code).toBe(0);
    expect((await ssh(key, ['frobnicate', '--secret', 'hunter2'])).code).toBe(2);
    expect((await ssh(stranger, ['whoami'])).code).toBe(0);
    expect((await ssh(stranger, ['create', '--label', 'not-linked'])).code).toBe(1);
    const impostor = new TrickAgent([{ publicKey: parsedKey(key.publicKey), signer: parsedKey(stranger.privateKeyPath) }]);
    await expect(ssh2Exec(t.app.sshPort, { agent: impostor }, 'whoami')).rejects.toThrow(/authentication methods failed/);
    await setBilling(t.app.deps, org, 'suspended', { channel: 'admin', ip: null });
    expect((await ssh(key, ['create', '--label', 'suspended-org'])).code).toBe(1);

    await eventually(async () => {
      const after = await scrape(t);
      expect(
        deltas(before, after, [
          ['shell_auth_ssh_connections_total', { outcome: 'authenticated' }],
          ['shell_auth_ssh_connections_total', { outcome: 'auth_failed' }],
          ['shell_auth_ssh_connections_total', { outcome: 'refused_limit' }],
          ['shell_auth_ssh_auth_attempts_total', { result: 'accepted' }],
          ['shell_auth_ssh_auth_attempts_total', { result: 'bad_signature' }],
          ['shell_auth_ssh_commands_total', { command: 'create', exit_code: '0' }],
          ['shell_auth_ssh_commands_total', { command: 'create', exit_code: '1' }],
          ['shell_auth_ssh_commands_total', { command: 'unknown', exit_code: '2' }],
          ['shell_auth_ssh_commands_total', { command: 'whoami', exit_code: '0' }],
          ['shell_auth_ssh_command_duration_seconds_count', { command: 'create' }],
          ['shell_auth_api_keys_minted_total', { door: 'ssh' }],
          ['shell_auth_api_keys_minted_total', { door: 'http' }],
          ['shell_auth_billing_checks_total', { result: 'active' }],
          ['shell_auth_billing_checks_total', { result: 'inactive' }],
          ['shell_auth_ssh_connections_open', {}],
        ]),
      ).toEqual({
        'shell_auth_ssh_connections_total{"outcome":"authenticated"}': 5,
        'shell_auth_ssh_connections_total{"outcome":"auth_failed"}': 1,
        'shell_auth_ssh_connections_total{"outcome":"refused_limit"}': 0,
        'shell_auth_ssh_auth_attempts_total{"result":"accepted"}': 5,
        'shell_auth_ssh_auth_attempts_total{"result":"bad_signature"}': 1,
        'shell_auth_ssh_commands_total{"command":"create","exit_code":"0"}': 1,
        // Not linked (gated), and billing suspended (402).
        'shell_auth_ssh_commands_total{"command":"create","exit_code":"1"}': 2,
        'shell_auth_ssh_commands_total{"command":"unknown","exit_code":"2"}': 1,
        'shell_auth_ssh_commands_total{"command":"whoami","exit_code":"0"}': 1,
        'shell_auth_ssh_command_duration_seconds_count{"command":"create"}': 3,
        'shell_auth_api_keys_minted_total{"door":"ssh"}': 1,
        'shell_auth_api_keys_minted_total{"door":"http"}': 0,
        'shell_auth_billing_checks_total{"result":"active"}': 1,
        'shell_auth_billing_checks_total{"result":"inactive"}': 1,
        'shell_auth_ssh_connections_open{}': 0,
      });
      // The histogram's buckets are cumulative and end with +Inf = count.
      const buckets = after.samples.filter((s) => s.name === 'shell_auth_ssh_command_duration_seconds_bucket' && s.labels.command === 'create');
      expect(buckets.at(-1)?.labels.le).toBe('+Inf');
      expect(buckets.at(-1)?.value).toBe(valueOf(after, 'shell_auth_ssh_command_duration_seconds_count', { command: 'create' }));
      expect(buckets.map((b) => b.value)).toEqual([...buckets.map((b) => b.value)].sort((a, b) => a - b));
    });
  });
});

describe('the HTTP door', () => {
  it('counts requests by route table key and status; anything unmatched is "unknown", never its path', async () => {
    const key = makeKey();
    const before = await scrape(t);
    expect((await t.request('/healthz')).status).toBe(200);
    expect((await t.request('/no/such/path-abc123?token=zzz')).status).toBe(404);
    expect((await t.request('/healthz', { method: 'DELETE' })).status).toBe(405);
    expect((await t.post('/api/shell-auth/verify-key', { email: uniqueEmail('nobody'), ssh_public_key: key.publicKey })).status).toBe(401);
    // Counted when the response has been handed over, which the client may see first.
    let after = before;
    await eventually(async () => {
      after = await scrape(t);
      expect(valueOf(after, 'shell_auth_http_requests_total', { route: 'POST /api/shell-auth/verify-key', status: '401' })).toBeGreaterThan(
        valueOf(before, 'shell_auth_http_requests_total', { route: 'POST /api/shell-auth/verify-key', status: '401' }),
      );
    });
    expect(
      deltas(before, after, [
        ['shell_auth_http_requests_total', { route: 'GET /healthz', status: '200' }],
        ['shell_auth_http_requests_total', { route: 'unknown', status: '404' }],
        ['shell_auth_http_requests_total', { route: 'unknown', status: '405' }],
        ['shell_auth_http_requests_total', { route: 'POST /api/shell-auth/verify-key', status: '401' }],
        ['shell_auth_http_request_duration_seconds_count', { route: 'GET /healthz' }],
        ['shell_auth_http_request_duration_seconds_count', { route: 'unknown' }],
      ]),
    ).toEqual({
      'shell_auth_http_requests_total{"route":"GET /healthz","status":"200"}': 1,
      'shell_auth_http_requests_total{"route":"unknown","status":"404"}': 1,
      'shell_auth_http_requests_total{"route":"unknown","status":"405"}': 1,
      'shell_auth_http_requests_total{"route":"POST /api/shell-auth/verify-key","status":"401"}': 1,
      'shell_auth_http_request_duration_seconds_count{"route":"GET /healthz"}': 1,
      'shell_auth_http_request_duration_seconds_count{"route":"unknown"}': 2,
    });
    expect(after.text).not.toContain('path-abc123');
    expect(after.text).not.toContain('DELETE');
  });

  it('counts verification emails and the mail limit, and HTTP mints by door', async () => {
    const email = uniqueEmail('mailmetrics');
    const key = makeKey();
    const before = await scrape(t);
    expect((await t.post('/api/shell-auth', { email, ssh_public_key: key.publicKey })).status).toBe(200);
    // The same (email, key) within a minute: the per-key mail limit.
    expect((await t.post('/api/shell-auth', { email, ssh_public_key: key.publicKey })).status).toBe(429);
    await t.confirmMailTo(email);
    expect((await t.post('/api/shell-auth/api-keys', { email, ssh_public_key: key.publicKey, label: 'http-minted' })).status).toBe(200);
    let after = before;
    await eventually(async () => {
      after = await scrape(t);
      expect(valueOf(after, 'shell_auth_http_requests_total', { route: 'POST /api/shell-auth/api-keys', status: '200' })).toBeGreaterThan(
        valueOf(before, 'shell_auth_http_requests_total', { route: 'POST /api/shell-auth/api-keys', status: '200' }),
      );
      // The mail server's OK can reach the sender just after the test's sink has the message.
      expect(valueOf(after, 'shell_auth_emails_sent_total')).toBeGreaterThan(valueOf(before, 'shell_auth_emails_sent_total'));
    });
    expect(
      deltas(before, after, [
        ['shell_auth_emails_queued_total', {}],
        ['shell_auth_emails_sent_total', {}],
        ['shell_auth_emails_failed_total', {}],
        ['shell_auth_rate_limited_total', { limit: 'mail_per_key' }],
        ['shell_auth_rate_limited_total', { limit: 'mail_per_inbox' }],
        ['shell_auth_api_keys_minted_total', { door: 'http' }],
        ['shell_auth_billing_checks_total', { result: 'active' }],
        ['shell_auth_http_requests_total', { route: 'POST /api/shell-auth', status: '429' }],
      ]),
    ).toEqual({
      'shell_auth_emails_queued_total{}': 1,
      'shell_auth_emails_sent_total{}': 1,
      'shell_auth_emails_failed_total{}': 0,
      'shell_auth_rate_limited_total{"limit":"mail_per_key"}': 1,
      'shell_auth_rate_limited_total{"limit":"mail_per_inbox"}': 0,
      'shell_auth_api_keys_minted_total{"door":"http"}': 1,
      'shell_auth_billing_checks_total{"result":"active"}': 1,
      'shell_auth_http_requests_total{"route":"POST /api/shell-auth","status":"429"}': 1,
    });
  });
});

describe('a second app in the same process', () => {
  it('has its own registry: mail send errors and the lookup limit count there, not in the first', async () => {
    // Its own client address (through TRUST_PROXY): the lookup budget is shared in the database.
    const address = `2001:db8::${Math.floor(Math.random() * 0xffff).toString(16)}:${process.pid.toString(16)}`;
    const second = await startTestApp(
      { METRICS_PORT: '0', SMTP_URL: 'smtp://127.0.0.1:9', HTTP_LOOKUPS_PER_MINUTE: '2', TRUST_PROXY: 'true', HTTP_PROXY_FROM: '127.0.0.1' },
      { smtp: t.smtp, headers: { 'x-forwarded-for': address } },
    );
    try {
      const firstBefore = await scrape(t);
      const key = makeKey();
      // No mail server: the request is answered; the send fails behind it, and is retried.
      expect((await second.post('/api/shell-auth', { email: uniqueEmail('nomail'), ssh_public_key: key.publicKey })).status).toBe(200);
      const lookups = [];
      for (let i = 0; i < 3; i++) {
        lookups.push((await second.post('/api/shell-auth/verify-key', { email: uniqueEmail('probe'), ssh_public_key: key.publicKey })).status);
      }
      expect(lookups).toEqual([401, 401, 429]);
      let secondAfter = await scrape(second);
      await eventually(async () => {
        secondAfter = await scrape(second);
        expect(valueOf(secondAfter, 'shell_auth_http_requests_total', { route: 'POST /api/shell-auth/verify-key', status: '429' })).toBe(1);
        expect(valueOf(secondAfter, 'shell_auth_email_send_errors_total')).toBeGreaterThanOrEqual(1);
        expect(valueOf(secondAfter, 'shell_auth_emails_pending')).toBe(1);
      });
      expect(valueOf(secondAfter, 'shell_auth_emails_queued_total')).toBe(1);
      expect(valueOf(secondAfter, 'shell_auth_emails_failed_total')).toBe(0); // not given up: the link still has minutes
      expect(valueOf(secondAfter, 'shell_auth_emails_sent_total')).toBe(0);
      expect(valueOf(secondAfter, 'shell_auth_rate_limited_total', { limit: 'http_lookups' })).toBe(1);
      const firstAfter = await scrape(t);
      expect(valueOf(firstAfter, 'shell_auth_email_send_errors_total')).toBe(valueOf(firstBefore, 'shell_auth_email_send_errors_total'));
      expect(valueOf(firstAfter, 'shell_auth_rate_limited_total', { limit: 'http_lookups' })).toBe(
        valueOf(firstBefore, 'shell_auth_rate_limited_total', { limit: 'http_lookups' }),
      );
    } finally {
      await second.close();
    }
  });
});

describe('label values', () => {
  it('never hold an email, an address, a key id, a user id or a fingerprint', async () => {
    const exposition = await scrape(t);
    const values = new Set(exposition.samples.flatMap((s) => Object.values(s.labels)));
    expect(values.size).toBeGreaterThan(10);
    const users = await t.app.deps.db.selectFrom('users').select(['id', 'email']).execute();
    const apiKeys = await t.app.deps.db.selectFrom('api_keys').select('id').execute();
    const sshKeys = await t.app.deps.db.selectFrom('ssh_keys').select('fingerprint').execute();
    expect(users.length).toBeGreaterThan(0);
    expect(apiKeys.length).toBeGreaterThan(0);
    for (const value of values) {
      expect(value).not.toMatch(/@/);
      expect(value).not.toMatch(/\b\d{1,3}(\.\d{1,3}){3}\b|::/);
      expect(value).not.toMatch(/[0-9a-f]{8}-[0-9a-f]{4}-/i);
      expect(value).not.toMatch(/SHA256:/);
    }
    for (const secretish of [...users.flatMap((u) => [u.id, u.email]), ...apiKeys.map((k) => k.id), ...sshKeys.map((k) => k.fingerprint), 'hunter2', 'frobnicate']) {
      expect(exposition.text).not.toContain(secretish);
    }
    // Every label is one of the bounded dimensions.
    const labelNames = new Set(exposition.samples.filter((s) => s.name.startsWith('shell_auth_')).flatMap((s) => Object.keys(s.labels)));
    expect([...labelNames].sort()).toEqual(['command', 'door', 'exit_code', 'le', 'limit', 'outcome', 'result', 'route', 'source', 'status', 'state'].sort());
  });
});
