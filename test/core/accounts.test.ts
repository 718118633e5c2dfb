import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOrg, setMember } from '../../src/core/index.js';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { startTestApp, type TestApp } from '../support/app.js';

let t: TestApp;
const admin = { channel: 'admin' as const, ip: null };
beforeAll(async () => {
  // Mints several keys per confirmation: no per-confirmation mint limit here (trust-window tests it).
  t = await startTestApp({ HTTP_TRUST_MINTS: '0' });
});
afterAll(async () => {
  await t?.close();
});

const aliasOf = (email: string, tag: string) => email.replace('@', `+${tag}@`);

async function orgsOf(email: string, publicKey: string) {
  const res = await t.post('/api/shell-auth/verify-key', { email, ssh_public_key: publicKey });
  expect(res.status).toBe(200);
  return res.body.orgs as Array<{ org_id: string; name: string; role: string }>;
}

describe('alias emails', () => {
  it('403 when the base account does not exist', async () => {
    const res = await t.post('/api/shell-auth', { email: aliasOf(uniqueEmail('nobase'), 'agent'), ssh_public_key: makeKey().publicKey });
    expect(res.status).toBe(403);
    expect(res.body).toEqual({ success: false, error: 'Base account does not exist' });
  });

  it('403 when the base account is not verified yet', async () => {
    const base = uniqueEmail('unverified');
    expect((await t.post('/api/shell-auth', { email: base, ssh_public_key: makeKey().publicKey })).status).toBe(200);
    const res = await t.post('/api/shell-auth', { email: aliasOf(base, 'agent'), ssh_public_key: makeKey().publicKey });
    expect(res.status).toBe(403);
    expect(res.body).toEqual({ success: false, error: 'Base account is not verified' });
  });

  it('a verified alias is its own user sharing the base account orgs, and mints keys in them', async () => {
    const base = uniqueEmail('base');
    const baseKey = makeKey();
    await t.verifyByEmail(base, baseKey.publicKey);
    const alias = aliasOf(base, 'ci');
    const aliasKey = makeKey();
    const started = await t.post('/api/shell-auth', { email: alias, ssh_public_key: aliasKey.publicKey });
    expect(started.status).toBe(200);
    expect(started.body.is_new_user).toBe(true);
    await t.confirmMailTo(alias);

    const baseOrgs = await orgsOf(base, baseKey.publicKey);
    const aliasOrgs = await orgsOf(alias, aliasKey.publicKey);
    expect(aliasOrgs).toEqual(baseOrgs);
    const minted = await t.post('/api/shell-auth/api-keys', { email: alias, ssh_public_key: aliasKey.publicKey, label: 'agent-key' });
    expect(minted.status).toBe(200);
    expect(minted.body.org_id).toBe(baseOrgs[0]!.org_id);
    // The base key is not the alias's key: 409 when the alias tries to claim it.
    const claim = await t.post('/api/shell-auth', { email: alias, ssh_public_key: baseKey.publicKey });
    expect(claim.status).toBe(409);
    // Emails compare case-insensitively, but +tags are meaningful.
    const upper = await t.post('/api/shell-auth', { email: alias.toUpperCase(), ssh_public_key: aliasKey.publicKey });
    expect(upper.body).toMatchObject({ user_id: started.body.user_id, already_verified: true });
  });
});

describe('organizations', () => {
  it('a new user gets a personal org named after the email, made unique on collision', async () => {
    const email = uniqueEmail('collide');
    const local = email.split('@')[0]!;
    // Someone already holds the org name.
    await createOrg(t.app.deps, local, uniqueEmail('squatter'), admin);
    const key = makeKey();
    await t.verifyByEmail(email, key.publicKey);
    const orgs = await orgsOf(email, key.publicKey);
    expect(orgs).toHaveLength(1);
    expect(orgs[0]!.name).toMatch(new RegExp(`^${local}-[0-9a-f]{4}$`));
    expect(orgs[0]!.role).toBe('admin');
    const sub = await t.app.deps.db.selectFrom('subscriptions').selectAll().where('org_id', '=', orgs[0]!.org_id).executeTakeFirstOrThrow();
    expect(sub).toMatchObject({ plan: 'free', status: 'active' });
  });

  it('default org is the personal one, even when an older membership exists; org_name picks another; roles are reported', async () => {
    const email = uniqueEmail('multi');
    const key = makeKey();
    // Membership in acme is older than the personal org created at first verification.
    const acme = `acme-${Date.now().toString(36)}`;
    await createOrg(t.app.deps, acme, uniqueEmail('acmeowner'), admin);
    await setMember(t.app.deps, acme, email, 'member', admin);
    await t.verifyByEmail(email, key.publicKey);
    const orgs = await orgsOf(email, key.publicKey);
    expect(orgs.map((o) => [o.name, o.role])).toEqual([
      [acme, 'member'],
      [email.split('@')[0], 'admin'],
    ]);
    // Issue 17: not the oldest membership (an operator's team org) but the account's own.
    const byDefault = await t.post('/api/shell-auth/api-keys', { email, ssh_public_key: key.publicKey, label: 'default-org' });
    expect(byDefault.body.org_name).toBe(email.split('@')[0]);
    const chosen = await t.post('/api/shell-auth/api-keys', {
      email,
      ssh_public_key: key.publicKey,
      label: 'chosen-org',
      org_name: acme,
    });
    expect(chosen.body.org_name).toBe(acme);
  });

  it('400 "User has no organizations" when the user belongs to none', async () => {
    const email = uniqueEmail('lonely');
    const key = makeKey();
    await t.verifyByEmail(email, key.publicKey);
    const user = await t.app.deps.db.selectFrom('users').select('id').where('email', '=', email).executeTakeFirstOrThrow();
    await t.app.deps.db.deleteFrom('memberships').where('user_id', '=', user.id).execute();
    const res = await t.post('/api/shell-auth/api-keys', { email, ssh_public_key: key.publicKey, label: 'no-orgs-here' });
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ success: false, error: 'User has no organizations' });
  });
});
