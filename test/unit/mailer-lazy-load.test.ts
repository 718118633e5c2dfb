import { describe, expect, it } from 'vitest';
import { runNodeForJson } from '../support/processes.js';

/**
 * nodemailer is imported at a process's first message (src/mail/mailer.ts), so a process that
 * sends none does not hold it (~2 MB of live heap, measured with a heap snapshot of the idle
 * service). Checked in a process of its own: a module-resolution hook reports every module URL
 * Node loads, read back synchronously from its message port.
 */
describe('the mailers load nodemailer at their first message', () => {
  it('not when made, and then the message is written', () => {
    const hook = `
      let port;
      export function initialize(data) { port = data.port; }
      export async function load(url, context, next) { port.postMessage(url); return next(url, context); }
    `;
    const script = `
      import fs from 'node:fs';
      import os from 'node:os';
      import path from 'node:path';
      import { register } from 'node:module';
      import { MessageChannel, receiveMessageOnPort } from 'node:worker_threads';
      const { port1, port2 } = new MessageChannel();
      register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hook)}), { data: { port: port2 }, transferList: [port2] });
      const loaded = [];
      const wasLoaded = (part) => {
        for (let m; (m = receiveMessageOnPort(port1)); ) loaded.push(m.message);
        return loaded.some((url) => url.includes(part));
      };
      const nodemailerLoaded = () => wasLoaded('/node_modules/nodemailer/');
      const { outboxMailer, smtpMailer } = await import('./src/mail/mailer.ts');
      const { default: pino } = await import('pino');
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lazy-mailer-'));
      const smtp = smtpMailer('smtp://127.0.0.1:1', 'shell-auth@example.com');
      const outbox = outboxMailer(dir, 'shell-auth@example.com', pino({ level: 'silent' }));
      const atStart = { mailerModule: wasLoaded('/src/mail/mailer.ts'), nodemailer: nodemailerLoaded() };
      await outbox.sendVerification({
        to: 'lazy@example.com',
        link: 'http://localhost/verify?token=abc',
        ttlMs: 60000,
        facts: { email: 'lazy@example.com', keyType: 'ssh-ed25519', fingerprint: 'SHA256:x', requestedIp: null, requestedAt: new Date(), note: null, channel: 'ssh' },
      });
      const afterSend = nodemailerLoaded();
      const emails = fs.readdirSync(dir).filter((name) => name.endsWith('.eml'));
      const eml = fs.readFileSync(path.join(dir, emails[0]), 'utf8');
      smtp.close();
      fs.rmSync(dir, { recursive: true, force: true });
      port1.close();
      console.log(JSON.stringify({ atStart, afterSend, emails: emails.length, to: /^To: lazy@example.com$/m.test(eml) }));
    `;
    const result = runNodeForJson<{
      atStart: { mailerModule: boolean; nodemailer: boolean };
      afterSend: boolean;
      emails: number;
      to: boolean;
    }>(['--import', 'tsx', '--input-type=module', '-e', script], 20_000);
    // The hook saw the mailer's own module load (so it works), but not nodemailer's.
    expect(result.atStart).toEqual({ mailerModule: true, nodemailer: false });
    expect(result.afterSend).toBe(true);
    expect(result.emails).toBe(1);
    expect(result.to).toBe(true);
  });
});
