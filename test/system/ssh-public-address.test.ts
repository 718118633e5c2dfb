import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, sshCommandHint } from '../../src/config/config.js';
import { makeKey, uniqueEmail, type TestKey } from '../support/keys.js';
import { startTestApp, tokenOf, type TestApp } from '../support/app.js';
import { openssh, type RunResult } from '../support/ssh.js';
import { findHaproxy, freePort, waitForListener } from '../support/haproxy.js';

// SSH_PUBLIC_ADDRESS: behind a load balancer every hint must name the balancer's address, not the
// port the answering instance happens to listen on (issue 17, "Deployment").

/** Every place the SSH door names its own address, as one key sees them through `port`. */
async function hintsSeenThrough(port: number, key: TestKey): Promise<{ unlinked: RunResult; help: RunResult; wrongUser: RunResult; unknown: RunResult }> {
  const run = (args: string[], user?: string) => openssh(port, key.privateKeyPath, args, { user });
  return {
    unlinked: await run(['create', '--label', 'not-linked-yet']),
    help: await run(['help']),
    wrongUser: await run(['whoami'], 'root'),
    unknown: await run(['frobnicate']),
  };
}

function expectHintsName(seen: Awaited<ReturnType<typeof hintsSeenThrough>>, key: TestKey, hint: string, host: string): void {
  expect(seen.unlinked).toEqual({
    code: 1,
    stdout: '',
    stderr:
      `This key (${key.fingerprint}) is not linked to an account yet.\nVerify it by email with: ${hint} login you@example.com\n` +
      '(Linked it over HTTP already? Run login once with that email: the signature proves the key, no email needed.)\n',
  });
  expect(seen.help.code).toBe(0);
  expect(seen.help.stdout.split('\n')[0]).toBe(`usage: ${hint} COMMAND [OPTIONS]`);
  expect(seen.wrongUser).toEqual({ code: 1, stdout: '', stderr: `Connect as keys@${host} (not root): ${hint} COMMAND\n` });
  expect(seen.unknown.code).toBe(2);
  expect(seen.unknown.stderr).toBe(`error: unknown command "frobnicate": run "${hint} help" for the list\n`);
}

const startupTry = (app: TestApp) => JSON.parse(app.logs.find((l) => l.includes('"msg":"SSH door listening"'))!).try as string;

describe('SSH_PUBLIC_ADDRESS', () => {
  it('host, host:port, [v6]:port or a bare IPv6 address; a host alone is port 22, and port 22 prints no -p', () => {
    const parsed = (value: string) => loadConfig({ SSH_PUBLIC_ADDRESS: value }).sshPublicAddress;
    expect(parsed('auth.example.com')).toEqual({ host: 'auth.example.com', port: 22 });
    expect(parsed(' auth.example.com:2200 ')).toEqual({ host: 'auth.example.com', port: 2200 });
    expect(parsed('203.0.113.7:22')).toEqual({ host: '203.0.113.7', port: 22 });
    expect(parsed('[2001:db8::1]:2222')).toEqual({ host: '2001:db8::1', port: 2222 });
    expect(parsed('[2001:db8::1]')).toEqual({ host: '2001:db8::1', port: 22 });
    expect(parsed('2001:db8::1')).toEqual({ host: '2001:db8::1', port: 22 });
    expect(loadConfig({}).sshPublicAddress).toBeNull();
    expect(loadConfig({ SSH_PUBLIC_ADDRESS: '' }).sshPublicAddress).toBeNull();
    for (const bad of ['auth.example.com:0', 'auth.example.com:65536', 'auth.example.com:', 'keys@auth.example.com', '[not-v6]:22', 'a b', 'ssh://auth.example.com']) {
      expect(() => parsed(bad), bad).toThrow(ConfigError);
      expect(() => parsed(bad), bad).toThrow(`SSH_PUBLIC_ADDRESS="${bad}": must be host or host:port`);
    }

    const hint = (env: Record<string, string>, listening = 2222) => sshCommandHint(loadConfig(env), listening);
    expect(hint({ SSH_PUBLIC_ADDRESS: 'auth.example.com' })).toBe('ssh keys@auth.example.com');
    expect(hint({ SSH_PUBLIC_ADDRESS: 'auth.example.com:22', SSH_USER: 'api' })).toBe('ssh api@auth.example.com');
    expect(hint({ SSH_PUBLIC_ADDRESS: 'auth.example.com:2200' })).toBe('ssh -p 2200 keys@auth.example.com');
    // OpenSSH takes an IPv6 literal bare after the @ (`keys@[::1]` would be looked up as a name).
    expect(hint({ SSH_PUBLIC_ADDRESS: '[2001:db8::1]:2200' })).toBe('ssh -p 2200 keys@2001:db8::1');
    // Unset: derived as before, from PUBLIC_URL's host and the port the door listens on.
    expect(hint({ PUBLIC_URL: 'https://auth.example.com' })).toBe('ssh -p 2222 keys@auth.example.com');
    expect(hint({ PUBLIC_URL: 'https://auth.example.com' }, 22)).toBe('ssh keys@auth.example.com');
    expect(hint({ PUBLIC_URL: 'http://[2001:db8::1]:8080' })).toBe('ssh -p 2222 keys@2001:db8::1');
  });
});

