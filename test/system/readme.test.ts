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
