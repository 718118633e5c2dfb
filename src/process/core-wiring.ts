import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import {
  API_KEY_REVOCATIONS_CHANNEL,
  CONFIRMATIONS_CHANNEL,
  createApiKeyCache,
  createSshIdentityCache,
  httpBilling,
  subscriptionBilling,
  watchIdentityWrites,
  type CoreDeps,
  type CoreEvents,
  type Mailer,
  type SshIdentityRow,
} from '../core/index.js';
import { migrateOpenDatabase, openDatabase, postgresConnectionRoom, type DatabaseTarget, type OpenDatabase } from '../db/database.js';
import { outboxMailer, smtpMailer } from '../mail/mailer.js';

export function databaseTarget(config: Config): DatabaseTarget {
  return config.databaseUrl
    ? { kind: 'postgres', url: config.databaseUrl, timeouts: config.database, poolSize: config.database.poolSize }
    : { kind: 'pglite', dataDir: config.dataDir };
}

/** Whether a cache needs the invalidations listener (API keys' revocations, SSH identities' changes). */
function cachesOn(config: Pick<Config, 'apiKeyCacheTtlMs' | 'sshIdentityCacheTtlMs'>): boolean {
  return config.apiKeyCacheTtlMs !== 0 || config.sshIdentityCacheTtlMs !== 0;
}

/** LISTEN connections a serving process holds besides its pool: confirmations, and invalidations when a cache is on. */
export function listenersPerProcess(config: Pick<Config, 'apiKeyCacheTtlMs' | 'sshIdentityCacheTtlMs'>): number {
  return cachesOn(config) ? 2 : 1;
}

/** The service would need more Postgres connections than the server allows it: the operator's to fix, in one line. */
export class ConnectionBudgetError extends Error {}

/**
 * At start-up (the single process, or a cluster's primary before it forks): refuses when every
 * worker's pool and listeners together, WORKERS × (DB_POOL_SIZE + listeners), exceed what the
 * server allows: max_connections less the slots it reserves for administrators (always left to
 * them, even when we log in as a superuser), or a smaller CONNECTION LIMIT on the role or the
 * database. Otherwise, under load the pools would fail with "too many clients" (503s) instead.
 * Connections other clients hold now only warn: they come and go (another instance being
 * replaced, a psql session), and the static bound is what an operator sizes against.
 */
export async function checkConnectionBudget(config: Config, log: Logger): Promise<void> {
  if (!config.databaseUrl) return;
  const room = await postgresConnectionRoom(config.databaseUrl, config.database.connectTimeoutMs);
  const listeners = listenersPerProcess(config);
  const needed = config.workers * (config.database.poolSize + listeners);
  const reserved = Object.values(room.reserved).reduce((sum, n) => sum + n, 0);
  const server = {
    allows: room.maxConnections - reserved,
    why: [`max_connections ${room.maxConnections}`, ...Object.entries(room.reserved).filter(([, n]) => n > 0).map(([name, n]) => `${name} ${n}`)].join(' - '),
  };
  const bounds = [server];
  if (room.roleLimit !== null) bounds.push({ allows: room.roleLimit, why: "the role's CONNECTION LIMIT" });
  if (room.databaseLimit !== null) bounds.push({ allows: room.databaseLimit, why: "the database's CONNECTION LIMIT" });
  const tightest = bounds.reduce((a, b) => (b.allows < a.allows ? b : a));
  if (needed > tightest.allows) {
    throw new ConnectionBudgetError(
      `WORKERS=${config.workers} x (DB_POOL_SIZE=${config.database.poolSize} + ${listeners} LISTEN) = ${needed} Postgres connections, ` +
        `more than the server allows (${tightest.allows}: ${tightest.why}); lower WORKERS or DB_POOL_SIZE, or raise the server's limit`,
    );
  }
  const free = server.allows - room.inUse;
  if (needed > free) {
    log.warn(
      { needed, allowed: server.allows, inUseByOthers: room.inUse },
      'Postgres has fewer connections free now than this service may open at its busiest: requests may get 503 under load',
    );
  }
}

/** At ~300 bytes an entry, a few MB at most. */
const API_KEY_CACHE_ENTRIES = 10_000;
/** An identity row with a few orgs is ~1-2 KB: ~10 MB at most. */
const SSH_IDENTITY_CACHE_ENTRIES = 5_000;

export type Core = { deps: CoreDeps; database: OpenDatabase; close(): Promise<void> };

/** Opens (and migrates) the database and wires the core's dependencies. The admin CLI stops here. */
export async function openCore(
  config: Config,
  log: Logger,
  overrides: { database?: OpenDatabase; mailer?: Mailer; events?: CoreEvents; listen?: boolean } = {},
): Promise<Core> {
  const database = overrides.database ?? (await openDatabase(databaseTarget(config), log));
  try {
    const applied = await migrateOpenDatabase(database);
    if (applied.length) log.info({ migrations: applied }, 'database migrated');
  } catch (err) {
    await database.close();
    throw err;
  }
  let closeMailer = () => {};
  let mailer = overrides.mailer;
  if (!mailer && config.smtpUrl) {
    const smtp = smtpMailer(config.smtpUrl, config.mailFrom);
    closeMailer = smtp.close;
    mailer = smtp;
  }
  mailer ??= outboxMailer(path.join(config.dataDir, 'outbox'), config.mailFrom, log);
  const deps: CoreDeps = {
    db: database.db,
    mailer,
    billing: config.billingUrl ? httpBilling(config.billingUrl, config.billingTimeoutMs) : subscriptionBilling(),
    log,
    ...(overrides.events ? { events: overrides.events } : {}),
    settings: {
      publicUrl: config.publicUrl,
      httpTrust: config.httpTrust,
      keyMaxTtlMs: config.keyMaxTtlMs,
      keyPermissions: config.keyPermissions,
      keyExpiryNoticesMs: config.keyExpiryNoticesMs,
      mailPerIpHourly: config.mailPerIpHourly,
      mailDotlessDomains: config.mailDotlessDomains,
      securityKeys: config.securityKeys,
      ipv6Prefix: config.ssh.ipv6Prefix,
    },
  };
  // Only a process that serves `login` waits for confirmations (not the admin CLI).
  const notifications = overrides.listen === false ? undefined : database.listen?.(CONFIRMATIONS_CHANNEL, log);
  if (notifications) deps.confirmations = notifications;
  // A cache is safe only where its invalidations are heard: no listener, no cache. One channel
  // (and connection) carries both: revoked API keys' ids, and SSH identity changes.
  const revocations = overrides.listen === false || !cachesOn(config) ? undefined : database.listen?.(API_KEY_REVOCATIONS_CHANNEL, log);
  if (revocations && config.apiKeyCacheTtlMs !== 0) {
    deps.apiKeyCache = createApiKeyCache(revocations, { ttlMs: config.apiKeyCacheTtlMs, maxEntries: API_KEY_CACHE_ENTRIES });
  }
  if (revocations && config.sshIdentityCacheTtlMs !== 0) {
    const cache = createSshIdentityCache<SshIdentityRow>(revocations, { ttlMs: config.sshIdentityCacheTtlMs, maxEntries: SSH_IDENTITY_CACHE_ENTRIES });
    deps.sshIdentityCache = cache;
    // This process's own changes empty it at once, before their notification comes back.
    deps.db = deps.db.withPlugin(watchIdentityWrites(() => cache.changedHere()));
  }
  return {
    deps,
    database,
    async close() {
      closeMailer();
      deps.apiKeyCache?.close();
      deps.sshIdentityCache?.close();
      await revocations?.close();
      await notifications?.close();
      await database.close();
    },
  };
}
