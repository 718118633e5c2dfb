import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { makeKey, uniqueEmail } from './support/keys.js';
import { startTestApp, type TestApp } from './support/app.js';
import { openssh, privateKeyOf, ssh2Exec } from './support/ssh.js';

// A billing service that takes 600 ms: long enough for a client to leave mid-`create`.
const billing = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => setTimeout(() => res.writeHead(200).end('{"active": true}'), 600));
});

let t: TestApp;
beforeAll(async () => {
  await new Promise<void>((resolve) => billing.listen(0, '127.0.0.1', resolve));
  t = await startTestApp({ BILLING_URL: `http://127.0.0.1:${(billing.address() as AddressInfo).port}/`, BILLING_TIMEOUT_MS: '5000' });
});
afterAll(async () => {
  await t?.close();
  billing.closeAllConnections();
  await new Promise((resolve) => billing.close(resolve));
});

it('a client that drops mid-create leaves no usable key behind, and the server keeps serving', async () => {
  const email = uniqueEmail('drop');
  const key = makeKey();
  await t.verifyByEmail(email, key.publicKey);
  expect((await openssh(t.app.sshPort, key.privateKeyPath, ['login', email])).code).toBe(0); // prove possession

  await ssh2Exec(t.app.sshPort, { privateKey: privateKeyOf(key.privateKeyPath) }, 'create --label dropped-key', {
    // Leave as soon as the command is running: the server is waiting on billing.
    onChannel: (_channel, client) => setTimeout(() => client.end(), 100),
  }).catch(() => undefined);
  await new Promise((resolve) => setTimeout(resolve, 1200));

  const rows = await t.app.deps.db.selectFrom('api_keys').select(['label', 'revoked_at']).where('label', '=', 'dropped-key').execute();
  // Billing answered after the client left: the key was written, then revoked, since nobody saw it.
  expect(rows).toHaveLength(1);
  expect(rows[0]!.revoked_at).not.toBeNull();

  const after = await openssh(t.app.sshPort, key.privateKeyPath, ['create', '--label', 'after-the-drop']);
  expect(after.code).toBe(0);
  expect(after.stdout).toMatch(/^[0-9a-f-]{100}\n$/);

  // A login wait abandoned by its client stops polling and does not disturb anyone.
  const waiter = makeKey();
  const login = openssh(t.app.sshPort, waiter.privateKeyPath, ['login', uniqueEmail('gone')]);
  await new Promise((resolve) => setTimeout(resolve, 500));
  login.kill();
  await login;
  expect((await openssh(t.app.sshPort, key.privateKeyPath, ['whoami'])).code).toBe(0);
});
