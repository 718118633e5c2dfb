import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sshCommandOf } from '../../src/core/index.js';
import { confirmForm, startTestApp, tokenOf, type TestApp } from '../support/app.js';
import { sshLinkedUser } from '../support/accounts.js';
import { runAdmin } from '../support/in-process.js';
import { makeSecurityKey, SK_DUMMY, type TestKey } from '../support/keys.js';
import { openssh } from '../support/ssh.js';

// An org's key policy over the SSH door (issue 20): `policy`, `policy set`, and what each setting
// does to `create` and `rotate`, through the real OpenSSH client; keys checked on the platform's
// side with real HTTP (GET /api/whoami). Every test has a team org of its own, made with the
// admin CLI (`org create`, `org add-member`), an owner and a plain member.

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

const DAY = 86_400_000;
const API_KEY = /^[0-9a-f-]{36}[0-9a-f]{64}\n$/;
const DEFAULTS = { max_ttl_seconds: null, permissions: null, require_security_key: false, http_minting: 'window', members_mint: true };

type Account = { email: string; key: TestKey; org: string; ssh: (...args: string[]) => ReturnType<typeof openssh> };

const sshAs = (key: TestKey) => (...args: string[]) => openssh(t.app.sshPort, key.privateKeyPath, args);
const whoami = (apiKey: string) => t.request('/api/whoami', { headers: { authorization: `Bearer ${apiKey}` } });

let orgCounter = 0;
/** A team org of its own: an owner and a plain member, both with keys the SSH door knows. */
async function teamOrg(name: string): Promise<{ team: string; owner: Account; member: Account }> {
  const owner = await sshLinkedUser(t, `${name}own`);
  const member = await sshLinkedUser(t, `${name}mem`);
  const team = `${name}-${Date.now().toString(36)}-${process.pid}-${++orgCounter}`;
  const created = await runAdmin(t.app.deps, 'org', 'create', team, '--owner', owner.email);
  expect(created.code, created.stderr).toBe(0);
  const added = await runAdmin(t.app.deps, 'org', 'add-member', team, member.email, '--role', 'member');
  expect(added.code, added.stderr).toBe(0);
  return { team, owner: { ...owner, ssh: sshAs(owner.key) }, member: { ...member, ssh: sshAs(member.key) } };
}

/** The org's policy changes recorded in the database (the audit rows `policy set` writes). */
async function policyEvents(team: string) {
  const org = await t.app.deps.db.selectFrom('orgs').select('id').where('name', '=', team).executeTakeFirstOrThrow();
  return t.app.deps.db.selectFrom('audit_events').select(['action', 'details', 'actor_user_id']).where('org_id', '=', org.id).where('action', '=', 'org.policy_changed').execute();
}

async function policyOf(account: Account, team: string) {
  const shown = await account.ssh('policy', '--org', team, '--json');
  expect(shown.code, shown.stderr).toBe(0);
  return JSON.parse(shown.stdout);
}

async function setPolicy(owner: Account, team: string, name: string, value: string) {
  const set = await owner.ssh('policy', 'set', '--org', team, name, value);
  expect(set.code, set.stderr).toBe(0);
  return set;
}

/** The keys of `team` (every state), as `list --json` shows them to `account`. */
async function keysIn(account: Account, team: string): Promise<Array<Record<string, unknown>>> {
  const listed = await account.ssh('list', '--org', team, '--json');
  expect(listed.code, listed.stderr).toBe(0);
  return JSON.parse(listed.stdout);
}

