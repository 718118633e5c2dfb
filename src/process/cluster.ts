import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import { AggregatorRegistry } from 'prom-client';
import type { App } from './app.js';
import type { Config } from '../config/config.js';
import { openCore } from './core-wiring.js';
import { listenForScrapes, type MetricsServer } from '../observability/metrics.js';
import { announceHttpDoor, announceSshDoor, prepareDoors } from './startup-log.js';

/** What a worker tells the primary once both its listeners are up. */
const READY_MESSAGE = 'shell-auth:worker-ready';
type ReadyMessage = { type: typeof READY_MESSAGE; httpUrl: string; sshPort: number; sshHint: string; database: string };
const isReady = (message: unknown): message is ReadyMessage => (message as ReadyMessage | null)?.type === READY_MESSAGE;

/**
 * Each worker's number, 1..WORKERS, in its environment: a replacement takes the number of the
 * worker it replaces, so logs and metrics (the `worker` label) name at most WORKERS of them.
 */
const SLOT_VARIABLE = 'SHELL_AUTH_WORKER';

/** A worker died after it had started: the next one is started this long after. */
const RESTART_DELAY_MS = 1_000;

/**
 * WORKERS > 1: this process forks the workers that serve (sharing both ports through
 * node:cluster), restarts one that dies, and on SIGTERM drains them all. It migrates the
 * database and makes the host key before the first fork, so workers find both ready; it serves
 * the metrics of all of them on METRICS_PORT. Resolves with the exit code.
 */
