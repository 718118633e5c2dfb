import { sql, type Kysely } from 'kysely';

// Written against `Kysely<any>`: migrations must keep compiling after the table types move on.

export async function up(db: Kysely<any>): Promise<void> {
  // Challenges an HTTP client signs with `ssh-keygen -Y sign` to prove it holds a key. Stored only
  // as a hash, bound to the key, single use (used_at), two minutes long.
  await db.schema
    .createTable('ssh_challenges')
    .addColumn('challenge_hash', 'text', (c) => c.primaryKey())
    .addColumn('key_blob', 'text', (c) => c.notNull())
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addColumn('used_at', 'timestamptz')
    .addColumn('requested_ip', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex('ssh_challenges_expires_idx').on('ssh_challenges').column('expires_at').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('ssh_challenges').execute();
}
