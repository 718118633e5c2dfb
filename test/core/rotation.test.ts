import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AppError,
  authenticateApiKey,
  createOrg,
  findKeyBySecret,
  findUserByEmail,
  MAX_ROTATION_OVERLAP_MS,
  mintApiKey,
  removeMember,
  revokeApiKey,
  revokeKeysIn,
  rotateApiKey,
  rotateApiKeyAsHolder,
  RotationOverlapSchema,
  setBilling,
  setMember,
  undoUndeliveredRotation,
} from '../../src/core/index.js';
import { startTestCore, type TestCore } from '../support/core.js';
import { usingPostgres } from '../support/database.js';
import { until } from '../support/processes.js';

// Rotation in the core (issue 19, point 3): a new key in the old one's place, the old one kept
// for an overlap, each key rotated at most once, by whoever may revoke it or by its holder.

let core: TestCore;
beforeAll(async () => {
  core = await startTestCore();
});
afterAll(async () => {
  await core?.close();
});

const origin = { channel: 'ssh' as const, ip: '192.0.2.1' };
const httpOrigin = { channel: 'http' as const, ip: '198.51.100.7' };
const MINUTE = 60_000;
const HOUR = 3_600_000;

async function account() {
  const { email } = await core.verifiedUser();
  const user = (await findUserByEmail(core.deps.db, email))!;
  const sshKey = await core.deps.db.selectFrom('ssh_keys').select('id').where('user_id', '=', user.id).executeTakeFirstOrThrow();
  return { email, user, sshKeyId: sshKey.id };
}

async function refusal(promise: Promise<unknown>): Promise<AppError> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  return err as AppError;
}

const rowOf = (id: string) => core.deps.db.selectFrom('api_keys').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
const auditOf = (id: string) =>
  core.deps.db.selectFrom('audit_events').select(['action', 'actor_user_id', 'details', 'channel']).where('subject_id', '=', id).orderBy('created_at').execute();

