import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { migrateToLatest, openDatabase, type Db, type OpenDatabase } from '../../src/db/database.js';

export const usingPostgres = process.env.TEST_DB === 'postgres';

/** The Postgres server's maintenance database, for tests that create databases of their own. */
export function adminPostgresUrl(): string {
  return inject('postgres').adminUrl;
}

/**
 * A new database of its own, migrated (a copy of the run's template): like a fresh PGlite. Give
 * several instances the same URL to make them share one database.
 */
export async function freshPostgresUrl(options: { migrated?: boolean } = {}): Promise<string> {
  const { adminUrl, prefix, template } = inject('postgres');
  const name = `${prefix}_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(options.migrated === false ? `CREATE DATABASE ${name}` : `CREATE DATABASE ${name} TEMPLATE ${template}`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** The project's database (or `kind`): a fresh Postgres database, or a new in-memory PGlite. Migrated. */
export async function openTestDatabase(kind: 'postgres' | 'pglite' = usingPostgres ? 'postgres' : 'pglite'): Promise<OpenDatabase> {
  const database =
    kind === 'postgres'
      ? await openDatabase({ kind: 'postgres', url: await freshPostgresUrl() })
      : await openDatabase({ kind: 'pglite', dataDir: null, copyOf: pgliteTemplate() });
  await migrateToLatest(database.db);
  return database;
}

let template: Blob | undefined;

/** The run's migrated PGlite (support/pglite-setup.ts), read once per test file; none in projects without that setup. */
function pgliteTemplate(): Blob | undefined {
  const file = inject('pgliteTemplate') as string | undefined;
  if (file === undefined) return undefined;
  template ??= new Blob([fs.readFileSync(file)]);
  return template;
}

/**
 * The same database, counting every statement sent through it (by kind: BEGIN/COMMIT are not
 * statements kysely shows a plugin). `statements.length = 0` starts the count again. With
 * `table`, only statements that name that table count (a service's background work, such as its
 * mail sender, goes through the same handle).
 */
export function countingStatements(db: Db, options: { table?: string } = {}): { db: Db; statements: string[] } {
  const statements: string[] = [];
  const names = options.table === undefined ? null : `"name":${JSON.stringify(options.table)}`;
  return {
    statements,
    db: db.withPlugin({
      transformQuery(args) {
        if (names === null || JSON.stringify(args.node).includes(names)) statements.push(args.node.kind);
        return args.node;
      },
      transformResult: async (args) => args.result,
    }),
  };
}
