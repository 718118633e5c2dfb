import type { PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from 'kysely';
import { WATCH_ONLY, type WatchOnlyPlugin } from '../db/statement-templates.js';
import { createApiKeyCache, type ApiKeyCache, type RevocationSignals } from './api-key-cache.js';

/**
 * The SSH door's identity rows (identity.ts: a key's account with its orgs, roles, policies and
 * billing state), kept briefly per key so that a login needs no query: it was 40% of Postgres's
 * CPU per SSH create and ~18% of ours (perf rig, issue 21). What makes that safe:
 *
 * - every change to what a row is made of (the key's binding, the account, its memberships, the
 *   orgs, their subscriptions) is announced on commit by triggers (migration 0013), from any
 *   writer, and each instance's listener then empties its cache: an identity is as fresh as the
 *   notification is fast, as with the API key cache;
 * - this process's own writes to those tables empty it at once and keep it from storing until
 *   their notification comes back, i.e. after their commit (`watchIdentityWrites`, `changedHere`):
 *   a change followed by a login in the same process never sees the old row (another worker of
 *   the same instance is another process: it waits for the notification);
 * - entries are used only while the LISTEN connection is up; a reconnect empties the cache, and a
 *   lookup that raced a change is not stored;
 * - only accounts are kept (an unknown or unproven key is looked up each time), each at most
 *   `ttlMs`, and the mint still checks membership, role and policy version in its own statement.
 */

/** The payload the triggers send on API_KEY_REVOCATIONS_CHANNEL; never an API key's id (a UUID). */
export const SSH_IDENTITY_CHANGED = 'ssh-identity';

/**
 * The tables an SSH identity row is read from (identity.ts), as migration 0013's triggers watch
 * them: an update of `ssh_keys` or `users` counts only when it sets one of these columns (a
 * login's last_seen_at, the HTTP window's use do not); null: every write counts.
 */
const IDENTITY_TABLES = new Map<string, ReadonlySet<string> | null>([
  ['ssh_keys', new Set(['id', 'user_id', 'key_blob', 'proven_at'])],
  ['users', new Set(['id', 'email', 'base_user_id', 'is_active', 'verified_at', 'created_at'])],
  ['memberships', null],
  ['orgs', null],
  ['subscriptions', null],
]);

export type SshIdentityCache<Row> = Pick<ApiKeyCache<Row>, 'get' | 'ticket' | 'put' | 'clear' | 'size' | 'close'> & {
  /**
   * This process wrote what identities are made of: empties the cache, and stores nothing until
   * the change's notification arrives (at most `LOCAL_WRITE_HOLD_MS`). Until its transaction
   * commits, a lookup still reads the old row, rightly, but must not keep it past the commit.
   */
  changedHere(): void;
};

/** Longer than any transaction of ours that writes identity tables; past it, a rolled-back change stops holding the cache. */
const LOCAL_WRITE_HOLD_MS = 10_000;

export function createSshIdentityCache<Row>(signals: RevocationSignals, options: { ttlMs: number; maxEntries: number; now?: () => number }): SshIdentityCache<Row> {
  const now = options.now ?? (() => performance.now());
  let heldUntil = 0;
  // The channel also carries revoked API keys' ids: only our payload (or a reconnect) empties this cache.
  const identityChanges: RevocationSignals = {
    listening: () => signals.listening(),
    subscribe: (listener) =>
      signals.subscribe({
        message: (payload) => {
          if (payload !== SSH_IDENTITY_CHANGED) return;
          heldUntil = 0;
          listener.recheck();
        },
        recheck: () => listener.recheck(),
      }),
  };
  const cache = createApiKeyCache<Row>(identityChanges, { ...options, now });
  return {
    get: cache.get,
    ticket: cache.ticket,
    put(ticket, id, entry) {
      if (now() < heldUntil) return;
      cache.put(ticket, id, entry);
    },
    clear: cache.clear,
    changedHere() {
      heldUntil = now() + LOCAL_WRITE_HOLD_MS;
      cache.clear();
    },
    size: cache.size,
    close: cache.close,
  };
}

type Named = { kind: string; table?: { identifier?: { name?: string } }; node?: Named };

/** The table a write's target names (a table, or an alias of one). */
function tableName(target: Named | undefined): string | undefined {
  if (!target) return undefined;
  if (target.kind === 'AliasNode') return tableName(target.node);
  return target.kind === 'TableNode' ? target.table?.identifier?.name : undefined;
}

/** Whether a write to `target` (set: the columns an update sets) changes what identities are made of. */
function changesIdentity(target: Named | undefined, set: string[] | null): boolean {
  return changesIdentityOf(tableName(target), set);
}

function changesIdentityOf(name: string | undefined, set: string[] | null): boolean {
  if (name === undefined || !IDENTITY_TABLES.has(name)) return false;
  const watched = IDENTITY_TABLES.get(name);
  return !watched || set === null || set.some((column) => watched.has(column));
}

type Updates = Array<{ column?: { column?: { name?: string } } }>;

const WRITE_CHECKS: Record<string, (node: Record<string, unknown>) => boolean> = {
  InsertQueryNode: (node) => changesIdentity(node.into as Named | undefined, null),
  UpdateQueryNode: (node) => {
    // A column we cannot name (none should occur) counts as watched.
    const set = ((node.updates as Updates | undefined) ?? []).map((update) => update.column?.column?.name ?? 'user_id');
    return changesIdentity(node.table as Named | undefined, set);
  },
  DeleteQueryNode: (node) => ((node.from as { froms?: Named[] } | undefined)?.froms ?? []).some((from) => changesIdentity(from, null)),
  MergeQueryNode: (node) => changesIdentity(node.into as Named | undefined, null),
};

const TABLE = String.raw`(?:only\s+)?(?:"?public"?\s*\.\s*)?"?(ssh_keys|users|memberships|orgs|subscriptions)\b"?`;
const RAW_WRITE = new RegExp(String.raw`\b(?:insert\s+into|delete\s+from|truncate(?:\s+table)?|merge\s+into)\s+${TABLE}`, 'i');
/** An UPDATE's table and its SET list (up to FROM, WHERE or RETURNING). */
const RAW_UPDATE = new RegExp(String.raw`\bupdate\s+${TABLE}\s+(?:(?:as\s+)?(?!set\b)\w+\s+)?set\b([\s\S]*?)(?=\bfrom\b|\bwhere\b|\breturning\b|$)`, 'gi');
/** The columns a SET list assigns: a name right after its start or a comma, then `=`. */
const ASSIGNED = /(?:^|,)\s*"?(\w+)"?\s*=(?!=)/g;

/**
 * Whether raw SQL may change what identities are made of. An UPDATE counts by the columns it
 * sets (the security-key counter's, at every such login, does not); unsure counts as yes: a false
 * positive only empties the cache.
 */
function rawChangesIdentity(text: string): boolean {
  if (RAW_WRITE.test(text)) return true;
  for (const match of text.matchAll(RAW_UPDATE)) {
    const assigned = [...match[2]!.matchAll(ASSIGNED)].map((column) => column[1]!.toLowerCase());
    if (changesIdentityOf(match[1]!.toLowerCase(), assigned.length > 0 ? assigned : null)) return true;
  }
  return false;
}

/** Whether the statement writes what identities are made of, anywhere in it (a data-modifying CTE too). */
export function writesIdentityTable(root: RootOperationNode): boolean {
  if (root.kind === 'SelectQueryNode' && !root.with) return false; // the common case: nothing to walk
  const pending: unknown[] = [root];
  while (pending.length > 0) {
    const node = pending.pop();
    if (Array.isArray(node)) {
      pending.push(...node);
      continue;
    }
    if (node === null || typeof node !== 'object') continue;
    const kind = (node as { kind?: unknown }).kind;
    if (kind === 'RawNode' && rawChangesIdentity((node as { sqlFragments: readonly string[] }).sqlFragments.join(' '))) return true;
    const check = typeof kind === 'string' ? WRITE_CHECKS[kind] : undefined;
    if (check?.(node as Record<string, unknown>)) return true;
    for (const value of Object.values(node)) if (value !== null && typeof value === 'object') pending.push(value);
  }
  return false;
}

/**
 * A plugin for the service's database handle: `changed` (the cache's `changedHere`) runs when a
 * statement that changes what identities are made of is compiled, and again when it has run.
 */
export function watchIdentityWrites(changed: () => void): WatchOnlyPlugin {
  const writes = new WeakSet<object>();
  return {
    [WATCH_ONLY]: writesIdentityTable,
    transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
      if (writesIdentityTable(args.node)) {
        writes.add(args.queryId);
        changed();
      }
      return args.node;
    },
    async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
      if (writes.has(args.queryId)) changed();
      return args.result;
    },
  };
}
