import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import net from 'node:net';
import type { ClientChannel } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { setBilling, setMember } from '../../src/core/index.js';
import { makeKey, uniqueEmail, type TestKey } from '../support/keys.js';
import { confirmForm, startTestApp, tokenOf, type TestApp } from '../support/app.js';
import { connectClient, execOn, openssh, parsedKey, ssh2Exec, TrickAgent } from '../support/ssh.js';
import { closeAllTerminals, openTerminal } from '../support/tmux.js';

const execFileAsync = promisify(execFile);
let t: TestApp;
let port: number;
let hint: string;
beforeAll(async () => {
  t = await startTestApp();
  port = t.app.sshPort;
  hint = t.app.sshHint;
});
afterAll(async () => {
  await t?.close();
});

const API_KEY = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}[0-9a-f]{64}$/;
const admin = { channel: 'admin' as const, ip: null };

/**
 * A user whose key is verified: through the HTTP email flow (what the vers CLI does), then one
 * `login` over SSH with the same email, which proves possession without another email.
 */
async function verifiedUser(type: 'ed25519' | 'rsa' = 'ed25519'): Promise<{ email: string; key: TestKey; org: string }> {
  const email = uniqueEmail('ssh');
  const key = makeKey(type, type === 'rsa' ? 2048 : undefined);
  await t.verifyByEmail(email, key.publicKey);
  const proved = await openssh(port, key.privateKeyPath, ['login', email]);
  if (proved.code !== 0) throw new Error(`login failed: ${proved.stderr}`);
  return { email, key, org: email.split('@')[0]! };
}

const UNVERIFIED = (key: TestKey) =>
  `This key (${key.fingerprint}) is not linked to an account yet.\nVerify it by email with: ${hint} login you@example.com\n` +
  '(Linked it over HTTP already? Run login once with that email: the signature proves the key, no email needed.)\n';

const HTTP_LINKED = (key: TestKey) =>
  `This key (${key.fingerprint}) was linked over HTTP (e.g. by "vers login"), which proves an inbox, not the key.\n` +
  `Prove it here once, with the same email: ${hint} login you@example.com (your signature is the proof: no email is sent)\n`;

const ssh = (key: TestKey, ...args: string[]) => openssh(port, key.privateKeyPath, args);

describe('host key', () => {
  it('is an ed25519 OpenSSH key, mode 0600, whose fingerprint the server logs', () => {
    const line = t.logs.find((l) => l.includes('"msg":"SSH host key"'))!;
    const { path: keyPath, fingerprint } = JSON.parse(line) as { path: string; fingerprint: string };
    expect(fs.statSync(keyPath).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(keyPath, 'utf8')).toMatch(/^-----BEGIN OPENSSH PRIVATE KEY-----/);
    const printed = execFileSync('ssh-keygen', ['-l', '-f', keyPath]).toString();
    expect(printed).toContain(fingerprint);
    expect(printed).toContain('(ED25519)');
    expect(fingerprint).toBe(t.app.hostKeyFingerprint);
  });

  it('is reused by the next start, so a strict known_hosts check passes', async () => {
    const { key } = await verifiedUser();
    const knownHosts = `${key.privateKeyPath}.known_hosts`;
    const strict = (p: number, mode: string) =>
      openssh(p, key.privateKeyPath, ['whoami'], { extra: ['-o', `StrictHostKeyChecking=${mode}`, '-o', `UserKnownHostsFile=${knownHosts}`] });
    expect((await strict(port, 'accept-new')).code).toBe(0);
    const hostKeysDir = JSON.parse(t.logs.find((l) => l.includes('"msg":"SSH host key"'))!).path.replace(/\/[^/]+$/, '');
    const second = await startTestApp({ HOST_KEYS_DIR: hostKeysDir }, { smtp: t.smtp });
    try {
      expect(second.app.hostKeyFingerprint).toBe(t.app.hostKeyFingerprint);
      // known_hosts recorded [127.0.0.1]:port; the new instance listens elsewhere, so pin by key.
      const line = fs.readFileSync(knownHosts, 'utf8').trim().replace(/^\S+/, `[127.0.0.1]:${second.app.sshPort}`);
      fs.appendFileSync(knownHosts, `\n${line}\n`);
      const result = await strict(second.app.sshPort, 'yes');
      expect(result.stderr).not.toMatch(/host key|WARNING|verification failed/i);
      expect(result.code).toBe(0);
    } finally {
      await second.close();
    }
  });
});

