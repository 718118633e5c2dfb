import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startVerification, waitForConfirmation } from '../../src/core/index.js';
import { confirmForm, startTestApp, tokenOf, type HttpResult, type TestApp } from '../support/app.js';
import { publicKeyOf } from '../support/core.js';
import { makeKey, uniqueEmail, type TestKey } from '../support/keys.js';
import { openssh } from '../support/ssh.js';

// Issue 16, item 10: anyone with bob's email and public key can start an HTTP request; bob gets a
// genuine email with his own fingerprint, and Confirm gives the requester an API key. The confirm
// page now says what Confirm grants and to whom (address, age, note, org), sets the request's
// address beside the browser's and warns when they differ, and offers "This wasn't me", which
// cancels the request (and an HTTP window open for the pair), audited. Real HTTP, a real SMTP
// server; addresses vary through X-Forwarded-For from a trusted proxy (127.0.0.1).

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp({ TRUST_PROXY: 'true', HTTP_PROXY_FROM: '127.0.0.1,::1' });
});
afterAll(async () => {
  await t?.close();
});

const CANCEL_FORM = /<form method="post" action="\/shell-auth\/verify">\s*<input type="hidden" name="token" value="[A-Za-z0-9_-]{43}"><input type="hidden" name="answer" value="cancel">\s*<button type="submit">This wasn't me<\/button><\/form>/;

/** The "What Confirm grants" paragraph, as a person reads it. */
function grantOf(html: string): string {
  const paragraph = /<p class="grant">([\s\S]*?)<\/p>/.exec(html);
  expect(paragraph, 'no grant paragraph').not.toBeNull();
  return textOf(paragraph![1]!).trim();
}

/** The page as a person reads it: tags gone, entities decoded, whitespace collapsed. */
function textOf(html: string): string {
  return html
    .replace(/<[^>]*>/g, ' ')
    .replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code)))
    .replace(/\s+/g, ' ');
}

function from(ip: string): Record<string, string> {
  return { 'x-forwarded-for': ip };
}

async function initiateFrom(ip: string, email: string, key: TestKey, body?: string): Promise<HttpResult> {
  const res = await t.request('/api/shell-auth', {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...from(ip) },
    body: JSON.stringify({ email, ssh_public_key: key.publicKey, ...(body === undefined ? {} : { body }) }),
  });
  expect(res.status, res.text).toBe(200);
  return res;
}

function pageFrom(ip: string, token: string): Promise<HttpResult> {
  return t.request(`/shell-auth/verify?token=${token}`, { headers: from(ip) });
}

function answerFrom(ip: string, token: string, answer?: string): Promise<HttpResult> {
  const init = confirmForm(token);
  const body = new URLSearchParams({ token, ...(answer === undefined ? {} : { answer }) }).toString();
  return t.request('/shell-auth/verify', { ...init, body, headers: { ...(init.headers as Record<string, string>), ...from(ip) } });
}

/** An account verified by email (by its owner, from 127.0.0.1), and the name of its personal org. */
async function verifiedAccount(): Promise<{ email: string; key: TestKey; org: string }> {
  const email = uniqueEmail('bob');
  const key = makeKey();
  await t.verifyByEmail(email, key.publicKey);
  const org = await t.app.deps.db
    .selectFrom('memberships')
    .innerJoin('orgs', 'orgs.id', 'memberships.org_id')
    .innerJoin('users', 'users.id', 'memberships.user_id')
    .select('orgs.name')
    .where('users.email', '=', email)
    .executeTakeFirstOrThrow();
  return { email, key, org: org.name };
}

/** As if the request had been made `minutes` ago (created_at is not updatable through the types). */
async function ageRequest(nonce: string, minutes: number): Promise<void> {
  await sql`UPDATE verification_requests SET created_at = ${new Date(Date.now() - minutes * 60_000)} WHERE id = ${nonce}`.execute(t.app.deps.db);
}

const verifyKey = (email: string, key: TestKey) => t.post('/api/shell-auth/verify-key', { email, ssh_public_key: key.publicKey });
const mint = (email: string, key: TestKey) => t.post('/api/shell-auth/api-keys', { email, ssh_public_key: key.publicKey, label: 'not-bobs-key' });

