import fs from 'node:fs';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { Kysely, Migrator, PostgresDialect, type Migration, type MigrationProvider } from 'kysely';
import { PGliteDialect } from 'kysely-pglite-dialect';
import pg from 'pg';
import type { Logger } from 'pino';
import * as initial from '../../migrations/0001_initial.js';
import type { Database } from './schema.js';

// Imported explicitly, not read from disk, so the same list works under tsx, vitest and a build.
const MIGRATIONS: Record<string, Migration> = {
  '0001_initial': initial,
};

const staticProvider: MigrationProvider = { getMigrations: async () => MIGRATIONS };

export type Db = Kysely<Database>;

export type DatabaseTarget =
  | { kind: 'postgres'; url: string }
  | { kind: 'pglite'; dataDir: string | null }; // null: in memory (tests)

export type OpenDatabase = { db: Db; kind: DatabaseTarget['kind']; close: () => Promise<void> };

export async function openDatabase(target: DatabaseTarget, log?: Logger): Promise<OpenDatabase> {
  if (target.kind === 'postgres') {
    const pool = new pg.Pool({
      connectionString: target.url,
      max: 20,
      // A database that is down must give a quick, clear error rather than a hung request.
      connectionTimeoutMillis: 5_000,
      idleTimeoutMillis: 30_000,
      // A partitioned or stuck database must not hang requests forever.
      statement_timeout: 10_000,
      query_timeout: 15_000,
    });
    // An idle client losing its connection emits here; without a listener the process dies.
    pool.on('error', (err) => log?.error({ err: err.message }, 'postgres pool error'));
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    return { db, kind: 'postgres', close: () => db.destroy() };
  }

  let releaseLock = () => {};
  let client: PGlite;
  if (target.dataDir === null) {
    client = new PGlite();
  } else {
    const dir = path.join(target.dataDir, 'pglite');
    fs.mkdirSync(dir, { recursive: true });
    releaseLock = acquireDirectoryLock(path.join(target.dataDir, 'pglite.lock'));
    client = new PGlite(dir);
  }
  const db = new Kysely<Database>({ dialect: new PGliteDialect(client) });
  return {
    db,
    kind: 'pglite',
    close: async () => {
      await db.destroy();
      releaseLock();
    },
  };
}

export async function migrateToLatest(db: Db): Promise<string[]> {
  const migrator = new Migrator({ db, provider: staticProvider });
  const { error, results } = await migrator.migrateToLatest();
  const failed = results?.find((r) => r.status === 'Error');
  if (error || failed) {
    const reason = error instanceof Error ? error.message : String(error ?? 'unknown error');
    throw new Error(`database migration ${failed?.migrationName ?? ''} failed: ${reason}`);
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

export class DataDirLockedError extends Error {}

/**
 * PGlite is a single-process database: two processes on one directory corrupt it. A pid file
 * turns that into a clear error instead.
 */
function acquireDirectoryLock(lockPath: string): () => void {
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      fs.writeFileSync(lockPath, String(process.pid), { flag: 'wx' });
      return () => fs.rmSync(lockPath, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let holder = NaN;
    try {
      holder = Number(fs.readFileSync(lockPath, 'utf8').trim());
    } catch {
      continue; // released meanwhile: try again
    }
    if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && isAlive(holder)) {
      throw new DataDirLockedError(
        `the embedded database in ${path.dirname(lockPath)} is in use by process ${holder}; ` +
          'stop it first, or run against a shared Postgres with DATABASE_URL',
      );
    }
    // Left behind by a process that is gone. Renaming is atomic, so of two processes clearing
    // the same stale lock only one succeeds; both then race fairly on the exclusive create.
    const aside = `${lockPath}.stale-${process.pid}`;
    try {
      fs.renameSync(lockPath, aside);
      fs.rmSync(aside, { force: true });
    } catch {
      // someone else cleared it
    }
  }
  throw new DataDirLockedError(`could not lock ${lockPath}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
