import { sql, type InferResult } from 'kysely';
import { jsonArrayFrom } from 'kysely/helpers/postgres';
import type { Db } from '../db/database.js';
import { compiledFromTemplate } from '../db/statement-templates.js';
import type { User } from '../db/schema.js';
import { recordAudit } from './audit.js';
import { membershipsQuery, mergeMemberships, orgsOfUser, type OrgMembership } from './accounts.js';
import { eventsOf, nowOf, type CoreDeps, type RequestOrigin } from './context.js';
import { AppError } from './errors.js';
import type { PublicKey } from './ssh-public-key.js';
import { dueForTouch } from './touch.js';
import { bindingOf, httpAccess, onHttpMint, provenHttpAccess, sshAccountOf, type HttpAccess } from './trust.js';

/**
 * Who holds a key, as each door sees it. The doors ask here; the rules themselves are in
 * `trust.ts`.
 */

/** A key whose signature verified but that acts for no account (yet): only open commands. */
/**
 * A key with no account on this door. `linkedOverHttp`: an account holds it through an HTTP
 * confirmation, which proves an inbox, not the key; one `login` with that email proves it here.
 */
export type AnonymousIdentity = { kind: 'anonymous'; key: PublicKey; linkedOverHttp?: boolean };
/**
 * A key proven to belong to an account: what the account commands receive. `orgs` (with each
 * subscription's status) was read in the same query, so a command run right after needs no
 * second round trip for them; a long session reads the identity again before each command.
 */
export type AccountIdentity = { kind: 'account'; key: PublicKey; user: User; sshKeyId: string; orgs: OrgMembership[] };
export type Identity = AnonymousIdentity | AccountIdentity;

// Built and compiled once (every SSH login that misses the cache runs it): the key's blob is its one parameter.
const identityQuery = (db: Db, blob: string) =>
  db
    .selectFrom('ssh_keys')
    .innerJoin('users', 'users.id', 'ssh_keys.user_id')
    .select([
      'ssh_keys.id as ssh_key_id',
      'ssh_keys.user_id',
      'ssh_keys.proven_at',
      'ssh_keys.http_confirmed_at',
      'ssh_keys.http_mints',
      'users.email',
      'users.base_user_id',
      'users.is_active',
      'users.verified_at',
      'users.created_at',
    ])
    // Correlated with the outer row: the account's memberships and its base account's (an alias).
    // Built without plugins: the outer query's plugins transform the whole tree once.
    .select(jsonArrayFrom(membershipsQuery(db.withoutPlugins()).where(sql<boolean>`memberships.user_id in (users.id, users.base_user_id)`)).as('memberships'))
    .where('ssh_keys.key_blob', '=', blob);

/** What the SSH identity is made of, as one query reads it; kept by the identity cache (ssh-identity-cache.ts). */
export type SshIdentityRow = InferResult<ReturnType<typeof identityQuery>>[number];

/**
 * The SSH door's identity for a key that signed, with its account's orgs: one round trip, or
 * none while the cache holds the key's row. The identity is made afresh from the row each time
 * (callers may change what they receive).
 */
export async function resolveSshIdentity(deps: CoreDeps, key: PublicKey): Promise<Identity> {
  const cache = deps.sshIdentityCache;
  const cached = cache?.get(key.blob);
  eventsOf(deps).sshIdentityLookup(cached ? 'cache' : 'database');
  const ticket = cache?.ticket() ?? 0;
  let row = cached;
  if (!row) {
    const compiled = compiledFromTemplate(deps.db, 'resolveSshIdentity', { blob: key.blob }, (slot) => identityQuery(deps.db, slot.blob));
    row = (await deps.db.executeQuery<SshIdentityRow>(compiled)).rows[0];
  }
  const userId = sshAccountOf(bindingOf(row));
  if (!row) return { kind: 'anonymous', key };
  if (userId === null) return { kind: 'anonymous', key, linkedOverHttp: row.is_active && row.proven_at === null };
  // Only accounts are kept: a key being linked must be seen the moment its link is proven.
  if (!cached) cache?.put(ticket, key.blob, row);
  return { kind: 'account', key, user: userOf(userId, row), sshKeyId: row.ssh_key_id, orgs: mergeMemberships(row.memberships) };
}

/** The user's columns out of a row that joined them in. */
function userOf(id: string, row: Omit<User, 'id'>): User {
  return {
    id,
    email: row.email,
    base_user_id: row.base_user_id,
    is_active: row.is_active,
    verified_at: row.verified_at,
    created_at: row.created_at,
  };
}

/** Best effort, after an SSH authentication: a failed update must not cost the user their session. */
export async function recordKeySeen(deps: CoreDeps, key: PublicKey): Promise<void> {
  if (!dueForTouch(deps, `ssh_key:${key.blob}`)) return;
  try {
    await deps.db.updateTable('ssh_keys').set({ last_seen_at: nowOf(deps) }).where('key_blob', '=', key.blob).execute();
  } catch (err) {
    deps.log.warn({ err: (err as Error).message }, 'could not record last_seen_at');
  }
}

