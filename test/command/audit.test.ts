import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/command/framework.js';
import { recordAudit } from '../../src/core/audit.js';
import { resolveSshIdentity, rotateApiKey, type AccountIdentity, type Identity, type RequestOrigin } from '../../src/core/index.js';
import { COMPLETIONS, sessionCompletions } from '../../src/ssh/commands/index.js';
import { startTestCore, type TestCore } from '../support/core.js';
import { runAdmin, runSshLine, type Captured } from '../support/in-process.js';
import { REFUSAL } from '../support/unsafe-chars.js';

// `audit` (SSH) and the admin CLI's `audit` in-process: who sees which events, the table and its
// JSON, the window and the limit. The OpenSSH client's view is test/ssh/audit.test.ts.

let core: TestCore;
beforeAll(async () => {
  core = await startTestCore();
});
afterAll(async () => {
  await core?.close();
});

type Person = { email: string; identity: AccountIdentity };
type Event = {
  id: string;
  created_at: string;
  action: string;
  actor: string;
  actor_email: string | null;
  org_id: string | null;
  org_name: string | null;
  key_id: string | null;
  label: string | null;
  door: string;
  ip: string | null;
  proof: string | null;
  reason: string | null;
  details: Record<string, unknown>;
};

async function person(): Promise<Person> {
  const user = await core.verifiedUser();
  return { email: user.email, identity: (await resolveSshIdentity(core.deps, user.publicKey)) as AccountIdentity };
}
/** The identity afresh: its orgs as they are now (a session reads it before each command). */
async function again(p: Person): Promise<Person> {
  return { ...p, identity: (await resolveSshIdentity(core.deps, p.identity.key)) as AccountIdentity };
}

// The command reads the core's clock; the database stamps events with its own: keep them together.
const ssh = (p: Person | Identity, line: string): Promise<Captured> => {
  core.clock.now = new Date();
  return runSshLine(core.deps, 'identity' in p ? p.identity : p, line);
};
const admin = (...words: string[]): Promise<Captured> => {
  core.clock.now = new Date();
  return runAdmin(core.deps, ...words);
};
function events(result: Captured): Event[] {
  expect(result.code, result.stderr).toBe(EXIT.OK);
  return JSON.parse(result.stdout) as Event[];
}
async function mint(p: Person, label: string, org: string): Promise<string> {
  const made = await ssh(p, `create --label ${label} --org ${org} --json`);
  expect(made.code, made.stderr).toBe(EXIT.OK);
  return JSON.parse(made.stdout).api_key_id as string;
}

