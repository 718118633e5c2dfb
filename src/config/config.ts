import { isIP } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { MIN_KEY_TTL_MS } from '../core/api-keys.js';
import { formatDuration, parseDuration } from '../core/duration.js';
import { DEFAULT_KEY_PERMISSIONS, type KeyPermission } from '../core/context.js';
import type { HttpTrustWindow } from '../core/index.js';
import { parseAddressRange } from '../net/addresses.js';

/**
 * Every setting, its default and its validation, in one place. In the result, `null` always
 * means "no limit"; the HTTP trust window has its own three modes (`off`, `forever`, or ms).
 */

const trustWindow = z
  .string()
  .trim()
  .transform((value, ctx): HttpTrustWindow => {
    if (value.toLowerCase() === 'forever') return 'forever';
    const ms = parseDuration(value);
    if (ms === null) {
      ctx.addIssue({ code: 'custom', message: 'must be a duration (15m, 90s, 1h), 0 (off) or forever' });
      return z.NEVER;
    }
    return ms === 0 ? 'off' : ms;
  });

const positiveDuration = z
  .string()
  .trim()
  .transform((value, ctx) => {
    const ms = parseDuration(value);
    if (ms === null || ms === 0) {
      ctx.addIssue({ code: 'custom', message: 'must be a positive duration such as 30s, 10m, 12h or 30d' });
      return z.NEVER;
    }
    return ms;
  });

const durationOrOff = z
  .string()
  .trim()
  .transform((value, ctx) => {
    const ms = parseDuration(value);
    if (ms === null) {
      ctx.addIssue({ code: 'custom', message: 'must be a duration such as 30s or 5m, or 0 (off)' });
      return z.NEVER;
    }
    return ms;
  });

/** A whole number from `min` to `max`, with one message that says so (zod's own says "NaN"). */
const wholeNumber = (min: number, max: number, extra = '') => {
  const message = `must be a whole number from ${min} to ${max}${extra}`;
  return z
    .string()
    .trim()
    .regex(/^\d+$/, message)
    .transform(Number)
    .refine((n) => n >= min && n <= max, message);
};

const port = wholeNumber(0, 65535, ' (0: any free port)');

const urlOf = (protocol: RegExp, form: string) => z.url({ protocol, error: `must be a URL like ${form}` });

const flag = z
  .enum(['true', 'false', '1', '0'])
  .default('false')
  .transform((value) => value === 'true' || value === '1');

/** `127.0.0.1,10.0.0.0/8,::1`: addresses and CIDRs, IPv4 and IPv6, normalised to `address/prefix`. */
const addressRanges = z.string().transform((value, ctx) => {
  const ranges: string[] = [];
  for (const entry of value.split(',').map((s) => s.trim()).filter(Boolean)) {
    const range = parseAddressRange(entry);
    if (range === null) {
      ctx.addIssue({ code: 'custom', message: `"${entry}" is not an IP address or CIDR (e.g. 10.0.0.0/8, ::1)` });
      return z.NEVER;
    }
    ranges.push(range);
  }
  if (ranges.length === 0) {
    ctx.addIssue({ code: 'custom', message: 'lists no address (e.g. 127.0.0.1,10.0.0.0/8,::1)' });
    return z.NEVER;
  }
  return ranges;
});

/**
 * Where users reach the SSH door from outside (a load balancer's name and port): `host`,
 * `host:port` or `[v6]:port`; a host alone means port 22, as for `ssh` itself.
 */
