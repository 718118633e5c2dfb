import type { ColumnType, Generated, Selectable } from 'kysely';

type Timestamp = ColumnType<Date, Date | string, Date | string>;
type CreatedAt = ColumnType<Date, Date | string | undefined, never>;

export type Role = 'owner' | 'admin' | 'member';
export type Channel = 'http' | 'ssh' | 'admin';

export interface UsersTable {
  id: string;
  email: string;
  base_user_id: string | null;
  is_active: Generated<boolean>;
  verified_at: Timestamp | null;
  created_at: CreatedAt;
}

export interface OrgsTable {
  id: string;
  name: string;
  /** The account this org was made for at its first confirmation (0009): its default org. */
  personal_user_id: ColumnType<string | null, string | null | undefined, string | null>;
  /** The org's key policy (0012; core/org-policy.ts). NULL: no maximum of the org's own. */
  policy_max_ttl_seconds: ColumnType<number | null, number | null | undefined, number | null>;
  /** NULL: every permission of the platform. */
  policy_permissions: ColumnType<string[] | null, string[] | null | undefined, string[] | null>;
  policy_require_security_key: Generated<boolean>;
  policy_http_minting: ColumnType<HttpMinting, HttpMinting | undefined, HttpMinting>;
  policy_members_mint: Generated<boolean>;
  /** Grows with each change: a mint writes its key only under the version it judged. */
  policy_version: Generated<number>;
  created_at: CreatedAt;
}

/** Over HTTP an org's keys may be minted in the email trust window and by signed requests, by signed requests only, or not at all. */
export type HttpMinting = 'window' | 'signed' | 'off';

export interface MembershipsTable {
  org_id: string;
  user_id: string;
  role: Role;
  created_at: CreatedAt;
}

export type SubscriptionStatus = 'active' | 'suspended';

export interface SubscriptionsTable {
  org_id: string;
  plan: string;
  status: SubscriptionStatus;
  updated_at: ColumnType<Date, Date | string | undefined, Date | string>;
}

export interface SshKeysTable {
  id: string;
  user_id: string;
  key_type: string;
  key_blob: string;
  fingerprint: string;
  comment: Generated<string>;
  verified_at: Timestamp;
  confirmed_at: Timestamp;
  proven_at: Timestamp | null;
  /** Latest confirmation of an HTTP request: opens the HTTP trust window. */
  http_confirmed_at: Timestamp | null;
  /** HTTP mints spent since `http_confirmed_at`. */
  http_mints: Generated<number>;
  last_seen_at: Timestamp | null;
  /** Security keys only: the key's application (normally "ssh:"). */
  sk_application: Generated<string | null>;
  /** Security keys only: the highest signature counter seen (the clone check). */
  sk_counter: ColumnType<string | null, never, string | number | null>;
  created_at: CreatedAt;
}

export interface VerificationRequestsTable {
  id: string;
  user_id: string;
  email: string;
  mailbox: string;
  key_type: string;
  key_blob: string;
  fingerprint: string;
  comment: Generated<string>;
  key_proven: Generated<boolean>;
  token_hash: string;
  note: string | null;
  requested_ip: string | null;
  /** requested_ip's address group (addressGroupOf; 0008), what MAIL_PER_IP_HOURLY counts. NULL: unknown address, or rows from before 0008. */
  requested_net: string | null;
  channel: 'http' | 'ssh';
  created_at: CreatedAt;
  expires_at: Timestamp;
  consumed_at: Timestamp | null;
  /** "This wasn't me" (0007): set together with consumed_at. */
  cancelled_at: Timestamp | null;
}

