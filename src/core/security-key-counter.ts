import { sql } from 'kysely';
import { recordAudit } from './audit.js';
import type { CoreDeps, RequestOrigin } from './context.js';
import { counterRegressed } from './security-keys.js';
import type { PublicKey } from './ssh-public-key.js';

export type CounterVerdict = 'ok' | 'regressed' | 'refused';

/**
 * After a security key's signature verified: keeps the highest counter seen for the key (of an
 * account; a key with no account has nothing to protect yet). A counter that does not move
 * forward may mean a cloned authenticator: written to the audit trail, and refused when
 * SK_STRICT_COUNTER is set. One statement, which reads the old value and keeps the higher one.
 */
export async function recordSecurityKeyCounter(deps: CoreDeps, key: PublicKey, counter: number, origin: RequestOrigin): Promise<CounterVerdict> {
  const strict = deps.settings.securityKeys?.strictCounter ?? false;
  let row: { id: string; user_id: string; highest: string | number | null } | undefined;
  try {
    const result = await sql<{ id: string; user_id: string; highest: string | number | null }>`
      WITH before AS (SELECT id, sk_counter FROM ssh_keys WHERE key_blob = ${key.blob} FOR UPDATE)
      UPDATE ssh_keys SET sk_counter = GREATEST(COALESCE(before.sk_counter, 0), ${counter})
      FROM before WHERE ssh_keys.id = before.id
      RETURNING ssh_keys.id, ssh_keys.user_id, before.sk_counter AS highest`.execute(deps.db);
    row = result.rows[0];
  } catch (err) {
    deps.log.warn({ err: (err as Error).message }, 'could not check the security key counter');
    return strict ? 'refused' : 'ok'; // strict fails closed
  }
  if (!row) return 'ok';
  const highest = row.highest === null ? null : Number(row.highest);
  if (!counterRegressed(highest, counter)) return 'ok';
  await recordAudit(deps.db, origin, {
    action: 'ssh_key.counter_not_increasing',
    actorUserId: row.user_id,
    subjectId: row.id,
    details: { fingerprint: key.fingerprint, counter, highest_seen: highest, refused: strict, note: 'possible cloned security key' },
  }).catch((err: unknown) => deps.log.warn({ err: (err as Error).message }, 'could not record the security key counter event'));
  deps.log.warn({ fingerprint: key.fingerprint, counter, highestSeen: highest, refused: strict }, 'security key counter did not increase: possible cloned authenticator');
  return strict ? 'refused' : 'regressed';
}
