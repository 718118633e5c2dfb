import type { Logger } from 'pino';
import { addressGroupOf } from '../net/addresses.js';
import type { Db } from '../db/database.js';
import type { Channel, SubscriptionStatus } from '../db/schema.js';
import type { ApiKeyCache, ApiKeyRecord } from './api-key-cache.js';
import type { SshIdentityRow } from './identity.js';
import type { SshIdentityCache } from './ssh-identity-cache.js';
import type { NoticeMail } from './notices.js';
import type { HttpTrustPolicy } from './trust.js';

/** What a verification email and the confirm page tell the reader about a request. */
export type VerificationFacts = {
  email: string;
  keyType: string;
  fingerprint: string;
  requestedIp: string | null;
  requestedAt: Date;
  note: string | null;
  channel: 'http' | 'ssh';
};

/** A verification email to send; how it looks is the mail side's business. */
export type VerificationMail = { to: string; link: string; ttlMs: number; facts: VerificationFacts };

export interface Mailer {
  /** The outbox aborts `signal` when it stops waiting: the mailer should end the send (close its connection). */
  sendVerification(mail: VerificationMail, options?: { signal?: AbortSignal }): Promise<void>;
  /** A notice to a key's creator (core/notices.ts); same contract as sendVerification. */
  sendNotice(mail: NoticeMail, options?: { signal?: AbortSignal }): Promise<void>;
}

export interface BillingCheck {
  /** True when the org may mint keys; false (or a throw) means 402. */
  isActive(org: { id: string; name: string; subscription: SubscriptionStatus | null }): Promise<boolean>;
}

/** null always means "no limit". */
export type CoreSettings = {
  publicUrl: string;
  httpTrust: HttpTrustPolicy;
  keyMaxTtlMs: number | null;
  /** Verification mails per requesting address per hour. */
  mailPerIpHourly: number | null;
  /** Domains whose inboxes ignore dots, for the per-inbox mail limit (emails.ts inboxKeyOf). Default: gmail.com, googlemail.com. */
  mailDotlessDomains?: readonly string[];
  /** Security keys (FIDO): require a PIN/biometric check; refuse a counter that does not increase. Default: neither. */
  securityKeys?: { requireUserVerification: boolean; strictCounter: boolean };
  /** Per-address limits count an IPv6 address as its network of this many bits (IPV6_PREFIX). Default: 64. */
  ipv6Prefix?: number;
  /** How users reach the SSH door (`ssh -p 2222 keys@host`), for notices that name a command. Set once the door listens. */
  sshHint?: string;
  /** The permissions a key may carry, with display names (KEY_PERMISSIONS). Default: PERMISSIONS. */
  keyPermissions?: readonly KeyPermission[];
  /** Expiry notices: how long before a key's expiry its creator is emailed (KEY_EXPIRY_NOTICES); empty: none. Default: 7d, 1d. */
  keyExpiryNoticesMs?: readonly number[];
};

export type KeyPermission = { name: string; displayName: string };

/**
 * Every limit that refuses requests, as metrics name it: the mail limits are the core's own; the
 * doors report theirs through the same port.
 */
export const RATE_LIMIT_NAMES = [
  'mail_per_key',
  'mail_per_inbox',
  'mail_per_ip',
  'http_lookups',
  'ssh_auth',
  'ssh_auth_attempts',
  'ssh_connections',
  'ssh_connections_per_ip',
  'ssh_unauthenticated_per_ip',
  'ssh_connections_total',
  'ssh_unauthenticated_total',
  'ssh_sessions_total',
  'ssh_sessions_per_ip',
  'ssh_sessions_unlinked',
  'http_connections_total',
  'http_connections_per_ip',
] as const;
export type RateLimitName = (typeof RATE_LIMIT_NAMES)[number];

/** What a billing check before a mint found (error: the check failed, which refuses the mint). */
export const BILLING_CHECK_RESULTS = ['active', 'inactive', 'error'] as const;
export type BillingCheckResult = (typeof BILLING_CHECK_RESULTS)[number];

export const API_KEY_LOOKUP_SOURCES = ['cache', 'database'] as const;
export type ApiKeyLookupSource = (typeof API_KEY_LOOKUP_SOURCES)[number];

/**
 * What the core tells the outside world happened, for metrics. Every argument is a small fixed
 * set of values: never an email, id, key or address. The default does nothing.
 */
