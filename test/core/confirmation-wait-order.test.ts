import { afterAll, beforeAll, expect, it } from 'vitest';
import { startVerification, waitForConfirmation } from '../../src/core/index.js';
import type { Db } from '../../src/db/database.js';
import type { Notifications } from '../../src/db/notifications.js';
import { confirmForm, startTestApp, tokenOf, type TestApp } from '../support/app.js';
import { publicKeyOf } from '../support/core.js';
import { makeKey, uniqueEmail } from '../support/keys.js';

// Issue 16, code-read item 2: a waiting `login` read its request row, then registered for the
// confirmation's NOTIFY. A click whose NOTIFY landed in between was missed, and the next look was
// at the link's last second: up to 10 minutes after the click. The window is made deterministic
// here: the waiter's first read of the row is held (on its own database handle) until
// the link is confirmed over real HTTP and this process's listener has heard the NOTIFY.

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

it('a confirmation whose NOTIFY lands between the read and the wait wakes the waiter at once', async () => {
  for (let i = 0; i < 100 && !t.app.deps.confirmations?.listening(); i++) await new Promise((resolve) => setTimeout(resolve, 50));
  expect(t.app.deps.confirmations?.listening()).toBe(true);

  const email = uniqueEmail('between');
  const origin = { channel: 'ssh' as const, ip: '192.0.2.9' };
  const started = await startVerification(t.app.deps, { email, key: publicKeyOf(makeKey().publicKey), note: null, keyProven: true, origin });
  const requestId = started.nonce!;
  const token = tokenOf((await t.smtp.waitForMail(email)).link!);

  // This process has heard the confirmation's NOTIFY.
  let heard!: () => void;
  const notified = new Promise<void>((resolve) => (heard = resolve));
  const unsubscribe = (t.app.deps.confirmations as Notifications).subscribe({ message: (payload) => payload === requestId && heard(), recheck() {} });

  let reads = 0;
  let confirmedStatus = 0;
  const db = afterEachRead(t.app.deps.db, async () => {
    if (++reads > 1) return;
    // The waiter has read the row (still pending) and not gone on yet: the click happens now.
    confirmedStatus = (await t.request('/shell-auth/verify', confirmForm(token))).status;
    await notified;
  });

  const abort = new AbortController();
  const giveUp = setTimeout(() => abort.abort(), 5_000); // the old order waited for the link's last second
  const begun = Date.now();
  try {
    const outcome = await waitForConfirmation({ ...t.app.deps, db }, requestId, { signal: abort.signal });
    expect(confirmedStatus).toBe(200);
    expect(outcome).toBe('confirmed');
    expect(reads).toBe(2); // the held read, and one more when the NOTIFY woke it: no polling
    expect(Date.now() - begun).toBeLessThan(3_000);
  } finally {
    clearTimeout(giveUp);
    abort.abort();
    unsubscribe();
  }
});

/**
 * `db`, where every query started from `selectFrom` runs `hook` after its result is in and before
 * the caller gets it. Outside kysely: a plugin's transformResult runs while the connection is
 * still held, which PGlite's single connection cannot spare.
 */
function afterEachRead(db: Db, hook: () => Promise<void>): Db {
  const EXECUTE = new Set(['execute', 'executeTakeFirst', 'executeTakeFirstOrThrow']);
  const wrap = <T extends object>(builder: T): T =>
    new Proxy(builder, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target) as unknown;
        if (typeof value !== 'function') return value;
        if (EXECUTE.has(String(prop))) {
          return async (...args: unknown[]) => {
            const result: unknown = await value.apply(target, args);
            await hook();
            return result;
          };
        }
        return (...args: unknown[]) => {
          const out: unknown = value.apply(target, args);
          return out !== null && typeof out === 'object' && 'executeTakeFirst' in out ? wrap(out) : out;
        };
      },
    });
  return new Proxy(db, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (prop === 'selectFrom') return (...args: unknown[]) => wrap((value as (...a: unknown[]) => object).apply(target, args));
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}
