import { sql, type Kysely } from 'kysely';
import { z } from 'zod';
import type { Channel, Database, Role, User } from '../db/schema.js';
import { chooseOrg, MANAGES, membershipHolders, orgsOfUser, strongestRole, type OrgMembership } from './accounts.js';
import { ORG_POLICY_COLUMNS, policyOfColumns, type OrgPolicy, type OrgPolicyColumns } from './org-policy-row.js';
import { recordAudit } from './audit.js';
import { keyPermissionsOf, nowOf, type CoreDeps, type RequestOrigin } from './context.js';
import { formatDuration, formatLifetime, parseDuration } from './duration.js';
import { AppError } from './errors.js';
import { sshCommandOf } from './notices.js';
import { isSecurityKeyType } from './ssh-public-key.js';

/**
 * An org's key policy: the switches its owners and admins hold over how the org's keys are made
 * (issue 20). Judged here, by the one key-creation service (mint and rotation, both doors), after
 * billing; stored on the org's row (migration 0012) and read with the memberships, so a mint
 * costs no extra round trip. Every default is the behaviour of an org that never set anything.
 */

/** The settings as people type them, in the order `policy` shows them. */
export const POLICY_SETTINGS = ['max-ttl', 'permissions', 'require-security-key', 'http-minting', 'members-mint'] as const;
export type PolicySetting = (typeof POLICY_SETTINGS)[number];

export const PolicySettingSchema = z.enum(POLICY_SETTINGS);

/** One setting's value as `policy` shows it and `policy set` takes it. */
export function settingText(policy: OrgPolicy, setting: PolicySetting): string {
  switch (setting) {
    case 'max-ttl':
      return policy.maxTtlMs === null ? 'none' : formatLifetime(policy.maxTtlMs);
    case 'permissions':
      return policy.permissions === null ? 'all' : policy.permissions.join(',');
    case 'require-security-key':
      return String(policy.requireSecurityKey);
    case 'http-minting':
      return policy.httpMinting;
    case 'members-mint':
      return String(policy.membersMint);
  }
}

/** The shortest and longest `max-ttl` an org may set (the column holds seconds). */
export const MIN_POLICY_TTL_MS = 5 * 60_000;
export const MAX_POLICY_TTL_MS = 3650 * 86_400_000;

/** What a mint is, for the policy to judge: who makes it, over which door, proven how. */
export type MintAttempt = {
  /** The minting account's role in the org (for rotation by a key's holder: its creator's). */
  role: Role;
  channel: Channel;
  /** ssh: signed in over SSH; sshsig: a signed HTTP request; email: the HTTP trust window; api_key: a key renewing itself. */
  proof: 'ssh' | 'sshsig' | 'email' | 'api_key' | null;
  /** The SSH key that signed (proof ssh or sshsig), else null. */
  keyType: string | null;
  /** The permissions the key would carry. */
  permissions: readonly string[];
  /** Whether they were asked for (--perm, `permissions`), rather than the defaults. */
  permissionsAsked: boolean;
  /** The lifetime asked for, if one was. */
  expiresInMs: number | undefined;
};

/** A policy's refusal: the setting that refused, and why in words (without who can change it). */
export type PolicyRefusal = { setting: PolicySetting; reason: string };

/**
 * Whether `org`'s policy lets `attempt` mint, or the first setting that refuses it. The checks
 * run in the order a person would fix them: who may mint, how, then what the key may be.
 */
