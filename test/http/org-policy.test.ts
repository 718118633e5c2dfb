import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sshCommandOf } from '../../src/core/index.js';
import { startTestApp, type HttpResult, type TestApp } from '../support/app.js';
import { runAdmin } from '../support/in-process.js';
import { makeKey, makeSecurityKey, SK_DUMMY, uniqueEmail, type TestKey } from '../support/keys.js';

// An org's key policy on the HTTP door (issue 20): the email trust-window mint, the signed (SSHSIG)
// mint and self-rotation, each judged by the org's settings; a refusal is 403 with the reason and
// who can change it in `detail`, spends nothing of the trust window, and every answer the Vers
// contract defines stays byte for byte what it was. Policies are set with the admin CLI.
// The app runs with the defaults: HTTP_TRUST_WINDOW=15m, HTTP_TRUST_MINTS=1 (one mint per window).

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

const DAY = 86_400_000;
const REFUSED = "Refused by the organization's key policy";
const ALL_PERMISSIONS = ['clusters:view', 'clusters:create'];

type Account = { email: string; key: TestKey; pair: { email: string; ssh_public_key: string }; org: string };

/** A fresh account whose key was linked by the HTTP email flow: its trust window is open (one mint). */
async function account(prefix: string, key: TestKey = makeKey()): Promise<Account> {
  const email = uniqueEmail(prefix);
  const pair = { email, ssh_public_key: key.publicKey };
  await t.verifyByEmail(email, key.publicKey);
  // Polling verify-key spends nothing; it names the account's (personal) org.
  const verified = await t.post('/api/shell-auth/verify-key', pair);
  expect(verified.status, verified.text).toBe(200);
  expect(verified.body.orgs).toHaveLength(1);
  return { email, key, pair, org: verified.body.orgs[0].name };
}

let orgCounter = 0;
/** A team org of its own, made with the admin CLI: `owner` owns it, `member` is a plain member. */
async function teamOrg(owner: Account, member: Account): Promise<string> {
  const team = `httppol-${Date.now().toString(36)}-${process.pid}-${++orgCounter}`;
  const created = await runAdmin(t.app.deps, 'org', 'create', team, '--owner', owner.email);
  expect(created.code, created.stderr).toBe(0);
  const added = await runAdmin(t.app.deps, 'org', 'add-member', team, member.email, '--role', 'member');
  expect(added.code, added.stderr).toBe(0);
  return team;
}

async function setPolicy(org: string, name: string, value: string): Promise<void> {
  const set = await runAdmin(t.app.deps, 'org', 'policy', org, name, value);
  expect(set.code, set.stderr).toBe(0);
}

/** The window mint: the Vers contract's request, nothing signed. */
const windowMint = (who: Account, label: string, extra: Record<string, unknown> = {}) =>
  t.post('/api/shell-auth/api-keys', { ...who.pair, label, ...extra });

/** What a user runs: `jq -j .message | ssh-keygen -Y sign -n "$NAMESPACE" -f KEY` (with sk-dummy for a security key). */
function sign(key: TestKey, message: string, namespace: string): string {
  const env = key.publicKey.startsWith('sk-') ? { ...process.env, SSH_SK_PROVIDER: SK_DUMMY! } : process.env;
  return execFileSync('ssh-keygen', ['-Y', 'sign', '-n', namespace, '-f', key.privateKeyPath], { input: message, env, stdio: ['pipe', 'pipe', 'ignore'] }).toString();
}

/** The signed mint: a fresh challenge, signed by the account's own key. */
async function signedMint(who: Account, label: string, extra: Record<string, unknown> = {}): Promise<HttpResult> {
  const issued = await t.post('/api/shell-auth/challenge', { ssh_public_key: who.key.publicKey });
  expect(issued.status, issued.text).toBe(200);
  const proof = { challenge: issued.body.challenge, ssh_signature: sign(who.key, issued.body.message, issued.body.namespace) };
  return t.post('/api/shell-auth/api-keys', { ...who.pair, label, ...proof, ...extra });
}

