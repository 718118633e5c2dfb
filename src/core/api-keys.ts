import { sql, type InferResult, type Kysely } from 'kysely';
import type { ApiKeyRow, Database, Role, User } from '../db/schema.js';
import { chooseOrg, MANAGES, membershipHolders, orgsOfUser, type OrgMembership } from './accounts.js';
export { chooseOrg, defaultOrg, MANAGES } from './accounts.js';
import { API_KEY_REVOCATIONS_CHANNEL, type ApiKeyRecord } from './api-key-cache.js';
import { AUDIT_VALUE_COLUMNS, auditValues, insertWithAudit, recordAudit, type AuditValues } from './audit.js';
import { compiledFromTemplate } from '../db/statement-templates.js';
import { eventsOf, keyPermissionsOf, nowOf, type CoreDeps, type RequestOrigin } from './context.js';
import { dueForTouch } from './touch.js';
import { AppError } from './errors.js';
import { digestsEqual, generateApiKey, parseApiKey, sha256Hex } from './secrets.js';
import type { PublicKey } from './ssh-public-key.js';
import { httpKeyStatus, spendHttpWindow } from './identity.js';
import { assertPolicyAllows, defaultPermissionsIn, maxTtlIn } from './org-policy.js';

export type MintedApiKey = {
  api_key: string;
  api_key_id: string;
  org_id: string;
  org_name: string;
  permissions: string[];
  created_at: Date;
  expires_at: Date | null;
};

export type MintInput = {
  user: User;
  /** The user's orgs if the caller just read them (with its identity, in one query); else read here. */
  orgs?: OrgMembership[];
  sshKeyId: string | null;
  /** Over HTTP: the mint spends one use of the key's HTTP window (checked again under lock). */
  spendsHttpWindow?: boolean;
  /** How the caller proved it may use the key, for the audit trail (`api_key`: the holder of the key it replaces). */
  proof?: MintProof;
  label: string;
  orgName?: string | undefined;
  expiresInMs?: number | undefined;
  /** Names among the platform's (KEY_PERMISSIONS); absent: all the org's policy allows (all of them: Vers compatibility). */
  permissions?: readonly string[] | undefined;
  /** The type of the SSH key that proved the mint (the SSH session's, a signed request's), for require-security-key. */
  keyType?: string | null;
  origin: RequestOrigin;
};

export type MintProof = 'email' | 'ssh' | 'sshsig' | 'api_key';

/** The shortest lifetime a key may be asked for: shorter ones expire before anyone can use them. */
export const MIN_KEY_TTL_MS = 5 * 60_000;

/**
 * The permissions a new key carries: those asked for, each one the platform's, in the platform's
 * order and once; nothing asked: every one of them. An unknown name is refused, naming it.
 */
export function keyPermissionsFor(deps: Pick<CoreDeps, 'settings'>, asked: readonly string[] | undefined): string[] {
  const known = keyPermissionsOf(deps).map((p) => p.name);
  if (asked === undefined) return known;
  if (asked.length === 0) throw new AppError('PERMISSIONS_EMPTY', { detail: `choose among: ${known.join(', ')}` });
  const unknown = asked.find((name) => !known.includes(name));
  if (unknown !== undefined) {
    throw new AppError('PERMISSION_UNKNOWN', { detail: `"${unknown.slice(0, 100)}" is not a permission on this server; its permissions: ${known.join(', ')}` });
  }
  return known.filter((name) => asked.includes(name));
}

/** Refuses a mint for an org whose billing is not active (or could not be checked): 402. */
export async function assertBillingActive(deps: CoreDeps, org: Pick<OrgMembership, 'org_id' | 'name' | 'subscription'>): Promise<void> {
  let active = false;
  try {
    active = await deps.billing.isActive({ id: org.org_id, name: org.name, subscription: org.subscription });
    eventsOf(deps).billingChecked(active ? 'active' : 'inactive');
  } catch (err) {
    eventsOf(deps).billingChecked('error');
    deps.log.warn({ err: (err as Error).message, orgId: org.org_id }, 'billing check failed');
  }
  if (!active) throw new AppError('BILLING_NOT_VERIFIED', { orgName: org.name });
}

