import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { parseDuration } from './core/duration.js';
import type { HttpTrustWindow } from './core/index.js';
import { parseAddressRange } from './ssh/proxy-protocol.js';

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
      ctx.addIssue({ code: 'custom', message: `"${value}" is not a duration (e.g. 15m, 90s, 1h, 0, forever)` });
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
      ctx.addIssue({ code: 'custom', message: `"${value}" is not a positive duration (e.g. 30d, 12h, 2w)` });
      return z.NEVER;
    }
    return ms;
  });

const port = z.coerce.number().int().min(0).max(65535);

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

/** A count where 0 (the operator's way of writing "off") becomes null: no limit. */
const limit = (max: number) =>
  z.coerce
    .number()
    .int()
    .min(0)
    .max(max)
    .transform((n) => (n === 0 ? null : n));

const EnvSchema = z.object({
  HOST: z.string().min(1).default('127.0.0.1'),
  HTTP_PORT: port.default(8080),
  SSH_PORT: port.default(2222),
  SSH_USER: z.string().regex(/^[a-z_][a-z0-9_-]*$/i, 'must be a plain user name').default('keys'),
  DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/ }).optional(),
  DATA_DIR: z.string().min(1).default('./data'),
  SMTP_URL: z.url({ protocol: /^smtps?$/ }).optional(),
  MAIL_FROM: z.string().min(3).default('shell-auth <no-reply@localhost>'),
  PUBLIC_URL: z.url({ protocol: /^https?$/ }).optional(),
  HOST_KEYS_DIR: z.string().min(1).default('./host_keys'),
  HTTP_TRUST_WINDOW: trustWindow.prefault('15m'),
  HTTP_TRUST_MINTS: limit(1_000_000).default(1),
  KEY_MAX_TTL: positiveDuration.optional(),
  BILLING_URL: z.url({ protocol: /^https?$/ }).optional(),
  BILLING_TIMEOUT_MS: z.coerce.number().int().min(1).max(60_000).default(2000),
  SSH_MAX_UNAUTH_PER_IP: z.coerce.number().int().min(1).max(100_000).default(64),
  SSH_LOGIN_GRACE: positiveDuration.prefault('30s'),
  SSH_IDLE_TIMEOUT: positiveDuration.prefault('10m'),
  SSH_AUTH_PER_MINUTE: z.coerce.number().int().min(1).max(1_000_000).default(120),
  SSH_CONNECTIONS_PER_SECOND: z.coerce.number().int().min(1).max(100_000).default(10),
  DB_QUERY_TIMEOUT: positiveDuration.prefault('5s'),
  DB_CONNECT_TIMEOUT: positiveDuration.prefault('5s'),
  HTTP_LOOKUPS_PER_MINUTE: limit(1_000_000).default(120),
  MAIL_PER_IP_HOURLY: limit(1_000_000).default(30),
  TRUST_PROXY: z
    .enum(['true', 'false', '1', '0'])
    .default('false')
    .transform((value) => value === 'true' || value === '1'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  LOG_FORMAT: z.enum(['json', 'pretty']).optional(),
  METRICS_PORT: port.optional(),
  SSH_PROXY_PROTOCOL: flag,
  SSH_PROXY_FROM: addressRanges.optional(),
  SHUTDOWN_GRACE: positiveDuration.prefault('20s'),
  WORKERS: z
    .union([z.literal('auto'), z.coerce.number().int().min(1).max(256)], { error: 'must be a number of processes (1-256) or "auto"' })
    .default(1),
});

const ConfigSchema = EnvSchema.superRefine((e, ctx) => {
  if (e.WORKERS !== 1 && e.DATABASE_URL === undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['WORKERS'],
      message: 'more than one worker needs DATABASE_URL: the embedded database serves one process',
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
  databaseUrl: e.DATABASE_URL ?? null,
  dataDir: path.resolve(e.DATA_DIR),
  smtpUrl: e.SMTP_URL ?? null,
  mailFrom: e.MAIL_FROM,
  publicUrl: (e.PUBLIC_URL ?? `http://localhost:${e.HTTP_PORT}`).replace(/\/+$/, ''),
  hostKeysDir: path.resolve(e.HOST_KEYS_DIR),
  httpTrust: { window: e.HTTP_TRUST_WINDOW, mintsPerConfirmation: e.HTTP_TRUST_MINTS },
  keyMaxTtlMs: e.KEY_MAX_TTL ?? null,
  billingUrl: e.BILLING_URL ?? null,
  billingTimeoutMs: e.BILLING_TIMEOUT_MS,
  /** verify-key / verify-public-key / api-keys per address per minute, per instance. */
  httpLookupsPerMinute: e.HTTP_LOOKUPS_PER_MINUTE,
  mailPerIpHourly: e.MAIL_PER_IP_HOURLY,
  trustProxy: e.TRUST_PROXY,
  logLevel: e.LOG_LEVEL,
  /** null: pretty on a terminal, JSON otherwise (see `logFormatFor`). */
  logFormat: e.LOG_FORMAT ?? null,
  /** The Prometheus scrape listener's port on HOST, or null (off). */
  metricsPort: e.METRICS_PORT ?? null,
  /** On SIGTERM, how long running commands and requests get to finish before they are cut. */
  shutdownGraceMs: e.SHUTDOWN_GRACE,
  /** Worker processes sharing the ports (node:cluster); 'auto' is one per CPU. 1: no cluster. */
  workers: e.WORKERS === 'auto' ? Math.max(1, os.availableParallelism()) : e.WORKERS,
  ssh: {
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
    const lines = parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
    throw new ConfigError(`invalid configuration: ${lines.join('; ')}`);
  }
  return parsed.data;
}

/** How SSH users reach this service, for messages: `ssh -p 2222 keys@auth.example.com`. */
export function sshCommandHint(config: Pick<Config, 'publicUrl' | 'sshUser'>, port: number): string {
  const host = new URL(config.publicUrl).hostname;
  return `ssh${port === 22 ? '' : ` -p ${port}`} ${config.sshUser}@${host}`;
}