describe('authentication', () => {
  it('another user name gets in, runs nothing, and is told which to use (exit 1); the shell too', async () => {
    const { key } = await verifiedUser();
    const result = await openssh(port, key.privateKeyPath, ['create', '--label', 'as-root'], { user: 'root' });
    expect(result).toEqual({
      code: 1,
      stdout: '',
      stderr: `Connect as keys@${t.app.sshHint.split('@')[1]} (not root): ${t.app.sshHint} COMMAND\n`,
    });
    const shell = await openssh(port, key.privateKeyPath, [], { user: 'git', extra: ['-T'] });
    expect(shell.code).toBe(1);
    expect(shell.stderr).toBe(`Connect as keys@${t.app.sshHint.split('@')[1]} (not git): ${t.app.sshHint} help\n`);
    // Nothing ran: no key was minted for the root attempt.
    const listed = await ssh(key, 'list', '--json');
    expect(JSON.parse(listed.stdout).map((k: { label: string }) => k.label)).not.toContain('as-root');
  });

  it('an unknown key gets in with login/whoami/help only; everything else explains how to verify', async () => {
    const key = makeKey();
    const whoami = await ssh(key, 'whoami');
    expect(whoami).toEqual({
      code: 0,
      stdout: `key:      ${key.fingerprint} (ssh-ed25519)\nverified: no\n`,
      stderr: UNVERIFIED(key),
    });
    for (const command of [['create', '--label', 'sneaky-key'], ['list'], ['orgs'], ['revoke', 'x']]) {
      const result = await ssh(key, ...command);
      expect(result).toEqual({ code: 1, stdout: '', stderr: UNVERIFIED(key) });
    }
    const help = await ssh(key, 'help');
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^ {2}create +create an API key/m);
  });

  it('RSA keys sign with rsa-sha2-256/512 and work', async () => {
    const { key, email } = await verifiedUser('rsa');
    const result = await ssh(key, 'whoami', '--json');
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ email, fingerprint: key.fingerprint, key_type: 'ssh-rsa', verified: true });
  });

  it('identity is the key that signed, never one merely offered (GHSA-pchf-49fh-w34r)', async () => {
    const victim = await verifiedUser();
    const attacker = makeKey();
    // The agent offers the victim's public key first (the server answers PK_OK to the query),
    // cannot sign for it, and then authenticates with the attacker's own key.
    const agent = new TrickAgent([
      { publicKey: parsedKey(victim.key.publicKey), signer: null },
      { publicKey: parsedKey(attacker.privateKeyPath), signer: parsedKey(attacker.privateKeyPath) },
    ]);
    const result = await ssh2Exec(port, { agent }, 'whoami --json');
    expect(result.code).toBe(0);
    const me = JSON.parse(result.stdout);
    expect(me).toEqual({ email: null, user_id: null, key_type: 'ssh-ed25519', security_key: false, fingerprint: attacker.fingerprint, verified: false });
    const create = await ssh2Exec(port, { agent }, 'create --label stolen-key');
    expect(create.code).toBe(1);
    expect(create.stdout).toBe('');
  });

  it('a signature by another key over the offered key is refused', async () => {
    const victim = await verifiedUser();
    const attacker = makeKey();
    const agent = new TrickAgent([{ publicKey: parsedKey(victim.key.publicKey), signer: parsedKey(attacker.privateKeyPath) }]);
    await expect(ssh2Exec(port, { agent }, 'whoami')).rejects.toThrow(/All configured authentication methods failed/);
  });

  it('records last_seen_at for the key (at most once a minute: see touch.test.ts)', async () => {
    const { key } = await verifiedUser(); // its login connection is the first sighting
    const blob = key.publicKey.split(' ')[1]!;
    // Recorded in the background (it must never delay or fail a session): wait for it, briefly.
    let seen: Date | null = null;
    for (let i = 0; i < 50 && seen === null; i++) {
      const row = await t.app.deps.db.selectFrom('ssh_keys').select('last_seen_at').where('key_blob', '=', blob).executeTakeFirstOrThrow();
      seen = row.last_seen_at;
      if (seen === null) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(seen).not.toBeNull();
  });
});