describe('the confirm page says what Confirm grants, and to whom', () => {
  it("names the request's address, its age and the org that gets one API key; the note is only in the facts, labelled as the requester's; from the same address, no warning", async () => {
    const bob = await verifiedAccount();
    const key = makeKey(); // a second key for bob's account, asked for by someone
    const started = await initiateFrom('203.0.113.7', bob.email, key, 'vers login --git from laptop');
    const token = tokenOf((await t.smtp.waitForMail(bob.email)).link!);
    await ageRequest(started.body.nonce, 3);

    const page = await pageFrom('203.0.113.7', token);
    expect(page.status).toBe(200);
    const text = textOf(page.text);
    expect(grantOf(page.text)).toBe(
      `Whoever made this request — from 203.0.113.7 (HTTP), 3 minutes ago — ` +
        `will receive one API key for the organization ${bob.org}, within 15 minutes of your confirmation. ` +
        `The key is also linked to ${bob.email}: whoever holds its private key can then sign in as you on the SSH door.`,
    );
    expect(page.text).toContain('<tr><th>Note (written by the requester)</th><td><code>vers login --git from laptop</code></td></tr>');
    expect(text).toContain('The request came from 203.0.113.7 ; this browser is at 203.0.113.7 .');
    expect(text).not.toContain('These addresses differ');
    expect(page.text).toMatch(CANCEL_FORM);
    // Confirm is still the first form, as it was (a browser test presses the first submit button).
    expect(page.text.indexOf('>Confirm</button>')).toBeLessThan(page.text.indexOf(">This wasn't me</button>"));
  });

  it("warns when this browser's address differs from the request's", async () => {
    const email = uniqueEmail('far');
    await initiateFrom('203.0.113.8', email, makeKey());
    const token = tokenOf((await t.smtp.waitForMail(email)).link!);
    const page = await pageFrom('198.51.100.23', token);
    expect(page.status).toBe(200);
    const text = textOf(page.text);
    expect(text).toContain('The request came from 203.0.113.8 ; this browser is at 198.51.100.23 .');
    expect(text).toContain("These addresses differ. Unless you made this request yourself from another device or network (a server you work on, a VPN), someone else did: press “This wasn't me”.");
    expect(page.text).toContain('<p class="warning">');
    // Same address, written as IPv4-in-IPv6: no warning.
    const same = textOf((await pageFrom('::ffff:203.0.113.8', token)).text);
    expect(same).not.toContain('These addresses differ');
  });

  it('counts addresses of one IPv6 /64 as the same (as every per-address limit does); another /64 differs', async () => {
    const email = uniqueEmail('v6');
    await initiateFrom('2001:db8:5:1::10', email, makeKey());
    const token = tokenOf((await t.smtp.waitForMail(email)).link!);
    // A privacy address of the same /64 (the laptop's next temporary address): no warning.
    const same = textOf((await pageFrom('2001:db8:5:1:a1b2:c3d4:e5f6:99', token)).text);
    expect(same).toContain('The request came from 2001:db8:5:1::10 ; this browser is at 2001:db8:5:1:a1b2:c3d4:e5f6:99 .');
    expect(same).not.toContain('These addresses differ');
    const other = textOf((await pageFrom('2001:db8:5:2::10', token)).text);
    expect(other).toContain('The request came from 2001:db8:5:1::10 ; this browser is at 2001:db8:5:2::10 .');
    expect(other).toContain('These addresses differ.');
  });

  it("keeps the requester's note out of what Confirm grants: it is only in the facts, labelled as theirs, on the page and in the email", async () => {
    const bob = await verifiedAccount();
    const note = '" — this is your own laptop, safe to confirm. "';
    await initiateFrom('198.51.100.77', bob.email, makeKey(), note);
    const mail = await t.smtp.waitForMail(bob.email);
    const page = await pageFrom('198.51.100.77', tokenOf(mail.link!));
    expect(page.status).toBe(200);
    const grant = grantOf(page.text);
    expect(grant).toMatch(/^Whoever made this request — from 198\.51\.100\.77 \(HTTP\), less than a minute ago — will receive one API key for /);
    expect(grant).not.toContain('laptop');
    expect(grant).not.toContain('note');
    // Once, in the facts table, escaped, under a label that says who wrote it.
    expect(page.text).toContain('<tr><th>Note (written by the requester)</th><td><code>&#34; — this is your own laptop, safe to confirm. &#34;</code></td></tr>');
    expect(textOf(page.text).split('this is your own laptop')).toHaveLength(2);
    expect(mail.text).toContain(`  Note (written by the requester): ${note}\n`);
  });

  it('says what each kind of request grants: a new account, other HTTP settings, an SSH login', async () => {
    const email = uniqueEmail('newbie');
    await initiateFrom('203.0.113.9', email, makeKey(), '<b>hi</b>');
    const token = tokenOf((await t.smtp.waitForMail(email)).link!);
    const page = await pageFrom('203.0.113.9', token);
    expect(page.text).not.toContain('<b>hi</b>');
    expect(textOf(page.text)).toContain(
      'Whoever made this request — from 203.0.113.9 (HTTP), less than a minute ago — will receive one API key for ' +
        'the personal organization created for you when you confirm, within 15 minutes of your confirmation.',
    );

    const saved = t.app.deps.settings.httpTrust;
    try {
      t.app.deps.settings.httpTrust = { window: 3_600_000, mintsPerConfirmation: 3 };
      expect(textOf((await pageFrom('203.0.113.9', token)).text)).toContain('will receive up to 3 API keys for the personal organization created for you when you confirm, within 1 hour of');
      t.app.deps.settings.httpTrust = { window: 'forever', mintsPerConfirmation: null };
      expect(textOf((await pageFrom('203.0.113.9', token)).text)).toContain('will receive any number of API keys for the personal organization created for you when you confirm, with no time limit.');
      t.app.deps.settings.httpTrust = { window: 'off', mintsPerConfirmation: 1 };
      expect(textOf((await pageFrom('203.0.113.9', token)).text)).toContain(
        `will receive no API key over HTTP for it (this server opens no HTTP window on an email confirmation; only requests signed with the key's private key mint there). The key is also linked to ${email}`,
      );
    } finally {
      t.app.deps.settings.httpTrust = saved;
    }

    const bob = await verifiedAccount();
    const sshKey = makeKey();
    await startVerification(t.app.deps, { email: bob.email, key: publicKeyOf(sshKey.publicKey), note: null, keyProven: true, origin: { channel: 'ssh', ip: '192.0.2.44' } });
    const sshToken = tokenOf((await t.smtp.waitForMail(bob.email)).link!);
    expect(textOf((await pageFrom('192.0.2.44', sshToken)).text)).toContain(
      `The SSH session that made this request — from 192.0.2.44 (SSH), less than a minute ago — will be signed in as ${bob.email}: ` +
        `it, and anyone holding this key's private key, can then create API keys for the organization ${bob.org}, at any time, for as long as the key stays linked.`,
    );
  });

  it('the email tells the reader they can press "This wasn\'t me"', async () => {
    const email = uniqueEmail('mailtext');
    await initiateFrom('203.0.113.10', email, makeKey());
    const mail = await t.smtp.waitForMail(email);
    expect(mail.text).toContain(`If this wasn't you, ignore this email: nothing happens unless the link is confirmed.\nOr open the link and press "This wasn't me" to cancel the request, so it can never be confirmed.`);
    expect(textOf(mail.html)).toContain("Or open the link and press “This wasn't me” to cancel the request, so it can never be confirmed.");
  });
});

