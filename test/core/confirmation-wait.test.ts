import { afterAll, beforeAll, expect, it } from 'vitest';
import { startVerification, waitForConfirmation } from '../../src/core/index.js';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { publicKeyOf } from '../support/core.js';
import { confirmForm, startTestApp, tokenOf, type TestApp } from '../support/app.js';
import { countingStatements } from '../support/database.js';

// A waiting `login` is woken by Postgres LISTEN/NOTIFY (PGlite has it too), not by polling.

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

it('100 waiting logins cost no queries while they wait; a confirmation wakes its own waiter at once', async () => {
  for (let i = 0; i < 100 && !t.app.deps.confirmations?.listening(); i++) await new Promise((resolve) => setTimeout(resolve, 50));
  expect(t.app.deps.confirmations?.listening()).toBe(true);

  const origin = { channel: 'ssh' as const, ip: '192.0.2.9' };
  const requests: Array<{ email: string; id: string; link: string }> = [];
  const key = publicKeyOf(makeKey().publicKey); // one key, a hundred accounts asking for it
  for (let i = 0; i < 100; i++) {
    const email = uniqueEmail('waiter');
    const started = await startVerification(t.app.deps, { email, key, note: null, keyProven: true, origin });
    requests.push({ email, id: started.nonce ?? '', link: '' });
  }
  for (const request of requests) request.link = (await t.smtp.waitForMail(request.email, 30_000)).link ?? '';

  const realDb = t.app.deps.db;
  // Only what a waiter would read: the mail sender may still be marking the 100 messages sent
  // (the sink has them before their rows say so), through the same handle.
  const counted = countingStatements(realDb, { table: 'verification_requests' });
  const abort = new AbortController();
  try {
    t.app.deps.db = counted.db;
    const outcomes = requests.map((r) => waitForConfirmation(t.app.deps, r.id, { signal: abort.signal, tickMs: 500 }));
    await new Promise((resolve) => setTimeout(resolve, 500)); // each has looked once
    counted.statements.length = 0;
    await new Promise((resolve) => setTimeout(resolve, 2_500)); // five ticks each
    expect(counted.statements).toEqual([]);

    const first = requests[0]!;
    const confirmedAt = Date.now();
    const confirmed = await t.request('/shell-auth/verify', confirmForm(tokenOf(first.link)));
    expect(confirmed.status).toBe(200);
    expect(await outcomes[0]).toBe('confirmed');
    expect(Date.now() - confirmedAt).toBeLessThan(1_500);

    abort.abort();
    expect(new Set(await Promise.all(outcomes.slice(1)))).toEqual(new Set(['aborted']));
  } finally {
    abort.abort();
    t.app.deps.db = realDb;
  }
});
