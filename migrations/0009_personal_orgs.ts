import { sql, type Kysely } from 'kysely';

// Written against `Kysely<any>`: migrations must keep compiling after the table types move on.

/**
 * Each account's personal org (made at its first confirmation) is marked, so that it is the
 * default for minting (issue 17): the oldest membership is not it when an operator added the
 * account to another org before its first login. Orgs made before this migration are found by
 * their `org.provisioned` audit row, written in the same transaction as the org itself.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('orgs')
    .addColumn('personal_user_id', 'uuid', (c) => c.references('users.id').onDelete('set null'))
    .execute();
  await db.schema.createIndex('orgs_personal_user_idx').unique().on('orgs').column('personal_user_id').where(sql.ref('personal_user_id'), 'is not', null).execute();
  await sql`
    UPDATE orgs SET personal_user_id = provisioned.actor_user_id
    FROM (
      SELECT DISTINCT ON (actor_user_id) actor_user_id, subject_id FROM audit_events
      WHERE action = 'org.provisioned' AND actor_user_id IS NOT NULL
      ORDER BY actor_user_id, created_at
    ) AS provisioned
    WHERE orgs.id::text = provisioned.subject_id
      AND EXISTS (SELECT 1 FROM users WHERE users.id = provisioned.actor_user_id)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('orgs_personal_user_idx').execute();
  await db.schema.alterTable('orgs').dropColumn('personal_user_id').execute();
}
