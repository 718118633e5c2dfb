import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSmtpServer, type SmtpServer } from '../support/smtp.js';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { openssh } from '../support/ssh.js';

// The HTTP door trusts an (email, key) pair only for HTTP_TRUST_WINDOW after an email confirmation.

let smtp: SmtpServer;
beforeAll(async () => {
  smtp = await startSmtpServer();
});
afterAll(async () => {
  await smtp.close();
});

async function withApp(window: string, body: (t: TestApp) => Promise<void>, env: Record<string, string> = {}) {
  const t = await startTestApp({ HTTP_TRUST_WINDOW: window, ...env }, { smtp });
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
      expect(verify.body).toEqual({ verified: false, is_active: false, reason: expect.stringContaining('No HTTP verification in force') });
      expect(verify.body.reason).toContain('ssh');
      // No oracle: the right email with an expired window reads exactly like a wrong email.
      const wrongEmail = await t.post('/api/shell-auth/verify-key', { ...pair, email: uniqueEmail('nobody') });
      expect([wrongEmail.status, wrongEmail.body]).toEqual([verify.status, verify.body]);

      const byKey = await t.post('/api/shell-auth/verify-public-key', { ssh_public_key: key.publicKey });
      expect(byKey.status).toBe(404);

      const mint = await t.post('/api/shell-auth/api-keys', { ...pair, label: 'outside-window' });
      expect(mint.status).toBe(401);
      expect(mint.body).toEqual({ success: false, error: 'Invalid or unverified SSH key', detail: verify.body.reason });
      const wrongMint = await t.post('/api/shell-auth/api-keys', { ...pair, email: uniqueEmail('nobody'), label: 'outside-window' });
      expect([wrongMint.status, wrongMint.body]).toEqual([mint.status, mint.body]);

      // Outside the window initiate sends a new mail (the per-pair mail limit is long past too).
      const outside = await t.post('/api/shell-auth', pair);
      expect(outside.status).toBe(200);
      expect(outside.body).toMatchObject({ already_verified: false, is_new_user: false });
      // Confirming again reopens the window, counted from the new confirmation.
      const mail = await smtp.waitForMail(email);
      expect(smtp.mailsTo(email).length).toBe(mailsBefore + 1);
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
    }, { HTTP_TRUST_MINTS: '0' });
  });

  it('HTTP_TRUST_MINTS=1 (the default): one mint per confirmation, which is what `vers login` does; racing mints get one key', async () => {
    await withApp('15m', async (t) => {
      const email = uniqueEmail('once');
      const key = makeKey();
      const pair = { email, ssh_public_key: key.publicKey };
      await t.verifyByEmail(email, key.publicKey);
      // Polling verify-key spends nothing.
      for (let i = 0; i < 3; i++) expect((await t.post('/api/shell-auth/verify-key', pair)).status).toBe(200);
      const minted = await Promise.all([1, 2, 3].map((i) => t.post('/api/shell-auth/api-keys', { ...pair, label: `racing-${i}` })));
      expect(minted.map((r) => r.status).sort()).toEqual([200, 401, 401]);
      const rows = await t.app.deps.db.selectFrom('api_keys').select('label').where('label', 'like', 'racing-%').execute();
      expect(rows).toHaveLength(1);

      // Spent: the window is closed for every HTTP question, with the same answers as an unknown pair.
      const unknown = { email: uniqueEmail('nobody'), ssh_public_key: makeKey().publicKey };
      const verify = await t.post('/api/shell-auth/verify-key', pair);
      expect([verify.status, verify.body]).toEqual([401, (await t.post('/api/shell-auth/verify-key', unknown)).body]);
      expect((await t.post('/api/shell-auth/verify-public-key', { ssh_public_key: key.publicKey })).status).toBe(404);
      // `vers login` again (a minute later: one mail per pair a minute): a fresh email, then one more mint.
      t.app.deps.now = () => new Date(Date.now() + 61_000);
      const again = await t.post('/api/shell-auth', pair);
      expect(again.body).toMatchObject({ already_verified: false });
      await t.confirmMailTo(email);
      expect((await t.post('/api/shell-auth/api-keys', { ...pair, label: 'second-login' })).status).toBe(200);
      expect((await t.post('/api/shell-auth/api-keys', { ...pair, label: 'one-too-many' })).status).toBe(401);
    });
  });

  it('an SSH login never opens the HTTP window: knowing the email and public key of an SSH user gets nothing over HTTP', async () => {
    await withApp('15m', async (t) => {
      const email = uniqueEmail('sshonly');
      const key = makeKey();
      const login = openssh(t.app.sshPort, key.privateKeyPath, ['login', email]);
      await t.confirmMailTo(email);
      expect((await login).code).toBe(0);
      const pair = { email, ssh_public_key: key.publicKey };
      expect((await t.post('/api/shell-auth/api-keys', { ...pair, label: 'stolen-key' })).status).toBe(401);
      expect((await t.post('/api/shell-auth/verify-key', pair)).status).toBe(401);
      expect((await t.post('/api/shell-auth/verify-public-key', { ssh_public_key: key.publicKey })).status).toBe(404);
      const rows = await t.app.deps.db.selectFrom('api_keys').select('id').where('label', '=', 'stolen-key').execute();
      expect(rows).toHaveLength(0);
      // The SSH door itself works at once.
      expect((await openssh(t.app.sshPort, key.privateKeyPath, ['create', '--label', 'own-key'])).code).toBe(0);
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
