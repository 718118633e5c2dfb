import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { confirmForm, tokenOf } from '../support/app.js';
import { killSpawnedServices, listeningOf, spawnService } from '../support/service.js';
import { startSmtpServer, type SmtpServer } from '../support/smtp.js';

// The README's shell blocks, run as written with real bash, curl, jq and OpenSSH against the
// real service. Only the addresses are rewritten (the README's 127.0.0.1:8080, 2222 and
// auth.example.com become the test server's), and `ssh` gets a config that trusts the test's
// host key; a helper plays the person who clicks the emailed link.

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');

/** The fenced `sh` blocks under the heading `## title` (up to the next `## `). */
function shBlocksUnder(title: string): string[] {
  const start = README.indexOf(`\n## ${title}\n`);
  if (start < 0) throw new Error(`README has no "## ${title}" section`);
  const end = README.indexOf('\n## ', start + 1);
  const section = README.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

let smtp: SmtpServer;
let work: string;
let httpUrl: string;
let sshPort: number;
let clicking = true;

beforeAll(async () => {
  smtp = await startSmtpServer();
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-readme-'));
  const service = spawnService({
    SMTP_URL: smtp.url,
    DATA_DIR: path.join(work, 'data'),
    HOST_KEYS_DIR: path.join(work, 'host_keys'),
    // No DATABASE_URL: the README's examples run against `npm start` on its embedded database.
  });
  ({ httpUrl, sshPort } = await listeningOf(service));

  // The person at the inbox: every link that arrives is opened and confirmed.
  void (async () => {
    const seen = new Set<unknown>();
    while (clicking) {
      for (const mail of smtp.messages) {
        if (seen.has(mail) || !mail.link) continue;
        seen.add(mail);
        const token = tokenOf(mail.link);
        await fetch(`${httpUrl}/shell-auth/verify?token=${token}`);
        await fetch(`${httpUrl}/shell-auth/verify`, confirmForm(token));
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
}, 60_000);

afterAll(async () => {
  clicking = false;
  killSpawnedServices();
  await smtp?.close();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

type Home = { home: string; bin: string };

/** A user's home: their key pair where the README expects it, and an `ssh` that knows this host. */
function newHome(name: string): Home {
  const home = path.join(work, name);
  fs.mkdirSync(path.join(home, '.ssh'), { recursive: true, mode: 0o700 });
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${name}@laptop`, '-f', path.join(home, '.ssh', 'id_ed25519')]);
  const bin = path.join(home, 'bin');
  fs.mkdirSync(bin);
  const config = path.join(home, 'ssh_config');
  fs.writeFileSync(
    config,
    [
      `IdentityFile ${path.join(home, '.ssh', 'id_ed25519')}`,
      'IdentitiesOnly yes',
      'BatchMode yes',
      'StrictHostKeyChecking no',
      'UserKnownHostsFile /dev/null',
      'LogLevel ERROR',
    ].join('\n'),
  );
  const realSsh = execFileSync('sh', ['-c', 'command -v ssh']).toString().trim();
  fs.writeFileSync(path.join(bin, 'ssh'), `#!/bin/sh\nexec ${realSsh} -F ${config} "$@"\n`, { mode: 0o755 });
  return { home, bin };
}

/** Runs a README block with bash as the user would, with only the server's address rewritten. */
function runAsWritten({ home, bin }: Home, block: string, env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const script = block
    .replaceAll('http://127.0.0.1:8080', httpUrl)
    .replaceAll('-p 2222 keys@auth.example.com', `-p ${sshPort} keys@127.0.0.1`);
  return new Promise((resolve) => {
    const child = spawn('bash', ['-c', script], {
      env: { PATH: `${bin}:${process.env.PATH}`, HOME: home, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const API_KEY = /^[0-9a-f-]{36}[0-9a-f]{64}$/m;

describe('README, run as written', () => {
  it('the flow with curl: initiate, wait for the click, look up, mint, whoami', async () => {
    const [block] = shBlocksUnder('The flow with curl');
    expect(block).toContain('until VERIFIED=$(curl -sf');
    const mailsBefore = smtp.messages.length;
    curlUser = newHome('curl-user');
    const run = await runAsWritten(curlUser, block!);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    // Each step's output, in order: the initiate answer, the orgs (printed only once the link
    // was clicked), the lookup's matches, the key, and whoami.
    const docs: unknown[] = [];
    let rest = run.stdout;
    const key = API_KEY.exec(rest)?.[0];
    expect(key).toBeDefined();
    rest = rest.replace(`${key}\n`, '');
    for (const chunk of rest.split(/\n(?=[[{])/)) docs.push(JSON.parse(chunk));
    expect(docs).toEqual([
      expect.objectContaining({ success: true, email: 'alice@example.com', already_verified: false }),
      [expect.objectContaining({ name: 'alice', role: 'admin' })],
      [expect.objectContaining({ email: 'alice@example.com' })],
      expect.objectContaining({ label: 'my-laptop', org_name: 'alice', api_key_id: key!.slice(0, 36) }),
    ]);
    expect(smtp.messages.length).toBe(mailsBefore + 1);
  });

  let curlUser: Home;
  it('signed requests: the recipe mints with no email, from the key file and through ssh-agent', async () => {
    const [block] = shBlocksUnder('Signed requests: proof of possession over HTTP');
    expect(block).toContain('ssh-keygen -Y sign');
    const mailsBefore = smtp.messages.length;
    const fromFile = await runAsWritten(curlUser, block!);
    const quiet = (stderr: string) => stderr.replace(/^Signing data on standard input\n/gm, ''); // ssh-keygen's own note
    expect(quiet(fromFile.stderr)).toBe('');
    expect(fromFile.stdout.trim()).toMatch(API_KEY);

    // The agent variant, as the comment says: the private key is moved away, only the agent has it.
    const agentSocket = path.join(curlUser.home, 'agent.sock');
    const agent = spawn('ssh-agent', ['-D', '-a', agentSocket], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 100 && !fs.existsSync(agentSocket); i++) await new Promise((resolve) => setTimeout(resolve, 20));
      const privateKey = path.join(curlUser.home, '.ssh', 'id_ed25519');
      execFileSync('ssh-add', ['-q', privateKey], { env: { ...process.env, SSH_AUTH_SOCK: agentSocket }, stdio: 'ignore' });
      fs.renameSync(privateKey, `${privateKey}.away`);
      const viaAgent = await runAsWritten(curlUser, block!.replace('SIGN_WITH=~/.ssh/id_ed25519 ', 'SIGN_WITH=~/.ssh/id_ed25519.pub '), {
        SSH_AUTH_SOCK: agentSocket,
      });
      expect(quiet(viaAgent.stderr)).toBe('');
      expect(viaAgent.stdout.trim()).toMatch(API_KEY);
      fs.renameSync(`${privateKey}.away`, privateKey);
    } finally {
      agent.kill('SIGKILL');
    }
    expect(smtp.messages.length).toBe(mailsBefore); // no email either time
  });

  let sshUser: Home;
  it('the SSH door: login (the link is clicked), then create prints a key', async () => {
    const [block] = shBlocksUnder('The SSH door');
    expect(block).toContain('login alice@example.com');
    sshUser = newHome('ssh-user');
    const run = await runAsWritten(sshUser, block!);
    expect(run.stderr).toContain('Confirmed: this key is now linked to alice@example.com.');
    expect(run.stdout).toMatch(API_KEY);
    expect(run.code).toBe(0);
  });

  it('scripting: a key in a variable, --json piped to jq, the list filtered, quoted labels', async () => {
    const block = shBlocksUnder('The SSH door').find((b) => b.includes('KEY=$('));
    expect(block).toBeDefined();
    const run = await runAsWritten(sshUser, `${block!}\necho "KEY=$KEY"`);
    expect(run.stderr).not.toMatch(/error|usage/i);
    expect(run.code).toBe(0);
    const lines = run.stdout.trim().split('\n');
    // the --json key; the list's ids (every key of the org so far: curl's, login's create, the two here); the quoted label's key; $KEY
    expect(lines[0]).toMatch(API_KEY);
    expect(lines.filter((l) => /^"[0-9a-f-]{36}"$/.test(l)).length).toBeGreaterThanOrEqual(4);
    expect(lines.at(-2)).toMatch(API_KEY);
    expect(lines.at(-1)).toMatch(/^KEY=[0-9a-f-]{36}[0-9a-f]{64}$/);
  });
});

describe('README, Key lifecycle: least privilege, short lifetimes, rotation', () => {
  /** The fenced `sh` blocks under the heading `### title` (up to the next heading). */
  function shBlocksUnderSubsection(title: string): string[] {
    const start = README.indexOf(`\n### ${title}\n`);
    if (start < 0) throw new Error(`README has no "### ${title}" subsection`);
    const next = README.slice(start + 1).search(/\n#{2,3} /);
    const section = README.slice(start, next < 0 ? undefined : start + 1 + next);
    return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
  }

  it('--perm and --expires-in 15m; rotate by id, at once, and by the key\'s holder over HTTP', async () => {
    const home = newHome('rotator');
    const login = await runAsWritten(home, 'ssh -p 2222 keys@auth.example.com login rotator@example.com');
    expect(login.code, login.stderr).toBe(0);

    const [leastPrivilege] = shBlocksUnderSubsection('Least privilege and short lifetimes');
    expect(leastPrivilege).toContain('--perm clusters:view');
    const started = Date.now();
    const limited = await runAsWritten(home, leastPrivilege!);
    expect(limited.stderr).not.toMatch(/error|usage/i);
    expect(limited.code).toBe(0);
    const [permissions, deploy] = limited.stdout.trim().split('\n');
    expect(JSON.parse(permissions!)).toEqual(['clusters:view']);
    const oneOff = JSON.parse(deploy!);
    expect(oneOff.permissions).toEqual(['clusters:view', 'clusters:create']);
    expect(new Date(oneOff.expires_at).getTime() - started).toBeGreaterThanOrEqual(15 * 60_000 - 1_000);
    expect(new Date(oneOff.expires_at).getTime() - Date.now()).toBeLessThanOrEqual(15 * 60_000);

    const [rotation] = shBlocksUnderSubsection('Rotation');
    expect(rotation).toContain('/api/api-keys/rotate');
    const run = await runAsWritten(home, `${rotation!}\necho "NEW_KEY=$NEW_KEY"\necho "API_KEY=$API_KEY"`);
    expect(run.stderr).not.toMatch(/error|usage/i);
    expect(run.code).toBe(0);
    const lines = run.stdout.trim().split('\n');
    const newKey = lines.find((l) => l.startsWith('NEW_KEY='))!.slice('NEW_KEY='.length);
    const agentKey = lines.find((l) => l.startsWith('API_KEY='))!.slice('API_KEY='.length);
    expect(newKey).toMatch(API_KEY);
    // The leaked key rotated at once: its id, stopped now.
    const atOnce = JSON.parse(lines[0]!);
    expect(atOnce.replaces).toBe(newKey.slice(0, 36));
    expect(new Date(atOnce.old_key_expires_at).getTime()).toBeLessThanOrEqual(Date.now());
    // The holder's rotation printed its new key.
    const renewed = lines[1]!;
    expect(renewed).toMatch(API_KEY);
    const whoami = (key: string) => fetch(`${httpUrl}/api/whoami`, { headers: { authorization: `Bearer ${key}` } }).then((r) => r.status);
    expect(await whoami(newKey)).toBe(401);
    expect(await whoami(agentKey)).toBe(200); // its 15 minutes of overlap
    expect(await whoami(renewed)).toBe(200);
    expect(run.stderr).toContain(`It replaces API key ${newKey.slice(0, 36)}, which has stopped working.`);
  });
});

describe('README, Key lifecycle: leaked keys', () => {
  /** The fenced `sh` blocks under `### Leaked keys` (up to the next heading). */
  function leakedKeysBlocks(): string[] {
    const start = README.indexOf('\n### Leaked keys\n');
    if (start < 0) throw new Error('README has no "### Leaked keys" subsection');
    const next = README.slice(start + 1).search(/\n#{2,3} /);
    const section = README.slice(start, next < 0 ? undefined : start + 1 + next);
    return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
  }

  it('the holder revokes a key with nothing but the key; the offline check picks our keys out of a log', async () => {
    const home = newHome('leaker');
    const login = await runAsWritten(home, 'ssh -p 2222 keys@auth.example.com login leaker@example.com');
    expect(login.code, login.stderr).toBe(0);
    const [holder, scanner] = leakedKeysBlocks();
    expect(holder).toContain('/api/api-keys/revoke');

    const revoked = await runAsWritten(home, `${holder!}\necho "API_KEY=$API_KEY"`);
    expect(revoked.stderr).not.toMatch(/error|usage/i); // create's notice goes to stderr
    expect(revoked.code).toBe(0);
    const [answer, secondTry, keyLine] = revoked.stdout.trim().split('\n');
    const apiKey = keyLine!.slice('API_KEY='.length);
    expect(apiKey).toMatch(API_KEY);
    expect(JSON.parse(answer!)).toEqual({ success: true, revoked: true, api_key_id: apiKey.slice(0, 36) });
    expect(secondTry).toBe('Invalid API key');
    expect((await fetch(`${httpUrl}/api/whoami`, { headers: { authorization: `Bearer ${apiKey}` } })).status).toBe(401);

    // A CI log with the key, a look-alike whose checksum fails, and noise.
    const lookAlike = `${apiKey.slice(0, 92)}${apiKey.endsWith('00000000') ? '11111111' : '00000000'}`;
    fs.mkdirSync(path.join(home.home, 'ci-logs'));
    fs.writeFileSync(path.join(home.home, 'ci-logs', 'build.log'), `step 1\nexport API_KEY=${apiKey}\nid ${lookAlike} done\n${'f'.repeat(120)}\n`);
    const found = await runAsWritten(home, scanner!);
    expect(found.stderr).toBe('');
    expect(found.stdout).toBe(`${apiKey}\n`);
  });
});

describe('README, Key lifecycle: expiry notices', () => {
  /** The fenced `sh` blocks under `### Expiry notices` (up to the next heading). */
  function expiryNoticeBlocks(): string[] {
    const start = README.indexOf('\n### Expiry notices\n');
    if (start < 0) throw new Error('README has no "### Expiry notices" subsection');
    const next = README.slice(start + 1).search(/\n#{2,3} /);
    const section = README.slice(start, next < 0 ? undefined : start + 1 + next);
    return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
  }

  it('a key expiring within 7 days is marked: expiring_soon in --json, STATE expiring in the table', async () => {
    const home = newHome('reporter');
    const login = await runAsWritten(home, 'ssh -p 2222 keys@auth.example.com login reports@example.com');
    expect(login.code, login.stderr).toBe(0);
    // A key far from its expiry, which must not be listed.
    const far = await runAsWritten(home, 'ssh -p 2222 keys@auth.example.com create --label monthly-report --expires-in 30d');
    expect(far.code, far.stderr).toBe(0);
    const [block] = expiryNoticeBlocks();
    expect(block).toContain('select(.expiring_soon)');
    const run = await runAsWritten(home, block!);
    expect(run.stderr).not.toMatch(/error|usage/i); // create's notice goes to stderr
    expect(run.code).toBe(0);
    const [jsonLine, tableLine, ...rest] = run.stdout.trim().split('\n');
    expect(rest).toEqual([]);
    const [label, expiresAt] = jsonLine!.split(' ');
    expect(label).toBe('weekly-report');
    expect(new Date(expiresAt!).getTime() - Date.now()).toBeGreaterThan(3 * 86_400_000 - 60_000);
    expect(tableLine!.split(/ {2,}/).slice(1, 4)).toEqual(['weekly-report', 'reports', 'expiring']);
  });
});

describe('README, Key lifecycle: audit', () => {
  /** The fenced `sh` blocks under `### Audit` (up to the next heading). */
  function auditBlocks(): string[] {
    const start = README.indexOf('\n### Audit\n');
    if (start < 0) throw new Error('README has no "### Audit" subsection');
    const next = README.slice(start + 1).search(/\n#{2,3} /);
    const section = README.slice(start, next < 0 ? undefined : start + 1 + next);
    return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
  }

  it('the table of this week, and the last day\'s revocations through jq: by the account, and by a holder', async () => {
    const home = newHome('auditor');
    const ssh = (line: string) => runAsWritten(home, `ssh -p 2222 keys@auth.example.com ${line}`);
    expect((await ssh('login auditor@example.com')).code).toBe(0);
    const id = async (label: string) => JSON.parse((await ssh(`create --label ${label} --json`)).stdout) as { api_key: string; api_key_id: string };
    const revokedHere = await id('revoked-by-me');
    expect((await ssh(`revoke ${revokedHere.api_key_id}`)).code).toBe(0);
    const leaked = await id('revoked-by-holder');
    const byHolder = await fetch(`${httpUrl}/api/api-keys/revoke`, { method: 'POST', headers: { authorization: `Bearer ${leaked.api_key}` } });
    expect(byHolder.status).toBe(200);

    const [block] = auditBlocks();
    expect(block).toContain('audit --since 1d --json');
    const run = await runAsWritten(home, block!);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const lines = run.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^TIME +ACTOR +ACTION +KEY +LABEL +DOOR +ADDRESS +PROOF +REASON$/);
    const table = lines.slice(0, lines.findIndex((l) => l.startsWith(revokedHere.api_key_id.slice(0, 36)) || l.startsWith(leaked.api_key_id)));
    for (const line of table) expect(line.length).toBeLessThanOrEqual(100);
    expect(table.find((l) => l.includes(` ${leaked.api_key_id.slice(0, 8)} `) && l.includes('api_key.revoked'))).toMatch(/^\d+s ago +holder +api_key\.revoked .* http +127\.0\.0\.1 +- +holder$/);
    expect(table.some((l) => l.includes(' api_key.created ') && l.includes(` ${revokedHere.api_key_id.slice(0, 8)} `)), run.stdout).toBe(true);
    // The jq lines, newest first: the holder's revocation, then the account's own.
    expect(lines.slice(table.length)).toEqual([`${leaked.api_key_id} holder holder 127.0.0.1`, `${revokedHere.api_key_id} - auditor@example.com 127.0.0.1`]);
  });
});

describe('README, Org policy', () => {
  it('any member reads the policy; an admin narrows it; a key made then gets the narrowing, one asking for more is refused', async () => {
    const home = newHome('policy');
    const login = await runAsWritten(home, 'ssh -p 2222 keys@auth.example.com login policy@example.com');
    expect(login.code, login.stderr).toBe(0);
    const [block] = shBlocksUnder('Org policy');
    expect(block).toContain('policy set max-ttl 30d');
    const started = Date.now();
    const run = await runAsWritten(home, block!);
    expect(run.code, run.stderr).toBe(0);
    const lines = run.stdout.trimEnd().split('\n');
    // The policy as it was (the defaults), then the two changes, the key, the refusal.
    expect(lines[0]).toMatch(/^Key policy of org policy \(owners and admins: policy@example\.com\)$/);
    const table = lines.slice(2, 8);
    expect(table[0]).toMatch(/^SETTING +VALUE +MEANING$/);
    expect(table.slice(1).map((l) => l.split(/ {2,}/).slice(0, 2))).toEqual([
      ['max-ttl', 'none'],
      ['permissions', 'all'],
      ['require-security-key', 'false'],
      ['http-minting', 'window'],
      ['members-mint', 'true'],
    ]);
    expect(lines.slice(8, 10)).toEqual(['max-ttl of org policy: none -> 30d', 'permissions of org policy: all -> clusters:view']);
    const key = JSON.parse(lines[10]!) as { permissions: string[]; expires_at: string };
    expect(key.permissions).toEqual(['clusters:view']);
    const lifetime = new Date(key.expires_at).getTime() - started;
    expect(lifetime).toBeGreaterThan(30 * 86_400_000 - 60_000);
    expect(lifetime).toBeLessThanOrEqual(30 * 86_400_000 + 60_000);
    expect(lines.slice(11)).toEqual(['refused: exit 1']);
    // The service names itself as its SSH hint does (localhost here).
    expect(run.stderr).toMatch(
      new RegExp(
        '^error: org "policy" lets its keys carry only clusters:view \\(permissions clusters:view\\): clusters:create was asked for\\. ' +
          `Its owners and admins \\(policy@example\\.com\\) can change that: ssh -p ${sshPort} keys@\\S+ policy set --org policy permissions VALUE$`,
        'm',
      ),
    );
  });
});
