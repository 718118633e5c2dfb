import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { heapSettings } from '../../src/process/heap.js';
import { openFileLimit } from '../../src/process/open-files.js';
import { announceHttpDoor, announceSshDoor, prepareDoors, type StartupLog } from '../../src/process/startup-log.js';

/** Each line as pino would get it: level, then its arguments. */
function recordingLog() {
  const lines: unknown[][] = [];
  const log = { info: (...args: unknown[]) => lines.push(['info', ...args]), warn: (...args: unknown[]) => lines.push(['warn', ...args]) };
  return { lines, log: log as unknown as StartupLog };
}

const tempDir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-startup-log-'));

it('prepareDoors: settings warnings, what the heap settings did, then the host key it made (made once), then the caps it lowered', () => {
  const config = loadConfig({ DATA_DIR: tempDir(), HOST_KEYS_DIR: tempDir(), HTTP_TRUST_WINDOW: '0' });
  const { lines, log } = recordingLog();
  const { hostKey, caps } = prepareDoors(config, log);
  expect(lines.map(([level, ...args]) => `${level}: ${args.at(-1)}`)).toEqual([
    'warn: SMTP_URL is not set: emails are written to the outbox and their links logged (development only)',
    expect.stringMatching(/^info: HTTP_TRUST_WINDOW=0: /),
    'info: V8 heap settings',
    'info: SSH host key',
  ]);
  expect(lines[2]![1]).toEqual(heapSettings());
  expect(lines[3]![1]).toEqual({ fingerprint: hostKey.fingerprint, path: hostKey.path, created: true });
  expect(fs.existsSync(hostKey.path)).toBe(true);
  expect(caps).toMatchObject({ http: config.http, ssh: config.ssh, lowered: null });

  const again = recordingLog();
  expect(prepareDoors(config, again.log).hostKey).toMatchObject({ created: false, fingerprint: hostKey.fingerprint });
});

it.skipIf(openFileLimit() === null)('prepareDoors in a cluster primary: the caps warning says it holds in each worker', () => {
  const config = loadConfig({ DATA_DIR: tempDir(), HOST_KEYS_DIR: tempDir(), SMTP_URL: 'smtp://127.0.0.1:25', HTTP_MAX_CONNECTIONS: '1000000', SSH_MAX_CONNECTIONS: '1000000' });
  const single = recordingLog();
  expect(prepareDoors(config, single.log).caps.lowered).not.toBeNull();
  expect(single.lines.at(-1)).toEqual(['warn', expect.stringMatching(/^connection caps lowered: the open-file limit /)]);
  const primary = recordingLog();
  prepareDoors(config, primary.log, { forEachWorker: true });
  expect(primary.lines.at(-1)).toEqual(['warn', expect.stringMatching(/^connection caps lowered \(in each worker\): the open-file limit /)]);
});

it('the listening lines: the same fields for one process and a cluster primary, which adds its workers last', () => {
  const config = loadConfig({ PUBLIC_URL: 'https://keys.example.com' });
  const { lines, log } = recordingLog();
  announceSshDoor(log, config, { port: 2222, hint: 'ssh -p 2222 keys@keys.example.com' });
  announceHttpDoor(log, config, { url: 'http://127.0.0.1:3000', database: 'pglite' });
  announceSshDoor(log, config, { port: 2222, hint: 'ssh -p 2222 keys@keys.example.com' }, { workers: 2 });
  announceHttpDoor(log, config, { url: 'http://127.0.0.1:3000', database: 'postgres' }, { workers: 2 });
  expect(lines.map((line) => JSON.stringify(line))).toEqual([
    '["info",{"port":2222,"user":"keys","try":"ssh -p 2222 keys@keys.example.com"},"SSH door listening"]',
    '["info",{"url":"http://127.0.0.1:3000","publicUrl":"https://keys.example.com","database":"pglite"},"HTTP API listening"]',
    '["info",{"port":2222,"user":"keys","try":"ssh -p 2222 keys@keys.example.com","workers":2},"SSH door listening"]',
    '["info",{"url":"http://127.0.0.1:3000","publicUrl":"https://keys.example.com","database":"postgres","workers":2},"HTTP API listening"]',
  ]);
});
