import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { httpBilling, subscriptionBilling, type CoreDeps, type Mailer } from './core/index.js';
import { migrateToLatest, openDatabase, type DatabaseTarget, type OpenDatabase } from './db/database.js';
import { createHttpServer } from './http/server.js';
import { outboxMailer, smtpMailer } from './mail/mailer.js';
import { loadOrCreateHostKey } from './ssh/host-key.js';
import { createSshServer } from './ssh/server.js';
import { errorFields } from './log.js';

export type App = {
  deps: CoreDeps;
  database: OpenDatabase;
  http: Server;
  httpUrl: string;
  sshPort: number;
  hostKeyFingerprint: string;
  close(): Promise<void>;
};

export function databaseTarget(config: Config): DatabaseTarget {
  return config.databaseUrl ? { kind: 'postgres', url: config.databaseUrl } : { kind: 'pglite', dataDir: config.dataDir };
}

export function sshCommandHint(config: Config, port = config.sshPort): string {
  const host = new URL(config.publicUrl).hostname;
  return `ssh${port === 22 ? '' : ` -p ${port}`} ${config.sshUser}@${host}`;
}

/** Opens the database (migrating it), wires the core, and builds the doors. Nothing listens yet. */
export async function createCoreDeps(
  config: Config,
  log: Logger,
  overrides: { database?: OpenDatabase; mailer?: Mailer } = {},
): Promise<{ deps: CoreDeps; database: OpenDatabase; closeMailer: () => void }> {
  const database = overrides.database ?? (await openDatabase(databaseTarget(config), log));
  try {
    const applied = await migrateToLatest(database.db);
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
    billing: config.billingUrl
      ? httpBilling(config.billingUrl, config.billingTimeoutMs)
      : subscriptionBilling(database.db),
    log,
    settings: {
      publicUrl: config.publicUrl,
      httpTrustWindowMs: config.httpTrustWindowMs,
      keyMaxTtlMs: config.keyMaxTtlMs,
      mailPerIpHourly: config.mailPerIpHourly === 0 ? undefined : config.mailPerIpHourly,
      sshCommandHint: sshCommandHint(config),
    },
  };
  return { deps, database, closeMailer };
}

export async function startApp(config: Config, log: Logger, overrides: { database?: OpenDatabase; mailer?: Mailer } = {}): Promise<App> {
  const { deps, database, closeMailer } = await createCoreDeps(config, log, overrides);
  if (config.httpTrustWindowMs === Number.POSITIVE_INFINITY) {
    log.warn(
      'HTTP_TRUST_WINDOW=forever: anyone who knows a verified public key can learn its email and mint API keys over HTTP. ' +
        'This is the literal Vers behaviour; use a finite window unless you need it.',
    );
  }
  if (!config.smtpUrl) {
    log.warn(
      { outbox: path.join(config.dataDir, 'outbox') },
      'SMTP_URL is not set: emails are written to the outbox and their links logged (development only)',
    );
  }
  if (config.httpTrustWindowMs === 0) {
    log.info('HTTP_TRUST_WINDOW=0: API key creation over HTTP is off; use the SSH door');
  }
  const http = createHttpServer(deps, { trustProxy: config.trustProxy, log, lookupsPerMinute: config.httpLookupsPerMinute });
  http.on('error', (err) => log.error({ err: errorFields(err) }, 'http server error'));
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(config.httpPort, config.host, () => {
      http.off('error', reject);
      resolve();
    });
  });
  const address = http.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const httpUrl = `http://${host}:${address.port}`;
  log.info({ url: httpUrl, publicUrl: config.publicUrl, database: database.kind }, 'HTTP API listening');

  const hostKey = loadOrCreateHostKey(config.hostKeysDir);
  log.info({ fingerprint: hostKey.fingerprint, path: hostKey.path, created: hostKey.created }, 'SSH host key');
  const ssh = createSshServer(deps, {
    hostKey,
    sshUser: config.sshUser,
    loginGraceMs: config.sshLoginGraceMs,
    maxUnauthenticatedPerIp: config.sshMaxUnauthPerIp,
    get sshHint() {
      return deps.settings.sshCommandHint;
    },
    log,
  });
  let sshAddress: AddressInfo;
  try {
    sshAddress = await ssh.listen(config.sshPort, config.host);
  } catch (err) {
    http.close();
    closeMailer();
    await database.close();
    throw err;
  }
  deps.settings.sshCommandHint = sshCommandHint(config, sshAddress.port);
  log.info({ port: sshAddress.port, user: config.sshUser, try: deps.settings.sshCommandHint }, 'SSH door listening');

  let closed = false;
  return {
    deps,
    database,
    http,
    httpUrl,
    sshPort: sshAddress.port,
    hostKeyFingerprint: hostKey.fingerprint,
    async close() {
      if (closed) return;
      closed = true;
      await ssh.close();
      await new Promise<void>((resolve) => {
        http.close(() => resolve());
        http.closeAllConnections();
      });
      closeMailer();
      await database.close();
    },
  };
}
