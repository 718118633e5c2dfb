import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AppError,
  AUDIT_DEFAULT_LIMIT,
  AUDIT_DEFAULT_SINCE_MS,
  auditEventsOf,
  authenticateApiKey,
  confirmVerificationLink,
  createOrg,
  findUserByEmail,
  mintApiKey,
  mintApiKeyOverHttp,
  orgsOfUser,
  removeMember,
  resolveSshIdentity,
  rotateApiKey,
  rotateApiKeyAsHolder,
  setMember,
  setOrgPolicy,
  startVerification,
  type BillingCheck,
  type CoreDeps,
  type PolicySetting,
} from '../../src/core/index.js';
import { openDatabase } from '../../src/db/database.js';
import { publicKeyOf, startTestCore, type TestCore } from '../support/core.js';
import { countingStatements, usingPostgres } from '../support/database.js';
import { runSshLine } from '../support/in-process.js';
import { makeKey, uniqueEmail } from '../support/keys.js';

// The org key policy in the core (issue 20): setOrgPolicy and its audit rows, and the rule that
// no key is written under a policy its org has left. A mint (and a rotation) judges the policy it
// read with the memberships, after billing; its write goes through only while the org's
// policy_version is still the one it judged. The tests put a policy change inside the billing
// check, the gap between the read and the write, and look at what was written.

let core: TestCore;
beforeAll(async () => {
  core = await startTestCore();
});
afterAll(async () => {
  await core?.close();
});

const origin = { channel: 'ssh' as const, ip: '192.0.2.1' };
const httpOrigin = { channel: 'http' as const, ip: '198.51.100.7' };
const adminOrigin = { channel: 'admin' as const, ip: null };
const DAY = 86_400_000;

async function account() {
  const { email } = await core.verifiedUser();
  const user = (await findUserByEmail(core.deps.db, email))!;
  const sshKey = await core.deps.db.selectFrom('ssh_keys').select('id').where('user_id', '=', user.id).executeTakeFirstOrThrow();
  return { email, user, sshKeyId: sshKey.id };
}

/** An account whose key was confirmed over HTTP (an email link, no SSH signature): its HTTP window is open. */
async function httpAccount() {
  const email = uniqueEmail('policy-http');
  const key = publicKeyOf(makeKey().publicKey);
  await startVerification(core.deps, { email, key, note: null, keyProven: false, origin: httpOrigin });
  await core.deliverMail();
  const mail = core.mails.at(-1)!;
  expect(mail.to).toBe(email);
  await confirmVerificationLink(core.deps, new URL(mail.link).searchParams.get('token') ?? '', httpOrigin);
  const user = (await findUserByEmail(core.deps.db, email))!;
  const sshKey = await core.deps.db.selectFrom('ssh_keys').select('id').where('user_id', '=', user.id).executeTakeFirstOrThrow();
  return { email, key, user, sshKeyId: sshKey.id };
}

type Account = Awaited<ReturnType<typeof account>>;

let teams = 0;
/** An org with an owner and a plain member (both SSH accounts). */
async function team(prefix: string, member?: { email: string }) {
  const owner = await account();
  const plain = member ?? (await account());
  const name = `${prefix}-${Date.now().toString(36)}-${++teams}`;
  const { org } = await createOrg(core.deps, name, owner.email, adminOrigin);
  await setMember(core.deps, name, plain.email, 'member', adminOrigin);
  return { owner, name, org };
}

async function teamWithMember(prefix: string) {
  const member = await account();
  return { ...(await team(prefix, member)), member };
}

async function refusal(promise: Promise<unknown>): Promise<AppError> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  return err as AppError;
}

/** The org's owner (or the operator, `actor` null) sets one setting. */
function setPolicy(actor: Account | null, orgName: string, setting: PolicySetting, value: string, deps: CoreDeps = core.deps) {
  return setOrgPolicy(deps, { actor: actor?.user ?? null, orgName, setting, value, origin: actor ? origin : adminOrigin });
}

/**
 * The core with a billing check that does `during` before answering (active): a slow billing
 * service, while which the org changes. `calls` counts the checks.
 */
function billingDuring(during: () => Promise<unknown>): { deps: CoreDeps; billing: { calls: number } } {
  const billing = {
    calls: 0,
    async isActive(org: Parameters<BillingCheck['isActive']>[0]) {
      billing.calls++;
      await during();
      return org.subscription === 'active';
    },
  };
  return { deps: { ...core.deps, billing }, billing };
}

const versionOf = async (orgId: string) =>
  (await core.deps.db.selectFrom('orgs').select('policy_version').where('id', '=', orgId).executeTakeFirstOrThrow()).policy_version;
const keysLabelled = (label: string) => core.deps.db.selectFrom('api_keys').selectAll().where('label', '=', label).execute();
const keyCreatedEvents = (label: string) =>
  sql<{ id: string }>`select id from audit_events where action = 'api_key.created' and details->>'label' = ${label}`.execute(core.deps.db).then((r) => r.rows);
const policyEvents = (orgId: string) =>
  core.deps.db
    .selectFrom('audit_events')
    .select(['action', 'actor_user_id', 'org_id', 'subject_id', 'channel', 'details'])
    .where('org_id', '=', orgId)
    .where('action', '=', 'org.policy_changed')
    .orderBy('created_at')
    .execute();