export interface CoreEvents {
  apiKeyMinted(door: Channel): void;
  /** A verification email written to the outbox. */
  mailQueued(): void;
  /** The mail server accepted one. */
  mailSent(): void;
  /** One attempt failed; it will be retried while its link lasts. */
  mailSendFailed(): void;
  /** Given up on: its link expired (or was used) before it could be sent. */
  mailAbandoned(): void;
  /** Messages in the outbox not yet sent nor given up on, as the sender last counted. */
  mailPending(count: number): void;
  billingChecked(result: BillingCheckResult): void;
  /** An API key authenticated from the cache or looked up in the database. */
  apiKeyLookup(source: ApiKeyLookupSource): void;
  /** An SSH login's identity from the cache or looked up in the database. */
  sshIdentityLookup(source: ApiKeyLookupSource): void;
  /** A request refused by a rate limit. */
  rateLimited(limit: RateLimitName): void;
}

export const NO_EVENTS: CoreEvents = {
  apiKeyMinted() {},
  mailQueued() {},
  mailSent() {},
  mailSendFailed() {},
  mailAbandoned() {},
  mailPending() {},
  billingChecked() {},
  apiKeyLookup() {},
  sshIdentityLookup() {},
  rateLimited() {},
};

/** Wakes a waiting `login` when its link is confirmed, on any instance (Postgres LISTEN/NOTIFY). */
export interface ConfirmationSignals {
  /** False while notifications cannot be relied on: then waiters poll. */
  listening(): boolean;
  waitFor(requestId: string, signal: AbortSignal, timeoutMs: number): Promise<'notified' | 'recheck' | 'timeout' | 'aborted'>;
}

/** The NOTIFY channel confirmations are announced on; the payload is the request id. */
export const CONFIRMATIONS_CHANNEL = 'shell_auth_confirmations';

export type CoreDeps = {
  db: Db;
  /** Absent: waiting logins poll the database. */
  confirmations?: ConfirmationSignals;
  /** Delivers the outbox; every mail goes through it. */
  mailer: Mailer;
  /** This instance's sender loop, woken when a request queues mail; absent: it wakes on its own timer. */
  mailSender?: { wake(): void };
  billing: BillingCheck;
  log: Logger;
  settings: CoreSettings;
  now?: () => Date;
  /** Metrics; absent means none. */
  events?: CoreEvents;
  /** Verified API keys for a short while (api-key-cache.ts); absent: every check asks the database. */
  apiKeyCache?: ApiKeyCache<ApiKeyRecord>;
  /** SSH identities for a short while (ssh-identity-cache.ts); absent: every login asks the database. */
  sshIdentityCache?: SshIdentityCache<SshIdentityRow>;
};

/** Where a request came from, for audit events and the confirmation page. */
export type RequestOrigin = { channel: Channel; ip: string | null };

export const VERIFICATION_LINK_TTL_MS = 10 * 60_000;
export const PERMISSIONS = ['clusters:view', 'clusters:create'] as const;
export const PERMISSION_NAMES: Record<string, string> = {
  'clusters:view': 'View Clusters',
  'clusters:create': 'Create Clusters',
};
export const DEFAULT_KEY_PERMISSIONS: readonly KeyPermission[] = PERMISSIONS.map((name) => ({ name, displayName: PERMISSION_NAMES[name]! }));
export const DEFAULT_KEY_EXPIRY_NOTICES_MS: readonly number[] = [7 * 86_400_000, 86_400_000];

/** The platform's permissions (KEY_PERMISSIONS), in their order. */
export function keyPermissionsOf(deps: Pick<CoreDeps, 'settings'>): readonly KeyPermission[] {
  return deps.settings.keyPermissions ?? DEFAULT_KEY_PERMISSIONS;
}

export function eventsOf(deps: Pick<CoreDeps, 'events'>): CoreEvents {
  return deps.events ?? NO_EVENTS;
}

export function nowOf(deps: Pick<CoreDeps, 'now'>): Date {
  return deps.now ? deps.now() : new Date();
}

/**
 * The key a per-address limit counts `ip` under (net-addresses.ts addressGroupOf): an IPv6
 * address as its `settings.ipv6Prefix` network, IPv4 (and IPv4-mapped) as the IPv4 address;
 * null for an unknown address.
 */
export function addressGroupIn(deps: Pick<CoreDeps, 'settings'>, ip: string | null): string | null {
  return ip === null ? null : addressGroupOf(ip, deps.settings.ipv6Prefix ?? 64);
}
