import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.js';
import { runAdmin } from '../support/in-process.js';
import { openssh } from '../support/ssh.js';
import { sshLinkedUser } from '../support/accounts.js';

// `list` (SSH) and `keys list` (admin CLI): one table, within 100 columns, with relative times and
// a STATE column; every value in full with --json and --wide (issue 17, friction #3).

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

const verifiedUser = () => sshLinkedUser(t, 'lister');

const DAY = 86_400_000;
const HOUR = 3_600_000;

describe('relative times', () => {
  it('the largest whole unit, rounded down: 3d ago, in 29d, 5h ago, 1y ago', async () => {
    // Imported here, so that the other tests of this file run (and fail on their own) where it does not exist.
    const { relativeTime } = await import('../../src/text/keys-table.js');
    const now = new Date('2025-06-01T12:00:00Z');
    const at = (ms: number) => relativeTime(new Date(now.getTime() + ms), now);
    expect(at(-3 * DAY - 5 * HOUR)).toBe('3d ago');
    expect(at(30 * DAY - 1_000)).toBe('in 29d');
    expect(at(-5 * HOUR)).toBe('5h ago');
    expect(at(-90_000)).toBe('1m ago');
    expect(at(-400)).toBe('0s ago');
    expect(at(2_000)).toBe('in 2s');
    expect(at(-400 * DAY)).toBe('1y ago');
  });
});

