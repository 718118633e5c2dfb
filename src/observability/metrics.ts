import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { API_KEY_LOOKUP_SOURCES, BILLING_CHECK_RESULTS, RATE_LIMIT_NAMES, type CoreEvents } from '../core/index.js';
import type { PoolStats } from '../db/database.js';
import type { Channel } from '../db/schema.js';
import { SSH_AUTH_RESULTS, SSH_CONNECTION_OUTCOMES, type DoorMetrics } from './door-metrics.js';

export type AppMetrics = DoorMetrics & {
  registry: Registry;
  /** Reads the database pool at every scrape (Postgres; PGlite has none, and the gauges stay absent). */
  watchPool(stats: () => PoolStats): void;
};

/** The doors that mint keys for users; the admin CLI's mints are its own process's business. */
const MINTING_DOORS = ['http', 'ssh'] as const satisfies readonly Channel[];

// login waits up to 10 minutes for the email link: the buckets reach that far.
const COMMAND_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
const HTTP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

type Registers = Registry[];

/**
 * The service's metrics, on a registry of its own (several apps in one process, as in the tests,
 * do not collide), with Node's default process metrics. Label values come from fixed sets only,
 * and each known one starts at 0, so rate() and absence alerts work from the first scrape.
 */
export function createMetrics(options: { worker?: number | null } = {}): AppMetrics {
  const registry = new Registry();
  collectProcessMetrics(registry, options.worker ?? null);
  const registers = [registry];
  // Registered in this order, which is the order a scrape lists them in.
  const ssh = sshDoorMetrics(registers);
  const http = httpDoorMetrics(registers);
  const events = coreEventMetrics(registers);
  return { registry, events, watchPool: (stats) => watchPool(registers, stats), ...ssh, ...http };
}

/**
 * Node's default process metrics. Under WORKERS the primary adds up what the workers report, which
 * suits the service's counters but not a process's own figures (process_max_fds, start time, heap,
 * event loop lag): those keep a series per worker, labelled with its number (1..WORKERS, reused by
 * a replacement).
 */
function collectProcessMetrics(registry: Registry, worker: number | null): void {
  collectDefaultMetrics({ register: registry, ...(worker === null ? {} : { labels: { worker: String(worker) } }) });
  // prom-client leaves the start time out of a cluster's scrape ('omit': a sum of start times means
  // nothing); one series per worker means something (when it was last restarted), so keep it.
  const startTime = worker === null ? undefined : (registry.getSingleMetric('process_start_time_seconds') as { aggregator?: string } | undefined);
  if (startTime) startTime.aggregator = 'sum';
}

type SshDoorMetrics = Pick<DoorMetrics, 'sshConnectionRefused' | 'sshConnectionOpened' | 'sshConnectionClosed' | 'sshAuthAttempt' | 'sshCommand'>;

/** Connections by how far they got, authentication answers, commands and their durations. */
function sshDoorMetrics(registers: Registers): SshDoorMetrics {
  const connections = new Counter({
    name: 'shell_auth_ssh_connections_total',
    help: 'SSH connections, counted when they end (or are refused), by how far they got.',
    labelNames: ['outcome'] as const,
    registers,
  });
  const open = new Gauge({ name: 'shell_auth_ssh_connections_open', help: 'SSH connections open now.', registers });
  const auth = new Counter({
    name: 'shell_auth_ssh_auth_attempts_total',
    help: 'SSH authentication requests by answer ("none" probes not counted).',
    labelNames: ['result'] as const,
    registers,
  });
  const commands = new Counter({
    name: 'shell_auth_ssh_commands_total',
    help: 'SSH commands run (exec or shell line), by command name and exit code.',
    labelNames: ['command', 'exit_code'] as const,
    registers,
  });
  const commandSeconds = new Histogram({
    name: 'shell_auth_ssh_command_duration_seconds',
    help: 'Time SSH commands took, by command name (login includes waiting for the email link).',
    labelNames: ['command'] as const,
    buckets: COMMAND_BUCKETS,
    registers,
  });
  for (const outcome of SSH_CONNECTION_OUTCOMES) connections.inc({ outcome }, 0);
  for (const result of SSH_AUTH_RESULTS) auth.inc({ result }, 0);
  return {
    sshConnectionRefused: () => connections.inc({ outcome: 'refused_limit' }),
    sshConnectionOpened: () => open.inc(),
    sshConnectionClosed(outcome) {
      open.dec();
      connections.inc({ outcome });
    },
    sshAuthAttempt: (result) => auth.inc({ result }),
    sshCommand(command, exitCode, seconds) {
      commands.inc({ command, exit_code: String(exitCode) });
      commandSeconds.observe({ command }, seconds);
    },
  };
}

/** Requests by route and status, their durations, and connections refused by a cap. */
function httpDoorMetrics(registers: Registers): Pick<DoorMetrics, 'httpConnectionRefused' | 'httpRequest'> {
  const requests = new Counter({
    name: 'shell_auth_http_requests_total',
    help: 'HTTP requests answered, by route ("unknown" when none matched) and status code.',
    labelNames: ['route', 'status'] as const,
    registers,
  });
  const refused = new Counter({
    name: 'shell_auth_http_connections_refused_total',
    help: 'HTTP connections closed at once by HTTP_MAX_CONNECTIONS or HTTP_MAX_CONNECTIONS_PER_IP (shell_auth_rate_limited_total says which).',
    registers,
  });
  const seconds = new Histogram({
    name: 'shell_auth_http_request_duration_seconds',
    help: 'Time from request to the end of the response, by route.',
    labelNames: ['route'] as const,
    buckets: HTTP_BUCKETS,
    registers,
  });
  return {
    httpConnectionRefused: () => refused.inc(),
    httpRequest(route, status, took) {
      requests.inc({ route, status: String(status) });
      seconds.observe({ route }, took);
    },
  };
}