describe('create', () => {
  it('prints the key alone on stdout and the notice on stderr; KEY=$(ssh ...) works', async () => {
    const { key, org } = await verifiedUser();
    const result = await ssh(key, 'create', '--label', 'ci-runner');
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^[0-9a-f-]{36}[0-9a-f]{64}\n$/);
    const apiKey = result.stdout.trim();
    expect(apiKey).toMatch(API_KEY);
    expect(result.stderr).toBe(
      `Created API key ${apiKey.slice(0, 36)} in org ${org} (View Clusters, Create Clusters; no expiry). It will not be shown again.\n`,
    );
    const whoami = await t.request('/api/whoami', { headers: { authorization: `Bearer ${apiKey}` } });
    expect(whoami.body).toMatchObject({ org_name: org, label: 'ci-runner' });

    const sshArgs = `-F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -p ${port} -i ${key.privateKeyPath}`;
    // Asynchronously: the server runs in this process and must keep answering.
    const captured = (await execFileAsync('bash', ['-c', `KEY=$(ssh ${sshArgs} keys@127.0.0.1 create --label \"'from a script'\" 2>/dev/null); echo "got:$KEY"`])).stdout;
    expect(captured).toMatch(/^got:[0-9a-f-]{36}[0-9a-f]{64}\n$/);
    const row = await t.app.deps.db.selectFrom('api_keys').select(['label', 'created_via']).where('id', '=', captured.slice(4, 40)).executeTakeFirstOrThrow();
    expect(row).toEqual({ label: 'from a script', created_via: 'ssh' });
  });

  it('--json gives the HTTP object plus permissions and expires_at; --expires-in sets the expiry', async () => {
    const { key, org } = await verifiedUser();
    const result = await ssh(key, 'create', '--label', 'json-key', '--expires-in', '30d', '--json');
    expect(result.code).toBe(0);
    const body = JSON.parse(result.stdout);
    expect(Object.keys(body).sort()).toEqual(['api_key', 'api_key_id', 'expires_at', 'org_id', 'org_name', 'permissions', 'success']);
    expect(body).toMatchObject({ success: true, org_name: org, permissions: ['clusters:view', 'clusters:create'] });
    expect(body.api_key).toMatch(API_KEY);
    const expiresIn = new Date(body.expires_at).getTime() - Date.now();
    expect(Math.abs(expiresIn - 30 * 86_400_000)).toBeLessThan(60_000);
    expect(result.stderr).toContain(`expires ${body.expires_at}`);
  });

  it('errors: the same validation and 402/404 as HTTP (exit 1); usage mistakes exit 2', async () => {
    const { key, org } = await verifiedUser();
    const short = await ssh(key, 'create', '--label', 'abc');
    expect(short).toMatchObject({ code: 2, stdout: '' });
    expect(short.stderr).toMatch(/^error: --label must be at least 5 characters\nusage: create --label LABEL/);
    expect(await ssh(key, 'create', '--label', 'good-label', '--org', 'no-such-org-here')).toEqual({
      code: 1,
      stdout: '',
      stderr: 'error: no org "no-such-org-here" among yours (see "orgs")\n',
    });

    await setBilling(t.app.deps, org, 'suspended', admin);
    expect(await ssh(key, 'create', '--label', 'good-label')).toEqual({
      code: 1,
      stdout: '',
      stderr: `error: your default org "${org}" is suspended: minting is off until its billing is active\n`,
    });
    await setBilling(t.app.deps, org, 'active', admin);
  });

  it('quotes in exec command lines are parsed by our tokenizer, never a shell', async () => {
    const { key } = await verifiedUser();
    const result = await ssh(key, `create --label 'my key; rm -rf /' --json`);
    expect(result.code).toBe(0);
    const id = JSON.parse(result.stdout).api_key_id;
    const row = await t.app.deps.db.selectFrom('api_keys').select('label').where('id', '=', id).executeTakeFirstOrThrow();
    expect(row.label).toBe('my key; rm -rf /');
    const unterminated = await ssh(key, `create --label "oops`);
    expect(unterminated).toEqual({ code: 2, stdout: '', stderr: 'error: unterminated double quote\n' });
  });
});

