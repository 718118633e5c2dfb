import { sql } from 'kysely';
import { z } from 'zod';
import type { ApiKeyRow, User } from '../db/schema.js';
import { MANAGES, membershipHolders, orgsOfUser, strongestRole } from './accounts.js';
import { API_KEY_REVOCATIONS_CHANNEL } from './api-key-cache.js';
import {
  assertBillingActive,
  assertMayRevoke,
  findKeyBySecret,
  findKeyToRevoke,
  forgetRevoked,
  insertKey,
  keyPermissionsFor,
  MIN_KEY_TTL_MS,
  revokeKeysIn,
  type MintProof,
} from './api-keys.js';
import { recordAudit } from './audit.js';
import { eventsOf, keyPermissionsOf, nowOf, type CoreDeps, type RequestOrigin } from './context.js';
import { parseDuration } from './duration.js';
import { AppError } from './errors.js';
import { assertPolicyAllows, maxTtlIn, type MintAttempt } from './org-policy.js';
import { ORG_POLICY_COLUMNS, policyOfColumns, type OrgPolicy } from './org-policy-row.js';
import { generateApiKey } from './secrets.js';

/**
 * Rotation: a new key that takes an old key's place (same org, label, permissions, SSH key and
 * creator), while the old one keeps working for an overlap so that whoever uses it can switch
 * without downtime. A key is rotated at most once (`replaced_by_id`): a leaked key cannot be used
 * to fork a chain of fresh keys, only its successor can be rotated again. Rotating a key also ends
 * its own predecessor's overlap: a chain has at most two live keys, whoever holds which.
 */

export const DEFAULT_ROTATION_OVERLAP_MS = 3_600_000;
export const MAX_ROTATION_OVERLAP_MS = 7 * 86_400_000;

/** An overlap as both doors take it: a duration such as `1h`, `15m`, `0` (at once), at most 7d. */
export const RotationOverlapSchema = z.string().transform((text, ctx) => {
  const ms = parseDuration(text);
  if (ms === null) {
    ctx.addIssue({ code: 'custom', message: 'must be a duration such as 1h, 15m or 0 (at once)' });
    return z.NEVER;
  }
  if (ms > MAX_ROTATION_OVERLAP_MS) {
    ctx.addIssue({ code: 'custom', message: 'must be at most 7d' });
    return z.NEVER;
  }
  return ms;
});

export type RotatedApiKey = {
  api_key: string;
  api_key_id: string;
  /** The old key's id. */
  replaces: string;
  /** When the old key stops working: the end of the overlap, its own expiry if sooner, or now. */
  old_key_expires_at: Date;
  /** The old key's expiry before the rotation: what `undoUndeliveredRotation` gives back. */
  old_key_previous_expires_at: Date | null;
  org_id: string;
  org_name: string;
  permissions: string[];
  expires_at: Date | null;
  label: string;
};

/**
 * Who rotates: a user who may revoke the key (SSH; `keyType`: the SSH key they signed in with),
 * or whoever holds the key itself (HTTP).
 */
type Rotator = { by: 'user'; actor: User; keyType: string | null } | { by: 'holder' };

/**
 * `rotate KEY_ID`: the key named by its id or an unambiguous start of it, which `actor` may
 * revoke (its creator, or an owner/admin of its org); other keys read as not found.
 */
export async function rotateApiKey(
  deps: CoreDeps,
  input: { actor: User; keyId: string; overlapMs?: number | undefined; origin: RequestOrigin; keyType?: string | null },
): Promise<RotatedApiKey> {
  const overlapMs = checkedOverlap(input.overlapMs);
  const key = await findKeyToRevoke(deps, input.actor, input.keyId);
  await assertMayRevoke(deps, input.actor, key);
  return rotate(deps, key, { by: 'user', actor: input.actor, keyType: input.keyType ?? null }, overlapMs, input.origin);
}

/**
 * Self-rotation: the holder of a key renews it with nothing but the key. A key that does not
 * authenticate (malformed, unknown, wrong, revoked, expired) gets the same INVALID_API_KEY as
 * GET /api/whoami, so this tells nothing more than whoami does.
 */
