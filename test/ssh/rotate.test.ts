import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.js';
import { sshLinkedUser } from '../support/accounts.js';
import { until } from '../support/processes.js';
import { openssh, privateKeyOf, ssh2Exec } from '../support/ssh.js';
import { closeAllTerminals, openTerminal } from '../support/tmux.js';
import type { TestKey } from '../support/keys.js';

// Least privilege, short lifetimes and rotation over the SSH door (issue 19, points 1 to 3),
// through the real OpenSSH client, checked on the platform's side with real HTTP (GET /api/whoami).

// Billing answers at once, or after `billingDelayMs` (for a client that leaves mid-rotation).
let billingDelayMs = 0;
const billing = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => setTimeout(() => res.writeHead(200).end('{"active": true}'), billingDelayMs));
});

let t: TestApp;
beforeAll(async () => {
  await new Promise<void>((resolve) => billing.listen(0, '127.0.0.1', resolve));
  t = await startTestApp({ BILLING_URL: `http://127.0.0.1:${(billing.address() as AddressInfo).port}/`, BILLING_TIMEOUT_MS: '5000' });
});
afterAll(async () => {
  await t?.close();
  billing.closeAllConnections();
  await new Promise((resolve) => billing.close(resolve));
});

const API_KEY = /^[0-9a-f-]{100}\n$/;
const sshAs = (key: TestKey) => (...args: string[]) => openssh(t.app.sshPort, key.privateKeyPath, args);
const whoami = (apiKey: string) => t.request('/api/whoami', { headers: { authorization: `Bearer ${apiKey}` } });

/** The service's clock, `ms` ahead of the real one, for the duration of `body`. */
async function later<T>(ms: number, body: () => Promise<T>): Promise<T> {
  t.app.deps.now = () => new Date(Date.now() + ms);
  try {
    return await body();
  } finally {
    t.app.deps.now = undefined;
  }
}

describe('create --perm and --expires-in', () => {
  it('a --perm clusters:view key carries only that: in --json, in the note (display name), on GET /api/whoami', async () => {
    const { key } = await sshLinkedUser(t, 'perm');
    const ssh = sshAs(key);
    const made = await ssh('create', '--label', 'view-only-key', '--perm', 'clusters:view', '--json');
    expect(made.code, made.stderr).toBe(0);
    const minted = JSON.parse(made.stdout);
    expect(minted.permissions).toEqual(['clusters:view']);
    expect(made.stderr).toMatch(/^Created API key [0-9a-f-]{36} in org \S+ \(View Clusters; no expiry\)\. It will not be shown again\.\n$/);
    const seen = await whoami(minted.api_key);
    expect(seen.status).toBe(200);
    expect(seen.body.permissions).toEqual(['clusters:view']);

    // Without --perm, as before: every permission.
    const plain = await ssh('create', '--label', 'every-permission');
    expect(plain.stdout).toMatch(API_KEY);
    expect((await whoami(plain.stdout.trim())).body.permissions).toEqual(['clusters:view', 'clusters:create']);
    expect(plain.stderr).toContain('(View Clusters, Create Clusters; no expiry)');
  });

  it('--perm repeats and takes commas; duplicates collapse into the platform\'s order', async () => {
    const { key } = await sshLinkedUser(t, 'perms');
    const made = await sshAs(key)('create', '--label', 'both-permissions', '--perm', 'clusters:create', '--perm', 'clusters:view,clusters:create', '--json');
    expect(made.code, made.stderr).toBe(0);
    expect(JSON.parse(made.stdout).permissions).toEqual(['clusters:view', 'clusters:create']);
  });

  it('an unknown --perm is a usage error (exit 2) naming it and the known ones; nothing is minted', async () => {
    const { key } = await sshLinkedUser(t, 'badperm');
    const ssh = sshAs(key);
    const bad = await ssh('create', '--label', 'bad-permission', '--perm', 'clusters:view,clusters:delete');
    expect(bad).toEqual({
      code: 2,
      stdout: '',
      stderr: 'error: --perm: "clusters:delete" is not a permission on this server; its permissions: clusters:view, clusters:create\nusage: create --label LABEL [--org ORG] [--perm NAME]... [--expires-in DURATION] [--json]\n',
    });
    expect((await ssh('create', '--label', 'empty-permission', '--perm', ',')).stderr).toMatch(/^error: --perm needs a permission \(choose among: clusters:view, clusters:create\)\n/);
    expect(JSON.parse((await ssh('list', '--json')).stdout)).toEqual([]);
  });

  it('--expires-in takes minutes, at least 5m', async () => {
    const { key } = await sshLinkedUser(t, 'minutes');
    const ssh = sshAs(key);
    const short = await ssh('create', '--label', 'four-minutes', '--expires-in', '4m');
    expect(short.code).toBe(2);
    expect(short.stderr).toMatch(/^error: --expires-in 4m is too short: the shortest lifetime is 5m\n/);
    const before = Date.now();
    const made = await ssh('create', '--label', 'fifteen-minutes', '--expires-in', '15m', '--json');
    expect(made.code, made.stderr).toBe(0);
    const expiresAt = new Date(JSON.parse(made.stdout).expires_at).getTime();
    expect(expiresAt).toBeGreaterThanOrEqual(before + 15 * 60_000);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 15 * 60_000);
  });
});