describe('list, revoke, orgs, whoami', () => {
  it('owners/admins see every key of the org, members their own; revoke rules; never secrets', async () => {
    const owner = await verifiedUser();
    const member = await verifiedUser();
    await setMember(t.app.deps, owner.org, member.email, 'member', admin);

    const ownerKey = (await ssh(owner.key, 'create', '--label', 'owner-key')).stdout.trim();
    const memberKey = (await ssh(member.key, 'create', '--label', 'member-key', '--org', owner.org)).stdout.trim();

    const ownerList = JSON.parse((await ssh(owner.key, 'list', '--org', owner.org, '--json')).stdout);
    expect(ownerList.map((k: { label: string }) => k.label)).toEqual(['owner-key', 'member-key']);
    expect(ownerList[1]).toMatchObject({ created_by: member.email, org_name: owner.org, revoked: false, last_used_at: null, expires_at: null });
    const memberList = JSON.parse((await ssh(member.key, 'list', '--org', owner.org, '--json')).stdout);
    expect(memberList.map((k: { label: string }) => k.label)).toEqual(['member-key']);

    const table = await ssh(owner.key, 'list');
    expect(table.stdout.split('\n')[0]).toMatch(/^ID\s+LABEL\s+ORG\s+STATE\s+CREATED\s+LAST USED\s+EXPIRES$/);
    expect(table.stdout).not.toContain(ownerKey.slice(36));

    // A member may not revoke someone else's key; the owner may revoke anyone's in the org.
    expect(await ssh(member.key, 'revoke', ownerKey.slice(0, 36))).toEqual({
      code: 1,
      stdout: '',
      stderr: 'error: only its creator or an owner or admin of its org may do that\n',
    });
    expect(await ssh(owner.key, 'revoke', memberKey.slice(0, 36))).toEqual({
      code: 0,
      stdout: `Revoked API key ${memberKey.slice(0, 36)} (member-key) in org ${owner.org}\n`,
      stderr: '',
    });
    expect(await ssh(member.key, 'revoke', memberKey.slice(0, 36))).toEqual({
      code: 1,
      stdout: '',
      stderr: `error: API key "${memberKey.slice(0, 36)}" is already revoked\n`,
    });
    const audit = await t.app.deps.db
      .selectFrom('audit_events')
      .select(['action', 'channel'])
      .where('subject_id', '=', memberKey.slice(0, 36))
      .orderBy('created_at', 'asc')
      .execute();
    expect(audit).toEqual([
      { action: 'api_key.created', channel: 'ssh' },
      { action: 'api_key.revoked', channel: 'ssh' },
    ]);
    expect((await t.request('/api/whoami', { headers: { authorization: `Bearer ${memberKey}` } })).status).toBe(401);

    const orgs = JSON.parse((await ssh(member.key, 'orgs', '--json')).stdout);
    expect(orgs.map((o: { name: string; role: string }) => [o.name, o.role])).toEqual([
      [member.org, 'admin'],
      [owner.org, 'member'],
    ]);
    const whoami = await ssh(member.key, 'whoami');
    expect(whoami.stdout).toBe(
      `email:    ${member.email}\nuser id:  ${orgs.length ? (await t.app.deps.db.selectFrom('users').select('id').where('email', '=', member.email).executeTakeFirstOrThrow()).id : ''}\nkey:      ${member.key.fingerprint} (ssh-ed25519)\nverified: yes\n`,
    );
  });

  it('COMMAND --help prints usage and exits 0', async () => {
    const { key } = await verifiedUser();
    const result = await ssh(key, 'create', '--help');
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^usage: create --label LABEL \[--org ORG\] \[--perm NAME\]\.\.\. \[--expires-in DURATION\] \[--json\]\n/);
  });
});

describe('login: the whole verification over SSH', () => {
  it('sends the same email, shows that it waits, finishes when the link is confirmed; the HTTP window stays shut', async () => {
    const email = uniqueEmail('sshlogin');
    const key = makeKey();
    let sawWaiting = false;
    const login = openssh(port, key.privateKeyPath, ['login', email], {
      onStderr: (chunk) => {
        if (chunk.includes('Waiting for confirmation')) sawWaiting = true;
      },
    });
    await t.confirmMailTo(email);
    const result = await login;
    expect(sawWaiting).toBe(true);
    expect(result.code).toBe(0);
    expect(result.stderr).toBe(
      `Key ${key.fingerprint} (ssh-ed25519)\n` +
        `Creating a new account. A confirmation link is on its way to ${email}: check your inbox and press Confirm.\n` +
        'Waiting for confirmation (the link expires in 10 minutes; Ctrl-C stops the wait, not the link)...\n' +
        `Confirmed: this key is now linked to ${email}.\n`,
    );
    expect(result.stdout).toMatch(new RegExp(`^NAME\\s+ROLE\\s+ID\\s+POLICY\\n${email.split('@')[0]}\\s+admin\\s+[0-9a-f-]{36}\\s+default\\n$`));

    // Possession was proven; an SSH login does not open the HTTP window (only an HTTP confirmation does).
    const row = await t.app.deps.db.selectFrom('ssh_keys').select('proven_at').where('key_blob', '=', key.publicKey.split(' ')[1]!).executeTakeFirstOrThrow();
    expect(row.proven_at).not.toBeNull();
    expect((await t.post('/api/shell-auth/verify-key', { email, ssh_public_key: key.publicKey })).status).toBe(401);
    expect((await ssh(key, 'create', '--label', 'after-login')).code).toBe(0);

    // Again: already linked, no email.
    const mails = await t.mailsQueuedTo(email);
    expect(mails).toBeGreaterThan(0);
    const again = await ssh(key, 'login', email);
    expect(again.code).toBe(0);
    expect(again.stderr).toBe(`This key (${key.fingerprint}) is already linked to ${email}.\n`);
    expect(await t.mailsQueuedTo(email)).toBe(mails);
  });

  it('the same 403/409 rules as HTTP', async () => {
    const key = makeKey();
    expect(await ssh(key, 'login', uniqueEmail('n').replace('@', '+x@'))).toEqual({ code: 1, stdout: '', stderr: 'error: this +alias has no base account yet: log in with the address without the +part first\n' });
    const holder = await verifiedUser();
    // holder.key was linked over HTTP (unproven) but to holder: a login by the same key as someone else takes over only after confirmation,
    // whereas a key proven over SSH is final:
    const proven = makeKey();
    const provenEmail = uniqueEmail('proven');
    const first = openssh(port, proven.privateKeyPath, ['login', provenEmail]);
    await t.confirmMailTo(provenEmail);
    expect((await first).code).toBe(0);
    expect(await ssh(proven, 'login', holder.email)).toEqual({
      code: 1,
      stdout: '',
      stderr: `error: this key is already linked to you, as ${provenEmail}. A key belongs to one account: to use ${holder.email}, log in from another key pair.\n`,
    });
    const bad = await ssh(key, 'login', 'not-an-email');
    expect(bad).toEqual({ code: 2, stdout: '', stderr: 'error: "not-an-email" is not an email address\nusage: login EMAIL\n' });
  });
});

