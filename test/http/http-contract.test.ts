import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { confirmForm, startTestApp, tokenOf, type TestApp } from '../support/app.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp({ HTTP_TRUST_WINDOW: '15m' });
});
afterAll(async () => {
  await t?.close();
});

describe('the Vers Shell Auth contract, end to end', () => {
  it('initiate -> real email -> confirm page -> verify-key -> verify-public-key -> api-keys', async () => {
    const email = uniqueEmail('alice');
    const key = makeKey('ed25519', undefined, 'alice@laptop');

    const started = await t.post('/api/shell-auth', {
      email: `  ${email.toUpperCase()} `,
      ssh_public_key: key.publicKey,
      body: 'vers login --git from laptop',
    });
    expect(started.status).toBe(200);
    expect(started.body).toEqual({
      success: true,
      user_id: expect.stringMatching(UUID),
      email,
      is_new_user: true,
      nonce: expect.stringMatching(UUID),
      ssh_public_key: key.publicKey.split(' ').slice(0, 2).join(' '),
      already_verified: false,
    });

    // Still polling: 401 with the contract's shape.
    const pending = await t.post('/api/shell-auth/verify-key', { email, ssh_public_key: key.publicKey });
    expect(pending.status).toBe(401);
    expect(pending.body).toEqual({
      verified: false,
      is_active: false,
      reason: expect.stringMatching(/^No HTTP verification in force for this email and key: confirm by email again \(POST \/api\/shell-auth\), or use the SSH door: ssh -p \d+ keys@/),
    });

    const mail = await t.smtp.waitForMail(email);
    expect(mail.subject).toContain(key.fingerprint);
    for (const fact of [email, 'ssh-ed25519', key.fingerprint, '127.0.0.1', 'vers login --git from laptop', "If this wasn't you, ignore this email"]) {
      expect(mail.text).toContain(fact);
      expect(mail.html).toContain(fact);
    }
    expect(mail.link).toMatch(new RegExp(`^${t.url}/shell-auth/verify\\?token=[A-Za-z0-9_-]{43}$`));

    // GET shows the facts and a form; it does not consume the token (mail scanners GET links).
    for (let i = 0; i < 2; i++) {
      const page = await t.request(new URL(mail.link!).pathname + new URL(mail.link!).search);
      expect(page.status).toBe(200);
      expect(page.headers.get('referrer-policy')).toBe('no-referrer');
      expect(page.text).toContain(key.fingerprint);
      expect(page.text).toContain('vers login --git from laptop');
      expect(page.text).toMatch(/<form method="post" action="\/shell-auth\/verify">/);
      // The time as a person reads it, in one zone.
      expect(page.text).toMatch(/<code>\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} UTC<\/code>/);
    }
    expect(mail.text).toMatch(/Requested at: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} UTC/);
    // A trailing slash in the link (some mail clients add one) still shows the page, and its form still posts to the route.
    const slashed = await t.request(`/shell-auth/verify/${new URL(mail.link!).search}`);
    expect(slashed.status).toBe(200);
    expect(slashed.text).toContain('action="/shell-auth/verify"');
    const stillPending = await t.post('/api/shell-auth/verify-key', { email, ssh_public_key: key.publicKey });
    expect(stillPending.status).toBe(401);

    const confirmed = await t.request('/shell-auth/verify', confirmForm(tokenOf(mail.link!)));
    expect(confirmed.status).toBe(200);
    expect(confirmed.text).toContain('SSH key confirmed');

    const verified = await t.post('/api/shell-auth/verify-key', { email, ssh_public_key: key.publicKey });
    expect(verified.status).toBe(200);
    const localPart = email.split('@')[0];
    expect(verified.body).toEqual({
      verified: true,
      is_active: true,
      user_id: started.body.user_id,
      key_id: expect.stringMatching(UUID),
      orgs: [{ org_id: expect.stringMatching(UUID), name: localPart, role: 'admin' }],
    });

    // The comment is ignored for matching.
    const otherComment = key.publicKey.replace('alice@laptop', 'renamed@elsewhere');
    const byKey = await t.post('/api/shell-auth/verify-public-key', { ssh_public_key: otherComment });
    expect(byKey.status).toBe(200);
    expect(byKey.body).toEqual({
      verified: true,
      count: 1,
      matches: [
        {
          user_id: started.body.user_id,
          key_id: verified.body.key_id,
          email,
          is_active: true,
          public_key_verified: true,
          verified_at: expect.any(String),
          last_seen_at: null,
        },
      ],
    });

    // Initiating again inside the window, before minting: already verified, no new email.
    const mailsBefore = await t.mailsQueuedTo(email);
    expect(mailsBefore).toBe(1);
    const again = await t.post('/api/shell-auth', { email, ssh_public_key: key.publicKey });
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ is_new_user: false, already_verified: true });
    expect(await t.mailsQueuedTo(email)).toBe(mailsBefore);

    const created = await t.post('/api/shell-auth/api-keys', { email, ssh_public_key: key.publicKey, label: 'vers-cli-laptop' });
    expect(created.status).toBe(200);
    expect(created.body).toEqual({
      success: true,
      api_key: expect.stringMatching(/^[0-9a-f-]{36}[0-9a-f]{64}$/),
      api_key_id: expect.stringMatching(UUID),
      org_id: verified.body.orgs[0].org_id,
      org_name: localPart,
    });
    expect(created.body.api_key).toHaveLength(100);
    expect(created.body.api_key.startsWith(created.body.api_key_id)).toBe(true);

    // Nothing secret in the logs: not the API key, not the link token.
    const logText = t.logs.join('\n');
    expect(logText).not.toContain(created.body.api_key);
    expect(logText).not.toContain(created.body.api_key.slice(36));
    expect(logText).not.toContain(tokenOf(mail.link!));
  });

  it('verify-public-key: 404 for an unknown key', async () => {
    const res = await t.post('/api/shell-auth/verify-public-key', { ssh_public_key: makeKey().publicKey });
    expect(res.status).toBe(404);
    expect(res.body).toEqual({ verified: false, reason: 'No verified SSH key records found for this public key' });
  });

  it('api-keys: 401 for an unverified key, 404 for an org the user is not in, org chosen by name', async () => {
    const email = uniqueEmail('carol');
    const key = makeKey();
    const unverified = await t.post('/api/shell-auth/api-keys', { email, ssh_public_key: key.publicKey, label: 'my-label' });
    expect(unverified.status).toBe(401);
    expect(unverified.body).toEqual({ success: false, error: 'Invalid or unverified SSH key', detail: expect.stringMatching(/^No HTTP verification in force/) });

    await t.verifyByEmail(email, key.publicKey);
    const notMember = await t.post('/api/shell-auth/api-keys', {
      email,
      ssh_public_key: key.publicKey,
      label: 'my-label',
      org_name: 'no-such-org-anywhere',
    });
    expect(notMember.status).toBe(404);
    expect(notMember.body).toEqual({ success: false, error: 'Organization not found' });

    // Another user's org exists but carol is not a member: same 404.
    const dave = uniqueEmail('dave');
    const daveKey = makeKey();
    await t.verifyByEmail(dave, daveKey.publicKey);
    const daveOrg = (await t.post('/api/shell-auth/verify-key', { email: dave, ssh_public_key: daveKey.publicKey })).body.orgs[0].name;
    const foreign = await t.post('/api/shell-auth/api-keys', { email, ssh_public_key: key.publicKey, label: 'my-label', org_name: daveOrg });
    expect(foreign.status).toBe(404);

    const own = await t.post('/api/shell-auth/api-keys', {
      email,
      ssh_public_key: key.publicKey,
      label: 'my-label',
      org_name: email.split('@')[0],
    });
    expect(own.status).toBe(200);
    expect(own.body.org_name).toBe(email.split('@')[0]);
  });

  it('409 when the key belongs to another account, on initiate', async () => {
    const key = makeKey();
    const owner = uniqueEmail('owner');
    await t.verifyByEmail(owner, key.publicKey);
    const res = await t.post('/api/shell-auth', { email: uniqueEmail('thief'), ssh_public_key: key.publicKey });
    expect(res.status).toBe(409);
    expect(res.body).toEqual({ success: false, error: 'SSH key already registered to another account' });
  });

  it('an unconfirmed request does not squat a key: the first to confirm wins, the other link then fails with 409', async () => {
    const key = makeKey();
    const first = uniqueEmail('first');
    const second = uniqueEmail('second');
    expect((await t.post('/api/shell-auth', { email: first, ssh_public_key: key.publicKey })).status).toBe(200);
    expect((await t.post('/api/shell-auth', { email: second, ssh_public_key: key.publicKey })).status).toBe(200);
    const secondMail = await t.smtp.waitForMail(second);
    const firstMail = await t.smtp.waitForMail(first);
    expect((await t.request('/shell-auth/verify', confirmForm(tokenOf(secondMail.link!)))).status).toBe(200);
    const late = await t.request('/shell-auth/verify', confirmForm(tokenOf(firstMail.link!)));
    expect(late.status).toBe(409);
    expect(late.text).toContain('SSH key already registered to another account');
  });
});

