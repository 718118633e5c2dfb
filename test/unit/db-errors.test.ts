import net from 'node:net';
import { PGlite } from '@electric-sql/pglite';
import { Kysely, sql } from 'kysely';
import { PGliteDialect } from 'kysely-pglite-dialect';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toAppError } from '../../src/core/errors.js';
import { classifyDatabaseError, DATABASE_ERROR_KINDS, isUniqueViolation, type DatabaseErrorKind } from '../../src/db/errors.js';

// Every error the drivers really throw, produced here where we can (PGlite in-process, pg against
// a port nobody listens on or a fake server), with what it is and what a caller gets for it.

type Row = { kind: DatabaseErrorKind | null; status: number; error: () => Promise<unknown> };

async function rejectionOf(work: Promise<unknown>): Promise<unknown> {
  try {
    await work;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

/** A literal shape, for what cannot be caused on purpose (the server out of disk, a protocol violation). */
const shaped = (code: string, message: string) => async () => Object.assign(new Error(message), { code });

let pglite: PGlite;
/** Closed by destroying the kysely instance over it. */
let closedPglite: PGlite;
let destroyedDb: Kysely<object>;
/** A Postgres server as far as pg can tell: it accepts the start-up, then never answers a query. */
let silentServer: net.Server;
let silentPort: number;
let closedPort: number;

beforeAll(async () => {
  pglite = new PGlite();
  await pglite.exec('create table t (id int primary key, u uuid)');
  await pglite.query('insert into t values (1, null)');
  closedPglite = new PGlite();
  destroyedDb = new Kysely<object>({ dialect: new PGliteDialect(closedPglite) });
  await sql`select 1`.execute(destroyedDb);
  await destroyedDb.destroy();
  silentServer = net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.once('data', () => {
      const authenticationOk = [0x52, 0, 0, 0, 8, 0, 0, 0, 0];
      const readyForQuery = [0x5a, 0, 0, 0, 5, 0x49];
      socket.write(Buffer.from([...authenticationOk, ...readyForQuery]));
    });
  });
  silentPort = await listening(silentServer);
  const closing = net.createServer();
  closedPort = await listening(closing);
  await new Promise((resolve) => closing.close(resolve));
});
afterAll(async () => {
  await pglite?.close();
  silentServer?.close();
});

function listening(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
}

function pgClient(port: number, options: pg.ClientConfig = {}): pg.Client {
  const client = new pg.Client({ connectionString: `postgres://nobody@127.0.0.1:${port}/none`, ...options });
  client.on('error', () => undefined);
  return client;
}