const HAVE_TMUX = spawnSync('tmux', ['-V']).status === 0;
if (!HAVE_TMUX) console.warn('ssh-door.test.ts: SKIPPING the terminal tests: no tmux (.ci/run installs it: apt-get install tmux)');

describe.runIf(HAVE_TMUX)(`interactive shell in a real terminal (OpenSSH in tmux)${HAVE_TMUX ? '' : ' [SKIPPED: tmux not installed]'}`, () => {
  afterAll(closeAllTerminals);
  const sshIn = (key: TestKey) =>
    openTerminal([
      'ssh', '-tt', '-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no',
      '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-p', String(port), '-i', key.privateKeyPath, 'keys@127.0.0.1',
    ]);
  const lastPrompt = (screen: string) => screen.trimEnd().split('\n').at(-1) ?? '';

  it('edits like readline: cursor keys, Home/End, Ctrl-A/E/K/U/W, history, Tab, Ctrl-L; unknown commands in one line', async () => {
    const { key, email } = await verifiedUser();
    const term = sshIn(key);
    try {
      await term.until((s) => s.includes(`Hi ${email}!`) && lastPrompt(s) === 'keys>', 'the greeting and prompt');
      // Insert in the middle: "whami", three left, "o".
      term.type('whami');
      term.press('Left', 'Left', 'Left');
      term.type('o');
      await term.cursorAt('keys> whoami', 9);
      term.press('End');
      await term.cursorAt('keys> whoami', 12);
      term.press('Home');
      await term.cursorAt('keys> whoami', 6);
      term.press('Enter');
      await term.until((s) => s.includes(`email:    ${email}`), 'whoami output');

      // History: Up brings it back; Ctrl-U empties the line; Ctrl-W drops a word; Ctrl-A/E, Ctrl-K.
      term.press('Up');
      await term.until((s) => lastPrompt(s) === 'keys> whoami', 'the last line from history');
      term.press('C-u');
      await term.until((s) => lastPrompt(s) === 'keys>', 'an empty line');
      term.type('list --json extra');
      term.press('C-w');
      await term.until((s) => lastPrompt(s) === 'keys> list --json', 'the last word gone');
      term.press('C-a', 'Right', 'Right', 'C-k');
      await term.until((s) => lastPrompt(s) === 'keys> li', 'the rest killed');
      term.press('C-u');

      // Tab: a command name, then its flag.
      term.type('cre');
      term.press('Tab');
      await term.until((s) => lastPrompt(s) === 'keys> create', 'the command completed');
      term.type('--la');
      term.press('Tab');
      await term.until((s) => lastPrompt(s) === 'keys> create --label', 'the flag completed');
      term.type('terminal-key');
      term.press('Enter');
      await term.until((s) => /^[0-9a-f-]{36}[0-9a-f]{64}$/m.test(s), 'the new key');

      term.type('bogus');
      term.press('Enter');
      await term.until((s) => s.includes('error: unknown command "bogus": type "help" for the list'), 'one line for an unknown command');
      expect(term.screen()).not.toContain('Commands:');

      term.press('C-l');
      await term.until((s) => s.split('\n')[0] === 'keys> ' || s.split('\n')[0] === 'keys>', 'a cleared screen');
      term.type('exit');
      term.press('Enter');
      // The session ended (its exit status is 0 when tmux reports one; the exec tests check statuses).
      expect([0, null]).toContain(await term.exited());
    } finally {
      term.close();
    }
  });

  it('text typed while a command runs is kept and shown again at the next prompt', async () => {
    const key = makeKey();
    const term = sshIn(key);
    try {
      await term.until((s) => lastPrompt(s) === 'keys>', 'the prompt');
      term.type(`login ${uniqueEmail('typeahead')}`);
      term.press('Enter');
      await term.until((s) => s.includes('Waiting for confirmation'), 'login waiting');
      term.type('whoami');
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(term.screen()).not.toContain('keys> whoami'); // kept, not echoed into login's output
      term.press('C-c');
      await term.until((s) => lastPrompt(s) === 'keys> whoami', 'the typed line redrawn at the prompt');
      term.press('Enter');
      await term.until((s) => s.includes('verified: no'), 'it runs');
    } finally {
      term.close();
    }
  });
});

