import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import { nowOf, type CoreDeps } from './context.js';

/**
 * Notices to a key's creator (expiry coming, key revoked by someone else), written to the mail
 * outbox in the caller's transaction and delivered by the same sender loop as verification mail:
 * nothing is lost when the mail server is away, and a notice exists exactly when its cause does.
 * What a notice says is data here; how it reads is the mail side's (src/mail/notice-email.ts).
 */

/** A key as a notice names it: never its secret. */
export type NoticeKey = { id: string; label: string; org_name: string; expires_at: string | null };

export type RevocationNoticeReason = 'holder' | 'leaked' | 'member_removed';

export type Notice =
  | {
      kind: 'key_expiry';
      keys: NoticeKey[];
      /** The command that renews a key, ready to run but for the id: `ssh -p 2222 keys@host rotate`. */
      rotate_command: string;
    }
  | {
      kind: 'key_revoked';
      reason: RevocationNoticeReason;
      keys: NoticeKey[];
      /** holder: the address the revocation came from. */
      address?: string | null;
      /** leaked: where the key was found, and by whom. */
      url?: string | null;
      source?: string | null;
      /** leaked: keys made from a leaked one by self-rotation (the holder's door), revoked with it. */
      successors?: NoticeKey[];
    };

export type NoticeMail = { to: string; notice: Notice };

/** A notice not sent within this long (mail server away) is given up on. */
export const NOTICE_GIVE_UP_MS = 24 * 3_600_000;

/** The SSH command a notice tells people to run, without its arguments. */
export function sshCommandOf(deps: Pick<CoreDeps, 'settings'>): string {
  return deps.settings.sshHint ?? `ssh keys@${new URL(deps.settings.publicUrl).hostname}`;
}

/** Queues a notice inside `trx`; wake the sender (`wakeMailSender`) once the transaction commits. */
export async function queueNotice(trx: Kysely<Database>, deps: Pick<CoreDeps, 'now'>, mail: NoticeMail): Promise<void> {
  await trx
    .insertInto('mail_outbox')
    .values({
      id: randomUUID(),
      request_id: null,
      kind: 'notice',
      notice: JSON.stringify(mail.notice),
      recipient: mail.to,
      token: null,
      next_attempt_at: nowOf(deps),
      // The day a notice is tried for counts on the same clock as its attempts.
      created_at: nowOf(deps),
    })
    .execute();
}

export function wakeMailSender(deps: Pick<CoreDeps, 'mailSender'>): void {
  deps.mailSender?.wake();
}
