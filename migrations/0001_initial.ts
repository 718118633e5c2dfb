import { sql, type Kysely } from 'kysely';

// Migrations are written against `Kysely<any>` on purpose: they must keep compiling after the
// application's table types move on.

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('users')
    .addColumn('id', 'uuid', (c) => c.primaryKey())
    .addColumn('email', 'text', (c) => c.notNull().unique())
    // Alias accounts (alice+tag@x) point at their base account and share its organizations.
    .addColumn('base_user_id', 'uuid', (c) => c.references('users.id'))
    .addColumn('is_active', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('verified_at', 'timestamptz')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable('orgs')
    .addColumn('id', 'uuid', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull().unique())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable('memberships')
    .addColumn('org_id', 'uuid', (c) => c.notNull().references('orgs.id').onDelete('cascade'))
    .addColumn('user_id', 'uuid', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('role', 'text', (c) => c.notNull().check(sql`role IN ('owner', 'admin', 'member')`))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('memberships_pkey', ['org_id', 'user_id'])
    .execute();
  await db.schema.createIndex('memberships_user_idx').on('memberships').columns(['user_id', 'created_at']).execute();

  await db.schema
    .createTable('subscriptions')
    .addColumn('org_id', 'uuid', (c) => c.primaryKey().references('orgs.id').onDelete('cascade'))
    .addColumn('plan', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull().check(sql`status IN ('active', 'suspended')`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable('ssh_keys')
    .addColumn('id', 'uuid', (c) => c.primaryKey())
    .addColumn('user_id', 'uuid', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('key_type', 'text', (c) => c.notNull())
    // base64 of the wire-format blob; it embeds the type, so it alone identifies the key.
    .addColumn('key_blob', 'text', (c) => c.notNull().unique())
    .addColumn('fingerprint', 'text', (c) => c.notNull())
    .addColumn('comment', 'text', (c) => c.notNull().defaultTo(''))
    // First email confirmation: the key is durably verified for the SSH door from then on.
    .addColumn('verified_at', 'timestamptz', (c) => c.notNull())
    // Latest email confirmation: opens the HTTP trust window.
    .addColumn('confirmed_at', 'timestamptz', (c) => c.notNull())
    // Set when a confirmation came through the SSH door, which proves possession of the private
    // key. A binding made only over HTTP (where anyone can submit a public key) can be taken over
    // by the key's real holder proving possession.
    .addColumn('proven_at', 'timestamptz')
    .addColumn('last_seen_at', 'timestamptz')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex('ssh_keys_user_idx').on('ssh_keys').column('user_id').execute();

  await db.schema
    .createTable('verification_requests')
    .addColumn('id', 'uuid', (c) => c.primaryKey())
    .addColumn('user_id', 'uuid', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('email', 'text', (c) => c.notNull())
    // The inbox the mail really goes to: alice+x@ and alice+y@ both count against alice@.
    .addColumn('mailbox', 'text', (c) => c.notNull())
    // The key is bound to the account only when the link is confirmed, so an unconfirmed
    // request cannot squat somebody else's public key.
    .addColumn('key_type', 'text', (c) => c.notNull())
    .addColumn('key_blob', 'text', (c) => c.notNull())
    .addColumn('fingerprint', 'text', (c) => c.notNull())
    .addColumn('comment', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('token_hash', 'text', (c) => c.notNull().unique())
    .addColumn('note', 'text')
    .addColumn('requested_ip', 'text')
    .addColumn('channel', 'text', (c) => c.notNull().check(sql`channel IN ('http', 'ssh')`))
    .addColumn('key_proven', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addColumn('consumed_at', 'timestamptz')
    .execute();
  await db.schema
    .createIndex('verification_requests_mailbox_idx')
    .on('verification_requests')
    .columns(['mailbox', 'created_at'])
    .execute();
  await db.schema
    .createIndex('verification_requests_ip_idx')
    .on('verification_requests')
    .columns(['requested_ip', 'created_at'])
    .execute();
  await db.schema.createIndex('verification_requests_user_idx').on('verification_requests').column('user_id').execute();

  await db.schema
    .createTable('api_keys')
    .addColumn('id', 'uuid', (c) => c.primaryKey())
    .addColumn('org_id', 'uuid', (c) => c.notNull().references('orgs.id').onDelete('cascade'))
    .addColumn('created_by_user_id', 'uuid', (c) => c.notNull().references('users.id'))
    .addColumn('ssh_key_id', 'uuid', (c) => c.references('ssh_keys.id').onDelete('set null'))
    .addColumn('label', 'text', (c) => c.notNull())
    // SHA-256 (hex) of the whole key; the key itself is never stored.
    .addColumn('secret_hash', 'text', (c) => c.notNull())
    .addColumn('permissions', sql`text[]`, (c) => c.notNull())
    .addColumn('created_via', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('expires_at', 'timestamptz')
    .addColumn('last_used_at', 'timestamptz')
    .addColumn('revoked_at', 'timestamptz')
    .addColumn('revoked_by_user_id', 'uuid', (c) => c.references('users.id'))
    .execute();
  await db.schema.createIndex('api_keys_org_idx').on('api_keys').columns(['org_id', 'created_at']).execute();

  await db.schema
    .createTable('audit_events')
    .addColumn('id', 'uuid', (c) => c.primaryKey())
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('actor_user_id', 'uuid')
    .addColumn('org_id', 'uuid')
    .addColumn('subject_id', 'text')
    .addColumn('channel', 'text', (c) => c.notNull())
    .addColumn('ip', 'text')
    .addColumn('details', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex('audit_events_org_idx').on('audit_events').columns(['org_id', 'created_at']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const table of [
    'audit_events',
    'api_keys',
    'verification_requests',
    'ssh_keys',
    'subscriptions',
    'memberships',
    'orgs',
    'users',
  ]) {
    await db.schema.dropTable(table).ifExists().execute();
  }
}