export function policyRefusal(org: Pick<OrgMembership, 'name' | 'policy'>, attempt: MintAttempt): PolicyRefusal | null {
  const { policy } = org;
  const name = `"${org.name}"`;
  if (!policy.membersMint && attempt.role === 'member') {
    return { setting: 'members-mint', reason: `org ${name} lets only its owners and admins make keys, by create or rotate (members-mint false)` };
  }
  if (attempt.channel === 'http') {
    if (policy.httpMinting === 'off') {
      return { setting: 'http-minting', reason: `org ${name} does not let its keys be made over HTTP (http-minting off): use the SSH door` };
    }
    if (policy.httpMinting === 'signed' && attempt.proof !== 'sshsig') {
      const how = attempt.proof === 'api_key' ? 'a key cannot renew itself in this org' : 'the email trust window does not count';
      return { setting: 'http-minting', reason: `org ${name} lets its keys be made over HTTP only by signed requests (http-minting signed): ${how}` };
    }
  }
  if (policy.requireSecurityKey && !(attempt.keyType !== null && isSecurityKeyType(attempt.keyType) && (attempt.proof === 'ssh' || attempt.proof === 'sshsig'))) {
    const used =
      attempt.proof === 'api_key'
        ? 'a key cannot renew itself in this org'
        : attempt.proof === 'email'
          ? 'the email trust window proves no key: sign the request with a security key'
          : attempt.proof === 'sshsig'
            ? `the request was signed with an ${attempt.keyType ?? 'unknown'} key`
            : attempt.keyType !== null
              ? `you signed in with an ${attempt.keyType} key`
              : 'no SSH key proved this';
    return { setting: 'require-security-key', reason: `org ${name} lets its keys be made only with a security key such as sk-ssh-ed25519 (require-security-key true): ${used}` };
  }
  if (attempt.permissions.length === 0 && policy.permissions !== null) {
    return {
      setting: 'permissions',
      reason: `org ${name} lets its keys carry only ${policy.permissions.join(', ')} (permissions ${policy.permissions.join(',')}), none of which this server has any more`,
    };
  }
  if (policy.permissions !== null) {
    const beyond = attempt.permissions.filter((p) => !policy.permissions!.includes(p));
    if (beyond.length > 0) {
      return {
        setting: 'permissions',
        reason: `org ${name} lets its keys carry only ${policy.permissions.join(', ')} (permissions ${policy.permissions.join(',')}): ${beyond.join(', ')} ${attempt.permissionsAsked ? 'was asked for' : "is among the key's permissions"}`,
      };
    }
  }
  if (policy.maxTtlMs !== null && attempt.expiresInMs !== undefined && attempt.expiresInMs > policy.maxTtlMs) {
    const max = formatLifetime(policy.maxTtlMs);
    return { setting: 'max-ttl', reason: `org ${name} lets its keys live at most ${max} (max-ttl ${max}): ${formatLifetime(attempt.expiresInMs)} was asked for` };
  }
  return null;
}

/** The longest a key of `org` may live: the operator's KEY_MAX_TTL and the org's max-ttl, the shorter; null: no limit. */
export function maxTtlIn(deps: Pick<CoreDeps, 'settings'>, policy: OrgPolicy): number | null {
  const operator = deps.settings.keyMaxTtlMs;
  if (policy.maxTtlMs === null) return operator;
  return operator === null ? policy.maxTtlMs : Math.min(operator, policy.maxTtlMs);
}

/**
 * The permissions a key gets when none are asked for: every permission of the platform the org
 * allows (none, when the org's list names none the platform still has: the policy refuses that).
 */
export function defaultPermissionsIn(deps: Pick<CoreDeps, 'settings'>, policy: OrgPolicy): string[] {
  const known = keyPermissionsOf(deps).map((p) => p.name);
  const allowed = policy.permissions;
  return allowed === null ? known : known.filter((name) => allowed.includes(name));
}

/** How many owners and admins a refusal names. */
const MANAGERS_NAMED = 3;

/** The refusal as the doors report it: 403, the reason, and who can change the setting, and how. */
export function policyError(deps: Pick<CoreDeps, 'settings'>, orgName: string, refusal: PolicyRefusal, managers: readonly string[]): AppError {
  const named = namedManagers(managers);
  const who = `Its owners and admins${named ? ` (${named})` : ''} can change that: ${sshCommandOf(deps)} policy set --org ${orgName} ${refusal.setting} VALUE`;
  return new AppError('ORG_POLICY', { detail: `${refusal.reason}. ${who}`, orgName, policySetting: refusal.setting });
}

/** Up to three emails, and how many more: `a@x, b@x and 2 more`; empty for none. */
function namedManagers(managers: readonly string[]): string {
  const more = managers.length > MANAGERS_NAMED ? ` and ${managers.length - MANAGERS_NAMED} more` : '';
  return `${managers.slice(0, MANAGERS_NAMED).join(', ')}${more}`;
}

/** The emails of an org's owners and admins, owners first: whom a refusal names. */
export async function policyManagers(deps: Pick<CoreDeps, 'db'>, orgId: string): Promise<string[]> {
  const rows = await deps.db
    .selectFrom('memberships')
    .innerJoin('users', 'users.id', 'memberships.user_id')
    .select(['users.email', 'memberships.role'])
    .where('memberships.org_id', '=', orgId)
    .where('memberships.role', 'in', ['owner', 'admin'])
    .orderBy('memberships.role', 'desc')
    .orderBy('memberships.created_at', 'asc')
    .limit(50)
    .execute();
  // 'owner' > 'admin' as text: owners come first.
  return rows.map((r) => r.email);
}

/** Throws the org's refusal of `attempt`, naming who can change it (a query, on refusal only). */
export async function assertPolicyAllows(deps: Pick<CoreDeps, 'db' | 'settings'>, org: Pick<OrgMembership, 'org_id' | 'name' | 'policy'>, attempt: MintAttempt): Promise<void> {
  const refusal = policyRefusal(org, attempt);
  if (!refusal) return;
  // Whoever holds a key (self-rotation) learns no one's email: a leaked key must not name people to phish.
  const managers = attempt.proof === 'api_key' ? [] : await policyManagers(deps, org.org_id);
  throw policyError(deps, org.name, refusal, managers);
}