describe('rotateApiKey', () => {
  it('mints the same org, label, permissions, SSH key and creator, links both keys, keeps the old one for 1h by default, and audits both', async () => {
    const { user, sshKeyId } = await account();
    const old = await mintApiKey(core.deps, { user, sshKeyId, label: 'ci-deploy-key', permissions: ['clusters:view'], expiresInMs: 30 * MINUTE, origin });
    core.clock.advance(10 * MINUTE);
    const now = core.clock.now.getTime();

    const rotated = await rotateApiKey(core.deps, { actor: user, keyId: old.api_key_id.slice(0, 8), origin });
    expect(rotated).toMatchObject({ replaces: old.api_key_id, org_id: old.org_id, org_name: old.org_name, permissions: ['clusters:view'], label: 'ci-deploy-key' });
    // The same lifetime (30m), from now.
    expect(rotated.expires_at!.getTime()).toBe(now + 30 * MINUTE);
    // The default overlap is 1h, but the old key's own expiry (20m left) comes first.
    expect(rotated.old_key_expires_at.getTime()).toBe(now + 20 * MINUTE);

    const fresh = await rowOf(rotated.api_key_id);
    expect(fresh).toMatchObject({ org_id: old.org_id, label: 'ci-deploy-key', ssh_key_id: sshKeyId, created_by_user_id: user.id, created_via: 'ssh', rotated_from_id: old.api_key_id });
    expect([...fresh.permissions]).toEqual(['clusters:view']);
    const before = await rowOf(old.api_key_id);
    expect(before.replaced_by_id).toBe(rotated.api_key_id);
    expect(before.revoked_at).toBeNull();

    expect((await authenticateApiKey(core.deps, rotated.api_key)).api_key_id).toBe(rotated.api_key_id);
    expect((await authenticateApiKey(core.deps, old.api_key)).api_key_id).toBe(old.api_key_id);

    expect(await auditOf(old.api_key_id)).toEqual([
      expect.objectContaining({ action: 'api_key.created' }),
      {
        action: 'api_key.rotated',
        actor_user_id: user.id,
        channel: 'ssh',
        details: { label: 'ci-deploy-key', replaced_by: rotated.api_key_id, overlap_seconds: 3600, old_key_expires_at: new Date(now + 20 * MINUTE).toISOString() },
      },
    ]);
    expect(await auditOf(rotated.api_key_id)).toEqual([
      {
        action: 'api_key.created',
        actor_user_id: user.id,
        channel: 'ssh',
        details: {
          label: 'ci-deploy-key',
          ssh_key_id: sshKeyId,
          expires_at: new Date(now + 30 * MINUTE).toISOString(),
          permissions: ['clusters:view'],
          rotated_from: old.api_key_id,
          proof: 'ssh',
        },
      },
    ]);
  });

  it('the old key stops at the end of the overlap, the new one goes on', async () => {
    const { user, sshKeyId } = await account();
    const old = await mintApiKey(core.deps, { user, sshKeyId, label: 'no-expiry-key', origin });
    const rotated = await rotateApiKey(core.deps, { actor: user, keyId: old.api_key_id, overlapMs: 10 * MINUTE, origin });
    // No expiry before, none now (no KEY_MAX_TTL); the old one gets the overlap as its expiry.
    expect(rotated.expires_at).toBeNull();
    expect(rotated.old_key_expires_at.getTime()).toBe(core.clock.now.getTime() + 10 * MINUTE);
    core.clock.advance(10 * MINUTE - 1_000);
    await authenticateApiKey(core.deps, old.api_key);
    core.clock.advance(1_000);
    expect((await refusal(authenticateApiKey(core.deps, old.api_key))).code).toBe('INVALID_API_KEY');
    await authenticateApiKey(core.deps, rotated.api_key);
  });

  it('overlap 0 revokes the old key at once (reason rotated); more than 7d is refused', async () => {
    const { user, sshKeyId } = await account();
    const old = await mintApiKey(core.deps, { user, sshKeyId, label: 'revoke-at-once', origin });
    const tooLong = await refusal(rotateApiKey(core.deps, { actor: user, keyId: old.api_key_id, overlapMs: MAX_ROTATION_OVERLAP_MS + 1_000, origin }));
    expect(tooLong.code).toBe('ROTATION_OVERLAP_TOO_LONG');
    expect((await rowOf(old.api_key_id)).replaced_by_id).toBeNull();

    const rotated = await rotateApiKey(core.deps, { actor: user, keyId: old.api_key_id, overlapMs: 0, origin });
    expect(rotated.old_key_expires_at.getTime()).toBe(core.clock.now.getTime());
    const row = await rowOf(old.api_key_id);
    expect(row).toMatchObject({ revoked_reason: 'rotated', replaced_by_id: rotated.api_key_id });
    expect(row.revoked_at).not.toBeNull();
    expect((await refusal(authenticateApiKey(core.deps, old.api_key))).code).toBe('INVALID_API_KEY');
    // One transaction: the same created_at, so compared as a set.
    expect((await auditOf(old.api_key_id)).map((a) => a.action).sort()).toEqual(['api_key.created', 'api_key.revoked', 'api_key.rotated']);
    const revokedEvent = (await auditOf(old.api_key_id)).find((a) => a.action === 'api_key.revoked');
    expect(revokedEvent?.details).toEqual({ label: 'revoke-at-once', reason: 'rotated', replaced_by: rotated.api_key_id });
  });

  it('a key is rotated once: again is 409 naming its successor, which can be rotated in turn', async () => {
    const { user, sshKeyId } = await account();
    const old = await mintApiKey(core.deps, { user, sshKeyId, label: 'rotate-twice', origin });
    const first = await rotateApiKey(core.deps, { actor: user, keyId: old.api_key_id, origin });
    const again = await refusal(rotateApiKey(core.deps, { actor: user, keyId: old.api_key_id, origin }));
    expect(again.code).toBe('API_KEY_ALREADY_ROTATED');
    expect(again.status).toBe(409);
    expect(again.detail).toBe(first.api_key_id);
    const second = await rotateApiKey(core.deps, { actor: user, keyId: first.api_key_id, origin });
    expect(second.replaces).toBe(first.api_key_id);
    expect((await rowOf(second.api_key_id)).rotated_from_id).toBe(first.api_key_id);
  });

  it('two rotations at once: one wins, the other is told the key was already rotated', async () => {
    const { user, sshKeyId } = await account();
    const old = await mintApiKey(core.deps, { user, sshKeyId, label: 'racing-rotations', origin });
    const results = await Promise.allSettled([
      rotateApiKey(core.deps, { actor: user, keyId: old.api_key_id, origin }),
      rotateApiKey(core.deps, { actor: user, keyId: old.api_key_id, origin }),
    ]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect((lost.reason as AppError).code).toBe('API_KEY_ALREADY_ROTATED');
    const successors = await core.deps.db.selectFrom('api_keys').select('id').where('rotated_from_id', '=', old.api_key_id).execute();
    expect(successors).toHaveLength(1);
  });

  it('revoked or expired keys are refused, saying which; nothing is minted', async () => {
    const { user, sshKeyId } = await account();
    const revoked = await mintApiKey(core.deps, { user, sshKeyId, label: 'revoked-key', origin });
    await revokeApiKey(core.deps, user, revoked.api_key_id, origin);
    expect((await refusal(rotateApiKey(core.deps, { actor: user, keyId: revoked.api_key_id, origin }))).code).toBe('API_KEY_ALREADY_REVOKED');
    const expiring = await mintApiKey(core.deps, { user, sshKeyId, label: 'expiring-key', expiresInMs: 5 * MINUTE, origin });
    core.clock.advance(5 * MINUTE);
    const expired = await refusal(rotateApiKey(core.deps, { actor: user, keyId: expiring.api_key_id, origin }));
    expect(expired.code).toBe('API_KEY_EXPIRED');
    expect(expired.message).toBe('API key has expired: create a new one');
    const successors = await core.deps.db.selectFrom('api_keys').select('id').where('created_by_user_id', '=', user.id).where('rotated_from_id', 'is not', null).execute();
    expect(successors).toEqual([]);
  });

  it('who may: whoever may revoke it. Strangers find nothing; a plain member may not rotate another\'s key; an admin may, and the new key stays its creator\'s', async () => {
    const owner = await account();
    const member = await account();
    const colleague = await account();
    const stranger = await account();
    const team = `rotation-team-${Date.now().toString(36)}`;
    await createOrg(core.deps, team, owner.email, { channel: 'admin', ip: null });
    await setMember(core.deps, team, member.email, 'member', { channel: 'admin', ip: null });
    await setMember(core.deps, team, colleague.email, 'member', { channel: 'admin', ip: null });
    const key = await mintApiKey(core.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'member-key', orgName: team, origin });

    expect((await refusal(rotateApiKey(core.deps, { actor: stranger.user, keyId: key.api_key_id, origin }))).code).toBe('API_KEY_NOT_FOUND');
    expect((await refusal(rotateApiKey(core.deps, { actor: colleague.user, keyId: key.api_key_id, origin }))).code).toBe('NOT_ALLOWED');
    expect((await refusal(rotateApiKey(core.deps, { actor: owner.user, keyId: 'abc', origin }))).code).toBe('API_KEY_NOT_FOUND');

    const rotated = await rotateApiKey(core.deps, { actor: owner.user, keyId: key.api_key_id, origin });
    const row = await rowOf(rotated.api_key_id);
    expect(row.created_by_user_id).toBe(member.user.id);
    expect(row.org_id).toBe(key.org_id);
    const created = (await auditOf(rotated.api_key_id))[0]!;
    expect(created.actor_user_id).toBe(owner.user.id);
  });

  it('a key whose creator has left its org is not renewed, by anyone', async () => {
    const owner = await account();
    const member = await account();
    const team = `rotation-left-${Date.now().toString(36)}`;
    const { org } = await createOrg(core.deps, team, owner.email, { channel: 'admin', ip: null });
    await setMember(core.deps, team, member.email, 'member', { channel: 'admin', ip: null });
    const key = await mintApiKey(core.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'left-behind', orgName: team, origin });
    // By hand, as no command does: `org remove-member` revokes the member's keys as well.
    await core.deps.db.deleteFrom('memberships').where('org_id', '=', org.id).where('user_id', '=', member.user.id).execute();
    expect((await refusal(rotateApiKey(core.deps, { actor: member.user, keyId: key.api_key_id, origin }))).code).toBe('CREATOR_LEFT_ORG');
    expect((await refusal(rotateApiKey(core.deps, { actor: owner.user, keyId: key.api_key_id, origin }))).code).toBe('CREATOR_LEFT_ORG');
    expect((await refusal(rotateApiKeyAsHolder(core.deps, { apiKey: key.api_key, origin: httpOrigin }))).code).toBe('CREATOR_LEFT_ORG');
  });

  it('billing is checked as for a mint: a suspended org gets 402 and nothing changes', async () => {
    const owner = await account();
    const team = `rotation-billing-${Date.now().toString(36)}`;
    await createOrg(core.deps, team, owner.email, { channel: 'admin', ip: null });
    const key = await mintApiKey(core.deps, { user: owner.user, sshKeyId: owner.sshKeyId, label: 'billing-key', orgName: team, origin });
    await setBilling(core.deps, team, 'suspended', { channel: 'admin', ip: null });
    expect((await refusal(rotateApiKey(core.deps, { actor: owner.user, keyId: key.api_key_id, origin }))).code).toBe('BILLING_NOT_VERIFIED');
    const row = await rowOf(key.api_key_id);
    expect(row.replaced_by_id).toBeNull();
    expect(row.expires_at).toBeNull();
  });

  it('lifetime policy: the old lifetime again, capped by KEY_MAX_TTL; a key without expiry gets the maximum', async () => {
    const { user, sshKeyId } = await account();
    const old = await mintApiKey(core.deps, { user, sshKeyId, label: 'long-lived-key', expiresInMs: 30 * 86_400_000, origin });
    const unlimited = await mintApiKey(core.deps, { user, sshKeyId, label: 'unlimited-key', origin });
    core.deps.settings.keyMaxTtlMs = 7 * 86_400_000;
    try {
      const now = core.clock.now.getTime();
      const capped = await rotateApiKey(core.deps, { actor: user, keyId: old.api_key_id, origin });
      expect(capped.expires_at!.getTime()).toBe(now + 7 * 86_400_000);
      const fromNone = await rotateApiKey(core.deps, { actor: user, keyId: unlimited.api_key_id, origin });
      expect(fromNone.expires_at!.getTime()).toBe(now + 7 * 86_400_000);
    } finally {
      core.deps.settings.keyMaxTtlMs = null;
    }
  });
});

