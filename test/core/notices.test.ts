import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deliverNextMail, NOTICE_GIVE_UP_MS, queueNotice, type Notice, type NoticeMail } from '../../src/core/index.js';
import { smtpMailer } from '../../src/mail/mailer.js';
import { renderNoticeEmail } from '../../src/mail/notice-email.js';
import { startTestCore, type TestCore } from '../support/core.js';
import { uniqueEmail } from '../support/keys.js';
import { startSmtpServer, type SmtpServer } from '../support/smtp.js';

// Notices (expiry, revocation) share the verification mail's outbox: written in the caller's
// transaction, delivered by the sender loop, retried, given up on after a day.

let core: TestCore;
let smtp: SmtpServer;
beforeAll(async () => {
  core = await startTestCore();
  smtp = await startSmtpServer();
});
afterAll(async () => {
  await core?.close();
  await smtp?.close();
});

const expiry = (label: string): Notice => ({
  kind: 'key_expiry',
  keys: [{ id: '0d5c7e4e-8d43-4bb5-9a53-3b8c4f0f6a11', label, org_name: 'acme', expires_at: '2026-12-09T10:00:00.000Z' }],
  rotate_command: 'ssh -p 2222 keys@auth.example.com',
});

async function drain() {
  const outcomes: string[] = [];
  for (let o = await deliverNextMail(core.deps); o !== 'idle'; o = await deliverNextMail(core.deps)) outcomes.push(o);
  return outcomes;
}

function rowsTo(to: string) {
  return core.deps.db.selectFrom('mail_outbox').selectAll().where('recipient', '=', to).execute();
}

describe('a notice', () => {
  it('exists exactly when its transaction commits, and is delivered once with what it says', async () => {
    await drain();
    const to = uniqueEmail('notice');
    await core.deps.db
      .transaction()
      .execute(async (trx) => {
        await queueNotice(trx, core.deps, { to, notice: expiry('rolled-back') });
        throw new Error('the cause did not happen');
      })
      .catch(() => undefined);
    expect(await rowsTo(to)).toEqual([]);

    await core.deps.db.transaction().execute((trx) => queueNotice(trx, core.deps, { to, notice: expiry('ci-runner') }));
    const sentBefore = core.notices.length;
    expect(await drain()).toEqual(['sent']);
    expect(core.notices.slice(sentBefore)).toEqual([{ to, notice: expiry('ci-runner') }]);
    const [row] = await rowsTo(to);
    expect(row).toMatchObject({ kind: 'notice', request_id: null, token: null });
    expect(row!.sent_at).not.toBeNull();
    expect(await drain()).toEqual([]);
  });

  it('is retried while the mail server is away, and given up on after a day', async () => {
    await drain();
    const to = uniqueEmail('notice-retry');
    const realMailer = core.deps.mailer;
    const tries: string[] = [];
    core.deps.mailer = {
      ...realMailer,
      async sendNotice(mail: NoticeMail) {
        tries.push(mail.to);
        throw new Error('421 4.3.2 service not available');
      },
    };
    try {
      await core.deps.db.transaction().execute((trx) => queueNotice(trx, core.deps, { to, notice: expiry('retry-me') }));
      expect(await drain()).toEqual(['retry']);
      core.clock.advance(NOTICE_GIVE_UP_MS / 2);
      expect(await drain()).toEqual(['retry']);
      expect(tries).toEqual([to, to]);
      core.clock.advance(NOTICE_GIVE_UP_MS / 2);
      expect(await drain()).toEqual(['abandoned']);
      const [row] = await rowsTo(to);
      expect(row!.abandoned_at).not.toBeNull();
      expect(row!.last_error).toContain('421');
    } finally {
      core.deps.mailer = realMailer;
    }
  });

  it('a 5xx from the mail server gives it up at once', async () => {
    await drain();
    const to = uniqueEmail('notice-5xx');
    const realMailer = core.deps.mailer;
    core.deps.mailer = {
      ...realMailer,
      async sendNotice() {
        throw Object.assign(new Error('550 5.1.1 mailbox unavailable'), { permanent: true });
      },
    };
    try {
      await core.deps.db.transaction().execute((trx) => queueNotice(trx, core.deps, { to, notice: expiry('refused') }));
      expect(await drain()).toEqual(['abandoned']);
    } finally {
      core.deps.mailer = realMailer;
    }
  });
});

describe('notice emails over real SMTP', () => {
  it('name each key, what to run, and escape what the user typed in HTML', async () => {
    const mailer = smtpMailer(smtp.url, 'shell-auth <no-reply@example.com>');
    try {
      const to = uniqueEmail('notice-smtp');
      const notice: Notice = {
        kind: 'key_expiry',
        keys: [
          { id: '11111111-2222-4333-8444-555555555555', label: '<b>ci</b>', org_name: 'acme', expires_at: '2026-12-09T10:00:00.000Z' },
          { id: '66666666-7777-4888-8999-aaaaaaaaaaaa', label: 'nightly', org_name: 'acme', expires_at: '2026-12-09T11:00:00.000Z' },
        ],
        rotate_command: 'ssh -p 2222 keys@auth.example.com',
      };
      await mailer.sendNotice({ to, notice });
      const mail = await smtp.waitForMail(to);
      expect(mail.subject).toBe('2 of your API keys expire soon');
      expect(mail.text).toContain('ssh -p 2222 keys@auth.example.com rotate 11111111-2222-4333-8444-555555555555');
      expect(mail.text).toContain('ssh -p 2222 keys@auth.example.com rotate 66666666-7777-4888-8999-aaaaaaaaaaaa');
      expect(mail.text).toContain('expires 2026-12-09T10:00:00.000Z');
      expect(mail.html).toContain('&#60;b&#62;ci&#60;/b&#62;');
      expect(mail.html).not.toContain('<b>ci</b>');

      const leaked = renderNoticeEmail({
        to,
        notice: { kind: 'key_revoked', reason: 'leaked', keys: notice.keys.slice(1), url: 'https://github.com/o/r/blob/x/.env', source: 'content' },
      });
      expect(leaked.text).toContain('Where it was found: https://github.com/o/r/blob/x/.env');
      const holder = renderNoticeEmail({ to, notice: { kind: 'key_revoked', reason: 'holder', keys: notice.keys.slice(1), address: '198.51.100.7' } });
      expect(holder.text).toContain('revoked by someone holding it, from 198.51.100.7');
    } finally {
      mailer.close();
    }
  });
});

describe('migration 0010', () => {
  it('goes down and up again on a database with notices in the outbox', async () => {
    const migration = await import('../../migrations/0010_key_lifecycle.js');
    await core.deps.db.transaction().execute((trx) => queueNotice(trx, core.deps, { to: uniqueEmail('down'), notice: expiry('down') }));
    await migration.down(core.deps.db);
    await migration.up(core.deps.db);
    await core.deps.db.transaction().execute((trx) => queueNotice(trx, core.deps, { to: uniqueEmail('up'), notice: expiry('up') }));
    // A row that is neither a verification with its request nor a notice with its content is refused.
    await expect(
      core.deps.db.insertInto('mail_outbox').values({ id: crypto.randomUUID(), request_id: null, kind: 'notice', notice: null, recipient: 'x@example.com', token: null, next_attempt_at: new Date() }).execute(),
    ).rejects.toThrow(/mail_outbox_kind_check/);
  });
});