const publicSshAddress = z.string().transform((value, ctx): { host: string; port: number } => {
  const text = value.trim();
  const bracketed = /^\[([^\]]*)\](?::(\d{1,5}))?$/.exec(text);
  const named = /^([a-z0-9._-]+)(?::(\d{1,5}))?$/i.exec(text);
  // A bare IPv6 address has no room for a port: it is a host alone.
  const [host, portText] = bracketed && isIP(bracketed[1]!) === 6 ? [bracketed[1]!, bracketed[2]] : isIP(text) === 6 ? [text, undefined] : named ? [named[1]!, named[2]] : [];
  const port = portText === undefined ? 22 : Number(portText);
  if (host === undefined || port < 1 || port > 65535) {
    ctx.addIssue({ code: 'custom', message: 'must be host or host:port (e.g. auth.example.com, auth.example.com:2222, [2001:db8::1]:2222)' });
    return z.NEVER;
  }
  return { host, port };
});

/** A count where 0 (the operator's way of writing "off") becomes null: no limit. */
const limit = (max: number) => wholeNumber(0, max, ' (0: no limit)').transform((n) => (n === 0 ? null : n));

/** `gmail.com,googlemail.com`: domain names, lower-cased; `none`: an empty list. */
const domainList = z.string().transform((value, ctx) => {
  if (value.trim().toLowerCase() === 'none') return [];
  const domains: string[] = [];
  for (const entry of value.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean)) {
    if (!/^[a-z0-9-]+(\.[a-z0-9-]+)+$/.test(entry)) {
      ctx.addIssue({ code: 'custom', message: `"${entry}" is not a domain name (e.g. gmail.com,googlemail.com, or none)` });
      return z.NEVER;
    }
    domains.push(entry);
  }
  return domains;
});

/** `name=Display Name,…` (a bare name is its own display name): the permissions keys may carry. */
const permissionList = z.string().transform((value, ctx) => {
  const seen = new Set<string>();
  const list: KeyPermission[] = [];
  for (const entry of value.split(',').map((e) => e.trim()).filter(Boolean)) {
    const [rawName, ...rest] = entry.split('=');
    const name = rawName!.trim();
    const displayName = rest.join('=').trim() || name;
    if (!/^[a-z0-9][a-z0-9:._-]{0,63}$/.test(name)) {
      ctx.addIssue({ code: 'custom', message: `"${name}" is not a permission name (lower case letters, digits and : . _ -, like clusters:view)` });
      return z.NEVER;
    }
    if (seen.has(name)) {
      ctx.addIssue({ code: 'custom', message: `"${name}" is listed twice` });
      return z.NEVER;
    }
    seen.add(name);
    list.push({ name, displayName });
  }
  if (list.length === 0) {
    ctx.addIssue({ code: 'custom', message: 'must name at least one permission, like clusters:view=View Clusters,clusters:create=Create Clusters' });
    return z.NEVER;
  }
  return list;
});

/** `7d,1d` (longest first, however written) or `off`. */
const noticeThresholds = z.string().transform((value, ctx) => {
  if (value.trim().toLowerCase() === 'off') return [];
  const list: number[] = [];
  for (const entry of value.split(',').map((e) => e.trim()).filter(Boolean)) {
    const ms = parseDuration(entry);
    if (ms === null || ms < 60_000) {
      ctx.addIssue({ code: 'custom', message: `"${entry}" is not a duration of at least 1m: use durations like 7d,1d, or off` });
      return z.NEVER;
    }
    if (!list.includes(ms)) list.push(ms);
  }
  if (list.length === 0) {
    ctx.addIssue({ code: 'custom', message: 'must be durations like 7d,1d, or off' });
    return z.NEVER;
  }
  return list.sort((a, b) => b - a);
});

