import type { Logger } from 'pino';
import type { Db } from '../db/database.js';
import type { Channel } from '../db/schema.js';

/** An outgoing email. `link` is carried separately so a development transport can log it. */
export type MailMessage = { to: string; subject: string; text: string; html: string; link: string };

export interface Mailer {
  send(message: MailMessage): Promise<void>;
}

export interface BillingCheck {
  /** True when the org may mint keys; false (or a throw) means 402. */
  isActive(org: { id: string; name: string }): Promise<boolean>;
}

export type CoreSettings = {
  publicUrl: string;
  /** ms; 0 = HTTP minting off; Infinity = forever. */
  httpTrustWindowMs: number;
  keyMaxTtlMs: number | undefined;
  /** Verification mails per requesting IP per hour; undefined = no per-IP limit. */
  mailPerIpHourly: number | undefined;
  /** How SSH users reach us, for messages: e.g. `ssh keys@auth.example.com`. */
  sshCommandHint: string;
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