describe('input validation: every bad request is a 400 JSON error, never a 5xx', () => {
  const goodKey = makeKey().publicKey;

  it.each([
    ['missing email', { ssh_public_key: goodKey }],
    ['missing key', { email: 'x@example.com' }],
    ['bad email', { email: 'not-an-email', ssh_public_key: goodKey }],
    ['garbage key', { email: 'x@example.com', ssh_public_key: 'ssh-ed25519 notbase64!!' }],
    ['wrong type for email', { email: 42, ssh_public_key: goodKey }],
    ['array body', [1, 2]],
    ['null body', null],
  ])('initiate, %s -> 400 "Invalid email or SSH key format"', async (_name, body) => {
    const res = await t.post('/api/shell-auth', body);
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ success: false, error: 'Invalid email or SSH key format' });
  });

  it('a field of the wrong type says so: it is not "required", it is the wrong type', async () => {
    const res = await t.post('/api/shell-auth', { email: 'x@example.com', ssh_public_key: 123 });
    expect(res.body).toMatchObject({ success: false, error: 'Invalid email or SSH key format', detail: 'ssh_public_key: must be a string, not number' });
    const missing = await t.post('/api/shell-auth', { email: 'x@example.com' });
    expect(missing.body.detail).toBe('ssh_public_key: is required');
    const label = await t.post('/api/shell-auth/api-keys', { email: 'x@example.com', ssh_public_key: goodKey, label: null });
    expect(label.body.detail).toContain('label: must be a string, not null');
  });

  it('rejects small RSA keys and malformed security keys with a reason; a well-formed security key is accepted', async () => {
    const small = makeKey('rsa', 1024).publicKey;
    const rsa = await t.post('/api/shell-auth', { email: 'x@example.com', ssh_public_key: small });
    expect(rsa.status).toBe(400);
    expect(rsa.body.detail).toContain('at least 2048 bits (this one has 1024)');

    const sk = await t.post('/api/shell-auth', {
      email: uniqueEmail('sk'),
      ssh_public_key: 'sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gAAAABHNzaDo=',
    });
    expect(sk.status, JSON.stringify(sk.body)).toBe(200);
    // The same key without its application string.
    const truncated = await t.post('/api/shell-auth', {
      email: 'x@example.com',
      ssh_public_key: 'sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g',
    });
    expect(truncated.status).toBe(400);
    expect(truncated.body.detail).toContain("security key's application must start with");
  });

  it.each([
    ['short label', { label: 'abcd' }],
    ['missing label', { label: undefined }],
    ['bad email', { email: 'nope' }],
  ])('api-keys, %s -> 400 "Invalid request"', async (_name, patch) => {
    const res = await t.post('/api/shell-auth/api-keys', {
      email: 'x@example.com',
      ssh_public_key: goodKey,
      label: 'valid-label',
      ...patch,
    });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ success: false, error: 'Invalid request' });
  });

  it('malformed JSON, wrong content type and oversized bodies', async () => {
    const malformed = await t.request('/api/shell-auth', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"email": ',
    });
    expect(malformed.status).toBe(400);
    expect(malformed.body).toEqual({ success: false, error: 'Malformed JSON body' });

    const wrongType = await t.request('/api/shell-auth/verify-key', {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: '{}',
    });
    expect(wrongType.status).toBe(400);
    expect(wrongType.body).toEqual({ success: false, error: 'Content-Type must be application/json' });

    const huge = await t.post('/api/shell-auth/api-keys', {
      email: 'x@example.com',
      ssh_public_key: goodKey,
      label: 'x'.repeat(17 * 1024),
    });
    expect(huge.status).toBe(400);
    expect(huge.body).toEqual({ success: false, error: 'Request body too large (limit 16 KB)' });

    // The server is still fine afterwards.
    const after = await t.post('/api/shell-auth/verify-public-key', { ssh_public_key: goodKey });
    expect(after.status).toBe(404);
  });

  it('unknown paths and methods get JSON 404/405', async () => {
    expect((await t.request('/api/nope')).status).toBe(404);
    const wrongMethod = await t.request('/api/shell-auth');
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.body).toEqual({ success: false, error: 'Method not allowed' });
  });
});
