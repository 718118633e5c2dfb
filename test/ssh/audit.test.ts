import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findUserByEmail, rotateApiKey } from '../../src/core/index.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { sshLinkedUser } from '../support/accounts.js';
import { openssh } from '../support/ssh.js';

// `ssh keys@host audit` through the real OpenSSH client: the mint, the rotation and the
// revocation, from the client's own address, with the table on stdout and exit codes as the
// other commands have them (issue 19, point 6).

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

describe('audit over OpenSSH', () => {
  it('shows the mint, the rotation and the revocation, newest first, within 100 columns; --json in full; usage errors exit 2', async () => {
    const owner = await sshLinkedUser(t, 'auditor');
    const ssh = (...args: string[]) => openssh(t.app.sshPort, owner.key.privateKeyPath, args);
    const made = await ssh('create', '--label', 'ci-runner-audit', '--json');
    expect(made.code, made.stderr).toBe(0);
    const keyId = JSON.parse(made.stdout).api_key_id as string;
    const user = (await findUserByEmail(t.app.deps.db, owner.email))!;
    const rotated = await rotateApiKey(t.app.deps, { actor: user, keyId, overlapMs: 3_600_000, origin: { channel: 'ssh', ip: '127.0.0.1' } });
    expect((await ssh('revoke', rotated.api_key_id)).code).toBe(0);

    const table = await ssh('audit');
    expect(table.code, table.stderr).toBe(0);
    expect(table.stderr).toBe('');
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^TIME +ACTOR +ACTION +KEY +LABEL +DOOR +ADDRESS +PROOF +REASON$/);
    for (const line of lines) expect(line.length, line).toBeLessThanOrEqual(100);
    const rows = lines.slice(1);
    const at = (action: string, id: string) => rows.findIndex((l) => l.includes(` ${action} `) && l.includes(` ${id.slice(0, 8)} `));
    // Newest first: the revocation of the new key, then the rotation and the new key's mint (one
    // transaction: one time), then the first mint.
    const revokedAt = at('api_key.revoked', rotated.api_key_id);
    const rotation = [at('api_key.rotated', keyId), at('api_key.created', rotated.api_key_id)];
    const firstMint = at('api_key.created', keyId);
    expect([revokedAt, ...rotation, firstMint].every((i) => i >= 0)).toBe(true);
    expect(rotation.every((i) => i > revokedAt && i < firstMint)).toBe(true);
    expect(rows[at('api_key.created', keyId)]).toMatch(/ ci-runner\S* +ssh +127\.0\.0\.1 +ssh +-$/);
    expect(rows[at('api_key.revoked', rotated.api_key_id)]).toMatch(/^\d+s ago +\S+ +api_key\.revoked +[0-9a-f]{8} +ci-runner\S* +ssh +127\.0\.0\.1 +- +-$/);

    const json = await ssh('audit', '--limit', '3', '--json');
    expect(json.code, json.stderr).toBe(0);
    const events = JSON.parse(json.stdout) as Array<Record<string, unknown>>;
    expect(events.map((e) => [e.action, e.key_id])[0]).toEqual(['api_key.revoked', rotated.api_key_id]);
    expect(events.slice(1).map((e) => [e.action, e.key_id]).sort()).toEqual([
      ['api_key.created', rotated.api_key_id],
      ['api_key.rotated', keyId],
    ]);
    expect(events[0]).toMatchObject({ actor: owner.email, actor_email: owner.email, org_name: owner.org, door: 'ssh', ip: '127.0.0.1', label: 'ci-runner-audit' });

    const usage = await ssh('audit', '--since', '400d');
    expect(usage).toMatchObject({ code: 2, stdout: '', stderr: 'error: --since must be at most 365d, not "400d"\nusage: audit [--org ORG] [--since 7d] [--limit 50] [--wide] [--json]\n' });
    const unknown = await ssh('audit', '--org', 'not-one-of-mine');
    expect(unknown).toMatchObject({ code: 1, stdout: '', stderr: 'error: no org "not-one-of-mine" among yours (see "orgs")\n' });
  });
});