describe('one instance with SSH_PUBLIC_ADDRESS, through the real OpenSSH client', () => {
  let t: TestApp;
  let plain: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ SSH_PUBLIC_ADDRESS: 'keys.example.net:2200' });
    plain = await startTestApp({ SSH_PUBLIC_ADDRESS: 'keys.example.net' }, { smtp: t.smtp });
  });
  afterAll(async () => {
    await plain?.close();
    await t?.close();
  });

  it('every hint names the public address, not the port the instance listens on', async () => {
    const hint = 'ssh -p 2200 keys@keys.example.net';
    expect(t.app.sshHint).toBe(hint);
    expect(startupTry(t)).toBe(hint);
    const key = makeKey();
    expectHintsName(await hintsSeenThrough(t.app.sshPort, key), key, hint, 'keys.example.net');

    // Port 22: no -p anywhere.
    expect(startupTry(plain)).toBe('ssh keys@keys.example.net');
    expectHintsName(await hintsSeenThrough(plain.app.sshPort, key), key, 'ssh keys@keys.example.net', 'keys.example.net');
  });

  it('the confirm page of a key linked over HTTP names the same command for proving it on the SSH door', async () => {
    const email = uniqueEmail('pubaddr');
    const key = makeKey();
    expect((await t.post('/api/shell-auth', { email, ssh_public_key: key.publicKey })).status).toBe(200);
    const mail = await t.smtp.waitForMail(email);
    const token = tokenOf(mail.link!);
    const confirmed = await t.request('/shell-auth/verify', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }).toString(),
    });
    expect(confirmed.status).toBe(200);
    expect(confirmed.text).toContain(`ssh -p 2200 keys@keys.example.net login ${email}`);
    expect(confirmed.text).not.toContain(`-p ${t.app.sshPort}`);
    // The emails name no SSH command (only the link), so there is nothing there to get wrong.
    expect(mail.text).not.toMatch(/ssh -p|keys@/);
  });

  it('inside the shell, help lists the commands without an "ssh …" synopsis', async () => {
    const key = makeKey();
    const shell = await openssh(t.app.sshPort, key.privateKeyPath, [], { extra: ['-T'], input: 'help\n' });
    expect(shell.code).toBe(0);
    expect(shell.stdout).toContain('Commands:\n  create ');
    expect(shell.stdout).not.toContain('usage:');
    expect(shell.stdout).not.toContain('ssh ');
    // From outside (exec), the synopsis stays: that is how the command is typed there.
    const exec = await openssh(t.app.sshPort, key.privateKeyPath, ['help']);
    expect(exec.stdout).toMatch(/^usage: ssh -p 2200 keys@keys\.example\.net COMMAND \[OPTIONS\]\n\nCommands:\n/);
  });
});

