import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Transporter } from 'nodemailer';
import type { Logger } from 'pino';
import type { Mailer, NoticeMail, VerificationMail } from '../core/index.js';
import { renderNoticeEmail } from './notice-email.js';
import { renderVerificationEmail, type RenderedMail } from './verification-email.js';

/**
 * nodemailer (~2 MB of the idle service's live heap) is imported at a process's first message, not at start:
 * a process that sends none (most, under WORKERS or behind a balancer) never holds it. A failed
 * import is not kept, so the outbox's next attempt tries again.
 */
function lazyTransport(options: Parameters<typeof import('nodemailer').createTransport>[0]): { get(): Promise<Transporter>; close(): void } {
  let transport: Promise<Transporter> | undefined;
  return {
    get: () =>
      (transport ??= import('nodemailer').then(
        (nodemailer) => nodemailer.default.createTransport(options),
        (err: unknown) => {
          transport = undefined;
          throw err;
        },
      )),
    close: () => void transport?.then((t) => t.close(), () => undefined),
  };
}

/**
 * Real mail over SMTP. Short timeouts: a dead mail server fails the attempt (the outbox retries it)
 * rather than holding the sender; together they stay well inside the outbox's send lease.
 */
export function smtpMailer(smtpUrl: string, from: string): Mailer & { close(): void } {
  const url = new URL(smtpUrl);
  url.searchParams.set('connectionTimeout', '10000');
  url.searchParams.set('greetingTimeout', '10000');
  url.searchParams.set('socketTimeout', '20000');
  const transport = lazyTransport(url.toString());
  const send = async (rendered: RenderedMail, options: { signal?: AbortSignal }) => {
    try {
      // Aborting closes this message's SMTP connection: a send the outbox gave up on is ended.
      const ready = await transport.get();
      options.signal?.throwIfAborted(); // given up on while nodemailer loaded
      await ready.sendMail({ from, ...rendered, ...(options.signal ? { signal: options.signal } : {}) });
    } catch (err) {
      // 5xx is the server's final word on this message (RFC 5321 4.2.1); 4xx and network errors are worth a retry.
      const code = (err as { responseCode?: unknown }).responseCode;
      if (typeof code === 'number' && code >= 500 && code < 600) Object.assign(err as object, { permanent: true });
      throw err;
    }
  };
  return {
    sendVerification: (mail: VerificationMail, options: { signal?: AbortSignal } = {}) => send(renderVerificationEmail(mail), options),
    sendNotice: (mail: NoticeMail, options: { signal?: AbortSignal } = {}) => send(renderNoticeEmail(mail), options),
    close: () => transport.close(),
  };
}

/**
 * Development transport (no SMTP_URL): each message becomes an .eml file under DATA_DIR/outbox/,
 * and its link is logged and appended, alone on its line, to DATA_DIR/outbox/links.txt (the .eml holds it
 * quoted-printable, wrapped: not something to copy from), so a fresh machine can complete the
 * flow without a mail server.
 */
export function outboxMailer(outboxDir: string, from: string, log: Logger): Mailer {
  const transport = lazyTransport({ streamTransport: true, buffer: true, newline: 'unix' });
  const writeEml = async (rendered: RenderedMail) => {
    const info = await (await transport.get()).sendMail({ from, ...rendered });
    await fs.mkdir(outboxDir, { recursive: true, mode: 0o700 });
    const file = path.join(outboxDir, `${new Date().toISOString().replace(/[:.]/g, '-')}-${randomBytes(3).toString('hex')}.eml`);
    await fs.writeFile(file, info.message as Buffer, { mode: 0o600 });
    return file;
  };
  return {
    async sendNotice(mail: NoticeMail) {
      const file = await writeEml(renderNoticeEmail(mail));
      log.info({ to: mail.to, file, notice: mail.notice.kind }, 'dev mail transport: notice email written to outbox');
    },
    async sendVerification(mail: VerificationMail) {
      const file = await writeEml(renderVerificationEmail(mail));
      // One line per mail, newest last, the link alone: `tail -1 data/outbox/links.txt` is ready to
      // open (or `xdg-open "$(tail -1 …)"`); who it went to, and when, are in the log line below.
      await fs.appendFile(path.join(outboxDir, 'links.txt'), `${mail.link}\n`, { mode: 0o600 });
      // The one place a link is logged: development only, with no real mail server configured.
      log.info({ to: mail.to, file, link: mail.link }, 'dev mail transport: verification email written to outbox');
    },
  };
}
