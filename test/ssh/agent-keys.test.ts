import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { preferLinkedKey, reoffersKeysAfterPartialSuccess } from '../../src/ssh/authentication.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { makeKey, uniqueEmail, type TestKey } from '../support/keys.js';
import { openssh, privateKeyOf, ssh2Exec, type RunResult } from '../support/ssh.js';

// Several keys in ssh-agent, the one linked to no account first: OpenSSH offers them in the
// agent's order, and the linked key must win; a lone unlinked key must still get in (BatchMode
// too: scripts and a first `login` use it). Real OpenSSH, a real ssh-agent.

let t: TestApp;
let agent: ChildProcess;
const agentSocket = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-agent-')), 'agent.sock');
const unlinked = makeKey('ed25519', undefined, 'work');
const unlinked2 = makeKey('ed25519', undefined, 'old');
const unlinkedRsa = makeKey('rsa', 2048, 'older');
const linked = makeKey('ed25519', undefined, 'alice-laptop');
const email = uniqueEmail('agent');

beforeAll(async () => {
  t = await startTestApp();
  await t.verifyByEmail(email, linked.publicKey);
  const proved = await openssh(t.app.sshPort, linked.privateKeyPath, ['login', email]);
  if (proved.code !== 0) throw new Error(`login failed: ${proved.stderr}`);
  agent = spawn('ssh-agent', ['-D', '-a', agentSocket], { stdio: 'ignore' });
  for (let i = 0; i < 100 && !fs.existsSync(agentSocket); i++) await new Promise((resolve) => setTimeout(resolve, 50));
});
afterAll(async () => {
  agent?.kill('SIGKILL');
  await t?.close();
});

/** Puts exactly these keys in the agent, in this order. */
function agentHolds(...keys: TestKey[]): void {
  const env = { ...process.env, SSH_AUTH_SOCK: agentSocket };
  execFileSync('ssh-add', ['-D'], { env, stdio: 'ignore' });
  for (const key of keys) execFileSync('ssh-add', [key.privateKeyPath], { env, stdio: 'ignore' });
}

/** `ssh keys@127.0.0.1 COMMAND` with the agent's keys only (no -i: an IdentityFile that does not exist keeps the default files out). */
function sshWithAgent(command: string[], options: string[]): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(
      'ssh',
      [
        '-F', '/dev/null',
        '-o', 'StrictHostKeyChecking=no',
        '-o', 'UserKnownHostsFile=/dev/null',
        '-o', 'LogLevel=ERROR',
        '-o', 'IdentityFile=/nonexistent/shell-auth-test',
        ...options,
        '-p', String(t.app.sshPort),
        'keys@127.0.0.1',
        ...command,
      ],
      { env: { ...process.env, SSH_AUTH_SOCK: agentSocket }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('several keys in ssh-agent', () => {
  for (const options of [['-o', 'BatchMode=yes'], ['-T'], ['-o', 'BatchMode=yes', '-T']]) {
    it(`an unlinked key first and the linked one second: the linked key gets in (${options.join(' ')})`, async () => {
      agentHolds(unlinked, linked);
      const who = await sshWithAgent(['whoami'], options);
      expect(who.code).toBe(0);
      expect(who.stdout).toContain(`email:    ${email}`);
      expect(who.stdout).toContain(linked.fingerprint);
      const created = await sshWithAgent(['create', '--label', 'from-agent'], options);
      expect(created.code).toBe(0);
      expect(created.stdout).toMatch(/\S{20,}/);
    });
  }

  it('three unlinked keys before the linked one still fit the attempts allowed', async () => {
    agentHolds(unlinked, unlinked2, unlinkedRsa, linked);
    const who = await sshWithAgent(['whoami'], ['-o', 'BatchMode=yes']);
    expect(who.code).toBe(0);
    expect(who.stdout).toContain(linked.fingerprint);
  });

  it('a lone unlinked key still gets in with BatchMode=yes and is told how to link it', async () => {
    agentHolds(unlinked);
    const who = await sshWithAgent(['whoami'], ['-o', 'BatchMode=yes']);
    expect(who.code).toBe(0);
    expect(who.stdout).toContain(unlinked.fingerprint);
    expect(who.stderr).toContain('login you@example.com');
  });

  it('several unlinked keys and no linked one: the first gets in', async () => {
    agentHolds(unlinked, unlinked2);
    const who = await sshWithAgent(['whoami'], ['-o', 'BatchMode=yes']);
    expect(who.code).toBe(0);
    expect(who.stdout).toContain(unlinked.fingerprint);
  });

  it('the linked key first: in at once, as before', async () => {
    agentHolds(linked, unlinked);
    const who = await sshWithAgent(['whoami'], ['-o', 'BatchMode=yes']);
    expect(who.stdout).toContain(linked.fingerprint);
  });

  it('clients that never offer a key twice (ssh2) get in with their first key, as before', async () => {
    const result = await ssh2Exec(t.app.sshPort, { username: 'keys', privateKey: privateKeyOf(unlinked.privateKeyPath) }, 'whoami');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(unlinked.fingerprint);
  });
});

describe('the key preference, as a rule', () => {
  it('holds back the first unlinked key of an OpenSSH client, refuses a second, accepts it when it comes again', () => {
    const openSsh = { reoffersKeys: true, heldBack: false, isHeldBack: false };
    expect(preferLinkedKey(true, openSsh)).toBe('accept');
    expect(preferLinkedKey(false, openSsh)).toBe('hold-back');
    expect(preferLinkedKey(false, { ...openSsh, heldBack: true })).toBe('not-preferred');
    expect(preferLinkedKey(false, { ...openSsh, heldBack: true, isHeldBack: true })).toBe('accept');
    expect(preferLinkedKey(false, { ...openSsh, reoffersKeys: false })).toBe('accept');
  });

  it('OpenSSH 7.4 and later (also for Windows) offer their keys again after a partial success; others do not', () => {
    for (const yes of ['OpenSSH_9.2p1', 'OpenSSH_7.4', 'OpenSSH_10.0p2', 'OpenSSH_for_Windows_9.5', 'OpenSSH_7.10']) expect(reoffersKeysAfterPartialSuccess(yes)).toBe(true);
    for (const no of ['OpenSSH_7.3p1', 'OpenSSH_6.6.1', 'ssh2js1.17.0', 'libssh_0.10.4', 'Go', 'PuTTY_Release_0.80', undefined]) expect(reoffersKeysAfterPartialSuccess(no)).toBe(false);
  });
});
