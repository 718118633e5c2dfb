import fs from 'node:fs';
import path from 'node:path';
import type { PGlite } from '@electric-sql/pglite';
import { Kysely, Migrator, sql, PostgresDialect, type Migration, type MigrationProvider, type PostgresPool, type PostgresPoolClient } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import * as initial from '../../migrations/0001_initial.js';
import * as httpWindowAndBudgets from '../../migrations/0002_http_window_and_budgets.js';
import * as mailOutbox from '../../migrations/0003_mail_outbox.js';
import * as sshChallenges from '../../migrations/0004_ssh_challenges.js';
import * as securityKeys from '../../migrations/0005_security_keys.js';
import * as challengeBounds from '../../migrations/0006_challenge_bounds.js';
import * as requestCancel from '../../migrations/0007_request_cancel.js';
import * as requestAddressGroup from '../../migrations/0008_request_address_group.js';
import * as personalOrgs from '../../migrations/0009_personal_orgs.js';
import type { Database } from './schema.js';
import { pgliteNotifications, postgresNotifications, type Notifications } from './notifications.js';

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
};

const staticProvider: MigrationProvider = { getMigrations: async () => MIGRATIONS };

/** Every migration this code knows, oldest first. */
export const MIGRATION_NAMES: readonly string[] = Object.keys(MIGRATIONS);

export type Db = Kysely<Database>;

/** How long a database may keep us waiting before the request fails with 503. */
export type DatabaseTimeouts = { queryTimeoutMs: number; connectTimeoutMs: number };

export const DEFAULT_DATABASE_TIMEOUTS: DatabaseTimeouts = { queryTimeoutMs: 5_000, connectTimeoutMs: 5_000 };

export type DatabaseTarget =
  | { kind: 'postgres'; url: string; timeouts?: DatabaseTimeouts; /** Default DEFAULT_POOL_SIZE. */ poolSize?: number }
  | { kind: 'pglite'; dataDir: string | null }; // null: in memory (tests)

/** The connection pool's state now (pg's counters), for metrics. */
/** `statements`: sent since start, BEGIN and COMMIT included: each is a round trip. */
export type PoolStats = { total: number; idle: number; waiting: number; max: number; statements: number };

export type OpenDatabase = {
  db: Db;
  kind: DatabaseTarget['kind'];
  close: () => Promise<void>;
  target?: DatabaseTarget;
  /** Postgres only: PGlite has one connection and no pool. */
  poolStats?: () => PoolStats;
  /** LISTEN on a channel, through a connection of its own. */
  listen?: (channel: string, log: Logger) => Notifications;
};

/** Pooled connections per process unless DB_POOL_SIZE says otherwise. */
export const DEFAULT_POOL_SIZE = 20;

export async function openDatabase(target: DatabaseTarget, log?: Logger): Promise<OpenDatabase> {
  if (target.kind === 'postgres') {
    const timeouts = target.timeouts ?? DEFAULT_DATABASE_TIMEOUTS;
    const poolSize = target.poolSize ?? DEFAULT_POOL_SIZE;
    const pool = new pg.Pool({
      connectionString: target.url,
      max: poolSize,
      // A database that is down, or a pool that is exhausted, gives a prompt 503 rather than a hung request.
      connectionTimeoutMillis: timeouts.connectTimeoutMs,
      idleTimeoutMillis: 30_000,
      // A stalled connection (the network, not Postgres) is abandoned after query_timeout; a slow
      // query is cancelled by Postgres itself a little earlier, so the server does not keep working on it.
      statement_timeout: Math.max(1, timeouts.queryTimeoutMs - 500),
      query_timeout: timeouts.queryTimeoutMs,
    });
    // An idle client losing its connection emits here; without a listener the process dies.
    pool.on('error', (err) => log?.error({ err: err.message }, 'postgres pool error'));
    const counted = { statements: 0 };
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: droppingBrokenClients(pool, counted) }) });
    const poolStats = () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount, max: poolSize, statements: counted.statements });
    const url = target.url;
    const listen = (channel: string, log: Logger) => postgresNotifications(url, channel, log);
    return { db, kind: 'postgres', close: () => db.destroy(), target, poolStats, listen };
  }

  // Loaded only here: on Postgres the embedded database's code would cost memory for nothing.
  const [{ PGlite }, { PGliteDialect }] = await Promise.all([import('@electric-sql/pglite'), import('kysely-pglite-dialect')]);
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
    listen: (channel, log) => pgliteNotifications(client, channel, log),
    close: async () => {
      await db.destroy();
      releaseLock();
    },
  };
}

/**
 * Errors after which a connection must not be reused. After pg's read timeout the client still
 * waits for the stalled query's answer, and every later query would queue behind it. A backend
 * terminated (pg_terminate_backend, a restart, a failover: SQLSTATE 57P01-57P03, class 08) answers
 * with an error before its socket closes, so the pool would hand the dead connection to the next
 * request.
 */
function leavesConnectionUnusable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (isStalePlan(err)) return true;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && (/^57P0[1-3]$/.test(code) || code.startsWith('08'))) return true;
  return /Query read timeout|Connection terminated/.test(err.message);
}