describe('rotateApiKeyAsHolder', () => {
  it('the key alone renews it; audited with no actor, by holder; a second rotation of the same key is 409', async () => {
    const { user, sshKeyId } = await account();
    const old = await mintApiKey(core.deps, { user, sshKeyId, label: 'agent-self-key', origin });
    const rotated = await rotateApiKeyAsHolder(core.deps, { apiKey: old.api_key, overlapMs: 5 * MINUTE, origin: httpOrigin });
    expect(rotated.replaces).toBe(old.api_key_id);
    const row = await rowOf(rotated.api_key_id);
    expect(row).toMatchObject({ created_by_user_id: user.id, created_via: 'http', ssh_key_id: sshKeyId, rotated_from_id: old.api_key_id });
    const [rotatedEvent] = (await auditOf(old.api_key_id)).filter((a) => a.action === 'api_key.rotated');
    expect(rotatedEvent).toMatchObject({ actor_user_id: null, channel: 'http', details: { by: 'holder', overlap_seconds: 300, replaced_by: rotated.api_key_id } });
    expect((await auditOf(rotated.api_key_id))[0]).toMatchObject({ actor_user_id: null, details: { proof: 'api_key', rotated_from: old.api_key_id } });

    const again = await refusal(rotateApiKeyAsHolder(core.deps, { apiKey: old.api_key, origin: httpOrigin }));
    expect(again.code).toBe('API_KEY_ALREADY_ROTATED');
  });

  it('a key that would not authenticate gets whoami\'s INVALID_API_KEY: malformed, wrong secret, revoked, expired', async () => {
    const { user, sshKeyId } = await account();
    const key = await mintApiKey(core.deps, { user, sshKeyId, label: 'holder-refusals', expiresInMs: 5 * MINUTE, origin });
    const wrongSecret = key.api_key.slice(0, 36) + 'f'.repeat(64);
    for (const apiKey of ['nonsense', wrongSecret]) {
      expect((await refusal(rotateApiKeyAsHolder(core.deps, { apiKey, origin: httpOrigin }))).code).toBe('INVALID_API_KEY');
    }
    core.clock.advance(5 * MINUTE);
    expect((await refusal(rotateApiKeyAsHolder(core.deps, { apiKey: key.api_key, origin: httpOrigin }))).code).toBe('INVALID_API_KEY');
    const revoked = await mintApiKey(core.deps, { user, sshKeyId, label: 'holder-revoked', origin });
    await revokeApiKey(core.deps, user, revoked.api_key_id, origin);
    expect((await refusal(rotateApiKeyAsHolder(core.deps, { apiKey: revoked.api_key, origin: httpOrigin }))).code).toBe('INVALID_API_KEY');
  });
});

