import { sql, type Kysely } from 'kysely';

// Written against `Kysely<any>`: migrations must keep compiling after the table types move on.

/**
 * Key lifecycle (issue 19): rotation links a key to the one that replaced it (a key is rotated at
 * most once, so a leaked key cannot fork a chain of fresh ones), a revocation says why, expiry
 * notices are remembered per key and threshold (sent exactly once across instances), and the mail
 * outbox carries notices as well as verification links.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('api_keys')
    .addColumn('rotated_from_id', 'uuid', (c) => c.references('api_keys.id').onDelete('set null'))
    .addColumn('replaced_by_id', 'uuid', (c) => c.references('api_keys.id').onDelete('set null'))
    .addColumn('revoked_reason', 'text')
    .execute();
  // One successor per key, enforced by the database even if two rotations race.
  await db.schema.createIndex('api_keys_rotated_from_idx').unique().on('api_keys').column('rotated_from_id').where(sql.ref('rotated_from_id'), 'is not', null).execute();
  // The expiry-notice scan: live keys with an expiry, by expiry.
  await db.schema
    .createIndex('api_keys_expiring_idx')
    .on('api_keys')
    .column('expires_at')
    .where(sql.ref('revoked_at'), 'is', null)
    .where(sql.ref('expires_at'), 'is not', null)
    .execute();
  await db.schema.createIndex('api_keys_creator_idx').on('api_keys').columns(['created_by_user_id', 'created_at']).execute();

  await db.schema
    .createTable('key_expiry_notices')
    .addColumn('api_key_id', 'uuid', (c) => c.notNull().references('api_keys.id').onDelete('cascade'))
    // The threshold (time before expiry) this notice is for, in seconds: 604800 for 7d.
    .addColumn('threshold_seconds', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('key_expiry_notices_pkey', ['api_key_id', 'threshold_seconds'])
    .execute();

  // Notices (expiry, revocation) go through the same outbox as verification mail: `kind` says
  // which, a notice carries what it says in `notice` and has no request.
  await db.schema.alterTable('mail_outbox').alterColumn('request_id', (c) => c.dropNotNull()).execute();
  await db.schema
    .alterTable('mail_outbox')
    .addColumn('kind', 'text', (c) => c.notNull().defaultTo('verification'))
    .addColumn('notice', 'jsonb')
    .execute();
  await sql`ALTER TABLE mail_outbox ADD CONSTRAINT mail_outbox_kind_check CHECK (
    (kind = 'verification' AND request_id IS NOT NULL) OR (kind = 'notice' AND notice IS NOT NULL))`.execute(db);

  // The audit viewer: a member's own events, and every org's newest (operators).
  await db.schema.createIndex('audit_events_actor_idx').on('audit_events').columns(['actor_user_id', 'created_at']).execute();
  await db.schema.createIndex('audit_events_created_idx').on('audit_events').column('created_at').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('audit_events_created_idx').execute();
  await db.schema.dropIndex('audit_events_actor_idx').execute();
  await sql`DELETE FROM mail_outbox WHERE kind <> 'verification'`.execute(db);
  await sql`ALTER TABLE mail_outbox DROP CONSTRAINT mail_outbox_kind_check`.execute(db);
  await db.schema.alterTable('mail_outbox').dropColumn('notice').dropColumn('kind').execute();
  await db.schema.alterTable('mail_outbox').alterColumn('request_id', (c) => c.setNotNull()).execute();
  await db.schema.dropTable('key_expiry_notices').execute();
  await db.schema.dropIndex('api_keys_creator_idx').execute();
  await db.schema.dropIndex('api_keys_expiring_idx').execute();
  await db.schema.dropIndex('api_keys_rotated_from_idx').execute();
  await db.schema.alterTable('api_keys').dropColumn('revoked_reason').dropColumn('replaced_by_id').dropColumn('rotated_from_id').execute();
}
