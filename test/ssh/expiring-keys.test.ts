import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.js';
import { sshLinkedUser } from '../support/accounts.js';
import { runAdmin } from '../support/in-process.js';
import type { TestKey } from '../support/keys.js';
import { openssh } from '../support/ssh.js';
import { closeAllTerminals, openTerminal } from '../support/tmux.js';

// Keys about to expire stand out (issue 19 point 4): `list` says `expiring` in STATE (and
// `expiring_soon` in --json) for an active key expiring within 7 days, --wide shows each key's
// permissions, and the interactive shell's greeting counts your own keys expiring within 7 days.

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

const ssh = (key: TestKey, ...args: string[]) => openssh(t.app.sshPort, key.privateKeyPath, args);
async function create(key: TestKey, label: string, ...args: string[]): Promise<string> {
  const made = await ssh(key, 'create', '--label', label, ...args, '--json');
  expect(made.code, made.stderr).toBe(0);
  return JSON.parse(made.stdout).api_key_id as string;
}

/** The interactive shell without a terminal (`ssh -T`, piped input), as a script drives it: what it printed. */
async function shellGreeting(key: TestKey): Promise<string> {
  const run = await openssh(t.app.sshPort, key.privateKeyPath, [], { extra: ['-T'], input: 'exit\n' });
  expect(run.code, run.stderr).toBe(0);
  return run.stdout;
}

describe('list marks keys expiring within 7 days', () => {
  it('STATE expiring in the table (SSH and admin), expiring_soon in --json, PERMISSIONS with --wide', async () => {
    const owner = await sshLinkedUser(t, 'expiring');
    const month = await create(owner.key, 'thirty-days', '--expires-in', '30d');
    const never = await create(owner.key, 'no-expiry');
    const soon = await create(owner.key, 'three-days', '--expires-in', '3d');
    const hour = await create(owner.key, 'one-hour', '--expires-in', '1h');
    const edge = await create(owner.key, 'eight-days', '--expires-in', '8d');
    const revoked = await create(owner.key, 'revoked-soon', '--expires-in', '2d');
    expect((await ssh(owner.key, 'revoke', revoked)).code).toBe(0);

    const table = await ssh(owner.key, 'list');
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    for (const line of lines) expect(line.length, line).toBeLessThanOrEqual(100);
    const statesIn = (rows: string[]) => (id: string) => rows.find((l) => l.startsWith(`${id.slice(0, 8)} `))!.split(/ {2,}/)[3];
    const ids = [month, never, soon, hour, edge, revoked];
    expect(ids.map(statesIn(lines))).toEqual(['active', 'active', 'expiring', 'expiring', 'active', 'revoked']);
    // The operator's table is the same one (its relative times may have ticked on a second).
    const adminTable = await runAdmin(t.app.deps, 'keys', 'list', '--org', owner.org);
    expect(ids.map(statesIn(adminTable.stdout.split('\n')))).toEqual(ids.map(statesIn(lines)));

    const listed = JSON.parse((await ssh(owner.key, 'list', '--json')).stdout) as Array<{ id: string; state: string; expiring_soon: boolean; permissions: string[] }>;
    const byId = new Map(listed.map((k) => [k.id, k]));
    // `state` is unchanged (scripts filter on "active"); expiring_soon is the mark.
    expect(byId.get(soon)).toMatchObject({ state: 'active', expiring_soon: true });
    expect(byId.get(hour)).toMatchObject({ state: 'active', expiring_soon: true });
    expect([month, never, edge, revoked].map((id) => byId.get(id)!.expiring_soon)).toEqual([false, false, false, false]);

    const wide = (await ssh(owner.key, 'list', '--wide')).stdout.trimEnd().split('\n');
    expect(wide[0]).toMatch(/^ID\s+LABEL\s+ORG\s+CREATED BY\s+VIA\s+STATE\s+CREATED\s+LAST USED\s+EXPIRES\s+REVOKED\s+PERMISSIONS$/);
    const wideRow = wide.find((l) => l.startsWith(soon))!.split(/ {2,}/);
    expect(wideRow[5]).toBe('expiring');
    expect(wideRow.at(-1)).toBe(byId.get(soon)!.permissions.join(','));
    expect(byId.get(soon)!.permissions.length).toBeGreaterThan(0);

    // The usage text says what the mark means.
    expect((await ssh(owner.key, 'list', '--help')).stdout).toContain('expiring (active, but expires within 7 days');
  });
});