export interface ApiKeysTable {
  id: string;
  org_id: string;
  created_by_user_id: string;
  ssh_key_id: string | null;
  label: string;
  secret_hash: string;
  permissions: string[];
  created_via: Channel;
  created_at: CreatedAt;
  expires_at: Timestamp | null;
  last_used_at: Timestamp | null;
  revoked_at: Timestamp | null;
  revoked_by_user_id: string | null;
  /** Why it was revoked when not by its owner's `revoke` (0010): holder, leaked, member_removed, rotated, undelivered. */
  revoked_reason: ColumnType<string | null, string | null | undefined, string | null>;
  /** The key this one replaced (rotation, 0010). */
  rotated_from_id: ColumnType<string | null, string | null | undefined, string | null>;
  /** The key that replaced this one: set once, a key is rotated at most once (0010). */
  replaced_by_id: ColumnType<string | null, string | null | undefined, string | null>;
}

/** Expiry notices queued, one per key and threshold (0010): what makes them exactly once. */
export interface KeyExpiryNoticesTable {
  api_key_id: string;
  threshold_seconds: number;
  created_at: CreatedAt;
}

/** GitHub leak reports seen in the last day: a replay is refused (migrations/0011_secret_scanning_reports.ts). */
export interface SecretScanningReportsTable {
  report_sha256: string;
  key_identifier: string;
  received_at: Timestamp;
}

export interface AuditEventsTable {
  id: string;
  action: string;
  actor_user_id: string | null;
  org_id: string | null;
  subject_id: string | null;
  channel: Channel;
  ip: string | null;
  details: ColumnType<Record<string, unknown>, string | undefined, never>;
  created_at: CreatedAt;
}

export interface RequestBudgetsTable {
  bucket: string;
  window_start: Timestamp;
  count: number;
}

/** Verification mail waiting to be sent (see migrations/0003_mail_outbox.ts). */
export interface MailOutboxTable {
  id: string;
  /** The verification request (kind 'verification'); null for a notice. */
  request_id: string | null;
  /** 0010: 'verification' (a link to confirm) or 'notice' (what `notice` says). */
  kind: ColumnType<'verification' | 'notice', 'verification' | 'notice' | undefined, never>;
  /** A notice's content (core/notices.ts Notice), as JSON. */
  notice: ColumnType<unknown, string | null | undefined, never>;
  recipient: string;
  /** The link's token, until the mail is sent or given up on. */
  token: string | null;
  attempts: Generated<number>;
  next_attempt_at: Timestamp;
  /** An instance is sending it until then; after, another may. */
  lease_until: Timestamp | null;
  last_error: string | null;
  sent_at: Timestamp | null;
  abandoned_at: Timestamp | null;
  created_at: CreatedAt;
}

/** Proof-of-possession challenges (see migrations/0004_ssh_challenges.ts). */
export interface SshChallengesTable {
  challenge_hash: string;
  key_blob: string;
  expires_at: Timestamp;
  used_at: Timestamp | null;
  requested_ip: string | null;
  created_at: CreatedAt;
  /** Issue order (an identity, migrations/0006_challenge_bounds.ts); bigint, read as a string. */
  issued_seq: ColumnType<string, never, never>;
  /** The requester's address group (addressGroupOf; 0006): the per-key bound counts per group. NULL: unknown address, or older rows. */
  requested_net: string | null;
}

export interface Database {
  users: UsersTable;
  orgs: OrgsTable;
  memberships: MembershipsTable;
  subscriptions: SubscriptionsTable;
  ssh_keys: SshKeysTable;
  verification_requests: VerificationRequestsTable;
  api_keys: ApiKeysTable;
  audit_events: AuditEventsTable;
  request_budgets: RequestBudgetsTable;
  mail_outbox: MailOutboxTable;
  ssh_challenges: SshChallengesTable;
  key_expiry_notices: KeyExpiryNoticesTable;
  secret_scanning_reports: SecretScanningReportsTable;
}

export type User = Selectable<UsersTable>;
export type SshKeyRow = Selectable<SshKeysTable>;
export type VerificationRequest = Selectable<VerificationRequestsTable>;
export type ApiKeyRow = Selectable<ApiKeysTable>;
