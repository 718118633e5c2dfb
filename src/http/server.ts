import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Config } from '../config/config.js';
import { addressGroupOf } from '../net/addresses.js';
import { FairShares } from '../limits/fair-shares.js';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import { errorFields } from '../observability/log.js';
import { NO_METRICS, type DoorMetrics } from '../observability/door-metrics.js';
import { AppError, budgetSpent, eventsOf, takeFromBudget, toAppError, unavailableFields, type Budget, type CoreDeps, type ErrorCode } from '../core/index.js';
import { clientIp, readJson, sendError, sendHtml, sendJson, type ProxyTrust } from './io.js';
import { challenge, createApiKey, initiate, verifyKey, verifyPublicKey, whoami } from './shell-auth-api.js';
import { PerIpRateLimiter } from './rate-limit.js';
import type { HttpDoorSettings, Route, RouteContext } from './route.js';
import { confirmFromPage, showConfirmPage } from './verify-page.js';
import { showHomePage } from './home-page.js';

const ROUTES: Record<string, Route> = {
  'GET /': { handler: showHomePage, json: false, page: true },
  'POST /api/shell-auth': { handler: initiate, json: true, budget: 'refusals' },
  'POST /api/shell-auth/challenge': { handler: challenge, json: true, budget: 'each' },
  'POST /api/shell-auth/verify-key': { handler: verifyKey, json: true, budget: 'each' },
  'POST /api/shell-auth/verify-public-key': { handler: verifyPublicKey, json: true, budget: 'each' },
  'POST /api/shell-auth/api-keys': { handler: createApiKey, json: true, budget: 'each' },
  'GET /api/whoami': { handler: whoami, json: false, budget: 'failures' },
  'GET /shell-auth/verify': { handler: showConfirmPage, json: false, page: true },
  'POST /shell-auth/verify': { handler: confirmFromPage, json: false, page: true },
  'GET /healthz': { handler: health, json: false },
  'GET /readyz': { handler: ready, json: false },
};

/** Health checks: logged only at debug when they pass. */
const PROBES: ReadonlySet<string> = new Set(['GET /healthz', 'GET /readyz']);

/** Answers that tell a prober something about accounts: counted against the lookup budget. */
const ACCOUNT_REFUSALS: ReadonlySet<ErrorCode> = new Set(['KEY_TAKEN', 'BASE_ACCOUNT_MISSING', 'BASE_ACCOUNT_UNVERIFIED']);

async function health({ deps, res }: RouteContext): Promise<void> {
  await sql`SELECT 1`.execute(deps.db);
  sendJson(res, 200, { ok: true });
}

/** For load balancers: 503 while draining, or when the database, its migrations or a listener is not there. */
async function ready({ door, res }: RouteContext): Promise<void> {
  const { ready, checks } = await door.readiness();
  sendJson(res, ready ? 200 : 503, { ready, checks });
}

export type HttpLimits = Config['http'] & {
  ipv6Prefix: number;
  /** A peer whose connections carry many clients (the balancer, with TRUST_PROXY): no per-address cap. */
  carriesManyClients?: (address: string | undefined) => boolean;
};

