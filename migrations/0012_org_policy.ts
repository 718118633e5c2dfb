import { sql, type Kysely } from 'kysely';

// Written against `Kysely<any>`: migrations must keep compiling after the table types move on.

/**
 * Each org's key policy (issue 20), on the org's own row: the SSH identity's one query already
 * reads `orgs` with the memberships, so a mint learns its org's policy with no extra round trip.
 * Every default is the behaviour before this migration. `policy_version` grows with each change:
 * a mint writes its key only while the version it judged is still the org's (api-keys.ts).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('orgs')
    // NULL: no limit of the org's own (KEY_MAX_TTL still applies).
    .addColumn('policy_max_ttl_seconds', 'integer', (c) => c.check(sql`policy_max_ttl_seconds >= 300`))
    // NULL: every permission of the platform.
    .addColumn('policy_permissions', sql`text[]`, (c) => c.check(sql`cardinality(policy_permissions) > 0`))
    .addColumn('policy_require_security_key', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('policy_http_minting', 'text', (c) => c.notNull().defaultTo('window').check(sql`policy_http_minting IN ('window', 'signed', 'off')`))
    .addColumn('policy_members_mint', 'boolean', (c) => c.notNull().defaultTo(true))
    .addColumn('policy_version', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const column of ['policy_max_ttl_seconds', 'policy_permissions', 'policy_require_security_key', 'policy_http_minting', 'policy_members_mint', 'policy_version']) {
    await db.schema.alterTable('orgs').dropColumn(column).execute();
  }
}
