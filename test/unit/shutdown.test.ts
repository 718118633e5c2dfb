import http from 'node:http';
import net from 'node:net';
import type { Logger } from 'pino';
import { afterEach, expect, it } from 'vitest';
import { shutdownOf, type Running } from '../../src/process/shutdown.js';

// The order of a stop, with stand-ins for everything but the HTTP server (a real one, so its
// connections are really closed).

const servers: http.Server[] = [];
afterEach(() => {
  for (const server of servers.splice(0)) server.closeAllConnections();
});

async function running(options: { sshDrainHangs?: boolean } = {}) {
  const steps: string[] = [];
  let cutSshDrain = () => {};
  const server = http.createServer((_req, res) => res.end('ok'));
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  server.on('close', () => steps.push('http closed'));
  const parts: Running = {
    ssh: {
      listen: async () => ({ address: '127.0.0.1', family: 'IPv4', port: 0 }),
      listening: () => true,
      drain: async (graceMs) => {
        steps.push(`ssh drain ${graceMs}`);
        // A hanging drain ends when the door is closed, as the real one does.
        if (options.sshDrainHangs) await new Promise<void>((resolve) => (cutSshDrain = resolve));
        steps.push('ssh drained');
      },
      close: async () => {
        steps.push('ssh close');
        cutSshDrain();
      },
    },
    http: server,
    mailSender: { wake: () => undefined, stop: async (waitMs = 0) => void steps.push(`mail stop ${waitMs > 0 ? 'waiting' : 'now'}`) },
    core: { deps: {} as Running['core']['deps'], database: {} as Running['core']['database'], close: async () => void steps.push('core close') },
    scrapes: { url: 'http://127.0.0.1:0/metrics', close: async () => void steps.push('scrapes close') },
    log: { info: (_fields: unknown, message: string) => steps.push(`log ${message.split(':')[0]}`) } as unknown as Logger,
    stopServing: () => steps.push('stop serving'),
  };
  const port = (server.address() as net.AddressInfo).port;
  return { steps, server, port, ...shutdownOf(parts) };
}

it('drain: stops serving, drains both doors, then lets the mail sender finish, closes the core, then the scrape listener', async () => {
  const app = await running();
  await app.drain(5_000);
  expect(app.steps).toEqual([
    'stop serving',
    'log draining',
    'ssh drain 5000',
    'ssh drained',
    'http closed',
    'mail stop waiting',
    'core close',
    'scrapes close',
    'log drained',
  ]);
  expect(app.server.listening).toBe(false);
});

it('drain waits for an HTTP request in flight, and closes its keep-alive connection once idle', async () => {
  const app = await running();
  const agent = new http.Agent({ keepAlive: true });
  const first = await fetchText(app.port, agent);
  expect(first).toBe('ok');
  const started = Date.now();
  await app.drain(10_000);
  expect(Date.now() - started).toBeLessThan(5_000); // not the grace: the idle connection went at once
  agent.destroy();
});

it('drain and close asked again give the same shutdown; close during a drain cuts it short', async () => {
  const app = await running({ sshDrainHangs: true });
  const draining = app.drain(60_000);
  expect(app.drain(60_000)).toBe(draining);
  const closing = app.close();
  expect(closing).toBe(draining);
  await closing;
  expect(app.steps.slice(3)).toEqual(['stop serving', 'ssh close', 'mail stop now', 'ssh drained', 'http closed', 'mail stop waiting', 'core close', 'scrapes close', 'log drained']);
});

it('close alone: cuts everything, then releases without waiting for mail', async () => {
  const app = await running();
  await app.close();
  expect(app.steps).toEqual(['stop serving', 'ssh close', 'mail stop now', 'ssh close', 'http closed', 'mail stop now', 'core close', 'scrapes close']);
});

function fetchText(port: number, agent: http.Agent): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}