const EnvSchema = z.object({
  HOST: z.string().min(1).default('127.0.0.1'),
  HTTP_PORT: port.prefault('8080'),
  SSH_PORT: port.prefault('2222'),
  SSH_USER: z.string().regex(/^[a-z_][a-z0-9_-]*$/i, 'must be a plain user name').default('keys'),
  SSH_PUBLIC_ADDRESS: publicSshAddress.optional(),
  DATABASE_URL: urlOf(/^postgres(ql)?$/, 'postgres://user:password@host:5432/database').optional(),
  DATA_DIR: z.string().min(1).default('./data'),
  SMTP_URL: urlOf(/^smtps?$/, 'smtp://host:25 or smtps://user:password@host:465').optional(),
  MAIL_FROM: z.string().min(3).default('shell-auth <no-reply@localhost>'),
  PUBLIC_URL: urlOf(/^https?$/, 'https://auth.example.com (where users open the emailed links)').optional(),
  HOST_KEYS_DIR: z.string().min(1).default('./host_keys'),
  HTTP_TRUST_WINDOW: trustWindow.prefault('15m'),
  HTTP_TRUST_MINTS: limit(1_000_000).prefault('1'),
  // Below the shortest lifetime a key may have, every --expires-in would be refused.
  KEY_MAX_TTL: positiveDuration.refine((ms) => ms >= MIN_KEY_TTL_MS, `must be at least ${formatDuration(MIN_KEY_TTL_MS)}, the shortest key lifetime`).optional(),
  KEY_PERMISSIONS: permissionList.optional(),
  KEY_EXPIRY_NOTICES: noticeThresholds.prefault('7d,1d'),
  SECRET_SCANNING_KEYS_FILE: z.string().min(1).optional(),
  API_KEY_CACHE_TTL: durationOrOff.prefault('30s'),
  SSH_IDENTITY_CACHE_TTL: durationOrOff.prefault('30s'),
  SK_REQUIRE_USER_VERIFICATION: flag,
  SK_STRICT_COUNTER: flag,
  BILLING_URL: urlOf(/^https?$/, 'https://billing.internal/check').optional(),
  BILLING_TIMEOUT_MS: wholeNumber(1, 60_000).prefault('2000'),
  SSH_MAX_UNAUTH_PER_IP: wholeNumber(1, 100_000).prefault('64'),
  SSH_MAX_UNAUTH: wholeNumber(1, 1_000_000).prefault('256'),
  SSH_MAX_CONNECTIONS: wholeNumber(1, 1_000_000).prefault('1024'),
  SSH_MAX_SESSIONS: wholeNumber(1, 1_000_000).prefault('2048'),
  SSH_MAX_SESSIONS_PER_IP: wholeNumber(1, 1_000_000).prefault('64'),
  HTTP_MAX_CONNECTIONS: wholeNumber(1, 1_000_000).prefault('1024'),
  HTTP_MAX_CONNECTIONS_PER_IP: wholeNumber(1, 1_000_000).prefault('64'),
  HTTP_HEADERS_TIMEOUT: positiveDuration.prefault('15s'),
  IPV6_PREFIX: wholeNumber(1, 128).prefault('64'),
  SSH_LOGIN_GRACE: positiveDuration.prefault('30s'),
  SSH_IDLE_TIMEOUT: positiveDuration.prefault('10m'),
  SSH_AUTH_PER_MINUTE: wholeNumber(1, 1_000_000).prefault('120'),
  SSH_CONNECTIONS_PER_SECOND: wholeNumber(1, 100_000).prefault('10'),
  DB_QUERY_TIMEOUT: positiveDuration.prefault('5s'),
  DB_CONNECT_TIMEOUT: positiveDuration.prefault('5s'),
  DB_POOL_SIZE: wholeNumber(1, 10_000).prefault('20'),
  HTTP_LOOKUPS_PER_MINUTE: limit(1_000_000).prefault('120'),
  MAIL_PER_IP_HOURLY: limit(1_000_000).prefault('30'),
  MAIL_DOTLESS_DOMAINS: domainList.prefault('gmail.com,googlemail.com'),
  TRUST_PROXY: z
    .enum(['true', 'false', '1', '0'])
    .default('false')
    .transform((value) => value === 'true' || value === '1'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { error: 'must be one of fatal, error, warn, info, debug, trace, silent' }).default('info'),
  LOG_FORMAT: z.enum(['json', 'pretty'], { error: 'must be json or pretty' }).optional(),
  METRICS_PORT: port.optional(),
  SSH_PROXY_PROTOCOL: flag,
  SSH_PROXY_FROM: addressRanges.optional(),
  HTTP_PROXY_FROM: addressRanges.optional(),
  SHUTDOWN_GRACE: positiveDuration.prefault('20s'),
  WORKERS: z
    .union([z.literal('auto'), wholeNumber(1, 256)], { error: 'must be a number of processes (1-256) or "auto"' })
    .prefault('1'),
  HEAP_GROWING_PERCENT: wholeNumber(0, 1000, ' (0: V8 chooses)').prefault('25'),
  // V8 sizes its semi-spaces in powers of two (1, 2, 4 ... MB): any other cap would be one of those.
  MAX_SEMI_SPACE_MB: z
    .string()
    .trim()
    .regex(/^(0|1|2|4|8|16|32|64)$/, 'must be 0 (V8 chooses) or a power of two from 1 to 64 (megabytes)')
    .transform(Number)
    .prefault('8'),
});

