import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import type { Registry } from 'prom-client';
import type { Logger } from 'pino';
import { sshCommandHint, type Config } from '../config/config.js';
import { startMailSender, sweepBudgets, sweepChallenges, sweepOutbox, type CoreDeps, type Mailer } from '../core/index.js';
import { pendingMigrations, type OpenDatabase } from '../db/database.js';
import { openCore } from './core-wiring.js';
import { createHttpServer } from '../http/server.js';
import type { Readiness } from '../http/route.js';
import { createMetrics, listenForScrapes, type MetricsServer } from '../observability/metrics.js';
import { loadOrCreateHostKey } from '../ssh/host-key.js';
import { createSshServer } from '../ssh/server.js';
import { errorFields } from '../observability/log.js';
import { fitToOpenFiles, openFileLimit } from './open-files.js';
import { addressMatcher } from '../net/addresses.js';

export type App = {
  deps: CoreDeps;
  database: OpenDatabase;
  http: Server;
  httpUrl: string;
  sshPort: number;
  /** How users reach the SSH door, as messages print it: `ssh -p 2222 keys@host`. */
  sshHint: string;
  hostKeyFingerprint: string;
  /** The Prometheus scrape URL (`http://host:port/metrics`), or null when METRICS_PORT is unset (or a cluster primary serves it). */
  metricsUrl: string | null;
  /** This app's metrics, or null when METRICS_PORT is unset. */
  metricsRegistry: Registry | null;
  /** What GET /readyz answers. */
  readiness(): Promise<Readiness>;
  /**
   * The graceful stop (SIGTERM): readiness fails at once, both listeners stop accepting, running
   * commands and requests get up to `graceMs`, shells are told, the mail sender finishes its
   * message; then everything is closed.
   */
  drain(graceMs: number): Promise<void>;
  /** Stops at once, cutting whatever runs. */
  close(): Promise<void>;
};

/** Where start-up lines go: the log, or (in a cluster worker) its debug level. */
type StartupLog = Pick<Logger, 'info' | 'warn'>;