/**
 * The one key-creation service both doors call. Billing is checked first, then the org's key
 * policy (org-policy.ts); nothing is written on failure. The policy is judged as read with the
 * identity, and the key is written only while that is still the org's policy (its version): a
 * change in between is judged again, so no key is ever made under a policy its org had left.
 */
export async function mintApiKey(deps: CoreDeps, input: MintInput): Promise<MintedApiKey> {
  const asked = input.permissions === undefined ? undefined : keyPermissionsFor(deps, input.permissions);
  let org = chooseOrg(input.orgs ?? (await orgsOfUser(deps.db, input.user)), input.orgName);
  const operatorMax = deps.settings.keyMaxTtlMs;
  if (input.expiresInMs !== undefined && operatorMax !== null && input.expiresInMs > operatorMax) {
    throw new AppError('TTL_TOO_LONG');
  }
  if (input.expiresInMs !== undefined && input.expiresInMs < MIN_KEY_TTL_MS) throw new AppError('TTL_TOO_SHORT');

  await assertBillingActive(deps, org);

  const proof = input.proof ?? (input.origin.channel === 'ssh' ? 'ssh' : input.spendsHttpWindow ? 'email' : null);
  const { id, apiKey, secretHash } = generateApiKey();
  for (let attempt = 1; ; attempt++) {
    const permissions = asked ?? defaultPermissionsIn(deps, org.policy);
    await assertPolicyAllows(deps, org, {
      role: org.role,
      channel: input.origin.channel,
      proof,
      keyType: input.keyType ?? null,
      permissions,
      permissionsAsked: asked !== undefined,
      expiresInMs: input.expiresInMs,
    });
    // With a maximum (the operator's, the org's), a key without an explicit expiry gets it.
    const ttl = input.expiresInMs ?? maxTtlIn(deps, org.policy) ?? undefined;
    const now = nowOf(deps);
    const expiresAt = ttl === undefined ? null : new Date(now.getTime() + ttl);
    const key: NewApiKey = {
      id,
      org_id: org.org_id,
      created_by_user_id: input.user.id,
      ssh_key_id: input.sshKeyId,
      label: input.label,
      secret_hash: secretHash,
      permissions,
      created_via: input.origin.channel,
      created_at: now,
      expires_at: expiresAt,
      rotated_from_id: null,
    };
    const audit = {
      actorUserId: input.user.id,
      details: { label: input.label, ssh_key_id: input.sshKeyId, expires_at: expiresAt?.toISOString() ?? null, permissions, proof },
    };
    // Under members-mint false, also only while the minting account still manages the org.
    const insert = { policyVersion: org.policy.version, managersOnly: !org.policy.membersMint };
    let written: boolean;
    if (input.spendsHttpWindow) {
      // The window's use is checked under a row lock: a transaction.
      written = await deps.db.transaction().execute(async (trx) => {
        if (input.sshKeyId === null) throw new AppError('UNVERIFIED_KEY');
        await spendHttpWindow(trx, deps, input.sshKeyId, input.user.id);
        if (await insertKey(trx, key, input.user, input.origin, audit, insert)) return true;
        // Not written: nor is the window's use spent (the transaction rolls back).
        throw new MintNotWritten();
      }).catch((err: unknown) => {
        if (err instanceof MintNotWritten) return false;
        throw err;
      });
    } else {
      written = await insertKey(deps.db, key, input.user, input.origin, audit, insert);
    }
    if (written) {
      eventsOf(deps).apiKeyMinted(input.origin.channel);
      return { api_key: apiKey, api_key_id: id, org_id: org.org_id, org_name: org.name, permissions: [...permissions], created_at: now, expires_at: expiresAt };
    }
    // Removed from the org since its list was read (billing in between), or its policy changed:
    // read again, and either answer as a moment later or judge the new policy.
    const fresh = (await orgsOfUser(deps.db, input.user)).find((o) => o.org_id === org.org_id);
    if (!fresh) throw new AppError('ORG_NOT_FOUND', { orgName: org.name });
    // Three changes of one org's policy within one mint: a storm, not a mint to retry forever.
    if (attempt >= 3) throw new AppError('UNAVAILABLE');
    org = fresh;
  }
}

/** A mint's write that found the org (its membership or policy) changed since it was read. */
class MintNotWritten extends Error {}

