import { Kysely, Migrator, sql, PostgresDialect, type Migration, type MigrationProvider } from 'kysely';
import pg from 'pg';
import * as initial from '../../migrations/0001_initial.js';
import * as httpWindowAndBudgets from '../../migrations/0002_http_window_and_budgets.js';
import * as mailOutbox from '../../migrations/0003_mail_outbox.js';
import * as sshChallenges from '../../migrations/0004_ssh_challenges.js';
import * as securityKeys from '../../migrations/0005_security_keys.js';
import * as challengeBounds from '../../migrations/0006_challenge_bounds.js';
import * as requestCancel from '../../migrations/0007_request_cancel.js';
import * as requestAddressGroup from '../../migrations/0008_request_address_group.js';
import * as personalOrgs from '../../migrations/0009_personal_orgs.js';
import * as keyLifecycle from '../../migrations/0010_key_lifecycle.js';
import * as secretScanningReports from '../../migrations/0011_secret_scanning_reports.js';
import * as orgPolicy from '../../migrations/0012_org_policy.js';
import * as sshIdentityChanges from '../../migrations/0013_ssh_identity_changes.js';
import type { Db, OpenDatabase } from './types.js';
import type { Database } from './schema.js';

// Imported explicitly, not read from disk, so the same list works under tsx, vitest and a build.
const MIGRATIONS: Record<string, Migration> = {
  '0001_initial': initial,
  '0002_http_window_and_budgets': httpWindowAndBudgets,
  '0003_mail_outbox': mailOutbox,
  '0004_ssh_challenges': sshChallenges,
  '0005_security_keys': securityKeys,
  '0006_challenge_bounds': challengeBounds,
  '0007_request_cancel': requestCancel,
  '0008_request_address_group': requestAddressGroup,
  '0009_personal_orgs': personalOrgs,
  '0010_key_lifecycle': keyLifecycle,
  '0011_secret_scanning_reports': secretScanningReports,
  '0012_org_policy': orgPolicy,
  '0013_ssh_identity_changes': sshIdentityChanges,
};

const staticProvider: MigrationProvider = { getMigrations: async () => MIGRATIONS };

/** Every migration this code knows, oldest first. */
export const MIGRATION_NAMES: readonly string[] = Object.keys(MIGRATIONS);

/**
 * Migrates at start-up. On Postgres this uses its own connection without the request timeouts:
 * instances starting together wait on the migration lock for as long as the first one migrates.
 */
export async function migrateOpenDatabase(database: OpenDatabase): Promise<string[]> {
  if (database.target?.kind !== 'postgres') return migrateToLatest(database.db);
  const pool = new pg.Pool({ connectionString: database.target.url, max: 1, connectionTimeoutMillis: 30_000 });
  pool.on('error', () => undefined);
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  try {
    return await migrateToLatest(db);
  } finally {
    await db.destroy();
  }
}

/** Migrations this code knows that the database has not applied (readiness). */
export async function pendingMigrations(db: Db): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`SELECT name FROM kysely_migration`.execute(db);
  const applied = new Set(rows.map((r) => r.name));
  return MIGRATION_NAMES.filter((name) => !applied.has(name));
}

export async function migrateToLatest(db: Db): Promise<string[]> {
  const migrator = new Migrator({ db, provider: staticProvider });
  const { error, results } = await migrator.migrateToLatest();
  const failed = results?.find((r) => r.status === 'Error');
  if (error || failed) {
    const reason = error instanceof Error ? error.message : String(error ?? 'unknown error');
    // The cause keeps the driver's code (3D000: no such database) for the start-up message.
    throw new Error(`database migration${failed ? ` ${failed.migrationName}` : ''} failed: ${reason}`, { cause: error });
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}
