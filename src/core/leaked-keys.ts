import { sql, type Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import { authenticateApiKey, forgetRevoked, revokeKeysIn } from './api-keys.js';
import { recordAudit } from './audit.js';
import { nowOf, type CoreDeps, type RequestOrigin } from './context.js';
import { AppError } from './errors.js';
import { queueNotice, wakeMailSender, type NoticeKey } from './notices.js';
import { digestsEqual, parseApiKey, sha256Hex } from './secrets.js';
import { escapeUnsafeChars } from './text.js';

/**
 * Leaked keys die at once, whoever notices: the holder of a key may revoke it with nothing but
 * the key, and a secret scanner (GitHub's partner program) reports keys found in public. Either
 * way the key's creator is emailed, and every instance's whoami cache hears of it (revokeKeysIn).
 */

/**
 * Revokes the key `apiKey` for whoever presents it (a CI job that printed it, someone who found
 * it). Anything that is not a live key (malformed, unknown, wrong secret, expired, already
 * revoked) is INVALID_API_KEY, exactly as `/api/whoami` answers it: no oracle about keys.
 */
export async function revokeKeyAsHolder(deps: CoreDeps, apiKey: string, origin: RequestOrigin): Promise<{ api_key_id: string }> {
  // The whoami check itself: checksum offline, then a constant-time comparison of the secret's hash.
  const key = await authenticateApiKey(deps, apiKey);
  const revoked = await deps.db.transaction().execute(async (trx) => {
    const done = await revokeKeysIn(trx, deps, [{ id: key.api_key_id, org_id: key.org_id, label: key.label }], {
      actorUserId: null,
      origin,
      reason: 'holder',
      details: { by: 'holder' },
    });
    if (done.length === 0) return done; // revoked meanwhile, by another request
    const creator = await creatorOf(trx, key.api_key_id);
    await queueNotice(trx, deps, {
      to: creator,
      notice: {
        kind: 'key_revoked',
        reason: 'holder',
        keys: [{ id: key.api_key_id, label: key.label, org_name: key.org_name, expires_at: isoOrNull(key.expires_at) }],
        address: origin.ip,
      },
    });
    return done;
  });
  if (revoked.length === 0) throw new AppError('INVALID_API_KEY');
  forgetRevoked(deps, revoked);
  wakeMailSender(deps);
  return { api_key_id: key.api_key_id };
}

async function creatorOf(trx: Kysely<Database>, keyId: string): Promise<string> {
  const row = await trx
    .selectFrom('api_keys')
    .innerJoin('users', 'users.id', 'api_keys.created_by_user_id')
    .select('users.email')
    .where('api_keys.id', '=', keyId)
    .executeTakeFirstOrThrow();
  return row.email;
}

/** One match in a scanner's report: GitHub's `{token, type, url, source}`. */
export type LeakMatch = { token: string; type: string; url: string | null; source: string | null };

/** `true_positive`: a key this service issued (live, expired or revoked); `false_positive`: anything else. */
export type LeakLabel = 'true_positive' | 'false_positive';

export type LeakReport = {
  matches: readonly LeakMatch[];
  /** SHA-256 (hex) of the report's signed bytes: the same report again is a replay. */
  reportSha256: string;
  /** Which of the scanner's keys signed it, for the audit trail. */
  keyIdentifier: string;
  origin: RequestOrigin;
};

/** How long a report is remembered: a replay within it is refused; later, it can only find keys already revoked. */
export const LEAK_REPORT_MEMORY_MS = 24 * 3_600_000;

/** At most this many matches in one report. */
export const MAX_LEAK_MATCHES = 1000;

type KnownKey = {
  id: string;
  secret_hash: string;
  org_id: string;
  org_name: string;
  label: string;
  expires_at: Date | null;
  revoked_at: Date | null;
  creator_email: string;
};

/**
 * A secret scanner's report (signature already checked by the door): each match that is one of
 * our live keys is revoked (reason `leaked`, with where it was found) with the keys made from it by
 * self-rotation, its creator emailed, and the report audited; a report seen in the last day gets
 * the same answer and changes nothing. Returns each match's label, in the report's order.
 */
export async function reportLeakedKeys(deps: CoreDeps, report: LeakReport): Promise<LeakLabel[]> {
  if (report.matches.length > MAX_LEAK_MATCHES) throw new AppError('LEAK_REPORT_INVALID', { detail: `at most ${MAX_LEAK_MATCHES} matches per report` });
  const known = await knownKeys(deps, report.matches);
  // Ours only if the whole secret matches: a made-up token with a valid checksum and a real id is not.
  const keyOf = (match: LeakMatch): KnownKey | null => {
    const parsed = parseApiKey(match.token);
    const key = parsed ? known.get(parsed.id) : undefined;
    return key && digestsEqual(key.secret_hash, sha256Hex(match.token)) ? key : null;
  };
  const found = report.matches.map((match) => ({ match, key: keyOf(match) }));
  const now = nowOf(deps);
  const labels = found.map((f): LeakLabel => (f.key ? 'true_positive' : 'false_positive'));
  const revoked = await deps.db.transaction().execute(async (trx) => {
    // A report seen in the last day (GitHub retrying after a lost answer, or someone replaying a
    // captured one) is answered again and changes nothing.
    if (!(await rememberReport(trx, deps, report))) return null;
    const done: Array<{ key: KnownKey; where: Where; successors: KnownKey[] }> = [];
    const seen = new Set<string>();
    for (const { match, key } of found) {
      if (key === null || seen.has(key.id)) continue; // a key twice in one report (two files): handled once
      seen.add(key.id);
      const where = whereFound(match);
      const how = { actorUserId: null, origin: report.origin, reason: 'leaked' as const, details: { url: where.url, source: where.source, type: where.type } };
      const [hit] = isLive(key, now) ? await revokeKeysIn(trx, deps, [key], how) : [];
      // Whoever found the key could have renewed it with itself (POST /api/api-keys/rotate), even
      // long before the report, and even if the key has expired since: those keys die with it.
      const successors = await liveSelfRotatedSuccessors(trx, key.id, now);
      const killed = await revokeKeysIn(trx, deps, successors, { ...how, details: { ...how.details, made_from: key.id } });
      const successorsKilled = successors.filter((k) => killed.some((r) => r.id === k.id));
      if (hit || successorsKilled.length > 0) done.push({ key, where, successors: successorsKilled });
    }
    for (const notice of noticesOf(done)) await queueNotice(trx, deps, notice);
    await recordAudit(trx, report.origin, {
      action: 'secret_scanning.reported',
      details: {
        scanner: 'github',
        key_identifier: escapeUnsafeChars(report.keyIdentifier),
        matches: report.matches.length,
        true_positives: found.filter((f) => f.key !== null).length,
        revoked: done.flatMap((d) => [d.key.id, ...d.successors.map((k) => k.id)]),
      },
    });
    return done.flatMap((d) => [d.key, ...d.successors]);
  });
  if (revoked === null) {
    deps.log.info({ keyIdentifier: escapeUnsafeChars(report.keyIdentifier) }, 'secret scanning: a report received before came again; answered, nothing done');
    return labels;
  }
  forgetRevoked(deps, revoked);
  if (revoked.length > 0) wakeMailSender(deps);
  return labels;
}

function isLive(key: Pick<KnownKey, 'revoked_at' | 'expires_at'>, now: Date): boolean {
  return key.revoked_at === null && (key.expires_at === null || new Date(key.expires_at).getTime() > now.getTime());
}

/**
 * Live keys descending from `keyId` by self-rotation (HTTP rotation is always by the key's
 * holder; a rotation over SSH was made by a person who proved who they are, and its line stops
 * there).
 */
async function liveSelfRotatedSuccessors(trx: Kysely<Database>, keyId: string, now: Date): Promise<KnownKey[]> {
  const { rows } = await sql<KnownKey>`
    WITH RECURSIVE line AS (
      SELECT id, 1 AS depth FROM api_keys WHERE rotated_from_id = ${keyId} AND created_via = 'http'
      UNION ALL
      SELECT k.id, line.depth + 1 FROM api_keys k JOIN line ON k.rotated_from_id = line.id
      WHERE k.created_via = 'http' AND line.depth < 1000
    )
    SELECT k.id, k.secret_hash, k.org_id, o.name AS org_name, k.label, k.expires_at, k.revoked_at, u.email AS creator_email
    FROM line JOIN api_keys k ON k.id = line.id JOIN orgs o ON o.id = k.org_id JOIN users u ON u.id = k.created_by_user_id
    WHERE k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > ${now})
    ORDER BY line.depth`.execute(trx);
  return rows;
}

/** Our keys among the matches' ids (tokens whose checksum fails never reach the database), with their creators. */
async function knownKeys(deps: CoreDeps, matches: readonly LeakMatch[]): Promise<Map<string, KnownKey>> {
  const ids = [...new Set(matches.map((m) => parseApiKey(m.token)?.id).filter((id): id is string => id !== undefined))];
  if (ids.length === 0) return new Map();
  const rows = await deps.db
    .selectFrom('api_keys')
    .innerJoin('orgs', 'orgs.id', 'api_keys.org_id')
    .innerJoin('users', 'users.id', 'api_keys.created_by_user_id')
    .select([
      'api_keys.id',
      'api_keys.secret_hash',
      'api_keys.org_id',
      'orgs.name as org_name',
      'api_keys.label',
      'api_keys.expires_at',
      'api_keys.revoked_at',
      'users.email as creator_email',
    ])
    .where('api_keys.id', 'in', ids)
    .execute();
  return new Map(rows.map((row) => [row.id, row]));
}

/**
 * Remembers the report, or refuses it as a replay. The primary key decides between two copies
 * arriving at once: the second waits for the first's transaction, then finds its row. Reports
 * older than the memory are forgotten here: they come rarely, so no sweeper is needed.
 */
async function rememberReport(trx: Kysely<Database>, deps: CoreDeps, report: LeakReport): Promise<boolean> {
  const now = nowOf(deps);
  await trx.deleteFrom('secret_scanning_reports').where('received_at', '<', new Date(now.getTime() - LEAK_REPORT_MEMORY_MS)).execute();
  const inserted = await trx
    .insertInto('secret_scanning_reports')
    .values({ report_sha256: report.reportSha256, key_identifier: report.keyIdentifier, received_at: now })
    .onConflict((oc) => oc.column('report_sha256').doNothing())
    .returning('report_sha256')
    .execute();
  return inserted.length > 0;
}

/** Where a key was found, as the report says it; text from outside, made harmless for mail and audit. */
type Where = { url: string | null; source: string | null; type: string };

function whereFound(match: LeakMatch): Where {
  // Bounded, then escaped: a cut through a surrogate pair is escaped too, never stored broken.
  const clean = (text: string | null, max: number) => (text === null || text === '' ? null : escapeUnsafeChars(text.slice(0, max)));
  return { url: clean(match.url, 2048), source: clean(match.source, 100), type: clean(match.type, 100) ?? '' };
}

/** One email per creator and place found: several keys leaked in one file are one notice. */
function noticesOf(revoked: ReadonlyArray<{ key: KnownKey; where: Where; successors: KnownKey[] }>) {
  const byRecipient = new Map<string, { to: string; url: string | null; source: string | null; keys: NoticeKey[]; successors: NoticeKey[] }>();
  const named = (key: KnownKey): NoticeKey => ({ id: key.id, label: key.label, org_name: key.org_name, expires_at: isoOrNull(key.expires_at) });
  for (const { key, where, successors } of revoked) {
    const group = JSON.stringify([key.creator_email, where.url, where.source]);
    let notice = byRecipient.get(group);
    if (!notice) byRecipient.set(group, (notice = { to: key.creator_email, url: where.url, source: where.source, keys: [], successors: [] }));
    notice.keys.push(named(key));
    notice.successors.push(...successors.map(named));
  }
  return [...byRecipient.values()].map(({ to, url, source, keys, successors }) => ({
    to,
    notice: { kind: 'key_revoked' as const, reason: 'leaked' as const, keys, url, source, ...(successors.length ? { successors } : {}) },
  }));
}

function isoOrNull(date: Date | string | null): string | null {
  return date === null ? null : new Date(date).toISOString();
}
