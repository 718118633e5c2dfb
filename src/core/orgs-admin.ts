import type { Role, SubscriptionStatus } from '../db/schema.js';
import { ensureUser, insertOrg } from './accounts.js';
import { recordAudit } from './audit.js';
import type { CoreDeps, RequestOrigin } from './context.js';
import { AppError } from './errors.js';

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
      eb.selectFrom('memberships').whereRef('memberships.org_id', '=', 'orgs.id').select(eb.fn.countAll<number>().as('n')).as('members'),
    ])
    .orderBy('orgs.created_at', 'asc')
    .execute()
    .then((rows) => rows.map((row) => ({ ...row, members: Number(row.members) })));
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
