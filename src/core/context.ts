import type { Logger } from 'pino';
import type { Db } from '../db/database.js';
import type { Channel } from '../db/schema.js';
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
  sendVerification(mail: VerificationMail): Promise<void>;
}

export interface BillingCheck {
  /** True when the org may mint keys; false (or a throw) means 402. */
  isActive(org: { id: string; name: string }): Promise<boolean>;
}

/** null always means "no limit". */
export type CoreSettings = {
  publicUrl: string;
  httpTrust: HttpTrustPolicy;
  keyMaxTtlMs: number | null;
  /** Verification mails per requesting address per hour. */
  mailPerIpHourly: number | null;
};

export type CoreDeps = {
  db: Db;
  mailer: Mailer;
  billing: BillingCheck;
  log: Logger;
  settings: CoreSettings;
  now?: () => Date;
};

/** Where a request came from, for audit events and the confirmation page. */
export type RequestOrigin = { channel: Channel; ip: string | null };

export const VERIFICATION_LINK_TTL_MS = 10 * 60_000;
export const PERMISSIONS = ['clusters:view', 'clusters:create'] as const;
export const PERMISSION_NAMES: Record<string, string> = {
  'clusters:view': 'View Clusters',
  'clusters:create': 'Create Clusters',
};

export function nowOf(deps: CoreDeps): Date {
  return deps.now ? deps.now() : new Date();
}
