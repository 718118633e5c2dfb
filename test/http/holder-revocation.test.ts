import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findUserByEmail, mintApiKey } from '../../src/core/index.js';
import { checksumHex } from '../../src/core/secrets.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { makeKey, uniqueEmail } from '../support/keys.js';

// POST /api/api-keys/revoke: whoever holds a key can kill it with nothing but the key (a CI log
// printed it, someone found it). Anything that is not a live key gets whoami's 401, to the byte.

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

/** A user with a key minted over HTTP (email confirmation, then api-keys), and a way to mint more. */
async function userWithKey(local: string, app: TestApp = t) {
  const email = uniqueEmail(local);
  const sshKey = makeKey();
  await app.verifyByEmail(email, sshKey.publicKey);
  const minted = await app.post('/api/shell-auth/api-keys', { email, ssh_public_key: sshKey.publicKey, label: `${local}-first` });
  expect(minted.status).toBe(200);
  const user = (await findUserByEmail(app.app.deps.db, email))!;
  const another = async (label: string) => {
    const key = await mintApiKey(app.app.deps, { user, sshKeyId: null, label, origin: { channel: 'ssh', ip: '127.0.0.1' } });
    return { apiKey: key.api_key, id: key.api_key_id };
  };
  return { email, apiKey: minted.body.api_key as string, apiKeyId: minted.body.api_key_id as string, another };
}

const whoami = (apiKey: string) => t.request('/api/whoami', { headers: { authorization: `Bearer ${apiKey}` } });
const revokeWithBearer = (apiKey: string) => t.request('/api/api-keys/revoke', { method: 'POST', headers: { authorization: `Bearer ${apiKey}` } });
const revokeWithBody = (body: unknown) => t.post('/api/api-keys/revoke', body);

async function revocationMailsTo(email: string) {
  await t.mailSettled();
  return t.smtp.mailsTo(email).filter((m) => /revoked/i.test(m.subject));
}

function wellFormed(id: string): string {
  const body = id + randomBytes(28).toString('hex');
  return body + checksumHex(body);
}