describe('list, over OpenSSH, and the admin CLI', () => {
  it('fits 100 columns: short ids, relative times, active/expired/revoked; long labels cut; --wide and --json in full; the admin table is the same', async () => {
    const owner = await verifiedUser();
    const org = owner.org; // the personal org: named after a (long) test email
    const ssh = (...args: string[]) => openssh(t.app.sshPort, owner.key.privateKeyPath, args);
    const create = async (...args: string[]) => {
      const made = await ssh('create', ...args, '--json');
      expect(made.code, made.stderr).toBe(0);
      return JSON.parse(made.stdout).api_key_id as string;
    };
    const longLabel = `nightly-${'x'.repeat(80)}-end`;
    const active = await create('--label', 'github-actions-deploy');
    const expiring = await create('--label', 'thirty-days', '--expires-in', '30d');
    const long = await create('--label', longLabel);
    const expired = await create('--label', 'short-lived', '--expires-in', '1h');
    const revoked = await create('--label', 'revoked-one');
    expect((await ssh('revoke', revoked)).code).toBe(0);

    // Ages a person would see on a real system: set in the database, as time would have.
    const now = Date.now();
    const set = (id: string, values: Record<string, Date>) => t.app.deps.db.updateTable('api_keys').set(values).where('id', '=', id).execute();
    for (const [i, id] of [active, expiring, long, expired, revoked].entries()) await set(id, { created_at: new Date(now - 10 * DAY - i * 60_000) });
    await set(active, { created_at: new Date(now - 3 * DAY - HOUR), last_used_at: new Date(now - 2 * HOUR - 60_000) });
    await set(expired, { expires_at: new Date(now - 3 * DAY - HOUR) });
    await set(revoked, { revoked_at: new Date(now - DAY - HOUR) });

    const table = await ssh('list');
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    for (const line of lines) expect(line.length, line).toBeLessThanOrEqual(100);
    expect(lines[0]).toMatch(/^ID {8}LABEL\s+ORG\s+STATE\s+CREATED\s+LAST USED\s+EXPIRES$/);
    const row = (id: string) => {
      const line = lines.find((l) => l.startsWith(`${id.slice(0, 8)} `));
      expect(line, id).toBeDefined();
      return line!.split(/ {2,}/);
    };
    // Realistic labels and org names are shown whole.
    expect(row(active)).toEqual([active.slice(0, 8), 'github-actions-deploy', org, 'active', '3d ago', '2h ago', 'never']);
    expect(row(expiring)).toEqual([expiring.slice(0, 8), 'thirty-days', org, 'active', '10d ago', 'never', 'in 29d']);
    expect(row(expired)).toEqual([expired.slice(0, 8), 'short-lived', org, 'expired', '10d ago', 'never', '3d ago']);
    expect(row(revoked).slice(0, 4)).toEqual([revoked.slice(0, 8), 'revoked-one', org, 'revoked']);
    const cut = row(long)[1]!;
    expect(cut).toMatch(/^nightly-x+…$/);
    expect(longLabel.startsWith(cut.slice(0, -1))).toBe(true);

    // --wide: every column, nothing cut.
    const wide = await ssh('list', '--wide');
    const wideLines = wide.stdout.trimEnd().split('\n');
    expect(wideLines[0]).toMatch(/^ID\s+LABEL\s+ORG\s+CREATED BY\s+VIA\s+STATE\s+CREATED\s+LAST USED\s+EXPIRES\s+REVOKED\s+PERMISSIONS$/);
    expect(wide.stdout).toContain(longLabel);
    expect(wideLines.find((l) => l.startsWith(revoked))!.split(/ {2,}/)).toEqual([
      revoked, 'revoked-one', org, owner.email, 'ssh', 'revoked', '10d ago', 'never', 'never', '1d ago', 'clusters:view,clusters:create',
    ]);

    // --json: full values, ISO timestamps, and the state.
    const listed = JSON.parse((await ssh('list', '--json')).stdout) as Array<Record<string, unknown>>;
    const byId = new Map(listed.map((k) => [k.id, k]));
    expect(byId.get(long)).toMatchObject({ label: longLabel, state: 'active', revoked: false, created_via: 'ssh', created_by: owner.email, security_key: false, replaced_by: null });
    expect(byId.get(expired)).toMatchObject({ state: 'expired', revoked: false, revoked_at: null });
    expect(byId.get(revoked)).toMatchObject({ state: 'revoked', revoked: true });
    expect(byId.get(active)!.last_used_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

    // One table for both programs: the operator sees exactly what the org's admin sees.
    const sshOrg = await ssh('list', '--org', org);
    const adminOrg = await runAdmin(t.app.deps, 'keys', 'list', '--org', org);
    expect(adminOrg.code).toBe(0);
    expect(adminOrg.stdout).toBe(sshOrg.stdout);
    expect((await runAdmin(t.app.deps, 'keys', 'list', '--org', org, '--wide')).stdout).toBe((await ssh('list', '--org', org, '--wide')).stdout);
    const adminJson = JSON.parse((await runAdmin(t.app.deps, 'keys', 'list', '--org', org, '--json')).stdout) as Array<Record<string, unknown>>;
    expect(adminJson.map((k) => [k.id, k.state])).toEqual(listed.map((k) => [k.id, k.state]));
  });

  it('revoke takes the id as list shows it; a prefix two of your keys share is refused, others\' keys never count', async () => {
    const owner = await verifiedUser();
    const ssh = (...args: string[]) => openssh(t.app.sshPort, owner.key.privateKeyPath, args);
    const made = JSON.parse((await ssh('create', '--label', 'short-id-key', '--json')).stdout).api_key_id as string;
    const short = made.slice(0, 8);
    expect(await ssh('revoke', short)).toEqual({ code: 0, stdout: `Revoked API key ${made} (short-id-key) in org ${owner.org}\n`, stderr: '' });
    expect((await ssh('revoke', short)).stderr).toBe(`error: API key "${short}" is already revoked\n`);

    // Two keys whose ids share their first 8 characters (made in the database: 1 in 4 billion by chance).
    const other = await verifiedUser();
    const twin = JSON.parse((await ssh('create', '--label', 'twin-one', '--json')).stdout).api_key_id as string;
    const row = await t.app.deps.db.selectFrom('api_keys').selectAll().where('id', '=', twin).executeTakeFirstOrThrow();
    const sibling = `${twin.slice(0, 9)}${twin[9] === 'a' ? 'b' : 'a'}${twin.slice(10)}`;
    // Another account's key whose id shares 20 characters with the sibling's.
    const stranger = `${sibling.slice(0, 20)}${sibling[20] === 'c' ? 'd' : 'c'}${sibling.slice(21)}`;
    await t.app.deps.db.insertInto('api_keys').values({ ...row, id: sibling, label: 'twin-two', permissions: [...row.permissions] }).execute();
    const otherUser = await t.app.deps.db.selectFrom('users').select('id').where('email', '=', other.email).executeTakeFirstOrThrow();
    const otherOrg = await t.app.deps.db.selectFrom('orgs').select('id').where('name', '=', other.org).executeTakeFirstOrThrow();
    await t.app.deps.db
      .insertInto('api_keys')
      .values({ ...row, id: stranger, label: 'not-yours', org_id: otherOrg.id, created_by_user_id: otherUser.id, ssh_key_id: null, permissions: [...row.permissions] })
      .execute();

    expect(await ssh('revoke', twin.slice(0, 8))).toEqual({
      code: 1,
      stdout: '',
      stderr: `error: more than one of your API keys starts with "${twin.slice(0, 8)}": give more of the id (see "list --wide")\n`,
    });
    expect((await ssh('revoke', twin.slice(0, 10))).code).toBe(0);
    // The stranger's key matches too, but is not among ours: the prefix names the sibling alone.
    expect((await ssh('revoke', sibling.slice(0, 20))).stdout).toBe(`Revoked API key ${sibling} (twin-two) in org ${owner.org}\n`);
    expect((await ssh('revoke', stranger)).stderr).toBe(`error: no API key "${stranger}" that you can see (see "list")\n`);
    // Too short, or not an id's shape: not found, as before.
    for (const bad of [twin.slice(0, 7), `${twin.slice(0, 8)}x`, 'not-a-key-id']) {
      expect((await ssh('revoke', bad)).stderr, bad).toBe(`error: no API key "${bad}" that you can see (see "list")\n`);
    }
    // The operator's scope is every key.
    expect((await runAdmin(t.app.deps, 'keys', 'revoke', stranger.slice(0, 20))).stderr).toBe('error: More than one API key starts with that id: give more of it\n');
    expect((await runAdmin(t.app.deps, 'keys', 'revoke', stranger.slice(0, 21))).stdout).toContain(`Revoked API key ${stranger} (not-yours)`);
  });
});
