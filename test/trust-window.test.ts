import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSmtpServer, type SmtpServer } from './support/smtp.js';
import { makeKey, uniqueEmail } from './support/keys.js';
import { startTestApp, type TestApp } from './support/app.js';

// The HTTP door trusts an (email, key) pair only for HTTP_TRUST_WINDOW after an email confirmation.

let smtp: SmtpServer;
beforeAll(async () => {
  smtp = await startSmtpServer();
});
afterAll(async () => {
  await smtp.close();
});

async function withApp(window: string, body: (t: TestApp) => Promise<void>) {
  const t = await startTestApp({ HTTP_TRUST_WINDOW: window }, { smtp });
  try {
    await body(t);
  } finally {
    await t.close();
  }
}

describe('HTTP trust window', () => {
  it('inside the window everything works; outside it verify-key/api-keys are 401, verify-public-key 404, initiate mails again', async () => {
    await withApp('15m', async (t) => {
      const email = uniqueEmail('win');
      const key = makeKey();
      await t.verifyByEmail(email, key.publicKey);
      const pair = { email, ssh_public_key: key.publicKey };
      // The core's clock seam: move time instead of sleeping through the window.
      let offsetMs = 0;
      t.app.deps.now = () => new Date(Date.now() + offsetMs);

      offsetMs = 14 * 60_000 + 50_000; // 14m50s after the confirmation: still inside
      expect((await t.post('/api/shell-auth/verify-key', pair)).status).toBe(200);
      expect((await t.post('/api/shell-auth/verify-public-key', { ssh_public_key: key.publicKey })).status).toBe(200);
      expect((await t.post('/api/shell-auth/api-keys', { ...pair, label: 'inside-window' })).status).toBe(200);
      const inside = await t.post('/api/shell-auth', pair);
      expect(inside.body.already_verified).toBe(true);
      const mailsBefore = smtp.mailsTo(email).length;

      offsetMs = 15 * 60_000 + 10_000; // 15m10s: outside
      const verify = await t.post('/api/shell-auth/verify-key', pair);
      expect(verify.status).toBe(401);
      expect(verify.body).toEqual({ verified: false, is_active: false, reason: expect.stringContaining('expired') });
      expect(verify.body.reason).toContain('ssh');

      const byKey = await t.post('/api/shell-auth/verify-public-key', { ssh_public_key: key.publicKey });
      expect(byKey.status).toBe(404);

      const mint = await t.post('/api/shell-auth/api-keys', { ...pair, label: 'outside-window' });
      expect(mint.status).toBe(401);
      expect(mint.body.success).toBe(false);
      expect(mint.body.error).toMatch(/expired.*confirm.*SSH door/i);

      // Outside the window initiate sends a new mail (the per-pair mail limit is long past too).
      const outside = await t.post('/api/shell-auth', pair);
      expect(outside.status).toBe(200);
      expect(outside.body).toMatchObject({ already_verified: false, is_new_user: false });
      expect(smtp.mailsTo(email).length).toBe(mailsBefore + 1);

      // Confirming again reopens the window, counted from the new confirmation.
      const mail = await smtp.waitForMail(email);
      const token = new URL(mail.link!).searchParams.get('token')!;
      const confirm = await t.request('/shell-auth/verify', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: `token=${token}`,
      });
      expect(confirm.status).toBe(200);
      expect((await t.post('/api/shell-auth/api-keys', { ...pair, label: 'reopened-window' })).status).toBe(200);
      offsetMs += 15 * 60_000 + 1;
      expect((await t.post('/api/shell-auth/api-keys', { ...pair, label: 'closed-again' })).status).toBe(401);
    });
  });

  it('HTTP_TRUST_WINDOW=0 turns HTTP minting off, but the email still verifies the key', async () => {
    await withApp('0', async (t) => {
      const email = uniqueEmail('zero');
      const key = makeKey();
      await t.verifyByEmail(email, key.publicKey);
      const pair = { email, ssh_public_key: key.publicKey };
      const mint = await t.post('/api/shell-auth/api-keys', { ...pair, label: 'never-works' });
      expect(mint.status).toBe(401);
      expect(mint.body.error).toContain('disabled');
      const verify = await t.post('/api/shell-auth/verify-key', pair);
      expect(verify.status).toBe(401);
      expect(verify.body.reason).toContain('disabled');
      expect((await t.post('/api/shell-auth/verify-public-key', { ssh_public_key: key.publicKey })).status).toBe(404);
      // Durably verified: the key record exists for the SSH door.
      const row = await t.app.deps.db.selectFrom('ssh_keys').select(['verified_at']).where('key_blob', '=', key.publicKey.split(' ')[1]!).executeTakeFirst();
      expect(row?.verified_at).toBeTruthy();
    });
  });

  it('HTTP_TRUST_WINDOW=forever is the literal Vers behaviour, with a loud warning', async () => {
    await withApp('forever', async (t) => {
      expect(t.logs.some((line) => line.includes('"level":40') && line.includes('forever'))).toBe(true);
      const email = uniqueEmail('forever');
      const key = makeKey();
      await t.verifyByEmail(email, key.publicKey);
      // A year after the confirmation.
      t.app.deps.now = () => new Date(Date.now() + 365 * 86_400_000);
      expect((await t.post('/api/shell-auth/api-keys', { email, ssh_public_key: key.publicKey, label: 'old-but-ok' })).status).toBe(200);
    });
  });
});
