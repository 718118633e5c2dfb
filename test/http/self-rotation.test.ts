import fs from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { openDatabase } from '../../src/db/database.js';
import { createHttpServer } from '../../src/http/server.js';
import { createLogger } from '../../src/observability/log.js';
import { startApp } from '../../src/process/app.js';
import { startTestApp, type HttpResult, type TestApp } from '../support/app.js';
import { usingPostgres } from '../support/database.js';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { until } from '../support/processes.js';

// POST /api/api-keys/rotate (issue 19, point 3): a CI job or an agent renews its own key with
// nothing but the key; the old one keeps working for the overlap, then gets whoami's 401.

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

async function mintedKey(label = 'self-rotating'): Promise<{ api_key: string; api_key_id: string; org_id: string; org_name: string }> {
  const email = uniqueEmail('selfrot');
  const key = makeKey();
  await t.verifyByEmail(email, key.publicKey);
  const res = await t.post('/api/shell-auth/api-keys', { email, ssh_public_key: key.publicKey, label });
  expect(res.status, res.text).toBe(200);
  return res.body;
}

const bearer = (apiKey: string) => ({ authorization: `Bearer ${apiKey}` });
const whoami = (apiKey: string) => t.request('/api/whoami', { headers: bearer(apiKey) });
function rotate(apiKey: string | null, body?: unknown, headers: Record<string, string> = {}): Promise<HttpResult> {
  return t.request('/api/api-keys/rotate', {
    method: 'POST',
    headers: { ...(apiKey === null ? {} : bearer(apiKey)), ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
}

/** The service's clock, `ms` ahead of the real one, for the duration of `body`. */
async function later<T>(ms: number, body: () => Promise<T>): Promise<T> {
  t.app.deps.now = () => new Date(Date.now() + ms);
  try {
    return await body();
  } finally {
    t.app.deps.now = undefined;
  }
}

describe('POST /api/api-keys/rotate', () => {
  it('with no body: a new key (same org, label, permissions), the old one working for 1h, then 401', async () => {
    const old = await mintedKey('ci-self-rotation');
    const before = Date.now();
    const res = await rotate(old.api_key);
    expect(res.status, res.text).toBe(200);
    expect(Object.keys(res.body).sort()).toEqual(['api_key', 'api_key_id', 'expires_at', 'old_key_expires_at', 'org_id', 'org_name', 'permissions', 'replaces', 'success']);
    expect(res.body).toMatchObject({ success: true, replaces: old.api_key_id, org_id: old.org_id, org_name: old.org_name, permissions: ['clusters:view', 'clusters:create'], expires_at: null });
    const stopsAt = new Date(res.body.old_key_expires_at).getTime();
    expect(stopsAt).toBeGreaterThanOrEqual(before + 3_600_000 - 1_000);
    expect(stopsAt).toBeLessThanOrEqual(Date.now() + 3_600_000);

    const fresh = await whoami(res.body.api_key);
    expect(fresh.body).toMatchObject({ api_key_id: res.body.api_key_id, label: 'ci-self-rotation' });
    expect((await whoami(old.api_key)).status).toBe(200);
    await later(3_600_000 + 1_000, async () => {
      expect((await whoami(old.api_key)).status).toBe(401);
      expect((await whoami(res.body.api_key)).status).toBe(200);
    });

    // Audited as the holder's act: no account, `by: holder`.
    const events = await t.app.deps.db.selectFrom('audit_events').select(['action', 'actor_user_id', 'details', 'ip']).where('subject_id', '=', old.api_key_id).where('action', '=', 'api_key.rotated').execute();
    expect(events).toEqual([
      { action: 'api_key.rotated', actor_user_id: null, ip: '127.0.0.1', details: expect.objectContaining({ by: 'holder', overlap_seconds: 3600, replaced_by: res.body.api_key_id }) },
    ]);
  });

  it('{"overlap": "10m"}: the old key works until then and not after; "0": it stops at once', async () => {
    const old = await mintedKey('short-overlap');
    const res = await rotate(old.api_key, { overlap: '10m' });
    expect(res.status, res.text).toBe(200);
    await later(10 * 60_000 - 5_000, async () => expect((await whoami(old.api_key)).status).toBe(200));
    await later(10 * 60_000 + 1_000, async () => expect((await whoami(old.api_key)).status).toBe(401));

    const other = await mintedKey('zero-overlap');
    expect((await whoami(other.api_key)).status).toBe(200); // in the whoami cache now
    const atOnce = await rotate(other.api_key, { overlap: '0' });
    expect(atOnce.status, atOnce.text).toBe(200);
    expect((await whoami(other.api_key)).status).toBe(401);
    expect((await whoami(atOnce.body.api_key)).status).toBe(200);
  });

  it('twice from the same old key: the second is 409 (a leaked key cannot fork a chain); the new key can rotate itself', async () => {
    const old = await mintedKey('rotate-only-once');
    const first = await rotate(old.api_key);
    expect(first.status).toBe(200);
    const second = await rotate(old.api_key);
    expect(second.status).toBe(409);
    expect(second.body).toEqual({ success: false, error: 'This API key was already rotated: rotate the key that replaced it', detail: first.body.api_key_id });
    const next = await rotate(first.body.api_key, {});
    expect(next.status, next.text).toBe(200);
    expect(next.body.replaces).toBe(first.body.api_key_id);
  });

  it('a key that does not authenticate gets exactly /api/whoami\'s 401, whatever the body', async () => {
    const revoked = await mintedKey('revoked-then-rotated');
    const atOnce = await rotate(revoked.api_key, { overlap: '0' });
    expect(atOnce.status).toBe(200);
    const made = await mintedKey('well-formed-wrong');
    const wrong = made.api_key.slice(0, 36) + '0'.repeat(64);
    for (const [apiKey, body] of [
      ['not-a-key', undefined],
      [wrong, undefined],
      [revoked.api_key, { overlap: '1h' }],
      [revoked.api_key, '{not json'],
      [wrong, { overlap: 'forever' }],
    ] as const) {
      const res = await rotate(apiKey, body);
      const reference = await whoami(apiKey);
      expect(res.status).toBe(401);
      expect(res.text).toBe(reference.text);
      expect(res.headers.get('content-type')).toBe(reference.headers.get('content-type'));
    }
    const noHeader = await rotate(null);
    const noHeaderWhoami = await t.request('/api/whoami');
    expect([noHeader.status, noHeader.text]).toEqual([noHeaderWhoami.status, noHeaderWhoami.text]);
  });

  it('a bad body is 400 saying why; nothing is rotated', async () => {
    const old = await mintedKey('bad-bodies');
    const tooLong = await rotate(old.api_key, { overlap: '8d' });
    expect(tooLong.status).toBe(400);
    expect(tooLong.body).toEqual({ success: false, error: 'Invalid request', detail: 'overlap: must be at most 7d' });
    expect((await rotate(old.api_key, { overlap: 'soon' })).body.detail).toBe('overlap: must be a duration such as 1h, 15m or 0 (at once)');
    expect((await rotate(old.api_key, { overlap: 3600 })).status).toBe(400);
    expect((await rotate(old.api_key, '{nope')).body).toEqual({ success: false, error: 'Malformed JSON body' });
    expect((await rotate(old.api_key, '{"overlap": "1h"}', { 'content-type': 'text/plain' })).body).toEqual({ success: false, error: 'Content-Type must be application/json' });
    const row = await t.app.deps.db.selectFrom('api_keys').select('replaced_by_id').where('id', '=', old.api_key_id).executeTakeFirstOrThrow();
    expect(row.replaced_by_id).toBeNull();
  });

  it('only POST', async () => {
    const res = await t.request('/api/api-keys/rotate');
    expect(res.status).toBe(405);
  });

  it.runIf(usingPostgres)('another instance that had the old key cached drops it at once (NOTIFY): it does not outlive the overlap there', async () => {
    const url = (t.app.database.target as { url: string }).url;
    const b = await startApp(
      loadConfig({ HOST: '127.0.0.1', HTTP_PORT: '0', SSH_PORT: '0', DATABASE_URL: url, SMTP_URL: t.smtp.url, LOG_LEVEL: 'silent', HOST_KEYS_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-rotation-')) }),
      createLogger('silent'),
      { database: await openDatabase({ kind: 'postgres', url }) },
    );
    try {
      const viaB = (apiKey: string) => fetch(`${b.httpUrl}/api/whoami`, { headers: bearer(apiKey) });
      await until(() => b.deps.confirmations?.listening() === true, 'the second instance listening', () => '', 10_000);
      const old = await mintedKey('cached-elsewhere');
      expect((await viaB(old.api_key)).status).toBe(200);
      expect(b.deps.apiKeyCache!.get(old.api_key_id)).toBeDefined(); // B answers it from memory now
      const res = await rotate(old.api_key, { overlap: '5m' }); // on the first instance
      expect(res.status).toBe(200);
      await until(() => b.deps.apiKeyCache!.get(old.api_key_id) === undefined, 'the old key dropped from the other cache', () => '', 1_000);
      expect((await viaB(old.api_key)).status).toBe(200); // inside the overlap
      b.deps.now = () => new Date(Date.now() + 5 * 60_000 + 1_000);
      expect((await viaB(old.api_key)).status).toBe(401);
    } finally {
      await b.close();
    }
  });
});

describe('POST /api/api-keys/rotate: limits', () => {
  it('A -> B -> C: the second rotation ends A at once, inside its overlap; B (in its overlap) and C work', async () => {
    const a = await mintedKey('chain-over-http');
    const b = await rotate(a.api_key, { overlap: '7d' });
    expect(b.status, b.text).toBe(200);
    expect((await whoami(a.api_key)).status).toBe(200);
    const c = await rotate(b.body.api_key, { overlap: '7d' });
    expect(c.status, c.text).toBe(200);
    expect((await whoami(a.api_key)).body).toEqual({ success: false, error: 'Invalid API key' });
    expect((await whoami(b.body.api_key)).status).toBe(200);
    expect((await whoami(c.body.api_key)).status).toBe(200);
  });

  it('every request counts against the address\'s lookup budget, not only failures: each success mints a key', async () => {
    const LIMIT = 3;
    const limited = createHttpServer(t.app.deps, {
      trustProxy: ['127.0.0.1/32'],
      log: t.app.deps.log,
      lookupsPerMinute: LIMIT,
      limits: { ...loadConfig({}).http, ipv6Prefix: 64 },
      sshHint: t.app.sshHint,
      readiness: t.app.readiness,
    });
    await new Promise<void>((resolve) => limited.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(limited.address() as AddressInfo).port}/api/api-keys/rotate`;
      // An address of its own: budgets live in the database, shared with other test files.
      const from = `198.18.19.${Math.floor(Math.random() * 250) + 1}`;
      let apiKey = (await mintedKey('budgeted-chain')).api_key;
      const statuses: number[] = [];
      for (let i = 0; i <= LIMIT; i++) {
        const res = await fetch(url, { method: 'POST', headers: { ...bearer(apiKey), 'x-forwarded-for': from } });
        statuses.push(res.status);
        if (res.status === 200) apiKey = ((await res.json()) as { api_key: string }).api_key;
        else await res.body?.cancel();
      }
      expect(statuses).toEqual([200, 200, 200, 429]);
    } finally {
      limited.closeAllConnections();
      await new Promise((resolve) => limited.close(resolve));
    }
  });
});

describe('POST /api/api-keys/rotate: a client that leaves before the answer', () => {
  it('never gets the new key, so it is revoked (undelivered); the old key is as it was: working past the overlap, rotatable again', async () => {
    const old = await mintedKey('left-mid-rotation');
    const billing = t.app.deps.billing;
    let release = () => {};
    let checking = false;
    t.app.deps.billing = {
      isActive: () => {
        checking = true;
        return new Promise((resolve) => (release = () => resolve(true)));
      },
    };
    // The server's side of this one request, to know when it has seen the client leave.
    let answer: ServerResponse | undefined;
    const spy = (req: IncomingMessage, res: ServerResponse) => {
      if (req.url === '/api/api-keys/rotate' && req.headers.authorization === `Bearer ${old.api_key}`) answer = res;
    };
    t.app.http.on('request', spy);
    try {
      const request = http.request(`${t.app.httpUrl}/api/api-keys/rotate`, {
        method: 'POST',
        agent: false,
        headers: { ...bearer(old.api_key), 'content-type': 'application/json' },
      });
      request.on('error', () => {}); // we hang up ourselves
      request.end(JSON.stringify({ overlap: '10m' }));
      await until(() => checking, 'the rotation at its billing check', () => t.logs.join('\n'), 10_000);
      request.destroy();
      await until(() => answer?.destroyed === true, 'the server seeing the client leave', () => '', 10_000);
      release();
      await until(() => t.logs.some((line) => line.includes('rotation answer not delivered')), 'the undelivered rotation undone', () => t.logs.join('\n'), 10_000);
    } finally {
      t.app.http.off('request', spy);
      t.app.deps.billing = billing;
      release();
    }
    const db = t.app.deps.db;
    const successor = await db.selectFrom('api_keys').selectAll().where('label', '=', 'left-mid-rotation').where('id', '!=', old.api_key_id).executeTakeFirstOrThrow();
    expect(successor).toMatchObject({ revoked_reason: 'undelivered', rotated_from_id: null });
    expect(successor.revoked_at).not.toBeNull();
    const restored = await db.selectFrom('api_keys').selectAll().where('id', '=', old.api_key_id).executeTakeFirstOrThrow();
    expect(restored).toMatchObject({ replaced_by_id: null, expires_at: null, revoked_at: null });
    await later(10 * 60_000 + 1_000, async () => expect((await whoami(old.api_key)).status).toBe(200));
    const again = await rotate(old.api_key);
    expect(again.status, again.text).toBe(200);
    expect(again.body.replaces).toBe(old.api_key_id);
  });
});
