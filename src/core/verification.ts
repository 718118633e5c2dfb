import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { SshKeyRow, User, VerificationRequest } from '../db/schema.js';
import { ensureUser, findUserByEmail, orgsOfUser, provisionPersonalOrg, type OrgMembership } from './accounts.js';
import { recordAudit } from './audit.js';
import { nowOf, VERIFICATION_LINK_TTL_MS, type CoreDeps, type RequestOrigin } from './context.js';
import { baseEmailOf } from './emails.js';
import { AppError, isUniqueViolation } from './errors.js';
import { generateLinkToken, LINK_TOKEN_PATTERN, sha256Hex } from './secrets.js';
import { formatPublicKey, type PublicKey } from './ssh-public-key.js';
import { verificationEmail } from './verification-email.js';

/** Limits on verification mail, counted in the database so they hold across instances. */
export const MAIL_LIMITS = { perPairWindowMs: 60_000, perMailboxWindowMs: 3_600_000, perMailboxMax: 10, perIpWindowMs: 3_600_000 };

export type HttpTrust = 'trusted' | 'expired' | 'disabled';

/** Whether HTTP callers may act with this key: only within the trust window after an email confirmation. */
export function httpTrustOf(deps: CoreDeps, sshKey: Pick<SshKeyRow, 'confirmed_at'>): HttpTrust {
  const windowMs = deps.settings.httpTrustWindowMs;
  if (windowMs <= 0) return 'disabled';
  if (windowMs === Number.POSITIVE_INFINITY) return 'trusted';
  const until = new Date(sshKey.confirmed_at).getTime() + windowMs;
  return nowOf(deps).getTime() < until ? 'trusted' : 'expired';
}

export async function findSshKey(deps: CoreDeps, key: Pick<PublicKey, 'blob'>): Promise<SshKeyRow | undefined> {
  return deps.db.selectFrom('ssh_keys').selectAll().where('key_blob', '=', key.blob).executeTakeFirst();
}

/**
 * A key already bound to another account blocks a new binding (409), except that the SSH door,
 * having proven possession, may take over a binding that was never proven (made over HTTP,
 * where anyone can submit anyone's public key).
 */
function mayTakeOver(existing: Pick<SshKeyRow, 'proven_at'>, keyProven: boolean): boolean {
  return keyProven && existing.proven_at === null;
}

export type StartVerificationInput = {
  email: string;
  key: PublicKey;
  note: string | null;
  /** The SSH door has proven possession of the private key; HTTP has not. */
  keyProven: boolean;
  origin: RequestOrigin;
};

export type StartVerificationResult = {
  user: User;
  isNewUser: boolean;
  /** The verification request's id; null when no email was needed. */
  nonce: string | null;
  alreadyVerified: boolean;
  sshPublicKey: string;
};

