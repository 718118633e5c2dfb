/**
 * What a database driver's error means, whatever its shape: pg (a SQLSTATE `code`, a socket's
 * errno, or only a message), PGlite (a SQLSTATE `code`, or a message), kysely's dialects (a
 * message). The one place that knows these codes and messages: the core maps each kind to its own
 * errors, the pool decides from it which connections to drop.
 */
export const DATABASE_ERROR_KINDS = {
  /** 23505: a row with the same unique value exists. */
  unique_violation: { dropsConnection: false },
  /** 22021, 22P02, 22P05: text Postgres cannot store or read as its type (a NUL, broken UTF-8, a bad uuid). */
  unstorable_text: { dropsConnection: false },
  /** A prepared statement whose table changed shape (a migration by another instance): its connection keeps refusing it. */
  stale_plan: { dropsConnection: true },
  /**
   * The backend went away or stalled mid-query: terminated (pg_terminate_backend, a restart, a
   * failover), its socket reset, or no answer within pg's query_timeout (the client would keep
   * waiting for it, and every later query would queue behind).
   */
  connection_lost: { dropsConnection: true },
  /** Any other connection exception (SQLSTATE class 08: a protocol violation...): the connection's state is unknown. */
  connection_fault: { dropsConnection: true },
  /** No connection could be had: refused, unknown host, network down, or none free in the pool within the connect timeout. */
  unreachable: { dropsConnection: false },
  /** 57014: Postgres cancelled the statement at statement_timeout; the connection is fine. */
  timed_out: { dropsConnection: false },
  /** SQLSTATE class 53: the server out of disk, memory or connections. */
  out_of_resources: { dropsConnection: false },
  /** Closed on our side (shutting down): pg's client, kysely's driver, PGlite. */
  closed: { dropsConnection: false },
} as const satisfies Record<string, { dropsConnection: boolean }>;

export type DatabaseErrorKind = keyof typeof DATABASE_ERROR_KINDS;

const KIND_OF_CODE = new Map<string, DatabaseErrorKind>([
  ['23505', 'unique_violation'],
  ['22021', 'unstorable_text'], // character_not_in_repertoire
  ['22P02', 'unstorable_text'], // invalid_text_representation
  ['22P05', 'unstorable_text'], // untranslatable_character
  ['57014', 'timed_out'], // query_canceled
  ['57P01', 'connection_lost'], // admin_shutdown
  ['57P02', 'connection_lost'], // crash_shutdown
  ['57P03', 'connection_lost'], // cannot_connect_now
  ['08000', 'connection_lost'], // connection_exception
  ['08003', 'connection_lost'], // connection_does_not_exist
  ['08006', 'connection_lost'], // connection_failure
  ['ECONNRESET', 'connection_lost'],
  ['EPIPE', 'connection_lost'],
  ['ECONNREFUSED', 'unreachable'],
  ['ETIMEDOUT', 'unreachable'],
  ['ENOTFOUND', 'unreachable'],
  ['EHOSTUNREACH', 'unreachable'],
  ['ENETUNREACH', 'unreachable'],
  ['EAI_AGAIN', 'unreachable'], // DNS, temporarily
]);

// pg's errors without a code (its own timeouts, a socket closed under it), kysely's and PGlite's.
const KIND_OF_MESSAGE: ReadonlyArray<readonly [RegExp, DatabaseErrorKind]> = [
  [/Connection terminated|Query read timeout/i, 'connection_lost'],
  [/timeout exceeded when trying to connect|connect ECONNREFUSED/i, 'unreachable'],
  [/Client was closed|driver has already been destroyed|PGlite is closed/i, 'closed'],
];

/** The kind of a driver error, or null for anything else (a bug, a constraint the caller did not expect...). */
export function classifyDatabaseError(err: unknown): DatabaseErrorKind | null {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : '';
  const message = typeof e?.message === 'string' ? e.message : '';
  if (code === '0A000' && /cached plan must not change result type/.test(message)) return 'stale_plan';
  const byCode = KIND_OF_CODE.get(code);
  if (byCode) return byCode;
  const byMessage = KIND_OF_MESSAGE.find(([pattern]) => pattern.test(message))?.[1] ?? null;
  if (code.startsWith('08')) return byMessage ?? 'connection_fault';
  if (/^53[0-9A-Z]{3}$/.test(code)) return 'out_of_resources';
  return byMessage;
}

export function isUniqueViolation(err: unknown): boolean {
  return classifyDatabaseError(err) === 'unique_violation';
}
