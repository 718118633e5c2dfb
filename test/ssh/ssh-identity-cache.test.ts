import { DummyDriver, Kysely, PostgresAdapter, PostgresIntrospector, PostgresQueryCompiler, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSshIdentityCache, SSH_IDENTITY_CHANGED, writesIdentityTable, type RevocationSignals } from '../../src/core/index.js';
import type { Database } from '../../src/db/schema.js';
import { sshLinkedUser } from '../support/accounts.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { countingStatements, usingPostgres } from '../support/database.js';
import { openssh } from '../support/ssh.js';

// The SSH door's identity cache (src/core/ssh-identity-cache.ts, migration 0013): a second login
// with a key asks the database nothing about it, and any change to what the identity is made of,
// by this instance or by any other writer, is seen by the next login.

/** Compiles without a database: the write watcher judges kysely's operation trees. */
const offline = new Kysely<Database>({
  dialect: {
    createAdapter: () => new PostgresAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (db) => new PostgresIntrospector(db),
    createQueryCompiler: () => new PostgresQueryCompiler(),
  },
});

describe('which statements empty the cache', () => {
  it('writes to the five identity tables, also inside a CTE or as raw SQL; not reads, nor writes elsewhere', () => {
    const id = '00000000-0000-0000-0000-000000000000';
    const writes = [
      offline.updateTable('users').set({ email: 'a@b.c' }).where('id', '=', id),
      offline.deleteFrom('ssh_keys').where('id', '=', id),
      offline.updateTable('ssh_keys').set({ proven_at: new Date(), last_seen_at: new Date() }).where('id', '=', id),
      offline.insertInto('memberships').values({ org_id: id, user_id: id, role: 'member' }),
      offline.updateTable('orgs as o').set({ name: 'x' }).where('o.id', '=', id),
      offline.deleteFrom('subscriptions').where('org_id', '=', id),
      offline.with('gone', (q) => q.deleteFrom('memberships').where('user_id', '=', id).returning('org_id')).selectFrom('gone').selectAll(),
      offline.with('gone', (q) => q.deleteFrom('memberships').where('user_id', '=', id).returning('org_id')).updateTable('api_keys').set({ label: 'x' }),
    ];
    for (const query of writes) expect(writesIdentityTable(query.toOperationNode()), query.compile().sql).toBe(true);
    const others = [
      offline.selectFrom('users').selectAll().where('id', '=', id),
      offline.selectFrom('memberships').select('user_id').forUpdate(),
      offline.updateTable('api_keys').set({ label: 'x' }).where('id', '=', id),
      // What changes at every login or HTTP mint: not what an SSH identity is made of.
      offline.updateTable('ssh_keys').set({ last_seen_at: new Date() }).where('key_blob', '=', 'x'),
      offline.updateTable('ssh_keys').set({ http_mints: 1 }).where('id', '=', id),
      offline
        .with('member', (q) => q.selectFrom('memberships').select('user_id').forShare())
        .insertInto('api_keys')
        .columns(['label'])
        .expression((eb) => eb.selectFrom('member').select(sql<string>`'x'`.as('label'))),
      offline.insertInto('audit_events').values({ action: 'x', details: '{}' } as never),
    ];
    for (const query of others) expect(writesIdentityTable(query.toOperationNode()), query.compile().sql).toBe(false);
    expect(writesIdentityTable(sql`UPDATE users SET is_active = false`.toOperationNode() as never)).toBe(true);
    expect(writesIdentityTable(sql`truncate table "memberships" cascade`.toOperationNode() as never)).toBe(true);
    expect(writesIdentityTable(sql`update api_keys set label = 'users'`.toOperationNode() as never)).toBe(false);
    expect(writesIdentityTable(sql`UPDATE ONLY public.users SET is_active = false`.toOperationNode() as never)).toBe(true);
    expect(writesIdentityTable(sql`update "users" as u set "email" = ${'x'} where u.id = ${id}`.toOperationNode() as never)).toBe(true);
    // The security-key counter's write, at every security-key login (linked or not): not an identity change.
    const counter = sql`WITH before AS (SELECT id, sk_counter FROM ssh_keys WHERE key_blob = ${'b'} FOR UPDATE)
      UPDATE ssh_keys SET sk_counter = GREATEST(COALESCE(before.sk_counter, 0), ${1})
      FROM before WHERE ssh_keys.id = before.id RETURNING ssh_keys.id`;
    expect(writesIdentityTable(counter.toOperationNode() as never)).toBe(false);
    expect(writesIdentityTable(sql`UPDATE ssh_keys SET sk_counter = 1, proven_at = now()`.toOperationNode() as never)).toBe(true);
  });

  it("empties on the identity payload and on a reconnect; an API key's id on the same channel leaves it", () => {
    const listeners = new Set<{ message(payload: string): void; recheck(): void }>();
    const signals: RevocationSignals = {
      listening: () => true,
      subscribe(listener) {
        listeners.add(listener);
        return () => void listeners.delete(listener);
      },
    };
    const cache = createSshIdentityCache<string>(signals, { ttlMs: 60_000, maxEntries: 10 });
    const fill = () => cache.put(cache.ticket(), 'blob', 'row');
    fill();
    listeners.forEach((l) => l.message('3f1e0c1a-7d2b-4a57-9a55-2f0a3b1c9d11'));
    expect(cache.get('blob')).toBe('row');
    listeners.forEach((l) => l.message(SSH_IDENTITY_CHANGED));
    expect(cache.get('blob')).toBeUndefined();
    fill();
    listeners.forEach((l) => l.recheck());
    expect(cache.get('blob')).toBeUndefined();
    const before = cache.ticket(); // a lookup starts, then this instance writes
    cache.clear();
    cache.put(before, 'blob', 'stale');
    expect(cache.get('blob')).toBeUndefined();
  });

  it("after this process's own write it stores nothing until that write's notification arrives (its commit), or 10 s", () => {
    const listeners = new Set<{ message(payload: string): void; recheck(): void }>();
    const signals: RevocationSignals = { listening: () => true, subscribe: (l) => (listeners.add(l), () => void listeners.delete(l)) };
    let clock = 0;
    const cache = createSshIdentityCache<string>(signals, { ttlMs: 60_000, maxEntries: 10, now: () => clock });
    cache.put(cache.ticket(), 'blob', 'row');
    cache.changedHere();
    expect(cache.get('blob')).toBeUndefined();
    // A login while the writing transaction is open reads the old (still committed) row: not kept.
    cache.put(cache.ticket(), 'blob', 'old row');
    expect(cache.get('blob')).toBeUndefined();
    listeners.forEach((l) => l.message(SSH_IDENTITY_CHANGED)); // committed
    cache.put(cache.ticket(), 'blob', 'new row');
    expect(cache.get('blob')).toBe('new row');
    // A write whose transaction rolled back sends nothing: the hold ends on its own.
    cache.changedHere();
    clock = 9_999;
    cache.put(cache.ticket(), 'blob', 'row');
    expect(cache.get('blob')).toBeUndefined();
    clock = 10_000;
    cache.put(cache.ticket(), 'blob', 'row');
    expect(cache.get('blob')).toBe('row');
  });
});