const bearer = (apiKey: string) => ({ authorization: `Bearer ${apiKey}` });
const whoami = (apiKey: string) => t.request('/api/whoami', { headers: bearer(apiKey) });
const rotate = (apiKey: string) => t.request('/api/api-keys/rotate', { method: 'POST', headers: bearer(apiKey) });

/** The contract's 200, byte for byte: these five fields in this order, and nothing else. */
function expectContractAnswer(res: HttpResult, org: string): void {
  expect(res.status, res.text).toBe(200);
  expect(res.body.org_name).toBe(org);
  expect(res.text).toBe(JSON.stringify({ success: true, api_key: res.body.api_key, api_key_id: res.body.api_key_id, org_id: res.body.org_id, org_name: org }));
}

/** The refusal's `detail` exactly: the setting's reason, then who can change it and how. */
/** The refusal's detail; `managers` empty: none named (a key's holder learns no one's email). */
function refusalDetail(org: string, setting: string, reason: string, managers: string[]): string {
  const named = managers.length ? ` (${managers.join(', ')})` : '';
  return `${reason}. Its owners and admins${named} can change that: ${sshCommandOf(t.app.deps)} policy set --org ${org} ${setting} VALUE`;
}

function expectRefusal(res: HttpResult, detail: string): void {
  expect(res.status, res.text).toBe(403);
  expect(res.text).toBe(JSON.stringify({ success: false, error: REFUSED, detail }));
}

async function keysLabelled(label: string): Promise<number> {
  const rows = await t.app.deps.db.selectFrom('api_keys').select('id').where('label', '=', label).execute();
  return rows.length;
}

