import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminPostgresUrl, freshPostgresUrl } from '../support/database.js';
import { killSpawnedServices, listeningOf, spawnService, type SpawnedService } from '../support/service.js';

// Every process holds a pool of DB_POOL_SIZE connections plus its LISTEN connections: the
// service refuses to start when WORKERS × that exceeds what the Postgres server allows (its
// max_connections less the slots reserved for administrators), naming the settings.

afterAll(killSpawnedServices);

/** The exit code, or 'still running' after 15 s (a service that was not refused). */
const exitOf = (service: SpawnedService) =>
  Promise.race([service.exited, new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 15_000))]);

describe('Postgres connections', () => {
  /** What the local server allows the service: max_connections less its reserved slots (read, not assumed). */
  let allowed = 0;
  let why = '';
  beforeAll(async () => {
    const client = new pg.Client({ connectionString: adminPostgresUrl() });
    await client.connect();
    try {
      const { rows } = await client.query<{ max: number; superuser: number; reserved: number | null }>(
        `SELECT current_setting('max_connections')::int AS max, current_setting('superuser_reserved_connections')::int AS superuser,
                current_setting('reserved_connections', true)::int AS reserved`,
      );
      const { max, superuser, reserved } = rows[0]!;
      allowed = max - superuser - (reserved ?? 0);
      why = [`max_connections ${max}`, ...(superuser > 0 ? [`superuser_reserved_connections ${superuser}`] : []), ...(reserved ? [`reserved_connections ${reserved}`] : [])].join(' - ');
    } finally {
      await client.end();
    }
  });

  it('WORKERS × (DB_POOL_SIZE + listeners) beyond what the server allows: one line naming the settings, exit 1, before migrating', async () => {
    const pool = Math.ceil(allowed / 2); // 2 × (pool + 2) > allowed
    const service = spawnService({ WORKERS: '2', DB_POOL_SIZE: String(pool), DATABASE_URL: await freshPostgresUrl({ migrated: false }) });
    expect(await exitOf(service)).toBe(1);
    const needed = 2 * (pool + 2);
    expect(service.output()).toBe(
      `shell-auth: could not start: WORKERS=2 x (DB_POOL_SIZE=${pool} + 2 LISTEN) = ${needed} Postgres connections, ` +
        `more than the server allows (${allowed}: ${why}); lower WORKERS or DB_POOL_SIZE, or raise the server's limit\n`,
    );
  });

  it('a single process is checked too, and counts one listener fewer with both caches off (whoami keys, SSH identities)', async () => {
    const url = await freshPostgresUrl();
    // allowed - 1 + 2 = one over.
    const over = spawnService({ DB_POOL_SIZE: String(allowed - 1), DATABASE_URL: url });
    expect(await exitOf(over)).toBe(1);
    expect(over.output()).toContain(`shell-auth: could not start: WORKERS=1 x (DB_POOL_SIZE=${allowed - 1} + 2 LISTEN) = ${allowed + 1} Postgres connections`);
    expect(over.output().trim().split('\n')).toHaveLength(1);
    // One cache still on: its invalidations listener still counts.
    const stillOver = spawnService({ DB_POOL_SIZE: String(allowed - 1), API_KEY_CACHE_TTL: '0', DATABASE_URL: url });
    expect(await exitOf(stillOver)).toBe(1);
    expect(stillOver.output()).toContain(`(DB_POOL_SIZE=${allowed - 1} + 2 LISTEN)`);
    // allowed - 1 + 1: exactly what the server allows.
    const fits = spawnService({ DB_POOL_SIZE: String(allowed - 1), API_KEY_CACHE_TTL: '0', SSH_IDENTITY_CACHE_TTL: '0', DATABASE_URL: url });
    await listeningOf(fits);
    fits.child.kill('SIGTERM');
    expect(await fits.exited).toBe(0);
  });

  it('a configuration that fits starts its workers; DB_POOL_SIZE must be a whole number', async () => {
    const service = spawnService({ WORKERS: '2', DB_POOL_SIZE: '5', DATABASE_URL: await freshPostgresUrl() });
    const { output } = service;
    // The primary's line, said once both workers listen.
    for (let i = 0; i < 900 && !output().includes('"workers":2,"msg":"HTTP API listening"'); i++) {
      if (service.child.exitCode !== null) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(output(), output()).toContain('"workers":2,"msg":"HTTP API listening"');
    service.child.kill('SIGTERM');
    expect(await service.exited).toBe(0);

    const bad = spawnService({ DB_POOL_SIZE: '0', DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' });
    expect(await bad.exited).toBe(1);
    expect(bad.output()).toBe('shell-auth: DB_POOL_SIZE="0": must be a whole number from 1 to 10000\n');
  });
});