export function createHttpServer(
  deps: CoreDeps,
  options: { trustProxy: ProxyTrust; log: Logger; lookupsPerMinute: number | null; limits: HttpLimits; metrics?: DoorMetrics } & HttpDoorSettings,
): http.Server {
  const { log } = options;
  const metrics = options.metrics ?? NO_METRICS;
  const door: HttpDoorSettings = { sshHint: options.sshHint, readiness: options.readiness };
  // In memory first (per instance, no I/O for a flood), then the database (shared by all instances).
  const limiter = options.lookupsPerMinute === null ? null : new PerIpRateLimiter(options.lookupsPerMinute);
  const lookups: Budget | null =
    options.lookupsPerMinute === null ? null : { name: 'http-lookups', limit: options.lookupsPerMinute, windowMs: 60_000 };

  // `failures`: addresses this instance found over budget, until their window ends (their further
  // failures are 429 with no budget write).
  const failedTooOften = new Map<string, number>();
  async function budgetWait(route: Route, ip: string): Promise<number | null> {
    // `failures` is judged after the answer: a valid key is answered whatever the address did.
    if (!lookups || !limiter || !route.budget || route.budget === 'failures') return null;
    if (route.budget === 'refusals') return budgetSpent(deps, lookups, ip);
    return limiter.take(ip) ?? (await takeFromBudget(deps, lookups, ip));
  }
  /** After a failed authentication: counts it; once over budget, the answer becomes 429. */
  async function failureOverBudget(ip: string): Promise<number | null> {
    if (!lookups) return null;
    const until = failedTooOften.get(ip);
    if (until !== undefined && until > Date.now()) return Math.ceil((until - Date.now()) / 1000);
    failedTooOften.delete(ip);
    const wait = await takeFromBudget(deps, lookups, ip).catch(() => null);
    if (wait === null) return null;
    if (failedTooOften.size >= 10_000) failedTooOften.clear(); // a bound; forgetting costs one write
    failedTooOften.set(ip, Date.now() + wait * 1000);
    return wait;
  }
  const { limits } = options;
  const server = http.createServer({
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    // Node checks the two timeouts above only this often (30 s by default): a connection that
    // sends nothing would live twice as long as stated.
    connectionsCheckingInterval: 1_000,
  }, (req, res) => {
    const started = process.hrtime.bigint();
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      sendJson(res, 400, { success: false, error: 'Malformed request URL' });
      return;
    }
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const routeKey = `${req.method} ${path}`;
    const route = ROUTES[routeKey];
    // Log the path only: a verification link's query string is a secret.
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      // A balancer's health checks (one a second per instance) at debug while they pass; a failing
      // one stays at info: it says why an instance left the pool.
      const level = PROBES.has(routeKey) && res.statusCode === 200 ? 'debug' : 'info';
      log[level]({ method: req.method, path, status: res.statusCode, ms: Math.round(ms * 10) / 10 }, 'http request');
      // The route table's key, never the raw path or method: those are the client's to choose.
      metrics.httpRequest(route ? routeKey : 'unknown', res.statusCode, ms / 1000);
    });
    void handle(route, path, req, res, url).catch((err) => {
      log.error({ err: errorFields(err) }, 'unhandled error in HTTP handler');
      if (!res.headersSent) sendError(res, new AppError('INTERNAL'));
      else res.destroy();
    });
  });

  async function handle(route: Route | undefined, path: string, req: IncomingMessage, res: ServerResponse, url: URL) {
    if (!route) {
      const known = Object.keys(ROUTES).some((key) => key.endsWith(` ${path}`));
      sendJson(res, known ? 405 : 404, { success: false, error: known ? 'Method not allowed' : 'Not found' });
      req.resume();
      return;
    }
    const origin: RouteContext['origin'] = { channel: 'http', ip: clientIp(req, options.trustProxy) };
    // An IPv6 client counts as its network: one host often has a whole /64.
    const budgetKey = addressGroupOf(origin.ip ?? '', options.limits.ipv6Prefix);
    try {
      const wait = await budgetWait(route, budgetKey);
      if (wait !== null) {
        eventsOf(deps).rateLimited('http_lookups');
        throw new AppError('RATE_LIMITED', { retryAfterSeconds: wait });
      }
      const body = route.json ? await readJson(req) : undefined;
      await route.handler({ deps, door, req, res, url, body, origin });
    } catch (err) {
      let appError = toAppError(err);
      if (route.budget === 'refusals' && lookups && ACCOUNT_REFUSALS.has(appError.code)) {
        await takeFromBudget(deps, lookups, budgetKey).catch(() => null);
      }
      if (route.budget === 'failures' && appError.code === 'INVALID_API_KEY') {
        const wait = await failureOverBudget(budgetKey);
        if (wait !== null) {
          eventsOf(deps).rateLimited('http_lookups');
          appError = new AppError('RATE_LIMITED', { retryAfterSeconds: wait });
        }
      }
      // An outage (the database away, no file descriptors left) in one line; a 500 is a bug: its stack.
      if (appError.code === 'UNAVAILABLE') log.warn({ ...unavailableFields(err), path }, 'request failed: service unavailable');
      else if (appError.status >= 500) log.error({ err: errorFields(err), path }, 'request failed');
      if (route.page) sendHtml(res, appError.status, `<!doctype html><title>Error</title><p>${appError.message}</p>`);
      else sendError(res, appError);
    }
  }

  // The answer, then the socket destroyed, not just ended: the server allows half-open sockets,
  // and a client that never closes its side would keep an ended one (and its slot) forever.
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    if (!socket.writable) return void socket.destroy();
    socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\n\r\n`, () => socket.destroy());
    setTimeout(() => socket.destroy(), 1_000).unref(); // a client that does not even read
  });
  limitConnections(server, limits, metrics);
  return server;
}

/**
 * Caps open connections in all and per address, closing the ones beyond at once: each holds a
 * file descriptor, and idle ones cost the client nothing. (Not `server.maxConnections`: under
 * node:cluster a worker at its cap hands the connection back to the primary, which offers it
 * again and again, spinning, instead of closing it.)
 */
function limitConnections(server: http.Server, limits: HttpLimits, metrics: DoorMetrics): void {
  const open = new FairShares<Socket>();
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress;
    const group = limits.carriesManyClients?.(address) ? 'balancers' : addressGroupOf(address ?? '', limits.ipv6Prefix);
    const refusal =
      open.size >= limits.maxConnections ? 'http_connections_total' : group !== 'balancers' && open.sizeOf(group) >= limits.maxConnectionsPerIp ? 'http_connections_per_ip' : null;
    if (refusal) {
      metrics.httpConnectionRefused();
      metrics.events.rateLimited(refusal);
      socket.destroy();
      return;
    }
    open.add(group, socket);
    socket.once('close', () => open.delete(group, socket));
  });
}
