import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import type { DatabaseTarget, DatabaseTimeouts, OpenDatabase, PoolStats } from './types.js';
import { postgresNotifications } from './notifications.js';
import { droppingBrokenClients } from './pool-clients.js';
import type { Database } from './schema.js';

export const DEFAULT_DATABASE_TIMEOUTS: DatabaseTimeouts = { queryTimeoutMs: 5_000, connectTimeoutMs: 5_000 };

/** Pooled connections per process unless DB_POOL_SIZE says otherwise. */
export const DEFAULT_POOL_SIZE = 20;

export function openPostgres(target: Extract<DatabaseTarget, { kind: 'postgres' }>, log?: Logger): OpenDatabase {
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