const ROWS: Record<string, Row> = {
  'PGlite: a duplicate primary key': { kind: 'unique_violation', status: 500, error: () => rejectionOf(pglite.query('insert into t values (1, null)')) },
  'PGlite: not a uuid (22P02)': { kind: 'unstorable_text', status: 400, error: () => rejectionOf(pglite.query(`select 'x'::uuid`)) },
  'PGlite: a NUL in a text parameter (22021)': { kind: 'unstorable_text', status: 400, error: () => rejectionOf(pglite.query('select $1::text', ['a\u0000b'])) },
  'PGlite: a NUL escape in JSON (22P05)': { kind: 'unstorable_text', status: 400, error: () => rejectionOf(pglite.query(`select '"\\u0000"'::jsonb`)) },
  'PGlite: a prepared statement whose table changed shape': {
    kind: 'stale_plan',
    status: 500,
    error: async () => {
      await pglite.exec('prepare all_of_t as select * from t; execute all_of_t; alter table t add column added int');
      try {
        return await rejectionOf(pglite.exec('execute all_of_t'));
      } finally {
        await pglite.exec('deallocate all_of_t; alter table t drop column added');
      }
    },
  },
  'PGlite: closed': { kind: 'closed', status: 503, error: () => rejectionOf(closedPglite.query('select 1')) },
  'kysely: its driver destroyed': { kind: 'closed', status: 503, error: () => rejectionOf(sql`select 1`.execute(destroyedDb)) },
  'pg: connection refused': { kind: 'unreachable', status: 503, error: async () => rejectionOf(pgClient(closedPort).connect()) },
  'pg: no pool connection free within the connect timeout': {
    kind: 'unreachable',
    status: 503,
    error: async () => {
      const pool = new pg.Pool({ connectionString: `postgres://nobody@127.0.0.1:${silentPort}/none`, max: 1, connectionTimeoutMillis: 100 });
      const held = await pool.connect();
      try {
        return await rejectionOf(pool.connect());
      } finally {
        held.release(true);
        await pool.end();
      }
    },
  },
  'pg: no answer within query_timeout': {
    kind: 'connection_lost',
    status: 503,
    error: async () => {
      const client = pgClient(silentPort, { query_timeout: 100 });
      await client.connect();
      try {
        return await rejectionOf(client.query('select 1'));
      } finally {
        client.connection.stream.destroy();
      }
    },
  },
  'pg: the server hangs up': {
    kind: 'connection_lost',
    status: 503,
    error: async () => {
      const hangingUp = net.createServer((socket) => socket.destroy());
      const port = await listening(hangingUp);
      try {
        return await rejectionOf(pgClient(port).connect());
      } finally {
        hangingUp.close();
      }
    },
  },
  'pg: a query on an ended client': {
    kind: 'closed',
    status: 503,
    error: async () => {
      const client = pgClient(closedPort);
      await client.end();
      return rejectionOf(client.query('select 1'));
    },
  },
  'Postgres: out of disk (53100)': { kind: 'out_of_resources', status: 503, error: shaped('53100', 'could not extend file: No space left on device') },
  'Postgres: too many connections (53300)': { kind: 'out_of_resources', status: 503, error: shaped('53300', 'sorry, too many clients already') },
  'Postgres: statement_timeout (57014; real in test/core/db-errors-postgres.test.ts)': {
    kind: 'timed_out',
    status: 503,
    error: shaped('57014', 'canceling statement due to statement timeout'),
  },
  'Postgres: connection failure (08006)': { kind: 'connection_lost', status: 503, error: shaped('08006', 'connection failure') },
  'Postgres: protocol violation (08P01)': { kind: 'connection_fault', status: 500, error: shaped('08P01', 'invalid frontend message type 0') },
  'Postgres: another class-08 code that says its connection terminated': {
    kind: 'connection_lost',
    status: 503,
    error: shaped('08P01', 'Connection terminated unexpectedly'),
  },
  'Postgres: the server crashed (57P02)': { kind: 'connection_lost', status: 503, error: shaped('57P02', 'terminating connection because of crash of another server process') },
  'a socket reset under pg': { kind: 'connection_lost', status: 503, error: shaped('ECONNRESET', 'read ECONNRESET') },
  'an unknown database host': { kind: 'unreachable', status: 503, error: shaped('ENOTFOUND', 'getaddrinfo ENOTFOUND db.invalid') },
  'PGlite: an undefined table (not a fault of the moment)': { kind: null, status: 500, error: () => rejectionOf(pglite.query('select * from no_such_table')) },
  'a bug': { kind: null, status: 500, error: async () => new TypeError('x is undefined') },
  'a thrown string': { kind: null, status: 500, error: async () => 'Connection terminated' },
};

describe('driver errors', () => {
  for (const [name, row] of Object.entries(ROWS)) {
    it(`${name}: ${row.kind ?? 'none'}, ${row.status} to a caller`, async () => {
      const err = await row.error();
      expect(classifyDatabaseError(err)).toBe(row.kind);
      expect(toAppError(err).status).toBe(row.status);
      expect(isUniqueViolation(err)).toBe(row.kind === 'unique_violation');
    });
  }

  it('every kind has a real shape above', () => {
    const shown = new Set(Object.values(ROWS).map((row) => row.kind));
    expect(Object.keys(DATABASE_ERROR_KINDS).filter((kind) => !shown.has(kind as DatabaseErrorKind))).toEqual([]);
  });

  it('the pool drops a connection only after an error that left it unusable', () => {
    const dropped = Object.entries(DATABASE_ERROR_KINDS).filter(([, kind]) => kind.dropsConnection).map(([name]) => name);
    expect(dropped).toEqual(['stale_plan', 'connection_lost', 'connection_fault']);
  });
});
