import { sql, type Kysely } from 'kysely';

// Written against `Kysely<any>`: migrations must keep compiling after the table types move on.

/**
 * Each instance keeps the SSH door's identity rows (a key's account, its orgs, their policy and
 * billing state) in memory for a short while (core/ssh-identity-cache.ts). These triggers announce
 * every change to what such a row is made of, on commit, from any writer (another instance, the
 * admin CLI, psql): `pg_notify` on the channel the API key cache already listens on, with the
 * payload 'ssh-identity' (never an API key's id, which is a UUID). Statement-level, so a change
 * of many rows is one notification, and Postgres folds repeats within one transaction into one.
 * Columns that change on every login (ssh_keys.last_seen_at, the HTTP window's use) are left out:
 * the SSH identity does not depend on them.
 */
const CHANNEL = 'shell_auth_api_key_revocations';
const PAYLOAD = 'ssh-identity';

const WATCHED: Array<{ table: string; events: string }> = [
  { table: 'ssh_keys', events: 'UPDATE OF id, user_id, key_blob, proven_at OR DELETE OR TRUNCATE' },
  { table: 'users', events: 'UPDATE OF id, email, base_user_id, is_active, verified_at, created_at OR DELETE OR TRUNCATE' },
  { table: 'memberships', events: 'INSERT OR UPDATE OR DELETE OR TRUNCATE' },
  { table: 'orgs', events: 'INSERT OR UPDATE OR DELETE OR TRUNCATE' },
  { table: 'subscriptions', events: 'INSERT OR UPDATE OR DELETE OR TRUNCATE' },
];

export async function up(db: Kysely<any>): Promise<void> {
  await sql
    .raw(
      `CREATE FUNCTION shell_auth_ssh_identity_changed() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         PERFORM pg_notify('${CHANNEL}', '${PAYLOAD}');
         RETURN NULL;
       END $$`,
    )
    .execute(db);
  for (const { table, events } of WATCHED) {
    await sql
      .raw(`CREATE TRIGGER ssh_identity_changed AFTER ${events} ON ${table} FOR EACH STATEMENT EXECUTE FUNCTION shell_auth_ssh_identity_changed()`)
      .execute(db);
  }
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const { table } of WATCHED) await sql.raw(`DROP TRIGGER ssh_identity_changed ON ${table}`).execute(db);
  await sql`DROP FUNCTION shell_auth_ssh_identity_changed()`.execute(db);
}
