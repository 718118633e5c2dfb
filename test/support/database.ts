import { inject } from 'vitest';
import { migrateToLatest, openDatabase, type OpenDatabase } from '../../src/db/database.js';

export const usingPostgres = process.env.TEST_DB === 'postgres';

export function postgresUrl(): string {
  return inject('databaseUrl');
}

/** The project's database: the run's fresh Postgres database, or a new in-memory PGlite. Migrated. */
export async function openTestDatabase(): Promise<OpenDatabase> {
  const database = usingPostgres
    ? await openDatabase({ kind: 'postgres', url: postgresUrl() })
    : await openDatabase({ kind: 'pglite', dataDir: null });
  await migrateToLatest(database.db);
  return database;
}
