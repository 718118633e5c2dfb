/**
 * API keys recently found valid, kept briefly so that the platform's check on every API call
 * (`GET /api/whoami`) needs no database round trip. What makes that safe:
 *
 * - a revocation, on any instance, is announced by NOTIFY when it commits, and each instance's
 *   listener deletes the entry: it takes effect as fast as the notification travels;
 * - entries are used only while this process's LISTEN connection is up, and a reconnect (when a
 *   notification may have been missed) empties the cache;
 * - a lookup that raced an invalidation is not stored (the epoch moved while it ran);
 * - the presented key is still hashed and compared, and expiry is checked, at every hit;
 * - entries live `ttlMs` at most, and there are at most `maxEntries` (oldest out first).
 */

/** The NOTIFY channel revocations are announced on; the payload is the API key's id. */
export const API_KEY_REVOCATIONS_CHANNEL = 'shell_auth_api_key_revocations';

/** An API key's row as authentication reads it; checked again at every use. */
export type ApiKeyRecord = {
  id: string;
  secret_hash: string;
  org_id: string;
  org_name: string;
  label: string;
  permissions: string[];
  expires_at: Date | null;
  revoked_at: Date | null;
};

/** What the cache needs of LISTEN/NOTIFY (db/notifications.ts provides it). */
export interface RevocationSignals {
  listening(): boolean;
  subscribe(listener: { message(apiKeyId: string): void; recheck(): void }): () => void;
}

export type ApiKeyCache<Entry> = {
  /** The entry if it may be trusted now; undefined means: ask the database. */
  get(id: string): Entry | undefined;
  /** Taken before a database lookup; `put` stores its result only if nothing was invalidated since. */
  ticket(): number;
  put(ticket: number, id: string, entry: Entry): void;
  /** This instance's own revocation: gone at once, before the notification comes back. */
  forget(id: string): void;
  /** Every entry gone, and no lookup that started before this is stored. */
  clear(): void;
  size(): number;
  close(): void;
};

export function createApiKeyCache<Entry>(
  signals: RevocationSignals,
  options: { ttlMs: number; maxEntries: number; now?: () => number },
): ApiKeyCache<Entry> {
  const now = options.now ?? (() => performance.now());
  const entries = new Map<string, { entry: Entry; storedAt: number }>();
  let epoch = 0;
  const unsubscribe = signals.subscribe({
    message(id) {
      epoch++;
      entries.delete(id);
    },
    recheck() {
      epoch++;
      entries.clear();
    },
  });
  return {
    get(id) {
      if (!signals.listening()) return undefined;
      const found = entries.get(id);
      if (!found) return undefined;
      if (now() - found.storedAt >= options.ttlMs) {
        entries.delete(id);
        return undefined;
      }
      return found.entry;
    },
    ticket: () => epoch,
    put(ticket, id, entry) {
      if (ticket !== epoch || !signals.listening()) return;
      entries.delete(id); // re-inserted last: Map order is age order
      entries.set(id, { entry, storedAt: now() });
      while (entries.size > options.maxEntries) entries.delete(entries.keys().next().value!);
    },
    forget(id) {
      epoch++;
      entries.delete(id);
    },
    clear() {
      epoch++;
      entries.clear();
    },
    size: () => entries.size,
    close() {
      unsubscribe();
      entries.clear();
    },
  };
}
