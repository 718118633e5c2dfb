import { afterAll, describe, expect, it } from 'vitest';
import { freshPostgresUrl } from '../support/database.js';
import { makeKey } from '../support/keys.js';
import { killSpawnedServices, listeningOf, spawnService, type SpawnedService } from '../support/service.js';
import { openssh } from '../support/ssh.js';
import { childrenOf, count, getFresh, until } from '../support/processes.js';

// What the log says to an operator: one line per event in pretty mode too, load balancer probes
// out of the info log, and one start-up block under WORKERS (not one per worker).

afterAll(killSpawnedServices);

const databaseEnv = async (options: { migrated?: boolean } = {}): Promise<Record<string, string>> =>
  ({ DATABASE_URL: await freshPostgresUrl(options) });


describe('the operator\'s log', () => {
  it('LOG_FORMAT=pretty: one line per event; an SSH connection is its one access line, commands included', async () => {
    const service = spawnService({ LOG_FORMAT: 'pretty', ...(await databaseEnv()) });
    const { output } = service;
    // Either layout: `SSH door listening {"port":N…}` or pino-pretty's indented `port: N`.
    await until(() => /SSH door listening[\s\S]*?port"?:\s*\d+/.test(output()) && output().includes('HTTP API listening'), 'listening', output);
    const sshPort = Number(/SSH door listening[\s\S]*?port"?:\s*(\d+)/.exec(output())![1]);
    const startup = output().trim().split('\n');
    expect(startup.length, output()).toBeLessThanOrEqual(7); // heap settings, migrated, no SMTP, host key, two listening lines

    const key = makeKey();
    const before = output().length;
    const result = await openssh(sshPort, key.privateKeyPath, ['whoami']);
    expect(result.code, result.stderr).toBe(0);
    await until(() => output().includes('ssh connection closed', before), 'the access line', output, 10_000);
    const lines = output().slice(before).trim().split('\n');
    const access = lines.filter((line) => line.includes('ssh connection closed'));
    expect(access).toHaveLength(1);
    expect(access[0]).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: ssh connection closed \{.*"commands":\[\{"name":"whoami","exit_code":0,"ms":[\d.]+\}\].*\}$/);
    expect(access[0]).toContain(`"fingerprint":"${key.fingerprint}"`);
    // Every line is an event of its own: time, level, message (no continuation lines).
    for (const line of output().trim().split('\n')) expect(line).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] (DEBUG|INFO|WARN|ERROR|FATAL): \S/);
  });

  it('health probes that pass are logged at debug, not info; other requests stay at info', async () => {
    const service = spawnService({ LOG_LEVEL: 'debug', ...(await databaseEnv()) });
    const { httpUrl } = await listeningOf(service);
    for (let i = 0; i < 5; i++) {
      expect(await getFresh(`${httpUrl}/readyz`)).toBe(200);
      expect(await getFresh(`${httpUrl}/healthz`)).toBe(200);
    }
    expect(await getFresh(`${httpUrl}/no-such-page`)).toBe(404);
    await until(() => service.output().includes('"path":"/no-such-page"'), 'the 404 logged', service.output, 5_000);
    const requests = service.output().split('\n').filter((line) => line.includes('"msg":"http request"'));
    const probes = requests.filter((line) => /"path":"\/(readyz|healthz)"/.test(line));
    expect(probes).toHaveLength(10);
    for (const line of probes) expect(line).toContain('"level":20'); // debug
    expect(requests.filter((line) => line.includes('"path":"/no-such-page"')).map((line) => JSON.parse(line).level)).toEqual([30]); // info
  });

  it('WORKERS=2: one start-up block, from the primary (the workers\' at debug), and one line per replacement', async () => {
    const service: SpawnedService = spawnService({ WORKERS: '2', METRICS_PORT: '0', ...(await databaseEnv({ migrated: false })) });
    const { output } = service;
    // Both workers listening: the primary's line says so (before the change, each worker logged its own).
    await until(
      () => output().includes('"workers":2,"msg":"HTTP API listening"') || count(output(), '"msg":"HTTP API listening"') >= 2,
      'both workers listening',
      output,
    );
    await new Promise((resolve) => setTimeout(resolve, 500)); // anything late would show now
    for (const msg of [
      'database migrated',
      'SMTP_URL is not set: emails are written to the outbox and their links logged (development only)',
      'V8 heap settings',
      'SSH host key',
      'SSH door listening',
      'HTTP API listening',
      'metrics listening (all workers)',
    ]) {
      expect(count(output(), `"msg":"${msg}"`), `${msg}:\n${output()}`).toBe(1);
    }
    expect(output()).toMatch(/"port":\d+,"user":"keys","try":"ssh -p \d+ [^"]+","workers":2,"msg":"SSH door listening"/);
    expect(output()).toContain('"allocationSitePretenuring":"off","heapGrowingPercent":25,"maxSemiSpaceMb":8,"msg":"V8 heap settings"');
    // Nothing from the workers themselves at info while starting.
    expect(output().split('\n').filter((line) => line.includes('"worker":') && !line.includes('"level":20')), output()).toEqual([]);

    const [first] = childrenOf(service.child.pid!);
    process.kill(first!, 'SIGKILL');
    await until(() => output().includes('"msg":"replacement worker listening"'), 'a replacement listening', output);
    expect(count(output(), '"msg":"SSH host key"')).toBe(1);
    expect(count(output(), '"msg":"HTTP API listening"')).toBe(1);
    expect(output()).toMatch(/"worker":[12],"pid":\d+,"url":"http:\/\/[^"]+","sshPort":\d+,"msg":"replacement worker listening"/);
    service.child.kill('SIGTERM');
    expect(await service.exited).toBe(0);
  }, 90_000);
});
