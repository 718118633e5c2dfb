import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import type { Registry } from 'prom-client';
import type { Logger } from 'pino';
import { sshCommandHint, type Config } from '../config/config.js';
import { startExpiryNotices, startMailSender, sweepBudgets, sweepChallenges, sweepExpiryNotices, sweepOutbox, type CoreDeps, type Mailer } from '../core/index.js';
import { pendingMigrations, type OpenDatabase } from '../db/database.js';
import { openCore } from './core-wiring.js';
import { createHttpServer } from '../http/server.js';
import type { Readiness } from '../http/route.js';
import { createMetrics, listenForScrapes, type AppMetrics, type MetricsServer } from '../observability/metrics.js';
import type { HostKey } from '../ssh/host-key.js';
import { createSshServer, type SshServer } from '../ssh/server.js';
import { errorFields } from '../observability/log.js';
import type { DoorCaps } from './open-files.js';
import { addressMatcher } from '../net/addresses.js';
import { announceHttpDoor, announceSshDoor, prepareDoors, type StartupLog } from './startup-log.js';
import { listenFailure, StartupError } from './startup-errors.js';
import { loadSecretScanningKeys, SecretScanningKeysError, type SecretScanningKeys } from '../http/secret-scanning-keys.js';
import { shutdownOf, type Shutdown } from './shutdown.js';

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
} & Shutdown;

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
  const { hostKey, caps } = prepareDoors(config, startup);

  const ssh = await undoing(startSshDoor(config, deps, { hostKey, caps, log, metrics }), () => core.close());
  announceSshDoor(startup, config, ssh);

  let draining = false;
  const readiness = readinessOf(deps, {
    draining: () => draining,
    sshListening: () => ssh.server.listening(),
    httpListening: () => http.server.listening,
  });
  const http = await undoing(
    startHttpDoor(config, deps, { caps, log, sshHint: ssh.hint, readiness, metrics }),
    () => ssh.server.close(),
    () => core.close(),
  );
  announceHttpDoor(startup, config, { url: http.url, database: core.database.kind });

  let scrapes: MetricsServer | null = null;
  if (metrics && config.metricsPort !== null && overrides.scrapeListener !== false) {
    scrapes = await undoing(
      listenForScrapes(metrics.registry, config.metricsPort, config.host).catch(listenFailure('METRICS_PORT', config.host, config.metricsPort)),
      () => ssh.server.close(),
      () => closeAtOnce(http.server),
      () => core.close(),
    );
    log.info({ url: scrapes.url }, 'metrics listening');
  }

  const sweepers = startSweepers(deps, log);
  // Every instance sends: whichever is up delivers what any of them queued.
  const mailSender = startMailSender(deps);
  deps.mailSender = mailSender;
  // Every instance scans too: key_expiry_notices makes each notice go out once.
  const expiryNotices = startExpiryNotices(deps);

  const stopServing = () => {
    draining = true;
    sweepers.stop();
    expiryNotices.stop();
  };
  return {
    deps,
    database: core.database,
    http: http.server,
    httpUrl: http.url,
    sshPort: ssh.port,
    sshHint: ssh.hint,
    hostKeyFingerprint: hostKey.fingerprint,
    metricsUrl: scrapes?.url ?? null,
    metricsRegistry: metrics?.registry ?? null,
    readiness,
    ...shutdownOf({ ssh: ssh.server, http: http.server, mailSender, core, scrapes, log, stopServing }),
  };
}

/** A start-up step; if it fails, undoes the steps before it (in the order given) and fails as it did. */
async function undoing<T>(step: Promise<T>, ...undo: (() => Promise<void>)[]): Promise<T> {
  try {
    return await step;
  } catch (err) {
    for (const undoStep of undo) await undoStep();
    throw err;
  }
}

