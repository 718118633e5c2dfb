import type { Kysely } from 'kysely';

// Written against `Kysely<any>`: migrations must keep compiling after the table types move on.

/**
 * Leak reports received from GitHub's secret scanning (POST /api/secret-scanning/github), kept a
 * day so that a captured report replayed later is refused. Keyed by the SHA-256 of the signed
 * body, not of the signature: an ECDSA signature can be re-encoded (s or n - s) and still verify,
 * the body cannot change. A primary key, so two deliveries of one report racing each other are
 * decided by the database: one is processed, the other refused.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('secret_scanning_reports')
    .addColumn('report_sha256', 'text', (c) => c.primaryKey())
    // Which of GitHub's keys signed it (Github-Public-Key-Identifier).
    .addColumn('key_identifier', 'text', (c) => c.notNull())
    .addColumn('received_at', 'timestamptz', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('secret_scanning_reports').execute();
}
