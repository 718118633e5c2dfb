import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.js';
import { runAdmin } from '../support/in-process.js';
import { openssh } from '../support/ssh.js';
import { closeAllTerminals, openTerminal } from '../support/tmux.js';
import { sshLinkedUser } from '../support/accounts.js';

// A mistyped command gets a suggestion (SSH and admin CLI); at the prompt, Tab completes org names
// after --org and key ids after revoke (issue 17, friction #5).

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

const verifiedUser = () => sshLinkedUser(t, 'typist');

describe('did you mean', () => {
  it('over OpenSSH: exec and the shell suggest the command a typo was close to (exit 2); far-off words get none', async () => {
    const { key } = await verifiedUser();
    const hint = t.app.sshHint;
    const ssh = (...args: string[]) => openssh(t.app.sshPort, key.privateKeyPath, args);
    expect(await ssh('craete', '--label', 'typo-key')).toEqual({
      code: 2,
      stdout: '',
      stderr: `error: unknown command "craete": did you mean "create"? run "${hint} help" for the list\n`,
    });
    expect((await ssh('lsit')).stderr).toBe(`error: unknown command "lsit": did you mean "list"? run "${hint} help" for the list\n`);
    expect((await ssh('whoamii')).stderr).toContain('did you mean "whoami"?');
    expect((await ssh('frobnicate')).stderr).toBe(`error: unknown command "frobnicate": run "${hint} help" for the list\n`);
    expect((await ssh('xy')).stderr).not.toContain('did you mean');
    // Nothing ran for the typo.
    expect(JSON.parse((await ssh('list', '--json')).stdout)).toEqual([]);

    const shell = await openssh(t.app.sshPort, key.privateKeyPath, [], { extra: ['-T'], input: 'revok x\n' });
    expect(shell.stderr).toBe('error: unknown command "revok": did you mean "revoke"? type "help" for the list\n');
  });

  it('the admin CLI, on the same framework: a typo in the group or the action', async () => {
    const hint = 'run "npm run admin -- --help" for the list';
    expect(await runAdmin(t.app.deps, 'keys', 'lsit')).toEqual({ code: 2, stdout: '', stderr: `error: unknown command "keys lsit": did you mean "keys list"? ${hint}\n` });
    expect((await runAdmin(t.app.deps, 'ogr', 'list')).stderr).toBe(`error: unknown command "ogr": did you mean "org list"? ${hint}\n`);
    expect((await runAdmin(t.app.deps, 'billing', 'sett', 'x', 'active')).stderr).toContain('did you mean "billing set"?');
    expect((await runAdmin(t.app.deps, 'org', 'frobnicate')).stderr).toBe(`error: unknown command "org frobnicate": ${hint}\n`);
  });
});

const HAVE_TMUX = spawnSync('tmux', ['-V']).status === 0;
if (!HAVE_TMUX) console.warn('typos-and-completion.test.ts: SKIPPING the terminal test: no tmux (.ci/run installs it: apt-get install tmux)');

describe.runIf(HAVE_TMUX)(`Tab at the prompt, in a real terminal (OpenSSH in tmux)${HAVE_TMUX ? '' : ' [SKIPPED: tmux not installed]'}`, () => {
  afterAll(closeAllTerminals);
  const lastLine = (screen: string) => screen.trimEnd().split('\n').at(-1) ?? '';

  it('completes org names after --org and key ids after revoke, from the session\'s own account', async () => {
    const { key, email } = await verifiedUser();
    const team = `zenith-${Date.now().toString(36)}`;
    expect((await runAdmin(t.app.deps, 'org', 'create', team, '--owner', email)).code).toBe(0);
    // Another account's key: never offered.
    const stranger = await verifiedUser();
    expect((await openssh(t.app.sshPort, stranger.key.privateKeyPath, ['create', '--label', 'not-yours'])).code).toBe(0);

    const term = openTerminal([
      'ssh', '-tt', '-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no',
      '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-p', String(t.app.sshPort), '-i', key.privateKeyPath, 'keys@127.0.0.1',
    ]);
    try {
      await term.until((s) => lastLine(s) === 'keys>', 'the prompt');
      term.type('create --label tabbed-key --org zen');
      term.press('Tab');
      await term.until((s) => lastLine(s) === `keys> create --label tabbed-key --org ${team}`, 'the org name completed', 10_000);
      term.press('Enter');
      await term.until((s) => s.includes(`in org ${team} (`), 'the key created in that org');

      // One key of hers is active: revoke + Tab writes its id whole.
      const [mine] = JSON.parse((await openssh(t.app.sshPort, key.privateKeyPath, ['list', '--json'])).stdout) as Array<{ id: string }>;
      term.type('revoke ');
      term.press('Tab');
      await term.until((s) => lastLine(s) === `keys> revoke ${mine!.id}`, 'the key id completed', 10_000);
      term.press('Enter');
      await term.until((s) => s.includes(`Revoked API key ${mine!.id}`), 'the key revoked');

      // Revoked keys are not offered (the choices are read again after a command): Tab adds nothing.
      term.type('revoke ');
      term.press('Tab');
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(lastLine(term.screen())).toBe('keys> revoke');
      term.press('C-u');
      term.type('exit');
      term.press('Enter');
      expect([0, null]).toContain(await term.exited());
    } finally {
      term.close();
    }
  });
});
