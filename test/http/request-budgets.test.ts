import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { createHttpServer } from '../../src/http/server.js';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { startTestApp, type TestApp } from '../support/app.js';

// The per-address lookup budget is kept in the database: two instances on one database allow
// what one would. Addresses come from the trusted proxy header, so each test has its own.

const LIMIT = 4;
let t: TestApp;
let second: Server;
let secondUrl: string;
beforeAll(async () => {
  t = await startTestApp({ TRUST_PROXY: 'true', HTTP_PROXY_FROM: '127.0.0.1', HTTP_LOOKUPS_PER_MINUTE: String(LIMIT) });
  // A second instance's HTTP door on the same database (its in-memory first line is its own).
  second = createHttpServer(t.app.deps, { trustProxy: ['127.0.0.1/32'], log: t.app.deps.log, lookupsPerMinute: LIMIT, limits: { ...loadConfig({}).http, ipv6Prefix: 64 }, sshHint: t.app.sshHint, readiness: t.app.readiness });
  await new Promise<void>((resolve) => second.listen(0, '127.0.0.1', resolve));
  secondUrl = `http://127.0.0.1:${(second.address() as AddressInfo).port}`;
});
afterAll(async () => {
  second?.closeAllConnections();
  await new Promise((resolve) => second?.close(resolve));
  await t?.close();
});

let ipCounter = 0;
// Addresses of their own: the database (and so the budget) is shared with other test files.
const newAddress = () => `198.18.7.${++ipCounter}`;

async function post(base: string, ip: string, path: string, body: unknown) {
  const response = await fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-forwarded-for': ip },
    body: JSON.stringify(body),
  });
  return { status: response.status, retryAfter: response.headers.get('retry-after'), body: await response.json() };
}

describe('per-address lookup budget, shared by instances through the database', () => {
  it('verify-key requests on two instances add up; the next one on either is 429 with Retry-After; other addresses are not affected', async () => {
    const ip = newAddress();
    const pair = { email: uniqueEmail('budget'), ssh_public_key: makeKey().publicKey };
    const statuses = [];
    for (const base of [t.url, t.url, secondUrl, secondUrl]) statuses.push((await post(base, ip, '/api/shell-auth/verify-key', pair)).status);
    expect(statuses).toEqual([401, 401, 401, 401]);
    for (const base of [t.url, secondUrl]) {
      const limited = await post(base, ip, '/api/shell-auth/verify-key', pair);
      expect(limited.status).toBe(429);
      expect(Number(limited.retryAfter)).toBeGreaterThanOrEqual(1);
      expect(Number(limited.retryAfter)).toBeLessThanOrEqual(60);
    }
    expect((await post(t.url, newAddress(), '/api/shell-auth/verify-key', pair)).status).toBe(401);
  });

  it("initiate's 409 answers count (and a spent budget refuses initiate); its 200s do not", async () => {
    const held = makeKey();
    await t.verifyByEmail(uniqueEmail('holder'), held.publicKey);
    const prober = newAddress();
    for (let i = 0; i < LIMIT; i++) {
      expect((await post(t.url, prober, '/api/shell-auth', { email: uniqueEmail('probe'), ssh_public_key: held.publicKey })).status).toBe(409);
    }
    const fresh = { email: uniqueEmail('fresh'), ssh_public_key: makeKey().publicKey };
    expect((await post(secondUrl, prober, '/api/shell-auth', fresh)).status).toBe(429);

    const honest = newAddress();
    for (let i = 0; i < LIMIT + 2; i++) {
      expect((await post(t.url, honest, '/api/shell-auth', { email: uniqueEmail('honest'), ssh_public_key: makeKey().publicKey })).status).toBe(200);
    }
  });

  it('the 403 alias answers count too', async () => {
    const prober = newAddress();
    for (let i = 0; i < LIMIT; i++) {
      const res = await post(t.url, prober, '/api/shell-auth', { email: `nobody${i}+x@${uniqueEmail('d').split('@')[1]}`, ssh_public_key: makeKey().publicKey });
      expect(res.body).toEqual({ success: false, error: 'Base account does not exist' });
    }
    expect((await post(t.url, prober, '/api/shell-auth', { email: 'x+y@example.com', ssh_public_key: makeKey().publicKey })).status).toBe(429);
  });

  it('/api/whoami: failed authentications are budgeted (then 429); a valid key is always answered, also from an address over budget', async () => {
    const email = uniqueEmail('platform');
    const key = makeKey();
    await t.verifyByEmail(email, key.publicKey);
    const minted = await post(t.url, newAddress(), '/api/shell-auth/api-keys', { email, ssh_public_key: key.publicKey, label: 'platform-check' });
    expect(minted.status).toBe(200);
    const platform = newAddress();
    const whoami = (base: string, ip: string, apiKey: string) =>
      fetch(`${base}/api/whoami`, { headers: { authorization: `Bearer ${apiKey}`, 'x-forwarded-for': ip } }).then((r) => r.status);
    // A platform checks its users' keys on every call: many more than the budget, from one address.
    const valid = [];
    for (let i = 0; i < LIMIT * 3; i++) valid.push(await whoami(i % 2 ? secondUrl : t.url, platform, minted.body.api_key));
    expect(valid).toEqual(Array(LIMIT * 3).fill(200));

    const prober = newAddress();
    const statuses = [];
    for (const base of [t.url, t.url, secondUrl, secondUrl, t.url, t.url]) statuses.push(await whoami(base, prober, 'nope'));
    expect(statuses).toEqual([401, 401, 401, 401, 429, 429]);
    // A platform's address where some users' keys are bad: the good ones still work, the bad stay 429.
    expect(await whoami(t.url, prober, minted.body.api_key)).toBe(200);
    expect(await whoami(secondUrl, prober, minted.body.api_key)).toBe(200);
    expect(await whoami(t.url, prober, 'nope')).toBe(429);
    expect(await whoami(secondUrl, prober, 'nope')).toBe(429);
    expect(await whoami(secondUrl, newAddress(), 'nope')).toBe(401);
  });
});
