import { sql } from 'kysely';
import { DEFAULT_KEY_EXPIRY_NOTICES_MS, nowOf, type CoreDeps } from './context.js';
import { errorText } from './errors.js';
import { queueNotice, sshCommandOf, wakeMailSender, type NoticeKey } from './notices.js';

/**
 * Expiry notices (KEY_EXPIRY_NOTICES): a key's creator is emailed at each threshold before the
 * key expires. Every instance scans; the primary key of key_expiry_notices (key, threshold),
 * written with ON CONFLICT DO NOTHING in the same transaction as the outbox row, is what makes a
 * notice go out exactly once however many instances race for it.
 */

/** `list` marks, and the shell greeting counts, keys expiring within this long. */
export const EXPIRING_SOON_MS = 7 * 86_400_000;
/** Keys one query of a scan takes at most; a full batch is followed by another. */
export const EXPIRY_SCAN_BATCH = 500;
/** The longest the loop sleeps: how late a key minted on another instance can be noticed. */
export const EXPIRY_IDLE_MS = 30_000;
/** After a database error, the loop tries again after this long (or the idle time, if shorter). */
const RETRY_AFTER_ERROR_MS = 5_000;

/** The thresholds in whole seconds (as key_expiry_notices stores them), largest first; empty: notices are off. */
export function expiryThresholdsOf(deps: Pick<CoreDeps, 'settings'>): number[] {
  const seconds = (deps.settings.keyExpiryNoticesMs ?? DEFAULT_KEY_EXPIRY_NOTICES_MS).map((ms) => Math.round(ms / 1000)).filter((s) => s > 0);
  return [...new Set(seconds)].sort((a, b) => b - a);
}

type DueKey = {
  id: string;
  label: string;
  org_name: string;
  expires_at: Date;
  created_by_user_id: string;
  email: string;
  /** Every threshold of this key that has passed and has no notice yet. */
  due: number[];
};

const thresholdRows = (seconds: number[]) => sql.join(seconds.map((s) => sql`(${s}::int)`));

/**
 * Whether key `k` is due a notice for threshold `t.s` at `now`: live, not rotated, the threshold
 * passed, and minted with more time left than it. The scan reads with it and the insert re-checks
 * with it, so a key revoked or rotated in between gets no notice.
 */
const dueCondition = (now: Date) => sql<boolean>`
  k.revoked_at IS NULL AND k.replaced_by_id IS NULL AND k.expires_at IS NOT NULL
  AND k.expires_at > ${now}::timestamptz
  AND k.expires_at - make_interval(secs => t.s) <= ${now}::timestamptz
  AND k.created_at < k.expires_at - make_interval(secs => t.s)`;

/**
 * Live keys with a threshold passed and not yet noticed, soonest expiry first, at most `limit`.
 * A threshold counts only if the key was minted with more time left than it: a key minted for
 * an hour gets no "expires within a day" mail. A key already rotated needs no reminder.
 */
async function dueKeys(deps: CoreDeps, seconds: number[], now: Date, limit: number): Promise<DueKey[]> {
  const horizon = new Date(now.getTime() + seconds[0]! * 1000);
  const { rows } = await sql<Omit<DueKey, 'due'> & { due: number[] | string }>`
    SELECT k.id, k.label, o.name AS org_name, k.expires_at, k.created_by_user_id, u.email,
           array_agg(t.s ORDER BY t.s) AS due
    FROM api_keys k
    CROSS JOIN (VALUES ${thresholdRows(seconds)}) AS t(s)
    JOIN orgs o ON o.id = k.org_id
    JOIN users u ON u.id = k.created_by_user_id
    WHERE k.expires_at <= ${horizon}::timestamptz AND ${dueCondition(now)}
      AND NOT EXISTS (SELECT 1 FROM key_expiry_notices n WHERE n.api_key_id = k.id AND n.threshold_seconds = t.s)
    GROUP BY k.id, o.name, u.email
    ORDER BY k.expires_at, k.id
    LIMIT ${limit}`.execute(deps.db);
  return rows.map((row) => ({ ...row, expires_at: new Date(row.expires_at), due: parseIntArray(row.due) }));
}

/** An int[] as the driver gives it: an array (pg), or its text form `{1,2}` where it is not parsed. */
function parseIntArray(value: number[] | string): number[] {
  if (Array.isArray(value)) return value.map(Number);
  return value.replace(/[{}]/g, '').split(',').filter(Boolean).map(Number);
}

