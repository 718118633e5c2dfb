import cluster from 'node:cluster';
import type { App } from './process/app.js';
import { applyHeapGrowingPercent, holdSemiSpaces, turnOffPretenuring } from './process/heap.js';

// Before the service's code loads and V8 sees its allocations (process/heap.ts says why).
turnOffPretenuring();
const capSemiSpaces = holdSemiSpaces();

// Before anything else loads (the imports below take a few hundred ms): a SIGTERM meanwhile
// must not kill the process by signal: a cluster's primary, draining workers that are still
// starting, would count that as a failure and exit 1 on a normal stop. Nothing runs yet: exit 0.
// A worker also ignores SIGINT, as it does later: the primary decides (a terminal's Ctrl-C reaches
// the whole process group). Static imports would be loaded before this line runs, hence import().
const stoppedWhileLoading = () => process.exit(0);
process.on('SIGTERM', stoppedWhileLoading);
if (cluster.isWorker) process.on('SIGINT', () => undefined);

const [
  { startApp },
  { answerMetricRequests, isClusterWorker, runPrimary, workerId, workerStarted },
  { ConfigError, loadConfig },
  { toAppError },
  { DataDirLockedError },
  { createLogger, errorFields, logFormatFor },
  { checkConnectionBudget, ConnectionBudgetError },
  { databaseSetupProblem, StartupError },
] = await Promise.all([
  import('./process/app.js'),
  import('./process/cluster.js'),
  import('./config/config.js'),
  import('./core/index.js'),
  import('./db/database.js'),
  import('./observability/log.js'),
  import('./process/core-wiring.js'),
  import('./process/startup-errors.js'),
]);

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

// Every process (a cluster's primary and each worker) runs this line.
applyHeapGrowingPercent(config.heapGrowingPercent);
capSemiSpaces(config.maxSemiSpaceMb);

const baseLog = createLogger(config.logLevel, undefined, logFormatFor(config.logFormat, process.stdout.isTTY));
const worker = isClusterWorker();
const log = worker ? baseLog.child({ worker: workerId() }) : baseLog;

// A stray rejection must be logged, never take down a service that is otherwise healthy.
process.on('unhandledRejection', (reason) => log.error({ err: errorFields(reason) }, 'unhandled promise rejection'));

try {
  // Before migrating or forking: that every worker's pool fits in what Postgres allows.
  if (!worker) await checkConnectionBudget(config, log);
  if (config.workers > 1 && !worker) {
    process.off('SIGTERM', stoppedWhileLoading); // runPrimary installs its own at once
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
  process.off('SIGTERM', stoppedWhileLoading);
  process.on('SIGTERM', () => stop('SIGTERM'));
  if (worker) {
    // SIGINT is ignored since the top of this file: the primary decides.
    process.on('disconnect', () => stop('primary gone'));
  } else {
    process.on('SIGINT', () => stop('SIGINT'));
  }
  app = await startApp(config, log, { scrapeListener: !worker, worker: workerId() });
  if (worker) workerStarted(app);
} catch (err) {
  // Expected failures (a port in use, the data directory locked) are the operator's to fix: one
  // line. Anything else is a bug: logged whole, stack and all.
  const databaseAway = toAppError(err).code === 'UNAVAILABLE';
  const databaseSetup = databaseSetupProblem(err, config.databaseUrl); // no such database (createdb), role, password
  const expected =
    err instanceof StartupError || err instanceof DataDirLockedError || err instanceof ConnectionBudgetError || databaseAway || databaseSetup !== null;
  if (!expected) log.fatal({ err: errorFields(err) }, 'could not start');
  const reason =
    databaseSetup ?? (databaseAway ? `DATABASE_URL: the database cannot be reached (${(err as Error).message})` : (err as Error).message);
  process.stderr.write(`shell-auth: could not start: ${reason}\n`);
  process.exit(1);
}
