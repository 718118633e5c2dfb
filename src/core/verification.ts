import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Db } from '../db/database.js';
import type { User, VerificationRequest } from '../db/schema.js';
import { ensureUser, orgsOfUser, provisionPersonalOrg, type OrgMembership } from './accounts.js';
import { recordAudit } from './audit.js';
import { addressGroupIn, CONFIRMATIONS_CHANNEL, eventsOf, nowOf, VERIFICATION_LINK_TTL_MS, type CoreDeps, type RateLimitName, type RequestOrigin, type VerificationFacts } from './context.js';
import { inboxKeyOf } from './emails.js';
import { AppError, isUniqueViolation, type ErrorCode } from './errors.js';
import { findKeyRow, proveBinding } from './identity.js';
import { generateLinkToken, LINK_TOKEN_PATTERN, sha256Hex } from './secrets.js';
import { describeKeyType, formatPublicKey, parsePublicKeyBlob, type PublicKey } from './ssh-public-key.js';
import { bindingOf, onConfirm, onLinkRequest, type HttpTrustPolicy } from './trust.js';

/** Limits on verification mail, counted in the database so they hold across instances. */
export const MAIL_LIMITS = { perPairWindowMs: 60_000, perMailboxWindowMs: 3_600_000, perMailboxMax: 10, perIpWindowMs: 3_600_000 };

export type StartVerificationInput = {
  email: string;
  key: PublicKey;
  note: string | null;
  /** The SSH door has proven possession of the private key; HTTP has not. */
  keyProven: boolean;
  /** Only the doors a person uses start a verification (the table's channel is http or ssh). */
  origin: RequestOrigin & { channel: 'http' | 'ssh' };
};

export type StartVerificationResult = {
  user: User;
  isNewUser: boolean;
  /** The verification request's id; null when no email was needed. */
  nonce: string | null;
  /**
   * A `login` found its own earlier request for this email and key still pending (the user
   * stopped waiting, or a second session asked): `nonce` is that request, and no email was sent.
   */
  resumed: boolean;
  /** When the link of `nonce` expires; null with no request. */
  linkExpiresAt: Date | null;
  alreadyVerified: boolean;
  /** This request's signature proved a key linked over HTTP: it is the account's on the SSH door now, no email sent. */
  provedNow: boolean;
  sshPublicKey: string;
};

/**
 * POST /api/shell-auth and `ssh ... login`: create the account if needed and queue an email with
 * a confirmation link. Answers once the request and its mail are committed, not once it is sent.
 */
export async function startVerification(deps: CoreDeps, input: StartVerificationInput): Promise<StartVerificationResult> {
  const { email, key } = input;
  const sshPublicKey = formatPublicKey(key);
  const row = await findKeyRow(deps, key);
  if (row) {
    const holder = await deps.db.selectFrom('users').selectAll().where('id', '=', row.user_id).executeTakeFirstOrThrow();
    const decision = onLinkRequest(bindingOf(row), holder.email === email ? holder.id : null, input.keyProven, deps.settings.httpTrust, nowOf(deps));
    if (decision.outcome === 'refuse-taken') throw new AppError('KEY_TAKEN');
    if (decision.outcome === 'already-linked') {
      // The SSH door's signature, or a signed HTTP request (SSHSIG): the audit says which.
      if (decision.prove) await proveBinding(deps, key, input.origin, input.origin.channel === 'ssh' ? 'ssh' : 'sshsig');
      return { user: holder, isNewUser: false, nonce: null, resumed: false, linkExpiresAt: null, alreadyVerified: true, provedNow: decision.prove, sshPublicKey };
    }
  }

  const { token, tokenHash } = generateLinkToken();
  const started = await deps.db.transaction().execute(async (trx) => {
    const now = nowOf(deps);
    const mailbox = mailboxOf(deps, email);
    await lockMailbox(trx, mailbox);
    const pending = input.origin.channel === 'ssh' ? await pendingLoginOf(trx, { mailbox, email, key, now }) : undefined;
    if (pending) {
      const user = await trx.selectFrom('users').selectAll().where('id', '=', pending.user_id).executeTakeFirstOrThrow();
      return { request: pending, user, created: false, resumed: true };
    }
    await enforceMailLimits(trx, deps, { email, key, ip: input.origin.ip, now });
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
        requested_ip: input.origin.ip,
        requested_net: addressGroupIn(deps, input.origin.ip),
        channel: input.origin.channel,
        created_at: now,
        expires_at: new Date(now.getTime() + VERIFICATION_LINK_TTL_MS),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    await trx
      .insertInto('mail_outbox')
      .values({ id: randomUUID(), request_id: request.id, recipient: email, token, next_attempt_at: now, created_at: now })
      .execute();
    await recordAudit(trx, input.origin, {
      action: 'verification.requested',
      actorUserId: user.id,
      subjectId: request.id,
      details: { fingerprint: key.fingerprint },
    });
    return { request, user, created, resumed: false };
  });
  const { request, user, created, resumed } = started;
  const result = { user, isNewUser: created, nonce: request.id, resumed, linkExpiresAt: new Date(request.expires_at), alreadyVerified: false, provedNow: false, sshPublicKey };
  if (resumed) return result;

  // Committed with the request: delivery is the sender loop's job (see mail-outbox.ts).
  eventsOf(deps).mailQueued();
  deps.mailSender?.wake();
  return result;
}

