import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { addressGroupOf } from '../net/addresses.js';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import { errorFields } from '../observability/log.js';
import { NO_METRICS, type DoorMetrics } from '../observability/door-metrics.js';
import { AppError, toAppError, unavailableFields, type CoreDeps } from '../core/index.js';
import { clientIp, readJson, sendError, sendHtml, sendJson, type ProxyTrust } from './io.js';
import { challenge, createApiKey, initiate, verifyKey, verifyPublicKey, whoami } from './shell-auth-api.js';
import { rotateOwnKey } from './api-keys-api.js';
import { revokeAsHolder, secretScanningRoute } from './leaked-keys-api.js';
import type { SecretScanningKeys } from './secret-scanning-keys.js';
import { limitConnections, type HttpLimits } from './connection-limits.js';
import { createRequestLimits } from './limits.js';
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
  // Every request counts, not only failures: each success mints a key (a chain of them, one by one).
  'POST /api/api-keys/rotate': { handler: rotateOwnKey, json: false, budget: 'each' },
  'POST /api/api-keys/revoke': { handler: revokeAsHolder, json: false, budget: 'failures' },
  'GET /shell-auth/verify': { handler: showConfirmPage, json: false, page: true },
  'POST /shell-auth/verify': { handler: confirmFromPage, json: false, page: true },
  'GET /healthz': { handler: health, json: false },
  'GET /readyz': { handler: ready, json: false },
};

/**
 * A request target that routes as written: parsing it as a URL would change nothing (no dot
 * segments, escapes, query or "//"), so the common request skips that (~3% of a whoami's CPU).
 */
const PLAIN_PATH = /^(?:\/[\w-]+)*\/?$/;
const BASE_URL = 'http://localhost';

/** The path a request target routes by (trailing slashes dropped), and its URL where one was parsed; null: malformed. */
export function routingOf(target: string): { path: string; url: URL | undefined } | null {
  let url: URL | undefined;
  if (!PLAIN_PATH.test(target)) {
    try {
      url = new URL(target, BASE_URL);
    } catch {
      return null;
    }
  }
  return { path: (url ? url.pathname : target).replace(/\/+$/, '') || '/', url };
}

/** Health checks: logged only at debug when they pass. */
const PROBES: ReadonlySet<string> = new Set(['GET /healthz', 'GET /readyz']);

async function health({ deps, res }: RouteContext): Promise<void> {
  await sql`SELECT 1`.execute(deps.db);
  sendJson(res, 200, { ok: true });
}

/** For load balancers: 503 while draining, or when the database, its migrations or a listener is not there. */
async function ready({ door, res }: RouteContext): Promise<void> {
  const { ready, checks } = await door.readiness();
  sendJson(res, ready ? 200 : 503, { ready, checks });
}

export function createHttpServer(
  deps: CoreDeps,
  options: {
    trustProxy: ProxyTrust;
    log: Logger;
    lookupsPerMinute: number | null;
    limits: HttpLimits;
    metrics?: DoorMetrics;
    /** GitHub's secret scanning keys (SECRET_SCANNING_KEYS_FILE); absent: its endpoint is an unknown path. */
    secretScanningKeys?: SecretScanningKeys | null;
  } & HttpDoorSettings,
): http.Server {
  const { log } = options;
  const routes: Record<string, Route> = options.secretScanningKeys
    ? { ...ROUTES, 'POST /api/secret-scanning/github': secretScanningRoute(options.secretScanningKeys) }
    : ROUTES;
  const metrics = options.metrics ?? NO_METRICS;
  const door: HttpDoorSettings = { sshHint: options.sshHint, readiness: options.readiness };
  const requestLimits = createRequestLimits(deps, { lookupsPerMinute: options.lookupsPerMinute });
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
    const target = req.url ?? '/';
    const routed = routingOf(target);
    if (!routed) {
      sendJson(res, 400, { success: false, error: 'Malformed request URL' });
      return;
    }
    const { path } = routed;
    let url = routed.url;
    const urlOf = () => (url ??= new URL(target, BASE_URL));
    const routeKey = `${req.method} ${path}`;
    const route = routes[routeKey];
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
    void handle(route, path, req, res, urlOf).catch((err) => {
      log.error({ err: errorFields(err) }, 'unhandled error in HTTP handler');
      if (!res.headersSent) sendError(res, new AppError('INTERNAL'));
      else res.destroy();
    });
  });

  async function handle(route: Route | undefined, path: string, req: IncomingMessage, res: ServerResponse, urlOf: () => URL) {
    if (!route) {
      const known = Object.keys(routes).some((key) => key.endsWith(` ${path}`));
      sendJson(res, known ? 405 : 404, { success: false, error: known ? 'Method not allowed' : 'Not found' });
      req.resume();
      return;
    }
    const origin: RouteContext['origin'] = { channel: 'http', ip: clientIp(req, options.trustProxy) };
    // An IPv6 client counts as its network: one host often has a whole /64.
    const addressGroup = addressGroupOf(origin.ip ?? '', options.limits.ipv6Prefix);
    try {
      const refusal = await requestLimits.before(route.budget, addressGroup);
      if (refusal) throw refusal;
      const body = route.json ? await readJson(req) : undefined;
      await route.handler({ deps, door, req, res, url: urlOf, body, origin });
    } catch (err) {
      const appError = await requestLimits.after(route.budget, addressGroup, toAppError(err));
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
