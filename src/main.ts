import { startApp } from './app.js';
import { ConfigError, loadConfig } from './config.js';
import { DataDirLockedError } from './db/database.js';
import { createLogger, errorFields, logFormatFor } from './log.js';

let config;
try {
  config = loadConfig();
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`shell-auth: ${err.message}\n`);
    process.exit(1);
  }
  throw err;
}

const log = createLogger(config.logLevel, undefined, logFormatFor(config.logFormat, process.stdout.isTTY));

// A stray rejection must be logged, never take down a service that is otherwise healthy.
process.on('unhandledRejection', (reason) => log.error({ err: errorFields(reason) }, 'unhandled promise rejection'));

try {
  const app = await startApp(config, log);
  const grace = config.shutdownGraceMs;
  let stopping = false;
  // The first signal drains (up to SHUTDOWN_GRACE); a second one stops at once.
  const stop = (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: stopping now');
      void app.close().finally(() => process.exit(1));
      return;
    }
    stopping = true;
    log.info({ signal, graceMs: grace }, 'shutting down');
    app.drain(grace).then(
      () => process.exit(0),
      (err) => {
        log.error({ err: errorFields(err) }, 'error during shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
} catch (err) {
  const message = err instanceof DataDirLockedError ? err.message : (err as Error).message;
  log.fatal({ err: errorFields(err) }, 'could not start');
  process.stderr.write(`shell-auth: could not start: ${message}\n`);
  process.exit(1);
}