describe('audit: an org with an owner and a member', () => {
  let owner: Person;
  let member: Person;
  let outsider: Person;
  const team = `audit-team-${Date.now().toString(36)}`;
  let ownerKey: string;
  let memberKey: string;
  let memberOther: string;
  let rotatedTo: string;
  let outsiderKey: string;

  beforeAll(async () => {
    owner = await person();
    member = await person();
    outsider = await person();
    expect((await admin('org', 'create', team, '--owner', owner.email)).code).toBe(EXIT.OK);
    expect((await admin('org', 'add-member', team, member.email, '--role', 'member')).code).toBe(EXIT.OK);
    owner = await again(owner);
    member = await again(member);
    ownerKey = await mint(owner, 'owner-deploy', team);
    memberKey = await mint(member, 'member-laptop', team);
    memberOther = await mint(member, 'member-ci-runner', team);
    // The owner revokes the member's key: an event about the member's key, not by the member.
    const revoked = await ssh(owner, `revoke ${memberKey}`);
    expect(revoked.code, revoked.stderr).toBe(EXIT.OK);
    const rotated = await rotateApiKey(core.deps, { actor: owner.identity.user, keyId: ownerKey, overlapMs: 0, origin: { channel: 'ssh', ip: '192.0.2.7' } });
    rotatedTo = rotated.api_key_id;
    outsiderKey = await mint(outsider, 'outsider-key', outsider.identity.orgs[0]!.name);
  });

  it("an owner sees every event of the org, newest first: the mint, the rotation, the revocation, the operator's changes", async () => {
    const seen = events(await ssh(owner, `audit --org ${team} --json`));
    const times = seen.map((e) => e.created_at);
    expect([...times].sort().reverse()).toEqual(times);
    expect(seen.every((e) => e.org_name === team)).toBe(true);
    const find = (action: string, keyId: string) => seen.find((e) => e.action === action && e.key_id === keyId);
    expect(find('api_key.created', ownerKey)).toMatchObject({ actor: owner.email, label: 'owner-deploy', door: 'ssh', ip: '192.0.2.1', proof: 'ssh', reason: null });
    expect(find('api_key.created', memberKey)).toMatchObject({ actor: member.email, label: 'member-laptop', proof: 'ssh' });
    expect(find('api_key.revoked', memberKey)).toMatchObject({ actor: owner.email, label: 'member-laptop', door: 'ssh' });
    expect(find('api_key.rotated', ownerKey)).toMatchObject({ actor: owner.email, label: 'owner-deploy', ip: '192.0.2.7', details: expect.objectContaining({ replaced_by: rotatedTo }) });
    expect(find('api_key.revoked', ownerKey)).toMatchObject({ reason: 'rotated' });
    expect(find('api_key.created', rotatedTo)).toMatchObject({ actor: owner.email, label: 'owner-deploy' });
    expect(seen.filter((e) => e.action === 'membership.set').map((e) => e.actor)).toEqual(['operator']);
    expect(seen.find((e) => e.action === 'org.created')).toMatchObject({ actor: 'operator', door: 'admin', ip: null });
    expect(seen.some((e) => e.key_id === outsiderKey)).toBe(false);
  });

  it('a member sees their own actions and what happened to their keys, nothing else of the org', async () => {
    const all = events(await ssh(member, 'audit --json'));
    const inTeam = all.filter((e) => e.org_name === team);
    expect(inTeam.map((e) => [e.action, e.key_id]).sort()).toEqual(
      [
        ['api_key.created', memberKey],
        ['api_key.created', memberOther],
        ['api_key.revoked', memberKey], // by the owner, about the member's key
        ['membership.set', null], // about the member
      ].sort(),
    );
    expect(inTeam.find((e) => e.action === 'api_key.revoked')).toMatchObject({ actor: owner.email });
    // Without --org, also their own actions in no org (the login) and in their personal org.
    expect(all.map((e) => e.action)).toEqual(expect.arrayContaining(['verification.requested', 'ssh_key.confirmed', 'org.provisioned']));
    expect(all.every((e) => e.org_name === null || e.org_name === team || e.org_name === member.identity.orgs.find((o) => o.personal)?.name)).toBe(true);
    expect(events(await ssh(member, `audit --org ${team} --json`)).map((e) => e.id).sort()).toEqual(inTeam.map((e) => e.id).sort());
  });

  it('without --org an owner sees the org and their own events; an outsider sees nothing of the org', async () => {
    const all = events(await ssh(owner, 'audit --json'));
    expect(all.some((e) => e.action === 'api_key.created' && e.key_id === memberOther)).toBe(true);
    expect(all.some((e) => e.action === 'ssh_key.confirmed' && e.actor === owner.email)).toBe(true);
    const theirs = events(await ssh(outsider, 'audit --json'));
    expect(theirs.some((e) => e.key_id === outsiderKey)).toBe(true);
    expect(theirs.some((e) => e.org_name === team)).toBe(false);
    const refused = await ssh(outsider, `audit --org ${team}`);
    expect(refused).toMatchObject({ code: EXIT.FAILED, stdout: '', stderr: `error: no org "${team}" among yours (see "orgs")\n` });
  });

  it('the table fits 100 columns: relative times, short key ids, actor, door, address, proof, reason', async () => {
    const result = await ssh(owner, `audit --org ${team}`);
    expect(result.code, result.stderr).toBe(EXIT.OK);
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^TIME +ACTOR +ACTION +KEY +LABEL +DOOR +ADDRESS +PROOF +REASON$/);
    for (const line of lines) expect(line.length, line).toBeLessThanOrEqual(100);
    const revokedRow = lines.find((l) => l.includes('api_key.revoked') && l.includes(memberKey.slice(0, 8)));
    expect(revokedRow).toMatch(/^\d+s ago +\S+ +api_key\.revoked +[0-9a-f]{8} +member-laptop +ssh +192\.0\.2\.1 +- +-$/);
    expect(revokedRow).not.toContain(memberKey); // the short id only
    const rotation = lines.find((l) => l.includes('api_key.rotated'));
    expect(rotation).toContain('192.0.2.7');
    const rotatedOld = lines.find((l) => l.includes('api_key.revoked') && l.includes(ownerKey.slice(0, 8)));
    expect(rotatedOld).toMatch(/ rotated$/);
    const mintRow = lines.find((l) => l.includes('api_key.created') && l.includes(memberOther.slice(0, 8)));
    expect(mintRow).toMatch(/ ssh +192\.0\.2\.1 +ssh +-$/);
    expect(lines.find((l) => l.includes('org.created'))).toMatch(/^\d+s ago +operator +org\.created +- +- +admin +- +- +-$/);

    // --wide: whole ids and emails, and the org; nothing cut.
    const wide = await ssh(owner, `audit --org ${team} --wide`);
    const wideLines = wide.stdout.trimEnd().split('\n');
    expect(wideLines[0]).toMatch(/^TIME +ACTOR +ACTION +KEY +LABEL +ORG +DOOR +ADDRESS +PROOF +REASON$/);
    expect(wideLines.find((l) => l.includes(` ${memberKey} `) && l.includes('api_key.revoked'))).toMatch(
      new RegExp(`^\\d+s ago +${owner.email} +api_key\\.revoked +${memberKey} +member-laptop +${team} +ssh +192\\.0\\.2\\.1 +- +-$`),
    );
    expect(wide.stdout).not.toContain('…');
  });

  it('--json: every value in full and the details, minus anything named like a secret; the table escapes what it shows', async () => {
    const origin: RequestOrigin = { channel: 'http', ip: '2001:db8::1' };
    await core.deps.db.transaction().execute((trx) =>
      recordAudit(trx, origin, {
        action: 'api_key.revoked',
        orgId: owner.identity.orgs.find((o) => o.name === team)!.org_id,
        subjectId: memberOther,
        details: { label: 'evil\u001b[2J\u202elabel', reason: 'holder', token_hash: 'f00d', nested: { secret: 'x', kept: 1 }, list: [{ api_key: 'k', n: 2 }] },
      }),
    );
    const [newest] = events(await ssh(owner, `audit --org ${team} --limit 1 --json`));
    expect(Object.keys(newest!).sort()).toEqual(
      ['action', 'actor', 'actor_email', 'actor_user_id', 'created_at', 'details', 'door', 'id', 'ip', 'key_id', 'label', 'org_id', 'org_name', 'proof', 'reason', 'subject_id'].sort(),
    );
    expect(newest).toMatchObject({
      action: 'api_key.revoked',
      actor: 'holder',
      actor_email: null,
      key_id: memberOther,
      subject_id: memberOther,
      label: 'evil\u001b[2J\u202elabel',
      door: 'http',
      ip: '2001:db8::1',
      reason: 'holder',
    });
    expect(newest!.details).toEqual({ label: 'evil\u001b[2J\u202elabel', reason: 'holder', nested: { kept: 1 }, list: [{ n: 2 }] });
    expect(newest!.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const table = await ssh(owner, `audit --org ${team} --limit 1`);
    expect(table.stdout).not.toMatch(/[\u001b\u202e]/);
    expect(table.stdout).toContain(String.raw`evil\u001b[2J\u202elabel`.slice(0, 8));
    expect(table.stdout).toMatch(/ holder +api_key\.revoked .* http +2001:db8::1 +- +holder\n$/);
  });

  it('--since: 7 days by default; older events only with a longer window', async () => {
    const old = await mint(owner, 'eight-days-old', team);
    await core.deps.db
      .updateTable('audit_events')
      .set({ created_at: new Date(Date.now() - 8 * 86_400_000) } as never)
      .where('subject_id', '=', old)
      .execute();
    const ids = async (line: string) => events(await ssh(owner, line)).map((e) => e.key_id);
    expect(await ids(`audit --org ${team} --json`)).not.toContain(old);
    expect(await ids(`audit --org ${team} --since 2w --json`)).toContain(old);
    expect(await ids(`audit --org ${team} --since 9d --limit 500 --json`)).toContain(old);
    expect(await ids(`audit --org ${team} --since 7d --json`)).not.toContain(old);
    const shown = await ssh(owner, `audit --org ${team} --since 2w`);
    expect(shown.stdout.split('\n').find((l) => l.includes(old.slice(0, 8)))).toMatch(/^8d ago /);
    // Nothing in the window (an hour later, on the core's clock): said, not an empty table.
    core.clock.now = new Date(Date.now() + 3_600_000);
    expect(await runSshLine(core.deps, outsider.identity, 'audit --since 30m')).toMatchObject({ code: EXIT.OK, stdout: '(no events in the last 30m)\n' });
    expect(events(await runSshLine(core.deps, outsider.identity, 'audit --since 2h --json')).some((e) => e.key_id === outsiderKey)).toBe(true);
  });

  it('--limit: the newest N, and a word (not in JSON) that older ones may exist', async () => {
    const all = events(await ssh(owner, `audit --org ${team} --json`));
    expect(all.length).toBeGreaterThan(3);
    const two = await ssh(owner, `audit --org ${team} --limit 2 --json`);
    expect(events(two).map((e) => e.id)).toEqual(all.slice(0, 2).map((e) => e.id));
    expect(two.stderr).toBe('');
    const table = await ssh(owner, `audit --org ${team} --limit 2`);
    expect(table.stdout.trimEnd().split('\n')).toHaveLength(3);
    expect(table.stderr).toBe('(the newest 2 events; older ones of the last 7d may exist: --limit shows up to 500)\n');
    expect((await ssh(owner, `audit --org ${team} --limit 500`)).stderr).toBe('');
  });

  const USAGE: Array<[string, string]> = [
    ['audit --since 0', '--since must be a duration such as 7d, 12h or 2w, not "0"'],
    ['audit --since soon', '--since must be a duration such as 7d, 12h or 2w, not "soon"'],
    ['audit --since 366d', '--since must be at most 365d, not "366d"'],
    ['audit --since 60w', '--since must be at most 365d, not "60w"'],
    ['audit --limit 0', '--limit must be a whole number from 1 to 500, not "0"'],
    ['audit --limit 501', '--limit must be a whole number from 1 to 500, not "501"'],
    ['audit --limit -1', '--limit needs a value (one that starts with "-" is written --limit=-value)'],
    ['audit --limit=-1', '--limit must be a whole number from 1 to 500, not "-1"'],
    ['audit --limit 1.5', '--limit must be a whole number from 1 to 500, not "1.5"'],
    ['audit --limit ten', '--limit must be a whole number from 1 to 500, not "ten"'],
    ['audit --since', '--since needs a value'],
    ['audit extra', 'unexpected argument "extra"'],
    ["audit --org acme\u202ecorp", `--org ${REFUSAL} (U+202E)`],
  ];
  for (const [line, message] of USAGE) {
    it(`"${line}": usage error, exit 2`, async () => {
      const result = await ssh(owner, line);
      expect(result).toMatchObject({ code: EXIT.USAGE, stdout: '' });
      expect(result.stderr).toBe(`error: ${message}\nusage: audit [--org ORG] [--since 7d] [--limit 50] [--wide] [--json]\n`);
      // The admin CLI parses the same flags the same way.
      const operator = await admin(...line.split(' '));
      expect(operator).toMatchObject({ code: EXIT.USAGE, stdout: '' });
      expect(operator.stderr.split('\n')[0]).toBe(`error: ${message}`);
    });
  }

  it('an unlinked key is told how to link it; Tab offers the flags and the org names after --org', async () => {
    const anonymous: Identity = { kind: 'anonymous', key: (await core.verifiedUser()).publicKey };
    await core.deps.db.deleteFrom('ssh_keys').where('key_blob', '=', anonymous.key.blob).execute();
    const result = await ssh(anonymous, 'audit');
    expect(result).toMatchObject({ code: EXIT.FAILED, stdout: '' });
    expect(result.stderr).toContain('is not linked to an account yet');
    expect(COMPLETIONS.commands).toContain('audit');
    expect(COMPLETIONS.flagsOf('audit')).toEqual(expect.arrayContaining(['--org', '--since', '--limit', '--json']));
    const completions = sessionCompletions(core.deps, () => owner.identity).completions;
    expect(completions.valuesOf?.('audit', '--org')).toContain(team);
  });

  describe('the admin CLI', () => {
    it('audit: every org, newest first; --org one of them; an unknown org is an error', async () => {
      const all = events(await admin('audit', '--limit', '500', '--json'));
      const times = all.map((e) => e.created_at);
      expect([...times].sort().reverse()).toEqual(times);
      expect(all.some((e) => e.key_id === outsiderKey)).toBe(true);
      expect(all.some((e) => e.key_id === memberOther && e.action === 'api_key.created')).toBe(true);
      expect(all.some((e) => e.org_id === null)).toBe(true); // logins and confirmations, of no org
      const team_ = events(await admin('audit', '--org', team, '--json'));
      expect(team_.length).toBeGreaterThan(3);
      expect(team_.every((e) => e.org_name === team)).toBe(true);
      expect(team_.map((e) => e.id)).toEqual(events(await ssh(owner, `audit --org ${team} --json`)).map((e) => e.id));

      const table = await admin('audit', '--org', team);
      expect(table.code).toBe(EXIT.OK);
      expect(table.stdout.split('\n')[0]).toMatch(/^TIME +ACTOR +ACTION +KEY +LABEL +DOOR +ADDRESS +PROOF +REASON$/);
      for (const line of table.stdout.trimEnd().split('\n')) expect(line.length).toBeLessThanOrEqual(100);

      expect(await admin('audit', '--org', 'no-such-org-audit')).toEqual({ code: EXIT.FAILED, stdout: '', stderr: 'error: Organization not found\n' });
    });

    it('reads --since and --limit as the SSH door does: the same defaults, help lines and advice', async () => {
      const lines = (text: string) => text.split('\n').filter((line) => /^ {2}--(since|limit) /.test(line));
      const sshHelp = (await ssh(owner, 'audit --help')).stdout;
      const adminHelp = (await admin('audit', '--help')).stdout;
      expect(lines(sshHelp)).toHaveLength(2);
      expect(lines(adminHelp)).toEqual(lines(sshHelp));
      // Both with the 7-day window and the 50-event limit by default, and the same word when the limit cut.
      const operator = await admin('audit', '--org', team, '--limit', '2');
      expect(operator.stderr).toBe((await ssh(owner, `audit --org ${team} --limit 2`)).stderr);
      expect(operator.stderr).toBe('(the newest 2 events; older ones of the last 7d may exist: --limit shows up to 500)\n');
      expect(events(await admin('audit', '--org', team, '--json')).length).toBe(Math.min(50, events(await admin('audit', '--org', team, '--limit', '500', '--json')).length));
    });
  });
});

