import type { IncomingMessage, ServerResponse } from 'node:http';
import net from 'node:net';
import { AppError } from '../core/index.js';
import { addressMatcher } from '../net/addresses.js';

export const JSON_BODY_LIMIT = 16 * 1024;

/** Reads the whole body up to `limit` bytes; beyond that, BODY_TOO_LARGE. */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw new AppError('BODY_TOO_LARGE');
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) throw new AppError('BODY_TOO_LARGE');
      chunks.push(chunk);
    }
  } catch (err) {
    // The client hung up mid-body (Node says "aborted", ECONNRESET): its mistake, not our outage.
    if (err instanceof AppError) throw err;
    throw new AppError('BODY_INCOMPLETE');
  }
  return Buffer.concat(chunks);
}

export async function readJson(req: IncomingMessage): Promise<unknown> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') throw new AppError('UNSUPPORTED_CONTENT_TYPE');
  const raw = await readBody(req, JSON_BODY_LIMIT);
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch {
    throw new AppError('MALFORMED_JSON');
  }
}

/**
 * The API key of `Authorization: Bearer <api_key>` (the scheme in any case, one token); null when
 * the header is missing or anything else, which every door answers as a wrong key would be.
 */
export function bearerKeyOf(req: IncomingMessage): string | null {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  return match ? match[1]! : null;
}

export async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') return new URLSearchParams();
  return new URLSearchParams((await readBody(req, 4096)).toString('utf8'));
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  sendJsonText(res, status, JSON.stringify(body), headers);
}

/** sendJson for a body already serialized (one kept for a repeated answer). */
export function sendJsonText(res: ServerResponse, status: number, payload: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(payload),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(payload);
}

/** The contract's error body: {"success": false, "error": ...}, plus a detail when we have one. */
export function sendError(res: ServerResponse, err: AppError): void {
  const headers: Record<string, string> = {};
  if (err.extra.retryAfterSeconds !== undefined) headers['retry-after'] = String(err.extra.retryAfterSeconds);
  // A body we stopped reading: close rather than let the client keep streaming into a dead request.
  if (err.code === 'BODY_TOO_LARGE') headers.connection = 'close';
  const body: Record<string, unknown> = { success: false, error: err.message };
  if (err.detail) body.detail = err.detail;
  sendJson(res, err.status, body, headers);
}

const PAGE_HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  // The URL holds a token: never leak it to another site.
  'referrer-policy': 'no-referrer',
  'content-security-policy':
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
};

export function sendHtml(res: ServerResponse, status: number, html: string): void {
  res.writeHead(status, { ...PAGE_HEADERS, 'content-length': Buffer.byteLength(html) });
  res.end(html);
}

/**
 * Whose X-Forwarded-For is believed (TRUST_PROXY): the load balancers' ranges from HTTP_PROXY_FROM
 * (`config.httpProxyFrom`), or null: nobody's.
 */
export type ProxyTrust = readonly string[] | null;

const proxyMatchers = new WeakMap<readonly string[], (address: string | undefined) => boolean>();

function fromTrustedProxy(peer: string | undefined, trust: ProxyTrust): boolean {
  if (trust === null) return false;
  let matches = proxyMatchers.get(trust);
  if (!matches) proxyMatchers.set(trust, (matches = addressMatcher(trust)));
  return matches(peer);
}

/**
 * The client's address: the socket's peer, or, when that peer is one of our load balancers, the
 * right-most X-Forwarded-For entry (the one the balancer added; the rest is client-supplied). From
 * anyone else the header is ignored, not refused: the peer's own address is the one to count.
 */
export function clientIp(req: IncomingMessage, trust: ProxyTrust): string | null {
  const peer = req.socket.remoteAddress;
  if (fromTrustedProxy(peer, trust)) {
    const forwarded = req.headers['x-forwarded-for'];
    const value = Array.isArray(forwarded) ? forwarded.join(',') : forwarded;
    const last = value?.split(',').map((part) => part.trim()).filter(Boolean).at(-1);
    const address = last === undefined ? null : forwardedAddress(last);
    // Not an address (`unknown`, garbage): the balancer's own address, rather than text as an address.
    if (address !== null) return address;
  }
  return peer ?? null;
}

/**
 * The address in one X-Forwarded-For entry, or null. Balancers write it bare (`192.0.2.1`,
 * `2001:db8::1`), some with the client's port (`192.0.2.1:5678`) or IPv6 in brackets
 * (`[2001:db8::1]`, `[2001:db8::1]:443`): the port and brackets go, then it must be an IP
 * address. An IPv6 address with a port comes in brackets: without them, `:443` would read as its
 * last group, so a bare one is taken as written.
 */
export function forwardedAddress(entry: string): string | null {
  const bracketed = /^\[([^\]]*)\](?::\d{1,5})?$/.exec(entry);
  const ipv4WithPort = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(entry);
  const address = bracketed ? bracketed[1]! : ipv4WithPort ? ipv4WithPort[1]! : entry;
  if (bracketed && !net.isIPv6(address)) return null;
  return net.isIP(address) !== 0 ? address : null;
}
