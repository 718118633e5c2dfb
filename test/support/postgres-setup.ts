import pg from 'pg';
import { Kysely, PostgresDialect } from 'kysely';
import type { TestProject } from 'vitest/node';
import { migrateToLatest } from '../../src/db/database.js';
import type { Database } from '../../src/db/schema.js';

/**
 * Creates a migrated template database for this run on the Postgres server at TEST_PG_URL
 * (default: the project machines' server, postgres@127.0.0.1:5432/test); every test database is
 * a copy of it (see support/database.ts). Drops them all afterwards.
 *
 * A database per app, not one shared by the run: each instance's mail sender delivers whatever
 * mail is due in its database, which is right for instances of one service and wrong for test
 * apps with different mail servers and public URLs.
 */
export default async function setup(project: TestProject) {
  const adminUrl = process.env.TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const prefix = `shell_auth_test_${Date.now()}_${process.pid}`;
  const template = `${prefix}_template`;
  const admin = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 5000 });
  try {
    await admin.connect();
  } catch (err) {
    throw new Error(
      `the postgres test project needs a Postgres server at ${adminUrl} (set TEST_PG_URL): ${(err as Error).message}`,
    );
  }
  await admin.query(`CREATE DATABASE ${template}`);
  await admin.end();
  const templateUrl = new URL(adminUrl);
  templateUrl.pathname = `/${template}`;
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: templateUrl.toString(), max: 1 }) }) });
  try {
    await migrateToLatest(db);
  } finally {
    await db.destroy(); // a template must have no connections when it is copied
  }
  project.provide('postgres', { adminUrl, prefix, template });
  return async () => {
    const cleanup = new pg.Client({ connectionString: adminUrl });
    await cleanup.connect();
    const { rows } = await cleanup.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datname LIKE $1', [`${prefix}%`]);
    for (const { datname } of rows) await cleanup.query(`DROP DATABASE IF EXISTS ${datname} WITH (FORCE)`);
    await cleanup.end();
  };
}

declare module 'vitest' {
  export interface ProvidedContext {
    postgres: { adminUrl: string; prefix: string; template: string };
  }
}
