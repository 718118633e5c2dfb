import type { Kysely } from 'kysely';

// Written against `Kysely<any>`: migrations must keep compiling after the table types move on.

/**
 * "This wasn't me" on the confirm page: the request is cancelled. The link is spent as well
 * (`consumed_at` is set in the same statement), so everything that refuses a used link refuses a
 * cancelled one; `cancelled_at` says which of the two happened.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('verification_requests').addColumn('cancelled_at', 'timestamptz').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('verification_requests').dropColumn('cancelled_at').execute();
}
