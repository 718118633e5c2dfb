import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { freshPostgresUrl } from '../support/database.js';
import { killSpawnedServices, spawnService } from '../support/service.js';

// A SIGTERM that reaches a worker before its handler is installed (while node starts or the
// modules load) used to kill it by signal, and the primary, draining, counted that as a failure:
// exit 1 on a normal stop. Stopped at any point of its start, the service exits 0.

afterAll(killSpawnedServices);

describe('WORKERS: a stop while the workers are starting', () => {
  it('SIGTERM to the primary as soon as it has forked: exit 0, every time', async () => {
    const url = await freshPostgresUrl();
    const codes: Array<number | null> = [];
    for (let round = 0; round < 5; round++) {
      const service = spawnService({ WORKERS: '2', DATABASE_URL: url });
      // At once, on the line itself (not on a poll): the workers are then still loading.
      let sent: () => void = () => {};
      const signalled = new Promise<void>((resolve) => (sent = resolve));
      service.child.stdout!.on('data', () => {
        if (!service.output().includes('"msg":"primary started the workers"') || service.child.killed) return;
        service.child.kill('SIGTERM');
        sent();
      });
      const within = (ms: number) => new Promise<string>((resolve) => setTimeout(() => resolve(`not within ${ms} ms`), ms));
      expect(await Promise.race([signalled.then(() => 'signalled'), service.exited.then((c) => `exited ${c}`), within(45_000)]), service.output()).toBe('signalled');
      const code = await Promise.race([service.exited, within(20_000)]);
      // Really early: no worker had started serving.
      expect(service.output()).not.toContain('"msg":"HTTP API listening"');
      codes.push(code as number | null);
      expect(code, service.output()).toBe(0);
    }
    expect(codes).toEqual([0, 0, 0, 0, 0]);
  }, 300_000);
});

describe('a stop while the modules load', () => {
  it('SIGTERM while main.js is still loading its modules: exit 0, not death by signal', async () => {
    // A module hook holds back the loading of app.js (the bulk of the service) and says when it
    // was asked for it: the signal lands exactly in the window where the modules load.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-slow-load-'));
    const marker = path.join(dir, 'loading-app');
    fs.writeFileSync(
      path.join(dir, 'hooks.mjs'),
      `import fs from 'node:fs';
export async function resolve(specifier, context, next) {
  if (specifier === './process/app.js' && context.parentURL?.endsWith('/dist/src/main.js')) {
    fs.writeFileSync(${JSON.stringify(marker)}, '');
    await new Promise((done) => setTimeout(done, 5000));
  }
  return next(specifier, context);
}\n`,
    );
    fs.writeFileSync(path.join(dir, 'register.mjs'), `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(path.join(dir, 'hooks.mjs')).href)});\n`);
    const service = spawnService({ NODE_OPTIONS: `--import=${pathToFileURL(path.join(dir, 'register.mjs')).href}` });
    for (let i = 0; i < 400 && !fs.existsSync(marker); i++) await new Promise((resolve) => setTimeout(resolve, 25));
    expect(fs.existsSync(marker), service.output()).toBe(true);
    service.child.kill('SIGTERM');
    expect(await service.exited).toBe(0);
    expect(service.child.signalCode).toBeNull();
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
