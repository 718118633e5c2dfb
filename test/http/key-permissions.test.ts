import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.js';
import { makeKey, uniqueEmail } from '../support/keys.js';

// POST /api/shell-auth/api-keys with the optional `permissions` (issue 19, point 1): least
// privilege over HTTP, and the Vers contract's answer unchanged for clients that do not ask.

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

async function trustedPair() {
  const email = uniqueEmail('httpperm');
  const key = makeKey();
  await t.verifyByEmail(email, key.publicKey);
  return { email, ssh_public_key: key.publicKey };
}

const whoami = (apiKey: string) => t.request('/api/whoami', { headers: { authorization: `Bearer ${apiKey}` } });

describe('permissions on POST /api/shell-auth/api-keys', () => {
  it('absent: every permission, and the contract\'s answer exactly as before (the same fields, in the same order)', async () => {
    const pair = await trustedPair();
    const res = await t.post('/api/shell-auth/api-keys', { ...pair, label: 'vers-cli-key' });
    expect(res.status).toBe(200);
    expect(Object.keys(res.body)).toEqual(['success', 'api_key', 'api_key_id', 'org_id', 'org_name']);
    expect(res.text).toBe(
      JSON.stringify({ success: true, api_key: res.body.api_key, api_key_id: res.body.api_key_id, org_id: res.body.org_id, org_name: res.body.org_name }),
    );
    expect((await whoami(res.body.api_key)).body.permissions).toEqual(['clusters:view', 'clusters:create']);
  });

  it('null, as clients send for "unset" (like org_name): as if absent, the contract\'s answer exactly, every permission', async () => {
    const pair = await trustedPair();
    const res = await t.post('/api/shell-auth/api-keys', { ...pair, label: 'null-permissions', org_name: null, permissions: null });
    expect(res.status, res.text).toBe(200);
    expect(res.text).toBe(
      JSON.stringify({ success: true, api_key: res.body.api_key, api_key_id: res.body.api_key_id, org_id: res.body.org_id, org_name: res.body.org_name }),
    );
    expect((await whoami(res.body.api_key)).body.permissions).toEqual(['clusters:view', 'clusters:create']);
  });

  it('["clusters:view"]: the key carries only that, said in the answer and on /api/whoami', async () => {
    const pair = await trustedPair();
    const res = await t.post('/api/shell-auth/api-keys', { ...pair, label: 'view-only-http', permissions: ['clusters:view', 'clusters:view'] });
    expect(res.status, res.text).toBe(200);
    expect(res.body.permissions).toEqual(['clusters:view']);
    const seen = await whoami(res.body.api_key);
    expect(seen.status).toBe(200);
    expect(seen.body.permissions).toEqual(['clusters:view']);
  });

  it('an unknown name is 400 naming it and the known ones, and spends nothing of the trust window', async () => {
    const pair = await trustedPair();
    const bad = await t.post('/api/shell-auth/api-keys', { ...pair, label: 'bad-permission', permissions: ['clusters:view', 'clusters:delete'] });
    expect(bad.status).toBe(400);
    expect(bad.body).toEqual({
      success: false,
      error: 'Unknown permission',
      detail: '"clusters:delete" is not a permission on this server; its permissions: clusters:view, clusters:create',
    });
    // The window's one mint (HTTP_TRUST_MINTS=1) is still there.
    const good = await t.post('/api/shell-auth/api-keys', { ...pair, label: 'after-the-refusal', permissions: ['clusters:create'] });
    expect(good.status, good.text).toBe(200);
    expect(good.body.permissions).toEqual(['clusters:create']);
  });

  it('an empty list, or not a list of names, is 400 saying so', async () => {
    const pair = await trustedPair();
    const empty = await t.post('/api/shell-auth/api-keys', { ...pair, label: 'no-permission', permissions: [] });
    expect(empty.status).toBe(400);
    expect(empty.body).toEqual({ success: false, error: 'Invalid request', detail: 'permissions: must name at least one permission' });
    const notList = await t.post('/api/shell-auth/api-keys', { ...pair, label: 'string-permission', permissions: 'clusters:view' });
    expect(notList.status).toBe(400);
    expect(notList.body.detail).toMatch(/^permissions: /);
    const notNames = await t.post('/api/shell-auth/api-keys', { ...pair, label: 'number-permission', permissions: [1] });
    expect(notNames.status).toBe(400);
    expect(notNames.body.detail).toMatch(/^permissions\.0: /);
  });
});