const ConfigSchema = EnvSchema.superRefine((e, ctx) => {
  if (e.WORKERS !== 1 && e.DATABASE_URL === undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['WORKERS'],
      message: 'more than one worker needs DATABASE_URL: the embedded database serves one process',
    });
  }
  // Believing X-Forwarded-For from anyone would let any client that reaches the port name its address.
  if (e.TRUST_PROXY && e.HTTP_PROXY_FROM === undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['HTTP_PROXY_FROM'],
      message: "required when TRUST_PROXY=true: the load balancers' addresses or CIDRs whose X-Forwarded-For is believed (e.g. 127.0.0.1,10.0.0.0/8,::1)",
    });
  }
  if (e.SSH_PROXY_PROTOCOL && e.SSH_PROXY_FROM === undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['SSH_PROXY_FROM'],
      message: "required when SSH_PROXY_PROTOCOL=true: the load balancers' addresses or CIDRs (e.g. 127.0.0.1,10.0.0.0/8,::1)",
    });
  }
}).transform((e) => ({
  host: e.HOST,
  httpPort: e.HTTP_PORT,
  sshPort: e.SSH_PORT,
  sshUser: e.SSH_USER,
  /** What hints tell users to type (`ssh -p PORT USER@HOST`); null: PUBLIC_URL's host and the listening port. */
  sshPublicAddress: e.SSH_PUBLIC_ADDRESS ?? null,
  databaseUrl: e.DATABASE_URL ?? null,
  dataDir: path.resolve(e.DATA_DIR),
  smtpUrl: e.SMTP_URL ?? null,
  mailFrom: e.MAIL_FROM,
  publicUrl: (e.PUBLIC_URL ?? `http://localhost:${e.HTTP_PORT}`).replace(/\/+$/, ''),
  hostKeysDir: path.resolve(e.HOST_KEYS_DIR),
  httpTrust: { window: e.HTTP_TRUST_WINDOW, mintsPerConfirmation: e.HTTP_TRUST_MINTS },
  keyMaxTtlMs: e.KEY_MAX_TTL ?? null,
  /** What `--perm` may name, with display names; a key minted without `--perm` gets them all. */
  keyPermissions: e.KEY_PERMISSIONS ?? DEFAULT_KEY_PERMISSIONS,
  /** How long before a key expires its creator is emailed, longest first; empty: never. */
  keyExpiryNoticesMs: e.KEY_EXPIRY_NOTICES,
  /** GitHub's secret-scanning public keys (their JSON); null: the partner endpoint is off (404). */
  secretScanningKeysFile: e.SECRET_SCANNING_KEYS_FILE ? path.resolve(e.SECRET_SCANNING_KEYS_FILE) : null,
  /** 0: off. */
  apiKeyCacheTtlMs: e.API_KEY_CACHE_TTL,
  /** 0: off. */
  sshIdentityCacheTtlMs: e.SSH_IDENTITY_CACHE_TTL,
  securityKeys: { requireUserVerification: e.SK_REQUIRE_USER_VERIFICATION, strictCounter: e.SK_STRICT_COUNTER },
  billingUrl: e.BILLING_URL ?? null,
  billingTimeoutMs: e.BILLING_TIMEOUT_MS,
  /** verify-key / verify-public-key / api-keys per address per minute, per instance. */
  httpLookupsPerMinute: e.HTTP_LOOKUPS_PER_MINUTE,
  mailPerIpHourly: e.MAIL_PER_IP_HOURLY,
  /** Domains whose inboxes ignore dots: the per-inbox mail limit counts their dot variants as one inbox. */
  mailDotlessDomains: e.MAIL_DOTLESS_DOMAINS,
  trustProxy: e.TRUST_PROXY,
  /** TRUST_PROXY=true: the peers (HTTP_PROXY_FROM) whose X-Forwarded-For is believed; null: nobody's. */
  httpProxyFrom: e.TRUST_PROXY ? (e.HTTP_PROXY_FROM ?? null) : null,
  logLevel: e.LOG_LEVEL,
  /** null: pretty on a terminal, JSON otherwise (see `logFormatFor`). */
  logFormat: e.LOG_FORMAT ?? null,
  /** The Prometheus scrape listener's port on HOST, or null (off). */
  metricsPort: e.METRICS_PORT ?? null,
  /** On SIGTERM, how long running commands and requests get to finish before they are cut. */
  shutdownGraceMs: e.SHUTDOWN_GRACE,
  /** How far V8 lets the old generation grow past what its last full collection kept (process/heap.ts); 0: V8's own. */
  heapGrowingPercent: e.HEAP_GROWING_PERCENT,
  maxSemiSpaceMb: e.MAX_SEMI_SPACE_MB,
  /** Worker processes sharing the ports (node:cluster); 'auto' is one per CPU. 1: no cluster. */
  workers: e.WORKERS === 'auto' ? Math.max(1, os.availableParallelism()) : e.WORKERS,
  http: {
    /** Open HTTP connections in all, and from one address (a trusted balancer is exempt from the latter). */
    maxConnections: e.HTTP_MAX_CONNECTIONS,
    maxConnectionsPerIp: e.HTTP_MAX_CONNECTIONS_PER_IP,
    /** A request's headers must arrive within this (a connection that sends nothing is closed then). */
    headersTimeoutMs: e.HTTP_HEADERS_TIMEOUT,
    /** The whole request, body included (at least the headers' time). */
    requestTimeoutMs: Math.max(30_000, e.HTTP_HEADERS_TIMEOUT),
    /** An idle keep-alive connection is closed after this. */
    keepAliveTimeoutMs: 5_000,
  },
  ssh: {
    /** Per-address limits (both doors) count an IPv6 address as its network of this many bits: one host often has a /64. */
    ipv6Prefix: e.IPV6_PREFIX,
    /** Connections in all (each holds a file descriptor and ~50 KB), and those not yet authenticated. */
    maxConnections: e.SSH_MAX_CONNECTIONS,
    maxUnauthenticated: e.SSH_MAX_UNAUTH,
    /** Sessions (exec/shell) open at once in the whole process, and from one address. */
    maxSessions: e.SSH_MAX_SESSIONS,
    maxSessionsPerIp: e.SSH_MAX_SESSIONS_PER_IP,
    /** Sessions per connection for a key linked to no account: `login` and one more (`help`, `whoami`). */
    maxSessionsUnlinked: 2,
    /** Unauthenticated connections are dropped after this long (OpenSSH LoginGraceTime). */
    loginGraceMs: e.SSH_LOGIN_GRACE,
    /** Unauthenticated connections at once from one address. */
    maxUnauthenticatedPerIp: e.SSH_MAX_UNAUTH_PER_IP,
    /** All connections at once from one address (unknown keys get in, so this caps them too). */
    maxConnectionsPerIp: 256,
    /** Authentication requests per connection before we hang up (OpenSSH MaxAuthTries). */
    maxAuthAttempts: 6,
    /** Sessions (exec/shell) per connection (GitLab Shell's limit). */
    maxSessionsPerConnection: 10,
    /** An authenticated connection with no input or output on any session for this long is closed. */
    idleTimeoutMs: e.SSH_IDLE_TIMEOUT,
    /** Signature verifications per address per minute (a token bucket), and the burst allowed. */
    authPerMinute: e.SSH_AUTH_PER_MINUTE,
    authBurst: 30,
    /** New connections per address per second (a token bucket), and the burst allowed. */
    connectionsPerSecond: e.SSH_CONNECTIONS_PER_SECOND,
    connectionBurst: 2 * e.SSH_CONNECTIONS_PER_SECOND,
    /** Complete lines typed ahead while a command runs, and output held for a slow reader. */
    maxQueuedLines: 16,
    outputHighWaterBytes: 64 * 1024,
    /**
     * PROXY protocol (v1/v2) on the SSH port, or null (off): only peers in `from` may connect,
     * each must send a header within `headerTimeoutMs`, and its client address is used everywhere.
     */
    proxyProtocol: e.SSH_PROXY_PROTOCOL ? { from: e.SSH_PROXY_FROM ?? [], headerTimeoutMs: 5_000 } : null,
  },
  database: {
    /** A query that takes longer fails with 503 (the pool's read timeout; Postgres cancels it too). */
    queryTimeoutMs: e.DB_QUERY_TIMEOUT,
    /** Waiting for a pooled connection or a new one longer than this fails with 503. */
    connectTimeoutMs: e.DB_CONNECT_TIMEOUT,
    /** Pooled connections per process (each worker has its own pool, plus its LISTEN connections). */
    poolSize: e.DB_POOL_SIZE,
  },
}));