/** A key row as minting and rotation write it. */
export type NewApiKey = Pick<
  ApiKeyRow,
  'id' | 'org_id' | 'created_by_user_id' | 'ssh_key_id' | 'label' | 'secret_hash' | 'permissions' | 'created_via' | 'rotated_from_id'
> & { created_at: Date; expires_at: Date | null };

/** NewApiKey's columns with their SQL types: values selected rather than inserted need a cast to them. */
const NEW_KEY_COLUMN_TYPES = {
  id: 'uuid',
  org_id: 'uuid',
  created_by_user_id: 'uuid',
  ssh_key_id: 'uuid',
  label: 'text',
  secret_hash: 'text',
  permissions: 'text[]',
  created_via: 'text',
  created_at: 'timestamptz',
  expires_at: 'timestamptz',
  rotated_from_id: 'uuid',
} as const satisfies Record<keyof NewApiKey, string>;
const NEW_KEY_COLUMNS = Object.keys(NEW_KEY_COLUMN_TYPES) as Array<keyof NewApiKey>;
/** insertKey's template slots: each column's value under a name of its own. */
const KEY_SLOTS = NEW_KEY_COLUMNS.map((column) => [column, `key_${column}`] as const);
const EVENT_SLOTS = AUDIT_VALUE_COLUMNS.map((column) => [column, `event_${column}`] as const);
const HOLDER_SLOTS = ['holder_0', 'holder_1'];
const holderSlot = (i: number) => HOLDER_SLOTS[i] ?? `holder_${i}`;

/**
 * Writes `key` and its `api_key.created` event in one statement, only while its creator (or the
 * base account it acts through) is a member of the key's org: the statement takes FOR SHARE on
 * that membership, so a removal from the org (`removeMember`, FOR UPDATE) either committed first
 * and nothing is written (false), or waits for this key and then revokes it with the others.
 * With `policyVersion`, also only while the org's policy is the one judged: FOR KEY SHARE on the
 * org's row, which `setOrgPolicy` locks FOR UPDATE; a change committed first writes nothing.
 * With `managersOnly`, only through an owner's or admin's membership (a demotion in between:
 * nothing written, and the mint judges again).
 */
export async function insertKey(
  db: Kysely<Database>,
  key: NewApiKey,
  creator: Pick<User, 'id' | 'base_user_id'>,
  origin: RequestOrigin,
  audit: { actorUserId: string | null; details: Record<string, unknown> },
  options: { policyVersion?: number; managersOnly?: boolean } = {},
): Promise<boolean> {
  const holders = membershipHolders(creator);
  const event = auditValues(origin, { action: 'api_key.created', actorUserId: audit.actorUserId, orgId: key.org_id, details: audit.details });
  // Built and compiled once per shape (the SSH door's hot statement): every value is a parameter.
  const shape = `insertKey:${holders.length}:${options.managersOnly ? 'managers' : 'members'}:${options.policyVersion === undefined ? 'any' : 'version'}`;
  // The slot names are made once (KEY_SLOTS...): names built per call cost a string-table lookup each.
  const flat: Record<string, unknown> = { policy_version: options.policyVersion ?? 0 };
  for (const [column, name] of KEY_SLOTS) flat[name] = key[column];
  for (const [column, name] of EVENT_SLOTS) flat[name] = event[column];
  for (let i = 0; i < holders.length; i++) flat[holderSlot(i)] = holders[i];
  const compiled = compiledFromTemplate(db, shape, flat, (slot) => {
    const slotKey = Object.fromEntries(KEY_SLOTS.map(([column, name]) => [column, slot[name]])) as NewApiKey;
    const slotEvent = Object.fromEntries(EVENT_SLOTS.map(([column, name]) => [column, slot[name]])) as AuditValues;
    const slotHolders = holders.map((_, i) => slot[holderSlot(i)] as string);
    return insertWithAudit(
      db,
      (query) =>
        query
          .with('member', (q) => {
            let member = q
              .selectFrom('memberships')
              .select('memberships.user_id')
              .where('memberships.org_id', '=', slotKey.org_id)
              .where('memberships.user_id', 'in', slotHolders);
            if (options.managersOnly) member = member.where('memberships.role', 'in', ['owner', 'admin']);
            if (options.policyVersion === undefined) return member.forShare();
            return member
              .innerJoin('orgs', 'orgs.id', 'memberships.org_id')
              .where('orgs.policy_version', '=', slot.policy_version as number)
              // KEY SHARE: the lock the key's foreign key takes anyway; only setOrgPolicy's FOR UPDATE waits for it.
              .forShare('memberships')
              .forKeyShare('orgs');
          })
          .insertInto('api_keys')
          .columns(NEW_KEY_COLUMNS)
          .expression((eb) =>
            eb
              .selectFrom('member')
              .select(NEW_KEY_COLUMNS.map((column) => sql`${slotKey[column]}::${sql.raw(NEW_KEY_COLUMN_TYPES[column])}`.as(column)))
              .limit(1),
          )
          .returning('id'),
      slotEvent,
    );
  });
  // The statement answers nothing: the count of events it wrote (one with the key) says whether the key was.
  const result = await db.executeQuery(compiled);
  return (result.numAffectedRows ?? 0n) > 0n;
}