describe('"This wasn\'t me"', () => {
  it('cancels: the link cannot be confirmed, verify-key and api-keys keep their contract 401s, nothing is linked or minted; audited', async () => {
    const bob = await verifiedAccount();
    const key = makeKey();
    const started = await initiateFrom('203.0.113.20', bob.email, key);
    const nonce = started.body.nonce as string;
    const token = tokenOf((await t.smtp.waitForMail(bob.email)).link!);
    const pendingVerify = await verifyKey(bob.email, key);
    const pendingMint = await mint(bob.email, key);
    expect(pendingVerify.status).toBe(401);
    expect(pendingMint.status).toBe(401);

    const cancelled = await answerFrom('198.51.100.50', token, 'cancel');
    expect(cancelled.status).toBe(200);
    expect(textOf(cancelled.text)).toContain(`The request to link the key ${key.fingerprint} to ${bob.email} is cancelled: it can no longer be confirmed`);

    // The link is spent: Confirm (POST) and the page (GET) say so, with no form.
    const confirm = await answerFrom('203.0.113.20', token);
    expect(confirm.status).toBe(410);
    expect(confirm.text).toContain('Request cancelled');
    expect(confirm.text).toContain('This verification request was cancelled.');
    const page = await pageFrom('203.0.113.20', token);
    expect(page.status).toBe(410);
    expect(page.text).not.toContain('<form');
    expect((await answerFrom('198.51.100.50', token, 'cancel')).status).toBe(410);

    // The requester's polls: the very same bytes as before the cancellation (the contract's 401s).
    for (let i = 0; i < 2; i++) {
      const verify = await verifyKey(bob.email, key);
      expect(verify.status).toBe(401);
      expect(verify.text).toBe(pendingVerify.text);
      const minted = await mint(bob.email, key);
      expect(minted.status).toBe(401);
      expect(minted.text).toBe(pendingMint.text);
    }
    expect(pendingVerify.body).toEqual({ verified: false, is_active: false, reason: expect.stringMatching(/^No HTTP verification in force for this email and key/) });
    expect(pendingMint.body).toMatchObject({ success: false, error: 'Invalid or unverified SSH key' });

    const db = t.app.deps.db;
    expect(await db.selectFrom('ssh_keys').select('id').where('key_blob', '=', key.publicKey.split(' ')[1]!).execute()).toEqual([]);
    const request = await db.selectFrom('verification_requests').select(['consumed_at', 'cancelled_at']).where('id', '=', nonce).executeTakeFirstOrThrow();
    expect(request.cancelled_at).not.toBeNull();
    const audit = await db.selectFrom('audit_events').selectAll().where('action', '=', 'verification.cancelled').where('subject_id', '=', nonce).execute();
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ channel: 'http', ip: '198.51.100.50' });
    const details = typeof audit[0]!.details === 'string' ? JSON.parse(audit[0]!.details) : audit[0]!.details;
    expect(details).toEqual({ fingerprint: key.fingerprint, requested_ip: '203.0.113.20', requested_via: 'http', http_window_closed: false });
    const confirmations = await db.selectFrom('audit_events').select('details').where('action', '=', 'ssh_key.confirmed').execute();
    expect(confirmations.filter((row) => JSON.stringify(row.details).includes(nonce))).toEqual([]);
    expect(await db.selectFrom('api_keys').select('id').where('label', '=', 'not-bobs-key').execute()).toEqual([]);
  });

  it('also closes an HTTP window open for the pair: whoever is polling it stops getting 200', async () => {
    const bob = await verifiedAccount();
    const key = makeKey();
    // Someone's request for bob's email and key, a couple of minutes old...
    const theirs = await initiateFrom('203.0.113.30', bob.email, key);
    const theirToken = tokenOf((await t.smtp.waitForMail(bob.email)).link!);
    const closedVerify = await verifyKey(bob.email, key);
    await ageRequest(theirs.body.nonce, 2); // past the one-mail-a-minute limit for the pair
    // ...and bob's own, which he confirms: the window is open, for anyone with the pair.
    await initiateFrom('127.0.0.1', bob.email, key);
    expect((await t.request('/shell-auth/verify', confirmForm(tokenOf((await t.smtp.waitForMail(bob.email)).link!)))).status).toBe(200);
    expect((await verifyKey(bob.email, key)).status).toBe(200);

    const cancelled = await answerFrom('127.0.0.1', theirToken, 'cancel');
    expect(cancelled.status).toBe(200);
    expect(textOf(cancelled.text)).toContain('The HTTP window that was open for this key and account is closed too');
    const verify = await verifyKey(bob.email, key);
    expect(verify.status).toBe(401);
    expect(verify.text).toBe(closedVerify.text);
    expect((await mint(bob.email, key)).status).toBe(401);
    const audit = await t.app.deps.db.selectFrom('audit_events').select('details').where('action', '=', 'verification.cancelled').where('subject_id', '=', theirs.body.nonce).executeTakeFirstOrThrow();
    const details = typeof audit.details === 'string' ? JSON.parse(audit.details) : audit.details;
    expect(details).toMatchObject({ http_window_closed: true });
  });

  it('a waiting `ssh … login` is told at once and exits 1, its key not linked', async () => {
    const email = uniqueEmail('sshcancel');
    const key = makeKey();
    const login = openssh(t.app.sshPort, key.privateKeyPath, ['login', email]);
    try {
      const token = tokenOf((await t.smtp.waitForMail(email, 20_000)).link!);
      const page = textOf((await pageFrom('198.51.100.60', token)).text);
      expect(page).toMatch(/The SSH session that made this request — from (127\.0\.0\.1|::1) \(SSH\), less than a minute ago — will be signed in as /);
      expect(page).toContain('These addresses differ');
      const cancelledAt = Date.now();
      expect((await answerFrom('198.51.100.60', token, 'cancel')).status).toBe(200);
      const result = await login;
      expect(Date.now() - cancelledAt).toBeLessThan(3_000);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain(`The request was refused on its confirmation page ("This wasn't me"): this key was not linked.\n`);
      expect(await t.app.deps.db.selectFrom('ssh_keys').select('id').where('key_blob', '=', key.publicKey.split(' ')[1]!).execute()).toEqual([]);
    } finally {
      login.kill();
    }
  });

  it('the core wait reports it as cancelled, not confirmed', async () => {
    const email = uniqueEmail('waitcancel');
    const started = await startVerification(t.app.deps, { email, key: publicKeyOf(makeKey().publicKey), note: null, keyProven: true, origin: { channel: 'ssh', ip: '192.0.2.9' } });
    const token = tokenOf((await t.smtp.waitForMail(email)).link!);
    const abort = new AbortController();
    const giveUp = setTimeout(() => abort.abort(), 5_000);
    try {
      const outcome = waitForConfirmation(t.app.deps, started.nonce!, { signal: abort.signal });
      expect((await answerFrom('192.0.2.9', token, 'cancel')).status).toBe(200);
      expect(await outcome).toBe('cancelled');
    } finally {
      clearTimeout(giveUp);
    }
  });

  it('needs what Confirm needs (the token, a form POST): GET never cancels, a wrong token is 404, an unknown answer is 400; none change anything', async () => {
    const email = uniqueEmail('guard');
    const key = makeKey();
    await initiateFrom('203.0.113.40', email, key);
    const token = tokenOf((await t.smtp.waitForMail(email)).link!);
    expect((await t.request(`/shell-auth/verify?token=${token}&answer=cancel`)).status).toBe(200);
    expect((await answerFrom('203.0.113.40', 'x'.repeat(43), 'cancel')).status).toBe(404);
    const odd = await answerFrom('203.0.113.40', token, 'maybe');
    expect(odd.status).toBe(400);
    // As JSON (not a form), nothing is read: the token is missing.
    const json = await t.request('/shell-auth/verify', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token, answer: 'cancel' }) });
    expect(json.status).toBe(404);
    expect(json.headers.get('content-security-policy')).toContain("form-action 'self'");
    // Still pending: the page shows both buttons, and Confirm works.
    const page = await pageFrom('203.0.113.40', token);
    expect(page.status).toBe(200);
    expect(page.text).toMatch(CANCEL_FORM);
    expect((await answerFrom('203.0.113.40', token)).status).toBe(200);
    expect((await answerFrom('203.0.113.40', token, 'cancel')).status).toBe(410);
  });
});
