import type { Kysely } from 'kysely';

// Written against `Kysely<any>`: migrations must keep compiling after the table types move on.

/**
 * Security keys (FIDO): the application a key was made for (normally "ssh:"; also inside the
 * key blob, kept readable here) and the highest signature counter seen, for the clone check.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('ssh_keys').addColumn('sk_application', 'text').addColumn('sk_counter', 'bigint').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('ssh_keys').dropColumn('sk_counter').dropColumn('sk_application').execute();
}