describe('policy and policy set over OpenSSH', () => {
  it('any member reads the policy: five settings at their defaults, with the owners named; --json', async () => {
    const { team, owner, member } = await teamOrg('read');
    const shown = await member.ssh('policy', '--org', team);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stderr).toBe('');
    const lines = shown.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe(`Key policy of org ${team} (owners and admins: ${owner.email})`);
    expect(lines[1]).toBe('');
    expect(lines[2]).toMatch(/^SETTING +VALUE +MEANING$/);
    const rows = lines.slice(3).map((line) => line.split(/ {2,}/));
    expect(rows.map((row) => row.slice(0, 2))).toEqual([
      ['max-ttl', 'none'],
      ['permissions', 'all'],
      ['require-security-key', 'false'],
      ['http-minting', 'window'],
      ['members-mint', 'true'],
    ]);
    expect(rows[0]![2]).toBe('keys may live forever');
    expect(rows[1]![2]).toBe('keys may carry any permission (clusters:view, clusters:create)');

    const json = await member.ssh('policy', '--org', team, '--json');
    expect(json.code, json.stderr).toBe(0);
    const body = JSON.parse(json.stdout);
    expect(Object.keys(body).sort()).toEqual(['http_minting', 'managers', 'max_ttl_seconds', 'members_mint', 'org_id', 'org_name', 'permissions', 'require_security_key', 'role']);
    expect(body).toMatchObject({ ...DEFAULTS, org_name: team, managers: [owner.email], role: 'member' });
    expect(body.org_id).toMatch(/^[0-9a-f-]{36}$/);
    // The owner reads the same, as owner.
    expect(await policyOf(owner, team)).toEqual({ ...body, role: 'owner' });
  });

  it('a member\'s policy set is refused (exit 1), naming who can; nothing changes, nothing is audited', async () => {
    const { team, owner, member } = await teamOrg('deny');
    const refused = await member.ssh('policy', 'set', '--org', team, 'max-ttl', '30d');
    expect(refused).toEqual({
      code: 1,
      stdout: '',
      stderr: `error: only owners and admins can change an org's key policy: you are a member of "${team}"; its owners and admins: ${owner.email}\n`,
    });
    expect(await policyOf(member, team)).toMatchObject(DEFAULTS);
    expect(await policyEvents(team)).toEqual([]);
  });

  it('a member typing a bad value is told they may not change it, not what the values may be', async () => {
    const { team, member } = await teamOrg('denybad');
    const refused = await member.ssh('policy', 'set', '--org', team, 'max-ttl', 'forever');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^error: only owners and admins can change an org's key policy: you are a member of /);
  });

  it('tightening says how many live keys made before would not be allowed now, and they keep working', async () => {
    const { team, owner } = await teamOrg('tight');
    const forever = await owner.ssh('create', '--org', team, '--label', 'no-expiry-key', '--json');
    expect(forever.code, forever.stderr).toBe(0);
    const short = await owner.ssh('create', '--org', team, '--label', 'short-lived', '--expires-in', '1d', '--perm', 'clusters:view');
    expect(short.code, short.stderr).toBe(0);

    const ttl = await setPolicy(owner, team, 'max-ttl', '7d');
    expect(ttl.stderr).toBe(`1 live key of org ${team}, made before, would not be allowed now; it keeps working until rotated, revoked or expired ("list --org ${team}").\n`);
    const perms = await owner.ssh('policy', 'set', '--org', team, 'permissions', 'clusters:view', '--json');
    expect(JSON.parse(perms.stdout)).toMatchObject({ setting: 'permissions', changed: true, nonconforming_keys: 1 });
    const members = await owner.ssh('policy', 'set', '--org', team, 'members-mint', 'false', '--json');
    expect(JSON.parse(members.stdout)).toMatchObject({ setting: 'members-mint', nonconforming_keys: null });
    expect(members.stderr).toBe('');

    expect((await whoami(JSON.parse(forever.stdout).api_key)).status).toBe(200);
  });

  it('max-ttl 30d: create without --expires-in gets 30d; 60d is refused naming max-ttl and who can change it; 7d works', async () => {
    const { team, owner } = await teamOrg('ttl');
    const set = await setPolicy(owner, team, 'max-ttl', '30d');
    expect(set.stdout).toBe(`max-ttl of org ${team}: none -> 30d\n`);

    const before = Date.now();
    const made = await owner.ssh('create', '--org', team, '--label', 'thirty-days', '--json');
    expect(made.code, made.stderr).toBe(0);
    const expiresAt = new Date(JSON.parse(made.stdout).expires_at).getTime();
    expect(expiresAt).toBeGreaterThanOrEqual(before + 30 * DAY);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 30 * DAY);

    const tooLong = await owner.ssh('create', '--org', team, '--label', 'sixty-days', '--expires-in', '60d');
    expect(tooLong.code).toBe(1);
    expect(tooLong.stdout).toBe('');
    expect(tooLong.stderr).toBe(
      `error: org "${team}" lets its keys live at most 30d (max-ttl 30d): 60d was asked for. ` +
        `Its owners and admins (${owner.email}) can change that: ${sshCommandOf(t.app.deps)} policy set --org ${team} max-ttl VALUE\n`,
    );
    expect((await keysIn(owner, team)).map((k) => k.label)).toEqual(['thirty-days']);

    const beforeWeek = Date.now();
    const week = await owner.ssh('create', '--org', team, '--label', 'seven-days', '--expires-in', '7d', '--json');
    expect(week.code, week.stderr).toBe(0);
    const weekEnds = new Date(JSON.parse(week.stdout).expires_at).getTime();
    expect(weekEnds).toBeGreaterThanOrEqual(beforeWeek + 7 * DAY);
    expect(weekEnds).toBeLessThanOrEqual(Date.now() + 7 * DAY);
    expect((await keysIn(owner, team)).map((k) => k.label).sort()).toEqual(['seven-days', 'thirty-days']);
  });

  it('permissions clusters:view: a plain create gets only that (GET /api/whoami); --perm clusters:create is refused naming permissions', async () => {
    const { team, owner } = await teamOrg('perm');
    await setPolicy(owner, team, 'permissions', 'clusters:view');
    const made = await owner.ssh('create', '--org', team, '--label', 'view-by-policy', '--json');
    expect(made.code, made.stderr).toBe(0);
    const minted = JSON.parse(made.stdout);
    expect(minted.permissions).toEqual(['clusters:view']);
    const seen = await whoami(minted.api_key);
    expect(seen.status).toBe(200);
    expect(seen.body.permissions).toEqual(['clusters:view']);

    const refused = await owner.ssh('create', '--org', team, '--label', 'wants-create', '--perm', 'clusters:create');
    expect(refused.code).toBe(1);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toBe(
      `error: org "${team}" lets its keys carry only clusters:view (permissions clusters:view): clusters:create was asked for. ` +
        `Its owners and admins (${owner.email}) can change that: ${sshCommandOf(t.app.deps)} policy set --org ${team} permissions VALUE\n`,
    );
    expect((await keysIn(owner, team)).map((k) => k.label)).toEqual(['view-by-policy']);
  });

  it('members-mint false: a member\'s create and rotate are refused, naming the setting and its owners and admins; owner and admin mint, and rotate the member\'s key', async () => {
    const { team, owner, member } = await teamOrg('mint');
    const admin = await sshLinkedUser(t, 'mintadm');
    expect((await runAdmin(t.app.deps, 'org', 'add-member', team, admin.email, '--role', 'admin')).code).toBe(0);
    const adminSsh = sshAs(admin.key);
    const earlier = await member.ssh('create', '--org', team, '--label', 'before-the-policy', '--json');
    expect(earlier.code, earlier.stderr).toBe(0);
    const earlierKey = JSON.parse(earlier.stdout);
    await setPolicy(owner, team, 'members-mint', 'false');

    // Owners first, then admins.
    const refusal = `error: org "${team}" lets only its owners and admins make keys, by create or rotate (members-mint false). Its owners and admins (${owner.email}, ${admin.email}) can change that: ${sshCommandOf(t.app.deps)} policy set --org ${team} members-mint VALUE\n`;
    expect(await member.ssh('create', '--org', team, '--label', 'after-the-policy')).toEqual({ code: 1, stdout: '', stderr: refusal });
    expect(await member.ssh('rotate', earlierKey.api_key_id)).toEqual({ code: 1, stdout: '', stderr: refusal });
    expect((await whoami(earlierKey.api_key)).status).toBe(200); // the refused rotation left it as it was
    // Their personal org is theirs: the team's policy does not reach it.
    expect((await member.ssh('create', '--label', 'personal-key')).stdout).toMatch(API_KEY);

    for (const [who, ssh] of [['owner', owner.ssh], ['admin', adminSsh]] as const) {
      const made = await ssh('create', '--org', team, '--label', `${who}s-key`);
      expect(made.code, made.stderr).toBe(0);
      expect(made.stdout).toMatch(API_KEY);
    }

    // The owner rotates the member's key, then the admin its successor: judged by the rotator's
    // role. The new keys are still the member's.
    const byOwner = await owner.ssh('rotate', earlierKey.api_key_id, '--json');
    expect(byOwner.code, byOwner.stderr).toBe(0);
    const successor = JSON.parse(byOwner.stdout);
    expect(successor).toMatchObject({ replaces: earlierKey.api_key_id, org_name: team });
    expect((await whoami(successor.api_key)).status).toBe(200);
    const byAdmin = await adminSsh('rotate', successor.api_key_id, '--json');
    expect(byAdmin.code, byAdmin.stderr).toBe(0);
    const third = JSON.parse(byAdmin.stdout);
    expect(third).toMatchObject({ replaces: successor.api_key_id, org_name: team });
    expect((await whoami(third.api_key)).status).toBe(200);

    const keys = await keysIn(owner, team);
    expect(keys.find((k) => k.id === third.api_key_id)).toMatchObject({ label: 'before-the-policy', created_by: member.email, state: 'active' });
    expect(keys.filter((k) => k.state === 'active').map((k) => [k.label, k.created_by]).sort()).toEqual(
      [
        ['admins-key', admin.email],
        ['before-the-policy', member.email], // the successor, in its overlap
        ['before-the-policy', member.email], // the admin's rotation of it
        ['owners-key', owner.email],
      ].sort(),
    );
    expect(keys.filter((k) => k.label === 'after-the-policy')).toEqual([]);
  });

  it('bad values are usage errors (exit 2) saying what would do; nothing changes', async () => {
    const { team, owner } = await teamOrg('bad');
    const usage = (stderr: string) => stderr.split('\n').slice(1).join('\n');
    const cases: Array<[string[], string]> = [
      [['max-ttl', '2m'], 'error: max-ttl: at least 5m (the shortest lifetime a key may have)\n'],
      [['max-ttl', 'soon'], 'error: max-ttl: a duration such as 30d, 12h or 2w, or none\n'],
      [['http-minting', 'maybe'], 'error: http-minting: window, signed or off, not "maybe"\n'],
      [['members-mint', 'yes'], 'error: members-mint: true or false, not "yes"\n'],
      [['permissions', 'bogus:perm'], 'error: permissions: "bogus:perm" is not a permission on this server; its permissions: clusters:view, clusters:create\n'],
    ];
    for (const [words, message] of cases) {
      const bad = await owner.ssh('policy', 'set', '--org', team, ...words);
      expect(bad.code, words.join(' ')).toBe(2);
      expect(bad.stdout).toBe('');
      expect(bad.stderr.split('\n')[0] + '\n', words.join(' ')).toBe(message);
      expect(usage(bad.stderr), words.join(' ')).toMatch(/^usage: policy set \[--org ORG\] NAME VALUE \[--json\]\n/);
    }
    const unknown = await owner.ssh('policy', 'set', '--org', team, 'nope', '1');
    expect(unknown).toEqual({
      code: 2,
      stdout: '',
      stderr: 'error: NAME must be max-ttl, permissions, require-security-key, http-minting or members-mint, not "nope"\nusage: policy set [--org ORG] NAME VALUE [--json]\n',
    });
    expect(await policyOf(owner, team)).toMatchObject(DEFAULTS);
    expect(await policyEvents(team)).toEqual([]);
  });

  it('setting the value it already has says nothing changed, and writes one audit event only', async () => {
    const { team, owner } = await teamOrg('twice');
    expect((await setPolicy(owner, team, 'max-ttl', '30d')).stdout).toBe(`max-ttl of org ${team}: none -> 30d\n`);
    const again = await setPolicy(owner, team, 'max-ttl', '30d');
    expect(again).toEqual({ code: 0, stdout: `max-ttl of org ${team} is already 30d: nothing changed\n`, stderr: '' });
    const json = await owner.ssh('policy', 'set', '--org', team, 'max-ttl', '30d', '--json');
    expect(JSON.parse(json.stdout)).toMatchObject({ setting: 'max-ttl', old: '30d', new: '30d', changed: false, max_ttl_seconds: 30 * 86_400 });
    const events = await policyEvents(team);
    expect(events).toHaveLength(1);
    expect(events[0]!.details).toMatchObject({ setting: 'max-ttl', old: 'none', new: '30d' });
  });
});