describe('the overlap as both doors read it', () => {
  it('durations up to 7d, 0 for at once; anything else is refused with a reason', () => {
    expect(RotationOverlapSchema.parse('1h')).toBe(HOUR);
    expect(RotationOverlapSchema.parse('0')).toBe(0);
    expect(RotationOverlapSchema.parse('7d')).toBe(MAX_ROTATION_OVERLAP_MS);
    expect(RotationOverlapSchema.safeParse('8d').error?.issues[0]?.message).toBe('must be at most 7d');
    expect(RotationOverlapSchema.safeParse('soon').error?.issues[0]?.message).toBe('must be a duration such as 1h, 15m or 0 (at once)');
  });
});

describe('a chain of rotations', () => {
  it('A -> B -> C: rotating B ends A at once (reason rotated), even inside A\'s overlap; B and C work: never more than two live keys', async () => {
    const { user, sshKeyId } = await account();
    const a = await mintApiKey(core.deps, { user, sshKeyId, label: 'chain-of-keys', origin });
    const b = await rotateApiKeyAsHolder(core.deps, { apiKey: a.api_key, overlapMs: 7 * 86_400_000, origin: httpOrigin });
    await authenticateApiKey(core.deps, a.api_key); // A inside its 7-day overlap
    const c = await rotateApiKeyAsHolder(core.deps, { apiKey: b.api_key, overlapMs: 7 * 86_400_000, origin: httpOrigin });
    expect((await refusal(authenticateApiKey(core.deps, a.api_key))).code).toBe('INVALID_API_KEY');
    await authenticateApiKey(core.deps, b.api_key);
    await authenticateApiKey(core.deps, c.api_key);
    expect(await rowOf(a.api_key_id)).toMatchObject({ revoked_reason: 'rotated', replaced_by_id: b.api_key_id });
    const ended = (await auditOf(a.api_key_id)).find((e) => e.action === 'api_key.revoked');
    expect(ended).toMatchObject({
      actor_user_id: null,
      details: { label: 'chain-of-keys', reason: 'rotated', replaced_by: b.api_key_id, successor_replaced_by: c.api_key_id, by: 'holder' },
    });

    // Over SSH the same: rotating C ends B.
    const d = await rotateApiKey(core.deps, { actor: user, keyId: c.api_key_id, origin });
    expect((await refusal(authenticateApiKey(core.deps, b.api_key))).code).toBe('INVALID_API_KEY');
    await authenticateApiKey(core.deps, c.api_key);
    await authenticateApiKey(core.deps, d.api_key);
    const live = await core.deps.db.selectFrom('api_keys').select('id').where('label', '=', 'chain-of-keys').where('created_by_user_id', '=', user.id).where('revoked_at', 'is', null).execute();
    expect(live.map((k) => k.id).sort()).toEqual([c.api_key_id, d.api_key_id].sort());
  });
});