describe('rotate', () => {
  it('prints the new key alone; the old key works during the overlap and gets 401 after it; the new one goes on', async () => {
    const { key } = await sshLinkedUser(t, 'rotator');
    const ssh = sshAs(key);
    const old = JSON.parse((await ssh('create', '--label', 'ci-runner-key', '--perm', 'clusters:view', '--json')).stdout);

    const rotated = await ssh('rotate', old.api_key_id.slice(0, 8), '--overlap', '10m');
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(rotated.stdout).toMatch(API_KEY);
    const newKey = rotated.stdout.trim();
    const newId = newKey.slice(0, 36);
    expect(rotated.stderr).toMatch(
      new RegExp(
        `^Created API key ${newId} \\(ci-runner-key\\) in org \\S+ \\(View Clusters; no expiry\\)\\. It will not be shown again\\.\\n` +
          `It replaces API key ${old.api_key_id}, which works until \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z\\.\\n$`,
      ),
    );
    const seen = await whoami(newKey);
    expect(seen.body).toMatchObject({ api_key_id: newId, label: 'ci-runner-key', permissions: ['clusters:view'], org_id: old.org_id });
    expect((await whoami(old.api_key)).status).toBe(200);

    // The clock seam, not a 10-minute sleep: just inside the overlap, then just past it.
    await later(10 * 60_000 - 5_000, async () => expect((await whoami(old.api_key)).status).toBe(200));
    await later(10 * 60_000 + 1_000, async () => {
      const after = await whoami(old.api_key);
      expect(after.status).toBe(401);
      expect(after.body).toEqual({ success: false, error: 'Invalid API key' });
      expect((await whoami(newKey)).status).toBe(200);
    });
  });

  it('--json has the new key, what it replaces and when that stops; a second rotation of the same key is refused, naming its successor', async () => {
    const { key } = await sshLinkedUser(t, 'rotjson');
    const ssh = sshAs(key);
    const old = JSON.parse((await ssh('create', '--label', 'json-rotation', '--expires-in', '2h', '--json')).stdout);
    const before = Date.now();
    const rotated = await ssh('rotate', old.api_key_id, '--json');
    expect(rotated.code, rotated.stderr).toBe(0);
    const body = JSON.parse(rotated.stdout);
    expect(Object.keys(body).sort()).toEqual(['api_key', 'api_key_id', 'expires_at', 'old_key_expires_at', 'org_id', 'org_name', 'permissions', 'replaces', 'success']);
    expect(body).toMatchObject({ success: true, replaces: old.api_key_id, org_id: old.org_id, org_name: old.org_name, permissions: ['clusters:view', 'clusters:create'] });
    // The default overlap, 1h; the same lifetime as the old key (2h), from now.
    expect(new Date(body.old_key_expires_at).getTime() - before).toBeGreaterThanOrEqual(3_600_000 - 1_000);
    expect(new Date(body.old_key_expires_at).getTime() - Date.now()).toBeLessThanOrEqual(3_600_000);
    expect(new Date(body.expires_at).getTime() - before).toBeGreaterThanOrEqual(2 * 3_600_000 - 1_000);
    expect(new Date(body.expires_at).getTime() - Date.now()).toBeLessThanOrEqual(2 * 3_600_000);

    const again = await ssh('rotate', old.api_key_id);
    expect(again).toEqual({
      code: 1,
      stdout: '',
      stderr: `error: This API key was already rotated: rotate the key that replaced it (${body.api_key_id})\n`,
    });
    // Its successor can be.
    expect((await ssh('rotate', body.api_key_id, '--overlap', '0')).code).toBe(0);
  });

  it('--overlap 0: the old key gets 401 at once', async () => {
    const { key } = await sshLinkedUser(t, 'rotzero');
    const ssh = sshAs(key);
    const old = JSON.parse((await ssh('create', '--label', 'leaked-maybe', '--json')).stdout);
    expect((await whoami(old.api_key)).status).toBe(200); // cached by whoami now
    const rotated = await ssh('rotate', old.api_key_id, '--overlap', '0');
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(rotated.stderr).toContain(`It replaces API key ${old.api_key_id}, which has stopped working.\n`);
    expect((await whoami(old.api_key)).status).toBe(401);
    expect((await whoami(rotated.stdout.trim())).status).toBe(200);
  });

  it('refusals: someone else\'s key reads as not found, as for revoke; a revoked key; a bad --overlap is a usage error', async () => {
    const { key } = await sshLinkedUser(t, 'rotowner');
    const stranger = await sshLinkedUser(t, 'rotstranger');
    const ssh = sshAs(key);
    const theirs = JSON.parse((await sshAs(stranger.key)('create', '--label', 'not-yours-key', '--json')).stdout);
    expect(await ssh('rotate', theirs.api_key_id)).toEqual({ code: 1, stdout: '', stderr: `error: no API key "${theirs.api_key_id}" that you can see (see "list")\n` });
    expect(await ssh('revoke', theirs.api_key_id)).toEqual({ code: 1, stdout: '', stderr: `error: no API key "${theirs.api_key_id}" that you can see (see "list")\n` });

    const mine = JSON.parse((await ssh('create', '--label', 'revoked-first', '--json')).stdout);
    expect((await ssh('revoke', mine.api_key_id)).code).toBe(0);
    expect((await ssh('rotate', mine.api_key_id)).stderr).toBe(`error: API key "${mine.api_key_id}" is already revoked\n`);

    const tooLong = await ssh('rotate', mine.api_key_id, '--overlap', '8d');
    expect(tooLong.code).toBe(2);
    expect(tooLong.stderr).toBe('error: --overlap must be at most 7d\nusage: rotate KEY_ID [--overlap DURATION] [--json]\n');
    expect((await ssh('rotate', mine.api_key_id, '--overlap', 'soon')).stderr).toMatch(/^error: --overlap must be a duration such as 1h, 15m or 0 \(at once\)\n/);
    expect((await ssh('rotate')).stderr).toMatch(/^error: missing KEY_ID\n/);
  });

  it('a client that leaves mid-rotation never gets the new key: it is revoked (undelivered), and the old key is as it was, to rotate again', async () => {
    const { key } = await sshLinkedUser(t, 'rotdrop');
    const ssh = sshAs(key);
    const old = JSON.parse((await ssh('create', '--label', 'dropped-rotation', '--json')).stdout);
    billingDelayMs = 600;
    try {
      await ssh2Exec(t.app.sshPort, { privateKey: privateKeyOf(key.privateKeyPath) }, `rotate ${old.api_key_id}`, {
        // Leave while the server waits on billing.
        onChannel: (_channel, client) => setTimeout(() => client.end(), 100),
      }).catch(() => undefined);
      await until(() => t.logs.some((line) => line.includes('command interrupted before the key was delivered')), 'the undelivered key revoked', () => t.logs.join('\n'), 10_000);
    } finally {
      billingDelayMs = 0;
    }
    // Unlinked from the old key by the undo (rotated_from_id cleared): found by its label.
    const successor = await t.app.deps.db.selectFrom('api_keys').selectAll().where('label', '=', 'dropped-rotation').where('id', '!=', old.api_key_id).executeTakeFirstOrThrow();
    expect(successor.revoked_reason).toBe('undelivered');
    expect(successor.rotated_from_id).toBeNull();
    expect(successor.revoked_at).not.toBeNull();
    const restored = await t.app.deps.db.selectFrom('api_keys').selectAll().where('id', '=', old.api_key_id).executeTakeFirstOrThrow();
    expect(restored).toMatchObject({ replaced_by_id: null, expires_at: null, revoked_at: null });
    expect((await whoami(old.api_key)).status).toBe(200);
    const again = await ssh('rotate', old.api_key_id, '--json');
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ replaces: old.api_key_id });
  });
});

