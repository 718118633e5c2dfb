import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { openssh, privateKeyOf, ssh2Exec } from '../support/ssh.js';
import { countingStatements } from '../support/database.js';

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

  const rows = await t.app.deps.db.selectFrom('api_keys').select(['id', 'label', 'revoked_at']).where('label', '=', 'dropped-key').execute();
  // Billing answered after the client left: the key was written, then revoked, since nobody saw it.
  expect(rows).toHaveLength(1);
  expect(rows[0]!.revoked_at).not.toBeNull();
  // Audited as the user's key, revoked because it was never delivered.
  const revoked = await t.app.deps.db
    .selectFrom('audit_events')
    .innerJoin('users', 'users.id', 'audit_events.actor_user_id')
    .select(['users.email', 'audit_events.details', 'audit_events.channel'])
    .where('audit_events.action', '=', 'api_key.revoked')
    .where('audit_events.subject_id', '=', rows[0]!.id)
    .execute();
  expect(revoked).toEqual([{ email, channel: 'ssh', details: { label: 'dropped-key', reason: 'undelivered' } }]);

  const after = await openssh(t.app.sshPort, key.privateKeyPath, ['create', '--label', 'after-the-drop']);
  expect(after.code).toBe(0);
  expect(after.stdout).toMatch(/^[0-9a-f-]{100}\n$/);

  // A login wait abandoned by its client stops polling the database (counted, not assumed). This
  // is the fallback used while LISTEN/NOTIFY is unavailable, so turn notifications off here.
  const waiter = makeKey();
  const realDb = t.app.deps.db;
  const counted = countingStatements(realDb);
  const signals = t.app.deps.confirmations;
  t.app.deps.confirmations = undefined;
  t.app.deps.db = counted.db;
  try {
    let mailed!: () => void;
    const mailSent = new Promise<void>((resolve) => (mailed = resolve));
    const login = openssh(t.app.sshPort, waiter.privateKeyPath, ['login', uniqueEmail('gone')], {
      onStderr: (chunk) => chunk.includes('Waiting for confirmation') && mailed(),
    });
    await mailSent;
    // Control: while the client waits, the server polls (about once a second).
    counted.statements.length = 0;
    await until(() => counted.statements.length >= 2, 10_000, 'the waiting login never polled');
    login.kill();
    await login;
    await until(() => t.logs.some((line) => line.includes('ssh login: the client stopped waiting')), 10_000, 'the server never noticed the client leaving');
    counted.statements.length = 0;
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect(counted.statements).toEqual([]);
  } finally {
    t.app.deps.db = realDb;
    t.app.deps.confirmations = signals;
  }
  expect((await openssh(t.app.sshPort, key.privateKeyPath, ['whoami'])).code).toBe(0);
});

async function until(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(what);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
