import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authenticateApiKey, parseApiKey, revokeApiKey, generateApiKey } from '../../src/core/index.js';
import type { CoreDeps } from '../../src/core/index.js';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { countingStatements } from '../support/database.js';

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

async function mintKey(label = 'test-key-label') {
  const email = uniqueEmail('keys');
  const key = makeKey();
  await t.verifyByEmail(email, key.publicKey);
  const res = await t.post('/api/shell-auth/api-keys', { email, ssh_public_key: key.publicKey, label });
  expect(res.status).toBe(200);
  return { email, key, apiKey: res.body.api_key as string, apiKeyId: res.body.api_key_id as string, orgId: res.body.org_id as string };
}

const bearer = (apiKey: string) => ({ headers: { authorization: `Bearer ${apiKey}` } });

describe('API keys', () => {
  it('are id + 56 random hex + CRC32 of the first 92 chars, 100 chars in all', () => {
    for (let i = 0; i < 50; i++) {
      const { id, apiKey } = generateApiKey();
      expect(apiKey).toHaveLength(100);
      expect(apiKey).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}[0-9a-f]{64}$/);
      expect(apiKey.slice(0, 36)).toBe(id);
      expect(apiKey.slice(92)).toBe(crc32(apiKey.slice(0, 92)).toString(16).padStart(8, '0'));
      expect(parseApiKey(apiKey)).toEqual({ id });
    }
  });

  it('take their secrets from a pool that never gives the same bytes twice (1,000 keys: 15 refills)', () => {
    const secrets = Array.from({ length: 1000 }, () => generateApiKey().apiKey.slice(36, 92));
    expect(new Set(secrets).size).toBe(1000);
    // No secret overlaps another's bytes (a pool offset reused or off by some bytes would).
    expect(new Set(secrets.map((s) => s.slice(0, 16))).size).toBe(1000);
    expect(new Set(secrets.map((s) => s.slice(40))).size).toBe(1000);
    // Each hex digit about 1/16 of the 56,000 (3,500 ± 350 is six standard deviations): zeroed
    // or repeated bytes would skew it.
    const counts = new Map<string, number>();
    for (const digit of secrets.join('')) counts.set(digit, (counts.get(digit) ?? 0) + 1);
    expect(counts.size).toBe(16);
    for (const [digit, count] of counts) expect(Math.abs(count - 3500), `digit ${digit}: ${count}`).toBeLessThan(350);
  });

  it('a mistyped key fails its checksum', () => {
    const { apiKey } = generateApiKey();
    const flipped = apiKey.slice(0, 50) + (apiKey[50] === 'a' ? 'b' : 'a') + apiKey.slice(51);
    expect(parseApiKey(flipped)).toBeNull();
    expect(parseApiKey(apiKey.toUpperCase())).toBeNull();
    expect(parseApiKey(apiKey.slice(0, 99))).toBeNull();
  });

  it('are stored only as a SHA-256 hash, with an audit event, permissions and creator', async () => {
    const { apiKey, apiKeyId, email } = await mintKey('stored-as-hash');
    const row = await t.app.deps.db.selectFrom('api_keys').selectAll().where('id', '=', apiKeyId).executeTakeFirstOrThrow();
    expect(row.secret_hash).toBe(createHash('sha256').update(apiKey).digest('hex'));
    expect(JSON.stringify(row)).not.toContain(apiKey.slice(36, 92));
    expect([...row.permissions]).toEqual(['clusters:view', 'clusters:create']);
    expect(row.label).toBe('stored-as-hash');
    expect(row.ssh_key_id).toBeTruthy();
    const creator = await t.app.deps.db.selectFrom('users').select('email').where('id', '=', row.created_by_user_id).executeTakeFirstOrThrow();
    expect(creator.email).toBe(email);
    const audit = await t.app.deps.db.selectFrom('audit_events').selectAll().where('subject_id', '=', apiKeyId).execute();
    expect(audit.map((a) => a.action)).toEqual(['api_key.created']);
    expect(JSON.stringify(audit)).not.toContain(apiKey);
  });

  it('authenticate via Bearer; revoked, wrong-secret and made-up keys all get the same 401', async () => {
    const { apiKey, apiKeyId, orgId } = await mintKey('bearer-check');
    const ok = await t.request('/api/whoami', bearer(apiKey));
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ success: true, api_key_id: apiKeyId, org_id: orgId, permissions: ['clusters:view', 'clusters:create'] });
    // Written after the answer, off the request path.
    const lastUsed = async () => (await t.app.deps.db.selectFrom('api_keys').select('last_used_at').where('id', '=', apiKeyId).executeTakeFirstOrThrow()).last_used_at;
    for (let i = 0; i < 100 && (await lastUsed()) === null; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await lastUsed()).not.toBeNull();

    // Same id, different secret with a valid checksum: reaches the database, fails the hash.
    const forgedBody = apiKey.slice(0, 36) + 'f'.repeat(56);
    const forged = forgedBody + crc32(forgedBody).toString(16).padStart(8, '0');
    const responses = [
      await t.request('/api/whoami', bearer(forged)),
      await t.request('/api/whoami', bearer('not-a-key')),
      await t.request('/api/whoami', {}),
    ];
    await revokeApiKey(t.app.deps, null, apiKeyId, { channel: 'admin', ip: null });
    responses.push(await t.request('/api/whoami', bearer(apiKey)));
    for (const res of responses) {
      expect(res.status).toBe(401);
      expect(res.body).toEqual({ success: false, error: 'Invalid API key' });
    }
  });

  it('expired keys are refused', async () => {
    const { apiKey, apiKeyId } = await mintKey('expires-soon');
    await t.app.deps.db.updateTable('api_keys').set({ expires_at: new Date(Date.now() - 1000) }).where('id', '=', apiKeyId).execute();
    expect((await t.request('/api/whoami', bearer(apiKey))).status).toBe(401);
  });

  it('a bad checksum is rejected without touching the database', async () => {
    const { apiKey } = generateApiKey();
    const broken = apiKey.slice(0, 99) + (apiKey[99] === '0' ? '1' : '0');
    const counted = countingStatements(t.app.deps.db);
    const deps: CoreDeps = { ...t.app.deps, db: counted.db };
    await expect(authenticateApiKey(deps, broken)).rejects.toMatchObject({ code: 'INVALID_API_KEY' });
    expect(counted.statements.length).toBe(0);
    // Control: a well-formed key does reach the database.
    await expect(authenticateApiKey(deps, apiKey)).rejects.toMatchObject({ code: 'INVALID_API_KEY' });
    expect(counted.statements.length).toBeGreaterThan(0);
  });
});
