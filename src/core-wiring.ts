import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { CONFIRMATIONS_CHANNEL, httpBilling, subscriptionBilling, type CoreDeps, type CoreEvents, type Mailer } from './core/index.js';
import { migrateOpenDatabase, openDatabase, type DatabaseTarget, type OpenDatabase } from './db/database.js';
import { outboxMailer, smtpMailer } from './mail/mailer.js';

export function databaseTarget(config: Config): DatabaseTarget {
  return config.databaseUrl
    ? { kind: 'postgres', url: config.databaseUrl, timeouts: config.database }
    : { kind: 'pglite', dataDir: config.dataDir };
}

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
    },
  };
  // Only a process that serves `login` waits for confirmations (not the admin CLI).
  const notifications = overrides.listen === false ? undefined : database.listen?.(CONFIRMATIONS_CHANNEL, log);
  if (notifications) deps.confirmations = notifications;
  return {
    deps,
    database,
    async close() {
      closeMailer();
      await notifications?.close();
      await database.close();
    },
  };
}
