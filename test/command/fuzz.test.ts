import http from 'node:http';
import net from 'node:net';
import { Writable } from 'node:stream';
import fc from 'fast-check';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ERRORS,
  findUserByEmail,
  mintApiKey,
  orgsOfUser,
  resolveSshIdentity,
  revokeApiKey,
  type CoreDeps,
  type ErrorCode,
  type Identity,
} from '../../src/core/index.js';
import { runCommandLine } from '../../src/ssh/commands/index.js';
import { startTestApp, tokenOf, type TestApp } from '../support/app.js';
import { sshContext } from '../support/in-process.js';
import { publicKeyOf, startTestCore, type TestCore } from '../support/core.js';
import {
  apiKeyArb,
  commandLineArb,
  emailArb,
  field,
  formContentType,
  headerString,
  jsonBody,
  jsonContentType,
  keyLineArb,
  labelArb,
  mutated,
  nastyString,
  noteArb,
  orgNameArb,
  percentEncode,
  rawQueryString,
  requestEntries,
  type FieldValue,
} from '../support/fuzz-inputs.js';
import { usingPostgres } from '../support/database.js';
import { makeKey, uniqueEmail } from '../support/keys.js';

/**
 * Seeded property tests over both doors. Every run is reproducible from its seed: on failure
 * fast-check prints the seed, the path and the shrunk counterexample; pass `seed` and `path`
 * back to fc.assert to replay it. (The inputs are a function of the seed; the fixture's keys and
 * emails are made fresh each run, so a replay sees other key bytes in the same places.)
 *
 * HTTP: each endpoint of the real service, over loopback, gets 1,000 generated requests mixing
 * valid-looking bodies with garbage. Properties: no 5xx, nothing logged at error level, and
 * every answer is one the contract documents (status, shape, error text and its status).
 * SSH: 1,000 generated command lines per identity (an unlinked key, an account) through the
 * in-process command layer. Properties: never throws, exit 0/1/2, a failure says why on
 * stderr, nothing logged at error level.
 *
 * FUZZ_STATS=1 prints what the answers were, to check the generators still reach deep paths.
 * It runs in the Postgres project only: the doors under test are the same on both databases, and
 * twice the runs would double its share of CI for little.
 */

const RUNS = 1000;
const PROPERTY_TIMEOUT = 240_000;

const STATUSES = new Set([200, 400, 401, 402, 403, 404, 405, 409, 410, 429]);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** The router's own answers, outside the error table. */
const ROUTE_MESSAGES = new Map([
  ['Malformed request URL', 400],
  ['Method not allowed', 405],
  ['Not found', 404],
]);

/** The messages (and their statuses) of those codes that exist in the error table right now. */
function messagesOf(codes: string[]): Map<string, number> {
  const table = ERRORS as Record<string, { status: number; message: string } | undefined>;
  const out = new Map<string, number>();
  for (const code of codes) {
    const entry = table[code];
    if (entry) out.set(entry.message, entry.status);
  }
  return out;
}

/** Every JSON endpoint may answer these: the body could not be read as JSON. */
const BODY_ERRORS: ErrorCode[] = ['MALFORMED_JSON', 'UNSUPPORTED_CONTENT_TYPE', 'BODY_TOO_LARGE'];

function isErrorLogLine(line: string): boolean {
  try {
    const level = (JSON.parse(line) as { level?: unknown }).level;
    return typeof level === 'number' && level >= 50;
  } catch {
    return false;
  }
}

class PropertyViolation extends Error {}
function ensure(condition: unknown, message: string): asserts condition {
  if (!condition) throw new PropertyViolation(message);
}

function exactKeys(body: Record<string, unknown>, required: string[], optional: string[] = []): void {
  for (const key of required) ensure(key in body, `missing "${key}"`);
  const allowed = new Set([...required, ...optional]);
  for (const key of Object.keys(body)) ensure(allowed.has(key), `unexpected key "${key}"`);
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isDate = (v: unknown) => typeof v === 'string' && !Number.isNaN(Date.parse(v));

function tally(stats: Map<string, Map<string, number>>, group: string, key: string): void {
  const counts = stats.get(group) ?? new Map<string, number>();
  counts.set(key, (counts.get(key) ?? 0) + 1);
  stats.set(group, counts);
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP client: any bytes, any content type, chunked or not, one connection per request.
// ---------------------------------------------------------------------------------------------

type Outgoing = { method: string; path: string; headers: Record<string, string | string[] | undefined>; body?: Buffer; chunked?: boolean };
type Answer = { status: number; headers: http.IncomingHttpHeaders; text: string };

function send(baseUrl: string, request: Outgoing): Promise<Answer> {
  const base = new URL(baseUrl);
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(request.headers)) if (value !== undefined) headers[name] = value;
  return new Promise<Answer>((resolve, reject) => {
    const req = http.request(
      { host: base.hostname, port: base.port, method: request.method, path: request.path, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.setTimeout(15_000, () => req.destroy(new Error('no answer within 15 s')));
    const body = request.body;
    if (body && request.chunked && body.length > 1) {
      req.write(body.subarray(0, body.length >> 1));
      req.end(body.subarray(body.length >> 1));
    } else {
      req.end(body);
    }
  });
}

function headSize(request: Outgoing): number {
  return request.path.length + Object.entries(request.headers).reduce((n, [k, v]) => n + k.length + String(v ?? '').length + 4, 0);
}

function describeRequest(request: Outgoing): string {
  const body = request.body ? request.body.toString('utf8') : '';
  const path = request.path.length > 300 ? `${request.path.slice(0, 300)}...(${request.path.length} chars)` : request.path;
  return `${request.method} ${path} ${JSON.stringify(request.headers).slice(0, 500)} body(${request.body?.length ?? 0} bytes)=${JSON.stringify(body.slice(0, 300))}`;
}

// ---------------------------------------------------------------------------------------------
// Raw bytes on a socket, for what an HTTP client library would never send.
// ---------------------------------------------------------------------------------------------

type Wire = { chunks: Buffer[]; hangUp: 'end' | 'destroy' };

/** Writes the chunks, hangs up (FIN or RST), and returns whatever the server sent until it closed. */
function sendRaw(baseUrl: string, wire: Wire): Promise<string> {
  const base = new URL(baseUrl);
  return new Promise<string>((resolve) => {
    const socket = net.connect(Number(base.port), base.hostname);
    const received: Buffer[] = [];
    const done = () => resolve(Buffer.concat(received).toString('latin1'));
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', done);
    socket.setTimeout(3000, () => socket.destroy());
    socket.on('connect', () => {
      for (const chunk of wire.chunks) socket.write(chunk);
      if (wire.hangUp === 'destroy') setTimeout(() => socket.destroy(), 5);
      else socket.end();
    });
  });
}

/** An HTTP/1.1 request as bytes, with an honest Content-Length. */
function requestBytes(request: Outgoing): Buffer {
  const body = request.body ?? Buffer.alloc(0);
  const lines = [`${request.method} ${request.path} HTTP/1.1`, 'Host: fuzz'];
  for (const [name, value] of Object.entries(request.headers)) {
    for (const v of Array.isArray(value) ? value : value === undefined ? [] : [value]) lines.push(`${name}: ${v}`);
  }
  if (request.method !== 'GET') lines.push(`Content-Length: ${body.length}`);
  return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), body]);
}