export async function rotateApiKeyAsHolder(
  deps: CoreDeps,
  input: { apiKey: string; overlapMs?: number | undefined; origin: RequestOrigin },
): Promise<RotatedApiKey> {
  const overlapMs = checkedOverlap(input.overlapMs);
  const key = await findKeyBySecret(deps.db, input.apiKey);
  if (!key) throw new AppError('INVALID_API_KEY');
  return rotate(deps, key, { by: 'holder' }, overlapMs, input.origin);
}

function checkedOverlap(overlapMs: number | undefined): number {
  const ms = overlapMs ?? DEFAULT_ROTATION_OVERLAP_MS;
  if (!Number.isFinite(ms) || ms < 0) throw new AppError('INVALID_REQUEST', { detail: 'overlap: must be a duration such as 1h, 15m or 0' });
  if (ms > MAX_ROTATION_OVERLAP_MS) throw new AppError('ROTATION_OVERLAP_TOO_LONG');
  return ms;
}

/** Why `key` cannot be rotated now, or null. A holder learns no more than whoami would tell. */
function refusalFor(key: Pick<ApiKeyRow, 'revoked_at' | 'expires_at' | 'replaced_by_id'>, rotator: Rotator, now: Date): AppError | null {
  const expired = key.expires_at !== null && new Date(key.expires_at).getTime() <= now.getTime();
  if (key.revoked_at !== null) return new AppError(rotator.by === 'holder' ? 'INVALID_API_KEY' : 'API_KEY_ALREADY_REVOKED');
  if (expired) return new AppError(rotator.by === 'holder' ? 'INVALID_API_KEY' : 'API_KEY_EXPIRED');
  if (key.replaced_by_id !== null) return new AppError('API_KEY_ALREADY_ROTATED', { detail: key.replaced_by_id });
  return null;
}

/**
 * The new key's lifetime: the old key's (expires_at - created_at) again from now, within
 * KEY_MAX_TTL and the org's max-ttl and no shorter than the minimum; a key without an expiry
 * gets that maximum, or none.
 */
function lifetimeAfter(deps: CoreDeps, old: Pick<ApiKeyRow, 'created_at' | 'expires_at'>, policy: OrgPolicy): number | null {
  const maxTtl = maxTtlIn(deps, policy);
  if (old.expires_at === null) return maxTtl;
  const lifetime = Math.max(new Date(old.expires_at).getTime() - new Date(old.created_at).getTime(), MIN_KEY_TTL_MS);
  return maxTtl === null ? lifetime : Math.min(lifetime, maxTtl);
}

/** The permissions a rotated key keeps: the old key's that the platform still has (KEY_PERMISSIONS). */
function keptPermissions(deps: CoreDeps, old: Pick<ApiKeyRow, 'permissions'>): string[] {
  const known = keyPermissionsOf(deps).map((p) => p.name);
  const kept = old.permissions.filter((name) => known.includes(name));
  // Every one dropped from the platform: a key with none is no renewal of this one.
  if (kept.length === 0) {
    throw new AppError('ROTATION_PERMISSIONS_GONE', { detail: `its permissions: ${old.permissions.join(', ')}; this server's: ${known.join(', ')}` });
  }
  return keyPermissionsFor(deps, kept);
}

