import { sql } from 'kysely';
import type { Db } from '../db/database.js';
import { eventsOf, nowOf, type CoreDeps } from './context.js';
import { errorText } from './errors.js';
import { maskEmailAddresses } from './text.js';
import { NOTICE_GIVE_UP_MS, type Notice } from './notices.js';
import { verificationFactsOf } from './verification.js';

/**
 * Verification mail goes through a table, not straight to SMTP: the request that asks for it
 * writes the row in its own transaction and answers at once; a sender loop in every instance
 * delivers it, retrying with backoff until the link expires. A slow or dead mail server
 * delays mail; it never fails or slows a request.
 */

/** Retry delays double from here... */
export const FIRST_RETRY_MS = 1_000;
/** ...up to this. */
export const MAX_RETRY_MS = 60_000;
/**
 * How long a claimed row is left to its sender before another instance may take it. Longer than
 * any send can take (the SMTP transport's timeouts add up to well under it), so that a slow send
 * is not sent again by a second instance; short enough that a crashed instance's mail is
 * picked up while the link still works.
 */
export const SEND_LEASE_MS = 2 * 60_000;
/**
 * A send still running after this is ended (the mailer closes its connection) and counts as
 * failed: well inside the lease. It is retried only once the lease is over, and a send that
 * completes anyway before then is recorded as sent, not sent again.
 */
export const SEND_TIMEOUT_MS = 60_000;

/** A Mailer marks a failure that retrying cannot fix (an SMTP 5xx) with `permanent: true`. */
export function isPermanentMailFailure(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { permanent?: unknown }).permanent === true;
}

/** Waits for `work` at most `ms`; then rejects and calls `onTimeout` (which ends the work). */
function withTimeout<T>(work: Promise<T>, ms: number, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`no answer from the mail transport within ${ms / 1000} s`));
      onTimeout();
    }, ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

/** An error as stored and logged: addresses masked (an SMTP refusal names the recipient), at most 500 characters. */
function mailErrorText(err: unknown): string {
  return maskEmailAddresses(errorText(err)).slice(0, 500);
}

export type DeliveryOutcome = 'sent' | 'retry' | 'abandoned' | 'idle';

/** Delay before attempt `attempts + 1`, after `attempts` failures. */
export function retryDelayMs(attempts: number): number {
  return Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** Math.max(0, attempts - 1));
}

/**
 * Takes the next due message (skipping rows another instance holds), sends it, and records the
 * result. 'idle' when nothing is due. `sendTimeoutMs` is for tests.
 */