describe('the real service', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
    await until(() => t.app.deps.sshIdentityCache !== undefined && t.app.deps.confirmations?.listening() === true);
  });
  afterAll(async () => {
    await t?.close();
  });

  /** Counts the app's statements that read or write ssh_keys from here on. */
  const countKeyStatements = () => {
    const counted = countingStatements(t.app.deps.db, { table: 'ssh_keys' });
    t.app.deps.db = counted.db;
    return counted;
  };
  const whoami = async (keyPath: string) => {
    const result = await openssh(t.app.sshPort, keyPath, ['whoami', '--json']);
    expect(result.code, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as { email: string | null; verified: boolean };
  };

  it('a second login with a key asks the database nothing about it; last_seen_at and minting do not empty the cache', async () => {
    const user = await sshLinkedUser(t, 'cached');
    const original = t.app.deps.db;
    const counted = countKeyStatements();
    try {
      const first = await openssh(t.app.sshPort, user.key.privateKeyPath, ['create', '--label', 'first-key']);
      expect(first.code, first.stderr).toBe(0);
      // Cached by the login before it (sshLinkedUser's `login` proved the key), or looked up now: at most one read.
      expect(counted.statements.filter((kind) => kind === 'SelectQueryNode').length).toBeLessThanOrEqual(1);
      counted.statements.length = 0;
      const second = await openssh(t.app.sshPort, user.key.privateKeyPath, ['create', '--label', 'second-key']);
      expect(second.code, second.stderr).toBe(0);
      expect(counted.statements.filter((kind) => kind === 'SelectQueryNode')).toEqual([]);
      expect(t.app.deps.sshIdentityCache!.size()).toBeGreaterThan(0);
    } finally {
      t.app.deps.db = original;
    }
  });

  it("this instance's own change is seen by the very next login (no wait for the notification)", async () => {
    const user = await sshLinkedUser(t, 'renamed');
    expect((await whoami(user.key.privateKeyPath)).email).toBe(user.email);
    const renamed = `new-${user.email}`;
    const cache = t.app.deps.sshIdentityCache!;
    expect(cache.size()).toBeGreaterThan(0);
    await t.app.deps.db.transaction().execute(async (trx) => {
      await trx.updateTable('users').set({ email: renamed }).where('email', '=', user.email).execute();
      // Before the commit, so before any notification can exist: the write itself emptied it.
      expect(cache.size()).toBe(0);
      // A login meanwhile sees the committed (old) row and does not keep it. (PGlite has one
      // connection, which this transaction holds: a login would wait for it.)
      if (usingPostgres) {
        expect((await whoami(user.key.privateKeyPath)).email).toBe(user.email);
        expect(cache.size()).toBe(0);
      }
    });
    expect((await whoami(user.key.privateKeyPath)).email).toBe(renamed);
  });

  it('a change by another writer (not through the service) reaches the cache by NOTIFY: an unlinked key is unknown at the next login', async () => {
    const user = await sshLinkedUser(t, 'unlinked');
    expect(await whoami(user.key.privateKeyPath)).toMatchObject({ email: user.email, verified: true });
    const cache = t.app.deps.sshIdentityCache!;
    expect(cache.size()).toBeGreaterThan(0);
    const userId = (await t.app.database.db.selectFrom('users').select('id').where('email', '=', user.email).executeTakeFirstOrThrow()).id;
    // Another writer: a connection of its own on Postgres (as psql or another instance would be);
    // on PGlite, which has one connection, its handle without the service's write watcher.
    if (usingPostgres) {
      const other = new pg.Client({ connectionString: (t.app.database.target as { url: string }).url });
      await other.connect();
      try {
        await other.query('DELETE FROM ssh_keys WHERE user_id = $1', [userId]);
      } finally {
        await other.end();
      }
    } else {
      await t.app.database.db.deleteFrom('ssh_keys').where('user_id', '=', userId).execute();
    }
    const changedAt = performance.now();
    await until(() => cache.size() === 0);
    expect(performance.now() - changedAt).toBeLessThan(1000);
    expect(await whoami(user.key.privateKeyPath)).toMatchObject({ email: null, verified: false });
  });

  it('SSH_IDENTITY_CACHE_TTL=0: no cache, every login asks the database', async () => {
    const off = await startTestApp({ SSH_IDENTITY_CACHE_TTL: '0' });
    try {
      expect(off.app.deps.sshIdentityCache).toBeUndefined();
      const user = await sshLinkedUser(off, 'uncached');
      const counted = countingStatements(off.app.deps.db, { table: 'ssh_keys' });
      off.app.deps.db = counted.db;
      for (const label of ['first-key', 'second-key']) {
        counted.statements.length = 0;
        const made = await openssh(off.app.sshPort, user.key.privateKeyPath, ['create', '--label', label]);
        expect(made.code, made.stderr).toBe(0);
        expect(counted.statements.filter((kind) => kind === 'SelectQueryNode').length).toBe(1);
      }
    } finally {
      await off.close();
    }
  });
});

async function until(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
