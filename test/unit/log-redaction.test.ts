import { execFileSync, spawn } from 'node:child_process';
import path from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, redactNested } from '../../src/observability/log.js';

function capture() {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      callback();
    },
  });
  return { sink, lines: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>) };
}

describe('log redaction', () => {
  it('censors secret fields at the top level and one level down, in lines and in child bindings, without touching the caller objects', () => {
    const { sink, lines } = capture();
    const log = createLogger('info', sink);
    const nested = { token: 'tok-1', kept: 1 };
    const err = Object.assign(new Error('boom'), { authorization: 'Bearer abc' });
    log.info({ api_key: 'key-1', nested, err, list: [1, 2], plain: 'visible' }, 'line');
    const child = log.child({ secret: 'sec-1', request: { api_key: 'key-2', id: 7 } });
    child.child({ grand: { token: 'tok-2' } }).info({ ok: true }, 'grandchild');

    const [line, grandchild] = lines();
    expect(line).toMatchObject({ api_key: '[redacted]', nested: { token: '[redacted]', kept: 1 }, list: [1, 2], plain: 'visible', msg: 'line' });
    // Still an error to pino's serializer: its message and stack are kept.
    expect(line!.err).toMatchObject({ type: 'Error', message: 'boom', authorization: '[redacted]' });
    expect(grandchild).toMatchObject({ secret: '[redacted]', request: { api_key: '[redacted]', id: 7 }, grand: { token: '[redacted]' }, ok: true });
    expect(JSON.stringify(lines())).not.toMatch(/key-1|key-2|tok-1|tok-2|sec-1|Bearer abc/);
    expect(nested.token).toBe('tok-1');
    expect(err.authorization).toBe('Bearer abc');
  });

  it('hands back the same object when nothing is secret (no copy on the hot path)', () => {
    const fields = { method: 'GET', path: '/api/whoami', status: 200, nested: { id: 1 } };
    expect(redactNested(fields)).toBe(fields);
  });
});

describe('stdout once per turn', () => {
  const run = (body: string) =>
    execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `import { createLogger } from './src/observability/log.ts';\n${body}`], {
      cwd: path.resolve(import.meta.dirname, '../..'),
      encoding: 'utf8',
      // A synchronous call: vitest's timeout cannot interrupt it, so it has its own (the child is killed).
      timeout: 20_000,
    });

  it('writes every line logged just before process.exit, whole and in order', () => {
    const out = run(`const log = createLogger('info');
      for (let i = 0; i < 500; i++) log.info({ i, pad: 'x'.repeat(i % 97) }, 'line');
      process.exit(3 - 3);`);
    const lines = out.trimEnd().split('\n').map((line) => JSON.parse(line) as { i: number });
    expect(lines.map((line) => line.i)).toEqual(Array.from({ length: 500 }, (_, i) => i));
  });

  it('a line is written at the end of its turn: a process that goes on running has already written it', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `import { createLogger } from './src/observability/log.ts';
      createLogger('info').info('still running');
      setInterval(() => {}, 1000);`], { cwd: path.resolve(import.meta.dirname, '../..'), stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        child.stdout.setEncoding('utf8').on('data', (chunk: string) => resolve(chunk));
        child.once('exit', () => reject(new Error('exited first')));
      });
      expect((JSON.parse(line) as { msg: string }).msg).toBe('still running');
      expect(child.exitCode).toBeNull();
    } finally {
      child.kill('SIGKILL');
    }
  });
});
