import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deliverNextMail, MAX_RETRY_MS, SEND_LEASE_MS, startVerification, type CoreDeps, type VerificationMail } from '../../src/core/index.js';
import { maskEmailAddresses } from '../../src/core/text.js';
import { smtpMailer } from '../../src/mail/mailer.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { publicKeyOf, startTestCore, type TestCore } from '../support/core.js';
import { makeKey, uniqueEmail } from '../support/keys.js';

// The outbox against real SMTP servers that misbehave: one that stalls past the send timeout
// (the send is ended, and not tried again before its lease), and one that refuses the recipient
// naming it (the code is kept, the address is not stored or logged).

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function listening(server: SMTPServer): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `smtp://127.0.0.1:${(server.server.address() as AddressInfo).port}`;
}

/**
 * Takes the whole message, then waits `stallMs` before its answer (as a slow mail server's
 * filters do). A message counts as delivered only if the client is still there for the answer.
 */
async function startStallingSmtpServer() {
  const state = { stallMs: 0, received: [] as string[], delivered: [] as string[], endedByClient: [] as string[] };
  const closed = new Set<string>();
  const server = new SMTPServer({
    disabledCommands: ['AUTH', 'STARTTLS'],
    logger: false,
    onData(stream, session, callback) {
      const to = session.envelope.rcptTo.map((r) => r.address).join(',');
      stream.on('data', () => undefined);
      stream.on('end', () => {
        state.received.push(to);
        setTimeout(() => {
          if (closed.has(session.id)) return void state.endedByClient.push(to);
          state.delivered.push(to);
          callback();
        }, state.stallMs);
      });
    },
    onClose(session) {
      closed.add(session.id);
    },
  });
  const url = await listening(server);
  return { url, state, closed: () => closed.size };
}

describe('a mail server that stalls past the send timeout', () => {
  let core: TestCore;
  let deps: CoreDeps;
  let smtp: Awaited<ReturnType<typeof startStallingSmtpServer>>;
  beforeAll(async () => {
    core = await startTestCore();
    cleanups.push(() => core.close());
    smtp = await startStallingSmtpServer();
    // The mailer loads nodemailer at its first send: loaded here, not inside a send's timeout
    // (on a loaded machine the import alone took longer than one).
    await import('nodemailer');
    const mailer = smtpMailer(smtp.url, 'shell-auth@example.com');
    cleanups.push(async () => mailer.close());
    deps = { ...core.deps, mailer };
  });

  // Long enough for a whole message over loopback on a busy machine; the stall is well past it.
  const SEND_TIMEOUT_MS = 1_000;
  const STALL_MS = 3_000;
  const outboxRowOf = (requestId: string) => core.deps.db.selectFrom('mail_outbox').selectAll().where('request_id', '=', requestId).executeTakeFirstOrThrow();

  it('has its send ended at the timeout, is not tried again before the lease, and gets the mail exactly once', async () => {
    const email = uniqueEmail('stall');
    const started = await startVerification(core.deps, { email, key: publicKeyOf(makeKey().publicKey), note: null, keyProven: false, origin: { channel: 'http', ip: '192.0.2.9' } });
    const requestId = started.nonce ?? '';
    const claimedAt = core.clock.now.getTime();

    smtp.state.stallMs = STALL_MS;
    expect(await deliverNextMail(deps, { sendTimeoutMs: SEND_TIMEOUT_MS })).toBe('retry');
    expect(smtp.state.received).toEqual([email]); // the whole message was sent; no answer yet
    // The send is ended: its connection closes now, not when the server answers seconds later.
    for (let i = 0; i < 50 && smtp.closed() === 0; i++) await sleep(10);
    expect(smtp.closed()).toBe(1);
    expect(smtp.state.endedByClient).toEqual([]); // the server has not answered yet
    const failed = await outboxRowOf(requestId);
    expect(failed.last_error).toBe(`no answer from the mail transport within ${SEND_TIMEOUT_MS / 1000} s`);
    expect(new Date(failed.next_attempt_at).getTime()).toBe(claimedAt + SEND_LEASE_MS);

    // Well past the first retry delay, still inside the lease: no second attempt.
    core.clock.advance(MAX_RETRY_MS);
    expect(await deliverNextMail(deps, { sendTimeoutMs: SEND_TIMEOUT_MS })).toBe('idle');
    // The server's late answer (STALL_MS after the message) finds nobody.
    for (let i = 0; i < 100 && smtp.state.endedByClient.length === 0; i++) await sleep(50);
    expect(smtp.state.received).toEqual([email]);
    expect(smtp.state.endedByClient).toEqual([email]); // the server's late answer found nobody
    expect(smtp.state.delivered).toEqual([]);

    // After the lease, a prompt server: sent, once.
    smtp.state.stallMs = 0;
    core.clock.advance(SEND_LEASE_MS - MAX_RETRY_MS);
    expect(await deliverNextMail(deps, { sendTimeoutMs: SEND_TIMEOUT_MS })).toBe('sent');
    expect(await deliverNextMail(deps, { sendTimeoutMs: SEND_TIMEOUT_MS })).toBe('idle');
    expect(smtp.state.delivered).toEqual([email]);
    expect((await outboxRowOf(requestId)).attempts).toBe(2);
  });

  it('a send that cannot be stopped and succeeds after its timeout is recorded as sent, not sent again', async () => {
    const email = uniqueEmail('late');
    const started = await startVerification(core.deps, { email, key: publicKeyOf(makeKey().publicKey), note: null, keyProven: false, origin: { channel: 'http', ip: '192.0.2.9' } });
    const sent: string[] = [];
    const unstoppable = {
      async sendNotice() {},
      async sendVerification(mail: VerificationMail) {
        await sleep(400); // ignores the signal
        sent.push(mail.to);
      },
    };
    const lateDeps = { ...deps, mailer: unstoppable };
    expect(await deliverNextMail(lateDeps, { sendTimeoutMs: 100 })).toBe('retry');
    // The send finishes 300 ms later and records itself: waited for, not timed.
    let row = await outboxRowOf(started.nonce ?? '');
    for (let i = 0; i < 100 && row.sent_at === null; i++) {
      await sleep(50);
      row = await outboxRowOf(started.nonce ?? '');
    }
    expect(sent).toEqual([email]);
    expect(row.sent_at).not.toBeNull();
    expect(row.token).toBeNull();
    core.clock.advance(SEND_LEASE_MS);
    expect(await deliverNextMail(lateDeps)).toBe('idle');
    expect(sent).toEqual([email]);
  });
});