/** Distinct statements prepared per process: the service has a few dozen; more would be generated text. */
const MAX_PREPARED = 256;
const preparedNames = new Map<string, string>();
const PREPARABLE = /^\s*(select|insert|update|delete|with)\b/i;

/**
 * kysely's `query(text, values)` as a named statement, so each connection parses and plans it
 * once, not at every execution (Postgres CPU per SSH create: 0.76 -> 0.46 ms in `npm run bench`).
 * Bounded: past MAX_PREPARED distinct texts, statements run unnamed.
 */
function prepared(args: unknown[]): unknown[] {
  const [text, values] = args;
  if (typeof text !== 'string' || !Array.isArray(values) || args.length !== 2 || !PREPARABLE.test(text)) return args;
  let name = preparedNames.get(text);
  if (name === undefined) {
    if (preparedNames.size >= MAX_PREPARED) return args;
    name = `s${preparedNames.size}`;
    preparedNames.set(text, name);
  }
  return [{ name, text, values }];
}

/** Postgres refusing a prepared statement whose table changed shape (a migration by another instance). */
function isStalePlan(err: unknown): boolean {
  return err instanceof Error && (err as { code?: unknown }).code === '0A000' && /cached plan must not change result type/.test(err.message);
}

/**
 * A client that timed out or lost its backend goes back to the pool destroyed, so the next request
 * gets a fresh connection (or a prompt 503 while the database stays unreachable).
 */
function droppingBrokenClients(pool: pg.Pool, counted: { statements: number }): PostgresPool {
  return {
    async connect() {
      const client = await pool.connect();
      let broken = false;
      // pg emits a lost connection on the client itself, even with a query in flight (which is
      // rejected too). The pool listens only while the client is idle; while it is checked out
      // nobody would, and one reset mid-request would take the process down.
      const onError = () => {
        broken = true;
      };
      client.on('error', onError);
      let inTransaction = false;
      const query = ((...args: Parameters<pg.PoolClient['query']>) => {
        counted.statements++;
        const send = (...a: unknown[]) => (client.query as (...a: unknown[]) => unknown)(...a);
        if (typeof args[0] === 'string') {
          if (/^\s*begin\b/i.test(args[0])) inTransaction = true;
          else if (/^\s*(commit|rollback)\b/i.test(args[0])) inTransaction = false;
        }
        const result = send(...prepared(args));
        if (result instanceof Promise) {
          return result.catch((err: unknown) => {
            if (leavesConnectionUnusable(err)) broken = true;
            // A migration changed a table under this connection's prepared statement: outside a
            // transaction, the statement runs again unprepared (the connection is dropped after).
            if (isStalePlan(err) && !inTransaction) {
              counted.statements++; // a second round trip
              return send(...args);
            }
            throw err;
          });
        }
        return result;
      }) as PostgresPoolClient['query'];
      return {
        query,
        release: () => {
          client.removeListener('error', onError);
          client.release(broken ? new Error('connection lost, terminated or timed out: dropped') : undefined);
        },
      };
    },
    end: () => pool.end(),
  };
}

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

/** What a Postgres server lets clients open (its settings and the CONNECTION LIMITs), and what is open now. */
export type PostgresConnectionRoom = {
  maxConnections: number;
  /** Slots kept for administrators, by setting: superuser_reserved_connections, reserved_connections (Postgres 16+). */
  reserved: Record<string, number>;
  /** CONNECTION LIMIT of the role we log in as and of the database; null: none (or we are a superuser, exempt from both). */
  roleLimit: number | null;
  databaseLimit: number | null;
  /** Client connections open on the server now, not counting the one asking. */
  inUse: number;
};

/** Asks the server, on a connection of its own (closed after). */
export async function postgresConnectionRoom(url: string, connectTimeoutMs: number): Promise<PostgresConnectionRoom> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: connectTimeoutMs, query_timeout: connectTimeoutMs });
  client.on('error', () => undefined); // a lost connection rejects the query too
  await client.connect();
  try {
    // current_setting(name, true) is NULL for a setting this server does not have (reserved_connections before 16).
    const { rows } = await client.query<{ max: number; superuser_reserved: number; reserved: number | null; superuser: boolean; role_limit: number | null; database_limit: number | null; in_use: number }>(`
      SELECT current_setting('max_connections')::int AS max,
             current_setting('superuser_reserved_connections')::int AS superuser_reserved,
             current_setting('reserved_connections', true)::int AS reserved,
             (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
             (SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user) AS role_limit,
             (SELECT datconnlimit FROM pg_database WHERE datname = current_database()) AS database_limit,
             (SELECT count(*)::int FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()) AS in_use`);
    const row = rows[0]!;
    const limit = (n: number | null) => (n !== null && n >= 0 && !row.superuser ? n : null); // -1: no limit
    return {
      maxConnections: row.max,
      reserved: { superuser_reserved_connections: row.superuser_reserved, ...(row.reserved === null ? {} : { reserved_connections: row.reserved }) },
      roleLimit: limit(row.role_limit),
      databaseLimit: limit(row.database_limit),
      inUse: row.in_use,
    };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Migrations this code knows that the database has not applied (readiness). */
export async function pendingMigrations(db: Db): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`SELECT name FROM kysely_migration`.execute(db);
  const applied = new Set(rows.map((r) => r.name));
  return Object.keys(MIGRATIONS).filter((name) => !applied.has(name));
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