describe('robustness', () => {
  it('refuses port forwarding, sftp and env; the connection keeps working', async () => {
    const { key } = await verifiedUser();
    const client = await connectClient(port, key.privateKeyPath);
    const forward = await new Promise<Error | undefined>((resolve) => client.forwardOut('127.0.0.1', 1, '127.0.0.1', 22, (err) => resolve(err)));
    expect(forward?.message).toMatch(/Channel open failure/);
    const sftp = await new Promise<Error | undefined>((resolve) => client.sftp((err) => resolve(err)));
    expect(sftp).toBeInstanceOf(Error);
    const listen = await new Promise<Error | undefined>((resolve) => client.forwardIn('127.0.0.1', 0, (err) => resolve(err)));
    expect(listen).toBeInstanceOf(Error);
    const out = await execOn(client, 'whoami --json');
    expect(JSON.parse(out).verified).toBe(true);
    client.end();
  });

  it('an authenticated connection with no session open is closed after the idle timeout', async () => {
    const { createSshServer } = await import('../../src/ssh/server.js');
    const { loadOrCreateHostKey } = await import('../../src/ssh/host-key.js');
    const { key } = await verifiedUser();
    const hostKey = loadOrCreateHostKey(fs.mkdtempSync('/tmp/shell-auth-idle-'));
    const limits = { ...loadConfig({}).ssh, idleTimeoutMs: 400 };
    const server = createSshServer(t.app.deps, { hostKey, sshUser: 'keys', sshHint: () => 'ssh keys@x', log: t.app.deps.log, limits });
    const address = await server.listen(0, '127.0.0.1');
    try {
      const client = await connectClient(address.port, key.privateKeyPath);
      expect(JSON.parse(await execOn(client, 'whoami --json')).verified).toBe(true);
      const started = Date.now();
      await new Promise<void>((resolve) => client.on('close', () => resolve()));
      expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    } finally {
      await server.close();
    }
  });

  it('a client that connects and never speaks is dropped after the login grace time', async () => {
    const { createSshServer } = await import('../../src/ssh/server.js');
    const { loadOrCreateHostKey } = await import('../../src/ssh/host-key.js');
    const hostKey = loadOrCreateHostKey(fs.mkdtempSync('/tmp/shell-auth-grace-'));
    const limits = { ...loadConfig({}).ssh, loginGraceMs: 300 };
    const server = createSshServer(t.app.deps, { hostKey, sshUser: 'keys', sshHint: () => 'ssh keys@x', log: t.app.deps.log, limits });
    const address = await server.listen(0, '127.0.0.1');
    try {
      let started = 0;
      let received = '';
      let error: Error | null = null;
      await new Promise<void>((resolve) => {
        const socket = net.connect(address.port, '127.0.0.1', () => (started = Date.now()));
        // Read the server's banner, then say nothing.
        socket.on('data', (d) => (received += d));
        socket.on('error', (err) => (error = err));
        socket.on('close', () => resolve());
      });
      const elapsed = Date.now() - started;
      // Timed from the connection, not from the connect call; a connect error is reported as such.
      expect(error).toBeNull();
      expect(received).toMatch(/^SSH-2\.0-shell-auth\r\n/);
      expect(elapsed).toBeGreaterThanOrEqual(250);
      expect(elapsed).toBeLessThan(3000);
    } finally {
      await server.close();
    }
  });
});