async function rotate(deps: CoreDeps, found: ApiKeyRow, rotator: Rotator, overlapMs: number, origin: RequestOrigin): Promise<RotatedApiKey> {
  const early = refusalFor(found, rotator, nowOf(deps));
  if (early) throw early;
  // The new key is its creator's, in its org: that person must still be a member of it.
  const creator = await deps.db.selectFrom('users').selectAll().where('id', '=', found.created_by_user_id).executeTakeFirstOrThrow();
  const org = (await orgsOfUser(deps.db, creator)).find((o) => o.org_id === found.org_id);
  if (!org) throw new AppError('CREATOR_LEFT_ORG');
  const permissions = keptPermissions(deps, found);
  // Before the transaction: a slow billing service must not hold the key's row lock.
  await assertBillingActive(deps, org);
  // The org's policy judges a rotation as a mint: by the rotating account's role (a holder's: the
  // creator's), over its door, proven as it was; the new key keeps the old one's permissions.
  const role = rotator.by === 'user' && rotator.actor.id !== creator.id ? ((await orgsOfUser(deps.db, rotator.actor)).find((o) => o.org_id === org.org_id)?.role ?? org.role) : org.role;
  const attempt: MintAttempt = {
    role,
    channel: origin.channel,
    proof: proofOf(rotator, origin),
    keyType: rotator.by === 'user' ? rotator.keyType : null,
    permissions,
    permissionsAsked: false,
    expiresInMs: undefined,
  };
  await assertPolicyAllows(deps, org, attempt);

  const { id, apiKey, secretHash } = generateApiKey();
  const actorUserId = rotator.by === 'user' ? rotator.actor.id : null;
  // Over HTTP no account acts: the events say the key's holder did.
  const byHolder = rotator.by === 'holder' ? { by: 'holder' } : {};
  const result = await deps.db.transaction().execute(async (trx) => {
    const now = nowOf(deps);
    // The membership before the key, in the order `removeMember` locks them (memberships, then
    // keys): a removal either finished before (refused here) or waits, then revokes the new key.
    const holders = membershipHolders(creator);
    // And the rotating account's (its role is judged), and the org's row, which a policy change
    // locks: the policy and role judged are those the key is made under, or it is judged again.
    const minter = rotator.by === 'user' ? membershipHolders(rotator.actor) : holders;
    const locked = await trx
      .selectFrom('memberships')
      .innerJoin('orgs', 'orgs.id', 'memberships.org_id')
      .select(['memberships.user_id', 'memberships.role', ...ORG_POLICY_COLUMNS])
      .where('memberships.org_id', '=', found.org_id)
      .where('memberships.user_id', 'in', [...new Set([...holders, ...minter])])
      // In removeMember's order (by user), so two of them never wait on each other.
      .orderBy('memberships.user_id')
      .forShare('memberships')
      .forKeyShare('orgs')
      .execute();
    if (!locked.some((m) => holders.includes(m.user_id))) throw new AppError('CREATOR_LEFT_ORG');
    const policy = policyOfColumns(locked[0]!);
    const roleNow = strongestRole(locked.filter((m) => minter.includes(m.user_id)).map((m) => m.role));
    // Someone rotating another's key must still manage the org (removed or demoted meanwhile: no).
    if (rotator.by === 'user' && rotator.actor.id !== creator.id && (roleNow === null || !MANAGES.has(roleNow))) {
      throw new AppError(roleNow === null ? 'API_KEY_NOT_FOUND' : 'NOT_ALLOWED');
    }
    if (policy.version !== org.policy.version || roleNow !== attempt.role) {
      await assertPolicyAllows({ db: trx, settings: deps.settings }, { ...org, policy }, { ...attempt, role: roleNow ?? 'member' });
    }
    // Locked, then judged again: of two rotations racing, the second sees the first's successor.
    const old = await trx.selectFrom('api_keys').selectAll().where('id', '=', found.id).forUpdate().executeTakeFirstOrThrow();
    const refusal = refusalFor(old, rotator, now);
    if (refusal) throw refusal;

    // The key this one replaced, if still in its own overlap, stops now: whoever holds it (a
    // leaked copy, say) had its chance to switch, and rotating again must not keep it alive.
    const predecessors =
      old.rotated_from_id === null
        ? []
        : await trx
            .selectFrom('api_keys')
            .select(['id', 'org_id', 'label'])
            .where('id', '=', old.rotated_from_id)
            .where('replaced_by_id', '=', old.id)
            .where('revoked_at', 'is', null)
            .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
            .execute();
    const endedPredecessors = await revokeKeysIn(trx, deps, predecessors, {
      actorUserId,
      origin,
      reason: 'rotated',
      details: { replaced_by: old.id, successor_replaced_by: id, ...byHolder },
    });

    const lifetime = lifetimeAfter(deps, old, policy);
    const expiresAt = lifetime === null ? null : new Date(now.getTime() + lifetime);
    const written = await insertKey(
      trx,
      {
        id,
        org_id: old.org_id,
        created_by_user_id: old.created_by_user_id,
        ssh_key_id: old.ssh_key_id,
        label: old.label,
        secret_hash: secretHash,
        permissions,
        created_via: origin.channel,
        created_at: now,
        expires_at: expiresAt,
        rotated_from_id: old.id,
      },
      creator,
      origin,
      {
        actorUserId,
        details: {
          label: old.label,
          ssh_key_id: old.ssh_key_id,
          expires_at: expiresAt?.toISOString() ?? null,
          permissions,
          rotated_from: old.id,
          proof: proofOf(rotator, origin),
          ...byHolder,
        },
      },
    );
    if (!written) throw new AppError('CREATOR_LEFT_ORG'); // not while the lock above holds

    let oldStopsAt: Date;
    if (overlapMs === 0) {
      await trx.updateTable('api_keys').set({ replaced_by_id: id }).where('id', '=', old.id).execute();
      await revokeKeysIn(trx, deps, [old], { actorUserId, origin, reason: 'rotated', details: { replaced_by: id, ...byHolder } });
      oldStopsAt = now;
    } else {
      const overlapEnd = new Date(now.getTime() + overlapMs);
      const current = old.expires_at === null ? null : new Date(old.expires_at);
      oldStopsAt = current !== null && current.getTime() < overlapEnd.getTime() ? current : overlapEnd;
      await trx.updateTable('api_keys').set({ replaced_by_id: id, expires_at: oldStopsAt }).where('id', '=', old.id).execute();
      // Every instance's whoami cache holds the old expiry: drop it there, so the overlap is the limit.
      await sql`SELECT pg_notify(${API_KEY_REVOCATIONS_CHANNEL}, ${old.id})`.execute(trx);
    }
    await recordAudit(trx, origin, {
      action: 'api_key.rotated',
      actorUserId,
      orgId: old.org_id,
      subjectId: old.id,
      details: {
        label: old.label,
        replaced_by: id,
        overlap_seconds: Math.round(overlapMs / 1000),
        old_key_expires_at: oldStopsAt.toISOString(),
        ...byHolder,
      },
    });
    return { old, expiresAt, oldStopsAt, endedPredecessors };
  });
  forgetRevoked(deps, [found, ...result.endedPredecessors]);
  eventsOf(deps).apiKeyMinted(origin.channel);
  return {
    api_key: apiKey,
    api_key_id: id,
    replaces: found.id,
    old_key_expires_at: result.oldStopsAt,
    old_key_previous_expires_at: result.old.expires_at === null ? null : new Date(result.old.expires_at),
    org_id: org.org_id,
    org_name: org.name,
    permissions,
    expires_at: result.expiresAt,
    label: result.old.label,
  };
}

