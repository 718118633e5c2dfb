import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { confirmForm, startTestApp, tokenOf, type TestApp } from '../support/app.js';
import { sha256Hex } from '../../src/core/secrets.js';

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

async function requestLink(email = uniqueEmail('link'), key = makeKey()) {
  const res = await t.post('/api/shell-auth', { email, ssh_public_key: key.publicKey });
  expect(res.status).toBe(200);
  const mail = await t.smtp.waitForMail(email);
  return { email, key, token: tokenOf(mail.link!), nonce: res.body.nonce as string };
}

describe('verification links', () => {
  it('are stored only as a hash', async () => {
    const { token, nonce } = await requestLink();
    const row = await t.app.deps.db.selectFrom('verification_requests').selectAll().where('id', '=', nonce).executeTakeFirstOrThrow();
    expect(row.token_hash).toBe(sha256Hex(token));
    expect(JSON.stringify(row)).not.toContain(token);
  });

  it('are single use: a second POST gets a clear 410 page', async () => {
    const { token } = await requestLink();
    expect((await t.request('/shell-auth/verify', confirmForm(token))).status).toBe(200);
    const again = await t.request('/shell-auth/verify', confirmForm(token));
    expect(again.status).toBe(410);
    expect(again.text).toContain('This link was already confirmed');
    const page = await t.request(`/shell-auth/verify?token=${token}`);
    expect(page.status).toBe(410);
    expect(page.text).not.toContain('<form');
  });

  it('are single use under a race: of 5 concurrent POSTs exactly one confirms', async () => {
    const { token } = await requestLink();
    const results = await Promise.all(Array.from({ length: 5 }, () => t.request('/shell-auth/verify', confirmForm(token))));
    expect(results.map((r) => r.status).sort()).toEqual([200, 410, 410, 410, 410]);
  });

  it('expire after 10 minutes', async () => {
    const { token, nonce, email, key } = await requestLink();
    const row = await t.app.deps.db.selectFrom('verification_requests').select(['created_at', 'expires_at']).where('id', '=', nonce).executeTakeFirstOrThrow();
    expect(new Date(row.expires_at).getTime() - new Date(row.created_at).getTime()).toBe(10 * 60_000);
    await t.app.deps.db.updateTable('verification_requests').set({ expires_at: new Date(Date.now() - 1000) }).where('id', '=', nonce).execute();
    const page = await t.request(`/shell-auth/verify?token=${token}`);
    expect(page.status).toBe(410);
    expect(page.text).toContain('expired');
    const post = await t.request('/shell-auth/verify', confirmForm(token));
    expect(post.status).toBe(410);
    const status = await t.post('/api/shell-auth/verify-key', { email, ssh_public_key: key.publicKey });
    expect(status.status).toBe(401);
  });

  it('unknown or malformed tokens get a 404 page', async () => {
    for (const token of ['x'.repeat(43), 'short', '']) {
      const page = await t.request(`/shell-auth/verify?token=${token}`);
      expect(page.status).toBe(404);
      expect(page.text).toContain('not valid');
      expect((await t.request('/shell-auth/verify', confirmForm(token))).status).toBe(404);
    }
  });

  it('escape user-supplied text on the page', async () => {
    const email = uniqueEmail('xss');
    const key = makeKey();
    await t.post('/api/shell-auth', { email, ssh_public_key: key.publicKey, body: '<script>alert(1)</script>' });
    const mail = await t.smtp.waitForMail(email);
    const page = await t.request(`/shell-auth/verify?token=${tokenOf(mail.link!)}`);
    expect(page.text).not.toContain('<script>');
    expect(page.text).toContain('&#60;script&#62;');
    expect(mail.html).not.toContain('<script>');
    expect(page.headers.get('content-security-policy')).toContain("default-src 'none'");
  });
});

describe('mail rate limits (in the database)', () => {
  it('one mail per (email, key) per 60 s, with Retry-After', async () => {
    const email = uniqueEmail('rate');
    const key = makeKey();
    expect((await t.post('/api/shell-auth', { email, ssh_public_key: key.publicKey })).status).toBe(200);
    const second = await t.post('/api/shell-auth', { email, ssh_public_key: key.publicKey });
    expect(second.status).toBe(429);
    expect(second.body).toEqual({ success: false, error: 'Too many requests' });
    const retryAfter = Number(second.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(50);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(await t.mailsQueuedTo(email)).toBe(1);
  });

  it('ten mails per email per hour', async () => {
    const email = uniqueEmail('hourly');
    for (let i = 0; i < 10; i++) {
      expect((await t.post('/api/shell-auth', { email, ssh_public_key: makeKey().publicKey })).status).toBe(200);
    }
    const eleventh = await t.post('/api/shell-auth', { email, ssh_public_key: makeKey().publicKey });
    expect(eleventh.status).toBe(429);
    expect(Number(eleventh.headers.get('retry-after'))).toBeGreaterThan(3500);
    expect(await t.mailsQueuedTo(email)).toBe(10);
  });

  it('holds across concurrent requests', async () => {
    const email = uniqueEmail('burst');
    const key = makeKey();
    const results = await Promise.all(Array.from({ length: 6 }, () => t.post('/api/shell-auth', { email, ssh_public_key: key.publicKey })));
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
    expect(results.filter((r) => r.status === 429)).toHaveLength(5);
  });
});
