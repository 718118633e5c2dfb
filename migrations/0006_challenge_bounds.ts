import type { Kysely } from 'kysely';

// Written against `Kysely<any>`: migrations must keep compiling after the table types move on.

/**
 * Challenges are bounded per key (a new one replaces the oldest beyond a few, see
 * src/core/proof.ts): that needs the key's challenges found by an index, in the order they were
 * issued. created_at cannot give that order: it can tie, and it follows the issuing instance's clock.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('ssh_challenges').addColumn('issued_seq', 'bigint', (c) => c.generatedAlwaysAsIdentity()).execute();
  await db.schema.createIndex('ssh_challenges_key_idx').on('ssh_challenges').columns(['key_blob', 'issued_seq']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('ssh_challenges_key_idx').execute();
  await db.schema.alterTable('ssh_challenges').dropColumn('issued_seq').execute();
}
