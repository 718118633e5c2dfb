import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { confirmVerificationLink, mintApiKey, orgsOfUser, resolveSshIdentity, startVerification } from '../../src/core/index.js';
import { findUserByEmail } from '../../src/core/accounts.js';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { publicKeyOf, startTestCore, type TestCore } from '../support/core.js';
import { runAdmin } from '../support/in-process.js';
import { openssh } from '../support/ssh.js';

// A plain `create` (and an HTTP mint without org_name) goes to the account's own, personal org;
// only an account without one falls back to its oldest membership (issue 17, friction #4).

const API_KEY_LINE = /^[0-9a-f-]{36}[0-9a-f]{64}\n$/;

describe('the default org, over OpenSSH and HTTP', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t?.close();
  });

  it('added to a suspended team org before the first login, alice still mints in her own org with a plain create', async () => {
    const alice = uniqueEmail('alice');
    const team = `acme-${Date.now().toString(36)}`;
    // The operator's morning: the team org, its billing suspended, alice added before she ever logged in.
    expect((await runAdmin(t.app.deps, 'org', 'create', team, '--owner', uniqueEmail('boss'))).code).toBe(0);
    expect((await runAdmin(t.app.deps, 'billing', 'set', team, 'suspended')).code).toBe(0);
    expect((await runAdmin(t.app.deps, 'org', 'add-member', team, alice, '--role', 'member')).stdout).toContain('(new account, not yet verified)');

    const key = makeKey();
    const login = openssh(t.app.sshPort, key.privateKeyPath, ['login', alice]);
    await t.confirmMailTo(alice);
    expect((await login).code).toBe(0);
    const personal = alice.split('@')[0]!;
    const orgs = JSON.parse((await openssh(t.app.sshPort, key.privateKeyPath, ['orgs', '--json'])).stdout) as Array<{ name: string }>;
    // The team membership is the older one: "the first in orgs" is not where keys should go.
    expect(orgs.map((o) => o.name)).toEqual([team, personal]);

    const created = await openssh(t.app.sshPort, key.privateKeyPath, ['create', '--label', 'first-key']);
    expect(created.stderr).not.toContain('suspended');
    expect(created.code).toBe(0);
    expect(created.stdout).toMatch(API_KEY_LINE);
    expect(created.stderr).toContain(`in org ${personal} (`);

    // Naming the team org still meets its billing; and a suspended default is named, not "the first".
    expect(await openssh(t.app.sshPort, key.privateKeyPath, ['create', '--label', 'team-key', '--org', team])).toEqual({
      code: 1,
      stdout: '',
      stderr: `error: org "${team}" is suspended: minting is off until its billing is active\n`,
    });
    expect((await runAdmin(t.app.deps, 'billing', 'set', personal, 'suspended')).code).toBe(0);
    expect(await openssh(t.app.sshPort, key.privateKeyPath, ['create', '--label', 'second-key'])).toEqual({
      code: 1,
      stdout: '',
      stderr: `error: your default org "${personal}" is suspended: minting is off until its billing is active\n`,
    });
  });

  it('the HTTP door without org_name mints in the personal org too', async () => {
    const bob = uniqueEmail('bob');
    const team = `globex-${Date.now().toString(36)}`;
    expect((await runAdmin(t.app.deps, 'org', 'create', team, '--owner', bob)).code).toBe(0);
    expect((await runAdmin(t.app.deps, 'billing', 'set', team, 'suspended')).code).toBe(0);
    const key = makeKey();
    await t.verifyByEmail(bob, key.publicKey);
    const minted = await t.post('/api/shell-auth/api-keys', { email: bob, ssh_public_key: key.publicKey, label: 'http-default' });
    expect(minted.status, minted.text).toBe(200);
    expect(minted.body.org_name).toBe(bob.split('@')[0]);
  });
});