// ---------------------------------------------------------------------------------------------
// The case: two instances behind one HAProxy port (PROXY v2): whichever answers, the hint
// is the balancer's address.

const HAPROXY = findHaproxy();
if (!HAPROXY) console.warn('ssh-public-address.test.ts: SKIPPING the HAProxy test: no haproxy binary (.ci/run installs it: apt-get install haproxy)');

describe('two instances behind one HAProxy port', () => {
  let haproxy: ChildProcess | null = null;
  afterAll(() => {
    if (haproxy?.pid) {
      try {
        process.kill(-haproxy.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });

  it.skipIf(!HAPROXY)(
    `OpenSSH -> haproxy :FRONT (roundrobin, send-proxy-v2) -> instances a and b: every hint says ssh -p FRONT${HAPROXY ? '' : ' [SKIPPED: haproxy not installed]'}`,
    async () => {
      const front = await freePort();
      const env = { SSH_PUBLIC_ADDRESS: `127.0.0.1:${front}`, SSH_PROXY_PROTOCOL: 'true', SSH_PROXY_FROM: '127.0.0.1' };
      const a = await startTestApp(env);
      const b = await startTestApp(env, { smtp: a.smtp });
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-pubaddr-'));
      try {
        const configPath = path.join(dir, 'haproxy.cfg');
        fs.writeFileSync(
          configPath,
          [
            'global',
            '  maxconn 64',
            'defaults',
            '  mode tcp',
            '  timeout connect 5s',
            '  timeout client 60s',
            '  timeout server 60s',
            'frontend ssh_in',
            `  bind 127.0.0.1:${front}`,
            '  default_backend ssh_doors',
            'backend ssh_doors',
            '  balance roundrobin',
            `  server a 127.0.0.1:${a.app.sshPort} send-proxy-v2 source 127.0.0.1`,
            `  server b 127.0.0.1:${b.app.sshPort} send-proxy-v2 source 127.0.0.1`,
            '',
          ].join('\n'),
        );
        execFileSync(HAPROXY!, ['-c', '-q', '-f', configPath]);
        let log = '';
        const child = spawn(HAPROXY!, ['-f', configPath, '-db'], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
        haproxy = child;
        child.stdout!.on('data', (d) => (log += d));
        child.stderr!.on('data', (d) => (log += d));
        await waitForListener(front, () => log);

        const hint = `ssh -p ${front} keys@127.0.0.1`;
        const key = makeKey();
        // Twice round: each kind of hint comes from both instances.
        for (let round = 0; round < 2; round++) expectHintsName(await hintsSeenThrough(front, key), key, hint, '127.0.0.1');
        const served = (app: TestApp) => app.logs.filter((l) => l.includes('"msg":"ssh connection closed"') && l.includes(key.fingerprint)).length;
        for (let i = 0; i < 50 && served(a) + served(b) < 8; i++) await new Promise((resolve) => setTimeout(resolve, 50));
        expect(served(a), log).toBeGreaterThan(0);
        expect(served(b), log).toBeGreaterThan(0);
        expect([startupTry(a), startupTry(b)]).toEqual([hint, hint]);
        for (const app of [a, b]) expect(app.logs.join('\n')).not.toContain(`-p ${app.app.sshPort} `);

        // The hint is a command that works as printed (the address is the balancer's).
        const [, port, user] = /^ssh -p (\d+) (\w+)@127\.0\.0\.1$/.exec(hint)!;
        expect((await openssh(Number(port), key.privateKeyPath, ['whoami'], { user })).stdout).toContain('verified: no');
      } finally {
        if (haproxy?.pid) {
          const child = haproxy;
          try {
            process.kill(-child.pid!, 'SIGKILL');
          } catch {
            // already gone
          }
          await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(null) : child.once('exit', resolve)));
          haproxy = null;
        }
        await b.close();
        await a.close();
      }
    },
    90_000,
  );
});