export async function deliverNextMail(deps: CoreDeps, options: { sendTimeoutMs?: number } = {}): Promise<DeliveryOutcome> {
  const now = nowOf(deps);
  const leaseUntil = new Date(now.getTime() + SEND_LEASE_MS);
  // Claiming is its own short transaction: the lease, not a held row lock, keeps other instances
  // off the row while SMTP talks, so a slow mail server never holds a database connection.
  const claimed = await sql<{ id: string; request_id: string | null; recipient: string; token: string | null; attempts: number; kind: 'verification' | 'notice'; notice: Notice | string | null; created_at: Date | string }>`
    UPDATE mail_outbox SET lease_until = ${leaseUntil}, attempts = attempts + 1
    WHERE id = (
      SELECT id FROM mail_outbox
      WHERE sent_at IS NULL AND abandoned_at IS NULL AND next_attempt_at <= ${now}
        AND (lease_until IS NULL OR lease_until <= ${now})
      ORDER BY next_attempt_at
      LIMIT 1
      FOR UPDATE SKIP LOCKED
    )
    RETURNING id, request_id, recipient, token, attempts, kind, notice, created_at`.execute(deps.db);
  const row = claimed.rows[0];
  if (!row) return 'idle';
  const mine = (qb: Db) => qb.updateTable('mail_outbox').where('id', '=', row.id).where('attempts', '=', row.attempts);
  // What the log says this message is: a verification request's id, or the notice's outbox id.
  const about = row.kind === 'notice' ? { noticeId: row.id } : { requestId: row.request_id };
  const what = row.kind === 'notice' ? 'notice email' : 'verification email';

  let send: (signal: AbortSignal) => Promise<void>;
  /** Past this it is given up on: a link's expiry, or a notice's day. */
  let giveUpAt: Date;
  if (row.kind === 'notice') {
    const notice = (typeof row.notice === 'string' ? JSON.parse(row.notice) : row.notice) as Notice;
    giveUpAt = new Date(new Date(row.created_at).getTime() + NOTICE_GIVE_UP_MS);
    send = (signal) => deps.mailer.sendNotice({ to: row.recipient, notice }, { signal });
    if (giveUpAt <= now) {
      await mine(deps.db).set({ abandoned_at: now, lease_until: null }).execute();
      eventsOf(deps).mailAbandoned();
      deps.log.warn({ ...about, attempts: row.attempts - 1 }, 'notice email given up: not sent within a day');
      return 'abandoned';
    }
  } else {
    const request = row.request_id === null ? undefined : await deps.db.selectFrom('verification_requests').selectAll().where('id', '=', row.request_id).executeTakeFirst();
    const msLeft = request ? new Date(request.expires_at).getTime() - now.getTime() : 0;
    if (!request || request.consumed_at || msLeft <= 0 || row.token === null) {
      // Nobody can use this link any more (expired, already confirmed, or gone): do not send it.
      await mine(deps.db).set({ abandoned_at: now, token: null, lease_until: null }).execute();
      eventsOf(deps).mailAbandoned();
      deps.log.warn({ requestId: row.request_id, attempts: row.attempts - 1 }, 'verification email given up: its link can no longer be used');
      return 'abandoned';
    }
    giveUpAt = new Date(request.expires_at);
    const token = row.token;
    send = (signal) =>
      deps.mailer.sendVerification(
        {
          to: row.recipient,
          link: `${deps.settings.publicUrl}/shell-auth/verify?token=${token}`,
          // A late mail says how long its link really has left, in whole minutes where it can:
          // rounded, so a mail sent a second after its request says 10 minutes, not 9.
          ttlMs: msLeft >= 60_000 ? Math.round(msLeft / 60_000) * 60_000 : msLeft,
          facts: verificationFactsOf(request),
        },
        { signal },
      );
  }

  const stop = new AbortController();
  // async: a mailer that throws at once fails this attempt like one that rejects.
  const sending = (async () => send(stop.signal))();
  try {
    await withTimeout(sending, options.sendTimeoutMs ?? SEND_TIMEOUT_MS, () => stop.abort());
  } catch (err) {
    const failedAt = nowOf(deps);
    const timedOut = stop.signal.aborted;
    if (timedOut) {
      // Ended, but a mailer that cannot be stopped may still deliver: that is recorded, so the
      // retry (after the lease, below) finds the message sent rather than sending it twice.
      sending
        .then(async () => {
          const late = await mine(deps.db)
            .where('sent_at', 'is', null)
            .where('abandoned_at', 'is', null)
            .set({ sent_at: nowOf(deps), token: null, lease_until: null, last_error: null })
            .executeTakeFirst();
          if (Number(late.numUpdatedRows) > 0) eventsOf(deps).mailSent();
        }, () => undefined)
        .catch((lateErr) => deps.log.warn({ err: mailErrorText(lateErr), ...about }, `could not record a ${what} sent after its timeout`));
    }
    const backoff = new Date(failedAt.getTime() + retryDelayMs(row.attempts));
    // A timed-out send may have reached the mail server after all: not tried again before the lease ends.
    const next = timedOut && leaseUntil > backoff ? leaseUntil : backoff;
    const lastError = mailErrorText(err);
    eventsOf(deps).mailSendFailed();
    if (isPermanentMailFailure(err)) {
      // The mail server refused the message itself (a 5xx: no such mailbox, policy): retrying cannot help.
      await mine(deps.db).set({ abandoned_at: failedAt, token: null, lease_until: null, last_error: lastError }).execute();
      eventsOf(deps).mailAbandoned();
      deps.log.error({ err: lastError, ...about, attempts: row.attempts }, `${what} given up: the mail server refused it`);
      return 'abandoned';
    }
    if (next.getTime() >= giveUpAt.getTime()) {
      await mine(deps.db).set({ abandoned_at: failedAt, token: null, lease_until: null, last_error: lastError }).execute();
      eventsOf(deps).mailAbandoned();
      const why = row.kind === 'notice' ? 'not sent within a day' : 'not sent before its link expired';
      deps.log.error({ err: lastError, ...about, attempts: row.attempts }, `${what} given up: ${why}`);
      return 'abandoned';
    }
    await mine(deps.db).set({ next_attempt_at: next, lease_until: null, last_error: lastError }).execute();
    deps.log.warn({ err: lastError, ...about, attempts: row.attempts, retryAt: next.toISOString() }, `${what} not sent yet; will retry`);
    return 'retry';
  }
  // Sent: the token has done its job here and is not kept.
  await mine(deps.db).set({ sent_at: nowOf(deps), token: null, lease_until: null, last_error: null }).execute();
  eventsOf(deps).mailSent();
  return 'sent';
}

