import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { resolveSshIdentity, watchIdentityWrites } from '../../src/core/index.js';
import { compiledFromTemplate } from '../../src/db/statement-templates.js';
import { countingStatements } from '../support/database.js';
import { runSshLine } from '../support/in-process.js';
import { startTestCore, type TestCore } from '../support/core.js';

// Hot statements are built and compiled once per shape, then run with each call's values
// (db/statement-templates.ts): the text must be what kysely would compile, and the values the call's.

let core: TestCore;
beforeAll(async () => {
  core = await startTestCore();
});
afterAll(async () => {
  await core?.close();
});

const pairQuery = (v: { word: string; count: number; tags: string[] }) =>
  core.deps.db.selectNoFrom([sql<string>`${v.word}::text`.as('word'), sql<number>`${v.count}::int`.as('count'), sql<string[]>`${v.tags}::text[]`.as('tags'), sql<number>`${7}::int`.as('constant')]);

it('gives the text kysely compiles and each call its own values, building only once per shape', async () => {
  let builds = 0;
  const run = async (values: { word: string; count: number; tags: string[] }) => {
    const compiled = compiledFromTemplate(core.deps.db, 'test:pair', values, (slots) => {
      builds++;
      return pairQuery(slots);
    });
    const fresh = pairQuery(values).compile();
    expect(compiled.sql).toBe(fresh.sql);
    expect(compiled.parameters).toEqual(fresh.parameters);
    return (await core.deps.db.executeQuery<{ word: string; count: number; tags: string[]; constant: number }>(compiled)).rows[0];
  };
  expect(await run({ word: 'first', count: 1, tags: ['a'] })).toEqual({ word: 'first', count: 1, tags: ['a'], constant: 7 });
  expect(await run({ word: "it's second", count: 2, tags: ['b', 'c'] })).toEqual({ word: "it's second", count: 2, tags: ['b', 'c'], constant: 7 });
  expect(builds).toBe(1);
});

it('a db with plugins (kysely applies them while compiling) compiles every call, so the plugins see each statement', () => {
  const { db, statements } = countingStatements(core.deps.db);
  for (const word of ['one', 'two']) compiledFromTemplate(db, 'test:plugins', { word }, (v) => db.selectNoFrom(sql<string>`${v.word}::text`.as('word')));
  expect(statements).toEqual(['SelectQueryNode', 'SelectQueryNode']);
});

it('the SSH door’s identity and mint, templated, keep each account’s own: two accounts alternating', async () => {
  const users = [await core.verifiedUser(), await core.verifiedUser()];
  for (const round of [1, 2]) {
    for (const user of users) {
      const identity = await resolveSshIdentity(core.deps, user.publicKey);
      expect(identity.kind === 'account' && identity.user.email).toBe(user.email);
      const created = await runSshLine(core.deps, identity, `create --label round-${round} --json`);
      expect(created.code).toBe(0);
      const key = JSON.parse(created.stdout) as { api_key_id: string };
      const row = await core.deps.db
        .selectFrom('api_keys')
        .innerJoin('users', 'users.id', 'api_keys.created_by_user_id')
        .innerJoin('audit_events', (join) => join.onRef(sql`audit_events.subject_id`, '=', sql`api_keys.id::text`))
        .select(['users.email', 'api_keys.label', 'audit_events.action'])
        .where('api_keys.id', '=', key.api_key_id)
        .executeTakeFirstOrThrow();
      expect(row).toEqual({ email: user.email, label: `round-${round}`, action: 'api_key.created' });
    }
  }
});

// The identity cache's write watcher (core/ssh-identity-cache.ts) is a watch-only plugin: it does
// not see a template's statements, so on a db with it a statement it watches is compiled every call.

/** A write to an identity table (`users`) that matches no row: what the watcher watches. */
const touchNobody = (db: TestCore['deps']['db']) => (v: { id: string; email: string }) => db.updateTable('users').set({ email: v.email }).where('id', '=', v.id);

it('a statement the identity watcher watches is compiled on every call, so the watcher sees each; others stay templates', async () => {
  let changed = 0;
  const db = core.deps.db.withPlugin(watchIdentityWrites(() => changed++));
  let builds = 0;
  const countedTouch = (v: { id: string; email: string }) => {
    builds++;
    return touchNobody(db)(v);
  };
  for (const round of [1, 2, 3]) {
    const before = changed;
    const compiled = compiledFromTemplate(db, 'test:watched-write', { id: randomUUID(), email: `nobody-${round}@example.com` }, countedTouch);
    await db.executeQuery(compiled);
    // Once when compiled, once when it has run: the cache holds off for each such write.
    expect(changed - before).toBeGreaterThanOrEqual(2);
  }
  expect(builds).toBeGreaterThanOrEqual(3);

  builds = 0;
  const readOnly = (v: { word: string }) => {
    builds++;
    return db.selectNoFrom(sql<string>`${v.word}::text`.as('word'));
  };
  const before = changed;
  for (const word of ['one', 'two', 'three']) await db.executeQuery(compiledFromTemplate(db, 'test:watched-read', { word }, readOnly));
  expect(builds).toBe(1);
  expect(changed).toBe(before);
});

it('a template made on a db without the watcher is still compiled on every call once it runs on a db with one', async () => {
  const plain = compiledFromTemplate(core.deps.db, 'test:watched-later', { id: randomUUID(), email: 'nobody@example.com' }, touchNobody(core.deps.db));
  await core.deps.db.executeQuery(plain);
  let changed = 0;
  const watchedDb = core.deps.db.withPlugin(watchIdentityWrites(() => changed++));
  for (const round of [1, 2]) {
    const before = changed;
    await watchedDb.executeQuery(compiledFromTemplate(watchedDb, 'test:watched-later', { id: randomUUID(), email: `nobody-${round}@example.com` }, touchNobody(watchedDb)));
    expect(changed - before).toBeGreaterThanOrEqual(2);
  }
});

it('an SSH create writes nothing the identity watcher watches: its statements stay templates, and it does not empty the cache', async () => {
  let changed = 0;
  const deps = { ...core.deps, db: core.deps.db.withPlugin(watchIdentityWrites(() => changed++)) };
  const user = await core.verifiedUser();
  const identity = await resolveSshIdentity(deps, user.publicKey);
  expect(identity.kind).toBe('account');
  const created = await runSshLine(deps, identity, 'create --label watched --json');
  expect(created.code).toBe(0);
  expect(changed).toBe(0);
});