/** Said once at start-up (by a cluster's primary for all its workers). */
export function warnAboutSettings(config: Config, log: StartupLog): void {
  if (config.httpTrust.window === 'forever') {
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
  if (config.httpTrust.window === 'off') {
    // Only the email window is off: a signed request proves the key as the SSH door does, so it still acts.
    log.info(
      'HTTP_TRUST_WINDOW=0: an email confirmation opens no HTTP window, so unsigned HTTP requests mint no API keys; ' +
        'requests signed with the key (challenge + ssh_signature) and the SSH door still do',
    );
  }
}

/** The whole service: the core, then the SSH door, then the HTTP door. Undoes what it did if a step fails. */
export async function startApp(
  config: Config,
  log: Logger,
  overrides: {
    database?: OpenDatabase;
    mailer?: Mailer;
    /** A cluster worker: the primary serves the metrics. */
    scrapeListener?: boolean;
    /**
     * A cluster worker's number (1..WORKERS): its process metrics carry it as `worker`, and its
     * start-up lines go to debug (the primary says them once, for all: cluster.ts).
     */
    worker?: number | null;
  } = {},
): Promise<App> {
  const worker = overrides.worker ?? null;
  const startup: StartupLog = worker === null ? log : { info: log.debug.bind(log), warn: log.debug.bind(log) };
  // A registry per app, not prom-client's global one: several apps in one process do not collide.
  const metrics = config.metricsPort === null ? null : createMetrics({ worker });
  const core = await openCore(config, log, { database: overrides.database, mailer: overrides.mailer, events: metrics?.events });
  const { deps } = core;
  if (metrics && core.database.poolStats) metrics.watchPool(core.database.poolStats);
  warnAboutSettings(config, startup);

  const hostKey = loadOrCreateHostKey(config.hostKeysDir);
  startup.info({ fingerprint: hostKey.fingerprint, path: hostKey.path, created: hostKey.created }, 'SSH host key');
  const caps = fitToOpenFiles(config, openFileLimit());
  if (caps.lowered) startup.warn(`connection caps lowered: ${caps.lowered}`);
  let sshHint = sshCommandHint(config, config.sshPort);
  const ssh = createSshServer(deps, { hostKey, sshUser: config.sshUser, sshHint: () => sshHint, limits: caps.ssh, log, metrics: metrics ?? undefined });
  let sshAddress: AddressInfo;
  try {
    sshAddress = await ssh.listen(config.sshPort, config.host).catch(listenFailure('SSH_PORT', config.host, config.sshPort));
  } catch (err) {
    await core.close();
    throw err;
  }
  sshHint = sshCommandHint(config, sshAddress.port);
  startup.info({ port: sshAddress.port, user: config.sshUser, try: sshHint }, 'SSH door listening');

  let draining = false;
  async function readiness(): Promise<Readiness> {
    const checks: Record<string, string> = {
      draining: draining ? 'yes' : 'no',
      ssh: ssh.listening() ? 'listening' : 'closed',
      http: http.listening ? 'listening' : 'closed',
    };
    try {
      const pending = await pendingMigrations(deps.db);
      checks.database = 'ok';
      checks.migrations = pending.length === 0 ? 'applied' : `pending: ${pending.join(', ')}`;
    } catch {
      checks.database = 'unreachable';
      checks.migrations = 'unknown';
    }
    const ready = !draining && ssh.listening() && http.listening && checks.database === 'ok' && checks.migrations === 'applied';
    return { ready, checks };
  }

  const http = createHttpServer(deps, {
    trustProxy: config.httpProxyFrom,
    log,
    lookupsPerMinute: config.httpLookupsPerMinute,
    limits: {
      ...caps.http,
      ipv6Prefix: config.ssh.ipv6Prefix,
      carriesManyClients: config.httpProxyFrom ? addressMatcher(config.httpProxyFrom) : undefined,
    },
    sshHint,
    readiness,
    metrics: metrics ?? undefined,
  });
  try {
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(config.httpPort, config.host, () => {
        http.off('error', reject);
        resolve();
      });
    }).catch(listenFailure('HTTP_PORT', config.host, config.httpPort));
    http.on('error', (err) => log.error({ err: errorFields(err) }, 'http server error'));
  } catch (err) {
    await ssh.close();
    await core.close();
    throw err;
  }
  const address = http.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const httpUrl = `http://${host}:${address.port}`;
  startup.info({ url: httpUrl, publicUrl: config.publicUrl, database: core.database.kind }, 'HTTP API listening');

  let scrapes: MetricsServer | null = null;
  if (metrics && config.metricsPort !== null && overrides.scrapeListener !== false) {
    try {
      scrapes = await listenForScrapes(metrics.registry, config.metricsPort, config.host).catch(listenFailure('METRICS_PORT', config.host, config.metricsPort));
    } catch (err) {
      await ssh.close();
      await new Promise<void>((resolve) => {
        http.close(() => resolve());
        http.closeAllConnections();
      });
      await core.close();
      throw err;
    }
    log.info({ url: scrapes.url }, 'metrics listening');
  }

  // Budget windows older than an hour are never read again; sent mail is kept a day.
  const sweeper = setInterval(() => {
    sweepBudgets(deps).catch((err) => log.warn({ err: errorFields(err) }, 'could not sweep old request budgets'));
    sweepOutbox(deps).catch((err) => log.warn({ err: errorFields(err) }, 'could not sweep the mail outbox'));
  }, 10 * 60_000);
  sweeper.unref();
  // Every minute: challenges asked for from many addresses (or for many keys) go minutes after they expire.
  const challengeSweeper = setInterval(() => {
    sweepChallenges(deps).catch((err) => log.warn({ err: errorFields(err) }, 'could not sweep old proof challenges'));
  }, 60_000);
  challengeSweeper.unref();

  // Every instance sends: whichever is up delivers what any of them queued.
  const mailSender = startMailSender(deps);
  deps.mailSender = mailSender;

  // One shutdown, however it is asked for: close() during a drain cuts the drain short.
  let shutdown: Promise<void> | null = null;
  const release = async (mailWaitMs: number) => {
    await mailSender.stop(mailWaitMs);
    await core.close();
    await scrapes?.close();
  };
  const httpClosed = new Promise<void>((resolve) => http.once('close', () => resolve()));
  const cut = () => {
    void ssh.close();
    if (http.listening) http.close();
    http.closeAllConnections();
    void mailSender.stop(0);
  };
  return {
    deps,
    database: core.database,
    http,
    httpUrl,
    sshPort: sshAddress.port,
    sshHint,
    hostKeyFingerprint: hostKey.fingerprint,
    metricsUrl: scrapes?.url ?? null,
    metricsRegistry: metrics?.registry ?? null,
    readiness,
    drain(graceMs) {
      if (shutdown) return shutdown;
      draining = true;
      clearInterval(sweeper);
      clearInterval(challengeSweeper);
      log.info({ graceMs }, 'draining: not ready, listeners closed, running commands and requests may finish');
      const started = Date.now();
      shutdown = (async () => {
        await Promise.all([ssh.drain(graceMs), drainHttp(http, graceMs)]);
        // The sender finishes the message in hand, within what is left of the grace.
        await release(Math.max(1_000, graceMs - (Date.now() - started)));
        log.info({ ms: Date.now() - started }, 'drained');
      })();
      return shutdown;
    },
    close() {
      draining = true;
      clearInterval(sweeper);
      clearInterval(challengeSweeper);
      cut();
      shutdown ??= (async () => {
        await ssh.close();
        await httpClosed;
        await release(0);
      })();
      return shutdown;
    },
  };
}

/** A failure to start that is the operator's to fix: said in one line, without a stack trace. */
export class StartupError extends Error {}

/** Turns a listen error into a line naming the variable that chose the port. */
function listenFailure(variable: string, host: string, port: number) {
  return (err: NodeJS.ErrnoException): never => {
    const where = `${host}:${port}`;
    if (err.code === 'EADDRINUSE') throw new StartupError(`${variable}=${port}: ${where} is already in use by another process`);
    if (err.code === 'EACCES') throw new StartupError(`${variable}=${port}: not allowed to listen on ${where} (ports below 1024 need privileges)`);
    if (err.code === 'EADDRNOTAVAIL') throw new StartupError(`${variable}=${port}: HOST=${host} is not an address of this machine`);
    throw err;
  };
}

/**
 * Stops accepting; closes keep-alive connections as they fall idle; cuts the rest after
 * `graceMs`. Resolves when the last connection is gone.
 */
function drainHttp(server: Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const idle = setInterval(() => server.closeIdleConnections(), 250);
    const cut = setTimeout(() => server.closeAllConnections(), graceMs);
    server.close(() => {
      clearInterval(idle);
      clearTimeout(cut);
      resolve();
    });
    server.closeIdleConnections();
  });
}