describe('a mail server that refuses the recipient, naming it', () => {
  let t: TestApp;
  beforeAll(async () => {
    const server = new SMTPServer({
      disabledCommands: ['AUTH', 'STARTTLS'],
      logger: false,
      onRcptTo(address, _session, callback) {
        // As Postfix words it: the code, the enhanced status, and the address.
        const busy = address.address.startsWith('busy');
        const err = new Error(`${busy ? '4.2.1' : '5.1.1'} <${address.address}>: Recipient address rejected: ${busy ? 'mailbox busy' : 'User unknown'}`);
        callback(Object.assign(err, { responseCode: busy ? 450 : 550 }));
      },
    });
    const url = await listening(server);
    t = await startTestApp({ SMTP_URL: url });
    cleanups.push(() => t.close());
  });

  const outboxRowFor = (email: string) =>
    t.app.deps.db
      .selectFrom('mail_outbox')
      .innerJoin('verification_requests', 'verification_requests.id', 'mail_outbox.request_id')
      .select(['mail_outbox.attempts', 'mail_outbox.last_error', 'mail_outbox.abandoned_at'])
      .where('verification_requests.email', '=', email)
      .executeTakeFirstOrThrow();

  async function failedOnce(email: string) {
    expect((await t.post('/api/shell-auth', { email, ssh_public_key: makeKey().publicKey })).status).toBe(200);
    for (let i = 0; i < 200 && (await outboxRowFor(email)).last_error === null; i++) await sleep(25);
    return outboxRowFor(email);
  }

  it.each([
    ['550 (given up)', 'nobody', '550 5.1.1', 'verification email given up: the mail server refused it'],
    ['450 (retried)', 'busy', '450 4.2.1', 'verification email not sent yet; will retry'],
  ])('%s: the code and status are stored and logged, the address is not', async (_what, local, code, logged) => {
    const email = uniqueEmail(local);
    const row = await failedOnce(email);
    expect(row.last_error).toContain(`${code} <***@example.com>: Recipient address rejected`);
    expect(row.last_error).not.toContain(email);
    expect(row.last_error?.toLowerCase()).not.toContain(email.split('@')[0]!.toLowerCase());
    const line = t.logs.find((l) => l.includes(logged) && l.includes(code));
    expect(line).toBeDefined();
    for (const l of t.logs) expect(l.toLowerCase()).not.toContain(email.split('@')[0]!.toLowerCase());
  });

  it('maskEmailAddresses keeps codes and domains, masks local parts in every form', () => {
    expect(maskEmailAddresses("Can't send mail - all recipients were rejected: 550 5.1.1 <bob@example.com>: Recipient address rejected")).toBe(
      "Can't send mail - all recipients were rejected: 550 5.1.1 <***@example.com>: Recipient address rejected",
    );
    expect(maskEmailAddresses('RCPT TO:<Bob.Smith+tag@mail.example.co.uk> 550 5.7.1 "bob smith"@example.org, o\'brien@example.ie')).toBe(
      'RCPT TO:<***@mail.example.co.uk> 550 5.7.1 ***@example.org, ***@example.ie',
    );
    expect(maskEmailAddresses('421 4.3.2 service not available @ 10:00')).toBe('421 4.3.2 service not available @ 10:00');
  });
});
