import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { toAppError } from '../../src/core/errors.js';
import { freshPostgresUrl } from '../support/database.js';
import { killSpawnedServices, listeningOf, outputMatching, spawnService } from '../support/service.js';

// The machine out of something (file descriptors, memory, disk) is an outage of the moment, like
// a lost database: 503 "Service temporarily unavailable", never 500 with a stack trace.

afterAll(killSpawnedServices);

const UNAVAILABLE_BODY = '{"success":false,"error":"Service temporarily unavailable; try again later"}';

describe('local resource faults', () => {
  it('map to UNAVAILABLE (503), as a lost database does; other errors stay INTERNAL', () => {
    const errno = (code: string) => Object.assign(new Error(`connect ${code} 127.0.0.1:5432 - Local (undefined:undefined)`), { code });
    for (const code of ['EMFILE', 'ENFILE', 'ENOMEM', 'ENOBUFS', 'EAGAIN', 'ENOSPC']) {
      expect(toAppError(errno(code)).status, code).toBe(503);
    }
    // Postgres out of its own resources, SQLSTATE class 53 (disk_full, out_of_memory, too_many_connections).
    for (const code of ['53000', '53100', '53200', '53300', '53400']) expect(toAppError(errno(code)).status, code).toBe(503);
    expect(toAppError(errno('ENOENT')).status).toBe(500);
    expect(toAppError(new TypeError('x is undefined')).status).toBe(500);
  });

  let logOfTheFault = '';

  /** The descriptor numbers `pid` has open now. */
  const openFds = (pid: number) => fs.readdirSync(`/proc/${pid}/fd`).map(Number);

  /** Raw HTTP/1.1 on an open socket: the status and body of one answer. */
  function get(socket: net.Socket, path: string): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      let text = '';
      const onData = (chunk: Buffer) => {
        text += chunk.toString('latin1');
        const end = text.indexOf('\r\n\r\n');
        if (end < 0) return;
        const length = Number(/content-length: *(\d+)/i.exec(text.slice(0, end))?.[1] ?? NaN);
        if (text.length < end + 4 + length) return;
        socket.off('data', onData);
        resolve({ status: Number(text.slice(9, 12)), body: text.slice(end + 4, end + 4 + length) });
      };
      socket.on('data', onData);
      socket.once('error', reject);
      socket.write(`GET ${path} HTTP/1.1\r\nhost: test\r\n\r\n`);
    });
  }

  it(
    'out of file descriptors (a real EMFILE opening a database connection): 503 with the contract body, the process stays up and recovers',
    async () => {
      const service = spawnService({ DATABASE_URL: await freshPostgresUrl() });
      const { httpUrl } = await listeningOf(service);
      const pid = service.child.pid!;
      const { port } = new URL(httpUrl);

      // Connections opened while descriptors remain (a client's, already accepted), more than the
      // pool keeps idle, so the requests below need new database connections.
      const before = openFds(pid).length;
      const sockets = await Promise.all(
        Array.from({ length: 10 }, () => new Promise<net.Socket>((resolve, reject) => {
          const socket = net.connect(Number(port), '127.0.0.1', () => resolve(socket));
          socket.once('error', reject);
        })),
      );
      for (let i = 0; i < 100 && openFds(pid).length < before + sockets.length; i++) await new Promise((resolve) => setTimeout(resolve, 20));

      // The soft limit down to the lowest free descriptor number: every new descriptor is EMFILE.
      const hard = /(\d+|unlimited)\s*$/.exec(execFileSync('prlimit', ['--pid', String(pid), '--nofile', '--raw', '--noheadings', '-o', 'HARD']).toString().trim())![1]!;
      const soft = execFileSync('prlimit', ['--pid', String(pid), '--nofile', '--raw', '--noheadings', '-o', 'SOFT']).toString().trim();
      const used = new Set(openFds(pid));
      let lowestFree = 0;
      while (used.has(lowestFree)) lowestFree++;
      execFileSync('prlimit', ['--pid', String(pid), `--nofile=${lowestFree}:${hard}`]);
      let answers: Array<{ status: number; body: string }>;
      try {
        answers = await Promise.all(sockets.map((socket) => get(socket, '/healthz')));
      } finally {
        execFileSync('prlimit', ['--pid', String(pid), `--nofile=${soft}:${hard}`]);
      }
      const statuses = answers.map((a) => a.status);
      expect(statuses.every((s) => s === 200 || s === 503), statuses.join(',')).toBe(true);
      const refused = answers.filter((a) => a.status === 503);
      expect(refused.length, statuses.join(',')).toBeGreaterThan(0);
      for (const answer of refused) expect(answer.body).toBe(UNAVAILABLE_BODY);
      // Log lines go out once per event-loop turn (src/observability/log.ts), so the line may
      // follow the 503s that it describes by a moment: wait for it rather than race it.
      await outputMatching(service, /"code":"EMFILE"/, 10_000);

      // Descriptors back: the same process answers again.
      expect(service.child.exitCode).toBeNull();
      expect((await fetch(`${httpUrl}/healthz`)).status).toBe(200);
      for (const socket of sockets) socket.destroy();
      expect(service.child.exitCode).toBeNull();
      logOfTheFault = service.output();
    },
    60_000,
  );

  it('is logged as one line at warn with its code, no stack trace (an outage, not a bug)', () => {
    const lines = logOfTheFault.split('\n').filter((line) => line.includes('"path":"/healthz"') && line.includes('EMFILE'));
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) {
      const entry = JSON.parse(line) as { level: number; msg: string; code?: string; error?: string };
      expect(entry.level, line).toBe(40);
      expect(entry).toMatchObject({ msg: 'request failed: service unavailable', code: 'EMFILE', error: expect.stringContaining('EMFILE') });
      expect(line).not.toContain('stack');
    }
  });
});