/** Messages not yet sent nor given up on, and when the next of them may be tried. */
export async function outboxBacklog(deps: CoreDeps): Promise<{ pending: number; nextDueAt: Date | null }> {
  const { rows } = await sql<{ pending: string; next_due_at: Date | string | null }>`
    SELECT count(*) AS pending, min(greatest(next_attempt_at, coalesce(lease_until, next_attempt_at))) AS next_due_at
    FROM mail_outbox WHERE sent_at IS NULL AND abandoned_at IS NULL`.execute(deps.db);
  const row = rows[0];
  return { pending: Number(row?.pending ?? 0), nextDueAt: row?.next_due_at ? new Date(row.next_due_at) : null };
}

export type MailSender = {
  /** Look for due mail now (a request on this instance just queued some). */
  wake(): void;
  /**
   * Starts nothing new and waits for the message in hand, at most `waitMs` (0: not at all; a
   * later call with 0 also ends an earlier call's wait). A send cut short is retried after its lease.
   */
  stop(waitMs?: number): Promise<void>;
};

/**
 * The sender loop: delivers everything due, then sleeps until the next retry is due, it is woken
 * (this instance queued mail), or `idleMs` passes (to pick up mail another instance queued but
 * did not send). Idle, it costs one query per `idleMs`.
 */
export function startMailSender(deps: CoreDeps, options: { idleMs?: number } = {}): MailSender {
  const idleMs = options.idleMs ?? 30_000;
  let stopping = false;
  let woken = false;
  let wakeSleeper: (() => void) | null = null;
  const wake = () => {
    woken = true;
    wakeSleeper?.();
  };
  const running = (async () => {
    while (!stopping) {
      woken = false;
      let sleepMs = idleMs;
      try {
        if ((await deliverNextMail(deps)) !== 'idle') continue;
        const backlog = await outboxBacklog(deps);
        eventsOf(deps).mailPending(backlog.pending);
        if (backlog.nextDueAt) {
          // Due now but not claimable means another instance is claiming it: look again shortly.
          sleepMs = Math.min(idleMs, Math.max(250, backlog.nextDueAt.getTime() - nowOf(deps).getTime()));
        }
      } catch (err) {
        // The database is away: the mail is safe in the table; try again after a pause.
        deps.log.warn({ err: mailErrorText(err) }, 'mail sender: database error, will retry');
        sleepMs = Math.min(idleMs, 5_000);
      }
      if (stopping || woken) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, sleepMs);
        function done() {
          clearTimeout(timer);
          wakeSleeper = null;
          resolve();
        }
        wakeSleeper = done;
      });
    }
  })();
  let giveUp: () => void = () => {};
  const givenUp = new Promise<void>((resolve) => (giveUp = resolve));
  return {
    wake,
    async stop(waitMs = Infinity) {
      stopping = true;
      wake();
      if (waitMs <= 0) giveUp();
      let timer: NodeJS.Timeout | undefined;
      const waited = Number.isFinite(waitMs) ? new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs))) : givenUp;
      await Promise.race([running, givenUp, waited]);
      clearTimeout(timer);
    },
  };
}

/** Sent and given-up messages are kept a day (for looking into a complaint), then deleted. */
export async function sweepOutbox(deps: CoreDeps, keepMs = 24 * 3_600_000): Promise<number> {
  const before = new Date(nowOf(deps).getTime() - keepMs);
  const result = await deps.db
    .deleteFrom('mail_outbox')
    .where((eb) => eb.or([eb('sent_at', '<', before), eb('abandoned_at', '<', before)]))
    .executeTakeFirst();
  return Number(result.numDeletedRows);
}
