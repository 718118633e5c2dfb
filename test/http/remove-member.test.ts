import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/command/framework.js';
import { findUserByEmail, mintApiKey } from '../../src/core/index.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { runAdmin } from '../support/in-process.js';
import { makeKey, uniqueEmail } from '../support/keys.js';

// `npm run admin -- org remove-member ORG EMAIL` (issue 19, point 7): the member's keys in that
// org stop working at once (checked on /api/whoami over real HTTP, after the keys were cached),
// their keys elsewhere keep working, the removal is audited, and they are emailed the list.

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

const whoami = (apiKey: string) => t.request('/api/whoami', { headers: { authorization: `Bearer ${apiKey}` } });
const admin = (...words: string[]) => runAdmin(t.app.deps, ...words);

/** An account made the way the HTTP door makes it (with its personal org, where it is admin). */
async function account(local: string): Promise<string> {
  const email = uniqueEmail(local);
  await t.verifyByEmail(email, makeKey().publicKey);
  return email;
}

async function mint(email: string, label: string, org?: string): Promise<{ key: string; id: string }> {
  const user = (await findUserByEmail(t.app.deps.db, email))!;
  const minted = await mintApiKey(t.app.deps, { user, sshKeyId: null, label, orgName: org, origin: { channel: 'ssh', ip: '127.0.0.1' } });
  return { key: minted.api_key, id: minted.api_key_id };
}