describe('list marks a key in its rotation overlap as rotated', () => {
  it('STATE rotated (never expiring) while the replaced key still works, then expired; --json keeps state active and adds replaced_by', async () => {
    const owner = await sshLinkedUser(t, 'rotating');
    const old = await create(owner.key, 'three-days-rotated', '--expires-in', '3d');
    const atOnce = await create(owner.key, 'rotated-at-once', '--expires-in', '3d');
    const plain = await create(owner.key, 'not-rotated', '--expires-in', '3d');
    const rotate = async (id: string, overlap: string) => {
      const rotated = await ssh(owner.key, 'rotate', id, '--overlap', overlap, '--json');
      expect(rotated.code, rotated.stderr).toBe(0);
      return JSON.parse(rotated.stdout).api_key_id as string;
    };
    const successor = await rotate(old, '1h');
    const atOnceSuccessor = await rotate(atOnce, '0');

    const stateOf = async (...args: string[]) => {
      const table = await ssh(owner.key, 'list', ...args);
      expect(table.code, table.stderr).toBe(0);
      const lines = table.stdout.trimEnd().split('\n');
      const column = args.includes('--wide') ? 5 : 3;
      return (id: string) => lines.find((l) => l.startsWith(args.includes('--wide') ? id : `${id.slice(0, 8)} `))!.split(/ {2,}/)[column];
    };
    const ids = [old, successor, atOnce, atOnceSuccessor, plain];
    const shown = await stateOf();
    // The old key works for an hour more, but there is nothing to do about it: its successor is the one to watch.
    expect(ids.map(shown)).toEqual(['rotated', 'expiring', 'revoked', 'expiring', 'expiring']);
    expect(ids.map(await stateOf('--wide'))).toEqual(ids.map(shown));
    const adminTable = (await runAdmin(t.app.deps, 'keys', 'list', '--org', owner.org)).stdout.split('\n');
    expect(ids.map((id) => adminTable.find((l) => l.startsWith(`${id.slice(0, 8)} `))!.split(/ {2,}/)[3])).toEqual(ids.map(shown));

    const listed = JSON.parse((await ssh(owner.key, 'list', '--json')).stdout) as Array<{ id: string; state: string; expiring_soon: boolean; replaced_by: string | null }>;
    const byId = new Map(listed.map((k) => [k.id, k]));
    // `state` is what it was (it works: active); replaced_by says by which key.
    expect(byId.get(old)).toMatchObject({ state: 'active', expiring_soon: false, replaced_by: successor });
    expect(byId.get(successor)).toMatchObject({ state: 'active', expiring_soon: true, replaced_by: null });
    expect(byId.get(atOnce)).toMatchObject({ state: 'revoked', expiring_soon: false, replaced_by: atOnceSuccessor });
    expect(byId.get(plain)).toMatchObject({ state: 'active', expiring_soon: true, replaced_by: null });

    // The overlap over (its end set in the past, as the hour would have): the old key reads expired.
    await t.app.deps.db.updateTable('api_keys').set({ expires_at: new Date(Date.now() - 60_000) }).where('id', '=', old).execute();
    expect((await stateOf())(old)).toBe('expired');

    expect((await ssh(owner.key, 'list', '--help')).stdout).toContain('rotated (replaced\nby rotation, still working until its overlap ends)');
  });
});

describe('the shell greeting', () => {
  it('counts your own live keys expiring within 7 days; says nothing when there are none; never in exec mode', async () => {
    const user = await sshLinkedUser(t, 'greeted');
    expect(await shellGreeting(user.key)).not.toContain('expire');
    await create(user.key, 'far-away', '--expires-in', '30d');
    await create(user.key, 'no-expiry-here');
    expect(await shellGreeting(user.key)).not.toContain('expire');

    const first = await create(user.key, 'soon-one', '--expires-in', '2d');
    expect(await shellGreeting(user.key)).toContain('1 of your API keys expires within 7 days: see "list"');
    await create(user.key, 'soon-two', '--expires-in', '6d');
    const greeting = await shellGreeting(user.key);
    expect(greeting).toContain(`Hi ${user.email}!`);
    expect(greeting).toContain('2 of your API keys expire within 7 days: see "list" (STATE expiring), and "rotate KEY_ID" to renew one.\n');
    // In order: who you are, the reminder, then how to use the prompt.
    expect(greeting.indexOf('Hi ')).toBeLessThan(greeting.indexOf('2 of your'));
    expect(greeting.indexOf('2 of your')).toBeLessThan(greeting.indexOf('Type "help"'));

    // A revoked key no longer counts.
    expect((await ssh(user.key, 'revoke', first)).code).toBe(0);
    expect(await shellGreeting(user.key)).toContain('1 of your API keys expires within 7 days');

    // Exec mode prints only what the command prints.
    const whoami = await ssh(user.key, 'whoami');
    expect(whoami.code).toBe(0);
    expect(whoami.stdout + whoami.stderr).not.toContain('expire');
  });
});

const HAVE_TMUX = spawnSync('tmux', ['-V']).status === 0;
if (!HAVE_TMUX) console.warn('expiring-keys.test.ts: SKIPPING the terminal test: no tmux (.ci/run installs it: apt-get install tmux)');

describe.runIf(HAVE_TMUX)(`the greeting in a real terminal (OpenSSH in tmux)${HAVE_TMUX ? '' : ' [SKIPPED: tmux not installed]'}`, () => {
  afterAll(closeAllTerminals);
  it('shows the reminder between the greeting and the prompt', async () => {
    const user = await sshLinkedUser(t, 'terminal');
    await create(user.key, 'terminal-soon', '--expires-in', '5d');
    const term = openTerminal([
      'ssh', '-tt', '-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no',
      '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-p', String(t.app.sshPort), '-i', user.key.privateKeyPath, 'keys@127.0.0.1',
    ], { columns: 220, rows: 40 }); // wide enough that the greeting's long first line does not wrap
    try {
      const screen = await term.until((s) => s.trimEnd().endsWith('keys>'), 'the prompt');
      const lines = screen.trimEnd().split('\n');
      const at = lines.findIndex((l) => l.startsWith(`Hi ${user.email}!`));
      expect(lines.slice(at + 1)).toEqual([
        '1 of your API keys expires within 7 days: see "list" (STATE expiring), and "rotate KEY_ID" to renew one.',
        'Type "help" for commands, "exit" or Ctrl-D to leave.',
        'keys>',
      ]);
      term.type('exit');
      term.press('Enter');
      expect([0, null]).toContain(await term.exited());
    } finally {
      term.close();
    }
  });
});