/**
 * A `login`'s own request for this email and key, still pending: a second `login` (after Ctrl-C,
 * or from another session with the same key, which proved possession just the same) waits for it
 * instead of mailing again. Only the SSH door's requests: confirming one of those signs the key in;
 * an HTTP request's link grants something else (see confirmationGrantOf).
 */
async function pendingLoginOf(trx: Db, pair: { mailbox: string; email: string; key: PublicKey; now: Date }): Promise<VerificationRequest | undefined> {
  return trx
    .selectFrom('verification_requests')
    .selectAll()
    // The inbox index (mailbox, created_at): a link lives VERIFICATION_LINK_TTL_MS.
    .where('mailbox', '=', pair.mailbox)
    .where('created_at', '>', new Date(pair.now.getTime() - VERIFICATION_LINK_TTL_MS))
    .where('email', '=', pair.email)
    .where('key_blob', '=', pair.key.blob)
    .where('channel', '=', 'ssh')
    .where('key_proven', '=', true)
    .where('consumed_at', 'is', null)
    .where('expires_at', '>', pair.now)
    // Not one whose email the outbox gave up on (refused by the mail server): nobody can click it.
    .where(({ not, exists, selectFrom }) =>
      not(exists(selectFrom('mail_outbox').select('mail_outbox.id').whereRef('mail_outbox.request_id', '=', 'verification_requests.id').where('mail_outbox.abandoned_at', 'is not', null))),
    )
    .orderBy('created_at', 'desc')
    .limit(1)
    .executeTakeFirst();
}

