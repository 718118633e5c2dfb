import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setBilling } from '../../src/core/index.js';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { startSmtpServer, type SmtpServer } from '../support/smtp.js';
import { startTestApp, type TestApp } from '../support/app.js';

/** A real HTTP billing service whose answer the test sets. */
let mode: 'active' | 'inactive' | 'error' | 'slow' | 'garbage' = 'active';
const seen: unknown[] = [];
const billing = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    seen.push(JSON.parse(body));
    if (mode === 'error') return void res.writeHead(500).end('{"active": true}');
    if (mode === 'garbage') return void res.writeHead(200).end('not json');
    if (mode === 'slow') return void setTimeout(() => res.writeHead(200).end('{"active": true}'), 1500);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ active: mode === 'active' }));
  });
});

let smtp: SmtpServer;
let t: TestApp;
beforeAll(async () => {
  smtp = await startSmtpServer();
  await new Promise<void>((resolve) => billing.listen(0, '127.0.0.1', resolve));
  const port = (billing.address() as AddressInfo).port;
  // These tests mint again and again after one confirmation: no per-confirmation mint limit here.
  t = await startTestApp({ BILLING_URL: `http://127.0.0.1:${port}/check`, BILLING_TIMEOUT_MS: '500', HTTP_TRUST_MINTS: '0' }, { smtp });
});
afterAll(async () => {
  await t?.close();
  await smtp?.close();
  billing.closeAllConnections();
  await new Promise((resolve) => billing.close(resolve));
});

async function countKeys(t: TestApp, orgId: string): Promise<number> {
  const rows = await t.app.deps.db.selectFrom('api_keys').select('id').where('org_id', '=', orgId).execute();
  return rows.length;
}

describe('billing check with BILLING_URL', () => {
  it('mints only on 200 {"active": true}; failures, timeouts and inactive orgs are 402 with nothing written', async () => {
    const email = uniqueEmail('bill');
    const key = makeKey();
    await t.verifyByEmail(email, key.publicKey);
    const request = { email, ssh_public_key: key.publicKey, label: 'billing-test' };

    mode = 'active';
    const ok = await t.post('/api/shell-auth/api-keys', request);
    expect(ok.status).toBe(200);
    expect(seen.at(-1)).toEqual({ org_id: ok.body.org_id, org_name: ok.body.org_name });

    for (const failing of ['inactive', 'error', 'garbage', 'slow'] as const) {
      mode = failing;
      const started = Date.now();
      const res = await t.post('/api/shell-auth/api-keys', request);
      expect(res.status, failing).toBe(402);
      expect(res.body).toEqual({ success: false, error: 'Billing could not be verified' });
      if (failing === 'slow') expect(Date.now() - started).toBeLessThan(1400);
    }
    expect(await countKeys(t, ok.body.org_id)).toBe(1);
  });
});

describe('billing check without BILLING_URL: the subscription row decides', () => {
  it('a suspended org gets 402 and nothing is written; reactivated, it mints again', async () => {
    const local = await startTestApp({ HTTP_TRUST_MINTS: '0' }, { smtp });
    try {
      const email = uniqueEmail('sub');
      const key = makeKey();
      await local.verifyByEmail(email, key.publicKey);
      const request = { email, ssh_public_key: key.publicKey, label: 'subscription' };
      const first = await local.post('/api/shell-auth/api-keys', request);
      expect(first.status).toBe(200);
      const origin = { channel: 'admin' as const, ip: null };
      await setBilling(local.app.deps, first.body.org_name, 'suspended', origin);
      const suspended = await local.post('/api/shell-auth/api-keys', request);
      expect(suspended.status).toBe(402);
      expect(await countKeys(local, first.body.org_id)).toBe(1);
      await setBilling(local.app.deps, first.body.org_name, 'active', origin);
      expect((await local.post('/api/shell-auth/api-keys', request)).status).toBe(200);
    } finally {
      await local.close();
    }
  });
});