describe('audit of a holder\'s rotation', () => {
  it('with overlap 0, the old key\'s api_key.revoked and the new key\'s api_key.created say by: holder (no account acts)', async () => {
    const { user, sshKeyId } = await account();
    const old = await mintApiKey(core.deps, { user, sshKeyId, label: 'holder-at-once', origin });
    const rotated = await rotateApiKeyAsHolder(core.deps, { apiKey: old.api_key, overlapMs: 0, origin: httpOrigin });
    const revoked = (await auditOf(old.api_key_id)).find((e) => e.action === 'api_key.revoked');
    expect(revoked).toMatchObject({ actor_user_id: null, channel: 'http', details: { reason: 'rotated', replaced_by: rotated.api_key_id, by: 'holder' } });
    const [created] = await auditOf(rotated.api_key_id);
    expect(created).toMatchObject({ action: 'api_key.created', actor_user_id: null, details: { proof: 'api_key', rotated_from: old.api_key_id, by: 'holder' } });
  });
});

describe('permissions the platform dropped', () => {
  it('dropped ones are not carried over; when none is left, rotation says so (409), not "choose a permission", and nothing changes', async () => {
    const { user, sshKeyId } = await account();
    const both = await mintApiKey(core.deps, { user, sshKeyId, label: 'perms-shrink', origin });
    const viewOnly = await mintApiKey(core.deps, { user, sshKeyId, label: 'perms-vanish', permissions: ['clusters:view'], origin });
    const before = core.deps.settings.keyPermissions;
    core.deps.settings.keyPermissions = [{ name: 'clusters:create', displayName: 'Create Clusters' }];
    try {
      expect((await rotateApiKey(core.deps, { actor: user, keyId: both.api_key_id, origin })).permissions).toEqual(['clusters:create']);
      const gone = await refusal(rotateApiKey(core.deps, { actor: user, keyId: viewOnly.api_key_id, origin }));
      expect([gone.code, gone.status, gone.message]).toEqual([
        'ROTATION_PERMISSIONS_GONE',
        409,
        "None of this API key's permissions exists on this server any more: create a new key instead",
      ]);
      expect(gone.detail).toBe("its permissions: clusters:view; this server's: clusters:create");
      expect((await rowOf(viewOnly.api_key_id)).replaced_by_id).toBeNull();
    } finally {
      core.deps.settings.keyPermissions = before;
    }
  });
});

