import type { Logger } from 'pino';
import { openPglite } from './pglite.js';
import { openPostgres } from './postgres.js';
import type { DatabaseTarget, OpenDatabase } from './types.js';

// The database's entry: what the rest of the service imports. Each job lives in its own file.
export { MIGRATION_NAMES, migrateOpenDatabase, migrateToLatest, pendingMigrations } from './migrations.js';
export { DEFAULT_DATABASE_TIMEOUTS, DEFAULT_POOL_SIZE, postgresConnectionRoom, type PostgresConnectionRoom } from './postgres.js';
export type { DatabaseTarget, DatabaseTimeouts, Db, OpenDatabase, PoolStats } from './types.js';
export { DataDirLockedError } from './pglite.js';

export async function openDatabase(target: DatabaseTarget, log?: Logger): Promise<OpenDatabase> {
  return target.kind === 'postgres' ? openPostgres(target, log) : openPglite(target);
}