/**
 * Records every due threshold and queues the notices, in one transaction: a key whose rows this
 * transaction did not get (another instance's scan did) is left to that scan. Several keys of one
 * creator make one email; several thresholds of one key (the service was down) one line.
 *
 * The rows go in with INSERT … SELECT, which checks each key again as it records it: one revoked
 * or rotated since the scan read it is left out. FOR SHARE makes that check hold until the notice
 * commits (a rotation or revocation of the key waits for it); SKIP LOCKED leaves a key that such a
 * change (or a last-used update) holds right now to the next scan, which sees it settled, rather
 * than wait: waiting on rows that a revocation of many keys locks in its own order could deadlock.
 */
async function noticeBatch(deps: CoreDeps, keys: DueKey[], now: Date): Promise<{ keys: number; notices: number }> {
  const candidates = keys.flatMap((key) => key.due.map((threshold) => sql`(${key.id}::uuid, ${threshold}::int)`));
  return deps.db.transaction().execute(async (trx) => {
    const { rows: recorded } = await sql<{ api_key_id: string }>`
      INSERT INTO key_expiry_notices (api_key_id, threshold_seconds, created_at)
      SELECT k.id, t.s, ${now}::timestamptz
      FROM (VALUES ${sql.join(candidates)}) AS t(id, s)
      JOIN api_keys k ON k.id = t.id
      WHERE ${dueCondition(now)}
      -- One order for every instance: two scans inserting the same rows wait for each other, never deadlock.
      ORDER BY t.id, t.s
      FOR SHARE OF k SKIP LOCKED
      ON CONFLICT DO NOTHING
      RETURNING api_key_id`.execute(trx);
    const mine = new Set(recorded.map((r) => r.api_key_id));
    const byCreator = new Map<string, { email: string; keys: NoticeKey[] }>();
    for (const key of keys) {
      if (!mine.has(key.id)) continue;
      const entry = byCreator.get(key.created_by_user_id) ?? { email: key.email, keys: [] };
      entry.keys.push({ id: key.id, label: key.label, org_name: key.org_name, expires_at: key.expires_at.toISOString() });
      byCreator.set(key.created_by_user_id, entry);
    }
    const rotate_command = sshCommandOf(deps);
    for (const { email, keys: noticed } of byCreator.values()) {
      await queueNotice(trx, deps, { to: email, notice: { kind: 'key_expiry', keys: noticed, rotate_command } });
    }
    return { keys: mine.size, notices: byCreator.size };
  });
}

/**
 * One scan: queues every notice due now (in batches of `batch` keys, while batches come back
 * full) and wakes the mail sender. Returns how many keys were noticed, in how many emails.
 */
export async function queueDueExpiryNotices(deps: CoreDeps, options: { batch?: number } = {}): Promise<{ keys: number; notices: number }> {
  const seconds = expiryThresholdsOf(deps);
  const total = { keys: 0, notices: 0 };
  if (seconds.length === 0) return total;
  const batch = options.batch ?? EXPIRY_SCAN_BATCH;
  for (;;) {
    const now = nowOf(deps);
    const keys = await dueKeys(deps, seconds, now, batch);
    if (keys.length === 0) break;
    const done = await noticeBatch(deps, keys, now);
    total.keys += done.keys;
    total.notices += done.notices;
    // A full batch that recorded nothing was taken by another scan (which goes on) or held by
    // changes under way (left to the next scan): reading it again now would only spin.
    if (keys.length < batch || done.keys === 0) break;
  }
  if (total.notices > 0) wakeMailSender(deps);
  return total;
}

/**
 * When the next threshold of a live key passes (after now), or null if none will: one indexed
 * range read (api_keys_expiring_idx) per threshold. A key minted with less time left than a
 * threshold never appears for it, since its expiry minus the threshold is already past.
 */
export async function nextExpiryNoticeAt(deps: CoreDeps): Promise<Date | null> {
  const seconds = expiryThresholdsOf(deps);
  if (seconds.length === 0) return null;
  const now = nowOf(deps);
  const { rows } = await sql<{ due_at: Date | string | null }>`
    SELECT min(k.expires_at - make_interval(secs => t.s)) AS due_at
    FROM (VALUES ${thresholdRows(seconds)}) AS t(s)
    CROSS JOIN LATERAL (
      SELECT min(expires_at) AS expires_at FROM api_keys
      WHERE revoked_at IS NULL AND expires_at IS NOT NULL AND replaced_by_id IS NULL
        AND expires_at > ${now}::timestamptz + make_interval(secs => t.s)
    ) k`.execute(deps.db);
  const dueAt = rows[0]?.due_at;
  return dueAt ? new Date(dueAt) : null;
}

