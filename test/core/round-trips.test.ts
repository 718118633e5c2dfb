import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveSshIdentity } from '../../src/core/index.js';
import { startTestCore, type TestCore } from '../support/core.js';
import { openDatabase } from '../../src/db/database.js';
import { countingStatements, usingPostgres } from '../support/database.js';
import { runSshLine } from '../support/in-process.js';

// Statements per SSH `create`, counted with a kysely plugin (BEGIN/COMMIT are not statements it
// sees): a change that adds a round trip to the hot path fails here, not in production.

let core: TestCore;
beforeAll(async () => {
  core = await startTestCore();
});
afterAll(async () => {
  await core?.close();
});

it('an SSH create: who the key is with its orgs and their billing state (one query), then the key with its audit row in one statement (no transaction): 2 statements', async () => {
  const user = await core.verifiedUser();
  const { db, statements } = countingStatements(core.deps.db);
  const deps = { ...core.deps, db };
  const identity = await resolveSshIdentity(deps, user.publicKey);
  const created = await runSshLine(deps, identity, 'create --label counted-key');
  expect(created.code).toBe(0);
  expect(statements).toEqual(['SelectQueryNode', 'InsertQueryNode']);
});

describe.runIf(usingPostgres)('the one-statement mint is atomic', () => {
  it('a backend killed after the key row is written, before its audit row is, leaves neither', async () => {
    const user = await core.verifiedUser();
    const identity = await resolveSshIdentity(core.deps, user.publicKey);
    // Holds the statement inside its audit insert: by then the CTE has written the api_keys row.
    await sql`create function hold_mint() returns trigger language plpgsql as $$
      begin
        if new.details->>'label' = 'killed-mid-mint' then perform pg_sleep(30); end if;
        return new;
      end $$`.execute(core.deps.db);
    await sql`create trigger hold_mint before insert on audit_events for each row execute function hold_mint()`.execute(core.deps.db);
    try {
      const minting = runSshLine(core.deps, identity, 'create --label killed-mid-mint');
      let killed = false;
      for (let i = 0; i < 200 && !killed; i++) {
        const { rows } = await sql<{ done: boolean }>`select pg_terminate_backend(pid) as done from pg_stat_activity
          where datname = current_database() and wait_event = 'PgSleep' and query like '%api_keys%'`.execute(core.deps.db);
        killed = rows.some((r) => r.done);
        if (!killed) await new Promise((resolve) => setTimeout(resolve, 25));
      }
      expect(killed).toBe(true);
      expect(await minting).toEqual({ code: 1, stdout: '', stderr: 'error: the service is unavailable for a moment: try again shortly\n' });
      const keys = await core.deps.db.selectFrom('api_keys').select('id').where('label', '=', 'killed-mid-mint').execute();
      const audits = await sql`select 1 from audit_events where details->>'label' = 'killed-mid-mint'`.execute(core.deps.db);
      expect({ keys: keys.length, audits: audits.rows.length }).toEqual({ keys: 0, audits: 0 });
      // The same statement with nothing in its way writes both.
      const again = await runSshLine(core.deps, identity, 'create --label survived-mint');
      expect(again.code).toBe(0);
      expect(await core.deps.db.selectFrom('api_keys').select('id').where('label', '=', 'survived-mint').execute()).toHaveLength(1);
    } finally {
      await sql`drop trigger hold_mint on audit_events`.execute(core.deps.db);
      await sql`drop function hold_mint()`.execute(core.deps.db);
    }
  });
});

describe.runIf(usingPostgres)('prepared statements', () => {
  it('a table changed under them (a migration run by another instance) does not fail requests', async () => {
    const database = await openDatabase({ kind: 'postgres', url: (core.database.target as { url: string }).url });
    try {
      // A statement the service runs, prepared on many of the pool's connections at once.
      const lookups = () => Promise.all(Array.from({ length: 30 }, () => database.db.selectFrom('orgs').selectAll().where('name', '=', 'no-such-org').execute()));
      await lookups();
      await sql`alter table orgs add column added_by_a_migration text`.execute(core.deps.db);
      try {
        const after = await lookups(); // each connection's prepared plan is stale now
        expect(after.every((rows) => rows.length === 0)).toBe(true);
        expect((await lookups()).length).toBe(30);
      } finally {
        await sql`alter table orgs drop column added_by_a_migration`.execute(core.deps.db);
      }
    } finally {
      await database.close();
    }
  });
});
