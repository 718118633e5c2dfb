import { sql, type SelectQueryBuilder } from 'kysely';
import { z } from 'zod';
import type { Channel, Database, User } from '../db/schema.js';
import { orgsOfUser, type OrgMembership } from './accounts.js';
import { chooseOrg, MANAGES } from './accounts.js';
import { nowOf, type CoreDeps } from './context.js';
import { parseDuration } from './duration.js';
import { AppError } from './errors.js';
import { escapeUnsafeChars } from './text.js';

/**
 * The audit viewer (`audit` over SSH and in the admin CLI): events newest first, within a time
 * window and a row limit, both applied in SQL on the audit indexes. Who sees what:
 * - owners and admins of an org: every event of that org;
 * - everyone: their own actions (anywhere, also in orgs they have left, and those about no org
 *   such as logins), and events in their orgs about them or about keys they created (an admin,
 *   a holder or a leak report revoking their key);
 * - the operator (admin CLI): every event.
 */

export const AUDIT_DEFAULT_SINCE_MS = 7 * 86_400_000;
export const AUDIT_MAX_SINCE_MS = 365 * 86_400_000;
export const AUDIT_DEFAULT_LIMIT = 50;
export const AUDIT_MAX_LIMIT = 500;

const shown = (value: string) => `"${escapeUnsafeChars(value)}"`;

/** `--since`: how far back, as a duration (`7d`, `12h`, `2w`), more than 0 and at most 365d. */
export const AuditSinceSchema = z.string().transform((text, ctx): number => {
  const ms = parseDuration(text);
  if (ms === null || ms === 0) {
    ctx.addIssue({ code: 'custom', message: `must be a duration such as 7d, 12h or 2w, not ${shown(text)}` });
    return z.NEVER;
  }
  if (ms > AUDIT_MAX_SINCE_MS) {
    ctx.addIssue({ code: 'custom', message: `must be at most 365d, not ${shown(text)}` });
    return z.NEVER;
  }
  return ms;
});

/** `--limit`: how many events at most, 1 to 500. */
export const AuditLimitSchema = z.string().transform((text, ctx): number => {
  const limit = /^\d{1,4}$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!(limit >= 1 && limit <= AUDIT_MAX_LIMIT)) {
    ctx.addIssue({ code: 'custom', message: `must be a whole number from 1 to ${AUDIT_MAX_LIMIT}, not ${shown(text)}` });
    return z.NEVER;
  }
  return limit;
});

export type AuditQuery = { orgName?: string | undefined; sinceMs: number; limit: number };

/** One event as the viewer shows it: never a secret (details lose anything named like one). */
export type AuditEntry = {
  id: string;
  created_at: Date;
  action: string;
  /** Who did it: an email, else `operator` (admin CLI), `holder` (revoked by whoever held the key), `github` (a leak report), or `-`. */
  actor: string;
  actor_user_id: string | null;
  actor_email: string | null;
  org_id: string | null;
  org_name: string | null;
  subject_id: string | null;
  /** The API key the event is about (`api_key.*` events). */
  key_id: string | null;
  label: string | null;
  door: Channel;
  ip: string | null;
  /** How the actor proved who they were (`ssh`, `email`, `sshsig`, …), when the event says. */
  proof: string | null;
  /** Why a key was revoked, when not by a plain `revoke`. */
  reason: string | null;
  details: Record<string, unknown>;
};

type Scope = {
  /** Orgs whose every event is visible. */
  managed: string[];
  /** Orgs where only events about the user or their keys are (besides their own actions). */
  member: string[];
  /** The user's own actions: anywhere (null), or in this one org. */
  own: { userId: string; orgId: string | null } | null;
  /** The user whose keys and account `member` events must be about. */
  userId: string | null;
};

/** The events `user` may see (see the top of this file), newest first. */
export async function auditEventsOf(deps: CoreDeps, user: User, query: AuditQuery, knownOrgs?: OrgMembership[]): Promise<AuditEntry[]> {
  const orgs = knownOrgs ?? (await orgsOfUser(deps.db, user));
  const inScope = query.orgName === undefined ? orgs : [chooseOrg(orgs, query.orgName)];
  const scope: Scope = {
    managed: inScope.filter((o) => MANAGES.has(o.role)).map((o) => o.org_id),
    member: inScope.filter((o) => !MANAGES.has(o.role)).map((o) => o.org_id),
    own: { userId: user.id, orgId: query.orgName === undefined ? null : inScope[0]!.org_id },
    userId: user.id,
  };
  return readEvents(deps, query, scope);
}

/** The operator's view: every event, or one org's. */
export async function allAuditEvents(deps: CoreDeps, query: AuditQuery): Promise<AuditEntry[]> {
  if (query.orgName === undefined) return readEvents(deps, query, null);
  const org = await deps.db.selectFrom('orgs').select('id').where('name', '=', query.orgName).executeTakeFirst();
  if (!org) throw new AppError('ORG_NOT_FOUND');
  return readEvents(deps, query, { managed: [org.id], member: [], own: null, userId: null });
}

type EventIds = SelectQueryBuilder<Database, 'audit_events', { id: string; created_at: Date }>;

/**
 * Each visibility rule is its own branch, newest first and limited, so each walks one index
 * (org_id, created_at), (actor_user_id, created_at) or (created_at) from its newest end; the
 * union of their ids, limited again, picks the rows to read whole.
 */
