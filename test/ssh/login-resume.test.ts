import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeKey, uniqueEmail, type TestKey } from '../support/keys.js';
import { confirmForm, startTestApp, tokenOf, type TestApp } from '../support/app.js';
import { openssh } from '../support/ssh.js';
import { closeAllTerminals, openTerminal } from '../support/tmux.js';

// Ctrl-C during `login`, then `login` again: the link still works, and the second login waits for
// it (no second email, no "too many requests"). With the real OpenSSH client: in a real terminal
// (tmux), and as `ssh … login` killed mid-wait.

let t: TestApp;
let port: number;
beforeAll(async () => {
  t = await startTestApp();
  port = t.app.sshPort;
});
afterAll(async () => {
  closeAllTerminals();
  await t?.close();
});

async function confirmLatestMailTo(email: string): Promise<void> {
  const mail = await t.smtp.waitForMail(email);
  const confirmed = await t.request('/shell-auth/verify', confirmForm(tokenOf(mail.link!)));
  expect(confirmed.status).toBe(200);
}

const RESUMED = (email: string) => `The confirmation link sent to ${email} earlier still works, so no new email: check your inbox and press Confirm.`;

describe('login, stopped and run again', () => {
  it('ssh … login killed mid-wait, then run again: it waits for the same link, with no second email and no rate limit', async () => {
    const key = makeKey();
    const email = uniqueEmail('killed');
    const first = openssh(port, key.privateKeyPath, ['login', email], {
      onStderr: (chunk) => {
        if (chunk.includes('Waiting for confirmation')) first.kill(); // what Ctrl-C does to ssh without a terminal
      },
    });
    const killed = await first;
    expect(await t.mailsQueuedTo(email)).toBe(1);

    let said = '';
    let ended = false;
    const second = openssh(port, key.privateKeyPath, ['login', email], { onStderr: (chunk) => (said += chunk) });
    void second.then(() => (ended = true));
    for (let i = 0; i < 400 && !ended && !said.includes('Waiting for confirmation'); i++) await new Promise((resolve) => setTimeout(resolve, 25));
    expect(said).toContain(RESUMED(email)); // not "error: too many requests: try again in 59 s"
    expect(said).toContain('Waiting for confirmation');
    expect(await t.mailsQueuedTo(email)).toBe(1);
    await confirmLatestMailTo(email); // the first (and only) email's link
    const result = await second;
    expect(result.stderr).toBe(
      `Key ${key.fingerprint} (ssh-ed25519)\n` +
        `${RESUMED(email)}\n` +
        'Waiting for confirmation (the link expires in 10 minutes; Ctrl-C stops the wait, not the link)...\n' +
        `Confirmed: this key is now linked to ${email}.\n`,
    );
    expect(result.code).toBe(0);
    expect(t.smtp.mailsTo(email)).toHaveLength(1);
    // Killed, ssh could hear nothing more: what Ctrl-C leaves was said while it waited.
    expect(killed.stderr).toContain('Ctrl-C stops the wait, not the link');
  });

  it('a link whose email the mail server refused is not waited for again', async () => {
    const key = makeKey();
    const email = uniqueEmail('refused');
    const first = openssh(port, key.privateKeyPath, ['login', email], { onStderr: (c) => c.includes('Waiting for confirmation') && first.kill() });
    await first;
    await t.mailSettled();
    // As the outbox marks a message a 5xx refused (mail-outbox.ts): given up, its link never delivered.
    await t.app.deps.db.updateTable('mail_outbox').set({ abandoned_at: new Date(), token: null }).where('recipient', '=', email).execute();
    const again = await openssh(port, key.privateKeyPath, ['login', email]);
    expect(again.stderr).not.toContain('earlier still works');
    expect(again.stderr).toMatch(/^error: too many requests: try again in \d+ s\n$/); // the pair's limit, as for any unconfirmed link
    expect(again.code).toBe(1);
  });

  it('another key, or another email, is not resumed: each gets its own link', async () => {
    const key = makeKey();
    const email = uniqueEmail('own');
    const first = openssh(port, key.privateKeyPath, ['login', email], { onStderr: (c) => c.includes('Waiting for confirmation') && first.kill() });
    await first;
    const other: TestKey = makeKey();
    const second = openssh(port, other.privateKeyPath, ['login', email], { onStderr: (c) => c.includes('Waiting for confirmation') && second.kill() });
    expect((await second).stderr).toContain(`A confirmation link is on its way to ${email}`);
    expect(await t.mailsQueuedTo(email)).toBe(2);
    const elsewhere = uniqueEmail('elsewhere');
    const third = openssh(port, key.privateKeyPath, ['login', elsewhere], { onStderr: (c) => c.includes('Waiting for confirmation') && third.kill() });
    expect((await third).stderr).toContain(`A confirmation link is on its way to ${elsewhere}`);
    expect(await t.mailsQueuedTo(elsewhere)).toBe(1);
  });
});