/** The SSH door, listening. Its hint names the port it got (SSH_PORT=0 picks one). */
async function startSshDoor(
  config: Config,
  deps: CoreDeps,
  options: { hostKey: HostKey; caps: DoorCaps; log: Logger; metrics: AppMetrics | null },
): Promise<{ server: SshServer; port: number; hint: string }> {
  const { hostKey, caps, log, metrics } = options;
  let sshHint = sshCommandHint(config, config.sshPort);
  const ssh = createSshServer(deps, { hostKey, sshUser: config.sshUser, sshHint: () => sshHint, limits: caps.ssh, log, metrics: metrics ?? undefined });
  const address = await ssh.listen(config.sshPort, config.host).catch(listenFailure('SSH_PORT', config.host, config.sshPort));
  sshHint = sshCommandHint(config, address.port);
  // Notices name a command to run (`rotate`): the one this instance's users type.
  deps.settings.sshHint = sshHint;
  return { server: ssh, port: address.port, hint: sshHint };
}

/** What GET /readyz answers: ready while not draining, with both doors listening and the database reachable and migrated. */
function readinessOf(
  deps: CoreDeps,
  state: { draining(): boolean; sshListening(): boolean; httpListening(): boolean },
): () => Promise<Readiness> {
  return async () => {
    const checks: Record<string, string> = {
      draining: state.draining() ? 'yes' : 'no',
      ssh: state.sshListening() ? 'listening' : 'closed',
      http: state.httpListening() ? 'listening' : 'closed',
    };
    try {
      const pending = await pendingMigrations(deps.db);
      checks.database = 'ok';
      checks.migrations = pending.length === 0 ? 'applied' : `pending: ${pending.join(', ')}`;
    } catch {
      checks.database = 'unreachable';
      checks.migrations = 'unknown';
    }
    const ready = !state.draining() && state.sshListening() && state.httpListening() && checks.database === 'ok' && checks.migrations === 'applied';
    return { ready, checks };
  };
}

/** The HTTP door, listening. Its URL names the address and port it got. */
async function startHttpDoor(
  config: Config,
  deps: CoreDeps,
  options: { caps: DoorCaps; log: Logger; sshHint: string; readiness: () => Promise<Readiness>; metrics: AppMetrics | null },
): Promise<{ server: Server; url: string }> {
  const { caps, log, sshHint, readiness, metrics } = options;
  const secretScanningKeys = await secretScanningKeysOf(config, log);
  const http = createHttpServer(deps, {
    secretScanningKeys,
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
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(config.httpPort, config.host, () => {
      http.off('error', reject);
      resolve();
    });
  }).catch(listenFailure('HTTP_PORT', config.host, config.httpPort));
  http.on('error', (err) => log.error({ err: errorFields(err) }, 'http server error'));
  const address = http.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return { server: http, url: `http://${host}:${address.port}` };
}

/** GitHub's secret scanning keys, read at start-up: a file that cannot be used stops it in one line. */
async function secretScanningKeysOf(config: Config, log: Logger): Promise<SecretScanningKeys | null> {
  const file = config.secretScanningKeysFile;
  if (file === null) return null;
  try {
    return await loadSecretScanningKeys(file, log);
  } catch (err) {
    if (err instanceof SecretScanningKeysError) throw new StartupError(`SECRET_SCANNING_KEYS_FILE=${file}: ${err.message}`);
    throw err;
  }
}

function closeAtOnce(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** Clean-ups that run every few minutes while the app serves, until stop(). */
function startSweepers(deps: CoreDeps, log: Logger): { stop(): void } {
  // Budget windows older than an hour are never read again; sent mail is kept a day, and so are
  // the expiry-notice records of a key that stopped working.
  const sweeper = setInterval(() => {
    sweepBudgets(deps).catch((err) => log.warn({ err: errorFields(err) }, 'could not sweep old request budgets'));
    sweepOutbox(deps).catch((err) => log.warn({ err: errorFields(err) }, 'could not sweep the mail outbox'));
    sweepExpiryNotices(deps).catch((err) => log.warn({ err: errorFields(err) }, 'could not sweep old expiry-notice records'));
  }, 10 * 60_000);
  sweeper.unref();
  // Every minute: challenges asked for from many addresses (or for many keys) go minutes after they expire.
  const challengeSweeper = setInterval(() => {
    sweepChallenges(deps).catch((err) => log.warn({ err: errorFields(err) }, 'could not sweep old proof challenges'));
  }, 60_000);
  challengeSweeper.unref();
  return {
    stop() {
      clearInterval(sweeper);
      clearInterval(challengeSweeper);
    },
  };
}