describe('a policy change while a mint is between judging and writing (during its billing check)', () => {
  it('without a change (a value the org already has, another org changed) the mint writes at once: one statement after billing', async () => {
    const { owner, member, name } = await teamWithMember('policy-nochange');
    const other = await team('policy-elsewhere');
    await setPolicy(owner, name, 'max-ttl', '30d');
    const orgs = await orgsOfUser(core.deps.db, member.user);
    const { deps, billing } = billingDuring(async () => {
      expect((await setPolicy(owner, name, 'members-mint', 'true')).changed).toBe(false);
      expect((await setPolicy(other.owner, other.name, 'members-mint', 'false')).changed).toBe(true);
    });
    const counting = countingStatements(deps.db);
    const minted = await mintApiKey({ ...deps, db: counting.db }, { user: member.user, orgs, sshKeyId: member.sshKeyId, label: 'policy-unchanged-mint', orgName: name, origin });
    expect(billing.calls).toBe(1);
    expect(counting.statements).toEqual(['InsertQueryNode']);
    expect(minted.expires_at!.getTime()).toBe(core.clock.now.getTime() + 30 * DAY);
    expect(await keysLabelled('policy-unchanged-mint')).toHaveLength(1);
  });

  it('members-mint false: a member is refused (ORG_POLICY, naming the setting and the owner); the write found the version moved, nothing is written', async () => {
    const { owner, member, name } = await teamWithMember('policy-race-members');
    const orgs = await orgsOfUser(core.deps.db, member.user);
    const { deps } = billingDuring(() => setPolicy(owner, name, 'members-mint', 'false'));
    const counting = countingStatements(deps.db);
    const refused = await refusal(mintApiKey({ ...deps, db: counting.db }, { user: member.user, orgs, sshKeyId: member.sshKeyId, label: 'policy-members-race', orgName: name, origin }));
    expect([refused.code, refused.status, refused.extra.policySetting, refused.extra.orgName]).toEqual(['ORG_POLICY', 403, 'members-mint', name]);
    expect(refused.detail).toBe(
      `org "${name}" lets only its owners and admins make keys, by create or rotate (members-mint false). Its owners and admins (${owner.email}) can change that: ssh keys@shell-auth.test policy set --org ${name} members-mint VALUE`,
    );
    // The write (nothing written: the version moved), the org read again, who can change it.
    expect(counting.statements).toEqual(['InsertQueryNode', 'SelectQueryNode', 'SelectQueryNode']);
    expect(await keysLabelled('policy-members-race')).toEqual([]);
    expect(await keyCreatedEvents('policy-members-race')).toEqual([]);

    // The same change during the owner's own mint still allows it: judged again, written.
    await setPolicy(owner, name, 'members-mint', 'true');
    const { deps: ownerDeps } = billingDuring(() => setPolicy(owner, name, 'members-mint', 'false'));
    const minted = await mintApiKey(ownerDeps, { user: owner.user, sshKeyId: owner.sshKeyId, label: 'policy-owner-race', orgName: name, origin });
    expect((await keysLabelled('policy-owner-race')).map((k) => k.id)).toEqual([minted.api_key_id]);
  });

  it('permissions narrowed: a mint asking for a permission now outside the list is refused; one asking nothing gets only what the new list allows', async () => {
    const { owner, member, name } = await teamWithMember('policy-race-perms');
    const asked = billingDuring(() => setPolicy(owner, name, 'permissions', 'clusters:view'));
    const refused = await refusal(
      mintApiKey(asked.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'policy-perms-asked', orgName: name, permissions: ['clusters:create'], origin }),
    );
    expect([refused.code, refused.extra.policySetting]).toEqual(['ORG_POLICY', 'permissions']);
    expect(refused.detail).toContain(`org "${name}" lets its keys carry only clusters:view (permissions clusters:view): clusters:create was asked for.`);
    expect(await keysLabelled('policy-perms-asked')).toEqual([]);

    await setPolicy(owner, name, 'permissions', 'all');
    const defaults = billingDuring(() => setPolicy(owner, name, 'permissions', 'clusters:view'));
    const minted = await mintApiKey(defaults.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'policy-perms-default', orgName: name, origin });
    expect(minted.permissions).toEqual(['clusters:view']);
    const [row] = await keysLabelled('policy-perms-default');
    expect([...row!.permissions]).toEqual(['clusters:view']);
    const [event] = await sql<{ details: { permissions: string[] } }>`select details from audit_events where subject_id = ${minted.api_key_id}`.execute(core.deps.db).then((r) => r.rows);
    expect(event!.details.permissions).toEqual(['clusters:view']);
  });

  it('max-ttl set: a key asked without a lifetime gets the new maximum; a longer one is refused; a shorter one keeps its own', async () => {
    const { owner, member, name } = await teamWithMember('policy-race-ttl');
    const now = core.clock.now.getTime();
    const unset = billingDuring(() => setPolicy(owner, name, 'max-ttl', '30d'));
    const minted = await mintApiKey(unset.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'policy-ttl-default', orgName: name, origin });
    expect(minted.expires_at!.getTime()).toBe(now + 30 * DAY);
    expect(new Date((await keysLabelled('policy-ttl-default'))[0]!.expires_at!).getTime()).toBe(now + 30 * DAY);

    const longer = billingDuring(() => setPolicy(owner, name, 'max-ttl', '14d'));
    const refused = await refusal(
      mintApiKey(longer.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'policy-ttl-longer', orgName: name, expiresInMs: 20 * DAY, origin }),
    );
    expect([refused.code, refused.extra.policySetting]).toEqual(['ORG_POLICY', 'max-ttl']);
    expect(refused.detail).toContain(`org "${name}" lets its keys live at most 14d (max-ttl 14d): 20d was asked for.`);
    expect(await keysLabelled('policy-ttl-longer')).toEqual([]);

    const shorter = billingDuring(() => setPolicy(owner, name, 'max-ttl', '10d'));
    const own = await mintApiKey(shorter.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'policy-ttl-shorter', orgName: name, expiresInMs: 7 * DAY, origin });
    expect(own.expires_at!.getTime()).toBe(now + 7 * DAY);
  });

  it('require-security-key true: an SSH mint with an ed25519 key is refused', async () => {
    const { owner, member, name } = await teamWithMember('policy-race-sk');
    const { deps } = billingDuring(() => setPolicy(owner, name, 'require-security-key', 'true'));
    const refused = await refusal(
      mintApiKey(deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'policy-sk-race', orgName: name, keyType: 'ssh-ed25519', origin }),
    );
    expect([refused.code, refused.extra.policySetting]).toEqual(['ORG_POLICY', 'require-security-key']);
    expect(refused.detail).toContain('you signed in with an ssh-ed25519 key');
    expect(await keysLabelled('policy-sk-race')).toEqual([]);
  });

  it("an HTTP window mint (its own transaction): refused under http-minting signed without spending the window; under a new max-ttl written, the window spent once", async () => {
    const holder = await httpAccount();
    const { owner, name } = await team('policy-race-http', holder);
    const mint = (deps: CoreDeps, label: string) => mintApiKeyOverHttp(deps, { email: holder.email, key: holder.key, label, orgName: name, origin: httpOrigin });
    const httpMints = async () => (await core.deps.db.selectFrom('ssh_keys').select('http_mints').where('id', '=', holder.sshKeyId).executeTakeFirstOrThrow()).http_mints;

    const signed = billingDuring(() => setPolicy(owner, name, 'http-minting', 'signed'));
    const refused = await refusal(mint(signed.deps, 'policy-http-signed'));
    expect([refused.code, refused.extra.policySetting]).toEqual(['ORG_POLICY', 'http-minting']);
    expect(refused.detail).toContain('the email trust window does not count');
    expect(await keysLabelled('policy-http-signed')).toEqual([]);
    expect(Number(await httpMints())).toBe(0);

    // The window has one use (mintsPerConfirmation 1): the retry after the version moved spends it once.
    await setPolicy(owner, name, 'http-minting', 'window');
    const ttl = billingDuring(() => setPolicy(owner, name, 'max-ttl', '30d'));
    const minted = await mint(ttl.deps, 'policy-http-ttl');
    expect(minted.expires_at!.getTime()).toBe(core.clock.now.getTime() + 30 * DAY);
    expect(Number(await httpMints())).toBe(1);
    expect((await refusal(mint(core.deps, 'policy-http-spent'))).code).toBe('UNVERIFIED_KEY');
  });

  // Postgres only: each change runs while the mint's read still holds its connection (a plugin's
  // transformResult), and PGlite has one connection.
  it.runIf(usingPostgres)('three changes within one mint (one during billing, one after each re-read): UNAVAILABLE, not a retry forever; nothing written', async () => {
    const { owner, member, name } = await teamWithMember('policy-storm-one');
    let reads = 0;
    const { deps } = billingDuring(() => setPolicy(owner, name, 'max-ttl', '30d'));
    // After each read of the member's orgs (the re-reads after a refused write), one more change.
    const storming = deps.db.withPlugin({
      transformQuery: ({ node }) => node,
      transformResult: async ({ result }) => {
        if (result.rows.length > 0 && 'policy_version' in (result.rows[0] as object)) await setPolicy(owner, name, 'max-ttl', `${31 + ++reads}d`);
        return result;
      },
    });
    const orgs = await orgsOfUser(core.deps.db, member.user);
    const refused = await refusal(mintApiKey({ ...deps, db: storming }, { user: member.user, orgs, sshKeyId: member.sshKeyId, label: 'policy-storm-one', orgName: name, origin }));
    expect(refused.code).toBe('UNAVAILABLE');
    expect(reads).toBe(3);
    expect(await keysLabelled('policy-storm-one')).toEqual([]);
  });
});