/** POST /api/shell-auth/api-keys: the HTTP door may mint only inside the trust window. */
export async function mintApiKeyOverHttp(
  deps: CoreDeps,
  input: {
    email: string;
    key: PublicKey;
    label: string;
    orgName?: string | undefined;
    permissions?: readonly string[] | undefined;
    origin: RequestOrigin;
    provenBySignature?: boolean;
  },
): Promise<MintedApiKey> {
  const signed = input.provenBySignature === true;
  const status = await httpKeyStatus(deps, input.email, input.key, { provenBySignature: signed });
  if (status.status === 'disabled') throw new AppError('HTTP_MINTING_DISABLED');
  // One answer whatever the reason (unknown pair, window never opened, expired or spent): no oracle.
  if (status.status !== 'trusted') throw new AppError('UNVERIFIED_KEY');
  return mintApiKey(deps, {
    user: status.user,
    orgs: status.orgs,
    sshKeyId: status.sshKeyId,
    // A signed request is as strong as the SSH door: the email-confirmation window is not spent.
    spendsHttpWindow: !signed,
    proof: signed ? 'sshsig' : 'email',
    // Only a signature proves the key is at hand; the email window proves an inbox.
    keyType: signed ? input.key.type : null,
    label: input.label,
    orgName: input.orgName,
    permissions: input.permissions,
    origin: input.origin,
  });
}

export type ApiKeySummary = {
  id: string;
  label: string;
  org_id: string;
  org_name: string;
  created_by: string;
  created_via: string;
  /** The SSH key it was minted with (an `sk-*` type is a security key); null for operator-made keys. */
  ssh_key_type: string | null;
  permissions: string[];
  created_at: Date;
  last_used_at: Date | null;
  expires_at: Date | null;
  revoked_at: Date | null;
  /** The key that replaced this one by rotation (this one works until its overlap ends); null if none. */
  replaced_by_id: string | null;
};

export type ApiKeyState = 'active' | 'expired' | 'revoked';

/** Whether a key works now; a revoked key reads as revoked even once its expiry has passed too. */
export function apiKeyState(key: Pick<ApiKeySummary, 'revoked_at' | 'expires_at'>, now: Date): ApiKeyState {
  if (key.revoked_at !== null) return 'revoked';
  if (key.expires_at !== null && new Date(key.expires_at).getTime() <= now.getTime()) return 'expired';
  return 'active';
}

function summaryQuery(db: Kysely<Database>) {
  return db
    .selectFrom('api_keys')
    .innerJoin('orgs', 'orgs.id', 'api_keys.org_id')
    .innerJoin('users', 'users.id', 'api_keys.created_by_user_id')
    .leftJoin('ssh_keys', 'ssh_keys.id', 'api_keys.ssh_key_id')
    .select([
      'api_keys.id',
      'api_keys.label',
      'api_keys.org_id',
      'orgs.name as org_name',
      'users.email as created_by',
      'api_keys.created_by_user_id',
      'api_keys.created_via',
      'ssh_keys.key_type as ssh_key_type',
      'api_keys.permissions',
      'api_keys.created_at',
      'api_keys.last_used_at',
      'api_keys.expires_at',
      'api_keys.revoked_at',
      'api_keys.replaced_by_id',
    ])
    // The id breaks ties, so both programs' listings (and two runs of one) agree on the order.
    .orderBy('api_keys.created_at', 'asc')
    .orderBy('api_keys.id', 'asc');
}