describe('the policy in audit and orgs', () => {
  it('audit shows org.policy_changed with the actor and old -> new, to the owner and to a member', async () => {
    const { team, owner, member } = await teamOrg('aud');
    await setPolicy(owner, team, 'max-ttl', '30d');
    await setPolicy(owner, team, 'permissions', 'clusters:view');

    // The owner's own audit (every org they manage) and a member's, of this org.
    for (const [who, args] of [[owner, ['audit']], [member, ['audit', '--org', team]]] as const) {
      const table = await who.ssh(...args);
      expect(table.code, table.stderr).toBe(0);
      const lines = table.stdout.trimEnd().split('\n');
      expect(lines[0]).toMatch(/^TIME +ACTOR +ACTION +KEY +LABEL +DOOR +ADDRESS +PROOF +REASON$/);
      for (const line of lines) expect(line.length, line).toBeLessThanOrEqual(100);
      // Newest first. Within 100 columns long emails and reasons are cut: --wide has them whole.
      const changes = lines.filter((line) => line.includes(' org.policy_changed '));
      expect(changes, who.email).toHaveLength(2);
      expect(changes[0]).toMatch(/ org\.policy_changed +- +- +ssh +127\.0\.0\.1 +- +permissions c/);
      expect(changes[1]).toMatch(/ org\.policy_changed +- +- +ssh +127\.0\.0\.1 +- +max-ttl 30d/);

      const wide = await who.ssh(...args, '--wide');
      expect(wide.code, wide.stderr).toBe(0);
      const wideChanges = wide.stdout.split('\n').filter((line) => line.includes(' org.policy_changed ')).map((line) => line.split(/ {2,}/).slice(1));
      expect(wideChanges, who.email).toEqual([
        [owner.email, 'org.policy_changed', '-', '-', team, 'ssh', '127.0.0.1', '-', 'permissions clusters:view (was all)'],
        [owner.email, 'org.policy_changed', '-', '-', team, 'ssh', '127.0.0.1', '-', 'max-ttl 30d (was none)'],
      ]);
    }

    for (const who of [owner, member]) {
      const json = await who.ssh('audit', '--org', team, '--json');
      expect(json.code, json.stderr).toBe(0);
      const events = (JSON.parse(json.stdout) as Array<Record<string, unknown>>).filter((e) => e.action === 'org.policy_changed');
      expect(events.map((e) => [e.actor, e.actor_email, e.reason, e.door, e.ip, e.org_name])).toEqual([
        [owner.email, owner.email, 'permissions clusters:view (was all)', 'ssh', '127.0.0.1', team],
        [owner.email, owner.email, 'max-ttl 30d (was none)', 'ssh', '127.0.0.1', team],
      ]);
    }
  });

  it('orgs shows a POLICY column: the summary for a changed org, default for an untouched one', async () => {
    const { team, owner } = await teamOrg('sum');
    await setPolicy(owner, team, 'max-ttl', '30d');
    await setPolicy(owner, team, 'permissions', 'clusters:view');
    const shown = await owner.ssh('orgs');
    expect(shown.code, shown.stderr).toBe(0);
    const lines = shown.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME +ROLE +ID +POLICY$/);
    const row = (name: string) => lines.find((line) => line.startsWith(`${name} `))?.split(/ {2,}/);
    expect(row(team)).toEqual([team, 'owner', expect.stringMatching(/^[0-9a-f-]{36}$/), 'max 30d · only clusters:view']);
    expect(row(owner.org)).toEqual([owner.org, 'admin', expect.stringMatching(/^[0-9a-f-]{36}$/), 'default']);
    const json = JSON.parse((await owner.ssh('orgs', '--json')).stdout) as Array<{ name: string; policy: unknown }>;
    expect(json.find((o) => o.name === team)!.policy).toEqual({ ...DEFAULTS, max_ttl_seconds: 30 * 86_400, permissions: ['clusters:view'] });
    expect(json.find((o) => o.name === owner.org)!.policy).toEqual(DEFAULTS);
  });
});