describe('a role change while a mint or rotation is at its billing check (members-mint false)', () => {
  it('an admin demoted to member during billing: the mint writes nothing and is refused, judged again as a member', async () => {
    const { owner, member: admin, name } = await teamWithMember('policy-demoted');
    await setMember(core.deps, name, admin.email, 'admin', adminOrigin);
    await setPolicy(owner, name, 'members-mint', 'false');
    const orgs = await orgsOfUser(core.deps.db, admin.user);
    expect(orgs.find((o) => o.name === name)?.role).toBe('admin');
    const { deps } = billingDuring(() => setMember(core.deps, name, admin.email, 'member', adminOrigin));
    const refused = await refusal(mintApiKey(deps, { user: admin.user, orgs, sshKeyId: admin.sshKeyId, label: 'policy-demoted-mint', orgName: name, origin }));
    expect([refused.code, refused.extra.policySetting]).toEqual(['ORG_POLICY', 'members-mint']);
    expect(await keysLabelled('policy-demoted-mint')).toEqual([]);

    // Promoted again, the same mint with no change during billing is written.
    await setMember(core.deps, name, admin.email, 'admin', adminOrigin);
    const minted = await mintApiKey(core.deps, { user: admin.user, sshKeyId: admin.sshKeyId, label: 'policy-promoted-mint', orgName: name, origin });
    expect((await keysLabelled('policy-promoted-mint')).map((k) => k.id)).toEqual([minted.api_key_id]);
  });

  it("an admin demoted or removed during billing cannot rotate a member's key (members-mint true, the default)", async () => {
    const { member, name } = await teamWithMember('policy-demoted-other');
    const admin = await account();
    await setMember(core.deps, name, admin.email, 'admin', adminOrigin);
    const key = await mintApiKey(core.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'policy-demoted-other', orgName: name, origin });
    const demoted = billingDuring(() => setMember(core.deps, name, admin.email, 'member', adminOrigin));
    expect((await refusal(rotateApiKey(demoted.deps, { actor: admin.user, keyId: key.api_key_id, origin }))).code).toBe('NOT_ALLOWED');
    await setMember(core.deps, name, admin.email, 'admin', adminOrigin);
    const removed = billingDuring(() => removeMember(core.deps, name, admin.email, adminOrigin));
    expect((await refusal(rotateApiKey(removed.deps, { actor: admin.user, keyId: key.api_key_id, origin }))).code).toBe('API_KEY_NOT_FOUND');
    const row = await core.deps.db.selectFrom('api_keys').selectAll().where('id', '=', key.api_key_id).executeTakeFirstOrThrow();
    expect([row.replaced_by_id, row.revoked_at]).toEqual([null, null]);
  });

  it('an admin demoted during billing: their rotation is refused, the old key untouched', async () => {
    const { owner, member: admin, name } = await teamWithMember('policy-demoted-rot');
    await setMember(core.deps, name, admin.email, 'admin', adminOrigin);
    await setPolicy(owner, name, 'members-mint', 'false');
    const key = await mintApiKey(core.deps, { user: admin.user, sshKeyId: admin.sshKeyId, label: 'policy-demoted-rot', orgName: name, origin });
    const { deps } = billingDuring(() => setMember(core.deps, name, admin.email, 'member', adminOrigin));
    const refused = await refusal(rotateApiKey(deps, { actor: admin.user, keyId: key.api_key_id, origin }));
    expect([refused.code, refused.extra.policySetting]).toEqual(['ORG_POLICY', 'members-mint']);
    const row = await core.deps.db.selectFrom('api_keys').selectAll().where('id', '=', key.api_key_id).executeTakeFirstOrThrow();
    expect([row.replaced_by_id, row.revoked_at]).toEqual([null, null]);
  });
});