describe('the audit table, crowded', () => {
  it('stays within 100 columns; the key actions stay whole, the long ones and the free text give way', async () => {
    const { auditTable } = await import('../../src/text/audit-table.js');
    const now = new Date('2026-12-02T10:00:00Z');
    const row = (action: string, extra: Partial<Record<string, string>> = {}) => ({
      id: action,
      created_at: new Date(now.getTime() - 120_000),
      action,
      actor: extra.actor ?? 'someone-with-a-long-name@example.com',
      actor_user_id: null,
      actor_email: null,
      org_id: null,
      org_name: null,
      subject_id: null,
      key_id: '5be0c1d2-0000-4000-8000-000000000000',
      label: 'a-label-that-goes-on-and-on',
      door: 'admin' as const,
      ip: '2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff',
      proof: extra.proof ?? 'email+sshsig',
      reason: 'member_removed',
      details: {},
    });
    const table = auditTable([row('api_key.revoked'), row('api_key.rotated'), row('ssh_key.counter_not_increasing')], now, { sinceMs: 86_400_000, limit: 50 });
    const lines = table.split('\n');
    for (const line of lines) expect(line.length, line).toBeLessThanOrEqual(100);
    expect(lines[1]).toContain(' api_key.revoked ');
    expect(lines[2]).toContain(' api_key.rotated ');
    expect(lines[3]).toContain(' ssh_key.counter_not_… ');
    expect(lines[1]).toMatch(/^2m ago +someone… +api_key\.revoked +5be0c1d2 +a-label… +admin +2001:db… +email\+sshsig +member_…$/);
  });
});
