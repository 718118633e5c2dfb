import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { startApp } from '../../src/process/app.js';
import { loadConfig } from '../../src/config/config.js';
import { createApiKeyCache, revokeApiKey, type RevocationSignals } from '../../src/core/index.js';
import { openDatabase } from '../../src/db/database.js';
import { createLogger } from '../../src/observability/log.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { countingStatements, usingPostgres } from '../support/database.js';
import { makeKey, uniqueEmail } from '../support/keys.js';

/** LISTEN/NOTIFY as the cache sees it, driven by the test: up or down, a payload, a reconnect. */
function signals() {
  const listeners = new Set<{ message(id: string): void; recheck(): void }>();
  let up = true;
  const api: RevocationSignals = {
    listening: () => up,
    subscribe(listener) {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
  };
  return {
    api,
    setUp: (value: boolean) => (up = value),
    revoke: (id: string) => listeners.forEach((l) => l.message(id)),
    reconnect: () => listeners.forEach((l) => l.recheck()),
    subscribers: () => listeners.size,
  };
}

describe('the API key cache', () => {
  it('serves an entry until its TTL, and a revocation notice or a reconnect drops it', () => {
    const s = signals();
    let clock = 0;
    const cache = createApiKeyCache<string>(s.api, { ttlMs: 1000, maxEntries: 10, now: () => clock });
    cache.put(cache.ticket(), 'a', 'A');
    cache.put(cache.ticket(), 'b', 'B');
    expect([cache.get('a'), cache.get('b')]).toEqual(['A', 'B']);
    clock = 999;
    expect(cache.get('a')).toBe('A');
    clock = 1000;
    expect(cache.get('a')).toBeUndefined(); // expired, and gone
    expect(cache.size()).toBe(1);

    s.revoke('b');
    expect(cache.get('b')).toBeUndefined();
    cache.put(cache.ticket(), 'c', 'C');
    s.reconnect(); // notifications may have been missed meanwhile: trust nothing kept
    expect(cache.get('c')).toBeUndefined();
    expect(cache.size()).toBe(0);
  });

  it('is not consulted, and not filled, while the listening connection is down', () => {
    const s = signals();
    const cache = createApiKeyCache<string>(s.api, { ttlMs: 60_000, maxEntries: 10 });
    cache.put(cache.ticket(), 'a', 'A');
    s.setUp(false);
    expect(cache.get('a')).toBeUndefined();
    cache.put(cache.ticket(), 'b', 'B');
    s.setUp(true);
    expect(cache.get('b')).toBeUndefined();
  });

  it('does not store a lookup that raced an invalidation (of any key), nor one that raced this instance\'s own revoke', () => {
    const s = signals();
    const cache = createApiKeyCache<string>(s.api, { ttlMs: 60_000, maxEntries: 10 });
    const before = cache.ticket(); // a lookup starts...
    s.revoke('a'); // ...the key is revoked while it waits for the database...
    cache.put(before, 'a', 'A (read before the revocation)');
    expect(cache.get('a')).toBeUndefined();

    const again = cache.ticket();
    cache.forget('x');
    cache.put(again, 'a', 'A');
    expect(cache.get('a')).toBeUndefined();
    cache.put(cache.ticket(), 'a', 'A');
    expect(cache.get('a')).toBe('A');
  });

  it('holds at most maxEntries, dropping the oldest; close unsubscribes', () => {
    const s = signals();
    const cache = createApiKeyCache<number>(s.api, { ttlMs: 60_000, maxEntries: 3 });
    for (let i = 0; i < 5; i++) cache.put(cache.ticket(), `k${i}`, i);
    expect(cache.size()).toBe(3);
    expect(['k0', 'k1', 'k2', 'k3', 'k4'].map((k) => cache.get(k))).toEqual([undefined, undefined, 2, 3, 4]);
    expect(s.subscribers()).toBe(1);
    cache.close();
    expect(s.subscribers()).toBe(0);
    expect(cache.size()).toBe(0);
  });
});

describe('GET /api/whoami through the cache (the real service)', () => {
  const mintedKey = async (t: TestApp) => {
    const email = uniqueEmail('cache');
    const key = makeKey();
    await t.verifyByEmail(email, key.publicKey);
    const minted = await t.post('/api/shell-auth/api-keys', { email, ssh_public_key: key.publicKey, label: 'cached-key' });
    expect(minted.status).toBe(200);
    return minted.body as { api_key: string; api_key_id: string };
  };
  const whoami = (t: TestApp, apiKey: string) => t.request('/api/whoami', { headers: { authorization: `Bearer ${apiKey}` } });
  /** Counts the app's statements on api_keys from here on (its mail sender shares the handle). */
  const countApiKeyStatements = (t: TestApp) => {
    const counted = countingStatements(t.app.deps.db, { table: 'api_keys' });
    t.app.deps.db = counted.db;
    return counted.statements;
  };
  const origin = { channel: 'admin' as const, ip: null };

  it('a key checked again is answered without the database; revoked here, it is refused at once', async () => {
    const t = await startTestApp();
    try {
      await until(() => t.app.deps.apiKeyCache !== undefined && (t.app.deps.confirmations?.listening() ?? false));
      const { api_key, api_key_id } = await mintedKey(t);
      const statements = countApiKeyStatements(t);
      expect((await whoami(t, api_key)).status).toBe(200);
      expect(statements).toEqual(['SelectQueryNode', 'UpdateQueryNode']); // looked up, last_used_at written
      statements.length = 0;
      expect((await whoami(t, api_key)).body).toMatchObject({ success: true, api_key_id });
      expect(statements).toEqual([]);
      // A wrong secret for the same id (valid checksum) is still compared, cache or not.
      const forgedBody = api_key.slice(0, 36) + 'f'.repeat(56);
      expect((await whoami(t, forgedBody + crc32(forgedBody).toString(16).padStart(8, '0'))).status).toBe(401);
      expect(statements).toEqual([]);
      await revokeApiKey(t.app.deps, null, api_key_id, origin);
      expect((await whoami(t, api_key)).status).toBe(401);
    } finally {
      await t.close();
    }
  });

  it('API_KEY_CACHE_TTL=0: no cache, every check asks the database', async () => {
    const t = await startTestApp({ API_KEY_CACHE_TTL: '0' });
    try {
      expect(t.app.deps.apiKeyCache).toBeUndefined();
      const { api_key } = await mintedKey(t);
      const statements = countApiKeyStatements(t);
      expect((await whoami(t, api_key)).status).toBe(200);
      statements.length = 0;
      expect((await whoami(t, api_key)).status).toBe(200);
      expect(statements).toEqual(['SelectQueryNode']);
    } finally {
      await t.close();
    }
  });

  it.runIf(usingPostgres)('revoked on one instance, refused by another that had it cached, as soon as the NOTIFY arrives', async () => {
    const a = await startTestApp();
    const url = (a.app.database.target as { url: string }).url;
    const b = await startApp(
      loadConfig({ HOST: '127.0.0.1', HTTP_PORT: '0', SSH_PORT: '0', DATABASE_URL: url, SMTP_URL: a.smtp.url, LOG_LEVEL: 'silent', HOST_KEYS_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-cache-')) }),
      createLogger('silent'),
      { database: await openDatabase({ kind: 'postgres', url }) },
    );
    try {
      const viaB = (apiKey: string) => fetch(`${b.httpUrl}/api/whoami`, { headers: { authorization: `Bearer ${apiKey}` } });
      await until(() => b.deps.confirmations?.listening() === true);
      const { api_key, api_key_id } = await mintedKey(a);
      expect((await viaB(api_key)).status).toBe(200);
      expect(b.deps.apiKeyCache!.get(api_key_id)).toBeDefined(); // B now answers it from memory
      await revokeApiKey(a.app.deps, null, api_key_id, origin);
      const revokedAt = performance.now();
      await until(() => b.deps.apiKeyCache!.get(api_key_id) === undefined);
      expect(performance.now() - revokedAt).toBeLessThan(1000);
      expect((await viaB(api_key)).status).toBe(401);
    } finally {
      await b.close();
      await a.close();
    }
  });
});

async function until(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
