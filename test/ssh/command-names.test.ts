import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeKey, uniqueEmail, type TestKey } from '../support/keys.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { openssh, ssh2Exec, privateKeyOf } from '../support/ssh.js';

// The command a line runs is the name metrics and the access log give it, however the line starts:
// `-- create …` runs create, so it is counted as create, not `unknown` (issue 17, found by reading #3).

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp({ METRICS_PORT: '0' });
});
afterAll(async () => {
  await t?.close();
});

async function verifiedUser(): Promise<TestKey> {
  const email = uniqueEmail('dashes');
  const key = makeKey();
  await t.verifyByEmail(email, key.publicKey);
  const proved = await openssh(t.app.sshPort, key.privateKeyPath, ['login', email]);
  if (proved.code !== 0) throw new Error(`login failed: ${proved.stderr}`);
  return key;
}

/** The access line of the connection `key` made that ran `count` commands. */
async function accessLine(key: TestKey, count: number): Promise<{ commands: Array<{ name: string; exit_code: number }> }> {
  for (let i = 0; i < 100; i++) {
    const line = t.logs
      .map((l) => JSON.parse(l) as Record<string, any>)
      .find((l) => l.msg === 'ssh connection closed' && l.fingerprint === key.fingerprint && l.commands?.length === count && l.commands[0].name !== 'login');
    if (line) return line as { commands: Array<{ name: string; exit_code: number }> };
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('no access line');
}

const countOf = (metrics: string, command: string) =>
  Number(new RegExp(`^shell_auth_ssh_commands_total\\{command="${command}",exit_code="0"\\} (\\d+)$`, 'm').exec(metrics)?.[1] ?? 0);

describe('command names in metrics and the access log', () => {
  it('`-- create …` and `-- --help` are named create and help', async () => {
    const key = await verifiedUser();
    const before = await (await fetch(t.app.metricsUrl!)).text();

    // OpenSSH consumes one `--` after the destination (`ssh keys@HOST -- create`); a second one
    // reaches the server, as it does from `ssh -- keys@HOST -- create` and from clients that send
    // the line as written.
    const created = await openssh(t.app.sshPort, key.privateKeyPath, ['--', '--', 'create', '--label', 'dashed-key']);
    expect(created.code, created.stderr).toBe(0);
    expect((await accessLine(key, 1)).commands).toEqual([{ name: 'create', exit_code: 0, ms: expect.any(Number) }]);

    const help = await ssh2Exec(t.app.sshPort, { privateKey: privateKeyOf(key.privateKeyPath) }, '-- --help');
    expect(help.code).toBe(0);
    const shell = await openssh(t.app.sshPort, key.privateKeyPath, [], { extra: ['-T'], input: '-- whoami\n-- --help\n' });
    expect(shell.code).toBe(0);
    expect((await accessLine(key, 2)).commands.map((c) => c.name)).toEqual(['whoami', 'help']);

    const after = await (await fetch(t.app.metricsUrl!)).text();
    expect(countOf(after, 'create') - countOf(before, 'create')).toBe(1);
    expect(countOf(after, 'help') - countOf(before, 'help')).toBe(2);
    expect(countOf(after, 'unknown')).toBe(countOf(before, 'unknown'));
  });
});