describe('a policy change while a rotation is at its billing check', () => {
  it('max-ttl set: the new key gets the new maximum (without the change, a key without expiry is renewed without one)', async () => {
    const { owner, member, name } = await teamWithMember('policy-rotate-ttl');
    const first = await mintApiKey(core.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'policy-rotate-ttl', orgName: name, origin });
    const unchanged = await rotateApiKey(billingDuring(async () => {}).deps, { actor: member.user, keyId: first.api_key_id, origin });
    expect(unchanged.expires_at).toBeNull();

    const { deps, billing } = billingDuring(() => setPolicy(owner, name, 'max-ttl', '7d'));
    const rotated = await rotateApiKey(deps, { actor: member.user, keyId: unchanged.api_key_id, origin });
    expect(billing.calls).toBe(1);
    expect(rotated.expires_at!.getTime()).toBe(core.clock.now.getTime() + 7 * DAY);
    const row = await core.deps.db.selectFrom('api_keys').select('expires_at').where('id', '=', rotated.api_key_id).executeTakeFirstOrThrow();
    expect(new Date(row.expires_at!).getTime()).toBe(core.clock.now.getTime() + 7 * DAY);
  });

  it('members-mint false, or permissions narrowed below the key\'s: the rotation is refused, the old key untouched, no successor', async () => {
    const { owner, member, name } = await teamWithMember('policy-rotate-refused');
    const key = await mintApiKey(core.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'policy-rotate-refused', orgName: name, origin });
    const untouched = async () => {
      const row = await core.deps.db.selectFrom('api_keys').selectAll().where('id', '=', key.api_key_id).executeTakeFirstOrThrow();
      expect([row.replaced_by_id, row.expires_at, row.revoked_at]).toEqual([null, null, null]);
      expect(await core.deps.db.selectFrom('api_keys').select('id').where('rotated_from_id', '=', key.api_key_id).execute()).toEqual([]);
    };

    const members = billingDuring(() => setPolicy(owner, name, 'members-mint', 'false'));
    const refused = await refusal(rotateApiKey(members.deps, { actor: member.user, keyId: key.api_key_id, origin }));
    expect([refused.code, refused.extra.policySetting]).toEqual(['ORG_POLICY', 'members-mint']);
    expect(refused.detail).toContain(owner.email);
    await untouched();

    await setPolicy(owner, name, 'members-mint', 'true');
    const perms = billingDuring(() => setPolicy(owner, name, 'permissions', 'clusters:view'));
    const narrowed = await refusal(rotateApiKey(perms.deps, { actor: member.user, keyId: key.api_key_id, origin }));
    expect([narrowed.code, narrowed.extra.policySetting]).toEqual(['ORG_POLICY', 'permissions']);
    expect(narrowed.detail).toContain("clusters:create is among the key's permissions");
    await untouched();
  });

  it('http-minting signed during a holder\'s self-rotation over HTTP: refused, the old key still works and is not rotated', async () => {
    const { owner, member, name } = await teamWithMember('policy-rotate-holder');
    const key = await mintApiKey(core.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'policy-rotate-holder', orgName: name, origin });
    const { deps } = billingDuring(() => setPolicy(owner, name, 'http-minting', 'signed'));
    const refused = await refusal(rotateApiKeyAsHolder(deps, { apiKey: key.api_key, origin: httpOrigin }));
    expect([refused.code, refused.extra.policySetting]).toEqual(['ORG_POLICY', 'http-minting']);
    expect(refused.detail).toContain('a key cannot renew itself in this org');
    expect((await authenticateApiKey(core.deps, key.api_key)).api_key_id).toBe(key.api_key_id);
    expect(await core.deps.db.selectFrom('api_keys').select('id').where('rotated_from_id', '=', key.api_key_id).execute()).toEqual([]);
  });
});