async function readEvents(deps: CoreDeps, query: AuditQuery, scope: Scope | null): Promise<AuditEntry[]> {
  const db = deps.db;
  const since = new Date(nowOf(deps).getTime() - query.sinceMs);
  const newest = (narrow: (query: EventIds) => EventIds = (query) => query): EventIds =>
    narrow(db.selectFrom('audit_events').select(['id', 'created_at']).where('created_at', '>=', since))
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .limit(query.limit);

  const branches: EventIds[] = [];
  if (scope === null) branches.push(newest());
  else {
    const { managed, member, own, userId } = scope;
    if (managed.length) branches.push(newest((q) => q.where('org_id', 'in', managed)));
    if (own) branches.push(newest((q) => (own.orgId ? q.where('org_id', '=', own.orgId) : q).where('actor_user_id', '=', own.userId)));
    if (member.length && userId) {
      const theirKeys = db.selectFrom('api_keys').select(sql<string>`id::text`.as('id')).where('created_by_user_id', '=', userId).where('org_id', 'in', member);
      // And the org's key policy changes: they decide how members may mint.
      branches.push(
        newest((q) =>
          q.where('org_id', 'in', member).where((eb) => eb.or([eb('subject_id', 'in', theirKeys), eb('subject_id', '=', userId), eb('action', '=', 'org.policy_changed')])),
        ),
      );
    }
  }
  if (branches.length === 0) return [];

  // Wrapped as derived tables: a branch's ORDER BY and LIMIT stay its own inside the UNION.
  const [first, ...rest] = branches.map((branch, i) => db.selectFrom(branch.as(`b${i}`)).selectAll());
  const union = rest.reduce((all, next) => all.union(next), first!);
  const chosen = db.selectFrom(union.as('u')).select('u.id').orderBy('u.created_at', 'desc').orderBy('u.id', 'desc').limit(query.limit);

  const rows = await db
    .selectFrom('audit_events as e')
    .leftJoin('users as actor', 'actor.id', 'e.actor_user_id')
    .leftJoin('orgs', 'orgs.id', 'e.org_id')
    // The key an api_key.* event is about, for its label when the event did not record one;
    // subject_id is text, so only a uuid-shaped one is cast (and the join uses the primary key).
    .leftJoin('api_keys as k', (join) =>
      join.on((eb) => eb('k.id', '=', sql<string>`(CASE WHEN e.action LIKE 'api_key.%' AND e.subject_id ~ ${UUID_PATTERN} THEN e.subject_id::uuid END)`)),
    )
    .select([
      'e.id',
      'e.created_at',
      'e.action',
      'e.actor_user_id',
      'actor.email as actor_email',
      'e.org_id',
      'orgs.name as org_name',
      'e.subject_id',
      'e.channel',
      'e.ip',
      'e.details',
      'k.label as key_label',
      'k.revoked_reason as key_revoked_reason',
    ])
    .where('e.id', 'in', chosen)
    .orderBy('e.created_at', 'desc')
    .orderBy('e.id', 'desc')
    .execute();
  return rows.map(toEntry);
}

const UUID_PATTERN = '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';

type EventRow = {
  id: string;
  created_at: Date;
  action: string;
  actor_user_id: string | null;
  actor_email: string | null;
  org_id: string | null;
  org_name: string | null;
  subject_id: string | null;
  channel: Channel;
  ip: string | null;
  details: Record<string, unknown> | string;
  key_label: string | null;
  key_revoked_reason: string | null;
};

function toEntry(row: EventRow): AuditEntry {
  const details = withoutSecrets(typeof row.details === 'string' ? (JSON.parse(row.details) as Record<string, unknown>) : (row.details ?? {}));
  const text = (value: unknown) => (typeof value === 'string' && value !== '' ? value : null);
  const aboutKey = row.action.startsWith('api_key.');
  const reason = text(details.reason) ?? (row.action === 'api_key.revoked' ? row.key_revoked_reason : null) ?? policyChangeOf(row.action, details);
  return {
    id: row.id,
    created_at: new Date(row.created_at),
    action: row.action,
    actor: row.actor_email ?? text(details.by) ?? actorWithoutAccount(row.channel, reason),
    actor_user_id: row.actor_user_id,
    actor_email: row.actor_email,
    org_id: row.org_id,
    org_name: row.org_name,
    subject_id: row.subject_id,
    key_id: aboutKey ? row.subject_id : null,
    label: text(details.label) ?? (aboutKey ? row.key_label : null),
    door: row.channel,
    ip: row.ip,
    proof: text(details.proof),
    reason,
    details,
  };
}

/**
 * A policy change in a few words (`max-ttl 30d (was none)`), shown where a revocation shows its
 * reason: the new value first, so that a table cut to 100 columns still shows it.
 */
function policyChangeOf(action: string, details: Record<string, unknown>): string | null {
  if (action !== 'org.policy_changed') return null;
  return `${String(details.setting)} ${String(details.new)} (was ${String(details.old)})`;
}

/** An event with no user behind it: the operator, whoever held a key, or a leak report. */
function actorWithoutAccount(channel: Channel, reason: string | null): string {
  if (channel === 'admin') return 'operator';
  if (reason === 'holder') return 'holder';
  if (reason === 'leaked') return 'github';
  return '-';
}

/** Audit details hold no secrets by design; a field named like one is dropped anyway, at any depth. */
const SECRET_NAME = /token|secret|hash|password|^api_key$/i;

function withoutSecrets(details: Record<string, unknown>): Record<string, unknown> {
  const clean = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(clean);
    if (value === null || typeof value !== 'object') return value;
    return Object.fromEntries(Object.entries(value).filter(([name]) => !SECRET_NAME.test(name)).map(([name, inner]) => [name, clean(inner)]));
  };
  return clean(details) as Record<string, unknown>;
}