/** What the core reports (CoreEvents): keys minted and looked up, verification mail, rate limits, billing checks. */
function coreEventMetrics(registers: Registers): CoreEvents {
  const minted = new Counter({
    name: 'shell_auth_api_keys_minted_total',
    help: 'API keys created, by door (http, ssh).',
    labelNames: ['door'] as const,
    registers,
  });
  const mailsQueued = new Counter({
    name: 'shell_auth_emails_queued_total',
    help: 'Verification emails written to the outbox.',
    registers,
  });
  const mailsSent = new Counter({ name: 'shell_auth_emails_sent_total', help: 'Verification emails the mail server accepted.', registers });
  const mailSendErrors = new Counter({
    name: 'shell_auth_email_send_errors_total',
    help: 'Failed attempts to send a verification email (each is retried while its link lasts).',
    registers,
  });
  const mailsFailed = new Counter({
    name: 'shell_auth_emails_failed_total',
    help: 'Verification emails given up on: their link expired (or was used) before they could be sent.',
    registers,
  });
  const mailsPending = new Gauge({
    name: 'shell_auth_emails_pending',
    help: 'Verification emails in the outbox not yet sent (all instances), as this instance last counted.',
    // Every worker counts the same table: under WORKERS the primary takes the largest count, not the sum.
    aggregator: 'max',
    registers,
  });
  const rateLimited = new Counter({
    name: 'shell_auth_rate_limited_total',
    help: 'Requests or connections refused by a rate limit, by limit.',
    labelNames: ['limit'] as const,
    registers,
  });
  const billing = new Counter({
    name: 'shell_auth_billing_checks_total',
    help: 'Billing checks before minting, by result (error: the check failed, which refuses the mint).',
    labelNames: ['result'] as const,
    registers,
  });
  const apiKeyLookups = new Counter({
    name: 'shell_auth_api_key_lookups_total',
    help: 'API keys authenticated (GET /api/whoami), by where the key was found: the short-lived cache or the database.',
    labelNames: ['source'] as const,
    registers,
  });
  const sshIdentityLookups = new Counter({
    name: 'shell_auth_ssh_identity_lookups_total',
    help: "SSH logins' identities (a key's account, orgs and policies), by where they were found: the short-lived cache or the database.",
    labelNames: ['source'] as const,
    registers,
  });
  for (const limit of RATE_LIMIT_NAMES) rateLimited.inc({ limit }, 0);
  for (const door of MINTING_DOORS) minted.inc({ door }, 0);
  for (const result of BILLING_CHECK_RESULTS) billing.inc({ result }, 0);
  for (const source of API_KEY_LOOKUP_SOURCES) {
    apiKeyLookups.inc({ source }, 0);
    sshIdentityLookups.inc({ source }, 0);
  }
  return {
    apiKeyMinted: (door) => minted.inc({ door }),
    mailQueued: () => mailsQueued.inc(),
    mailSent: () => mailsSent.inc(),
    mailSendFailed: () => mailSendErrors.inc(),
    mailAbandoned: () => mailsFailed.inc(),
    mailPending: (count) => mailsPending.set(count),
    billingChecked: (result) => billing.inc({ result }),
    apiKeyLookup: (source) => apiKeyLookups.inc({ source }),
    sshIdentityLookup: (source) => sshIdentityLookups.inc({ source }),
    rateLimited: (limit) => rateLimited.inc({ limit }),
  };
}

/** The database pool, read at every scrape. Registered only for a database with a pool (Postgres): PGlite has none, and shows none. */
function watchPool(registers: Registers, stats: () => PoolStats): void {
  new Gauge({
    name: 'shell_auth_db_pool_connections',
    help: 'Database pool connections by state.',
    labelNames: ['state'] as const,
    registers,
    collect() {
      const now = stats();
      this.set({ state: 'in_use' }, Math.max(0, now.total - now.idle));
      this.set({ state: 'idle' }, now.idle);
    },
  });
  new Gauge({
    name: 'shell_auth_db_pool_waiting',
    help: 'Queries waiting for a database pool connection.',
    registers,
    collect() {
      this.set(stats().waiting);
    },
  });
  let statementsSeen = 0;
  new Counter({
    name: 'shell_auth_db_statements_total',
    help: 'Statements sent to the database (BEGIN and COMMIT included): round trips.',
    registers,
    collect() {
      const now = stats().statements;
      this.inc(now - statementsSeen);
      statementsSeen = now;
    },
  });
  new Gauge({
    name: 'shell_auth_db_pool_max_connections',
    help: 'Size limit of the database pool.',
    registers,
    collect() {
      this.set(stats().max);
    },
  });
}

export type MetricsServer = { url: string; close(): Promise<void> };

/** The scrape endpoint, on its own listener: `GET /metrics`, nothing else. */
/** What a scrape reads: one registry, or (under WORKERS) the primary's view of every worker's. */
export type ScrapeSource = { metrics(): Promise<string>; contentType: string };

export async function listenForScrapes(registry: ScrapeSource, port: number, host: string): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    // One scrape per connection: scrapes are seconds apart, longer than any keep-alive would last.
    res.shouldKeepAlive = false;
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('Not found: try /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('Method not allowed\n');
      return;
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': registry.contentType });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (err: Error) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`could not collect metrics: ${err.message}\n`);
      },
    );
  });
  server.headersTimeout = 15_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${shown}:${address.port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