describe('a member removed during the billing check (an org with a policy of its own)', () => {
  it('a mint gets ORG_NOT_FOUND, also when the policy changed too; nothing written', async () => {
    const { owner, member, name } = await teamWithMember('policy-removed');
    await setPolicy(owner, name, 'max-ttl', '30d');
    const removed = billingDuring(() => removeMember(core.deps, name, member.email, adminOrigin));
    const refused = await refusal(mintApiKey(removed.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'policy-removed-mint', orgName: name, origin }));
    expect([refused.code, refused.status]).toEqual(['ORG_NOT_FOUND', 404]);

    const again = await teamWithMember('policy-removed-changed');
    await setPolicy(again.owner, again.name, 'permissions', 'clusters:view');
    const both = billingDuring(async () => {
      await setPolicy(again.owner, again.name, 'members-mint', 'false');
      await removeMember(core.deps, again.name, again.member.email, adminOrigin);
    });
    const refusedToo = await refusal(mintApiKey(both.deps, { user: again.member.user, sshKeyId: again.member.sshKeyId, label: 'policy-removed-mint', orgName: again.name, origin }));
    expect([refusedToo.code, refusedToo.status]).toEqual(['ORG_NOT_FOUND', 404]);
    expect(await keysLabelled('policy-removed-mint')).toEqual([]);
    expect(await keyCreatedEvents('policy-removed-mint')).toEqual([]);
  });

  it("a rotation of the member's key gets CREATOR_LEFT_ORG", async () => {
    const { owner, member, name } = await teamWithMember('policy-removed-rotate');
    await setPolicy(owner, name, 'max-ttl', '30d');
    const key = await mintApiKey(core.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'policy-removed-rotate', orgName: name, origin });
    const { deps } = billingDuring(() => removeMember(core.deps, name, member.email, adminOrigin));
    expect((await refusal(rotateApiKey(deps, { actor: owner.user, keyId: key.api_key_id, origin }))).code).toBe('CREATOR_LEFT_ORG');
    expect(await core.deps.db.selectFrom('api_keys').select('id').where('rotated_from_id', '=', key.api_key_id).execute()).toEqual([]);
  });
});

describe('round trips of an SSH create in an org with a policy of its own', () => {
  it('the owner: still 2 statements (identity with orgs and policy, then the key), and the key follows the policy', async () => {
    const owner = await core.verifiedUser();
    const name = `policy-trips-${Date.now().toString(36)}`;
    await createOrg(core.deps, name, owner.email, adminOrigin);
    for (const [setting, value] of [
      ['max-ttl', '30d'],
      ['permissions', 'clusters:view'],
      ['members-mint', 'false'],
      ['http-minting', 'off'],
    ] as const) {
      await setPolicy(null, name, setting, value);
    }
    const { db, statements } = countingStatements(core.deps.db);
    const deps = { ...core.deps, db };
    const identity = await resolveSshIdentity(deps, owner.publicKey);
    const created = await runSshLine(deps, identity, `create --label policy-counted-key --org ${name}`);
    expect(created.code).toBe(0);
    expect(statements).toEqual(['SelectQueryNode', 'InsertQueryNode']);
    const [row] = await keysLabelled('policy-counted-key');
    expect([...row!.permissions]).toEqual(['clusters:view']);
    expect(new Date(row!.expires_at!).getTime()).toBe(core.clock.now.getTime() + 30 * DAY);
  });

  it('a member in an org whose policy lets members mint: 2 statements; refused by it: one more read (who can change it) and no write', async () => {
    const member = await core.verifiedUser();
    const { owner, name } = await team('policy-trips-member', member);
    await setPolicy(owner, name, 'max-ttl', '14d');
    await setPolicy(owner, name, 'require-security-key', 'false'); // already: no version change
    const { db, statements } = countingStatements(core.deps.db);
    const deps = { ...core.deps, db };
    const created = await runSshLine(deps, await resolveSshIdentity(deps, member.publicKey), `create --label policy-counted-member --org ${name}`);
    expect(created.code).toBe(0);
    expect(statements).toEqual(['SelectQueryNode', 'InsertQueryNode']);

    await setPolicy(owner, name, 'members-mint', 'false');
    statements.length = 0;
    const refused = await runSshLine(deps, await resolveSshIdentity(deps, member.publicKey), `create --label policy-counted-refused --org ${name}`);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('members-mint false');
    expect(statements).toEqual(['SelectQueryNode', 'SelectQueryNode']);
    expect(await keysLabelled('policy-counted-refused')).toEqual([]);
  });
});

