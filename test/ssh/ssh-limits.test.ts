import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import ssh2, { type ClientChannel } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SshLimits } from '../../src/config/config.js';
import { makeKey } from '../support/keys.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { freshPostgresUrl, usingPostgres } from '../support/database.js';
import { openssh, privateKeyOf } from '../support/ssh.js';
import { withSshServer } from '../support/ssh-server.js';
import { compiledProgram } from '../support/service.js';

// Everything a client can grow has a bound: queued lines, output held for a client that does
// not read, CPU spent verifying signatures, connections opened, time spent idle.

const spawned: Array<() => void> = [];
let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  for (const stop of spawned) stop();
  await t?.close();
});

const withServer = (limits: Partial<SshLimits>, body: (port: number) => Promise<void>) => withSshServer(t.app.deps, limits, body);

/** A shell; a reading client keeps only the counts and the last bit of what it read. */
type Shell = { client: ssh2.Client; channel: ClientChannel; output: () => string; sawHelp: () => boolean; bytes: () => number };

async function openShell(port: number, keyPath: string, options: { read: boolean }): Promise<Shell> {
  const client = new ssh2.Client();
  client.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    client.on('ready', () => resolve()).on('error', reject);
    client.connect({ host: '127.0.0.1', port, username: 'keys', privateKey: privateKeyOf(keyPath) });
  });
  const channel = await new Promise<ClientChannel>((resolve, reject) =>
    client.shell({ term: 'xterm', rows: 24, cols: 80 }, (err, ch) => (err ? reject(err) : resolve(ch))),
  );
  let output = '';
  let sawHelp = false;
  let bytes = 0;
  if (options.read) {
    channel.on('data', (d: Buffer) => {
      bytes += d.length;
      output = (output + d.toString()).slice(-4096);
      if (output.includes('Commands:')) sawHelp = true;
    });
  } else {
    channel.pause();
  }
  return { client, channel, output: () => output, sawHelp: () => sawHelp, bytes: () => bytes };
}

/** Writes `bytes` of carriage returns as fast as the channel takes them; stops at `deadline`. */
async function flood(channel: ClientChannel, bytes: number, deadlineMs: number): Promise<number> {
  const chunk = Buffer.alloc(4096, '\r');
  const stop = Date.now() + deadlineMs;
  let sent = 0;
  while (sent < bytes && Date.now() < stop) {
    if (!channel.write(chunk)) {
      // Our writes are blocked: the server stopped reading. Wait for a drain, but not forever.
      await Promise.race([new Promise((resolve) => channel.once('drain', resolve)), new Promise((resolve) => setTimeout(resolve, 200))]);
    }
    sent += chunk.length;
  }
  return sent;
}

async function healthLatencies(httpUrl: string, during: Promise<unknown>): Promise<number[]> {
  const latencies: number[] = [];
  let done = false;
  void during.finally(() => (done = true));
  while (!done) {
    const started = Date.now();
    const res = await fetch(`${httpUrl}/healthz`);
    await res.arrayBuffer();
    latencies.push(Date.now() - started);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return latencies;
}

/** The service as its own process (as `npm start` runs it), so its memory is its own. */
async function spawnService(): Promise<{ pid: number; sshPort: number; httpUrl: string; stop(): void }> {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HTTP_PORT: '0',
    SSH_PORT: '0',
    HOST_KEYS_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-flood-keys-')),
    DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-flood-data-')),
    LOG_LEVEL: 'info',
    ...(usingPostgres ? { DATABASE_URL: await freshPostgresUrl() } : {}),
  };
  // Its own process group, killed whole whatever happens.
  const program = compiledProgram('main');
  const child = spawn(program.command, program.args, { cwd: program.cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const stop = () => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  spawned.push(stop);
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  const started = await new Promise<{ sshPort: number; httpUrl: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`service did not start:\n${log}`)), 45_000);
    child.stdout!.on('data', () => {
      const ssh = /"port":(\d+),"user":"keys".*"msg":"SSH door listening"/.exec(log);
      const http = /"url":"(http:\/\/[^"]+)".*"msg":"HTTP API listening"/.exec(log);
      if (ssh && http) {
        clearTimeout(timer);
        resolve({ sshPort: Number(ssh[1]), httpUrl: http[1]! });
      }
    });
    child.on('exit', (code) => reject(new Error(`service exited with ${code}:\n${log}`)));
  });
  return { pid: child.pid!, ...started, stop };
}

function rssMb(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) / 1024;
}