describe('which org is personal (core, real database)', () => {
  let core: TestCore;
  beforeAll(async () => {
    core = await startTestCore();
  });
  afterAll(async () => {
    await core?.close();
  });

  const origin = { channel: 'admin' as const, ip: null };

  it('an alias acts in its base account\'s personal org; without a personal org the oldest membership is the default', async () => {
    const base = await core.verifiedUser();
    const baseUser = (await findUserByEmail(core.deps.db, base.email))!;
    const [own] = await orgsOfUser(core.deps.db, baseUser);
    expect(own).toMatchObject({ name: base.email.split('@')[0], personal: true });

    // The alias joins a team org before its first confirmation; aliases get no org of their own.
    const alias = base.email.replace('@', '+bot@');
    const team = `initech-${Date.now().toString(36)}`;
    expect((await runAdmin(core.deps, 'org', 'create', team, '--owner', uniqueEmail('owner'))).code).toBe(0);
    expect((await runAdmin(core.deps, 'org', 'add-member', team, alias, '--role', 'member')).code).toBe(0);
    const aliasKey = publicKeyOf(makeKey().publicKey);
    await startVerification(core.deps, { email: alias, key: aliasKey, note: null, keyProven: true, origin: { channel: 'ssh', ip: '127.0.0.1' } });
    await core.deliverMail();
    await confirmVerificationLink(core.deps, new URL(core.mails.at(-1)!.link).searchParams.get('token')!, origin);
    const identity = await resolveSshIdentity(core.deps, aliasKey);
    if (identity.kind !== 'account') throw new Error('expected an account');
    expect(identity.orgs.map((o) => [o.name, o.personal])).toEqual(
      expect.arrayContaining([
        [own!.name, true],
        [team, false],
      ]),
    );
    const minted = await mintApiKey(core.deps, { user: identity.user, orgs: identity.orgs, sshKeyId: identity.sshKeyId, label: 'alias-key', origin });
    expect(minted.org_name).toBe(own!.name);

    // An account with no personal org (made by an operator, its first login before 0009 left no
    // trace): its oldest membership.
    await core.deps.db.updateTable('orgs').set({ personal_user_id: null }).where('id', '=', own!.org_id).execute();
    const without = await resolveSshIdentity(core.deps, aliasKey);
    if (without.kind !== 'account') throw new Error('expected an account');
    const oldest = without.orgs[0]!;
    expect(without.orgs.every((o) => !o.personal)).toBe(true);
    const fallback = await mintApiKey(core.deps, { user: without.user, orgs: without.orgs, sshKeyId: without.sshKeyId, label: 'alias-key-2', origin });
    expect(fallback.org_name).toBe(oldest.name);
    await core.deps.db.updateTable('orgs').set({ personal_user_id: baseUser.id }).where('id', '=', own!.org_id).execute();
  });

  it('migration 0009 marks the personal orgs of accounts made before it, from their org.provisioned audit rows', async () => {
    const users = [await core.verifiedUser(), await core.verifiedUser()];
    const team = `umbrella-${Date.now().toString(36)}`;
    expect((await runAdmin(core.deps, 'org', 'create', team, '--owner', users[0]!.email)).code).toBe(0);
    // As a database from before 0009 was: no column, then the migration. (Imported here: the other tests run without it.)
    const personalOrgs = await import('../../migrations/0009_personal_orgs.js');
    await personalOrgs.down(core.deps.db);
    await personalOrgs.up(core.deps.db);
    for (const { email } of users) {
      const user = (await findUserByEmail(core.deps.db, email))!;
      const orgs = await orgsOfUser(core.deps.db, user);
      expect(orgs.filter((o) => o.personal).map((o) => o.name), email).toEqual([email.split('@')[0]]);
    }
    const teamRow = await core.deps.db.selectFrom('orgs').select('personal_user_id').where('name', '=', team).executeTakeFirstOrThrow();
    expect(teamRow.personal_user_id).toBeNull();
  });
});
