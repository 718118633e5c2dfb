import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { API_KEY_REVOCATIONS_CHANNEL, CONFIRMATIONS_CHANNEL, createApiKeyCache, httpBilling, subscriptionBilling, type CoreDeps, type CoreEvents, type Mailer } from './core/index.js';
import { migrateOpenDatabase, openDatabase, type DatabaseTarget, type OpenDatabase } from './db/database.js';
import { outboxMailer, smtpMailer } from './mail/mailer.js';

export function databaseTarget(config: Config): DatabaseTarget {
  return config.databaseUrl
    ? { kind: 'postgres', url: config.databaseUrl, timeouts: config.database }
    : { kind: 'pglite', dataDir: config.dataDir };
}

/** At ~300 bytes an entry, a few MB at most. */
const API_KEY_CACHE_ENTRIES = 10_000;

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
      mailPerIpHourly: config.mailPerIpHourly,
      securityKeys: config.securityKeys,
    },
  };
  // Only a process that serves `login` waits for confirmations (not the admin CLI).
  const notifications = overrides.listen === false ? undefined : database.listen?.(CONFIRMATIONS_CHANNEL, log);
  if (notifications) deps.confirmations = notifications;
  // The cache is safe only where revocations are heard: no listener, no cache.
  const revocations =
    overrides.listen === false || config.apiKeyCacheTtlMs === 0 ? undefined : database.listen?.(API_KEY_REVOCATIONS_CHANNEL, log);
  if (revocations) deps.apiKeyCache = createApiKeyCache(revocations, { ttlMs: config.apiKeyCacheTtlMs, maxEntries: API_KEY_CACHE_ENTRIES });
  return {
    deps,
    database,
    async close() {
      closeMailer();
      deps.apiKeyCache?.close();
      await revocations?.close();
      await notifications?.close();
      await database.close();
    },
  };
}