/** A change as the columns take it, with its value as shown before and after. */
type PolicyChange = { setting: PolicySetting; patch: Partial<OrgPolicyColumns>; shown: string };

const BOOLEAN = z.enum(['true', 'false']);
const HTTP_MINTING = z.enum(['window', 'signed', 'off']);

/** `policy set NAME VALUE`'s value, checked; a bad one is INVALID_REQUEST saying what would do. */
export function parsePolicyValue(deps: Pick<CoreDeps, 'settings'>, setting: PolicySetting, value: string): PolicyChange {
  const bad = (detail: string) => new AppError('INVALID_REQUEST', { detail: `${setting}: ${detail}` });
  const text = value.trim();
  switch (setting) {
    case 'max-ttl': {
      if (text === 'none') return { setting, patch: { policy_max_ttl_seconds: null }, shown: 'none' };
      const ms = parseDuration(text);
      if (ms === null || ms === 0) throw bad('a duration such as 30d, 12h or 2w, or none');
      if (ms < MIN_POLICY_TTL_MS) throw bad(`at least ${formatDuration(MIN_POLICY_TTL_MS)} (the shortest lifetime a key may have)`);
      if (ms > MAX_POLICY_TTL_MS) throw bad('at most 3650d; "none" for no maximum');
      const seconds = Math.floor(ms / 1000);
      return { setting, patch: { policy_max_ttl_seconds: seconds }, shown: formatLifetime(seconds * 1000) };
    }
    case 'permissions': {
      if (text === 'all') return { setting, patch: { policy_permissions: null }, shown: 'all' };
      const known = keyPermissionsOf(deps).map((p) => p.name);
      const asked = text.split(',').map((name) => name.trim()).filter((name) => name !== '');
      if (asked.length === 0) throw bad(`a comma-separated list among ${known.join(', ')}, or all`);
      const unknown = asked.find((name) => !known.includes(name));
      if (unknown !== undefined) throw bad(`"${unknown.slice(0, 100)}" is not a permission on this server; its permissions: ${known.join(', ')}`);
      const list = known.filter((name) => asked.includes(name));
      return { setting, patch: { policy_permissions: list }, shown: list.join(',') };
    }
    case 'require-security-key':
    case 'members-mint': {
      const parsed = BOOLEAN.safeParse(text);
      if (!parsed.success) throw bad(`true or false, not "${text.slice(0, 100)}"`);
      const on = parsed.data === 'true';
      return { setting, patch: setting === 'members-mint' ? { policy_members_mint: on } : { policy_require_security_key: on }, shown: parsed.data };
    }
    case 'http-minting': {
      const parsed = HTTP_MINTING.safeParse(text);
      if (!parsed.success) throw bad(`window, signed or off, not "${text.slice(0, 100)}"`);
      return { setting, patch: { policy_http_minting: parsed.data }, shown: parsed.data };
    }
  }
}

export type OrgPolicyView = { org_id: string; org_name: string; policy: OrgPolicy; managers: string[] };

/** The org's policy: any member may read it (a user's default org unless named); the operator (actor null) any org. */
export async function readOrgPolicy(deps: CoreDeps, actor: User | null, orgName: string | undefined): Promise<OrgPolicyView & { role: Role | null }> {
  const org = await policyOrgFor(deps, actor, orgName);
  return { org_id: org.org_id, org_name: org.name, policy: org.policy, role: org.role, managers: await policyManagers(deps, org.org_id) };
}

async function policyOrgFor(deps: CoreDeps, actor: User | null, orgName: string | undefined): Promise<Pick<OrgMembership, 'org_id' | 'name' | 'policy'> & { role: Role | null }> {
  if (actor) {
    // The org `create` would use: the named one among the actor's, or their default.
    return chooseOrg(await orgsOfUser(deps.db, actor), orgName);
  }
  if (orgName === undefined) throw new AppError('ORG_NOT_FOUND');
  const row = await deps.db.selectFrom('orgs').select(['id', 'name', ...ORG_POLICY_COLUMNS]).where('name', '=', orgName).executeTakeFirst();
  if (!row) throw new AppError('ORG_NOT_FOUND');
  return { org_id: row.id, name: row.name, policy: policyOfColumns(row), role: null };
}

export type PolicyChangeResult = OrgPolicyView & {
  setting: PolicySetting;
  old: string;
  new: string;
  changed: boolean;
  /** Live keys of the org made before the change that the new value would not allow; null: the setting is not about keys' properties. */
  nonconforming: number | null;
};