/** POST /api/shell-auth and `ssh ... login`: create the account if needed and email a confirmation link. */
export async function startVerification(deps: CoreDeps, input: StartVerificationInput): Promise<StartVerificationResult> {
  const { db } = deps;
  const { email, key } = input;
  const sshPublicKey = formatPublicKey(key);
  const existingKey = await findSshKey(deps, key);
  if (existingKey) {
    const holder = await db.selectFrom('users').selectAll().where('id', '=', existingKey.user_id).executeTakeFirstOrThrow();
    if (holder.email === email) {
      // The email owner confirmed this key before; a signature now proves possession too.
      if (input.keyProven) await markProven(deps, existingKey, input.origin);
      if (input.keyProven || httpTrustOf(deps, existingKey) === 'trusted') {
        return { user: holder, isNewUser: false, nonce: null, alreadyVerified: true, sshPublicKey };
      }
    } else if (!mayTakeOver(existingKey, input.keyProven)) {
      throw new AppError('KEY_TAKEN');
    }
  }

  const now = nowOf(deps);
  const mailbox = baseEmailOf(email) ?? email;
  const ip = input.origin.ip;
  const { token, tokenHash } = generateLinkToken();
  const { request, user, created } = await db.transaction().execute(async (trx) => {
    // Serialises concurrent requests for one inbox across instances, so the counts below hold.
    await sql`SELECT pg_advisory_xact_lock(hashtext(${`verification-mail:${mailbox}`}))`.execute(trx);
    const hourAgo = new Date(now.getTime() - MAIL_LIMITS.perMailboxWindowMs);
    const recent = await trx
      .selectFrom('verification_requests')
      .select(['email', 'key_blob', 'created_at'])
      .where('mailbox', '=', mailbox)
      .where('created_at', '>', hourAgo)
      .orderBy('created_at', 'asc')
      .execute();
    const lastForPair = recent.filter((r) => r.email === email && r.key_blob === key.blob).at(-1);
    if (lastForPair) retryAfter(lastForPair.created_at, MAIL_LIMITS.perPairWindowMs, now);
    if (recent.length >= MAIL_LIMITS.perMailboxMax) retryAfter(recent[0]!.created_at, MAIL_LIMITS.perMailboxWindowMs, now);
    if (ip !== null && deps.settings.mailPerIpHourly !== undefined) {
      const fromIp = await trx
        .selectFrom('verification_requests')
        .select('created_at')
        .where('requested_ip', '=', ip)
        .where('created_at', '>', new Date(now.getTime() - MAIL_LIMITS.perIpWindowMs))
        .orderBy('created_at', 'asc')
        .limit(deps.settings.mailPerIpHourly)
        .execute();
      if (fromIp.length >= deps.settings.mailPerIpHourly) retryAfter(fromIp[0]!.created_at, MAIL_LIMITS.perIpWindowMs, now);
    }

    const { user, created } = await ensureUser(trx, email, input.origin);
    const request = await trx
      .insertInto('verification_requests')
      .values({
        id: randomUUID(),
        user_id: user.id,
        email,
        mailbox,
        key_type: key.type,
        key_blob: key.blob,
        fingerprint: key.fingerprint,
        comment: key.comment,
        key_proven: input.keyProven,
        token_hash: tokenHash,
        note: input.note,
        requested_ip: ip,
        channel: input.origin.channel === 'ssh' ? 'ssh' : 'http',
        created_at: now,
        expires_at: new Date(now.getTime() + VERIFICATION_LINK_TTL_MS),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    await recordAudit(trx, input.origin, {
      action: 'verification.requested',
      actorUserId: user.id,
      subjectId: request.id,
      details: { fingerprint: key.fingerprint },
    });
    return { request, user, created };
  });

  const link = `${deps.settings.publicUrl}/shell-auth/verify?token=${token}`;
  try {
    await deps.mailer.send(
      verificationEmail(
        {
          email,
          keyType: key.type,
          fingerprint: key.fingerprint,
          requestedIp: request.requested_ip,
          requestedAt: new Date(request.created_at),
          note: request.note,
          channel: request.channel,
          ttlMs: VERIFICATION_LINK_TTL_MS,
        },
        link,
      ),
    );
  } catch (err) {
    deps.log.error({ err: (err as Error).message, requestId: request.id }, 'verification email could not be sent');
    await withdrawRequest(deps, request.id, created ? user.id : null);
    throw new AppError('MAIL_FAILED');
  }
  return { user, isNewUser: created, nonce: request.id, alreadyVerified: false, sshPublicKey };
}

async function markProven(deps: CoreDeps, sshKey: SshKeyRow, origin: RequestOrigin): Promise<void> {
  if (sshKey.proven_at !== null) return;
  await deps.db.transaction().execute(async (trx) => {
    const updated = await trx
      .updateTable('ssh_keys')
      .set({ proven_at: nowOf(deps) })
      .where('id', '=', sshKey.id)
      .where('proven_at', 'is', null)
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) === 1) {
      await recordAudit(trx, origin, {
        action: 'ssh_key.proven',
        actorUserId: sshKey.user_id,
        subjectId: sshKey.id,
        details: { fingerprint: sshKey.fingerprint },
      });
    }
  });
}

function retryAfter(since: Date | string, windowMs: number, now: Date): void {
  const wait = new Date(since).getTime() + windowMs - now.getTime();
  if (wait > 0) throw new AppError('RATE_LIMITED', { retryAfterSeconds: Math.ceil(wait / 1000) });
}

/**
 * The link never reached anyone: withdraw it so it neither works nor counts against the limits,
 * and forget an account this very request created (so the retry still says is_new_user).
 */
async function withdrawRequest(deps: CoreDeps, requestId: string, createdUserId: string | null): Promise<void> {
  try {
    await deps.db.deleteFrom('verification_requests').where('id', '=', requestId).execute();
    if (createdUserId) {
      await deps.db
        .deleteFrom('users')
        .where('id', '=', createdUserId)
        .where('is_active', '=', false)
        .where((eb) => eb.not(eb.exists(eb.selectFrom('verification_requests').select('id').whereRef('user_id', '=', 'users.id'))))
        .where((eb) => eb.not(eb.exists(eb.selectFrom('memberships').select('org_id').whereRef('user_id', '=', 'users.id'))))
        .execute();
    }
  } catch (err) {
    deps.log.warn({ err: (err as Error).message, requestId }, 'could not withdraw an unsent verification request');
  }
}

