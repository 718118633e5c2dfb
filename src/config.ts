import path from 'node:path';
import { z } from 'zod';
import { parseDuration } from './core/duration.js';

/** HTTP trust window: milliseconds, or Infinity for `forever` (the literal Vers behaviour). */
const trustWindow = z
  .string()
  .trim()
  .transform((value, ctx) => {
    if (value.toLowerCase() === 'forever') return Number.POSITIVE_INFINITY;
    const ms = parseDuration(value);
    if (ms === null) {
      ctx.addIssue({ code: 'custom', message: `"${value}" is not a duration (e.g. 15m, 90s, 1h, 0, forever)` });
      return z.NEVER;
    }
    return ms;
  });

const optionalDuration = z
  .string()
  .trim()
  .transform((value, ctx) => {
    const ms = parseDuration(value);
    if (ms === null || ms === 0) {
      ctx.addIssue({ code: 'custom', message: `"${value}" is not a positive duration (e.g. 30d, 12h, 2w)` });
      return z.NEVER;
    }
    return ms;
  })
  .optional();

const port = z.coerce.number().int().min(0).max(65535);

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
  KEY_MAX_TTL: optionalDuration,
  BILLING_URL: z.url({ protocol: /^https?$/ }).optional(),
  BILLING_TIMEOUT_MS: z.coerce.number().int().min(1).max(60_000).default(2000),
  SSH_MAX_UNAUTH_PER_IP: z.coerce.number().int().min(1).max(100_000).default(64),
  SSH_LOGIN_GRACE: optionalDuration,
  HTTP_LOOKUPS_PER_MINUTE: z.coerce.number().int().min(0).max(1_000_000).default(120),
  MAIL_PER_IP_HOURLY: z.coerce.number().int().min(0).max(1_000_000).default(30),
  TRUST_PROXY: z
    .enum(['true', 'false', '1', '0'])
    .default('false')
    .transform((value) => value === 'true' || value === '1'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type Config = {
  host: string;
  httpPort: number;
  sshPort: number;
  sshUser: string;
  databaseUrl: string | undefined;
  dataDir: string;
  smtpUrl: string | undefined;
  mailFrom: string;
  publicUrl: string;
  hostKeysDir: string;
  /** ms; 0 = HTTP minting off; Infinity = forever. */
  httpTrustWindowMs: number;
  keyMaxTtlMs: number | undefined;
  billingUrl: string | undefined;
  billingTimeoutMs: number;
  /** verify-key / verify-public-key / api-keys per address per minute, per instance; 0 = off. */
  httpLookupsPerMinute: number;
  sshMaxUnauthPerIp: number;
  sshLoginGraceMs: number;
  /** 0 = no per-IP limit. */
  mailPerIpHourly: number;
  trustProxy: boolean;
  logLevel: string;
};

export class ConfigError extends Error {}

/** Reads and validates the environment; throws ConfigError with one readable line per bad value. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // An empty variable (FOO=) means "not set", never "0" or "".
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ''));
  const parsed = EnvSchema.safeParse(present);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
    throw new ConfigError(`invalid configuration: ${lines.join('; ')}`);
  }
  const e = parsed.data;
  return {
    host: e.HOST,
    httpPort: e.HTTP_PORT,
    sshPort: e.SSH_PORT,
    sshUser: e.SSH_USER,
    databaseUrl: e.DATABASE_URL,
    dataDir: path.resolve(e.DATA_DIR),
    smtpUrl: e.SMTP_URL,
    mailFrom: e.MAIL_FROM,
    publicUrl: (e.PUBLIC_URL ?? `http://localhost:${e.HTTP_PORT}`).replace(/\/+$/, ''),
    hostKeysDir: path.resolve(e.HOST_KEYS_DIR),
    httpTrustWindowMs: e.HTTP_TRUST_WINDOW,
    keyMaxTtlMs: e.KEY_MAX_TTL,
    billingUrl: e.BILLING_URL,
    billingTimeoutMs: e.BILLING_TIMEOUT_MS,
    mailPerIpHourly: e.MAIL_PER_IP_HOURLY,
    httpLookupsPerMinute: e.HTTP_LOOKUPS_PER_MINUTE,
    sshMaxUnauthPerIp: e.SSH_MAX_UNAUTH_PER_IP,
    sshLoginGraceMs: e.SSH_LOGIN_GRACE ?? 30_000,
    trustProxy: e.TRUST_PROXY,
    logLevel: e.LOG_LEVEL,
  };
}