describe('a flooded shell stays bounded', () => {
  it('an unlinked key flooding newlines, one client reading nothing and one reading everything: server memory and /healthz unmoved', async () => {
    const service = await spawnService();
    const key = makeKey(); // linked to nothing: any key gets a shell
    // Warm up (JIT, pools) with one ordinary session, then take the baseline.
    expect((await openssh(service.sshPort, key.privateKeyPath, ['whoami'])).code).toBe(0);
    await fetch(`${service.httpUrl}/healthz`);
    const before = rssMb(service.pid);
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, rssMb(service.pid))), 50);
    try {
      const silent = await openShell(service.sshPort, key.privateKeyPath, { read: false });
      const reader = await openShell(service.sshPort, key.privateKeyPath, { read: true });
      // 256 KB of newlines each: the code before this bound grew by ~200 MB from 50 KB.
      const floods = Promise.all([flood(silent.channel, 256 * 1024, 5_000), flood(reader.channel, 256 * 1024, 5_000)]);
      const latencies = await healthLatencies(service.httpUrl, floods);
      await floods;
      await new Promise((resolve) => setTimeout(resolve, 500));
      // An empty line prints the prompt and nothing else: the reader saw prompts, not help texts.
      expect(reader.sawHelp()).toBe(false);
      expect(reader.output()).toContain('keys> ');
      expect(Math.max(...latencies)).toBeLessThan(2_000);
      silent.client.end();
      reader.client.end();
    } finally {
      clearInterval(sampler);
      service.stop();
    }
    // Unbounded, 50 KB grew the server by ~200 MB (512 KB here would be ~2 GB). Bounded, it grows by
    // what V8's young generation takes under a burst of allocation (up to 3 x 16 MB semi-spaces),
    // plus what survives while the host is busy: 18-22 MB alone, 32 MB once under a full CI run.
    expect(peak - before).toBeLessThan(64);
  }, 90_000);

  it('lines typed far ahead of a running command are dropped, with one notice', async () => {
    const { privateKeyPath } = makeKey();
    // The first command waits (login waits for the email link); twenty more lines queue behind it.
    const lines = ['login someone@example.com', ...Array.from({ length: 20 }, (_, i) => `whoami ${i}`)];
    const shell = await openShell(t.app.sshPort, privateKeyPath, { read: true });
    let all = '';
    shell.channel.on('data', (d: Buffer) => (all += d.toString()));
    shell.channel.write(`${lines.join('\r')}\r`);
    for (let i = 0; i < 100 && !all.includes('input dropped'); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    shell.channel.write('\x03'); // Ctrl-C: stop waiting
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(all.match(/input dropped: at most 16 lines can wait while a command runs/g)).toHaveLength(1);
    shell.client.end();
  });
});

describe('pre-authentication cost is bounded per address', () => {
  it('signature verifications beyond the budget close the connection unverified', async () => {
    const key = makeKey();
    await withServer({ authPerMinute: 1, authBurst: 3 }, async (port) => {
      const codes = [];
      for (let i = 0; i < 4; i++) codes.push((await openssh(port, key.privateKeyPath, ['whoami'])).code);
      expect(codes).toEqual([0, 0, 0, 255]); // 255: ssh could not connect
      expect(t.logs.some((line) => line.includes('authentication refused by limit'))).toBe(true);
    });
  });

  it('new connections beyond the per-second rate are closed at once', async () => {
    await withServer({ connectionsPerSecond: 1, connectionBurst: 2 }, async (port) => {
      const outcomes = await Promise.all(
        [1, 2, 3].map(
          () =>
            new Promise<string>((resolve) => {
              const socket = net.connect(port, '127.0.0.1');
              socket.once('data', () => {
                socket.destroy();
                resolve('banner');
              });
              socket.on('error', () => resolve('closed'));
              socket.on('close', () => resolve('closed'));
            }),
        ),
      );
      expect(outcomes.sort()).toEqual(['banner', 'banner', 'closed']);
    });
  });
});

describe('idle sessions end', () => {
  it('a shell with no input or output for SSH_IDLE_TIMEOUT is closed with a one-line message', async () => {
    const { privateKeyPath } = makeKey();
    await withServer({ idleTimeoutMs: 600 }, async (port) => {
      const result = await openssh(port, privateKeyPath, [], { tty: true, input: async () => undefined });
      expect(result.stdout + result.stderr).toContain('Connection closed: no activity for');
    });
  });

  it("a login waiting for its email counts as activity", async () => {
    const { privateKeyPath } = makeKey();
    await withServer({ idleTimeoutMs: 600 }, async (port) => {
      const login = openssh(port, privateKeyPath, ['login', `idle${Date.now()}@example.com`]);
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      let finished = false;
      void login.then(() => (finished = true));
      expect(finished).toBe(false); // still waiting, three idle timeouts later
      login.kill();
      await login;
    });
  });
});
