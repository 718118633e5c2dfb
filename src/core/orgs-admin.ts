import type { Role, SubscriptionStatus } from '../db/schema.js';
import { ensureUser, findUserByEmail, insertOrg } from './accounts.js';
import { forgetRevoked, revokeKeysIn } from './api-keys.js';
import { recordAudit } from './audit.js';
import { nowOf, type CoreDeps, type RequestOrigin } from './context.js';
import { AppError } from './errors.js';
import { queueNotice, wakeMailSender, type NoticeKey } from './notices.js';
import { ORG_POLICY_COLUMNS, policyOfColumns } from './org-policy-row.js';

/** Operator actions (the admin CLI). They skip the alias "base must be verified" rule on purpose. */

export async function createOrg(deps: CoreDeps, name: string, ownerEmail: string, origin: RequestOrigin) {
  return deps.db.transaction().execute(async (trx) => {
    const { user } = await ensureUser(trx, ownerEmail, origin, { allowUnverifiedBase: true });
    const org = await insertOrg(trx, name);
    if (!org) throw new AppError('ORG_EXISTS');
    await trx.insertInto('memberships').values({ org_id: org.id, user_id: user.id, role: 'owner' }).execute();
    await trx.insertInto('subscriptions').values({ org_id: org.id, plan: 'free', status: 'active' }).execute();
    await recordAudit(trx, origin, { action: 'org.created', orgId: org.id, subjectId: org.id, details: { name, owner: user.email } });
    return { org, owner: user };
  });
}

export async function setMember(deps: CoreDeps, orgName: string, email: string, role: Role, origin: RequestOrigin) {
  return deps.db.transaction().execute(async (trx) => {
    const org = await trx.selectFrom('orgs').select(['id', 'name']).where('name', '=', orgName).executeTakeFirst();
    if (!org) throw new AppError('ORG_NOT_FOUND');
    const { user, created } = await ensureUser(trx, email, origin, { allowUnverifiedBase: true });
    await trx
      .insertInto('memberships')
      .values({ org_id: org.id, user_id: user.id, role })
      .onConflict((oc) => oc.columns(['org_id', 'user_id']).doUpdateSet({ role }))
      .execute();
    await recordAudit(trx, origin, { action: 'membership.set', orgId: org.id, subjectId: user.id, details: { email, role } });
    return { org, user, createdUser: created };
  });
}

export async function listOrgs(deps: CoreDeps) {
  return deps.db
    .selectFrom('orgs')
    .leftJoin('subscriptions', 'subscriptions.org_id', 'orgs.id')
    .select((eb) => [
      'orgs.id',
      'orgs.name',
      'orgs.created_at',
      'subscriptions.plan',
      'subscriptions.status',
      ...ORG_POLICY_COLUMNS,
      eb.selectFrom('memberships').whereRef('memberships.org_id', '=', 'orgs.id').select(eb.fn.countAll<number>().as('n')).as('members'),
    ])
    .orderBy('orgs.created_at', 'asc')
    .execute()
    .then((rows) =>
      rows.map((row) => ({ id: row.id, name: row.name, created_at: row.created_at, plan: row.plan, status: row.status, members: Number(row.members), policy: policyOfColumns(row) })),
    );
}

export async function setBilling(deps: CoreDeps, orgName: string, status: SubscriptionStatus, origin: RequestOrigin) {
  return deps.db.transaction().execute(async (trx) => {
    const org = await trx.selectFrom('orgs').select(['id', 'name']).where('name', '=', orgName).executeTakeFirst();
    if (!org) throw new AppError('ORG_NOT_FOUND');
    await trx
      .insertInto('subscriptions')
      .values({ org_id: org.id, plan: 'free', status, updated_at: new Date() })
      .onConflict((oc) => oc.column('org_id').doUpdateSet({ status, updated_at: new Date() }))
      .execute();
    await recordAudit(trx, origin, { action: 'billing.set', orgId: org.id, subjectId: org.id, details: { status } });
    return org;
  });
}

export type RemovedMember = {
  org: { id: string; name: string };
  user: { id: string; email: string };
  role: Role;
  /** The keys revoked because their creators no longer act in the org. */
  revoked: Array<NoticeKey & { created_by: string }>;
};

