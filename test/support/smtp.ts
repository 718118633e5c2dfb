import type { AddressInfo } from 'node:net';
import { simpleParser, type ParsedMail } from 'mailparser';
import { SMTPServer } from 'smtp-server';

export type CapturedMail = { to: string; subject: string; text: string; html: string; link: string | null };

/** A real SMTP server in-process that keeps every message it receives. */
export async function startSmtpServer() {
  const messages: CapturedMail[] = [];
  const waiters: Array<() => void> = [];
  const taken = new Set<CapturedMail>();
  const server = new SMTPServer({
    disabledCommands: ['AUTH', 'STARTTLS'],
    logger: false,
    onData(stream, _session, callback) {
      simpleParser(stream)
        .then((mail: ParsedMail) => {
          const text = mail.text ?? '';
          const to = Array.isArray(mail.to) ? mail.to[0]?.text ?? '' : mail.to?.text ?? '';
          messages.push({
            to,
            subject: mail.subject ?? '',
            text,
            html: typeof mail.html === 'string' ? mail.html : '',
            link: /https?:\/\/\S+\/shell-auth\/verify\?token=[A-Za-z0-9_-]+/.exec(text)?.[0] ?? null,
          });
          waiters.splice(0).forEach((wake) => wake());
          callback();
        })
        .catch(callback);
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as AddressInfo).port;
  return {
    url: `smtp://127.0.0.1:${port}`,
    port,
    messages,
    /** The oldest message to `to` not yet taken by an earlier call; waits for one if there is none. */
    async waitForMail(to: string, timeoutMs = 10_000): Promise<CapturedMail> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = messages.find((m) => !taken.has(m) && m.to.toLowerCase().includes(to.toLowerCase()));
        if (found) {
          taken.add(found);
          return found;
        }
        if (Date.now() > deadline) throw new Error(`no mail to ${to} within ${timeoutMs} ms`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 100);
        });
      }
    },
    mailsTo(to: string): CapturedMail[] {
      return messages.filter((m) => m.to.toLowerCase().includes(to.toLowerCase()));
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export type SmtpServer = Awaited<ReturnType<typeof startSmtpServer>>;