describe('setOrgPolicy', () => {
  it('an owner changes each setting: the org\'s row, its version up by one, an audit row {setting, old, new} with the actor and the org', async () => {
    const { owner, name, org } = await team('policy-set');
    expect(await versionOf(org.id)).toBe(0);
    const changes: Array<[PolicySetting, string, string, string]> = [
      ['max-ttl', '720h', 'none', '30d'],
      ['permissions', 'clusters:create, clusters:view', 'all', 'clusters:view,clusters:create'],
      ['permissions', 'clusters:view', 'clusters:view,clusters:create', 'clusters:view'],
      ['require-security-key', 'true', 'false', 'true'],
      ['http-minting', 'signed', 'window', 'signed'],
      ['members-mint', 'false', 'true', 'false'],
    ];
    for (const [i, [setting, value, old, shown]] of changes.entries()) {
      const result = await setPolicy(owner, name, setting, value);
      expect(result).toMatchObject({ org_id: org.id, org_name: name, setting, old, new: shown, changed: true, managers: [owner.email] });
      expect(result.policy.version).toBe(i + 1);
      expect(await versionOf(org.id)).toBe(i + 1);
    }
    const row = await core.deps.db.selectFrom('orgs').selectAll().where('id', '=', org.id).executeTakeFirstOrThrow();
    expect(row).toMatchObject({
      policy_max_ttl_seconds: 30 * 86_400,
      policy_require_security_key: true,
      policy_http_minting: 'signed',
      policy_members_mint: false,
    });
    expect([...row.policy_permissions!]).toEqual(['clusters:view']);
    const events = await policyEvents(org.id);
    expect(events).toHaveLength(changes.length);
    for (const [setting, , old, shown] of changes) {
      expect(events).toContainEqual({ action: 'org.policy_changed', actor_user_id: owner.user.id, org_id: org.id, subject_id: org.id, channel: 'ssh', details: { setting, old, new: shown } });
    }
  });

  it('a value the org already has (also written another way: 30d as 720h) changes nothing: no audit row, the same version', async () => {
    const { owner, name, org } = await team('policy-same');
    await setPolicy(owner, name, 'max-ttl', '30d');
    for (const [setting, value] of [
      ['max-ttl', '720h'],
      ['max-ttl', '30d'],
      ['permissions', 'all'],
      ['require-security-key', 'false'],
      ['http-minting', 'window'],
      ['members-mint', 'true'],
    ] as const) {
      const result = await setPolicy(owner, name, setting, value);
      expect(result.changed).toBe(false);
      expect(result.old).toBe(result.new);
      expect(result.policy.version).toBe(1);
    }
    expect(await versionOf(org.id)).toBe(1);
    expect(await policyEvents(org.id)).toHaveLength(1);
  });

  it('an admin may change it; the operator (actor null) any org by name, audited with no actor over the admin door', async () => {
    const { owner, name, org } = await team('policy-operator');
    const admin = await account();
    await setMember(core.deps, name, admin.email, 'admin', adminOrigin);
    expect((await setPolicy(admin, name, 'members-mint', 'false')).changed).toBe(true);
    const byOperator = await setPolicy(null, name, 'max-ttl', '2w');
    expect(byOperator).toMatchObject({ changed: true, old: 'none', new: '14d', managers: [owner.email, admin.email] });
    const events = await policyEvents(org.id);
    expect(events.map((e) => [e.actor_user_id, e.channel, e.details])).toEqual([
      [admin.user.id, 'ssh', { setting: 'members-mint', old: 'true', new: 'false' }],
      [null, 'admin', { setting: 'max-ttl', old: 'none', new: '14d' }],
    ]);
    expect((await refusal(setOrgPolicy(core.deps, { actor: null, orgName: undefined, setting: 'max-ttl', value: '1d', origin: adminOrigin }))).code).toBe('ORG_NOT_FOUND');
    expect((await refusal(setPolicy(null, `no-such-org-${Date.now().toString(36)}`, 'max-ttl', '1d'))).code).toBe('ORG_NOT_FOUND');
  });

  it('a plain member is refused (POLICY_CHANGE_NOT_ALLOWED) with the owners and admins named; a stranger finds no org; nothing changes', async () => {
    const { owner, member, name, org } = await teamWithMember('policy-member-refused');
    const admin = await account();
    await setMember(core.deps, name, admin.email, 'admin', adminOrigin);
    const refused = await refusal(setPolicy(member, name, 'members-mint', 'false'));
    expect([refused.code, refused.status, refused.extra.orgName]).toEqual(['POLICY_CHANGE_NOT_ALLOWED', 403, name]);
    expect(refused.detail).toBe(`you are a member of "${name}"; its owners and admins: ${owner.email}, ${admin.email}`);
    const stranger = await account();
    expect((await refusal(setPolicy(stranger, name, 'members-mint', 'false'))).code).toBe('ORG_NOT_FOUND');
    expect(await versionOf(org.id)).toBe(0);
    expect(await policyEvents(org.id)).toEqual([]);
  });

  it('a value that is none of the setting\'s: INVALID_REQUEST naming the setting, nothing changes; the bounds themselves are taken', async () => {
    const { owner, name, org } = await team('policy-parse');
    const cases: Array<[PolicySetting, string, string]> = [
      ['max-ttl', 'soon', 'max-ttl: a duration such as 30d, 12h or 2w, or none'],
      ['max-ttl', '0', 'max-ttl: a duration such as 30d, 12h or 2w, or none'],
      ['max-ttl', '', 'max-ttl: a duration such as 30d, 12h or 2w, or none'],
      ['max-ttl', '4m59s', 'max-ttl: at least 5m (the shortest lifetime a key may have)'],
      ['max-ttl', '3651d', 'max-ttl: at most 3650d; "none" for no maximum'],
      ['permissions', ' , ', 'permissions: a comma-separated list among clusters:view, clusters:create, or all'],
      ['permissions', 'clusters:view,clusters:destroy', 'permissions: "clusters:destroy" is not a permission on this server; its permissions: clusters:view, clusters:create'],
      ['require-security-key', 'yes', 'require-security-key: true or false, not "yes"'],
      ['http-minting', 'sometimes', 'http-minting: window, signed or off, not "sometimes"'],
      ['members-mint', 'TRUE', 'members-mint: true or false, not "TRUE"'],
    ];
    for (const [setting, value, detail] of cases) {
      const refused = await refusal(setPolicy(owner, name, setting, value));
      expect([setting, value, refused.code, refused.status, refused.detail]).toEqual([setting, value, 'INVALID_REQUEST', 400, detail]);
    }
    expect(await versionOf(org.id)).toBe(0);
    expect(await policyEvents(org.id)).toEqual([]);
    expect((await setPolicy(owner, name, 'max-ttl', '5m')).new).toBe('5m');
    expect((await setPolicy(owner, name, 'max-ttl', '3650d')).new).toBe('3650d');
  });
});

