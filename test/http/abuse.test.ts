import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { confirmVerificationLink, parsePublicKeyLine, startVerification } from '../../src/core/index.js';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { startTestApp, tokenOf, type TestApp } from '../support/app.js';

let t: TestApp;
beforeAll(async () => {
  // Requests without their own address come from this one, not the 127.0.0.1 other files share.
  t = await startTestApp({ TRUST_PROXY: 'true', HTTP_PROXY_FROM: '127.0.0.1', MAIL_PER_IP_HOURLY: '3' }, { headers: { 'x-forwarded-for': '192.0.2.1' } });
});
afterAll(async () => {
  await t?.close();
});

/** Each test gets its own client address (via the trusted proxy header) so the per-IP limit is its own. */
let ipCounter = 0;
function fromIp(): Record<string, string> {
  return { 'x-forwarded-for': `203.0.113.${++ipCounter}` };
}
async function postFrom(headers: Record<string, string>, path: string, body: unknown) {
  return t.request(path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
}

describe('hostile input never crashes the process or gets a 5xx', () => {
  it('a request line that is not a URL gets 400, and the server keeps serving', async () => {
    const { port } = new URL(t.url);
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(Number(port), '127.0.0.1', () => socket.write('GET http://[/ HTTP/1.1\r\nHost: x\r\n\r\n'));
      let data = '';
      socket.on('data', (d) => {
        data += d;
        socket.end();
      });
      socket.on('end', () => resolve(data));
      socket.on('error', reject);
    });
    expect(reply).toMatch(/^HTTP\/1\.1 400/);
    expect((await t.request('/api/nope')).status).toBe(404);
  });

  it('NUL bytes and broken Unicode: 400 naming the field, the key comment included', async () => {
    const key = makeKey();
    const withNul = await postFrom(fromIp(), '/api/shell-auth', { email: uniqueEmail('nul'), ssh_public_key: `${key.publicKey}\u0000evil` });
    expect(withNul.status).toBe(400);
    expect(withNul.body.detail).toMatch(/^ssh_public_key: comment must not contain invisible or control characters \(U\+0000\)/);
    expect(parsePublicKeyLine(`${key.publicKey}\u0000evil\ud800`).ok).toBe(false);

    const pair = { email: uniqueEmail('label'), ssh_public_key: key.publicKey };
    for (const bad of [
      { label: 'pi-v\ud800ers' },
      { label: 'nul\u0000label' },
      { label: 'valid-label', org_name: 'a\u0000b' },
    ]) {
      const res = await t.post('/api/shell-auth/api-keys', { ...pair, ...bad });
      expect(res.status).toBe(400);
      expect(res.body.error).toBe('Invalid request');
    }
    const note = await postFrom(fromIp(), '/api/shell-auth', { email: uniqueEmail('note'), ssh_public_key: makeKey().publicKey, body: 'x\ud800' });
    expect(note.status).toBe(400);
  });
});

describe('mail limits cannot be dodged', () => {
  it('+tags count against the one inbox they all reach', async () => {
    const base = uniqueEmail('inbox');
    const baseKey = makeKey();
    await t.verifyByEmail(base, baseKey.publicKey);
    // The base's own mail counts too: 1 sent, 9 more to aliases, then the 11th is refused.
    const statuses: number[] = [];
    for (let i = 1; i <= 10; i++) {
      const res = await postFrom(fromIp(), '/api/shell-auth', { email: base.replace('@', `+t${i}@`), ssh_public_key: makeKey().publicKey });
      statuses.push(res.status);
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 200, 200, 200, 429]);
  });

  it('per requesting IP (MAIL_PER_IP_HOURLY), behind a trusted proxy', async () => {
    const ip = fromIp();
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      statuses.push((await postFrom(ip, '/api/shell-auth', { email: uniqueEmail('ip'), ssh_public_key: makeKey().publicKey })).status);
    }
    expect(statuses).toEqual([200, 200, 200, 429]);
    // Another address is unaffected.
    expect((await postFrom(fromIp(), '/api/shell-auth', { email: uniqueEmail('ip'), ssh_public_key: makeKey().publicKey })).status).toBe(200);
  });
});

