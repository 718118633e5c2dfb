import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { SshKeyRow, User, VerificationRequest } from '../db/schema.js';
import { ensureUser, findUserByEmail, orgsOfUser, provisionPersonalOrg, type OrgMembership } from './accounts.js';
import { recordAudit } from './audit.js';
import { nowOf, VERIFICATION_LINK_TTL_MS, type CoreDeps, type RequestOrigin } from './context.js';
import { AppError, isUniqueViolation } from './errors.js';
import { generateLinkToken, LINK_TOKEN_PATTERN, sha256Hex } from './secrets.js';
import { formatPublicKey, type PublicKey } from './ssh-public-key.js';
import { verificationEmail } from './verification-email.js';

/** Limits on verification mail, counted in the database so they hold across instances. */
export const MAIL_LIMITS = { perPairWindowMs: 60_000, perEmailWindowMs: 3_600_000, perEmailMax: 10 };

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
  const existingKey = await findSshKey(deps, key);
  if (existingKey) {
    const holder = await db.selectFrom('users').select('email').where('id', '=', existingKey.user_id).executeTakeFirst();
    if (holder?.email !== email) throw new AppError('KEY_TAKEN');
  }
  const { user, created } = await ensureUser(db, email, input.origin);

  const sshPublicKey = formatPublicKey(key);
  const alreadyVerified =
    existingKey !== undefined && (input.keyProven || httpTrustOf(deps, existingKey) === 'trusted');
  if (alreadyVerified) return { user, isNewUser: created, nonce: null, alreadyVerified: true, sshPublicKey };

  const now = nowOf(deps);
  const { token, tokenHash } = generateLinkToken();
  const request = await db.transaction().execute(async (trx) => {
    // Serialises concurrent requests for one email across instances, so the counts below hold.
    await sql`SELECT pg_advisory_xact_lock(hashtext(${`verification-mail:${email}`}))`.execute(trx);
    const recent = await trx
      .selectFrom('verification_requests')
      .select(['key_blob', 'created_at'])
      .where('email', '=', email)
      .where('created_at', '>', new Date(now.getTime() - MAIL_LIMITS.perEmailWindowMs))
      .orderBy('created_at', 'asc')
      .execute();
    const lastForPair = recent.filter((r) => r.key_blob === key.blob).at(-1);
    if (lastForPair) {
      const wait = new Date(lastForPair.created_at).getTime() + MAIL_LIMITS.perPairWindowMs - now.getTime();
      if (wait > 0) throw new AppError('RATE_LIMITED', { retryAfterSeconds: Math.ceil(wait / 1000) });
    }
    if (recent.length >= MAIL_LIMITS.perEmailMax) {
      const oldest = new Date(recent[0]!.created_at).getTime();
      const wait = oldest + MAIL_LIMITS.perEmailWindowMs - now.getTime();
      throw new AppError('RATE_LIMITED', { retryAfterSeconds: Math.max(1, Math.ceil(wait / 1000)) });
    }
    const row = await trx
      .insertInto('verification_requests')
      .values({
        id: randomUUID(),
        user_id: user.id,
        email,
        key_type: key.type,
        key_blob: key.blob,
        fingerprint: key.fingerprint,
        comment: key.comment,
        token_hash: tokenHash,
        note: input.note,
        requested_ip: input.origin.ip,
        channel: input.origin.channel === 'ssh' ? 'ssh' : 'http',
        created_at: now,
        expires_at: new Date(now.getTime() + VERIFICATION_LINK_TTL_MS),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    await recordAudit(trx, input.origin, {
      action: 'verification.requested',
      actorUserId: user.id,
      subjectId: row.id,
      details: { fingerprint: key.fingerprint },
    });
    return row;
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
    // The link never reached anyone: withdraw it so it neither works nor counts against the limits.
    await db.deleteFrom('verification_requests').where('id', '=', request.id).execute().catch(() => undefined);
    throw new AppError('MAIL_FAILED');
  }
  return { user, isNewUser: created, nonce: request.id, alreadyVerified: false, sshPublicKey };
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
      if (!request) throw new AppError('VERIFICATION_LINK_USED');

      let user = await trx.selectFrom('users').selectAll().where('id', '=', request.user_id).forUpdate().executeTakeFirstOrThrow();
      if (user.base_user_id) {
        const base = await trx.selectFrom('users').selectAll().where('id', '=', user.base_user_id).executeTakeFirst();
        if (!base) throw new AppError('BASE_ACCOUNT_MISSING');
        if (!base.is_active) throw new AppError('BASE_ACCOUNT_UNVERIFIED');
      }

      let sshKey = await trx.selectFrom('ssh_keys').selectAll().where('key_blob', '=', request.key_blob).executeTakeFirst();
      if (sshKey && sshKey.user_id !== user.id) throw new AppError('KEY_TAKEN');
      if (sshKey) {
        sshKey = await trx
          .updateTable('ssh_keys')
          .set({ confirmed_at: now, comment: request.comment })
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