export type Config = z.output<typeof ConfigSchema>;
export type SshLimits = Config['ssh'];

export class ConfigError extends Error {}

/**
 * Reads and validates the environment; throws ConfigError with one readable line per bad value.
 * `defaults` stand in for variables that are not set (a program's own defaults, e.g. the admin
 * CLI's quieter log level).
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, defaults: Record<string, string> = {}): Config {
  // An empty variable (FOO=) means "not set", never "0" or "".
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ''));
  const parsed = ConfigSchema.safeParse({ ...defaults, ...present });
  if (!parsed.success) {
    // One line per bad variable: its name, the value as given (a URL's password hidden), what it must be.
    const lines = parsed.error.issues.map((issue) => {
      const name = String(issue.path[0] ?? '');
      const value = present[name] ?? defaults[name];
      return value === undefined ? `${name}: ${issue.message}` : `${name}=${shownValue(value)}: ${issue.message}`;
    });
    throw new ConfigError([...new Set(lines)].join('\n'));
  }
  return parsed.data;
}

function shownValue(value: string): string {
  let shown = value;
  try {
    const url = new URL(value);
    if (url.password) {
      url.password = '***';
      shown = url.toString();
    }
  } catch {
    // not a URL
  }
  return JSON.stringify(shown.length > 200 ? `${shown.slice(0, 200)}…` : shown);
}

/**
 * How SSH users reach this service, for messages: `ssh -p 2222 keys@auth.example.com`. Behind a
 * balancer the instance's own port means nothing to users: SSH_PUBLIC_ADDRESS says what they type.
 */
export function sshCommandHint(config: Pick<Config, 'publicUrl' | 'sshUser' | 'sshPublicAddress'>, listeningPort: number): string {
  // URL.hostname keeps an IPv6 literal's brackets; OpenSSH wants it bare (`keys@[::1]` does not resolve).
  const { host, port } = config.sshPublicAddress ?? { host: new URL(config.publicUrl).hostname.replace(/^\[(.*)\]$/, '$1'), port: listeningPort };
  return `ssh${port === 22 ? '' : ` -p ${port}`} ${config.sshUser}@${host}`;
}