describe('undoUndeliveredRotation (a holder whose answer was lost)', () => {
  it('the new key is revoked (undelivered); the old one is as before: not rotated, its own expiry, rotatable again', async () => {
    const { user, sshKeyId } = await account();
    const old = await mintApiKey(core.deps, { user, sshKeyId, label: 'lost-answer', expiresInMs: 30 * 86_400_000, origin });
    const rotated = await rotateApiKeyAsHolder(core.deps, { apiKey: old.api_key, overlapMs: 10 * MINUTE, origin: httpOrigin });
    expect(rotated.old_key_previous_expires_at).toEqual(old.expires_at);
    expect(await undoUndeliveredRotation(core.deps, rotated, httpOrigin)).toEqual({ oldKeyRestored: true });

    const successor = await rowOf(rotated.api_key_id);
    expect(successor).toMatchObject({ revoked_reason: 'undelivered', rotated_from_id: null });
    expect((await refusal(authenticateApiKey(core.deps, rotated.api_key))).code).toBe('INVALID_API_KEY');
    const restored = await rowOf(old.api_key_id);
    expect(restored).toMatchObject({ replaced_by_id: null, revoked_at: null });
    expect(new Date(restored.expires_at!).getTime()).toBe(old.expires_at!.getTime());
    core.clock.advance(10 * MINUTE + 1_000); // past the overlap the lost answer set
    await authenticateApiKey(core.deps, old.api_key);
    const again = await rotateApiKeyAsHolder(core.deps, { apiKey: old.api_key, origin: httpOrigin });
    expect((await rowOf(again.api_key_id)).rotated_from_id).toBe(old.api_key_id);
    const undelivered = (await auditOf(rotated.api_key_id)).find((e) => e.action === 'api_key.revoked');
    expect(undelivered?.details).toMatchObject({ reason: 'undelivered', by: 'holder', rotated_from: old.api_key_id, old_key_restored: true });
  });

  it('an old key stopped at once (overlap 0) stays revoked: a revocation is never undone', async () => {
    const { user, sshKeyId } = await account();
    const old = await mintApiKey(core.deps, { user, sshKeyId, label: 'lost-at-once', origin });
    const rotated = await rotateApiKeyAsHolder(core.deps, { apiKey: old.api_key, overlapMs: 0, origin: httpOrigin });
    expect(await undoUndeliveredRotation(core.deps, rotated, httpOrigin)).toEqual({ oldKeyRestored: false });
    expect((await rowOf(rotated.api_key_id)).revoked_reason).toBe('undelivered');
    expect((await rowOf(old.api_key_id)).revoked_reason).toBe('rotated');
  });
});

