import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/config.js';
import { AppError, findUserByEmail, keyPermissionsFor, MIN_KEY_TTL_MS, mintApiKey, type CoreDeps } from '../../src/core/index.js';
import { startTestCore, type TestCore } from '../support/core.js';

// Least privilege and short lifetimes in the core (issue 19, points 1 and 2): whichever door
// asks, a key carries only known permissions, in the platform's order, and lives at least 5m.

let core: TestCore;
beforeAll(async () => {
  core = await startTestCore({
    keyPermissions: [
      { name: 'clusters:view', displayName: 'View Clusters' },
      { name: 'clusters:create', displayName: 'Create Clusters' },
      { name: 'billing:read', displayName: 'Read Billing' },
    ],
  });
});
afterAll(async () => {
  await core?.close();
});

const origin = { channel: 'ssh' as const, ip: '192.0.2.1' };

async function account() {
  const { email } = await core.verifiedUser();
  const user = (await findUserByEmail(core.deps.db, email))!;
  return { email, user };
}

async function refusal(promise: Promise<unknown>): Promise<AppError> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  return err as AppError;
}

describe('permissions of a new key', () => {
  it('absent: every permission of the platform (KEY_PERMISSIONS), in its order', async () => {
    const { user } = await account();
    const minted = await mintApiKey(core.deps, { user, sshKeyId: null, label: 'every-permission', origin });
    expect(minted.permissions).toEqual(['clusters:view', 'clusters:create', 'billing:read']);
    const row = await core.deps.db.selectFrom('api_keys').select('permissions').where('id', '=', minted.api_key_id).executeTakeFirstOrThrow();
    expect([...row.permissions]).toEqual(['clusters:view', 'clusters:create', 'billing:read']);
  });

  it('asked: only those, duplicates collapsed, stored in the platform\'s order; audited with the key', async () => {
    const { user } = await account();
    const minted = await mintApiKey(core.deps, {
      user,
      sshKeyId: null,
      label: 'two-of-three',
      permissions: ['billing:read', 'clusters:view', 'billing:read'],
      origin,
    });
    expect(minted.permissions).toEqual(['clusters:view', 'billing:read']);
    const row = await core.deps.db.selectFrom('api_keys').select('permissions').where('id', '=', minted.api_key_id).executeTakeFirstOrThrow();
    expect([...row.permissions]).toEqual(['clusters:view', 'billing:read']);
    const audit = await core.deps.db
      .selectFrom('audit_events')
      .select('details')
      .where('action', '=', 'api_key.created')
      .where('subject_id', '=', minted.api_key_id)
      .executeTakeFirstOrThrow();
    expect(audit.details).toMatchObject({ label: 'two-of-three', permissions: ['clusters:view', 'billing:read'] });
  });

  it('an unknown name is refused, naming it and the known ones; an empty list is refused; nothing is written', async () => {
    const { user } = await account();
    const unknown = await refusal(mintApiKey(core.deps, { user, sshKeyId: null, label: 'bad-permission', permissions: ['clusters:view', 'clusters:delete'], origin }));
    expect(unknown.code).toBe('PERMISSION_UNKNOWN');
    expect(unknown.status).toBe(400);
    expect(unknown.detail).toBe('"clusters:delete" is not a permission on this server; its permissions: clusters:view, clusters:create, billing:read');
    const empty = await refusal(mintApiKey(core.deps, { user, sshKeyId: null, label: 'no-permission', permissions: [], origin }));
    expect(empty.code).toBe('PERMISSIONS_EMPTY');
    const written = await core.deps.db.selectFrom('api_keys').select('id').where('created_by_user_id', '=', user.id).execute();
    expect(written).toEqual([]);
  });

  it('keyPermissionsFor follows the setting, and the default is today\'s two', () => {
    const defaults = { settings: { ...core.deps.settings, keyPermissions: undefined } } as Pick<CoreDeps, 'settings'>;
    expect(keyPermissionsFor(defaults, undefined)).toEqual(['clusters:view', 'clusters:create']);
    expect(() => keyPermissionsFor(defaults, ['billing:read'])).toThrow(AppError);
  });
});

describe('lifetimes', () => {
  it('the core refuses less than 5m (MIN_KEY_TTL_MS); 5m itself is fine', async () => {
    expect(MIN_KEY_TTL_MS).toBe(5 * 60_000);
    const { user } = await account();
    const short = await refusal(mintApiKey(core.deps, { user, sshKeyId: null, label: 'too-short', expiresInMs: MIN_KEY_TTL_MS - 1, origin }));
    expect(short.code).toBe('TTL_TOO_SHORT');
    const minted = await mintApiKey(core.deps, { user, sshKeyId: null, label: 'five-minutes', expiresInMs: MIN_KEY_TTL_MS, origin });
    expect(minted.expires_at!.getTime() - core.clock.now.getTime()).toBe(MIN_KEY_TTL_MS);
  });
});

describe('KEY_MAX_TTL', () => {
  it('below the shortest lifetime (5m) the server does not start: every --expires-in would be refused', () => {
    expect(() => loadConfig({ KEY_MAX_TTL: '4m' })).toThrow(new ConfigError('KEY_MAX_TTL="4m": must be at least 5m, the shortest key lifetime'));
    expect(() => loadConfig({ KEY_MAX_TTL: '90s' })).toThrow(ConfigError);
    expect(loadConfig({ KEY_MAX_TTL: '5m' }).keyMaxTtlMs).toBe(MIN_KEY_TTL_MS);
    expect(loadConfig({ KEY_MAX_TTL: '30d' }).keyMaxTtlMs).toBe(30 * 86_400_000);
    expect(loadConfig({}).keyMaxTtlMs).toBeNull();
  });
});
