import { afterAll, beforeAll, expect, it } from 'vitest';
import { authenticateApiKey, mintApiKey, orgsOfUser, recordKeySeen, resolveSshIdentity } from '../../src/core/index.js';
import { TOUCH_EVERY_MS } from '../../src/core/touch.js';
import { startTestCore, type TestCore } from '../support/core.js';
import { countingStatements } from '../support/database.js';

// last_seen_at / last_used_at: written at most once a minute per row, with the test clock.

let core: TestCore;
beforeAll(async () => {
  core = await startTestCore();
});
afterAll(async () => {
  await core?.close();
});

it('a key seen many times a minute is written once a minute', async () => {
  const { publicKey } = await core.verifiedUser();
  const seenAt = async () =>
    (await core.deps.db.selectFrom('ssh_keys').select('last_seen_at').where('key_blob', '=', publicKey.blob).executeTakeFirstOrThrow()).last_seen_at;
  const { db, statements } = countingStatements(core.deps.db);
  const counted = { ...core.deps, db };
  core.clock.advance(TOUCH_EVERY_MS); // past anything verifiedUser recorded
  const first = core.clock.now;
  await recordKeySeen(counted, publicKey);
  expect(new Date((await seenAt())!).getTime()).toBe(first.getTime());
  statements.length = 0;
  for (let i = 0; i < 10; i++) {
    core.clock.advance(5_000);
    await recordKeySeen(counted, publicKey);
  }
  expect(statements).toEqual([]); // no query at all in between
  expect(new Date((await seenAt())!).getTime()).toBe(first.getTime());
  core.clock.advance(TOUCH_EVERY_MS - 50_000);
  await recordKeySeen(counted, publicKey);
  expect(new Date((await seenAt())!).getTime()).toBe(core.clock.now.getTime());
});

it('an API key used many times a minute has last_used_at written once a minute', async () => {
  const { publicKey } = await core.verifiedUser();
  const identity = await resolveSshIdentity(core.deps, publicKey);
  if (identity.kind !== 'account') throw new Error('expected an account');
  const minted = await mintApiKey(core.deps, {
    user: identity.user,
    sshKeyId: identity.sshKeyId,
    label: 'touch-test',
    origin: { channel: 'ssh', ip: null },
  });
  expect((await orgsOfUser(core.deps.db, identity.user)).length).toBeGreaterThan(0);
  const usedAt = async () =>
    (await core.deps.db.selectFrom('api_keys').select('last_used_at').where('id', '=', minted.api_key_id).executeTakeFirstOrThrow()).last_used_at;
  // The write is off the request path: wait (bounded) for it to land.
  const usedAtSettles = async (expected: number) => {
    for (let i = 0; i < 100 && new Date((await usedAt()) ?? 0).getTime() !== expected; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(new Date((await usedAt()) ?? 0).getTime()).toBe(expected);
  };
  await authenticateApiKey(core.deps, minted.api_key);
  const first = core.clock.now.getTime();
  await usedAtSettles(first);
  core.clock.advance(30_000);
  await authenticateApiKey(core.deps, minted.api_key);
  await new Promise((resolve) => setTimeout(resolve, 50)); // room for a write that must not happen
  expect(new Date((await usedAt())!).getTime()).toBe(first);
  core.clock.advance(TOUCH_EVERY_MS);
  await authenticateApiKey(core.deps, minted.api_key);
  await usedAtSettles(core.clock.now.getTime());
});