if (!SK_DUMMY) console.warn('org-policy.test.ts: SKIPPING the security-key case: no sk-dummy.so (.ci/run installs it: apt-get install openssh-tests)');

describe.runIf(SK_DUMMY)(`require-security-key with OpenSSH and sk-dummy.so${SK_DUMMY ? '' : ' [SKIPPED: sk-dummy.so not installed]'}`, () => {
  const sk = (key: TestKey, ...args: string[]) => openssh(t.app.sshPort, key.privateKeyPath, args, { extra: ['-o', `SecurityKeyProvider=${SK_DUMMY}`] });

  it('an ed25519 key\'s create is refused naming require-security-key; an ed25519-sk key of the same account mints', async () => {
    const { team, owner } = await teamOrg('fido');
    await setPolicy(owner, team, 'require-security-key', 'true');

    const refused = await owner.ssh('create', '--org', team, '--label', 'plain-key');
    expect(refused.code).toBe(1);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toBe(
      `error: org "${team}" lets its keys be made only with a security key such as sk-ssh-ed25519 (require-security-key true): you signed in with an ssh-ed25519 key. ` +
        `Its owners and admins (${owner.email}) can change that: ${sshCommandOf(t.app.deps)} policy set --org ${team} require-security-key VALUE\n`,
    );

    // The security key joins the same account as security-keys.test.ts links one: login, then the emailed link.
    const fido = makeSecurityKey('ed25519-sk');
    const login = sk(fido, 'login', owner.email);
    const mail = await t.smtp.waitForMail(owner.email);
    expect((await t.request('/shell-auth/verify', confirmForm(tokenOf(mail.link!)))).status).toBe(200);
    expect((await login).code).toBe(0);
    expect(JSON.parse((await sk(fido, 'whoami', '--json')).stdout)).toMatchObject({ email: owner.email, security_key: true });

    const made = await sk(fido, 'create', '--org', team, '--label', 'fido-key', '--json');
    expect(made.code, made.stderr).toBe(0);
    const minted = JSON.parse(made.stdout);
    expect(minted.org_name).toBe(team);
    expect((await whoami(minted.api_key)).status).toBe(200);
    expect((await keysIn(owner, team)).map((k) => [k.label, k.security_key])).toEqual([['fido-key', true]]);
  });
});