describe('a key linked over HTTP: one story on every surface', () => {
  it('the page says what is left to do, SSH says the same, and login finishes it without an email', async () => {
    const email = uniqueEmail('httpfirst');
    const key = makeKey();
    expect((await t.post('/api/shell-auth', { email, ssh_public_key: key.publicKey })).status).toBe(200);
    const mail = await t.smtp.waitForMail(email);
    const page = await t.request('/shell-auth/verify', confirmForm(tokenOf(mail.link!)));
    expect(page.text).toContain('To use this key on the SSH door too, prove you hold it once:');
    expect(page.text).toContain(`<code>${hint} login ${email}</code> (no email is sent)`);

    const whoami = await ssh(key, 'whoami');
    expect(whoami).toEqual({ code: 0, stdout: `key:      ${key.fingerprint} (ssh-ed25519)\nverified: no\n`, stderr: HTTP_LINKED(key) });
    expect(await ssh(key, 'list')).toEqual({ code: 1, stdout: '', stderr: HTTP_LINKED(key) });

    const mailsBefore = await t.mailsQueuedTo(email);
    const login = await ssh(key, 'login', email);
    expect(login.code).toBe(0);
    expect(login.stderr).toBe(
      `Your signature proves this key (${key.fingerprint}): it is now linked to ${email} here too, as it was over HTTP. No email was needed.\n`,
    );
    expect(await t.mailsQueuedTo(email)).toBe(mailsBefore);
    expect((await ssh(key, 'whoami')).stdout).toContain('verified: yes');

    // Confirmed from SSH, the page has nothing more to ask.
    const sshFirst = uniqueEmail('sshfirst');
    const other = makeKey();
    const waiting = openssh(port, other.privateKeyPath, ['login', sshFirst]);
    const sshMail = await t.smtp.waitForMail(sshFirst);
    const sshPage = await t.request('/shell-auth/verify', confirmForm(tokenOf(sshMail.link!)));
    expect(sshPage.text).not.toContain('prove you hold it');
    expect((await waiting).code).toBe(0);
  });
});

/** An interactive shell over ssh2 (no pty); `printed.text` collects stdout and stderr (reset it at will). */
async function shellOn(client: Awaited<ReturnType<typeof connectClient>>) {
  const channel = await new Promise<ClientChannel>((resolve, reject) => client.shell(false, (err, ch) => (err ? reject(err) : resolve(ch))));
  const printed = { text: '' };
  channel.on('data', (d: Buffer) => (printed.text += d));
  channel.stderr.on('data', (d: Buffer) => (printed.text += d));
  return { channel, printed };
}

describe('the shell after an interrupted login', () => {
  it('a link clicked after Ctrl-C stopped the wait counts at the next command', async () => {
    const key = makeKey();
    const email = uniqueEmail('interrupted');
    const client = await connectClient(port, key.privateKeyPath);
    try {
      const { channel, printed } = await shellOn(client);
      const until = async (text: string) => {
        for (let i = 0; i < 400 && !printed.text.includes(text); i++) await new Promise((resolve) => setTimeout(resolve, 25));
        expect(printed.text).toContain(text);
      };
      await until('keys> ');
      channel.write(`login ${email}\n`);
      await until('Waiting for confirmation');
      channel.write('\x03'); // Ctrl-C: stop waiting, keep the session (the prompt comes back)
      for (let i = 0; i < 400 && printed.text.split('keys> ').length < 3; i++) await new Promise((resolve) => setTimeout(resolve, 25));
      expect(printed.text.split('keys> ')).toHaveLength(3);
      const mail = await t.smtp.waitForMail(email);
      expect((await t.request('/shell-auth/verify', confirmForm(tokenOf(mail.link!)))).status).toBe(200);
      printed.text = '';
      channel.write('whoami\n');
      await until('verified: yes');
      expect(printed.text).toContain(`email:    ${email}`);
      channel.end();
    } finally {
      client.end();
    }
  });
});