/**
 * `policy set`: owners and admins of the org (the operator: any org) change one setting. The
 * actor's membership is locked first (as a mint locks it, so a removal or demotion either came
 * before, and the change is refused, or waits), then the org's row FOR UPDATE, which a mint's
 * write waits for: a mint judging the old policy either wrote its key before, or finds the
 * version moved and judges again (api-keys.ts). Audited with the old and new values; setting a
 * value it already has changes nothing and writes nothing. Keys made before keep working: the
 * answer counts those the new value would not allow.
 */
export async function setOrgPolicy(
  deps: CoreDeps,
  input: { actor: User | null; orgName: string | undefined; setting: PolicySetting; value: string; origin: RequestOrigin },
): Promise<PolicyChangeResult> {
  const target = await policyOrgFor(deps, input.actor, input.orgName);
  const managers = await policyManagers(deps, target.org_id);
  const refuse = (role: Role | null) =>
    new AppError('POLICY_CHANGE_NOT_ALLOWED', {
      detail: `you are ${role === null ? 'not a member' : `a ${role}`} of "${target.name}"; its owners and admins: ${namedManagers(managers) || 'none'}`,
      orgName: target.name,
    });
  if (input.actor && (target.role === null || !MANAGES.has(target.role))) throw refuse(target.role);
  // Only someone who may change it learns what the values may be.
  const change = parsePolicyValue(deps, input.setting, input.value);
  return deps.db.transaction().execute(async (trx) => {
    if (input.actor) {
      const held = await trx
        .selectFrom('memberships')
        .select('role')
        .where('org_id', '=', target.org_id)
        .where('user_id', 'in', membershipHolders(input.actor))
        .orderBy('user_id')
        .forShare()
        .execute();
      const role = strongestRole(held.map((m) => m.role));
      if (role === null || !MANAGES.has(role)) throw refuse(role);
    }
    const row = await trx.selectFrom('orgs').select(['id', 'name', ...ORG_POLICY_COLUMNS]).where('id', '=', target.org_id).forUpdate().executeTakeFirst();
    if (!row) throw new AppError('ORG_NOT_FOUND');
    const before = policyOfColumns(row);
    const old = settingText(before, input.setting);
    const view = { org_id: row.id, org_name: row.name, managers, setting: input.setting, old, new: change.shown };
    if (old === change.shown) return { ...view, policy: before, changed: false, nonconforming: null };
    const updated = await trx
      .updateTable('orgs')
      .set({ ...change.patch, policy_version: before.version + 1 })
      .where('id', '=', row.id)
      .returning(['id', 'name', ...ORG_POLICY_COLUMNS])
      .executeTakeFirstOrThrow();
    await recordAudit(trx, input.origin, {
      action: 'org.policy_changed',
      actorUserId: input.actor?.id ?? null,
      orgId: row.id,
      subjectId: row.id,
      details: { setting: input.setting, old, new: change.shown },
    });
    const policy = policyOfColumns(updated);
    return { ...view, policy, changed: true, nonconforming: await countNonconforming(trx, deps, row.id, input.setting, policy) };
  });
}

/**
 * Live keys of the org that `policy` would not let be made now, for the settings about a key's
 * own properties (lifetime, permissions, the SSH key that made it); null for the others.
 */
async function countNonconforming(db: Kysely<Database>, deps: CoreDeps, orgId: string, setting: PolicySetting, policy: OrgPolicy): Promise<number | null> {
  const now = nowOf(deps);
  let query = db
    .selectFrom('api_keys')
    .leftJoin('ssh_keys', 'ssh_keys.id', 'api_keys.ssh_key_id')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('api_keys.org_id', '=', orgId)
    .where('api_keys.revoked_at', 'is', null)
    .where((eb) => eb.or([eb('api_keys.expires_at', 'is', null), eb('api_keys.expires_at', '>', now)]));
  if (setting === 'max-ttl') {
    if (policy.maxTtlMs === null) return 0;
    const latest = new Date(now.getTime() + policy.maxTtlMs);
    query = query.where((eb) => eb.or([eb('api_keys.expires_at', 'is', null), eb('api_keys.expires_at', '>', latest)]));
  } else if (setting === 'permissions') {
    if (policy.permissions === null) return 0;
    query = query.where(sql<boolean>`NOT (api_keys.permissions <@ ${sql.val(policy.permissions)}::text[])`);
  } else if (setting === 'require-security-key') {
    if (!policy.requireSecurityKey) return 0;
    query = query.where((eb) => eb.or([eb('ssh_keys.key_type', 'is', null), eb('ssh_keys.key_type', 'not like', 'sk-%')]));
  } else {
    return null;
  }
  return Number((await query.executeTakeFirstOrThrow()).n);
}