function toSummary(row: Awaited<ReturnType<ReturnType<typeof summaryQuery>['execute']>>[number]): ApiKeySummary {
  const { created_by_user_id: _creator, ...rest } = row;
  return { ...rest, permissions: [...row.permissions] };
}


/** Keys a user may see: all keys of orgs they own/administer, their own keys elsewhere. Never secrets. */
export async function listApiKeys(deps: CoreDeps, user: User, orgName?: string): Promise<ApiKeySummary[]> {
  const orgs = await orgsOfUser(deps.db, user);
  const scope = orgName === undefined ? orgs : [chooseOrg(orgs, orgName)];
  if (scope.length === 0) return [];
  const rows = await summaryQuery(deps.db)
    .where('api_keys.org_id', 'in', scope.map((o) => o.org_id))
    .execute();
  const roleOf = new Map(scope.map((o) => [o.org_id, o.role]));
  return rows
    .filter((row) => MANAGES.has(roleOf.get(row.org_id)!) || row.created_by_user_id === user.id)
    .map(toSummary);
}

/**
 * Ids of the user's newest active keys that they may revoke (all of orgs they own or administer,
 * their own elsewhere), at most `limit`: one indexed query on the orgs already read with the
 * identity, for a door to offer as choices.
 */
export async function revocableKeyIds(deps: CoreDeps, user: User, orgs: OrgMembership[], limit: number): Promise<string[]> {
  if (orgs.length === 0) return [];
  const managed = orgs.filter((o) => MANAGES.has(o.role)).map((o) => o.org_id);
  const others = orgs.filter((o) => !MANAGES.has(o.role)).map((o) => o.org_id);
  const rows = await deps.db
    .selectFrom('api_keys')
    .select('id')
    .where('revoked_at', 'is', null)
    .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', nowOf(deps))]))
    .where((eb) =>
      eb.or([
        ...(managed.length ? [eb('org_id', 'in', managed)] : []),
        ...(others.length ? [eb.and([eb('org_id', 'in', others), eb('created_by_user_id', '=', user.id)])] : []),
      ]),
    )
    .orderBy('created_at', 'desc')
    .limit(limit)
    .execute();
  return rows.map((r) => r.id);
}

/** Operators: every key, optionally of one org. */
export async function listAllApiKeys(deps: CoreDeps, orgName?: string): Promise<ApiKeySummary[]> {
  let query = summaryQuery(deps.db);
  if (orgName !== undefined) query = query.where('orgs.name', '=', orgName);
  return (await query.execute()).map(toSummary);
}

/**
 * Revokes a key. `actor: null` is the operator (admin CLI). A user may revoke keys they created,
 * or any key of an org they own/administer; other keys read as not found. `reason` goes into the
 * audit event when the revocation was not the user's own request (e.g. `undelivered`).
 */
export async function revokeApiKey(
  deps: CoreDeps,
  actor: User | null,
  keyId: string,
  origin: RequestOrigin,
  reason?: RevocationReason,
): Promise<ApiKeySummary> {
  const key = await findKeyToRevoke(deps, actor, keyId);
  if (actor) await assertMayRevoke(deps, actor, key);
  if (key.revoked_at) throw new AppError('API_KEY_ALREADY_REVOKED');

  const revoked = await deps.db.transaction().execute((trx) =>
    revokeKeysIn(trx, deps, [key], { actorUserId: actor?.id ?? null, origin, reason: reason ?? null }),
  );
  if (revoked.length !== 1) throw new AppError('API_KEY_ALREADY_REVOKED');
  forgetRevoked(deps, revoked);
  const [summary] = await summaryQuery(deps.db).where('api_keys.id', '=', key.id).execute();
  return toSummary(summary!);
}

/** Why a key was revoked when not by a plain `revoke` of its owner or a manager. */
export type RevocationReason = 'undelivered' | 'holder' | 'leaked' | 'member_removed' | 'rotated';

/**
 * Revokes `keys` inside `trx` (those still live; the others are skipped): each gets its
 * revoked_at, its reason, an audit event, and a NOTIFY that every instance's whoami cache hears
 * when the transaction commits. Returns the keys it revoked; call `forgetRevoked` after the commit.
 */