export type ExpiryNoticeLoop = { stop(): void };

/**
 * The loop every serving instance runs: scan, then sleep until the next threshold passes or
 * `idleMs` (a key minted on another instance is seen at the next wake), whichever is sooner.
 * Database errors are logged and retried. KEY_EXPIRY_NOTICES=off: no loop at all.
 */
export function startExpiryNotices(deps: CoreDeps, options: { idleMs?: number } = {}): ExpiryNoticeLoop {
  if (expiryThresholdsOf(deps).length === 0) return { stop() {} };
  const idleMs = options.idleMs ?? EXPIRY_IDLE_MS;
  let stopping = false;
  let wakeSleeper: (() => void) | null = null;
  void (async () => {
    while (!stopping) {
      let sleepMs = idleMs;
      try {
        const queued = await queueDueExpiryNotices(deps);
        if (queued.notices > 0) deps.log.info(queued, 'expiry notices queued');
        const next = await nextExpiryNoticeAt(deps);
        // A little past the threshold, so that the scan finds it passed.
        if (next) sleepMs = Math.min(idleMs, Math.max(0, next.getTime() - nowOf(deps).getTime()) + 20);
        deps.log.debug({ ...queued, nextDueAt: next?.toISOString() ?? null, sleepMs }, 'expiry notices scanned');
      } catch (err) {
        if (stopping) break; // the database closed under a scan: shutdown, not a fault
        deps.log.warn({ err: errorText(err) }, 'expiry notices: database error, will retry');
        sleepMs = Math.min(idleMs, RETRY_AFTER_ERROR_MS);
      }
      if (stopping) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, sleepMs);
        timer.unref();
        function done() {
          clearTimeout(timer);
          wakeSleeper = null;
          resolve();
        }
        wakeSleeper = done;
      });
    }
  })();
  return {
    stop() {
      stopping = true;
      wakeSleeper?.();
    },
  };
}

/** key_expiry_notices rows are kept this long after their key stops working (revoked or expired). */
export const EXPIRY_NOTICES_KEPT_MS = 86_400_000;
/** Keys whose rows one sweep deletes at most. */
export const EXPIRY_NOTICES_SWEEP_BATCH = 1_000;

/**
 * Deletes the notice rows of keys that stopped working more than EXPIRY_NOTICES_KEPT_MS ago, for
 * at most `batch` keys (the periodic sweeper calls it again): such a key is never due a notice
 * again, so its rows guard nothing. The day's margin covers an instance whose clock lags, which
 * could still see the key live. Returns how many rows went.
 */
export async function sweepExpiryNotices(deps: CoreDeps, options: { batch?: number } = {}): Promise<number> {
  const before = new Date(nowOf(deps).getTime() - EXPIRY_NOTICES_KEPT_MS);
  // Driven from key_expiry_notices (small: keys near a threshold), never from every dead key.
  const result = await sql`
    DELETE FROM key_expiry_notices
    WHERE api_key_id IN (
      SELECT DISTINCT n.api_key_id
      FROM key_expiry_notices n
      JOIN api_keys k ON k.id = n.api_key_id
      WHERE least(k.revoked_at, k.expires_at) < ${before}::timestamptz
      LIMIT ${options.batch ?? EXPIRY_NOTICES_SWEEP_BATCH}
    )`.execute(deps.db);
  return Number(result.numAffectedRows ?? 0);
}

/** How many live keys `userId` created expire within EXPIRING_SOON_MS (not counting keys already rotated): for the shell's greeting. */
export async function countKeysExpiringSoon(deps: CoreDeps, userId: string): Promise<number> {
  const now = nowOf(deps);
  const row = await deps.db
    .selectFrom('api_keys')
    .select((eb) => eb.fn.countAll<string>().as('count'))
    .where('created_by_user_id', '=', userId)
    .where('revoked_at', 'is', null)
    .where('replaced_by_id', 'is', null)
    .where('expires_at', '>', now)
    .where('expires_at', '<=', new Date(now.getTime() + EXPIRING_SOON_MS))
    .executeTakeFirst();
  return Number(row?.count ?? 0);
}