/**
 * A holder's rotation whose answer never reached them (the client left first): nobody has the new
 * key, so it is revoked (`undelivered`), and the old key is given back as it was (not rotated,
 * its own expiry), so its holder can rotate it again. An old key stopped at once (overlap 0) stays
 * revoked, and a predecessor the rotation ended stays ended: a revocation is never undone.
 */
export async function undoUndeliveredRotation(deps: CoreDeps, rotated: RotatedApiKey, origin: RequestOrigin): Promise<{ oldKeyRestored: boolean }> {
  const restored = await deps.db.transaction().execute(async (trx) => {
    const old = await trx.selectFrom('api_keys').select(['id', 'replaced_by_id', 'revoked_at']).where('id', '=', rotated.replaces).forUpdate().executeTakeFirst();
    const restorable = old !== undefined && old.replaced_by_id === rotated.api_key_id && old.revoked_at === null;
    await revokeKeysIn(trx, deps, [{ id: rotated.api_key_id, org_id: rotated.org_id, label: rotated.label }], {
      actorUserId: null,
      origin,
      reason: 'undelivered',
      details: { by: 'holder', rotated_from: rotated.replaces, old_key_restored: restorable },
    });
    // The old key's one place for a successor is free again (api_keys_rotated_from_idx).
    await trx.updateTable('api_keys').set({ rotated_from_id: null }).where('id', '=', rotated.api_key_id).execute();
    if (restorable) {
      await trx.updateTable('api_keys').set({ replaced_by_id: null, expires_at: rotated.old_key_previous_expires_at }).where('id', '=', rotated.replaces).execute();
      // Caches hold the overlap's end as its expiry.
      await sql`SELECT pg_notify(${API_KEY_REVOCATIONS_CHANNEL}, ${rotated.replaces})`.execute(trx);
    }
    return restorable;
  });
  forgetRevoked(deps, [{ id: rotated.api_key_id }, { id: rotated.replaces }]);
  return { oldKeyRestored: restored };
}

function proofOf(rotator: Rotator, origin: RequestOrigin): MintProof | null {
  if (rotator.by === 'holder') return 'api_key';
  return origin.channel === 'ssh' ? 'ssh' : null;
}
