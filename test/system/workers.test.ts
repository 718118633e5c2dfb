import fs from 'node:fs';
import net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { freshPostgresUrl } from '../support/database.js';
import { killSpawnedServices, spawnService } from '../support/service.js';
import { childrenOf, count, getFresh, until } from '../support/processes.js';

// WORKERS=N: node:cluster workers sharing both ports, restarted when they die, drained on SIGTERM.

afterAll(killSpawnedServices);


/** Sends GET /healthz on an open socket and reads the status line of the answer ('' if none in 5 s). */
function firstStatusLine(socket: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let received = '';
    const timer = setTimeout(() => resolve(received.split('\r\n')[0] ?? ''), 5_000);
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (received.includes('\r\n')) {
        clearTimeout(timer);
        resolve(received.split('\r\n')[0]!);
      }
    });
    socket.write('GET /healthz HTTP/1.1\r\nHost: workers-test\r\n\r\n');
  });
}

describe('WORKERS', () => {
  it(
    'two workers share both ports and the metrics; a killed worker is replaced; SIGTERM drains all and exits 0',
    async () => {
      const service = spawnService({ WORKERS: '2', DATABASE_URL: await freshPostgresUrl({ migrated: false }), METRICS_PORT: '0' });
      const { output } = service;
      // The primary says it once, when both workers listen (theirs are at debug).
      await until(() => count(output(), '"msg":"HTTP API listening"') === 1, 'two workers listening', output);
      expect(output()).toMatch(/"workers":2,"msg":"HTTP API listening"/);
      // The primary migrated before forking: the workers found nothing to do.
      expect(count(output(), '"msg":"database migrated"')).toBe(1);
      expect(output()).toMatch(/"workers":2,"msg":"primary started the workers"/);
      const urls = [...output().matchAll(/"url":"(http:\/\/[^"]+)".*"msg":"HTTP API listening"/g)].map((m) => m[1]);
      expect(new Set(urls).size).toBe(1); // one shared port
      const sshPorts = [...output().matchAll(/"port":(\d+),"user":"keys".*"msg":"SSH door listening"/g)].map((m) => m[1]);
      expect(new Set(sshPorts).size).toBe(1);
      const url = urls[0]!;
      const metricsUrl = /"url":"(http:\/\/[^"]+\/metrics)"/.exec(output())?.[1];
      expect(metricsUrl).toBeDefined();

      const statuses = [];
      for (let i = 0; i < 20; i++) statuses.push(await getFresh(`${url}/readyz`));
      expect(statuses.every((s) => s === 200)).toBe(true);
      // Passing probes are not access-logged at info; other requests are, by the worker that served them.
      for (let i = 0; i < 20; i++) expect(await getFresh(`${url}/no-such-page`)).toBe(404);
      await until(() => count(output(), '"msg":"http request"') >= 20, 'access lines', output, 5_000);
      expect(output()).not.toContain('"path":"/readyz"');
      const servedBy = new Set([...output().matchAll(/"worker":(\d+),[^\n]*"msg":"http request"/g)].map((m) => m[1]));
      expect(servedBy).toEqual(new Set(['1', '2']));
      // The primary's scrape adds up both workers.
      const scrape = await (await fetch(metricsUrl!)).text();
      expect(scrape).toMatch(/^shell_auth_http_requests_total\{route="GET \/readyz",status="200"\} 20$/m);
      expect(scrape).toMatch(/^shell_auth_http_requests_total\{route="unknown",status="404"\} 20$/m);

      const workers = childrenOf(service.child.pid!);
      expect(workers).toHaveLength(2);
      process.kill(workers[0]!, 'SIGKILL');
      await until(() => output().includes('"msg":"worker died; starting another"'), 'the death noticed', output);
      await until(() => count(output(), '"msg":"replacement worker listening"') === 1, 'a new worker listening', output);
      expect(await getFresh(`${url}/readyz`)).toBe(200);
      const replaced = childrenOf(service.child.pid!);
      expect(replaced).toHaveLength(2);
      expect(replaced).not.toContain(workers[0]);

      // Both at once (the primary must not be left with nothing to do and quietly exit).
      for (const pid of replaced) process.kill(pid, 'SIGKILL');
      await until(() => count(output(), '"msg":"replacement worker listening"') === 3, 'two new workers listening', output);
      expect(service.child.exitCode).toBeNull();
      const third = childrenOf(service.child.pid!);
      expect(third).toHaveLength(2);
      // With no worker left the shared port was closed; HTTP_PORT=0 then picks a new one (a fixed port is bound again).
      const latestUrl = [...output().matchAll(/"url":"(http:\/\/[^"]+)".*"msg":"replacement worker listening"/g)].at(-1)![1]!;
      expect(await getFresh(`${latestUrl}/readyz`)).toBe(200);

      service.child.kill('SIGTERM');
      expect(await service.exited).toBe(0);
      expect(count(output(), '"msg":"drained"')).toBe(2);
      for (const pid of third) expect(fs.existsSync(`/proc/${pid}`) && !fs.readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ')).toBe(false);
    },
    90_000,
  );

  it('each worker closes the HTTP connections beyond its HTTP_MAX_CONNECTIONS at once (none are handed back to the primary)', async () => {
    const service = spawnService({ WORKERS: '2', DATABASE_URL: await freshPostgresUrl({ migrated: false }), HTTP_MAX_CONNECTIONS: '3' });
    const { output } = service;
    await until(() => count(output(), '"msg":"HTTP API listening"') === 1, 'two workers listening', output);
    const url = new URL(/"url":"(http:\/\/[^"]+)".*"msg":"HTTP API listening"/.exec(output())![1]!);
    const sockets: net.Socket[] = [];
    try {
      const closed = await Promise.all(
        Array.from({ length: 16 }, () => {
          const socket = net.connect({ port: Number(url.port), host: url.hostname, localAddress: '127.0.0.12' });
          sockets.push(socket);
          socket.on('error', () => undefined);
          return new Promise<boolean>((resolve) => {
            socket.once('close', () => resolve(true));
            setTimeout(() => resolve(false), 1_500);
          });
        }),
      );
      // The primary deals connections to whichever worker is free, not strictly in turn: a busy worker
      // may get fewer than 3. Each worker holds at most 3 and closes the rest at once...
      const held = sockets.filter((_, i) => !closed[i]);
      expect(held.length).toBeGreaterThanOrEqual(1);
      expect(held.length).toBeLessThanOrEqual(6);
      // ...and every connection still open is a worker's, not parked in the primary: each one answers.
      const answers = await Promise.all(held.map((socket) => firstStatusLine(socket)));
      expect(answers).toEqual(held.map(() => 'HTTP/1.1 200 OK'));
    } finally {
      for (const socket of sockets) socket.destroy();
    }
    // Room again once the workers have seen those sockets close (they may not have yet).
    let status: number | string = 0;
    for (let i = 0; i < 50 && status !== 200; i++) {
      status = await getFresh(`${url.origin}/healthz`).catch((err: Error) => err.message);
      if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(status).toBe(200);
  });

  it('more than one worker on the embedded database is refused with the reason', async () => {
    const service = spawnService({ WORKERS: '2' });
    expect(await service.exited).toBe(1);
    expect(service.output()).toContain('shell-auth: WORKERS="2": more than one worker needs DATABASE_URL: the embedded database serves one process');
  });
});
