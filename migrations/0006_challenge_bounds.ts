import { sql, type Kysely } from 'kysely';

// Written against `Kysely<any>`: migrations must keep compiling after the table types move on.

/**
 * Challenges are bounded per key and requester (a new one replaces the oldest of the same key
 * asked from the same address group beyond a few, see src/core/proof.ts): that needs a key's
 * challenges from one group found by an index, in the order they were issued. created_at cannot
 * give that order: it can tie, and it follows the issuing instance's clock. `requested_net` is the
 * requester's address group (addressGroupOf: an IPv6 address as its /IPV6_PREFIX network), written
 * at issue; NULL on rows from before this migration, which are gone within minutes anyway.
 *
 * Adding an identity column rewrites the table under an exclusive lock, and this fixes a table
 * that could grow to tens of millions of rows kept a day past their expiry: the rows the bound
 * would delete anyway (expired more than five minutes ago, CHALLENGE_KEEP_MS) go first.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`DELETE FROM ssh_challenges WHERE expires_at < now() - interval '5 minutes'`.execute(db);
  await db.schema
    .alterTable('ssh_challenges')
    .addColumn('issued_seq', 'bigint', (c) => c.generatedAlwaysAsIdentity())
    .addColumn('requested_net', 'text')
    .execute();
  await db.schema.createIndex('ssh_challenges_key_idx').on('ssh_challenges').columns(['key_blob', 'requested_net', 'issued_seq']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('ssh_challenges_key_idx').execute();
  await db.schema.alterTable('ssh_challenges').dropColumn('requested_net').dropColumn('issued_seq').execute();
}