describe('org remove-member', () => {
  it("revokes the member's keys in that org at once (whoami 401, cached or not), keeps their other keys, audits it and emails them", async () => {
    const owner = await account('rm-owner');
    const member = await account('rm-member');
    const team = `rm-team-${Date.now().toString(36)}`;
    expect((await admin('org', 'create', team, '--owner', owner)).code).toBe(EXIT.OK);
    expect((await admin('org', 'add-member', team, member, '--role', 'member')).code).toBe(EXIT.OK);

    const deploy = await mint(member, 'member-deploy', team);
    const laptop = await mint(member, 'member-laptop', team);
    const gone = await mint(member, 'already-revoked', team);
    expect((await admin('keys', 'revoke', gone.id)).code).toBe(EXIT.OK);
    const personal = await mint(member, 'member-personal'); // their personal org
    const ownersKey = await mint(owner, 'owner-deploy', team);
    // Every live key answers 200 first, so the whoami cache holds each of them.
    for (const k of [deploy, laptop, personal, ownersKey]) expect((await whoami(k.key)).status).toBe(200);

    const removed = await admin('org', 'remove-member', team, member);
    expect(removed.code, removed.stderr).toBe(EXIT.OK);
    expect(removed.stdout).toBe(
      `Removed ${member} (member) from ${team}.\n` +
        `Revoked 2 API keys made there, emailing the list to their creator: ${deploy.id.slice(0, 8)} member-deploy, ${laptop.id.slice(0, 8)} member-laptop\n`,
    );

    // At once: no waiting for a cache to expire.
    expect((await whoami(deploy.key)).status).toBe(401);
    expect((await whoami(laptop.key)).status).toBe(401);
    expect((await whoami(personal.key)).status).toBe(200);
    expect((await whoami(ownersKey.key)).status).toBe(200);

    const rows = await t.app.deps.db.selectFrom('api_keys').select(['id', 'revoked_reason', 'revoked_by_user_id']).where('id', 'in', [deploy.id, laptop.id, gone.id]).execute();
    expect(Object.fromEntries(rows.map((r) => [r.id, r.revoked_reason]))).toEqual({ [deploy.id]: 'member_removed', [laptop.id]: 'member_removed', [gone.id]: null });
    expect((await t.app.deps.db.selectFrom('memberships').innerJoin('orgs', 'orgs.id', 'memberships.org_id').select('orgs.name').where('memberships.user_id', '=', (await findUserByEmail(t.app.deps.db, member))!.id).execute()).map((r) => r.name)).not.toContain(team);
    expect(await findUserByEmail(t.app.deps.db, member)).toBeDefined(); // the account stays

    // The audit trail, as the operator's viewer shows it.
    const audit = JSON.parse((await admin('audit', '--org', team, '--json')).stdout) as Array<Record<string, unknown>>;
    expect(audit.find((e) => e.action === 'membership.removed')).toMatchObject({
      actor: 'operator',
      door: 'admin',
      details: { email: member, role: 'member', keys_revoked: 2 },
    });
    for (const k of [deploy, laptop]) {
      expect(audit.find((e) => e.action === 'api_key.revoked' && e.key_id === k.id)).toMatchObject({ actor: 'operator', reason: 'member_removed', details: expect.objectContaining({ member }) });
    }

    // The member is told which keys, in which org.
    const mail = await t.smtp.waitForMail(member);
    expect(mail.subject).toBe(`Your API keys in ${team} were revoked: you are no longer a member`);
    expect(mail.text).toContain(deploy.id);
    expect(mail.text).toContain(laptop.id);
    expect(mail.text).not.toContain(gone.id);
    expect(mail.text).not.toContain(personal.id);
    expect(t.smtp.mailsTo(owner).filter((m) => m.subject.includes('revoked'))).toEqual([]);

    // Once is enough: now they are not a member.
    expect(await admin('org', 'remove-member', team, member)).toEqual({ code: EXIT.FAILED, stdout: '', stderr: 'error: That user is not a member of the organization\n' });
  });

  it('--json says what was removed and revoked; a member with no live key there is removed, nobody emailed', async () => {
    const owner = await account('rm-owner-json');
    const member = await account('rm-member-json');
    const team = `rm-json-${Date.now().toString(36)}`;
    await admin('org', 'create', team, '--owner', owner);
    await admin('org', 'add-member', team, member, '--role', 'admin');
    const key = await mint(member, 'admin-key', team);
    const result = await admin('org', 'remove-member', team, member, '--json');
    expect(result.code, result.stderr).toBe(EXIT.OK);
    expect(JSON.parse(result.stdout)).toEqual({
      org_id: expect.any(String),
      org_name: team,
      user_id: expect.any(String),
      email: member,
      role: 'admin',
      keys_revoked: 1,
      revoked_keys: [{ id: key.id, label: 'admin-key', org_name: team, expires_at: null, created_by: member }],
    });

    const quiet = await account('rm-quiet');
    await admin('org', 'add-member', team, quiet, '--role', 'member');
    const mailsBefore = t.smtp.messages.length;
    expect(await admin('org', 'remove-member', team, quiet)).toMatchObject({ code: EXIT.OK, stdout: `Removed ${quiet} (member) from ${team}.\nNo live API key made there to revoke.\n` });
    await t.mailSettled();
    expect(t.smtp.messages.length).toBe(mailsBefore);
  });

  it("an alias (alice+ci@) loses the org with its base account: its keys there are revoked too, unless it is a member itself", async () => {
    const owner = await account('rm-alias-owner');
    const base = await account('rm-base');
    const alias = base.replace('@', '+ci@');
    await t.verifyByEmail(alias, makeKey().publicKey);
    const team = `rm-alias-${Date.now().toString(36)}`;
    await admin('org', 'create', team, '--owner', owner);
    await admin('org', 'add-member', team, base, '--role', 'member');
    const aliasKey = await mint(alias, 'alias-agent-key', team); // the alias acts with its base's membership
    const member = base.replace('@', '+own@');
    await t.verifyByEmail(member, makeKey().publicKey);
    await admin('org', 'add-member', team, member, '--role', 'member');
    const membersKey = await mint(member, 'alias-own-membership', team);
    for (const k of [aliasKey, membersKey]) expect((await whoami(k.key)).status).toBe(200);
    const result = await admin('org', 'remove-member', team, base, '--json');
    expect(JSON.parse(result.stdout)).toMatchObject({ keys_revoked: 1, revoked_keys: [{ id: aliasKey.id, created_by: alias }] });
    expect((await whoami(aliasKey.key)).status).toBe(401);
    expect((await whoami(membersKey.key)).status).toBe(200);
    expect((await t.smtp.waitForMail(alias)).text).toContain(aliasKey.id);
  });

  it('refuses: the last owner, the last admin of an org without owners (a personal one), an unknown org or email; a second owner makes it possible', async () => {
    const owner = await account('rm-last-owner');
    const team = `rm-last-${Date.now().toString(36)}`;
    await admin('org', 'create', team, '--owner', owner);
    const ownersKey = await mint(owner, 'owner-key-stays', team);
    expect(await admin('org', 'remove-member', team, owner)).toEqual({
      code: EXIT.FAILED,
      stdout: '',
      stderr: `error: Cannot remove the last owner of an organization: make someone else its owner first (${owner} is its only owner)\n`,
    });
    expect((await whoami(ownersKey.key)).status).toBe(200); // nothing happened

    // A personal org has its account as admin and no owner: it cannot be left without one either.
    const loner = await account('rm-loner');
    const { name: lonersOrg } = await t.app.deps.db
      .selectFrom('orgs')
      .select('name')
      .where('personal_user_id', '=', (await findUserByEmail(t.app.deps.db, loner))!.id)
      .executeTakeFirstOrThrow();
    expect((await admin('org', 'remove-member', lonersOrg, loner)).stderr).toBe(
      `error: Cannot remove the last owner of an organization: make someone else its owner first (it has no owner, and ${loner} is its only admin)\n`,
    );

    expect(await admin('org', 'remove-member', 'no-such-org-rm', owner)).toEqual({ code: EXIT.FAILED, stdout: '', stderr: 'error: Organization not found\n' });
    expect(await admin('org', 'remove-member', team, uniqueEmail('nobody'))).toEqual({
      code: EXIT.FAILED,
      stdout: '',
      stderr: 'error: User not found (no account has that email)\n',
    });
    expect((await admin('org', 'remove-member', team, 'not-an-email')).stderr).toMatch(/^error: EMAIL must be an email address\nusage: org remove-member ORG EMAIL/);
    expect((await admin('org', 'remove-member', team)).code).toBe(EXIT.USAGE);

    const second = await account('rm-second-owner');
    await admin('org', 'add-member', team, second, '--role', 'owner');
    expect((await admin('org', 'remove-member', team, owner)).code).toBe(EXIT.OK);
    expect((await whoami(ownersKey.key)).status).toBe(401);
  });
});