describe('a long shell session', () => {
  it('each command acts as the account is now: billing suspended mid-session refuses the next create, and reactivated it mints', async () => {
    const { key, org } = await verifiedUser();
    const client = await connectClient(port, key.privateKeyPath);
    try {
      const { channel, printed } = await shellOn(client);
      const prompts = async (n: number) => {
        for (let i = 0; i < 400 && printed.text.split('keys> ').length <= n; i++) await new Promise((resolve) => setTimeout(resolve, 25));
        expect(printed.text.split('keys> ').length).toBeGreaterThan(n);
      };
      const keyInText = new RegExp(API_KEY.source.replace(/^\^|\$$/g, ''));
      await prompts(1);
      channel.write('create --label before-suspension\n');
      await prompts(2);
      expect(printed.text).toMatch(keyInText);
      const origin = { channel: 'admin' as const, ip: null };
      await setBilling(t.app.deps, org, 'suspended', origin);
      printed.text = '';
      channel.write('create --label while-suspended\n');
      await prompts(1);
      expect(printed.text).toContain('is suspended: minting is off until its billing is active');
      expect(printed.text).not.toMatch(keyInText);
      await setBilling(t.app.deps, org, 'active', origin);
      printed.text = '';
      channel.write('create --label reactivated\n');
      await prompts(1);
      expect(printed.text).toMatch(keyInText);
      channel.end();
    } finally {
      client.end();
    }
  });
});

describe('review findings', () => {
  it('a key bound to someone else over HTTP (no proof of possession) is not an SSH identity; its holder takes it back', async () => {
    const victimKey = makeKey();
    const mallory = uniqueEmail('mallory');
    await t.verifyByEmail(mallory, victimKey.publicKey); // Mallory only needed the public key
    const whoami = await ssh(victimKey, 'whoami', '--json');
    expect(JSON.parse(whoami.stdout)).toMatchObject({ email: null, verified: false });
    expect(await ssh(victimKey, 'create', '--label', 'victim-ci')).toEqual({ code: 1, stdout: '', stderr: HTTP_LINKED(victimKey) });

    const victim = uniqueEmail('victim');
    const login = openssh(port, victimKey.privateKeyPath, ['login', victim]);
    await t.confirmMailTo(victim);
    expect((await login).code).toBe(0);
    expect(JSON.parse((await ssh(victimKey, 'whoami', '--json')).stdout)).toMatchObject({ email: victim, verified: true });
  });

  it('SHA-1 "ssh-rsa" signatures are refused; rsa-sha2 works', async () => {
    const { key } = await verifiedUser('rsa');
    const sha1 = await openssh(port, key.privateKeyPath, ['whoami'], { extra: ['-o', 'PubkeyAcceptedAlgorithms=ssh-rsa'] });
    expect(sha1.code).toBe(255);
    expect(sha1.stderr).toContain('Permission denied (publickey)');
    expect((await openssh(port, key.privateKeyPath, ['whoami'], { extra: ['-o', 'PubkeyAcceptedAlgorithms=rsa-sha2-256'] })).code).toBe(0);
  });

  it('a shell without a pty reads piped lines, runs them in order, and leaves at end of input', async () => {
    const { key, email } = await verifiedUser();
    const result = await openssh(port, key.privateKeyPath, ['-T'].slice(0, 0), { extra: ['-T'], input: 'whoami\norgs --json\nbogus\n' });
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`email:    ${email}`);
    expect(result.stdout).toContain('"role": "admin"');
    expect(result.stdout).not.toContain('\r\n');
    expect(result.stderr).toContain('error: unknown command "bogus": type "help" for the list\n');
  });

  it('closing the channel of a running login (connection kept open) stops its wait', async () => {
    const key = makeKey();
    const email = uniqueEmail('closer');
    const client = await connectClient(port, key.privateKeyPath);
    const closed = new Promise<void>((resolve, reject) =>
      client.exec(`login ${email}`, (err, channel) => {
        if (err) return reject(err);
        channel.resume();
        channel.stderr.on('data', (d: Buffer) => {
          if (String(d).includes('Waiting for confirmation')) channel.close();
        });
        channel.on('close', () => resolve());
      }),
    );
    await closed;
    // The server noticed and stopped polling for the confirmation.
    for (let i = 0; i < 40 && !t.logs.some((l) => l.includes('the client stopped waiting')); i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(t.logs.some((l) => l.includes('the client stopped waiting'))).toBe(true);
    // The connection is still usable.
    const out = await execOn(client, 'whoami --json');
    expect(JSON.parse(out).verified).toBe(false);
    client.end();
  });

  // One usage mistake over a real channel (exit status and stderr through OpenSSH); the rest are
  // in-process, in test/command/usage-errors.test.ts.
  it('usage mistakes exit 2, with the reason and the usage on stderr and nothing on stdout', async () => {
    const { key } = await verifiedUser();
    const result = await ssh(key, 'create');
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(/^error: --label is required\nusage: create --label LABEL/);
  });
});