export async function revokeKeysIn(
  trx: Kysely<Database>,
  deps: CoreDeps,
  keys: ReadonlyArray<Pick<ApiKeyRow, 'id' | 'org_id' | 'label'>>,
  how: { actorUserId: string | null; origin: RequestOrigin; reason: RevocationReason | null; details?: Record<string, unknown> },
): Promise<Array<Pick<ApiKeyRow, 'id' | 'org_id' | 'label'>>> {
  if (keys.length === 0) return [];
  const now = nowOf(deps);
  const updated = await trx
    .updateTable('api_keys')
    .set({ revoked_at: now, revoked_by_user_id: how.actorUserId, revoked_reason: how.reason })
    .where('id', 'in', keys.map((k) => k.id))
    .where('revoked_at', 'is', null)
    .returning('id')
    .execute();
  const done = new Set(updated.map((r) => r.id));
  const revoked = keys.filter((k) => done.has(k.id));
  for (const key of revoked) {
    await recordAudit(trx, how.origin, {
      action: 'api_key.revoked',
      actorUserId: how.actorUserId,
      orgId: key.org_id,
      subjectId: key.id,
      details: { label: key.label, ...(how.reason ? { reason: how.reason } : {}), ...how.details },
    });
    // Every instance drops the key from its cache when this commits (api-key-cache.ts).
    await sql`SELECT pg_notify(${API_KEY_REVOCATIONS_CHANNEL}, ${key.id})`.execute(trx);
  }
  return revoked;
}

/** This instance's cache, at once (the NOTIFY reaches the others, and this one again, on commit). */
export function forgetRevoked(deps: CoreDeps, keys: ReadonlyArray<{ id: string }>): void {
  for (const key of keys) deps.apiKeyCache?.forget(key.id);
}

const UUID_SHAPE = 'xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx';
/** Listings show ids this long (`list`); `revoke` takes them, or any longer unique prefix. */
export const SHORT_KEY_ID_LENGTH = 8;

/**
 * The key `keyId` names: a whole id, or the start of one (at least 8 hex digits, as `list`
 * shows them) that only one key matches among those the actor could see (every key for the
 * operator). A prefix never tells about keys outside that scope: they do not count.
 */
export async function findKeyToRevoke(deps: CoreDeps, actor: User | null, keyId: string): Promise<ApiKeyRow> {
  const prefix = keyId.toLowerCase();
  const fits = prefix.length >= SHORT_KEY_ID_LENGTH && prefix.length <= UUID_SHAPE.length && [...prefix].every((c, i) => (UUID_SHAPE[i] === '-' ? c === '-' : /[0-9a-f]/.test(c)));
  if (!fits) throw new AppError('API_KEY_NOT_FOUND');
  // A uuid range, not LIKE on its text: the primary key's index answers it.
  const padded = (digit: string) => prefix + [...UUID_SHAPE.slice(prefix.length)].map((c) => (c === '-' ? '-' : digit)).join('');
  let query = deps.db.selectFrom('api_keys').selectAll().where('id', '>=', padded('0')).where('id', '<=', padded('f'));
  if (actor) {
    const orgIds = (await orgsOfUser(deps.db, actor)).map((o) => o.org_id);
    query = query.where((eb) => eb.or([eb('created_by_user_id', '=', actor.id), ...(orgIds.length ? [eb('org_id', 'in', orgIds)] : [])]));
  }
  const found = await query.limit(2).execute();
  if (found.length === 0) throw new AppError('API_KEY_NOT_FOUND');
  if (found.length > 1) throw new AppError('API_KEY_ID_AMBIGUOUS');
  return found[0]!;
}

export async function assertMayRevoke(deps: CoreDeps, actor: User, key: ApiKeyRow): Promise<void> {
  const org = (await orgsOfUser(deps.db, actor)).find((o) => o.org_id === key.org_id);
  const isCreator = key.created_by_user_id === actor.id;
  if (!org && !isCreator) throw new AppError('API_KEY_NOT_FOUND');
  if (!isCreator && !MANAGES.has(org!.role)) throw new AppError('NOT_ALLOWED');
}

/** Whether `apiKey` is the key whose hash `row` stores: a constant-time comparison. */
function isSecretOf(row: Pick<ApiKeyRow, 'secret_hash'>, apiKey: string): boolean {
  return digestsEqual(row.secret_hash, sha256Hex(apiKey));
}

