import { afterAll, beforeAll, expect, it } from 'vitest';
import { resolveSshIdentity, type CoreDeps } from '../src/core/index.js';
import { startTestCore, type TestCore } from './support/core.js';
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

function counting(deps: CoreDeps): { deps: CoreDeps; statements: string[] } {
  const statements: string[] = [];
  return {
    statements,
    deps: {
      ...deps,
      db: deps.db.withPlugin({
        transformQuery: (args) => (statements.push(args.node.kind), args.node),
        transformResult: async (args) => args.result,
      }),
    },
  };
}

it('an SSH create: who the key is, then the org and billing, then the key with its audit row in one statement (no transaction): 3 statements', async () => {
  const user = await core.verifiedUser();
  const { deps, statements } = counting(core.deps);
  const identity = await resolveSshIdentity(deps, user.publicKey);
  const created = await runSshLine(deps, identity, 'create --label counted-key');
  expect(created.code).toBe(0);
  expect(statements).toEqual(['SelectQueryNode', 'SelectQueryNode', 'InsertQueryNode']);
});
