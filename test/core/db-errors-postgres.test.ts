import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { toAppError } from '../../src/core/errors.js';
import { classifyDatabaseError, DATABASE_ERROR_KINDS } from '../../src/db/errors.js';
import { adminPostgresUrl, usingPostgres } from '../support/database.js';

// The errors only a real Postgres server throws (test/unit/db-errors.test.ts has the others).

describe.runIf(usingPostgres)('driver errors from a real Postgres', () => {
  const withClient = async (options: pg.ClientConfig, work: (client: pg.Client) => Promise<unknown>) => {
    const client = new pg.Client({ connectionString: adminPostgresUrl(), ...options });
    client.on('error', () => undefined);
    await client.connect();
    try {
      return await work(client).then(
        () => expect.fail('expected a rejection'),
        (err: unknown) => err,
      );
    } finally {
      await client.end().catch(() => undefined);
    }
  };

  it('a statement cancelled at statement_timeout (57014): timed_out, 503, the connection kept', async () => {
    const err = await withClient({ statement_timeout: 50 }, (client) => client.query('select pg_sleep(5)'));
    expect((err as { code?: string }).code).toBe('57014');
    expect(classifyDatabaseError(err)).toBe('timed_out');
    expect(DATABASE_ERROR_KINDS.timed_out.dropsConnection).toBe(false);
    expect(toAppError(err).status).toBe(503);
  });

  it('a backend terminated (57P01, pg_terminate_backend): connection_lost, 503, the connection dropped', async () => {
    const err = await withClient({}, (client) => client.query('select pg_terminate_backend(pg_backend_pid())'));
    expect((err as { code?: string }).code).toBe('57P01');
    expect(classifyDatabaseError(err)).toBe('connection_lost');
    expect(DATABASE_ERROR_KINDS.connection_lost.dropsConnection).toBe(true);
    expect(toAppError(err).status).toBe(503);
  });
});