export async function runPrimary(config: Config, log: Logger): Promise<number> {
  // First thing: a signal while migrating is a stop before anything was forked (exit 0 once the
  // migration, if one runs, is done), not a death by signal.
  let signalled: NodeJS.Signals | null = null;
  let onSignal = (signal: NodeJS.Signals) => void (signalled ??= signal);
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));

  const core = await openCore(config, log, { listen: false }); // migrates, under the lock
  await core.close();
  // The start-up block, once: workers log theirs at debug, and this process says when all listen.
  prepareDoors(config, log, { forEachWorker: true });

  let scrapes: MetricsServer | null = null;
  if (config.metricsPort !== null) {
    const aggregator = new AggregatorRegistry();
    scrapes = await listenForScrapes({ metrics: () => aggregator.clusterMetrics(), contentType: aggregator.contentType }, config.metricsPort, config.host);
    log.info({ url: scrapes.url, workers: config.workers }, 'metrics listening (all workers)');
  }
  if (signalled) {
    log.info({ signal: signalled }, 'shutting down before starting the workers');
    await scrapes?.close();
    return 0;
  }

  // A worker that has listened once is "up"; only the first ones failing to start is fatal.
  const up = new Set<Worker>();
  let everyWorkerStarted = false;
  let stopping = false;
  let exitCode = 0;
  let failedStarts = 0;
  let restartTimer: NodeJS.Timeout | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  let finished: (code: number) => void = () => {};
  const done = new Promise<number>((resolve) => (finished = resolve));

  const slots = new Map<Worker, number>();
  const fork = (slot: number) => {
    const worker = cluster.fork({ [SLOT_VARIABLE]: String(slot) });
    slots.set(worker, slot);
    worker.on('message', (message: unknown) => {
      if (!isReady(message)) return;
      up.add(worker);
      failedStarts = 0;
      const where = { worker: slot, pid: worker.process.pid, url: message.httpUrl, sshPort: message.sshPort };
      if (everyWorkerStarted) {
        log.info(where, 'replacement worker listening');
        return;
      }
      log.debug(where, 'worker listening');
      if (up.size < config.workers) return;
      everyWorkerStarted = true;
      // The lines a single process logs, once for all the workers (the shared ports are the same).
      announceSshDoor(log, config, { port: message.sshPort, hint: message.sshHint }, { workers: config.workers });
      announceHttpDoor(log, config, { url: message.httpUrl, database: message.database }, { workers: config.workers });
    });
  };
  // Not dead: node:cluster keeps a worker whose 'exit' came before its IPC 'disconnect' in
  // cluster.workers until that disconnect, and the last exit would then wait for nothing.
  const live = () => Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && !w.isDead());
  const signalAll = (signal: NodeJS.Signals) => {
    for (const worker of live()) worker.process.kill(signal);
  };
  const finishIfIdle = () => {
    if (live().length > 0) return;
    clearTimeout(killTimer);
    void (scrapes ? scrapes.close() : Promise.resolve()).finally(() => finished(exitCode));
  };
  const stopAll = (reason: string, code: number) => {
    stopping = true;
    if (code !== 0) exitCode = code;
    clearTimeout(restartTimer);
    log.info({ reason, workers: live().length, graceMs: config.shutdownGraceMs }, 'shutting down: draining the workers');
    signalAll('SIGTERM');
    // Workers bound their own drain by the grace; this is the backstop if one hangs.
    killTimer = setTimeout(() => {
      log.error({ workers: live().length }, 'workers still running after the shutdown grace: killing them');
      exitCode = 1;
      signalAll('SIGKILL');
    }, config.shutdownGraceMs + 10_000);
    finishIfIdle();
  };

  cluster.on('exit', (worker, code, signal) => {
    const wasUp = up.delete(worker);
    const slot = slots.get(worker);
    slots.delete(worker);
    if (stopping) {
      // Killed by our SIGTERM (or a terminal's SIGINT to the group): a worker still loading, before
      // its handlers, with nothing to drain; one with them drains and exits 0 instead. SIGKILL was
      // the backstop, counted there.
      if (code !== 0 && signal !== 'SIGKILL' && signal !== 'SIGTERM' && signal !== 'SIGINT') exitCode = 1;
      finishIfIdle();
      return;
    }
    if (!wasUp && !everyWorkerStarted) {
      // The first workers failing before they listen is configuration (a port in use): restarting will not help.
      log.fatal({ worker: slot, code, signal }, 'a worker could not start; stopping');
      stopAll('a worker could not start', 1);
      return;
    }
    // Later, a death is bad luck (or the database away for a moment): start another, backing off
    // while replacements keep failing before they listen.
    if (!wasUp) failedStarts++;
    const delay = Math.min(30_000, RESTART_DELAY_MS * 2 ** failedStarts);
    log.error({ worker: slot, pid: worker.process.pid, code, signal, restartInMs: delay }, 'worker died; starting another');
    clearTimeout(restartTimer);
    restartTimer = setTimeout(() => {
      if (stopping) return;
      const held = new Set(live().map((w) => slots.get(w)));
      for (let n = 1; n <= config.workers; n++) if (!held.has(n)) fork(n);
    }, delay);
  });

  onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: killing the workers now');
      exitCode = 1;
      signalAll('SIGKILL');
      return;
    }
    // Workers drain on SIGTERM, whatever signal we got (a terminal's Ctrl-C reaches them too; they ignore SIGINT).
    stopAll(signal, 0);
  };

  for (let n = 1; n <= config.workers; n++) fork(n);
  log.info({ workers: config.workers }, 'primary started the workers');
  return done;
}

export const isClusterWorker = () => cluster.isWorker;

/**
 * In a worker, first thing: answer the primary's metric requests at once (with nothing until
 * the app has its registry), so a scrape never waits on a worker that is still starting.
 */
export function answerMetricRequests(): void {
  new AggregatorRegistry(); // installs the listener
  AggregatorRegistry.setRegistries([]);
}

/** In a worker: answer metric requests from this app's registry, and tell the primary it is up (and where). */
export function workerStarted(app: App): void {
  if (app.metricsRegistry) AggregatorRegistry.setRegistries([app.metricsRegistry]);
  const ready: ReadyMessage = { type: READY_MESSAGE, httpUrl: app.httpUrl, sshPort: app.sshPort, sshHint: app.sshHint, database: app.database.kind };
  process.send?.(ready);
}

/** This worker's number (1..WORKERS), or null outside a cluster worker. */
export const workerId = (): number | null => {
  if (!cluster.isWorker) return null;
  const slot = Number(process.env[SLOT_VARIABLE]);
  return Number.isInteger(slot) && slot > 0 ? slot : (cluster.worker?.id ?? null);
};