describe('POST /api/api-keys/revoke', () => {
  it('with the key as Bearer: revoked (whoami 401 at once), the creator emailed with the address it came from, audited with no actor', async () => {
    const owner = await userWithKey('holder');
    const kept = await owner.another('kept-working');
    expect((await whoami(owner.apiKey)).status).toBe(200); // now in this instance's cache too

    const answer = await revokeWithBearer(owner.apiKey);
    expect(answer.status).toBe(200);
    expect(answer.body).toEqual({ success: true, revoked: true, api_key_id: owner.apiKeyId });
    expect((await whoami(owner.apiKey)).status).toBe(401);
    expect((await whoami(kept.apiKey)).status).toBe(200);

    const mails = await revocationMailsTo(owner.email);
    expect(mails).toHaveLength(1);
    expect(mails[0]!.subject).toBe('API key revoked by someone holding it: "holder-first"');
    expect(mails[0]!.text).toContain('been revoked by someone holding it, from 127.0.0.1: it no longer works.');
    expect(mails[0]!.text).toContain(owner.apiKeyId);
    expect(mails[0]!.text).not.toContain(owner.apiKey);

    const row = await t.app.deps.db.selectFrom('api_keys').select(['revoked_reason', 'revoked_by_user_id']).where('id', '=', owner.apiKeyId).executeTakeFirstOrThrow();
    expect(row).toEqual({ revoked_reason: 'holder', revoked_by_user_id: null });
    const events = await t.app.deps.db
      .selectFrom('audit_events')
      .select(['actor_user_id', 'channel', 'ip', 'details'])
      .where('action', '=', 'api_key.revoked')
      .where('subject_id', '=', owner.apiKeyId)
      .execute();
    expect(events).toEqual([{ actor_user_id: null, channel: 'http', ip: '127.0.0.1', details: { label: 'holder-first', reason: 'holder', by: 'holder' } }]);
    expect(t.logs.join('\n')).not.toContain(owner.apiKey);
  });

  it('with the key in the body, {"api_key": …}: the same', async () => {
    const owner = await userWithKey('bodyholder');
    const answer = await revokeWithBody({ api_key: owner.apiKey });
    expect(answer.status).toBe(200);
    expect(answer.body).toEqual({ success: true, revoked: true, api_key_id: owner.apiKeyId });
    expect((await whoami(owner.apiKey)).status).toBe(401);
    expect(await revocationMailsTo(owner.email)).toHaveLength(1);
  });

  it("an unknown, malformed, wrong-secret, expired or already revoked key: exactly whoami's 401, by header or body, and nothing sent", async () => {
    const owner = await userWithKey('refused');
    const expired = await owner.another('expired-key');
    await t.app.deps.db.updateTable('api_keys').set({ expires_at: new Date(Date.now() - 1000) }).where('id', '=', expired.id).execute();
    const revoked = await owner.another('revoked-key');
    expect((await revokeWithBearer(revoked.apiKey)).status).toBe(200);
    const mailsBefore = (await revocationMailsTo(owner.email)).length;

    const notKeys = {
      unknown: wellFormed(randomUUID()),
      malformed: 'not-a-key',
      badChecksum: `${owner.apiKey.slice(0, 92)}zzzzzzzz`,
      wrongSecret: wellFormed(owner.apiKeyId),
      expired: expired.apiKey,
      alreadyRevoked: revoked.apiKey,
    };
    for (const [what, key] of Object.entries(notKeys)) {
      const reference = await whoami(key);
      expect(reference.status, what).toBe(401);
      for (const answer of [await revokeWithBearer(key), await revokeWithBody({ api_key: key })]) {
        expect(answer.status, what).toBe(401);
        expect(answer.text, what).toBe(reference.text);
      }
    }
    // No key at all, or another scheme: whoami's answer to the same.
    const noKey = await t.request('/api/whoami');
    expect((await t.request('/api/api-keys/revoke', { method: 'POST' })).text).toBe(noKey.text);
    const basic = { authorization: `Basic ${Buffer.from(`x:${owner.apiKey}`).toString('base64')}` };
    expect((await t.request('/api/api-keys/revoke', { method: 'POST', headers: basic })).text).toBe((await t.request('/api/whoami', { headers: basic })).text);

    expect((await whoami(owner.apiKey)).status).toBe(200);
    expect(await revocationMailsTo(owner.email)).toHaveLength(mailsBefore);
    const reasons = await t.app.deps.db.selectFrom('api_keys').select('revoked_reason').where('id', '=', revoked.id).executeTakeFirstOrThrow();
    expect(reasons.revoked_reason).toBe('holder'); // the first revocation's, not overwritten
  });

  it('the key given twice (header and body), a body that is not {"api_key": string}: 400 saying what to send', async () => {
    const owner = await userWithKey('twice');
    const both = await t.request('/api/api-keys/revoke', {
      method: 'POST',
      headers: { authorization: `Bearer ${owner.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ api_key: owner.apiKey }),
    });
    expect(both.status).toBe(400);
    expect(both.body).toEqual({ success: false, error: 'Invalid request', detail: 'send the key once: as Authorization: Bearer KEY or as {"api_key": KEY}, not both' });
    expect((await revokeWithBody({ api_key: 42 })).body).toEqual({ success: false, error: 'Invalid request', detail: 'body.api_key: must be a string, not number' });
    expect((await revokeWithBody([owner.apiKey])).body).toEqual({ success: false, error: 'Invalid request', detail: 'body: the body must be a JSON object: {"api_key": KEY}' });
    expect((await whoami(owner.apiKey)).status).toBe(200);
  });
});

describe('POST /api/api-keys/revoke, budgeted like whoami', () => {
  let limited: TestApp;
  beforeAll(async () => {
    limited = await startTestApp({ TRUST_PROXY: 'true', HTTP_PROXY_FROM: '127.0.0.1', HTTP_LOOKUPS_PER_MINUTE: '3' }, { smtp: t.smtp });
  });
  afterAll(async () => {
    await limited?.close();
  });

  it('failed attempts count against the address (then 429); a live key is still revoked from that address', async () => {
    const owner = await userWithKey('budget', limited); // each app has a database of its own
    const prober = `198.18.9.${process.pid % 250}`;
    const attempt = (key: string) =>
      limited.request('/api/api-keys/revoke', { method: 'POST', headers: { authorization: `Bearer ${key}`, 'x-forwarded-for': prober } });
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await attempt(wellFormed(randomUUID()))).status);
    expect(statuses).toEqual([401, 401, 401, 429]);
    const live = await attempt(owner.apiKey);
    expect(live.status).toBe(200);
    expect(live.body.api_key_id).toBe(owner.apiKeyId);
  });
});