describe('org policy on the HTTP door', () => {
  it('default policy: the window mint and the signed mint answer exactly as before, with every permission', async () => {
    const alice = await account('poldef');
    const byWindow = await windowMint(alice, 'default-window');
    expectContractAnswer(byWindow, alice.org);
    const bySignature = await signedMint(alice, 'default-signed');
    expectContractAnswer(bySignature, alice.org);
    for (const minted of [byWindow, bySignature]) {
      const seen = await whoami(minted.body.api_key);
      expect(seen.status).toBe(200);
      expect(seen.body).toMatchObject({ org_name: alice.org, permissions: ALL_PERMISSIONS, expires_at: null });
    }
  });

  it('http-minting signed: the window mint is 403 naming it and the owner, and spends nothing; a signed mint is 200', async () => {
    const alice = await account('polsigned');
    await setPolicy(alice.org, 'http-minting', 'signed');
    const refused = await windowMint(alice, 'signed-only-window');
    expectRefusal(
      refused,
      refusalDetail(
        alice.org,
        'http-minting',
        `org "${alice.org}" lets its keys be made over HTTP only by signed requests (http-minting signed): the email trust window does not count`,
        [alice.email],
      ),
    );
    expect(refused.body.detail).toContain('http-minting signed');
    expect(refused.body.detail).toContain(alice.email);
    expect(await keysLabelled('signed-only-window')).toBe(0);

    expectContractAnswer(await signedMint(alice, 'signed-only-signed'), alice.org);

    // Back to window, in the same trust window: its one mint (HTTP_TRUST_MINTS=1) was not spent by the refusal.
    await setPolicy(alice.org, 'http-minting', 'window');
    expectContractAnswer(await windowMint(alice, 'signed-only-later'), alice.org);
    // ...and that one did spend it: the window allows one mint, so the refusal really spent nothing.
    expect((await windowMint(alice, 'signed-only-spent')).status).toBe(401);
  });

  it('http-minting off: the window mint and the signed mint are both 403 naming it', async () => {
    const alice = await account('poloff');
    await setPolicy(alice.org, 'http-minting', 'off');
    const detail = refusalDetail(alice.org, 'http-minting', `org "${alice.org}" does not let its keys be made over HTTP (http-minting off): use the SSH door`, [alice.email]);
    expectRefusal(await windowMint(alice, 'off-window'), detail);
    expectRefusal(await signedMint(alice, 'off-signed'), detail);
    expect(detail).toContain('http-minting off');
    expect(await keysLabelled('off-window')).toBe(0);
    expect(await keysLabelled('off-signed')).toBe(0);
  });

  it('require-security-key true: the window mint and a mint signed with an ed25519 key are 403 naming it', async () => {
    const alice = await account('polsk');
    await setPolicy(alice.org, 'require-security-key', 'true');
    const reason = (why: string) =>
      `org "${alice.org}" lets its keys be made only with a security key such as sk-ssh-ed25519 (require-security-key true): ${why}`;
    expectRefusal(
      await windowMint(alice, 'sk-required-window'),
      refusalDetail(alice.org, 'require-security-key', reason('the email trust window proves no key: sign the request with a security key'), [alice.email]),
    );
    const signed = await signedMint(alice, 'sk-required-ed25519');
    expectRefusal(signed, refusalDetail(alice.org, 'require-security-key', reason('the request was signed with an ssh-ed25519 key'), [alice.email]));
    expect(signed.body.detail).toContain('require-security-key true');
    expect(await keysLabelled('sk-required-window')).toBe(0);
    expect(await keysLabelled('sk-required-ed25519')).toBe(0);
  });

  it.runIf(SK_DUMMY)('require-security-key true: a mint signed with an ed25519-sk key (ssh-keygen -Y sign, sk-dummy.so) is 200; its window mint is not', async () => {
    const fido = await account('polfido', makeSecurityKey('ed25519-sk'));
    expect(fido.key.publicKey).toMatch(/^sk-ssh-ed25519@openssh\.com /);
    await setPolicy(fido.org, 'require-security-key', 'true');
    const refused = await windowMint(fido, 'fido-window');
    expect(refused.status, refused.text).toBe(403);
    expect(refused.body.detail).toContain('the email trust window proves no key');
    const minted = await signedMint(fido, 'fido-signed');
    expectContractAnswer(minted, fido.org);
    const seen = await whoami(minted.body.api_key);
    expect(seen.status).toBe(200);
    expect(seen.body).toMatchObject({ label: 'fido-signed', org_name: fido.org });
  });

  it('members-mint false: a member\'s window mint into the team org is 403 naming it and the owner; the owner\'s works', async () => {
    const owner = await account('polowner');
    const member = await account('polmember');
    const team = await teamOrg(owner, member);
    await setPolicy(team, 'members-mint', 'false');
    const refused = await windowMint(member, 'member-into-team', { org_name: team });
    expectRefusal(
      refused,
      refusalDetail(team, 'members-mint', `org "${team}" lets only its owners and admins make keys, by create or rotate (members-mint false)`, [owner.email]),
    );
    expect(await keysLabelled('member-into-team')).toBe(0);
    // The refusal spent nothing: the member's one mint still goes into their own org.
    expectContractAnswer(await windowMint(member, 'member-own-org'), member.org);

    const byOwner = await windowMint(owner, 'owner-into-team', { org_name: team });
    expectContractAnswer(byOwner, team);
    expect((await whoami(byOwner.body.api_key)).body).toMatchObject({ org_name: team, permissions: ALL_PERMISSIONS });
  });

  it('permissions clusters:view: a mint asking for clusters:create is 403 naming it; one asking nothing gets only clusters:view', async () => {
    const alice = await account('polperm');
    await setPolicy(alice.org, 'permissions', 'clusters:view');
    const refused = await windowMint(alice, 'asks-for-create', { permissions: ['clusters:create'] });
    expectRefusal(
      refused,
      refusalDetail(alice.org, 'permissions', `org "${alice.org}" lets its keys carry only clusters:view (permissions clusters:view): clusters:create was asked for`, [alice.email]),
    );
    // More than allowed, alongside what is allowed: refused too, naming only what is beyond.
    const both = await signedMint(alice, 'asks-for-both', { permissions: ['clusters:view', 'clusters:create'] });
    expect(both.status, both.text).toBe(403);
    expect(both.body.detail).toContain('(permissions clusters:view): clusters:create was asked for');
    expect(await keysLabelled('asks-for-create')).toBe(0);
    expect(await keysLabelled('asks-for-both')).toBe(0);

    // Nothing asked: the answer is the contract's (no `permissions` field), and the key carries what the org allows.
    const minted = await windowMint(alice, 'asks-nothing');
    expectContractAnswer(minted, alice.org);
    const seen = await whoami(minted.body.api_key);
    expect(seen.status).toBe(200);
    expect(seen.body.permissions).toEqual(['clusters:view']);

    // Asking for exactly what is allowed: the answer says it, as it does for any client that asks.
    const asked = await signedMint(alice, 'asks-for-view', { permissions: ['clusters:view'] });
    expect(asked.status, asked.text).toBe(200);
    expect(asked.body.permissions).toEqual(['clusters:view']);
  });

  it('max-ttl 1d: a key minted over HTTP expires a day after it was made', async () => {
    const alice = await account('polttl');
    await setPolicy(alice.org, 'max-ttl', '1d');
    const before = Date.now();
    const minted = await windowMint(alice, 'one-day-window');
    const after = Date.now();
    expectContractAnswer(minted, alice.org);
    const signed = await signedMint(alice, 'one-day-signed');
    const afterSigned = Date.now();
    expectContractAnswer(signed, alice.org);

    const expiresAt = async (apiKey: string) => {
      const seen = await whoami(apiKey);
      expect(seen.status, seen.text).toBe(200);
      return new Date(seen.body.expires_at).getTime();
    };
    const windowExpiry = await expiresAt(minted.body.api_key);
    expect(windowExpiry).toBeGreaterThanOrEqual(before + DAY - 1_000);
    expect(windowExpiry).toBeLessThanOrEqual(after + DAY + 1_000);
    const signedExpiry = await expiresAt(signed.body.api_key);
    expect(signedExpiry).toBeGreaterThanOrEqual(after + DAY - 1_000);
    expect(signedExpiry).toBeLessThanOrEqual(afterSigned + DAY + 1_000);
    // The key stops working then: the clock seam, a day and a bit later.
    t.app.deps.now = () => new Date(Date.now() + DAY + 5_000);
    try {
      expect((await whoami(minted.body.api_key)).status).toBe(401);
    } finally {
      t.app.deps.now = undefined;
    }
  });

  it('self-rotation is 403 under http-minting signed and under require-security-key true, the old key untouched; 200 under the defaults', async () => {
    const alice = await account('polrot');
    const minted = await windowMint(alice, 'self-rotating-key');
    expectContractAnswer(minted, alice.org);
    const old = minted.body as { api_key: string; api_key_id: string };

    const untouched = async () => {
      const seen = await whoami(old.api_key);
      expect(seen.status, seen.text).toBe(200);
      expect(seen.body).toMatchObject({ api_key_id: old.api_key_id, expires_at: null });
      const row = await t.app.deps.db.selectFrom('api_keys').select(['replaced_by_id', 'expires_at', 'revoked_at']).where('id', '=', old.api_key_id).executeTakeFirstOrThrow();
      expect(row).toEqual({ replaced_by_id: null, expires_at: null, revoked_at: null });
      expect(await keysLabelled('self-rotating-key')).toBe(1);
    };

    await setPolicy(alice.org, 'http-minting', 'signed');
    expectRefusal(
      await rotate(old.api_key),
      refusalDetail(
        alice.org,
        'http-minting',
        `org "${alice.org}" lets its keys be made over HTTP only by signed requests (http-minting signed): a key cannot renew itself in this org`,
        // Whoever holds the key is told the rule, not the people behind it.
        [],
      ),
    );
    await untouched();

    await setPolicy(alice.org, 'http-minting', 'window');
    await setPolicy(alice.org, 'require-security-key', 'true');
    expectRefusal(
      await rotate(old.api_key),
      refusalDetail(
        alice.org,
        'require-security-key',
        `org "${alice.org}" lets its keys be made only with a security key such as sk-ssh-ed25519 (require-security-key true): a key cannot renew itself in this org`,
        // Whoever holds the key is told the rule, not the people behind it.
        [],
      ),
    );
    await untouched();

    // Every setting back at its default: the key renews itself.
    await setPolicy(alice.org, 'require-security-key', 'false');
    const rotated = await rotate(old.api_key);
    expect(rotated.status, rotated.text).toBe(200);
    expect(rotated.body).toMatchObject({ success: true, replaces: old.api_key_id, org_name: alice.org, permissions: ALL_PERMISSIONS });
    expect((await whoami(rotated.body.api_key)).status).toBe(200);
  });

  it('every other error keeps the contract\'s exact body while a refusing policy is set', async () => {
    const alice = await account('polerr');
    const other = await account('polother');
    await setPolicy(alice.org, 'http-minting', 'off');
    await setPolicy(other.org, 'members-mint', 'false');

    // An org that does not exist, and another account's org: the contract's 404, not the policy's 403.
    for (const org_name of [`no-such-org-${Date.now().toString(36)}`, other.org]) {
      const res = await windowMint(alice, 'unknown-org', { org_name });
      expect(res.status, res.text).toBe(404);
      expect(res.text).toBe(JSON.stringify({ success: false, error: 'Organization not found' }));
    }
    // An unknown permission: 400 as ever (judged before any org).
    const unknown = await windowMint(alice, 'unknown-permission', { permissions: ['clusters:delete'] });
    expect(unknown.status).toBe(400);
    expect(unknown.text).toBe(
      JSON.stringify({ success: false, error: 'Unknown permission', detail: '"clusters:delete" is not a permission on this server; its permissions: clusters:view, clusters:create' }),
    );
    // A pair with no window: the contract's 401, the same as without a policy.
    const stranger = await t.post('/api/shell-auth/api-keys', { email: uniqueEmail('polnobody'), ssh_public_key: alice.key.publicKey, label: 'no-window' });
    expect(stranger.status).toBe(401);
    expect(stranger.body).toEqual({ success: false, error: 'Invalid or unverified SSH key', detail: expect.stringMatching(/^No HTTP verification in force/) });
    // A suspended org: billing is judged first, the contract's 402.
    const suspended = await runAdmin(t.app.deps, 'billing', 'set', alice.org, 'suspended');
    expect(suspended.code, suspended.stderr).toBe(0);
    const unpaid = await windowMint(alice, 'unpaid-org');
    expect(unpaid.status).toBe(402);
    expect(unpaid.text).toBe(JSON.stringify({ success: false, error: 'Billing could not be verified' }));
    // A bad request body: 400 as ever.
    const short = await windowMint(alice, 'abc');
    expect(short.status).toBe(400);
    expect(short.body).toMatchObject({ success: false, error: 'Invalid request' });
    // Self-rotation with a key that is not one: whoami's 401, byte for byte.
    const notAKey = await rotate('not-a-key');
    const reference = await whoami('not-a-key');
    expect([notAKey.status, notAKey.text]).toEqual([401, reference.text]);

    // None of those spent the window: with billing back and the policy back at window, the one mint works.
    expect((await runAdmin(t.app.deps, 'billing', 'set', alice.org, 'active')).code).toBe(0);
    await setPolicy(alice.org, 'http-minting', 'window');
    expectContractAnswer(await windowMint(alice, 'after-the-errors'), alice.org);
  });
});
