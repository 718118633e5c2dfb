import { afterAll, beforeAll, expect, it } from 'vitest';
import { resolveSshIdentity } from '../src/core/index.js';
import { startTestCore, type TestCore } from './support/core.js';
import { countingStatements } from './support/database.js';
import { runSshLine } from './support/in-process.js';

// Statements per SSH `create`, counted with a kysely plugin (BEGIN/COMMIT are not statements it
// sees): a change that adds a round trip to the hot path fails here, not in production.

let core: TestCore;
beforeAll(async () => {
  core = await startTestCore();
});
afterAll(async () => {
  await core?.close();
});

it('an SSH create: who the key is, then the org and billing, then the key with its audit row in one statement (no transaction): 3 statements', async () => {
  const user = await core.verifiedUser();
  const { db, statements } = countingStatements(core.deps.db);
  const deps = { ...core.deps, db };
  const identity = await resolveSshIdentity(deps, user.publicKey);
  const created = await runSshLine(deps, identity, 'create --label counted-key');
  expect(created.code).toBe(0);
  expect(statements).toEqual(['SelectQueryNode', 'SelectQueryNode', 'InsertQueryNode']);
});
