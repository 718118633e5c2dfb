import net from 'node:net';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/config.js';
import { createLogger, logFormatFor } from '../../src/observability/log.js';
import { makeKey, uniqueEmail, type TestKey } from '../support/keys.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { withSshServer } from '../support/ssh-server.js';
import { connectClient, execOn, openssh, parsedKey, ssh2Exec, TrickAgent } from '../support/ssh.js';

type Line = Record<string, any>;

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

const lines = (): Line[] => t.logs.map((line) => JSON.parse(line) as Line);

/** Waits for the log line `match` picks (a connection is logged when the server sees it close). */
async function lineWhere(match: (line: Line) => boolean, ms = 5000): Promise<Line> {
  const deadline = Date.now() + ms;
  for (;;) {
    const found = lines().find(match);
    if (found) return found;
    if (Date.now() > deadline) throw new Error('no such log line');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const closedWith = (fingerprint: string | null) => (line: Line) => line.msg === 'ssh connection closed' && line.fingerprint === fingerprint;

async function verifiedUser(): Promise<{ email: string; key: TestKey; userId: string }> {
  const email = uniqueEmail('access');
  const key = makeKey();
  await t.verifyByEmail(email, key.publicKey);
  const proved = await openssh(t.app.sshPort, key.privateKeyPath, ['login', email]);
  if (proved.code !== 0) throw new Error(`login failed: ${proved.stderr}`);
  const user = await t.app.deps.db.selectFrom('users').select('id').where('email', '=', email).executeTakeFirstOrThrow();
  await lineWhere((line) => closedWith(key.fingerprint)(line) && line.commands?.[0]?.name === 'login');
  return { email, key, userId: user.id };
}

describe('the SSH access log', () => {
  it('one info line per connection: address, fingerprint, user id, each command with exit code and time, bytes, why it ended', async () => {
    const { key, userId } = await verifiedUser();
    const created = await openssh(t.app.sshPort, key.privateKeyPath, ['create', '--label', 'secret-label-xyz']);
    expect(created.code).toBe(0);
    const apiKey = created.stdout.trim();
    expect(apiKey).toHaveLength(100);

    const line = await lineWhere((l) => closedWith(key.fingerprint)(l) && l.commands?.[0]?.name === 'create');
    expect(line).toEqual({
      level: 30,
      time: expect.any(Number),
      service: 'shell-auth',
      msg: 'ssh connection closed',
      ip: '127.0.0.1',
      port: expect.any(Number),
      fingerprint: key.fingerprint,
      user_id: userId,
      outcome: 'authenticated',
      reason: 'client_closed',
      refused_auth: 0,
      commands: [{ name: 'create', exit_code: 0, ms: expect.any(Number) }],
      bytes_in: expect.any(Number),
      bytes_out: expect.any(Number),
      ms: expect.any(Number),
    });
    expect(line.bytes_in).toBeGreaterThan(1000); // the handshake alone is more
    expect(line.bytes_out).toBeGreaterThan(apiKey.length);
    expect(line.commands[0].ms).toBeGreaterThan(0);
    expect(line.commands[0].ms).toBeLessThanOrEqual(line.ms);

    // Neither the label nor the key (nor its secret half) appears in any line.
    const all = t.logs.join('\n');
    expect(all).not.toContain('secret-label-xyz');
    expect(all).not.toContain(apiKey);
    expect(all).not.toContain(apiKey.slice(36));
  });

  it('a shell session lists its commands by name only: arguments and unknown words never appear', async () => {
    const { key } = await verifiedUser();
    const result = await openssh(t.app.sshPort, key.privateKeyPath, [], {
      input: 'whoami\nlist --org no-such-org-qq\nhunter2-not-a-command\n"unterminated\nexit\n',
    });
    expect(result.code).toBe(0);
    const line = await lineWhere((l) => closedWith(key.fingerprint)(l) && l.commands?.[0]?.name === 'whoami');
    expect(line.commands.map((c: Line) => [c.name, c.exit_code])).toEqual([
      ['whoami', 0],
      ['list', 1],
      ['unknown', 2],
      ['unknown', 2],
    ]);
    expect(line.reason).toBe('client_closed');
    const all = t.logs.join('\n');
    expect(all).not.toContain('no-such-org-qq');
    expect(all).not.toContain('hunter2');
    expect(all).not.toContain('unterminated');
  });

  it('an unlinked key: fingerprint, user_id null, and its gated command', async () => {
    const key = makeKey();
    expect((await openssh(t.app.sshPort, key.privateKeyPath, ['create', '--label', 'x-label'])).code).toBe(1);
    const line = await lineWhere(closedWith(key.fingerprint));
    expect(line).toMatchObject({ user_id: null, outcome: 'authenticated', commands: [{ name: 'create', exit_code: 1 }] });
  });
});

describe('refused authentications', () => {
  it('one info line each, with the reason; the connection line says auth_failed; a password is never logged', async () => {
    await expect(ssh2Exec(t.app.sshPort, { username: 'keys', password: 'hunter2-secret' }, 'whoami')).rejects.toThrow(/authentication methods failed/);
    const refused = await lineWhere((l) => l.msg === 'ssh: authentication refused' && l.reason === 'method_refused' && l.method === 'password');
    expect(refused).toEqual({
      level: 30,
      time: expect.any(Number),
      service: 'shell-auth',
      msg: 'ssh: authentication refused',
      ip: '127.0.0.1',
      port: expect.any(Number),
      reason: 'method_refused',
      method: 'password',
      attempt: expect.any(Number),
      fingerprint: null,
    });
    const closed = await lineWhere((l) => l.msg === 'ssh connection closed' && l.port === refused.port);
    expect(closed).toMatchObject({ fingerprint: null, user_id: null, outcome: 'auth_failed', refused_auth: 1, commands: [] });
    expect(t.logs.join('\n')).not.toContain('hunter2-secret');
  });

  it('the offered key is logged by fingerprint only, never its material', async () => {
    const victim = makeKey();
    const attacker = makeKey();
    const agent = new TrickAgent([{ publicKey: parsedKey(victim.publicKey), signer: parsedKey(attacker.privateKeyPath) }]);
    await expect(ssh2Exec(t.app.sshPort, { agent }, 'whoami')).rejects.toThrow(/authentication methods failed/);
    await lineWhere((l) => l.msg === 'ssh: authentication refused' && l.fingerprint === victim.fingerprint);
    expect(t.logs.join('\n')).not.toContain(victim.publicKey.split(' ')[1]!);
  });

  it('a signature that does not verify is logged as bad_signature', async () => {
    const victim = makeKey();
    const attacker = makeKey();
    const agent = new TrickAgent([{ publicKey: parsedKey(victim.publicKey), signer: parsedKey(attacker.privateKeyPath) }]);
    await expect(ssh2Exec(t.app.sshPort, { agent }, 'whoami')).rejects.toThrow(/authentication methods failed/);
    const refused = await lineWhere((l) => l.msg === 'ssh: authentication refused' && l.fingerprint === victim.fingerprint && l.reason === 'bad_signature');
    expect(refused.method).toBe('publickey');
  });
});

describe('why a connection ended', () => {
  const withServer = (limits: Record<string, number>, body: (port: number, close: () => Promise<void>) => Promise<void>) =>
    withSshServer(t.app.deps, limits, body);


  it('idle timeout, login grace time, and server shutdown', async () => {
    const { key } = await verifiedUser();
    // Short timers, each on a server of its own: a login grace that short would also cut a slow handshake.
    await withServer({ idleTimeoutMs: 1_000 }, async (port) => {
      const client = await connectClient(port, key.privateKeyPath);
      await execOn(client, 'whoami');
      await new Promise<void>((resolve) => client.on('close', () => resolve()));
      const idle = await lineWhere((l) => closedWith(key.fingerprint)(l) && l.reason === 'idle_timeout');
      expect(idle).toMatchObject({ outcome: 'authenticated', commands: [{ name: 'whoami', exit_code: 0 }] });
    });
    await withServer({ loginGraceMs: 300 }, async (port) => {
      const socket = net.connect(port, '127.0.0.1');
      const localPort = await new Promise<number>((resolve) => socket.on('connect', () => resolve(socket.localPort!)));
      socket.on('error', () => undefined);
      socket.resume(); // read the banner, say nothing
      await new Promise<void>((resolve) => socket.on('close', () => resolve()));
      const grace = await lineWhere((l) => l.msg === 'ssh connection closed' && l.port === localPort);
      expect(grace).toMatchObject({ outcome: 'login_timeout', reason: 'login_timeout', fingerprint: null, user_id: null });
    });
    await withServer({}, async (port, close) => {
      const client = await connectClient(port, key.privateKeyPath);
      client.on('error', () => undefined);
      await execOn(client, 'whoami');
      await close();
      const shutdown = await lineWhere((l) => closedWith(key.fingerprint)(l) && l.reason === 'server_shutdown');
      expect(shutdown.outcome).toBe('authenticated');
    });
  });
});

describe('log format', () => {
  it('LOG_FORMAT is json or pretty; unset means pretty on a terminal, JSON otherwise', () => {
    expect(loadConfig({}).logFormat).toBeNull();
    expect(loadConfig({ LOG_FORMAT: 'pretty' }).logFormat).toBe('pretty');
    expect(() => loadConfig({ LOG_FORMAT: 'xml' })).toThrow(ConfigError);
    expect(logFormatFor(null, true)).toBe('pretty');
    expect(logFormatFor(null, false)).toBe('json');
    expect(logFormatFor(null, undefined)).toBe('json');
    expect(logFormatFor('json', true)).toBe('json');
    expect(logFormatFor('pretty', false)).toBe('pretty');
  });

  it('pretty output is human-readable and still redacts secrets', async () => {
    let out = '';
    const sink = new Writable({
      write(chunk, _encoding, callback) {
        out += chunk.toString();
        callback();
      },
    });
    const log = createLogger('info', sink, 'pretty');
    log.info({ ip: '127.0.0.1', api_key: 'abc-secret-123' }, 'ssh connection closed');
    for (let i = 0; i < 20 && !out.includes('\n'); i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(out).toMatch(/INFO.*ssh connection closed/);
    // One event, one line: the fields follow the message on it.
    expect(out).toMatch(/^\[[\d:.]+\] INFO: ssh connection closed \{"ip":"127.0.0.1","api_key":"\[redacted\]"\}\n$/);
    expect(out).not.toContain('abc-secret-123');
    expect(() => JSON.parse(out.split('\n')[0]!)).toThrow();
  });
});