const HAVE_TMUX = spawnSync('tmux', ['-V']).status === 0;
if (!HAVE_TMUX) console.warn('rotate.test.ts: SKIPPING the terminal test: no tmux (.ci/run installs it: apt-get install tmux)');

describe.runIf(HAVE_TMUX)(`Tab after rotate, in a real terminal${HAVE_TMUX ? '' : ' [SKIPPED: tmux not installed]'}`, () => {
  afterAll(closeAllTerminals);
  const lastLine = (screen: string) => screen.trimEnd().split('\n').at(-1) ?? '';

  it('completes the id of an active key, as after revoke; not after --overlap, which takes a duration', async () => {
    const { key } = await sshLinkedUser(t, 'rottab');
    const made = JSON.parse((await sshAs(key)('create', '--label', 'tab-rotated', '--json')).stdout);
    const term = openTerminal([
      'ssh', '-tt', '-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no',
      '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-p', String(t.app.sshPort), '-i', key.privateKeyPath, 'keys@127.0.0.1',
    ]);
    try {
      await term.until((s) => lastLine(s) === 'keys>', 'the prompt');
      // After --overlap comes a duration: Tab offers no key id there.
      term.type('rotate --overlap ');
      term.press('Tab');
      term.type('5m');
      await term.until((s) => lastLine(s) === 'keys> rotate --overlap 5m', 'no id offered for the duration', 10_000);
      term.press('C-u');
      term.type('rotate ');
      term.press('Tab');
      await term.until((s) => lastLine(s) === `keys> rotate ${made.api_key_id}`, 'the key id completed', 10_000);
      term.press('Enter');
      await term.until((s) => s.includes(`It replaces API key ${made.api_key_id}, which works until`), 'the key rotated');
      term.type('exit');
      term.press('Enter');
      expect([0, null]).toContain(await term.exited());
    } finally {
      term.close();
    }
  });
});