export type LinkState =
  | { state: 'pending'; request: VerificationRequest }
  | { state: 'unknown' }
  | { state: 'used' }
  | { state: 'expired' };

/** For the confirm page (GET): what the link is for. Never consumes it. */
export async function inspectVerificationLink(deps: CoreDeps, token: string): Promise<LinkState> {
  if (!LINK_TOKEN_PATTERN.test(token)) return { state: 'unknown' };
  const request = await deps.db
    .selectFrom('verification_requests')
    .selectAll()
    .where('token_hash', '=', sha256Hex(token))
    .executeTakeFirst();
  if (!request) return { state: 'unknown' };
  if (request.consumed_at) return { state: 'used' };
  if (new Date(request.expires_at).getTime() <= nowOf(deps).getTime()) return { state: 'expired' };
  return { state: 'pending', request };
}

export type Confirmation = {
  user: User;
  sshKey: SshKeyRow;
  orgs: OrgMembership[];
  requestId: string;
};

/**
 * The confirm page's POST: consumes the link (single use, within 10 minutes), binds the key to
 * the account, activates a new account and provisions its personal org. All or nothing.
 */
export async function confirmVerificationLink(deps: CoreDeps, token: string, origin: RequestOrigin): Promise<Confirmation> {
  const state = await inspectVerificationLink(deps, token);
  if (state.state === 'unknown') throw new AppError('VERIFICATION_LINK_UNKNOWN');
  if (state.state === 'used') throw new AppError('VERIFICATION_LINK_USED');
  if (state.state === 'expired') throw new AppError('VERIFICATION_LINK_EXPIRED');
  const now = nowOf(deps);

  try {
    return await deps.db.transaction().execute(async (trx) => {
      // The conditional update is the single-use guarantee when two confirmations race.
      const request = await trx
        .updateTable('verification_requests')
        .set({ consumed_at: now })
        .where('id', '=', state.request.id)
        .where('consumed_at', 'is', null)
        .where('expires_at', '>', now)
        .returningAll()
        .executeTakeFirst();
      if (!request) {
        // Lost a race: either another confirmation or the clock got there first.
        const latest = await trx.selectFrom('verification_requests').select('consumed_at').where('id', '=', state.request.id).executeTakeFirst();
        throw new AppError(latest?.consumed_at ? 'VERIFICATION_LINK_USED' : 'VERIFICATION_LINK_EXPIRED');
      }

      let user = await trx.selectFrom('users').selectAll().where('id', '=', request.user_id).forUpdate().executeTakeFirstOrThrow();
      if (user.base_user_id) {
        const base = await trx.selectFrom('users').selectAll().where('id', '=', user.base_user_id).executeTakeFirst();
        if (!base) throw new AppError('BASE_ACCOUNT_MISSING');
        if (!base.is_active) throw new AppError('BASE_ACCOUNT_UNVERIFIED');
      }

      let sshKey = await trx.selectFrom('ssh_keys').selectAll().where('key_blob', '=', request.key_blob).forUpdate().executeTakeFirst();
      const provenAt = request.key_proven ? now : null;
      if (sshKey && sshKey.user_id !== user.id) {
        if (!mayTakeOver(sshKey, request.key_proven)) throw new AppError('KEY_TAKEN');
        await recordAudit(trx, origin, {
          action: 'ssh_key.taken_over',
          actorUserId: user.id,
          subjectId: sshKey.id,
          details: { fingerprint: sshKey.fingerprint, from_user_id: sshKey.user_id },
        });
        sshKey = await trx
          .updateTable('ssh_keys')
          .set({ user_id: user.id, verified_at: now, confirmed_at: now, proven_at: provenAt, comment: request.comment, last_seen_at: null })
          .where('id', '=', sshKey.id)
          .returningAll()
          .executeTakeFirstOrThrow();
      } else if (sshKey) {
        sshKey = await trx
          .updateTable('ssh_keys')
          .set({ confirmed_at: now, comment: request.comment, ...(provenAt ? { proven_at: provenAt } : {}) })
          .where('id', '=', sshKey.id)
          .returningAll()
          .executeTakeFirstOrThrow();
      } else {
        sshKey = await trx
          .insertInto('ssh_keys')
          .values({
            id: randomUUID(),
            user_id: user.id,
            key_type: request.key_type,
            key_blob: request.key_blob,
            fingerprint: request.fingerprint,
            comment: request.comment,
            verified_at: now,
            confirmed_at: now,
            proven_at: provenAt,
          })
          .returningAll()
          .executeTakeFirstOrThrow();
      }

      const firstVerification = !user.is_active;
      if (firstVerification) {
        user = await trx
          .updateTable('users')
          .set({ is_active: true, verified_at: now })
          .where('id', '=', user.id)
          .returningAll()
          .executeTakeFirstOrThrow();
        // Aliases share their base account's orgs instead of getting their own.
        if (!user.base_user_id) await provisionPersonalOrg(trx, user, origin);
      }
      await recordAudit(trx, origin, {
        action: 'ssh_key.confirmed',
        actorUserId: user.id,
        subjectId: sshKey.id,
        details: { fingerprint: sshKey.fingerprint, request_id: request.id, first_verification: firstVerification },
      });
      return { user, sshKey, orgs: await orgsOfUser(trx, user), requestId: request.id };
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw new AppError('KEY_TAKEN');
    throw err;
  }
}

export type KeyStatus =
  | { status: 'trusted'; user: User; sshKey: SshKeyRow; orgs: OrgMembership[] }
  | { status: 'unverified' | 'expired' | 'disabled' };

/** verify-key and api-keys: is this (email, key) pair trusted for HTTP use right now? */
export async function httpKeyStatus(deps: CoreDeps, email: string, key: PublicKey): Promise<KeyStatus> {
  const user = await findUserByEmail(deps.db, email);
  const sshKey = user && (await findSshKey(deps, key));
  if (!user || !sshKey || sshKey.user_id !== user.id || !user.is_active) return { status: 'unverified' };
  const trust = httpTrustOf(deps, sshKey);
  if (trust !== 'trusted') return { status: trust };
  return { status: 'trusted', user, sshKey, orgs: await orgsOfUser(deps.db, user) };
}

export type PublicKeyMatch = { user: User; sshKey: SshKeyRow };

/** verify-public-key: the account holding this key, only while it is inside the HTTP trust window. */
export async function findTrustedHolder(deps: CoreDeps, key: PublicKey): Promise<PublicKeyMatch[]> {
  const sshKey = await findSshKey(deps, key);
  if (!sshKey || httpTrustOf(deps, sshKey) !== 'trusted') return [];
  const user = await deps.db.selectFrom('users').selectAll().where('id', '=', sshKey.user_id).executeTakeFirstOrThrow();
  return [{ user, sshKey }];
}

export type WaitOutcome = 'confirmed' | 'expired' | 'aborted';

/**
 * Waits until a verification link is confirmed (on any instance: the database is polled), it
 * expires, or `signal` aborts. `onTick` is called after every poll with the time left.
 */
export async function waitForConfirmation(
  deps: CoreDeps,
  requestId: string,
  options: { signal: AbortSignal; pollMs?: number; onTick?: (msLeft: number) => void },
): Promise<WaitOutcome> {
  const pollMs = options.pollMs ?? 1000;
  let deadline = nowOf(deps).getTime() + VERIFICATION_LINK_TTL_MS;
  for (;;) {
    if (options.signal.aborted) return 'aborted';
    let row: { consumed_at: Date | null; expires_at: Date } | undefined;
    try {
      row = await deps.db
        .selectFrom('verification_requests')
        .select(['consumed_at', 'expires_at'])
        .where('id', '=', requestId)
        .executeTakeFirst();
    } catch (err) {
      // A database blip must not end a wait the user is sitting through: retry until expiry.
      deps.log.warn({ err: (err as Error).message, requestId }, 'waiting for confirmation: database error, retrying');
      if (nowOf(deps).getTime() > deadline) return 'expired';
      await sleep(Math.min(pollMs * 5, 5000), options.signal);
      continue;
    }
    if (!row) return 'expired';
    deadline = new Date(row.expires_at).getTime();
    if (row.consumed_at) return 'confirmed';
    const msLeft = deadline - nowOf(deps).getTime();
    if (msLeft <= 0) return 'expired';
    options.onTick?.(msLeft);
    await sleep(Math.min(pollMs, msLeft), options.signal);
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
