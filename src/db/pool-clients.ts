import type { PostgresPool, PostgresPoolClient } from 'kysely';
import type pg from 'pg';
import { classifyDatabaseError, DATABASE_ERROR_KINDS } from './errors.js';

/** Distinct statements prepared per process: the service has a few dozen; more would be generated text. */
const MAX_PREPARED = 256;
const preparedNames = new Map<string, string>();
const PREPARABLE = /^\s*(select|insert|update|delete|with)\b/i;

/**
 * kysely's `query(text, values)` as a named statement, so each connection parses and plans it
 * once, not at every execution (Postgres CPU per SSH create: 0.76 -> 0.46 ms in `npm run bench`).
 * Bounded: past MAX_PREPARED distinct texts, statements run unnamed.
 */
function prepared(args: unknown[]): unknown[] {
  const [text, values] = args;
  if (typeof text !== 'string' || !Array.isArray(values) || args.length !== 2 || !PREPARABLE.test(text)) return args;
  let name = preparedNames.get(text);
  if (name === undefined) {
    if (preparedNames.size >= MAX_PREPARED) return args;
    name = `s${preparedNames.size}`;
    preparedNames.set(text, name);
  }
  return [{ name, text, values }];
}

/**
 * The pool as kysely sees it: statements prepared and counted, and a client whose connection an
 * error left unusable (db/errors.ts says which) goes back to the pool destroyed, so the next
 * request gets a fresh connection (or a prompt 503 while the database stays unreachable).
 */
export function droppingBrokenClients(pool: pg.Pool, counted: { statements: number }): PostgresPool {
  return {
    async connect() {
      const client = await pool.connect();
      let broken = false;
      // pg emits a lost connection on the client itself, even with a query in flight (which is
      // rejected too). The pool listens only while the client is idle; while it is checked out
      // nobody would, and one reset mid-request would take the process down.
      const onError = () => {
        broken = true;
      };
      client.on('error', onError);
      let inTransaction = false;
      const query = ((...args: Parameters<pg.PoolClient['query']>) => {
        counted.statements++;
        const send = (...a: unknown[]) => (client.query as (...a: unknown[]) => unknown)(...a);
        if (typeof args[0] === 'string') {
          if (/^\s*begin\b/i.test(args[0])) inTransaction = true;
          else if (/^\s*(commit|rollback)\b/i.test(args[0])) inTransaction = false;
        }
        const result = send(...prepared(args));
        if (result instanceof Promise) {
          return result.catch((err: unknown) => {
            const kind = classifyDatabaseError(err);
            if (kind !== null && DATABASE_ERROR_KINDS[kind].dropsConnection) broken = true;
            // A migration changed a table under this connection's prepared statement: outside a
            // transaction, the statement runs again unprepared (the connection is dropped after).
            if (kind === 'stale_plan' && !inTransaction) {
              counted.statements++; // a second round trip
              return send(...args);
            }
            throw err;
          });
        }
        return result;
      }) as PostgresPoolClient['query'];
      return {
        query,
        release: () => {
          client.removeListener('error', onError);
          client.release(broken ? new Error('connection lost, terminated or timed out: dropped') : undefined);
        },
      };
    },
    end: () => pool.end(),
  };
}
