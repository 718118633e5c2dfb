import { defineConfig } from 'vitest/config';

// The whole suite runs twice: on embedded PGlite and on a real Postgres server
// (a fresh database per run, created by test/support/postgres-setup.ts). Both first compile
// the service into dist/ (test/support/build-setup.ts: incremental, so the second is quick).
export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    projects: [
      {
        extends: true,
        test: { name: 'pglite', env: { TEST_DB: 'pglite' }, globalSetup: ['test/support/build-setup.ts'] },
      },
      {
        extends: true,
        test: {
          name: 'postgres',
          env: { TEST_DB: 'postgres' },
          globalSetup: ['test/support/build-setup.ts', 'test/support/postgres-setup.ts'],
        },
      },
    ],
  },
});
