import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { Notifications } from './notifications.js';
import type { Database } from './schema.js';

// The shapes every database job shares (database.ts re-exports them for the rest of the service).

/** How long a database may keep us waiting before the request fails with 503. */
export type DatabaseTimeouts = { queryTimeoutMs: number; connectTimeoutMs: number };

/**
 * The connection pool's state now (pg's counters), for metrics. `statements`: sent since start,
 * BEGIN and COMMIT included: each is a round trip.
 */
export type PoolStats = { total: number; idle: number; waiting: number; max: number; statements: number };

export type Db = Kysely<Database>;

export type DatabaseTarget =
  | { kind: 'postgres'; url: string; timeouts?: DatabaseTimeouts; /** Default DEFAULT_POOL_SIZE. */ poolSize?: number }
  | {
      kind: 'pglite';
      /** null: in memory (tests). */
      dataDir: string | null;
      /** In memory only: start from this copy (PGlite's dumpDataDir) rather than an empty cluster; a test run's migrated template. */
      copyOf?: Blob;
    };

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