describe('findKeyBySecret', () => {
  it('the row of the whole key, whatever its state; undefined for anything else, without a lookup for a bad checksum', async () => {
    const { user, sshKeyId } = await account();
    const key = await mintApiKey(core.deps, { user, sshKeyId, label: 'found-by-secret', origin });
    expect((await findKeyBySecret(core.deps.db, key.api_key))?.id).toBe(key.api_key_id);
    await revokeApiKey(core.deps, user, key.api_key_id, origin);
    expect((await findKeyBySecret(core.deps.db, key.api_key))?.revoked_at).not.toBeNull();
    const wrongSecret = key.api_key.slice(0, 36) + '0'.repeat(64);
    const badChecksum = key.api_key.slice(0, 92) + (key.api_key.endsWith('0') ? '1' : '0').repeat(8);
    for (const apiKey of ['', 'nonsense', wrongSecret, badChecksum, key.api_key.toUpperCase()]) {
      expect(await findKeyBySecret(core.deps.db, apiKey)).toBeUndefined();
    }
  });
});

/** Polls an async condition until it holds (until() takes a synchronous one). */
async function untilAsync(check: () => Promise<boolean>, what: string): Promise<void> {
  let seen = false;
  let stop = false;
  const polling = (async () => {
    while (!seen && !stop) {
      seen = await check();
      if (!seen) await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  try {
    await until(() => seen, what, () => '', 10_000);
  } finally {
    stop = true;
    await polling;
  }
}

/** Another connection waits on a row lock, in a statement that mentions `table`. */
const waitingOnLock = (table: string) => async () => {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity
    where datname = current_database() and wait_event_type = 'Lock' and query like ${`%${table}%`}`.execute(core.deps.db);
  return rows[0]!.n > 0;
};

describe("a key and its creator's membership", () => {
  async function team(prefix: string) {
    const owner = await account();
    const member = await account();
    const name = `${prefix}-${Date.now().toString(36)}`;
    const { org } = await createOrg(core.deps, name, owner.email, { channel: 'admin', ip: null });
    await setMember(core.deps, name, member.email, 'member', { channel: 'admin', ip: null });
    return { owner, member, name, org };
  }

  it('a mint whose creator is removed from the org meanwhile (during the billing check) is refused, and writes nothing', async () => {
    const { member, name } = await team('mint-race');
    const billing = core.deps.billing;
    let release = () => {};
    let checking = false;
    core.deps.billing = {
      isActive: () => {
        checking = true;
        return new Promise((resolve) => (release = () => resolve(true)));
      },
    };
    try {
      const minting = mintApiKey(core.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'minted-while-removed', orgName: name, origin });
      await until(() => checking, 'the mint at its billing check', () => '', 10_000);
      await removeMember(core.deps, name, member.email, { channel: 'admin', ip: null });
      release();
      const refused = await refusal(minting);
      expect([refused.code, refused.status]).toEqual(['ORG_NOT_FOUND', 404]);
    } finally {
      core.deps.billing = billing;
    }
    expect(await core.deps.db.selectFrom('api_keys').select('id').where('label', '=', 'minted-while-removed').execute()).toEqual([]);
    const events = await core.deps.db.selectFrom('audit_events').select('id').where('action', '=', 'api_key.created').where('actor_user_id', '=', member.user.id).execute();
    expect(events).toEqual([]);
  });

  it.runIf(usingPostgres)("the mint's one statement waits for a removal holding the org's memberships (FOR UPDATE), then finds the member gone", async () => {
    const { member, name, org } = await team('mint-lock');
    let minting: Promise<AppError> | undefined;
    await core.deps.db.transaction().execute(async (trx) => {
      // What removeMember does first.
      await trx.selectFrom('memberships').select('user_id').where('org_id', '=', org.id).forUpdate().execute();
      minting = refusal(mintApiKey(core.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'minted-under-lock', orgName: name, origin }));
      await untilAsync(waitingOnLock('api_keys'), 'the mint waiting for the membership lock');
      await trx.deleteFrom('memberships').where('org_id', '=', org.id).where('user_id', '=', member.user.id).execute();
    });
    expect((await minting!).code).toBe('ORG_NOT_FOUND');
    expect(await core.deps.db.selectFrom('api_keys').select('id').where('label', '=', 'minted-under-lock').execute()).toEqual([]);
  });

  it.runIf(usingPostgres)('a rotation takes the membership before the key, as a removal does: the two never deadlock', async () => {
    const { member, org } = await team('rotate-lock');
    const key = await mintApiKey(core.deps, { user: member.user, sshKeyId: member.sshKeyId, label: 'rotated-during-removal', orgName: org.name, origin });
    let rotating: Promise<AppError> | undefined;
    // A removal as removeMember makes it: the org's memberships locked, the member deleted, their keys revoked.
    await core.deps.db.transaction().execute(async (trx) => {
      await trx.selectFrom('memberships').select('user_id').where('org_id', '=', org.id).forUpdate().execute();
      rotating = refusal(rotateApiKey(core.deps, { actor: member.user, keyId: key.api_key_id, origin }));
      await untilAsync(waitingOnLock('memberships'), 'the rotation waiting for the membership lock');
      await trx.deleteFrom('memberships').where('org_id', '=', org.id).where('user_id', '=', member.user.id).execute();
      // Would wait for the rotation if it held the key's row: a deadlock, one of the two aborted.
      await revokeKeysIn(trx, core.deps, [{ id: key.api_key_id, org_id: org.id, label: 'rotated-during-removal' }], {
        actorUserId: null,
        origin: { channel: 'admin', ip: null },
        reason: 'member_removed',
      });
    });
    expect((await rotating!).code).toBe('CREATOR_LEFT_ORG');
    expect((await rowOf(key.api_key_id)).revoked_reason).toBe('member_removed');
  });
});