describe('policy changes in the audit viewer', () => {
  it("a plain member sees their org's changes (REASON `max-ttl 30d (was none)`, who made them) and no other org's", async () => {
    const { owner, member, name, org } = await teamWithMember('policy-audit');
    const other = await team('policy-audit-other');
    const colleague = await account();
    await setMember(core.deps, name, colleague.email, 'member', adminOrigin);
    await setPolicy(owner, name, 'max-ttl', '30d');
    await setPolicy(null, name, 'http-minting', 'signed');
    await setPolicy(other.owner, other.name, 'max-ttl', '30d');
    await mintApiKey(core.deps, { user: colleague.user, sshKeyId: colleague.sshKeyId, label: 'policy-audit-colleague', orgName: name, origin });

    const query = { sinceMs: AUDIT_DEFAULT_SINCE_MS, limit: AUDIT_DEFAULT_LIMIT };
    const events = await auditEventsOf(core.deps, member.user, query);
    const changes = events.filter((e) => e.action === 'org.policy_changed');
    expect(changes.map((e) => ({ org: e.org_name, actor: e.actor, reason: e.reason, details: e.details, subject: e.subject_id }))).toEqual([
      { org: name, actor: 'operator', reason: 'http-minting signed (was window)', details: { setting: 'http-minting', old: 'window', new: 'signed' }, subject: org.id },
      { org: name, actor: owner.email, reason: 'max-ttl 30d (was none)', details: { setting: 'max-ttl', old: 'none', new: '30d' }, subject: org.id },
    ]);
    expect(events.filter((e) => e.org_id === other.org.id)).toEqual([]);
    // A colleague's key is still not theirs to see.
    expect(events.filter((e) => e.label === 'policy-audit-colleague')).toEqual([]);
    // Named, the same; the other org is none of theirs.
    expect((await auditEventsOf(core.deps, member.user, { ...query, orgName: name })).filter((e) => e.action === 'org.policy_changed')).toHaveLength(2);
    expect((await refusal(auditEventsOf(core.deps, member.user, { ...query, orgName: other.name }))).code).toBe('ORG_NOT_FOUND');
  });
});