/**
 * Removes a membership (never the account), in one transaction: the keys its holder made in that
 * org stop working everywhere at once (revoked with reason `member_removed`, each instance's
 * whoami cache told), the removal is audited, and the holder is emailed the list. Refused for the
 * org's last owner (or, in an org without owners such as a personal one, its last admin).
 */
export async function removeMember(deps: CoreDeps, orgName: string, email: string, origin: RequestOrigin): Promise<RemovedMember> {
  const removed = await deps.db.transaction().execute(async (trx) => {
    const org = await trx.selectFrom('orgs').select(['id', 'name']).where('name', '=', orgName).executeTakeFirst();
    if (!org) throw new AppError('ORG_NOT_FOUND');
    const user = await findUserByEmail(trx, email);
    if (!user) throw new AppError('USER_NOT_FOUND', { detail: 'no account has that email' });
    // Locked: two removals at once cannot each leave the other as the last owner, then both go.
    const members = await trx.selectFrom('memberships').select(['user_id', 'role']).where('org_id', '=', org.id).orderBy('user_id').forUpdate().execute();
    const membership = members.find((m) => m.user_id === user.id);
    if (!membership) throw new AppError('NOT_A_MEMBER');
    const topRole: Role = members.some((m) => m.role === 'owner') ? 'owner' : 'admin';
    if (membership.role === topRole && members.filter((m) => m.role === topRole).length === 1) {
      throw new AppError('LAST_OWNER', { detail: topRole === 'owner' ? `${user.email} is its only owner` : `it has no owner, and ${user.email} is its only admin` });
    }
    await trx.deleteFrom('memberships').where('org_id', '=', org.id).where('user_id', '=', user.id).execute();

    // Who no longer acts in the org: the member, and their +aliases (which act with their base
    // account's memberships) unless they hold one there of their own. An alias whose base is
    // still a member keeps acting through it.
    const remaining = new Set(members.filter((m) => m.user_id !== user.id).map((m) => m.user_id));
    const aliases = await trx.selectFrom('users').select(['id', 'email']).where('base_user_id', '=', user.id).execute();
    const outsiders = user.base_user_id !== null && remaining.has(user.base_user_id) ? [] : [user, ...aliases.filter((a) => !remaining.has(a.id))];
    const emailOf = new Map(outsiders.map((u) => [u.id, u.email]));

    const live = outsiders.length
      ? await trx
          .selectFrom('api_keys')
          .select(['id', 'org_id', 'label', 'expires_at', 'created_by_user_id'])
          .where('org_id', '=', org.id)
          .where('created_by_user_id', 'in', [...emailOf.keys()])
          .where('revoked_at', 'is', null)
          .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', nowOf(deps))]))
          .orderBy('created_at', 'asc')
          .execute()
      : [];
    const revokedIds = new Set(
      (await revokeKeysIn(trx, deps, live, { actorUserId: null, origin, reason: 'member_removed', details: { member: user.email } })).map((k) => k.id),
    );
    const revoked = live
      .filter((k) => revokedIds.has(k.id))
      .map((k) => ({
        id: k.id,
        label: k.label,
        org_name: org.name,
        expires_at: k.expires_at === null ? null : new Date(k.expires_at).toISOString(),
        created_by: emailOf.get(k.created_by_user_id)!,
      }));
    await recordAudit(trx, origin, {
      action: 'membership.removed',
      orgId: org.id,
      subjectId: user.id,
      details: { email: user.email, role: membership.role, keys_revoked: revoked.length },
    });
    // One notice per creator (an alias has its own address), naming only their keys.
    for (const creator of new Set(revoked.map((k) => k.created_by))) {
      const keys = revoked.filter((k) => k.created_by === creator).map(({ created_by: _creator, ...key }) => key);
      await queueNotice(trx, deps, { to: creator, notice: { kind: 'key_revoked', reason: 'member_removed', keys } });
    }
    return { org, user: { id: user.id, email: user.email }, role: membership.role, revoked };
  });
  forgetRevoked(deps, removed.revoked);
  if (removed.revoked.length) wakeMailSender(deps);
  return removed;
}