/** Serialises requests for one inbox across instances, so the counts and the pending lookup hold. */
async function lockMailbox(trx: Db, mailbox: string): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(hashtext(${`verification-mail:${mailbox}`}))`.execute(trx);
}

/**
 * The per-inbox limit's key, stored in `verification_requests.mailbox`: +tags stripped, and dots
 * ignored at MAIL_DOTLESS_DOMAINS (Gmail). Rows keep the key they were written with: after this
 * rule (or MAIL_DOTLESS_DOMAINS) changes, an inbox's mails from before the change are counted
 * under their old key, so for that one hour (the limit's window) a dotted address can get up to
 * ten more.
 */
function mailboxOf(deps: CoreDeps, email: string): string {
  return inboxKeyOf(email, deps.settings.mailDotlessDomains);
}

/**
 * The mail limits, counted in the database so they hold across instances: one mail per (email,
 * key) a minute, ten per inbox an hour (aliases, and dot variants at Gmail, count against their
 * base inbox), and the operator's per-address limit. Throws RATE_LIMITED with the wait. The
 * caller holds the inbox's lock (lockMailbox), so the counts hold under concurrent requests.
 */
async function enforceMailLimits(
  trx: Db,
  deps: CoreDeps,
  request: { email: string; key: PublicKey; ip: string | null; now: Date },
): Promise<void> {
  const { email, key, ip, now } = request;
  const mailbox = mailboxOf(deps, email);
  const recent = await trx
    .selectFrom('verification_requests')
    .select(['email', 'key_blob', 'created_at', 'consumed_at', 'cancelled_at'])
    .where('mailbox', '=', mailbox)
    .where('created_at', '>', new Date(now.getTime() - MAIL_LIMITS.perMailboxWindowMs))
    .orderBy('created_at', 'asc')
    .execute();
  // The pair's resend limit is for mails nobody confirms: a confirmed link was wanted, and a
  // client that runs again at once (its window spent by the first mint) needs a fresh one. The
  // per-inbox and per-address limits below still count it.
  const confirmed = (r: (typeof recent)[number]) => r.consumed_at !== null && r.cancelled_at === null;
  const lastForPair = recent.filter((r) => r.email === email && r.key_blob === key.blob && !confirmed(r)).at(-1);
  if (lastForPair) throwIfTooSoon(deps, 'mail_per_key', lastForPair.created_at, MAIL_LIMITS.perPairWindowMs, now);
  const oldest = recent[0];
  if (oldest && recent.length >= MAIL_LIMITS.perMailboxMax) throwIfTooSoon(deps, 'mail_per_inbox', oldest.created_at, MAIL_LIMITS.perMailboxWindowMs, now);
  const perIp = deps.settings.mailPerIpHourly;
  const group = addressGroupIn(deps, ip);
  if (group === null || perIp === null) return;
  // Counted per address group (an IPv6 address as its /64), stored with each request as
  // requested_net. Requests stored before that column (migration 0008) have none and do not count:
  // for the hour after the upgrade an address may be mailed up to perIp more times.
  const fromIp = await trx
    .selectFrom('verification_requests')
    .select('created_at')
    .where('requested_net', '=', group)
    .where('created_at', '>', new Date(now.getTime() - MAIL_LIMITS.perIpWindowMs))
    .orderBy('created_at', 'asc')
    .limit(perIp)
    .execute();
  const first = fromIp[0];
  if (first && fromIp.length >= perIp) throwIfTooSoon(deps, 'mail_per_ip', first.created_at, MAIL_LIMITS.perIpWindowMs, now);
}

/** RATE_LIMITED, with the seconds left, when `windowMs` since `since` has not passed yet. */
function throwIfTooSoon(deps: CoreDeps, limit: RateLimitName, since: Date | string, windowMs: number, now: Date): void {
  const wait = new Date(since).getTime() + windowMs - now.getTime();
  if (wait <= 0) return;
  eventsOf(deps).rateLimited(limit);
  throw new AppError('RATE_LIMITED', { retryAfterSeconds: Math.ceil(wait / 1000) });
}

/** What the email and the confirm page show about a request. */
export function verificationFactsOf(request: VerificationRequest): VerificationFacts {
  return {
    email: request.email,
    keyType: describeKeyType(request.key_type),
    fingerprint: request.fingerprint,
    requestedIp: request.requested_ip,
    requestedAt: new Date(request.created_at),
    note: request.note,
    channel: request.channel,
  };
}

export type LinkState =
  | { state: 'pending'; request: VerificationRequest }
  | { state: 'unknown' }
  /** Confirmed (a cancelled request reads as `cancelled`). */
  | { state: 'used'; request: VerificationRequest }
  | { state: 'cancelled' }
  | { state: 'expired' };

/** The error that a link in a state other than pending reads as, on every door. */
export const LINK_STATE_ERRORS: Record<Exclude<LinkState['state'], 'pending'>, ErrorCode> = {
  unknown: 'VERIFICATION_LINK_UNKNOWN',
  used: 'VERIFICATION_LINK_USED',
  cancelled: 'VERIFICATION_LINK_CANCELLED',
  expired: 'VERIFICATION_LINK_EXPIRED',
};

/** For the confirm page (GET): what the link is for. Never consumes it. */
export async function inspectVerificationLink(deps: CoreDeps, token: string): Promise<LinkState> {
  if (!LINK_TOKEN_PATTERN.test(token)) return { state: 'unknown' };
  const request = await deps.db
    .selectFrom('verification_requests')
    .selectAll()
    .where('token_hash', '=', sha256Hex(token))
    .executeTakeFirst();
  if (!request) return { state: 'unknown' };
  if (request.cancelled_at) return { state: 'cancelled' };
  if (request.consumed_at) return { state: 'used', request };
  if (new Date(request.expires_at).getTime() <= nowOf(deps).getTime()) return { state: 'expired' };
  return { state: 'pending', request };
}

export type Confirmation = {
  user: User;
  fingerprint: string;
  orgs: OrgMembership[];
  requestId: string;
  /** The key has been proven by a signature (over SSH): false for a key linked over HTTP only. */
  keyProven: boolean;
};

/**
 * The confirm page's POST: consumes the link (single use, within 10 minutes), binds the key to
 * the account as `trust.onConfirm` says, activates a new account and provisions its personal
 * org. All or nothing.
 */
export async function confirmVerificationLink(deps: CoreDeps, token: string, origin: RequestOrigin): Promise<Confirmation> {
  const link = await inspectVerificationLink(deps, token);
  if (link.state !== 'pending') throw new AppError(LINK_STATE_ERRORS[link.state]);
  const now = nowOf(deps);
  try {
    return await deps.db.transaction().execute(async (trx) => {
      const request = await consumeLink(trx, link.request.id, { consumed_at: now }, now);
      let user = await trx.selectFrom('users').selectAll().where('id', '=', request.user_id).forUpdate().executeTakeFirstOrThrow();
      if (user.base_user_id) {
        const base = await trx.selectFrom('users').selectAll().where('id', '=', user.base_user_id).executeTakeFirst();
        if (!base) throw new AppError('BASE_ACCOUNT_MISSING');
        if (!base.is_active) throw new AppError('BASE_ACCOUNT_UNVERIFIED');
      }
      const sshKeyId = await bindKey(trx, request, user, origin, now);
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
        subjectId: sshKeyId,
        details: {
          fingerprint: request.fingerprint,
          request_id: request.id,
          first_verification: firstVerification,
          // The email proves the inbox; the key, if at all, was proven by the SSH door or a signed HTTP request.
          proof: request.key_proven ? (request.channel === 'ssh' ? 'email+ssh' : 'email+sshsig') : 'email',
        },
      });
      // Sent on commit, to every instance: a `login` waiting for this link wakes at once.
      await sql`SELECT pg_notify(${CONFIRMATIONS_CHANNEL}, ${request.id})`.execute(trx);
      const bound = await trx.selectFrom('ssh_keys').select('proven_at').where('id', '=', sshKeyId).executeTakeFirstOrThrow();
      return { user, fingerprint: request.fingerprint, orgs: await orgsOfUser(trx, user), requestId: request.id, keyProven: bound.proven_at !== null };
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw new AppError('KEY_TAKEN');
    throw err;
  }
}

/**
 * The conditional update is the single-use guarantee when two confirmations (or a confirmation
 * and a cancellation) race.
 */
async function consumeLink(trx: Db, requestId: string, patch: { consumed_at: Date; cancelled_at?: Date }, now: Date): Promise<VerificationRequest> {
  const request = await trx
    .updateTable('verification_requests')
    .set(patch)
    .where('id', '=', requestId)
    .where('consumed_at', 'is', null)
    .where('expires_at', '>', now)
    .returningAll()
    .executeTakeFirst();
  if (request) return request;
  // Lost a race: another confirmation, a cancellation or the clock got there first.
  const latest = await trx.selectFrom('verification_requests').select(['consumed_at', 'cancelled_at']).where('id', '=', requestId).executeTakeFirst();
  if (latest?.cancelled_at) throw new AppError('VERIFICATION_LINK_CANCELLED');
  throw new AppError(latest?.consumed_at ? 'VERIFICATION_LINK_USED' : 'VERIFICATION_LINK_EXPIRED');
}

export type Cancellation = {
  requestId: string;
  email: string;
  fingerprint: string;
  /** An HTTP window open for this account and key was closed as well. */
  httpWindowClosed: boolean;
};

/**
 * The confirm page's "This wasn't me" (POST): the inbox's owner refuses the request. The link is
 * spent (it can never be confirmed), an HTTP window open for this account and key is closed
 * (verify-key and api-keys stop answering for the pair: whoever asked may be polling one opened
 * by an earlier confirmation), a `login` waiting for it is told, and the refusal is audited. All
 * or nothing.
 */
export async function cancelVerificationLink(deps: CoreDeps, token: string, origin: RequestOrigin): Promise<Cancellation> {
  const link = await inspectVerificationLink(deps, token);
  if (link.state !== 'pending') throw new AppError(LINK_STATE_ERRORS[link.state]);
  const now = nowOf(deps);
  return deps.db.transaction().execute(async (trx) => {
    const request = await consumeLink(trx, link.request.id, { consumed_at: now, cancelled_at: now }, now);
    const closed = await trx
      .updateTable('ssh_keys')
      .set({ http_confirmed_at: null, http_mints: 0 })
      .where('key_blob', '=', request.key_blob)
      .where('user_id', '=', request.user_id)
      .where('http_confirmed_at', 'is not', null)
      .returning('id')
      .executeTakeFirst();
    await recordAudit(trx, origin, {
      action: 'verification.cancelled',
      actorUserId: request.user_id,
      subjectId: request.id,
      details: {
        fingerprint: request.fingerprint,
        requested_ip: request.requested_ip,
        requested_via: request.channel,
        http_window_closed: closed !== undefined,
      },
    });
    // On commit, like a confirmation: a `login` waiting for this request stops waiting.
    await sql`SELECT pg_notify(${CONFIRMATIONS_CHANNEL}, ${request.id})`.execute(trx);
    return { requestId: request.id, email: request.email, fingerprint: request.fingerprint, httpWindowClosed: closed !== undefined };
  });
}

/**
 * What confirming a request gives whoever made it, for the confirm page to say in words:
 * - `http-window`: an unsigned HTTP request; confirming opens the HTTP window (`httpTrust`) for
 *   the pair, and links the key (whoever holds its private half can then also `login` over SSH
 *   without an email);
 * - `http-signed`: a signed HTTP request; its maker proved they hold the key, which becomes an
 *   identity on both doors, with no window and no limit on mints;
 * - `ssh-session`: `ssh … login`; the waiting session is signed in, and the key is an SSH identity.
 * `orgs` are the account's (an alias's: its base account's); `newPersonalOrg`: the first
 * confirmation of a new account provisions one.
 */
export type ConfirmationGrant = {
  kind: 'http-window' | 'http-signed' | 'ssh-session';
  httpTrust: HttpTrustPolicy;
  orgs: string[];
  newPersonalOrg: boolean;
};

export async function confirmationGrantOf(deps: CoreDeps, request: VerificationRequest): Promise<ConfirmationGrant> {
  const user = await deps.db.selectFrom('users').selectAll().where('id', '=', request.user_id).executeTakeFirstOrThrow();
  const orgs = await orgsOfUser(deps.db, user);
  return {
    kind: request.channel === 'ssh' ? 'ssh-session' : request.key_proven ? 'http-signed' : 'http-window',
    httpTrust: deps.settings.httpTrust,
    orgs: orgs.map((o) => o.name),
    newPersonalOrg: !user.is_active && !user.base_user_id,
  };
}

/** A security key's application (normally "ssh:"), from the stored blob; null for other keys. */
function securityKeyApplicationOf(blob: string): string | null {
  const parsed = parsePublicKeyBlob(Buffer.from(blob, 'base64'));
  return parsed.ok ? (parsed.key.application ?? null) : null;
}

/** Writes the binding the trust rules decide for this confirmation; returns the ssh_keys id. */
async function bindKey(trx: Db, request: VerificationRequest, user: User, origin: RequestOrigin, now: Date): Promise<string> {
  const row = await trx.selectFrom('ssh_keys').selectAll().where('key_blob', '=', request.key_blob).forUpdate().executeTakeFirst();
  const decision = onConfirm(bindingOf(row), user.id, request.key_proven, now);
  switch (decision.action) {
    case 'refuse-taken':
      throw new AppError('KEY_TAKEN');
    case 'insert': {
      const id = randomUUID();
      await trx
        .insertInto('ssh_keys')
        .values({
          id,
          user_id: user.id,
          key_type: request.key_type,
          key_blob: request.key_blob,
          fingerprint: request.fingerprint,
          comment: request.comment,
          sk_application: securityKeyApplicationOf(request.key_blob),
          ...decision.patch,
        })
        .execute();
      return id;
    }
    case 'reconfirm':
    case 'take-over': {
      if (!row) throw new Error('trust: a bound key without its row');
      if (decision.action === 'take-over') {
        await recordAudit(trx, origin, {
          action: 'ssh_key.taken_over',
          actorUserId: user.id,
          subjectId: row.id,
          details: { fingerprint: row.fingerprint, from_user_id: row.user_id },
        });
      }
      const takeOver = decision.action === 'take-over' ? { user_id: user.id, last_seen_at: null } : {};
      await trx
        .updateTable('ssh_keys')
        .set({ ...decision.patch, ...takeOver, comment: request.comment })
        .where('id', '=', row.id)
        .execute();
      return row.id;
    }
  }
}

export type WaitOutcome = 'confirmed' | 'cancelled' | 'expired' | 'aborted';

/**
 * Waits until a verification link is confirmed (on any instance: the database is polled), it is
 * cancelled ("This wasn't me"), it expires, or `signal` aborts. `onTick` is called after every
 * poll with the time left.
 */
export async function waitForConfirmation(
  deps: CoreDeps,
  requestId: string,
  options: { signal: AbortSignal; pollMs?: number; tickMs?: number; onTick?: (msLeft: number) => void },
): Promise<WaitOutcome> {
  const pollMs = options.pollMs ?? 1000;
  const tickMs = options.tickMs ?? 1000;
  let deadline = nowOf(deps).getTime() + VERIFICATION_LINK_TTL_MS;
  let look = true; // read the request row on this turn
  for (;;) {
    if (options.signal.aborted) return 'aborted';
    // Listen first, then look: a confirmation whose NOTIFY lands between the read and the wait
    // would otherwise be missed, and the next look would be at the link's last second.
    const turn = new AbortController();
    const endTurn = () => turn.abort();
    options.signal.addEventListener('abort', endTurn, { once: true });
    const signals = deps.confirmations;
    const woke = signals?.listening()
      ? signals.waitFor(requestId, turn.signal, Math.max(1, Math.min(tickMs, deadline - nowOf(deps).getTime())))
      : null;
    try {
      if (look) {
        let row: { consumed_at: Date | null; cancelled_at: Date | null; expires_at: Date } | undefined;
        try {
          row = await deps.db
            .selectFrom('verification_requests')
            .select(['consumed_at', 'cancelled_at', 'expires_at'])
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
        if (row.cancelled_at) return 'cancelled';
        if (row.consumed_at) return 'confirmed';
      }
      const msLeft = deadline - nowOf(deps).getTime();
      if (msLeft <= 0) return 'expired';
      options.onTick?.(msLeft);
      if (woke) {
        // No queries while waiting: the confirmation's NOTIFY wakes us; a reconnect or the deadline
        // makes us look once more.
        const outcome = await woke;
        look = outcome !== 'timeout' || msLeft <= tickMs;
      } else {
        await sleep(Math.min(pollMs, msLeft), options.signal);
        look = true;
      }
    } finally {
      turn.abort(); // this turn's waiter, if the read answered first
      options.signal.removeEventListener('abort', endTurn);
    }
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
