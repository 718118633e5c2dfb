import { startApp, StartupError, type App } from './app.js';
import { answerMetricRequests, isClusterWorker, runPrimary, workerId, workerStarted } from './cluster.js';
import { ConfigError, loadConfig } from './config.js';
import { toAppError } from './core/index.js';
import { DataDirLockedError } from './db/database.js';
import { createLogger, errorFields, logFormatFor } from './log.js';

let config;
try {
  config = loadConfig();
} catch (err) {
  if (err instanceof ConfigError) {
    for (const line of err.message.split('\n')) process.stderr.write(`shell-auth: ${line}\n`);
    process.exit(1);
  }
  throw err;
}

const baseLog = createLogger(config.logLevel, undefined, logFormatFor(config.logFormat, process.stdout.isTTY));
const worker = isClusterWorker();
const log = worker ? baseLog.child({ worker: workerId() }) : baseLog;

// A stray rejection must be logged, never take down a service that is otherwise healthy.
process.on('unhandledRejection', (reason) => log.error({ err: errorFields(reason) }, 'unhandled promise rejection'));

try {
  if (config.workers > 1 && !worker) {
    process.exit(await runPrimary(config, log));
  }
  if (worker) answerMetricRequests();
  let app: App | null = null;
  const grace = config.shutdownGraceMs;
  let stopping = false;
  // The first signal drains (up to SHUTDOWN_GRACE); a second one stops at once. A worker
  // leaves escalation to its primary: it may get a signal twice (systemd and the primary both
  // send SIGTERM; a terminal's Ctrl-C reaches the whole process group).
  const stop = (signal: string) => {
    if (stopping) {
      if (worker) return;
      log.warn({ signal }, 'second signal: stopping now');
      void (app?.close() ?? Promise.resolve()).finally(() => process.exit(1));
      return;
    }
    stopping = true;
    log.info({ signal, graceMs: grace }, 'shutting down');
    if (!app) process.exit(0); // still starting: nothing is running yet
    app.drain(grace).then(
      () => process.exit(0),
      (err) => {
        log.error({ err: errorFields(err) }, 'error during shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  if (worker) {
    process.on('SIGINT', () => undefined); // the primary decides
    process.on('disconnect', () => stop('primary gone'));
  } else {
    process.on('SIGINT', () => stop('SIGINT'));
  }
  app = await startApp(config, log, { scrapeListener: !worker });
  if (worker) workerStarted(app.metricsRegistry);
} catch (err) {
  // Expected failures (a port in use, the data directory locked) are the operator's to fix: one
  // line. Anything else is a bug: logged whole, stack and all.
  const databaseAway = toAppError(err).code === 'UNAVAILABLE';
  const expected = err instanceof StartupError || err instanceof DataDirLockedError || databaseAway;
  if (!expected) log.fatal({ err: errorFields(err) }, 'could not start');
  const reason = databaseAway ? `DATABASE_URL: the database cannot be reached (${(err as Error).message})` : (err as Error).message;
  process.stderr.write(`shell-auth: could not start: ${reason}\n`);
  process.exit(1);
}