/** Polls an async condition until it holds, or fails after 10 s. */
async function untilAsync(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Backends of this database waiting for a lock: advisory ones, or row and transaction locks. */
async function lockWaiters(kind: 'advisory' | 'row'): Promise<number> {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity
    where datname = current_database() and wait_event_type = 'Lock' and (wait_event = 'advisory') = ${kind === 'advisory'}`.execute(core.deps.db);
  return rows[0]!.n;
}

describe.runIf(usingPostgres)('a policy change in progress holds the org\'s row', () => {
  it('a mint\'s write and a rotation\'s transaction wait for it to commit, then are judged under the new policy', async () => {
    const { owner, member, name } = await teamWithMember('policy-lock');
    const key = await mintApiKey(core.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'policy-lock-rotated', orgName: name, origin });
    const db = core.deps.db;
    // The change stops at its audit row (after locking the org's row and updating it) until the
    // test lets it go: a trigger waiting for an advisory lock that another connection holds.
    await sql`create function policy_change_hold() returns trigger language plpgsql as $$
      begin
        if new.action = 'org.policy_changed' then perform pg_advisory_xact_lock(4242020); end if;
        return new;
      end $$`.execute(db);
    await sql`create trigger policy_change_hold before insert on audit_events for each row execute function policy_change_hold()`.execute(db);
    const holder = await openDatabase({ kind: 'postgres', url: (core.database.target as { url: string }).url });
    let release = () => {};
    let held = () => {};
    const holding = new Promise<void>((resolve) => (held = resolve));
    const gate = holder.db.transaction().execute(async (trx) => {
      await sql`select pg_advisory_xact_lock(4242020)`.execute(trx);
      held();
      await new Promise<void>((resolve) => (release = resolve));
    });
    try {
      await holding;
      const changing = setPolicy(owner, name, 'members-mint', 'false');
      await untilAsync(async () => (await lockWaiters('advisory')) === 1, 'the change held at its audit row');
      // Both read the org as it was (the change has not committed): members-mint true, the old version.
      const minting = refusal(mintApiKey(core.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'policy-lock-minted', orgName: name, origin }));
      const rotating = refusal(rotateApiKey(core.deps, { actor: member.user, keyId: key.api_key_id, origin }));
      await untilAsync(async () => (await lockWaiters('row')) === 2, 'the mint and the rotation waiting for the org\'s row');
      release();
      expect((await changing).changed).toBe(true);
      for (const refused of [await minting, await rotating]) {
        expect([refused.code, refused.extra.policySetting]).toEqual(['ORG_POLICY', 'members-mint']);
      }
      expect(await keysLabelled('policy-lock-minted')).toEqual([]);
      expect(await core.deps.db.selectFrom('api_keys').select('id').where('rotated_from_id', '=', key.api_key_id).execute()).toEqual([]);
    } finally {
      release();
      await gate;
      await holder.close();
      await sql`drop trigger policy_change_hold on audit_events`.execute(db);
      await sql`drop function policy_change_hold()`.execute(db);
    }
  });
});

describe.runIf(usingPostgres)('mints racing policy changes on real Postgres', () => {
  it('20 mints at once while another connection flips members-mint: every key was written while members-mint was true, by the order the locks gave them', async () => {
    const { owner, member, name, org } = await teamWithMember('policy-flips');
    const db = core.deps.db;
    // What is provable: a key's statement holds the org's row FOR SHARE from its read of the
    // version to its commit, and a change holds it FOR UPDATE from before its update to its
    // commit. Whichever of the two comes second waits for the first to commit, so a number
    // drawn while holding the lock (a trigger on each audit row, which both write after
    // locking) orders keys and changes as the database serialized them. (created_at cannot:
    // it is each transaction's start, before its lock; and a key's created_at is the core's clock.)
    await sql`create table policy_race_order (seq bigserial primary key, event_id uuid not null)`.execute(db);
    await sql`create function policy_race_record() returns trigger language plpgsql as $$
      begin insert into policy_race_order (event_id) values (new.id); return new; end $$`.execute(db);
    await sql`create trigger policy_race_record after insert on audit_events for each row execute function policy_race_record()`.execute(db);
    const flipper = await openDatabase({ kind: 'postgres', url: (core.database.target as { url: string }).url });
    const flipperDeps = { ...core.deps, db: flipper.db };
    const outcomes: PromiseSettledResult<Awaited<ReturnType<typeof mintApiKey>>>[] = [];
    try {
      for (let round = 0; round < 5; round++) {
        // Five groups of four: group g passes billing once flip g has committed (group 0 at once),
        // so its mints judged the policy before that flip and write after it.
        const flips = ['false', 'true', 'false', 'true'];
        const committed: Array<() => void> = [];
        const flipped = [Promise.resolve(), ...flips.map(() => new Promise<void>((resolve) => committed.push(resolve)))];
        let entered = 0;
        let allEntered = () => {};
        const everyoneRead = new Promise<void>((resolve) => (allEntered = resolve));
        const mints = Array.from({ length: 20 }, (_, i) => {
          const group = i % 5;
          const billing: BillingCheck = {
            async isActive(o) {
              if (++entered === 20) allEntered();
              await flipped[group];
              return o.subscription === 'active';
            },
          };
          return mintApiKey({ ...core.deps, billing }, { user: member.user, sshKeyId: member.sshKeyId, label: `policy-flip-${round}-${i}`, orgName: name, origin });
        });
        const settled = (group: number) => Promise.race(mints.filter((_, i) => i % 5 === group).map((m) => m.then(() => {}, () => {})));
        // Another connection flips, each flip once one mint let through by the one before has
        // finished: at most four changes within any mint, so none can see the three-change storm.
        const flipping = (async () => {
          await everyoneRead;
          for (const [k, value] of flips.entries()) {
            if (k > 0) await settled(k);
            await setPolicy(owner, name, 'members-mint', value, flipperDeps);
            committed[k]!();
          }
        })();
        outcomes.push(...(await Promise.allSettled(mints)));
        await flipping;
      }

      const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected').map((o) => o.reason as unknown);
      const unexpected = refused.filter((e) => !(e instanceof AppError && e.code === 'ORG_POLICY' && e.extra.policySetting === 'members-mint'));
      expect(unexpected.map(String)).toEqual([]);
      const written = outcomes.filter((o) => o.status === 'fulfilled').map((o) => o.value.api_key_id);

      const keys = await db.selectFrom('api_keys').select('id').where('org_id', '=', org.id).where('created_by_user_id', '=', member.user.id).execute();
      expect(keys.map((k) => k.id).sort()).toEqual([...written].sort());
      const order = await sql<{ seq: string; action: string; subject_id: string; details: { setting?: string; old?: string; new?: string } }>`
        select o.seq, e.action, e.subject_id, e.details from policy_race_order o join audit_events e on e.id = o.event_id
        where e.org_id = ${org.id} and e.action in ('org.policy_changed', 'api_key.created') order by o.seq`.execute(db);
      let membersMint = 'true';
      const underFalse: string[] = [];
      let changes = 0;
      for (const event of order.rows) {
        if (event.action === 'org.policy_changed') {
          expect(event.details).toEqual({ setting: 'members-mint', old: membersMint, new: membersMint === 'true' ? 'false' : 'true' });
          membersMint = event.details.new!;
          changes++;
        } else if (membersMint !== 'true') underFalse.push(event.subject_id);
      }
      expect(changes).toBe(20);
      expect(order.rows.filter((e) => e.action === 'api_key.created').map((e) => e.subject_id).sort()).toEqual([...written].sort());
      expect(underFalse).toEqual([]);
      // Each round, by construction: the first of group 1 and of group 3 to finish were refused
      // (judged before a flip to false, finished before the flip back), the first of group 2 and
      // all of group 4 were written (judged again after a flip to true, before the next flip).
      expect(refused.length).toBeGreaterThanOrEqual(5 * 2);
      expect(written.length).toBeGreaterThanOrEqual(5 * 5);
    } finally {
      await flipper.close();
      await sql`drop trigger policy_race_record on audit_events`.execute(db);
      await sql`drop function policy_race_record()`.execute(db);
      await sql`drop table policy_race_order`.execute(db);
    }
  });
});