describe('lookup endpoints are budgeted per address', () => {
  it('verify-key, verify-public-key and api-keys share HTTP_LOOKUPS_PER_MINUTE; then 429 with Retry-After', async () => {
    const limited = await startTestApp({ HTTP_LOOKUPS_PER_MINUTE: '3', TRUST_PROXY: 'true', HTTP_PROXY_FROM: '127.0.0.1' }, { smtp: t.smtp });
    try {
      const key = makeKey().publicKey;
      const from = (ip: string) => ({ 'content-type': 'application/json', 'x-forwarded-for': ip });
      const ask = (ip: string, path: string, body: unknown) =>
        limited.request(path, { method: 'POST', headers: from(ip), body: JSON.stringify(body) });
      const statuses = [
        (await ask('198.51.100.1', '/api/shell-auth/verify-key', { email: 'a@example.com', ssh_public_key: key })).status,
        (await ask('198.51.100.1', '/api/shell-auth/verify-public-key', { ssh_public_key: key })).status,
        (await ask('198.51.100.1', '/api/shell-auth/api-keys', { email: 'a@example.com', ssh_public_key: key, label: 'label-x' })).status,
      ];
      expect(statuses).toEqual([401, 404, 401]);
      const over = await ask('198.51.100.1', '/api/shell-auth/verify-key', { email: 'a@example.com', ssh_public_key: key });
      expect(over.status).toBe(429);
      expect(over.body).toEqual({ success: false, error: 'Too many requests' });
      const retryAfter = Number(over.headers.get('retry-after'));
      expect(retryAfter).toBeGreaterThan(0);
      expect(retryAfter).toBeLessThanOrEqual(60);
      // Another address has its own budget.
      expect((await ask('198.51.100.2', '/api/shell-auth/verify-public-key', { ssh_public_key: key })).status).toBe(404);
    } finally {
      await limited.close();
    }
  });
});

describe('a public key claimed over HTTP can be taken back by whoever proves possession (the SSH door)', () => {
  it('HTTP claim -> 409 for others over HTTP, but a possession-proven confirmation takes it over', async () => {
    const victimKey = makeKey();
    const parsed = parsePublicKeyLine(victimKey.publicKey);
    if (!parsed.ok) throw new Error(parsed.reason);
    const squatter = uniqueEmail('squatter');
    await t.verifyByEmail(squatter, victimKey.publicKey);

    const victim = uniqueEmail('victim');
    expect((await postFrom(fromIp(), '/api/shell-auth', { email: victim, ssh_public_key: victimKey.publicKey })).status).toBe(409);

    const origin = { channel: 'ssh' as const, ip: '198.51.100.7' };
    const started = await startVerification(t.app.deps, { email: victim, key: parsed.key, note: null, keyProven: true, origin });
    expect(started.alreadyVerified).toBe(false);
    const mail = await t.smtp.waitForMail(victim);
    const confirmed = await confirmVerificationLink(t.app.deps, tokenOf(mail.link!), origin);
    expect(confirmed.user.email).toBe(victim);
    const row = await t.app.deps.db.selectFrom('ssh_keys').select(['id', 'proven_at']).where('key_blob', '=', parsed.key.blob).executeTakeFirstOrThrow();
    expect(row.proven_at).not.toBeNull();

    const audit = await t.app.deps.db.selectFrom('audit_events').select('action').where('subject_id', '=', row.id).execute();
    expect(audit.map((a) => a.action)).toContain('ssh_key.taken_over');
    // Now proven: neither HTTP nor another proven login can move it.
    expect((await postFrom(fromIp(), '/api/shell-auth', { email: squatter, ssh_public_key: victimKey.publicKey })).status).toBe(409);
    await expect(
      startVerification(t.app.deps, { email: uniqueEmail('other'), key: parsed.key, note: null, keyProven: true, origin }),
    ).rejects.toMatchObject({ code: 'KEY_TAKEN' });
  });
});
