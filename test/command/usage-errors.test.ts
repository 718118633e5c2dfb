import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveSshIdentity, type Identity } from '../../src/core/index.js';
import { startTestCore, type TestCore } from '../support/core.js';
import { runSshLine } from '../support/in-process.js';

// Usage mistakes of a linked account, in-process (they were asserted through OpenSSH, one client
// per case). ssh-door.test.ts keeps one such case over a real channel.

let core: TestCore;
let account: Identity;
beforeAll(async () => {
  core = await startTestCore();
  account = await resolveSshIdentity(core.deps, (await core.verifiedUser()).publicKey);
  expect(account.kind).toBe('account');
});
afterAll(async () => {
  await core?.close();
});

describe('usage mistakes exit 2, with the reason and the usage on stderr and nothing on stdout', () => {
  const cases: Array<[string, RegExp]> = [
    ['create --label good-label --colour red', /^error: unknown option --colour\nusage: create/],
    ['create --label good-label --expires-in soon', /--expires-in: "soon" is not a duration/],
    ['create --label forever-ish --expires-in 3000000d', /^error: --expires-in 3000000d is too long; at most 100 years/],
    ['create --label blink-key --expires-in 1s', /the shortest lifetime is 5m/],
    ['create --label first-one --label second-one', /--label given more than once/],
    ['create --label --help', /^error: --label needs a value \(one that starts with "-" is written --label=-value\)\n/],
    ['revoke', /^error: missing KEY_ID\nusage: revoke KEY_ID/],
    ['orgs extra', /^error: unexpected argument "extra"/],
    ['frobnicate', /^error: unknown command "frobnicate": run "ssh -p \d+ keys@\S+ help" for the list\n$/],
    ["''", /^error: no command given/],
  ];
  it.each(cases)('%s', async (line, reason) => {
    const result = await runSshLine(core.deps, account, line);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(reason);
  });
});