// ---------------------------------------------------------------------------------------------
// HTTP door
// ---------------------------------------------------------------------------------------------

type Checker = (res: Answer, body: unknown) => void;
type Endpoint = { name: string; request: fc.Arbitrary<Outgoing>; check: Checker };

type Fixture = {
  verifiedEmail: string;
  verifiedKey: string;
  emails: string[];
  keyLines: string[];
  orgNames: string[];
  apiKey: string;
  revokedApiKey: string;
  pendingToken: string;
  usedToken: string;
};

describe.runIf(usingPostgres)('fuzz: the HTTP door', () => {
  let t: TestApp;
  let fx: Fixture;
  let endpoints: Record<'initiate' | 'verifyKey' | 'verifyPublicKey' | 'apiKeys' | 'whoami', Endpoint>;
  const stats = new Map<string, Map<string, number>>();

  beforeAll(async () => {
    // Rate limits would answer most requests with 429 (startTestApp turns the per-IP ones off too).
    // Many HTTP mints per confirmation, so the fuzz keeps reaching the mint path after the first.
    t = await startTestApp({ HTTP_LOOKUPS_PER_MINUTE: '0', MAIL_PER_IP_HOURLY: '0', HTTP_TRUST_MINTS: '100000' });
    const verifiedKey = makeKey('ed25519');
    const pendingKey = makeKey('ecdsa');
    const otherKeys = [makeKey('ed25519'), makeKey('rsa', 2048), makeKey('ecdsa', 384)];

    // One pair inside its HTTP trust window, and the link that opened it (used now).
    const verifiedEmail = uniqueEmail('fuzzv');
    await t.verifyByEmail(verifiedEmail, verifiedKey.publicKey);
    const usedToken = tokenOf(t.smtp.mailsTo(verifiedEmail)[0]!.link!);

    // One link still pending: the POST property may confirm it (once).
    const pendingEmail = uniqueEmail('fuzzp');
    const started = await t.post('/api/shell-auth', { email: pendingEmail, ssh_public_key: pendingKey.publicKey });
    expect(started.status, started.text).toBe(200);
    const pendingToken = tokenOf((await t.smtp.waitForMail(pendingEmail)).link!);

    // A live API key and a revoked one, for whoami.
    const user = (await findUserByEmail(t.app.deps.db, verifiedEmail))!;
    const orgNames = (await orgsOfUser(t.app.deps.db, user)).map((o) => o.name);
    const origin = { channel: 'http' as const, ip: '127.0.0.1' };
    const live = await mintApiKey(t.app.deps, { user, sshKeyId: null, label: 'fuzz-whoami', origin });
    const revoked = await mintApiKey(t.app.deps, { user, sshKeyId: null, label: 'fuzz-revoked', origin });
    await revokeApiKey(t.app.deps, user, revoked.api_key_id, origin);

    fx = {
      verifiedEmail,
      verifiedKey: verifiedKey.publicKey,
      emails: [verifiedEmail, pendingEmail, uniqueEmail('fuzzn'), uniqueEmail('fuzzm')],
      keyLines: [verifiedKey.publicKey, pendingKey.publicKey, ...otherKeys.map((k) => k.publicKey)],
      orgNames,
      apiKey: live.api_key,
      revokedApiKey: revoked.api_key,
      pendingToken,
      usedToken,
    };
    endpoints = buildEndpoints();
  }, 120_000);

  afterAll(async () => {
    if (process.env.FUZZ_STATS) {
      for (const [name, counts] of stats) console.info(`fuzz http ${name}:`, Object.fromEntries(counts));
      console.info(`fuzz http: ${t?.smtp.messages.length} mails sent`);
    }
    await t?.close();
  });

  /**
   * Sends one generated request and checks what holds for every answer: a documented status,
   * no 5xx, JSON that parses under a JSON content type, Retry-After on 429, no error logged;
   * then the endpoint's own checks. A failure names the request and the answer.
   */
  async function exchange(name: string, request: Outgoing, check: Checker): Promise<void> {
    const logsBefore = t.logs.length;
    let res: Answer;
    try {
      res = await send(t.url, request);
    } catch (err) {
      throw new PropertyViolation(`${name}: transport error ${(err as Error).message} for ${describeRequest(request)}`);
    }
    tally(stats, name, String(res.status));
    if (process.env.FUZZ_STATS && res.status === 400) {
      const m = /"error":"([^"]*)"(?:,"detail":"([^":]*))?/.exec(res.text);
      tally(stats, `${name} 400s`, m ? `${m[1]} ${m[2] ?? ''}`.trim() : 'not JSON');
    }
    // Bytes outside ASCII in the request target are not HTTP, and a request head over Node's
    // 16 KB limit is not read: Node's parser refuses both before any route runs, and the
    // server's clientError handler answers a bare 400.
    if (res.status === 400 && res.headers['content-type'] === undefined && res.text === '' && (/[^\x21-\x7e]/.test(request.path) || headSize(request) > 15 * 1024)) {
      return;
    }
    try {
      ensure(res.status < 500, `a ${res.status}`);
      ensure(STATUSES.has(res.status), `undocumented status ${res.status}`);
      let body: unknown;
      if (request.method !== 'HEAD' && String(res.headers['content-type']).startsWith('application/json')) {
        ensure(res.headers['content-type'] === 'application/json; charset=utf-8', `content-type ${res.headers['content-type']}`);
        try {
          body = JSON.parse(res.text);
        } catch {
          throw new PropertyViolation('a JSON content type with a body that is not JSON');
        }
      }
      if (res.status === 429) ensure(/^\d+$/.test(String(res.headers['retry-after'])), '429 without Retry-After');
      check(res, body);
      const errors = t.logs.slice(logsBefore).filter(isErrorLogLine);
      ensure(errors.length === 0, `logged at error level: ${errors.join('\n')}`);
    } catch (err) {
      if (!(err instanceof PropertyViolation)) throw err;
      throw new PropertyViolation(`${name}: ${err.message}\n  request: ${describeRequest(request)}\n  answer: ${res.status} ${res.text.slice(0, 500)}`);
    }
  }

  /** An error body of the contract: {success: false, error, detail?}; its text one of `codes`' messages, with that code's status. */
  function expectError(res: Answer, body: unknown, codes: string[], routeMessages = false): void {
    ensure(isObject(body), 'an error answer that is not a JSON object');
    exactKeys(body, ['success', 'error'], ['detail']);
    ensure(body.success === false, 'success is not false');
    ensure(typeof body.error === 'string', 'error is not a string');
    ensure(body.detail === undefined || (typeof body.detail === 'string' && body.detail !== ''), 'detail is not a non-empty string');
    const allowed = messagesOf([...BODY_ERRORS, ...codes]);
    const status = allowed.get(body.error) ?? (routeMessages ? ROUTE_MESSAGES.get(body.error) : undefined);
    ensure(status !== undefined, `error "${body.error}" is not one this endpoint documents`);
    ensure(status === res.status, `error "${body.error}" came with status ${res.status}, the table says ${status}`);
  }

  /** A POST of a generated body, with a generated content type, path suffix and transfer. */
  function jsonRequest(path: string, body: fc.Arbitrary<Buffer>): fc.Arbitrary<Outgoing> {
    return fc
      .record({
        body,
        contentType: jsonContentType,
        suffix: fc.constantFrom('', '', '', '', '', '', '/', '//', '?x=1', '/?token=abc', '#frag'),
        chunked: fc.boolean(),
        extra: fc.option(
          fc.record({ 'x-forwarded-for': headerString, 'content-encoding': fc.constantFrom('gzip', 'identity', 'br') }, { requiredKeys: [] }),
          { freq: 5 },
        ),
      })
      .map(({ body, contentType, suffix, chunked, extra }) => ({
        method: 'POST',
        path: path + suffix,
        headers: { 'content-type': contentType, ...(extra ?? {}) },
        body,
        chunked,
      }));
  }

  function buildEndpoints(): typeof endpoints {
    const email = () => field(emailArb(fx.emails));
    const key = () => field(keyLineArb(fx.keyLines));
    /** Request entries where a third of the time the (email, key) pair is the verified one, variants included. */
    const pairEntries = (extra: Record<string, fc.Arbitrary<FieldValue>> = {}) =>
      fc.oneof(
        {
          arbitrary: requestEntries({
            email: field(fc.constantFrom(fx.verifiedEmail, ` ${fx.verifiedEmail.toUpperCase()}\t`)),
            ssh_public_key: field(keyLineArb([fx.verifiedKey])),
            ...extra,
          }),
          weight: 1,
        },
        { arbitrary: requestEntries({ email: email(), ssh_public_key: key(), ...extra }), weight: 2 },
      );

    const apiKey = apiKeyArb(fx.apiKey, fx.revokedApiKey);
    const authorization = fc.oneof(
      { arbitrary: apiKey.map((k) => `Bearer ${k}`), weight: 6 },
      {
        arbitrary: fc
          .tuple(
            fc.constantFrom('Bearer', 'bearer', 'BEARER', 'Bearer:', 'Basic', 'Token', ''),
            fc.constantFrom(' ', '  ', '\t', ''),
            apiKey,
            fc.constantFrom('', ' ', '\t', ' extra', ','),
          )
          .map(([scheme, gap, k, tail]) => `${scheme}${gap}${k}${tail}`),
        weight: 3,
      },
      { arbitrary: headerString, weight: 1 },
      { arbitrary: fc.constant(undefined), weight: 1 },
    );

    return {
      initiate: {
        name: 'initiate',
        request: jsonRequest('/api/shell-auth', jsonBody(pairEntries({ body: field(noteArb, 3) }))),
        check(res, body) {
          if (res.status !== 200) return expectError(res, body, ['INVALID_INITIATE', 'BASE_ACCOUNT_MISSING', 'BASE_ACCOUNT_UNVERIFIED', 'KEY_TAKEN', 'RATE_LIMITED']);
          ensure(isObject(body), '200 without a JSON object');
          exactKeys(body, ['success', 'user_id', 'email', 'is_new_user', 'nonce', 'ssh_public_key', 'already_verified']);
          ensure(body.success === true, 'success is not true');
          ensure(typeof body.user_id === 'string' && UUID.test(body.user_id), 'user_id is not a UUID');
          ensure(typeof body.nonce === 'string' && UUID.test(body.nonce), 'nonce is not a UUID');
          ensure(typeof body.email === 'string' && body.email === body.email.trim().toLowerCase(), 'email is not normalised');
          ensure(typeof body.ssh_public_key === 'string' && /^[a-z0-9@.-]+ [A-Za-z0-9+/]+=*$/.test(body.ssh_public_key), 'ssh_public_key is not TYPE BASE64');
          ensure(typeof body.is_new_user === 'boolean' && typeof body.already_verified === 'boolean', 'flags are not booleans');
        },
      },
      verifyKey: {
        name: 'verify-key',
        request: jsonRequest('/api/shell-auth/verify-key', jsonBody(pairEntries())),
        check(res, body) {
          if (res.status === 401) {
            ensure(isObject(body), '401 without a JSON object');
            exactKeys(body, ['verified', 'is_active', 'reason']);
            ensure(body.verified === false && body.is_active === false, '401 with verified/is_active not false');
            ensure(typeof body.reason === 'string' && body.reason !== '', '401 without a reason');
            return;
          }
          if (res.status !== 200) return expectError(res, body, ['INVALID_INITIATE', 'RATE_LIMITED']);
          ensure(isObject(body), '200 without a JSON object');
          exactKeys(body, ['verified', 'is_active', 'user_id', 'key_id', 'orgs']);
          ensure(body.verified === true && typeof body.is_active === 'boolean', '200 with verified not true');
          ensure(typeof body.user_id === 'string' && UUID.test(body.user_id), 'user_id is not a UUID');
          ensure(typeof body.key_id === 'string' && UUID.test(body.key_id), 'key_id is not a UUID');
          ensure(Array.isArray(body.orgs), 'orgs is not an array');
          for (const org of body.orgs as unknown[]) {
            ensure(isObject(org), 'an org that is not an object');
            exactKeys(org, ['org_id', 'name', 'role']);
            ensure(typeof org.org_id === 'string' && UUID.test(org.org_id) && typeof org.name === 'string', 'org fields');
            ensure(['owner', 'admin', 'member'].includes(org.role as string), `role ${String(org.role)}`);
          }
        },
      },
      verifyPublicKey: {
        name: 'verify-public-key',
        request: jsonRequest('/api/shell-auth/verify-public-key', jsonBody(requestEntries({ ssh_public_key: key() }))),
        check(res, body) {
          if (res.status === 404) {
            ensure(isObject(body), '404 without a JSON object');
            exactKeys(body, ['verified', 'reason']);
            ensure(body.verified === false && typeof body.reason === 'string', '404 shape');
            return;
          }
          if (res.status !== 200) return expectError(res, body, ['INVALID_INITIATE', 'RATE_LIMITED']);
          ensure(isObject(body), '200 without a JSON object');
          exactKeys(body, ['verified', 'count', 'matches']);
          ensure(body.verified === true, '200 with verified not true');
          ensure(Array.isArray(body.matches) && body.matches.length > 0 && body.count === body.matches.length, 'count does not match matches');
          for (const match of body.matches as unknown[]) {
            ensure(isObject(match), 'a match that is not an object');
            exactKeys(match, ['user_id', 'key_id', 'email', 'is_active', 'public_key_verified', 'verified_at', 'last_seen_at']);
            ensure(match.public_key_verified === true && typeof match.email === 'string', 'match fields');
            ensure(isDate(match.verified_at), 'verified_at is not a date');
            ensure(match.last_seen_at === null || isDate(match.last_seen_at), 'last_seen_at is not a date or null');
          }
        },
      },
      apiKeys: {
        name: 'api-keys',
        request: jsonRequest('/api/shell-auth/api-keys', jsonBody(pairEntries({ label: field(labelArb), org_name: field(orgNameArb(fx.orgNames), 2) }))),
        check(res, body) {
          if (res.status !== 200) {
            return expectError(res, body, [
              'INVALID_REQUEST',
              'NO_ORGANIZATIONS',
              'UNVERIFIED_KEY',
              'HTTP_TRUST_EXPIRED',
              'HTTP_MINTING_DISABLED',
              'BILLING_NOT_VERIFIED',
              'ORG_NOT_FOUND',
              'RATE_LIMITED',
            ]);
          }
          ensure(isObject(body), '200 without a JSON object');
          exactKeys(body, ['success', 'api_key', 'api_key_id', 'org_id', 'org_name']);
          ensure(body.success === true, 'success is not true');
          ensure(typeof body.api_key === 'string' && /^[0-9a-f-]{36}[0-9a-f]{64}$/.test(body.api_key), 'api_key format');
          ensure(body.api_key.startsWith(String(body.api_key_id)) && UUID.test(String(body.api_key_id)), 'api_key_id is not the key prefix');
          ensure(typeof body.org_id === 'string' && UUID.test(body.org_id) && typeof body.org_name === 'string', 'org fields');
        },
      },
      whoami: {
        name: 'whoami',
        request: fc
          .record({
            authorization: fc.oneof(
              { arbitrary: authorization, weight: 9 },
              // Two Authorization headers.
              { arbitrary: fc.tuple(authorization, authorization).map(([a, b]) => [a ?? '', b ?? '']), weight: 1 },
            ),
            suffix: fc.constantFrom('', '', '', '/', '?x=1', '?token=abc'),
          })
          .map(({ authorization, suffix }): Outgoing => ({ method: 'GET', path: `/api/whoami${suffix}`, headers: { authorization } })),
        check(res, body) {
          if (res.status !== 200) return expectError(res, body, ['INVALID_API_KEY', 'RATE_LIMITED']);
          ensure(isObject(body), '200 without a JSON object');
          ensure(body.success === true && body.api_key_id === fx.apiKey.slice(0, 36), 'whoami 200 for another key than the live one');
          ensure(!('api_key' in body) && !('secret_hash' in body), 'whoami shows a secret');
        },
      },
    };
  }

  /** Runs one endpoint's property, then checks the generators reached past validation (`deep`). */
  async function fuzzEndpoint(endpoint: Endpoint, seed: number, deep: string[]): Promise<void> {
    await fc.assert(
      fc.asyncProperty(endpoint.request, (req) => exchange(endpoint.name, req, endpoint.check)),
      { seed, numRuns: RUNS },
    );
    for (const status of deep) {
      expect(stats.get(endpoint.name)?.get(status) ?? 0, `no ${status} among ${RUNS} requests: the generators no longer reach that path`).toBeGreaterThan(0);
    }
  }

  it('POST /api/shell-auth: any body gets a documented answer', () => fuzzEndpoint(endpoints.initiate, 0x5e11a, ['200', '400']), PROPERTY_TIMEOUT);

  it('POST /api/shell-auth/verify-key: any body gets a documented answer', () => fuzzEndpoint(endpoints.verifyKey, 0x5e11b, ['200', '401', '400']), PROPERTY_TIMEOUT);

  it(
    'POST /api/shell-auth/verify-public-key: any body gets a documented answer',
    () => fuzzEndpoint(endpoints.verifyPublicKey, 0x5e11c, ['200', '404', '400']),
    PROPERTY_TIMEOUT,
  );

  // A 200 here needs many HTTP mints per confirmation (HTTP_TRUST_MINTS above).
  it('POST /api/shell-auth/api-keys: any body gets a documented answer', () => fuzzEndpoint(endpoints.apiKeys, 0x5e11d, ['200', '401', '400']), PROPERTY_TIMEOUT);

  it(
    'GET /api/whoami: any Authorization header gets 200 for the live key, else the 401',
    () => fuzzEndpoint(endpoints.whoami, 0x5e11e, ['200', '401']),
    PROPERTY_TIMEOUT,
  );

  /** The confirm page's answers are HTML with the page headers (the URL holds a token). */
  function expectPage(res: Answer, statuses: number[], token: string): void {
    ensure(statuses.includes(res.status), `status ${res.status} is not one the page documents`);
    ensure(res.headers['content-type'] === 'text/html; charset=utf-8', `content-type ${res.headers['content-type']}`);
    ensure(res.headers['referrer-policy'] === 'no-referrer' && res.headers['x-frame-options'] === 'DENY', 'page security headers missing');
    ensure(/^<!doctype html>/i.test(res.text), 'not an HTML page');
    if (/[<>"&]/.test(token) && token.length > 1) ensure(!res.text.includes(token), 'the token is reflected unescaped');
    // Notes and labels sent with the fuzz include markup: the page must show it, never run it.
    ensure(!/<script|<img/i.test(res.text), 'markup from a request reached the page unescaped');
  }

  /** Links mailed so far, the fuzz's own initiates included: confirming them reaches account provisioning. */
  function mailedTokens(): string[] {
    return [...new Set(t.smtp.messages.flatMap((m) => (m.link ? [tokenOf(m.link)] : [])))];
  }

  function tokenArb(): fc.Arbitrary<string> {
    return fc.oneof(
      { arbitrary: fc.constantFrom(...mailedTokens()), weight: 3 },
      { arbitrary: fc.constant(fx.pendingToken), weight: 2 },
      { arbitrary: fc.constant(fx.usedToken), weight: 2 },
      { arbitrary: fc.stringMatching(/^[A-Za-z0-9_-]{43}$/), weight: 3 },
      { arbitrary: mutated(fc.constant(fx.pendingToken)), weight: 2 },
      { arbitrary: fc.constantFrom('<script>alert(1)</script>', '"><img src=x>', '&amp;', ''), weight: 1 },
      { arbitrary: nastyString, weight: 3 },
    );
  }

  it(
    'GET /shell-auth/verify: any query gets the page or its 404/410, never consuming the link',
    async () => {
      const request = fc
        .oneof(
          { arbitrary: tokenArb().map((token) => ({ token, query: `?token=${percentEncode(token)}` })), weight: 6 },
          { arbitrary: fc.tuple(tokenArb(), tokenArb()).map(([a, b]) => ({ token: a, query: `?token=${percentEncode(a)}&token=${percentEncode(b)}` })), weight: 1 },
          { arbitrary: rawQueryString.map((raw) => ({ token: raw, query: `?${raw}` })), weight: 2 },
          { arbitrary: rawQueryString.map((raw) => ({ token: raw, query: `?token=${raw}` })), weight: 2 },
          { arbitrary: fc.constant({ token: '', query: '' }), weight: 1 },
        )
        .map(({ token, query }) => ({ token, req: { method: 'GET', path: `/shell-auth/verify${query}`, headers: {} } as Outgoing }));
      await fc.assert(
        fc.asyncProperty(request, ({ token, req }) => exchange('GET verify', req, (res) => expectPage(res, [200, 404, 410], token))),
        { seed: 0x5e11f, numRuns: RUNS },
      );
      expect(stats.get('GET verify')?.get('200') ?? 0).toBeGreaterThan(0);
      // GET never consumes: the pending link still shows its page.
      const page = await t.request(`/shell-auth/verify?token=${fx.pendingToken}`);
      expect(page.status).toBe(200);
    },
    PROPERTY_TIMEOUT,
  );

  it(
    'POST /shell-auth/verify: any form gets a page with a documented status',
    async () => {
      const form = fc.oneof(
        { arbitrary: tokenArb().map((token) => ({ token, body: `token=${percentEncode(token)}` })), weight: 6 },
        {
          arbitrary: fc
            .array(fc.tuple(fc.constantFrom('token', 'Token', 'token[]', 'tok en', '', '__proto__'), tokenArb()), { maxLength: 4 })
            .map((pairs) => ({ token: pairs[0]?.[1] ?? '', body: new URLSearchParams(pairs).toString() })),
          weight: 2,
        },
        { arbitrary: rawQueryString.map((raw) => ({ token: raw, body: raw })), weight: 1 },
        { arbitrary: fc.uint8Array({ maxLength: 100 }).map((b) => ({ token: '', body: Buffer.from(b).toString('latin1') })), weight: 1 },
        { arbitrary: fc.integer({ min: 4000, max: 9000 }).map((n) => ({ token: '', body: `token=${'a'.repeat(n)}` })), weight: 1 },
      );
      const request = fc
        .record({ form, contentType: formContentType, chunked: fc.boolean(), suffix: fc.constantFrom('', '', '/', '?token=x') })
        .map(({ form, contentType, chunked, suffix }) => ({
          token: form.token,
          req: {
            method: 'POST',
            path: `/shell-auth/verify${suffix}`,
            headers: { 'content-type': contentType },
            body: Buffer.from(form.body, 'latin1'),
            chunked,
          } as Outgoing,
        }));
      await fc.assert(
        fc.asyncProperty(request, ({ token, req }) => exchange('POST verify', req, (res) => expectPage(res, [200, 400, 403, 404, 409, 410, 429], token))),
        { seed: 0x5e120, numRuns: RUNS },
      );
      // Each link confirms once at most; the rest of its uses are 410.
      const answers = stats.get('POST verify');
      expect(answers?.get('200') ?? 0).toBeGreaterThan(0);
      expect(answers?.get('200') ?? 0).toBeLessThanOrEqual(mailedTokens().length);
      expect(answers?.get('410') ?? 0).toBeGreaterThan(0);
    },
    PROPERTY_TIMEOUT,
  );

  it(
    'any method on any path near the routes: a documented status, never a 5xx',
    async () => {
      const paths = [
        '/api/shell-auth',
        '/api/shell-auth/verify-key',
        '/api/shell-auth/verify-public-key',
        '/api/shell-auth/api-keys',
        '/api/whoami',
        '/api/api-keys/rotate',
        '/api/api-keys/revoke',
        '/api/secret-scanning/github',
        '/shell-auth/verify',
        '/healthz',
        '/',
      ];
      const path = fc.oneof(
        { arbitrary: fc.constantFrom(...paths), weight: 3 },
        {
          arbitrary: fc
            .tuple(fc.constantFrom(...paths), fc.nat(7))
            .map(([p, how]) => [p.toUpperCase(), `${p}/..`, `/${p}`, p.replace(/\//g, '%2F'), `${p}%00`, `${p}/x`, p.replace('-', '_'), `${p}\u00e9`][how]!),
          weight: 3,
        },
        { arbitrary: rawQueryString.map((raw) => `/${raw}`), weight: 2 },
        { arbitrary: fc.constantFrom('*', '//example.com/x', 'http://evil.example/api/whoami', '/%', '/%zz', '/..%2f..%2fetc/passwd'), weight: 1 },
      );
      const method = fc.oneof(
        { arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'), weight: 6 },
        { arbitrary: fc.constantFrom('TRACE', 'PROPFIND', 'CONNECTX', 'get', 'M-SEARCH'), weight: 1 },
      );
      const request = fc.record({ method, path }).map(({ method, path }): Outgoing => ({ method, path, headers: {} }));
      await fc.assert(
        fc.asyncProperty(request, (req) =>
          exchange('routing', req, (res, body) => {
            if (body === undefined || res.status === 200) return;
            ensure(isObject(body), 'a JSON answer that is not an object');
            // verify-key's 401 and verify-public-key's 404 have their own shapes.
            if ('verified' in body) return ensure(body.verified === false && typeof body.reason === 'string', 'a not-verified answer without a reason');
            expectError(res, body, Object.keys(ERRORS), true);
          }),
        ),
        { seed: 0x5e121, numRuns: RUNS },
      );
    },
    PROPERTY_TIMEOUT,
  );

  it(
    'bursts of concurrent requests to the JSON endpoints: every answer still documented, nothing logged at error level',
    async () => {
      const all = Object.values(endpoints);
      const burst = fc.array(
        fc.oneof(...all.map((e) => e.request.map((req) => ({ endpoint: e, req })))),
        { minLength: 2, maxLength: 6 },
      );
      await fc.assert(
        fc.asyncProperty(burst, async (requests) => {
          await Promise.all(requests.map(({ endpoint, req }) => exchange(`burst ${endpoint.name}`, req, endpoint.check)));
        }),
        { seed: 0x5e122, numRuns: 200 },
      );
    },
    PROPERTY_TIMEOUT,
  );

  /** Resolves once the server holds no connection (it has finished with what we sent), then lets pending handlers settle. */
  async function serverIdle(): Promise<void> {
    for (let i = 0; i < 1000; i++) {
      const open = await new Promise<number>((resolve) => t.app.http.getConnections((_err, n) => resolve(n)));
      if (open === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }

  /** Every status line the server wrote (a pipelined connection may get several). */
  function statusesIn(received: string): number[] {
    return [...received.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1]));
  }

  function wireArb(): fc.Arbitrary<Wire> {
    const valid = fc.oneof(...Object.values(endpoints).map((e) => e.request)).map(requestBytes);
    const garbage = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 200 }).map((b) => Buffer.from(b)),
      fc.string({ unit: 'binary', minLength: 1, maxLength: 100 }).map((text) => Buffer.from(text, 'utf8')),
      fc.constantFrom(
        // Framing a proxy and a server might read differently, and heads Node must refuse.
        'POST /api/shell-auth/verify-key HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
        'POST /api/shell-auth/verify-key HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n',
        'POST /api/shell-auth/verify-key HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n',
        'POST /api/shell-auth/verify-key HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}',
        'POST /api/shell-auth/verify-key HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n',
        'POST /api/shell-auth/verify-key HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}',
        'POST /api/shell-auth/verify-key HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n folded: yes\r\nContent-Length: 2\r\n\r\n{}',
        'POST /api/shell-auth/verify-key HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: 2\n\n{}',
        'GET /api/whoami HTTP/1.0\r\nAuthorization: Bearer x\r\n\r\n',
        'GET /api/whoami HTTP/2.0\r\n\r\n',
        'GET http://other.example/api/whoami HTTP/1.1\r\nHost: x\r\n\r\n',
        'GET /api/whoami HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n',
        'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
        `GET /healthz HTTP/1.1\r\nHost: x\r\n${'X-Many: y\r\n'.repeat(3000)}\r\n`,
      ).map((text) => Buffer.from(text, 'latin1')),
    );
    return fc.record({
      chunks: fc.oneof(
        // Requests pipelined on one connection, maybe followed by garbage.
        fc.tuple(fc.array(valid, { minLength: 1, maxLength: 3 }), fc.option(garbage)).map(([requests, tail]) => (tail ? [...requests, tail] : requests)),
        garbage.map((g) => [g]),
        // A request whose head or body arrives byte-split.
        valid.chain((bytes) => fc.nat(bytes.length).map((at) => [bytes.subarray(0, at), bytes.subarray(at)])),
        // A request cut short: the client hangs up before its last bytes.
        valid.chain((bytes) => fc.nat(Math.max(0, bytes.length - 1)).map((at) => [bytes.subarray(0, at)])),
      ),
      hangUp: fc.constantFrom<Wire['hangUp']>('end', 'destroy'),
    });
  }

  it(
    'raw bytes on the wire (pipelining, framing tricks, garbage): documented statuses, no error logged',
    async () => {
      await fc.assert(
        fc.asyncProperty(wireArb(), async (wire) => {
          const logsBefore = t.logs.length;
          const received = await sendRaw(t.url, wire);
          await serverIdle();
          const sent = JSON.stringify(Buffer.concat(wire.chunks).toString('latin1').slice(0, 400));
          for (const status of statusesIn(received)) {
            tally(stats, 'raw wire', String(status));
            ensure(status < 500 && STATUSES.has(status), `status ${status} for ${sent} (hang-up: ${wire.hangUp})`);
          }
          const errors = t.logs.slice(logsBefore).filter(isErrorLogLine);
          ensure(errors.length === 0, `logged at error level: ${errors.join('\n')}\n  sent: ${sent}`);
        }),
        { seed: 0x5e123, numRuns: 300 },
      );
    },
    PROPERTY_TIMEOUT,
  );

  // Found by this fuzzer: a hang-up mid-body used to read as a lost database (503, logged as an error).
  it(
    'a client that hangs up mid-upload is not a server error (no 503 "request failed" logged at error level)',
    async () => {
      const paths = ['/api/shell-auth', '/api/shell-auth/verify-key', '/api/shell-auth/verify-public-key', '/api/shell-auth/api-keys', '/shell-auth/verify'];
      const cut = fc
        .record({
          path: fc.constantFrom(...paths),
          declared: fc.integer({ min: 2, max: 16 * 1024 }),
          sentFraction: fc.double({ min: 0, max: 0.99, noNaN: true }),
          hangUp: fc.constantFrom<Wire['hangUp']>('end', 'destroy'),
        })
        .map(({ path, declared, sentFraction, hangUp }): Wire => {
          const type = path === '/shell-auth/verify' ? 'application/x-www-form-urlencoded' : 'application/json';
          const head = `POST ${path} HTTP/1.1\r\nHost: fuzz\r\nContent-Type: ${type}\r\nContent-Length: ${declared}\r\n\r\n`;
          const body = Buffer.from('{"email":"a@example.com","ssh_public_key":"'.padEnd(declared, 'x')).subarray(0, Math.floor(declared * sentFraction));
          return { chunks: [Buffer.from(head, 'latin1'), body], hangUp };
        });
      await fc.assert(
        fc.asyncProperty(cut, async (wire) => {
          const logsBefore = t.logs.length;
          await sendRaw(t.url, wire);
          await serverIdle();
          const errors = t.logs.slice(logsBefore).filter(isErrorLogLine);
          const sent = `${JSON.stringify(wire.chunks[0]!.toString('latin1'))} + ${wire.chunks[1]!.length} body bytes, then ${wire.hangUp}`;
          ensure(errors.length === 0, `logged at error level: ${errors.join('\n')}\n  sent: ${sent}`);
        }),
        { seed: 0x5e124, numRuns: 100 },
      );
    },
    PROPERTY_TIMEOUT,
  );

  it('afterwards the service is healthy, has logged no error or fatal line, and mailed no live markup', async () => {
    const health = await t.request('/healthz');
    expect(health.status).toBe(200);
    expect(t.logs.filter(isErrorLogLine)).toEqual([]);
    await t.mailSettled();
    for (const mail of t.smtp.messages) expect(mail.html, mail.to).not.toMatch(/<script|<img/i);
  });
});

// ---------------------------------------------------------------------------------------------
// SSH door, in-process
// ---------------------------------------------------------------------------------------------

describe.runIf(usingPostgres)('fuzz: SSH command lines, in-process', () => {
  let core: TestCore;
  let loginMails = 0;
  let account: Identity;
  let anonymous: Identity;
  let lines: fc.Arbitrary<string>;
  const logLines: string[] = [];
  const log = pino(
    { level: 'debug' },
    new Writable({
      write(chunk, _encoding, callback) {
        logLines.push(...String(chunk).split('\n').filter(Boolean));
        callback();
      },
    }),
  );
  const stats = new Map<string, Map<string, number>>();

  beforeAll(async () => {
    core = await startTestCore();
    const user = await core.verifiedUser();
    account = await resolveSshIdentity(core.deps, user.publicKey);
    expect(account.kind).toBe('account');
    if (account.kind !== 'account') return;
    const orgs = (await orgsOfUser(core.deps.db, account.user)).map((o) => o.name);
    const keyIds: string[] = [];
    for (const label of ['fuzz-seed-one', 'fuzz-seed-two', 'fuzz-seed-three']) {
      const created = await runLine(account, `create --label ${label} --json`);
      expect(created.code, created.stderr).toBe(0);
      keyIds.push((JSON.parse(created.stdout) as { api_key_id: string }).api_key_id);
    }
    anonymous = { kind: 'anonymous', key: publicKeyOf(makeKey().publicKey) };
    lines = commandLineArb({ emails: [user.email, uniqueEmail('fuzzs'), uniqueEmail('fuzzt')], orgs, keyIds });
  }, 120_000);

  afterAll(async () => {
    if (process.env.FUZZ_STATS) {
      for (const [name, counts] of stats) console.info(`fuzz ssh ${name}:`, Object.fromEntries(counts));
      console.info(`fuzz ssh: ${loginMails} login mails`);
    }
    await core?.close();
  });

  type Run = { code: number; stdout: string; stderr: string; waitAborted: boolean; timedOut: boolean; errors: string[] };

  /**
   * One command line in a fresh session. `login` would wait 10 minutes for a click: waking the
   * mail sender (as login does once its mail is queued) aborts the session's signal, so the wait ends at once (deterministically; a
   * timer would also cut short a slow `create`, which then revokes the key it made).
   */
  async function runLine(identity: Identity, line: string): Promise<Run> {
    const controller = new AbortController();
    let waitAborted = false;
    let timedOut = false;
    const deps: CoreDeps = {
      ...core.deps,
      log,
      mailSender: {
        wake() {
          loginMails++;
          waitAborted = true;
          controller.abort();
        },
      },
    };
    const out: string[] = [];
    const err: string[] = [];
    const io = {
      stdout: (text: string) => void out.push(text),
      stderr: (text: string) => {
        err.push(text);
        // A second login of a pending pair resumes its wait and mails nothing: it is cut short here.
        if (text.includes('Waiting for confirmation')) {
          waitAborted = true;
          controller.abort();
        }
      },
    };
    const ctx = sshContext(deps, identity, io, { signal: controller.signal, ip: '192.0.2.7' });
    // Nothing else may block: a run that takes this long is a finding, not a slow machine.
    const guard = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, 10_000);
    const logsBefore = logLines.length;
    try {
      const { code } = await runCommandLine(line, ctx);
      return { code, stdout: out.join(''), stderr: err.join(''), waitAborted, timedOut, errors: logLines.slice(logsBefore).filter(isErrorLogLine) };
    } finally {
      clearTimeout(guard);
    }
  }

  function checkRun(who: string, line: string, run: Run): void {
    const where =
      `line ${JSON.stringify(line)} -> exit ${run.code}\n` +
      `  stdout: ${JSON.stringify(run.stdout.slice(0, 300))}\n  stderr: ${JSON.stringify(run.stderr.slice(0, 500))}`;
    const check = (condition: unknown, message: string) => {
      if (!condition) throw new PropertyViolation(`${message}: ${where}`);
    };
    tally(stats, who, String(run.code));
    if (process.env.FUZZ_STATS) {
      const first = run.stderr.split('\n')[0]!.replace(/"[^"]*"|'[^']*'|[0-9a-f-]{36}|SHA256:\S+/g, '_');
      tally(stats, `${who}, exit and first stderr line`, `${run.code} ${first.slice(0, 50)}`);
    }
    check(!run.timedOut, 'the command blocked for 10 s');
    check([0, 1, 2].includes(run.code), 'exit code is not 0, 1 or 2');
    check(run.errors.length === 0, `logged at error level: ${run.errors.join('\n')}`);
    if (run.code === 2) {
      check(run.stderr.startsWith('error: '), 'a usage error without "error: " on stderr');
      check(run.stdout === '', 'a usage error with output on stdout');
    }
    if (run.code === 1) {
      // A `login` whose wait our mailer cut short is a client that went away: it has said what it
      // is waiting for and has nothing more to say.
      const loginGaveUp = run.waitAborted && /^Key SHA256:\S+ \(.+\)\n[\s\S]*Waiting for confirmation [^\n]*\nStopped waiting\. [^\n]*\n[^\n]*\n$/.test(run.stderr);
      check(run.stderr.startsWith('error: ') || run.stderr.startsWith('This key (') || loginGaveUp, 'a failure without "error: " or the unlinked-key notice on stderr');
    }
    if (run.code === 0) check(!run.stderr.startsWith('error: '), 'success with an error on stderr');
  }

  for (const [who, seed] of [
    ['an unlinked key', 0x55e1],
    ['an account', 0x55e2],
  ] as const) {
    it(
      `${who}: any command line exits 0, 1 or 2 with the reason on stderr, and never throws`,
      async () => {
        const identity = who === 'an account' ? account : anonymous;
        await fc.assert(
          fc.asyncProperty(lines, async (line) => {
            let run: Run;
            try {
              run = await runLine(identity, line);
            } catch (err) {
              throw new PropertyViolation(`runCommandLine threw ${(err as Error).stack}: line ${JSON.stringify(line)}`);
            }
            checkRun(who, line, run);
          }),
          { seed, numRuns: RUNS },
        );
        for (const code of ['0', '1', '2']) {
          expect(stats.get(who)?.get(code) ?? 0, `no exit ${code} among ${RUNS} lines: the generator no longer reaches it`).toBeGreaterThan(0);
        }
      },
      PROPERTY_TIMEOUT,
    );
  }

  it('nothing was logged at error level', () => {
    expect(logLines.filter(isErrorLogLine)).toEqual([]);
  });
});
