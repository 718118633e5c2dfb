import { defineConfig } from 'vitest/config';

// Projects by layer (see test/README.md). The domain and both doors run on embedded PGlite and on
// a real Postgres server (a fresh database per run, created by test/support/postgres-setup.ts);
// unit tests need no database; the service as operators run it (test/system) runs once, on
// Postgres as production does, its embedded-database cases on PGlite by their own choice.
// build-setup.ts compiles the service into dist/ for the tests that spawn it (incremental, so
// after the first project it is quick).
const BUILD = 'test/support/build-setup.ts';
const POSTGRES = 'test/support/postgres-setup.ts';
const PGLITE = 'test/support/pglite-setup.ts';
const ON_BOTH_DATABASES = ['test/core/**/*.test.ts', 'test/command/**/*.test.ts', 'test/http/**/*.test.ts', 'test/ssh/**/*.test.ts'];

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // One file at a time (vitest's default on 2 cores). With 2, tests with sub-second timing
    // (mail-outbox-smtp's 300 ms send timeout, workers' connection caps) failed in one clean-clone
    // run of two, when another file's PGlite or service start took the other core.
    maxWorkers: 1,
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      {
        extends: true,
        test: { name: 'pglite', include: ON_BOTH_DATABASES, env: { TEST_DB: 'pglite' }, globalSetup: [BUILD, PGLITE] },
      },
      {
        extends: true,
        test: { name: 'postgres', include: ON_BOTH_DATABASES, env: { TEST_DB: 'postgres' }, globalSetup: [BUILD, POSTGRES] },
      },
      {
        extends: true,
        test: { name: 'system', include: ['test/system/**/*.test.ts'], env: { TEST_DB: 'postgres' }, globalSetup: [BUILD, POSTGRES] },
      },
    ],
  },
});