export type HttpKeyStatus =
  | { status: 'trusted'; user: User; sshKeyId: string; orgs: OrgMembership[] }
  | { status: Exclude<HttpAccess, 'trusted'> };

/**
 * verify-key and api-keys: may an HTTP caller act with this (email, key) pair right now? One
 * query whether or not the account exists, so the answer's timing tells nothing either.
 */
export async function httpKeyStatus(deps: CoreDeps, email: string, key: PublicKey, options: { provenBySignature?: boolean } = {}): Promise<HttpKeyStatus> {
  const row = await deps.db
    .selectFrom('users')
    .leftJoin('ssh_keys', (join) => join.onRef('ssh_keys.user_id', '=', 'users.id').on('ssh_keys.key_blob', '=', key.blob))
    .selectAll('users')
    .select(['ssh_keys.id as ssh_key_id', 'ssh_keys.proven_at', 'ssh_keys.http_confirmed_at', 'ssh_keys.http_mints'])
    .where('users.email', '=', email)
    .executeTakeFirst();
  const binding =
    row && row.ssh_key_id !== null
      ? bindingOf({ user_id: row.id, proven_at: row.proven_at, http_confirmed_at: row.http_confirmed_at, http_mints: row.http_mints ?? 0 })
      : bindingOf(undefined);
  const userId = row?.is_active ? row.id : null;
  const access = options.provenBySignature ? provenHttpAccess(binding, userId) : httpAccess(binding, userId, deps.settings.httpTrust, nowOf(deps));
  if (access !== 'trusted' || !row || row.ssh_key_id === null) return { status: access === 'trusted' ? 'unverified' : access };
  const user = userOf(row.id, row);
  return { status: 'trusted', user, sshKeyId: row.ssh_key_id, orgs: await orgsOfUser(deps.db, user) };
}

/**
 * An HTTP mint spends one use of the HTTP window. Called inside the mint's transaction, with the
 * binding row locked, so two mints racing for the last use cannot both win.
 */
export async function spendHttpWindow(trx: Db, deps: CoreDeps, sshKeyId: string, userId: string): Promise<void> {
  const row = await trx.selectFrom('ssh_keys').selectAll().where('id', '=', sshKeyId).forUpdate().executeTakeFirst();
  const decision = onHttpMint(bindingOf(row), userId, deps.settings.httpTrust, nowOf(deps));
  if (!decision.allowed) throw new AppError(decision.access === 'disabled' ? 'HTTP_MINTING_DISABLED' : 'UNVERIFIED_KEY');
  await trx.updateTable('ssh_keys').set(decision.patch).where('id', '=', sshKeyId).execute();
}

export type KeyHolder = { user: User; sshKeyId: string; verifiedAt: Date; lastSeenAt: Date | null };

/** verify-public-key: the account holding this key, only while HTTP callers may act with it. */
export async function findTrustedHolder(deps: CoreDeps, key: PublicKey, options: { provenBySignature?: boolean } = {}): Promise<KeyHolder[]> {
  const row = await findKeyRow(deps, key);
  if (!row) return [];
  const binding = bindingOf(row);
  const access = options.provenBySignature ? provenHttpAccess(binding, row.user_id) : httpAccess(binding, row.user_id, deps.settings.httpTrust, nowOf(deps));
  if (access !== 'trusted') return [];
  const user = await deps.db.selectFrom('users').selectAll().where('id', '=', row.user_id).executeTakeFirstOrThrow();
  return [{ user, sshKeyId: row.id, verifiedAt: row.verified_at, lastSeenAt: row.last_seen_at }];
}

export async function findKeyRow(deps: Pick<CoreDeps, 'db'>, key: Pick<PublicKey, 'blob'>) {
  return deps.db.selectFrom('ssh_keys').selectAll().where('key_blob', '=', key.blob).executeTakeFirst();
}

/**
 * `login` with a key the email's owner already confirmed: the signature proves possession, so
 * the binding becomes proven (an SSH identity, no longer open to takeover). Idempotent.
 */
export async function proveBinding(deps: CoreDeps, key: PublicKey, origin: RequestOrigin, proof: 'ssh' | 'sshsig' = 'ssh'): Promise<void> {
  await deps.db.transaction().execute(async (trx) => {
    const row = await trx.selectFrom('ssh_keys').selectAll().where('key_blob', '=', key.blob).forUpdate().executeTakeFirst();
    if (bindingOf(row).state !== 'emailed' || !row) return;
    await trx.updateTable('ssh_keys').set({ proven_at: nowOf(deps) }).where('id', '=', row.id).execute();
    await recordAudit(trx, origin, {
      action: 'ssh_key.proven',
      actorUserId: row.user_id,
      subjectId: row.id,
      details: { fingerprint: row.fingerprint, proof },
    });
  });
}