/**
 * The key `apiKey` is, in whatever state (revoked, expired, rotated): parsed offline (a bad
 * checksum never reaches the database), looked up by its id, its secret compared in constant
 * time. Undefined for anything that is not wholly one of our keys. The caller judges the state.
 */
export async function findKeyBySecret(db: Kysely<Database>, apiKey: string): Promise<ApiKeyRow | undefined> {
  const parsed = parseApiKey(apiKey);
  if (!parsed) return undefined;
  const row = await db.selectFrom('api_keys').selectAll().where('id', '=', parsed.id).executeTakeFirst();
  return row && isSecretOf(row, apiKey) ? row : undefined;
}

export type AuthenticatedApiKey = Readonly<{
  api_key_id: string;
  org_id: string;
  org_name: string;
  label: string;
  permissions: readonly string[];
  expires_at: Date | null;
}>;

/**
 * A cached row's answer, built once: the row stays one object while it is cached (a revocation
 * or expiry drops it), so its answer does too, and a door can keep its rendering beside it.
 */
const answers = new WeakMap<ApiKeyRecord, AuthenticatedApiKey>();

function answerOf(row: ApiKeyRecord): AuthenticatedApiKey {
  return Object.freeze({
    api_key_id: row.id,
    org_id: row.org_id,
    org_name: row.org_name,
    label: row.label,
    permissions: Object.freeze([...row.permissions]),
    expires_at: row.expires_at,
  });
}

/**
 * `Authorization: Bearer <api_key>` for the platform. The same error for malformed, unknown,
 * wrong, revoked and expired keys; a bad checksum never reaches the database.
 */
export async function authenticateApiKey(deps: CoreDeps, apiKey: string): Promise<AuthenticatedApiKey> {
  const parsed = parseApiKey(apiKey);
  if (!parsed) throw new AppError('INVALID_API_KEY');
  const cache = deps.apiKeyCache;
  const cached = cache?.get(parsed.id);
  eventsOf(deps).apiKeyLookup(cached ? 'cache' : 'database');
  const ticket = cache?.ticket() ?? 0;
  const row = cached ?? (await lookUpApiKey(deps.db, parsed.id));
  const now = nowOf(deps);
  if (
    !row ||
    !isSecretOf(row, apiKey) ||
    row.revoked_at !== null ||
    (row.expires_at !== null && new Date(row.expires_at).getTime() <= now.getTime())
  ) {
    throw new AppError('INVALID_API_KEY');
  }
  // Kept only once its holder proved the secret; every check above still runs at each use.
  if (!cached) cache?.put(ticket, row.id, row);
  if (dueForTouch(deps, `api_key:${row.id}`)) {
    // Off the request path: the answer does not wait for a bookkeeping write.
    const keyId = row.id;
    void deps.db
      .updateTable('api_keys')
      .set({ last_used_at: now })
      .where('id', '=', keyId)
      .execute()
      .catch((err: unknown) => deps.log.warn({ err: (err as Error).message }, 'could not record last_used_at'));
  }
  if (!cache) return answerOf(row);
  let answer = answers.get(row);
  if (answer === undefined) answers.set(row, (answer = answerOf(row)));
  return answer;
}

/** whoami's lookup by the key's id (one parameter): built and compiled once, like the SSH door's statements. */
const apiKeyLookup = (db: Kysely<Database>, id: string) =>
  db
    .selectFrom('api_keys')
    .innerJoin('orgs', 'orgs.id', 'api_keys.org_id')
    .select([
      'api_keys.id',
      'api_keys.secret_hash',
      'api_keys.org_id',
      'orgs.name as org_name',
      'api_keys.label',
      'api_keys.permissions',
      'api_keys.expires_at',
      'api_keys.revoked_at',
    ])
    .where('api_keys.id', '=', id);

async function lookUpApiKey(db: Kysely<Database>, id: string): Promise<ApiKeyRecord | undefined> {
  const compiled = compiledFromTemplate(db, 'lookUpApiKey', { id }, (slot) => apiKeyLookup(db, slot.id));
  const row = (await db.executeQuery<InferResult<ReturnType<typeof apiKeyLookup>>[number]>(compiled)).rows[0];
  // A fresh row per query: answerOf copies what it hands out, so nothing needs copying here.
  return row;
}
