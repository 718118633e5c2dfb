import { randomBytes, randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { Database, Role, SubscriptionStatus, User } from '../db/schema.js';
import { recordAudit } from './audit.js';
import type { RequestOrigin } from './context.js';
import { baseEmailOf, orgNameFromEmail } from './emails.js';
import { AppError } from './errors.js';
import { ORG_POLICY_COLUMNS, policyOfColumns, type OrgPolicy, type OrgPolicyColumns } from './org-policy-row.js';

type Tx = Kysely<Database>;

/**
 * `subscription`: the org's subscription status, read with the membership (the billing check's
 * input). `personal`: the org made for this account (an alias: for its base) at its first
 * confirmation. `policy`: the org's key policy (org-policy.ts), read in the same query.
 */
export type OrgMembership = {
  org_id: string;
  name: string;
  role: Role;
  joined_at: Date;
  subscription: SubscriptionStatus | null;
  personal: boolean;
  policy: OrgPolicy;
};

const ROLE_RANK: Record<Role, number> = { owner: 3, admin: 2, member: 1 };

/** The roles that manage an org: every key of it (list, revoke, rotate), every event of it (audit), its key policy. */
export const MANAGES: ReadonlySet<Role> = new Set(['owner', 'admin']);

export async function findUserByEmail(db: Tx, email: string): Promise<User | undefined> {
  return db.selectFrom('users').selectAll().where('email', '=', email).executeTakeFirst();
}

/** The accounts whose memberships a user acts with: its own, and its base account's for an alias. */
export function membershipHolders(user: Pick<User, 'id' | 'base_user_id'>): string[] {
  return user.base_user_id ? [user.id, user.base_user_id] : [user.id];
}

/** The strongest of the roles an account holds in one org through itself and its base account; null: none. */
export function strongestRole(roles: readonly Role[]): Role | null {
  return roles.reduce<Role | null>((best, role) => (best === null || ROLE_RANK[role] > ROLE_RANK[best] ? role : best), null);
}

/** Memberships with their org and its subscription, oldest first: for `orgsOfUser` and the SSH identity's one query. */
export function membershipsQuery(db: Tx) {
  return db
    .selectFrom('memberships')
    .innerJoin('orgs', 'orgs.id', 'memberships.org_id')
    .leftJoin('subscriptions', 'subscriptions.org_id', 'orgs.id')
    .select(['orgs.id as org_id', 'orgs.name', 'memberships.role', 'memberships.created_at as joined_at', 'subscriptions.status as subscription'])
    .select(ORG_POLICY_COLUMNS)
    .select(sql<boolean>`coalesce(orgs.personal_user_id = memberships.user_id, false)`.as('personal'))
    .orderBy('memberships.created_at', 'asc')
    .orderBy('orgs.name', 'asc');
}

type MembershipRow = OrgPolicyColumns & { org_id: string; name: string; role: Role; joined_at: Date | string; subscription: SubscriptionStatus | null; personal: boolean };

/** One entry per org, in the rows' order; where an alias and its base both hold one, the stronger role counts. */
export function mergeMemberships(rows: readonly MembershipRow[]): OrgMembership[] {
  const byOrg = new Map<string, OrgMembership>();
  for (const row of rows) {
    const seen = byOrg.get(row.org_id);
    if (!seen) {
      byOrg.set(row.org_id, {
        org_id: row.org_id,
        name: row.name,
        role: row.role,
        joined_at: new Date(row.joined_at),
        subscription: row.subscription,
        personal: row.personal,
        policy: policyOfColumns(row),
      });
    } else {
      seen.role = strongestRole([seen.role, row.role])!;
      seen.personal ||= row.personal;
    }
  }
  return [...byOrg.values()];
}

/**
 * The orgs a user acts in, oldest membership first. An alias account (alice+agent@x) shares
 * its base account's orgs; where both hold a membership, the stronger role counts.
 */
export async function orgsOfUser(db: Tx, user: Pick<User, 'id' | 'base_user_id'>): Promise<OrgMembership[]> {
  return mergeMemberships(await membershipsQuery(db).where('memberships.user_id', 'in', membershipHolders(user)).execute());
}

/** Picks the org by name among the user's orgs, or the default one (see `defaultOrg`). */
export function chooseOrg(orgs: OrgMembership[], orgName: string | undefined): OrgMembership {
  if (orgName !== undefined) {
    const org = orgs.find((o) => o.name === orgName);
    if (!org) throw new AppError('ORG_NOT_FOUND');
    return org;
  }
  const chosen = defaultOrg(orgs);
  if (!chosen) throw new AppError('NO_ORGANIZATIONS');
  return chosen;
}

/**
 * Where a key goes when no org is named: the account's own (personal) org, else its oldest
 * membership. Not simply the oldest: an operator may have added the account to a team org (even
 * a suspended one) before its first login made the personal one.
 */
export function defaultOrg(orgs: OrgMembership[]): OrgMembership | undefined {
  return orgs.find((o) => o.personal) ?? orgs[0];
}

/**
 * Finds or creates the account for an email. For an alias the base account must exist and be
 * verified (the contract's two 403s) unless `allowUnverifiedBase` (admin tools) is set.
 */
export async function ensureUser(
  db: Tx,
  email: string,
  origin: RequestOrigin,
  options: { allowUnverifiedBase?: boolean } = {},
): Promise<{ user: User; created: boolean }> {
  const baseEmail = baseEmailOf(email);
  let baseUserId: string | null = null;
  if (baseEmail) {
    const base = await findUserByEmail(db, baseEmail);
    if (!base) throw new AppError('BASE_ACCOUNT_MISSING');
    if (!base.is_active && !options.allowUnverifiedBase) throw new AppError('BASE_ACCOUNT_UNVERIFIED');
    baseUserId = base.id;
  }
  const existing = await findUserByEmail(db, email);
  if (existing) return { user: existing, created: false };

  // Two requests for a new email can race; the unique index picks one winner.
  const inserted = await db
    .insertInto('users')
    .values({ id: randomUUID(), email, base_user_id: baseUserId })
    .onConflict((oc) => oc.column('email').doNothing())
    .returningAll()
    .executeTakeFirst();
  if (!inserted) return { user: (await findUserByEmail(db, email))!, created: false };
  await recordAudit(db, origin, { action: 'user.created', actorUserId: inserted.id, subjectId: inserted.id });
  return { user: inserted, created: true };
}

/** Creates an org with a unique name (`personalUserId`: made for that account), or returns null when the name is taken. */
export async function insertOrg(trx: Tx, name: string, personalUserId: string | null = null): Promise<{ id: string; name: string } | null> {
  const row = await trx
    .insertInto('orgs')
    .values({ id: randomUUID(), name, personal_user_id: personalUserId })
    .onConflict((oc) => oc.column('name').doNothing())
    .returning(['id', 'name'])
    .executeTakeFirst();
  return row ?? null;
}

/** A new user's personal org + free subscription, the user as its admin. */
export async function provisionPersonalOrg(trx: Tx, user: User, origin: RequestOrigin): Promise<{ id: string; name: string }> {
  const base = orgNameFromEmail(user.email);
  let org = await insertOrg(trx, base, user.id);
  // On collision, a short random suffix: alice -> alice-3f9a.
  for (let attempt = 0; !org && attempt < 8; attempt++) {
    org = await insertOrg(trx, `${base}-${randomBytes(2).toString('hex')}`, user.id);
  }
  if (!org) org = await insertOrg(trx, `${base}-${randomBytes(6).toString('hex')}`, user.id);
  if (!org) throw new Error('could not find a free organization name');
  await trx.insertInto('memberships').values({ org_id: org.id, user_id: user.id, role: 'admin' }).execute();
  await trx.insertInto('subscriptions').values({ org_id: org.id, plan: 'free', status: 'active' }).execute();
  await recordAudit(trx, origin, {
    action: 'org.provisioned',
    actorUserId: user.id,
    orgId: org.id,
    subjectId: org.id,
    details: { name: org.name, plan: 'free' },
  });
  return org;
}