const HAVE_TMUX = spawnSync('tmux', ['-V']).status === 0;
if (!HAVE_TMUX) console.warn('login-resume.test.ts: SKIPPING the terminal test: no tmux (.ci/run installs it: apt-get install tmux)');

describe.runIf(HAVE_TMUX)(`in a real terminal (OpenSSH in tmux)${HAVE_TMUX ? '' : ' [SKIPPED: tmux not installed]'}`, () => {
  it('Ctrl-C says the link still works and how to go on; login again resumes the wait and finishes on the click', async () => {
    const key = makeKey();
    const email = uniqueEmail('ctrlc');
    // Wide enough that no line of ours wraps.
    const term = openTerminal(
      [
        'ssh', '-tt', '-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no',
        '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-p', String(port), '-i', key.privateKeyPath, 'keys@127.0.0.1',
      ],
      { columns: 250, rows: 50 },
    );
    const lastLine = (screen: string) => screen.trimEnd().split('\n').at(-1) ?? '';
    try {
      await term.until((s) => lastLine(s) === 'keys>', 'the prompt');
      term.type(`login ${email}`);
      term.press('Enter');
      await term.until((s) => s.includes('Waiting for confirmation'), 'login waiting');
      term.press('C-c');
      const stopped = await term.until((s) => lastLine(s) === 'keys>' && s.includes('Stopped waiting'), 'the notice and the prompt', 10_000);
      expect(stopped).toMatch(/\^C\nStopped waiting\. The link still works for (9|10) minutes: press Confirm, then check with: whoami\n/);
      expect(stopped).toContain(`(Or run "login ${email}" again to wait for it: no new email is sent.)`);
      expect(stopped).not.toContain('too many requests');

      term.type(`login ${email}`);
      term.press('Enter');
      const resumed = await term.until((s) => s.split('Waiting for confirmation').length === 3, 'the second wait', 10_000);
      expect(resumed).toContain(RESUMED(email));
      expect(resumed).not.toContain('too many requests');
      expect(await t.mailsQueuedTo(email)).toBe(1);

      await confirmLatestMailTo(email);
      await term.until((s) => s.includes(`Confirmed: this key is now linked to ${email}.`), 'the confirmation');
      await term.until((s) => lastLine(s) === 'keys>', 'the prompt again');
      term.type('whoami');
      term.press('Enter');
      await term.until((s) => s.includes('verified: yes'), 'signed in');
      expect(t.smtp.mailsTo(email)).toHaveLength(1);
    } finally {
      term.close();
    }
  });
});

describe('ssh -t … login', () => {
  it('Ctrl-C on a terminal stops the wait (ssh sends it as a byte) and says the link still works', async () => {
    const key = makeKey();
    const email = uniqueEmail('tty');
    let said = '';
    let pressed = false;
    const run = openssh(port, key.privateKeyPath, ['login', email], {
      tty: true,
      onStderr: (chunk) => (said += chunk),
      input: async (write) => {
        for (let i = 0; i < 400 && !said.includes('Waiting for confirmation'); i++) await new Promise((resolve) => setTimeout(resolve, 25));
        pressed = true;
        write('\x03');
      },
    });
    // With -tt, ssh copies the server's stderr into its stdout.
    const result = await Promise.race([run, new Promise<null>((resolve) => setTimeout(() => resolve(null), 10_000))]);
    if (result === null) run.kill();
    expect(pressed).toBe(true);
    expect(result?.code).toBe(1);
    expect(result!.stdout + result!.stderr).toContain('Stopped waiting. The link still works for');
  });
});
