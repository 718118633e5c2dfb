import type { ServerResponse } from 'node:http';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT, reportFailure, UsageError, type Output, type Program } from '../../src/command/framework.js';
import { AppError, ERRORS, orgsOfUser, resolveSshIdentity, type ErrorCode, type Identity } from '../../src/core/index.js';
import { sendError } from '../../src/http/io.js';
import { makeKey } from '../support/keys.js';
import { buffers, runAdmin, runSshLine, type Captured } from '../support/in-process.js';
import { publicKeyOf, startTestCore, type TestCore } from '../support/core.js';

// The in-process layer: commands run with string buffers as their terminal, on the real core
// and database, no SSH client and no socket. The real-client tests (ssh-door) cover the wire.

let core: TestCore;
beforeAll(async () => {
  core = await startTestCore();
});
afterAll(async () => {
  await core?.close();
});

const ssh = (identity: Identity, line: string): Promise<Captured> => runSshLine(core.deps, identity, line);

const anonymous = (): Identity => ({ kind: 'anonymous', key: publicKeyOf(makeKey().publicKey) });

describe('SSH commands in-process: usage errors, exit codes, argument parsing', () => {
  let account: Identity;
  beforeAll(async () => {
    const user = await core.verifiedUser();
    account = await resolveSshIdentity(core.deps, user.publicKey);
    expect(account.kind).toBe('account');
  });

  const USAGE: Array<[string, RegExp]> = [
    ['create', /^error: --label is required\nusage: create --label LABEL/],
    ['create --label', /^error: --label needs a value\nusage: create/],
    ['create --label abcde --bogus', /^error: unknown option --bogus\nusage: create/],
    ['create --label abcde --json=yes', /^error: --json takes no value\n/],
    ['create --label abc', /^error: --label must be at least 5 characters\nusage: create/],
    ['login not-an-email', /^error: "not-an-email" is not an email address\nusage: login EMAIL/],
    ['create --label abcde --expires-in 0d', /^error: --expires-in 0d is too short: the shortest lifetime is 5m/],
    ['create --label abcde --expires-in 99999999d', /^error: --expires-in 99999999d is too long; at most 100 years/],
    ['create --label abcde --label fghij', /^error: --label given more than once/],
    ['create --label abcde extra', /^error: unexpected argument "extra"/],
    ['create --label abcde --expires-in soon', /^error: --expires-in: "soon" is not a duration/],
    ['create --label abcde --expires-in 30s', /^error: --expires-in 30s is too short: the shortest lifetime is 5m/],
    ['revoke', /^error: missing KEY_ID\nusage: revoke KEY_ID/],
    ['revoke a b', /^error: unexpected argument "b"/],
    ['orgs extra', /^error: unexpected argument "extra"/],
    ['login', /^error: missing EMAIL\nusage: login EMAIL/],
    ['help create extra', /^error: unexpected argument "extra"/],
    ['help frobnicate', /^error: no command "frobnicate"\nusage: help/],
    ['frobnicate', /^error: unknown command "frobnicate": run "ssh -p 2222 keys@host help" for the list\n$/],
    ["''", /^error: no command given/],
    ['', /^error: no command given/],
    ['create "unterminated', /^error: unterminated double quote/],
    ['create trailing\\', /^error: trailing backslash/],
  ];
  for (const [line, stderr] of USAGE) {
    it(`"${line}" exits 2 with the reason on stderr, nothing on stdout`, async () => {
      const result = await ssh(account, line);
      expect(result).toMatchObject({ code: EXIT.USAGE, stdout: '' });
      expect(result.stderr).toMatch(stderr);
    });
  }

  it('parsing comes before the account gate: an unlinked key learns how to call the command', async () => {
    for (const line of ['create --bogus', 'create --label abcde extra', 'revoke']) {
      expect((await ssh(anonymous(), line)).code, line).toBe(EXIT.USAGE);
    }
  });

  it('account commands refuse an unlinked key with exit 1 and how to link it; open commands run', async () => {
    const key = anonymous();
    for (const line of ['create --label abcde', 'list', 'orgs', 'revoke 00000000-0000-4000-8000-000000000000']) {
      const result = await ssh(key, line);
      expect(result, line).toMatchObject({ code: EXIT.FAILED, stdout: '' });
      expect(result.stderr, line).toContain(`This key (${key.key.fingerprint}) is not linked to an account yet.`);
      expect(result.stderr, line).toContain('ssh -p 2222 keys@host login you@example.com');
    }
    const whoami = await ssh(key, 'whoami --json');
    expect(whoami.code).toBe(EXIT.OK);
    expect(JSON.parse(whoami.stdout)).toMatchObject({ verified: false, fingerprint: key.key.fingerprint });
    expect((await ssh(key, 'help')).code).toBe(EXIT.OK);
  });

  it('--help and help COMMAND print the usage on stdout and exit 0, for any key', async () => {
    for (const identity of [account, anonymous()]) {
      for (const line of ['create --help', 'create -h', 'help create']) {
        const result = await ssh(identity, line);
        expect(result, line).toMatchObject({ code: EXIT.OK, stderr: '' });
        expect(result.stdout, line).toMatch(/^usage: create --label LABEL/);
      }
      const general = await ssh(identity, '--help');
      expect(general.code).toBe(EXIT.OK);
      expect(general.stdout).toMatch(/^usage: ssh -p 2222 keys@host COMMAND/);
    }
  });

  it('core errors exit 1, worded for the command line', async () => {
    const cases: Array<[string, string]> = [
      ['create --label abcde --org no-such-org', 'error: no org "no-such-org" among yours (see "orgs")\n'],
      ['revoke not-a-key-id', 'error: no API key "not-a-key-id" that you can see (see "list")\n'],
    ];
    for (const [line, stderr] of cases) {
      const result = await ssh(account, line);
      expect(result, line).toEqual({ code: EXIT.FAILED, stdout: '', stderr });
    }
  });

  it('says things in terms of the command line: the key already yours, a suspended org, a limit, "-- --help"', async () => {
    if (account.kind !== 'account') throw new Error('expected an account');
    const email = account.user.email;
    const other = await ssh(account, 'login someone-else@example.com');
    expect(other).toEqual({
      code: EXIT.FAILED,
      stdout: '',
      stderr: `error: this key is already linked to you, as ${email}. A key belongs to one account: to use someone-else@example.com, log in from another key pair.\n`,
    });
    const orgName = (await orgsOfUser(core.deps.db, account.user))[0]!.name;
    await runAdmin(core.deps, 'billing', 'set', orgName, 'suspended');
    // A new connection reads the identity (with its orgs' billing state) afresh.
    const suspended = await resolveSshIdentity(core.deps, account.key);
    try {
      expect(await ssh(suspended, `create --label suspended --org ${orgName}`)).toEqual({
        code: EXIT.FAILED,
        stdout: '',
        stderr: `error: org "${orgName}" is suspended: minting is off until its billing is active\n`,
      });
      expect((await ssh(suspended, 'create --label suspended')).stderr).toBe(
        `error: your default org "${orgName}" is suspended: minting is off until its billing is active\n`,
      );
    } finally {
      await runAdmin(core.deps, 'billing', 'set', orgName, 'active');
    }
    const helped = await ssh(account, '-- --help');
    expect(helped.code).toBe(EXIT.OK);
    expect(helped.stdout).toMatch(/^usage: ssh -p 2222 keys@host COMMAND/);
  });

  it('create prints the key alone on stdout; list and revoke see it', async () => {
    const created = await ssh(account, 'create --label in-process');
    expect(created.code).toBe(EXIT.OK);
    expect(created.stdout).toMatch(/^[0-9a-f-]{100}\n$/);
    const id = created.stdout.slice(0, 36);
    const listed = JSON.parse((await ssh(account, 'list --json')).stdout) as Array<{ id: string; revoked: boolean }>;
    expect(listed.find((k) => k.id === id)).toMatchObject({ revoked: false });
    expect((await ssh(account, `revoke ${id}`)).code).toBe(EXIT.OK);
    expect((await ssh(account, `revoke ${id}`)).stderr).toBe(`error: API key "${id}" is already revoked\n`);
  });
});

describe('admin commands in-process, on the same framework', () => {
  const admin = (...words: string[]): Promise<Captured> => runAdmin(core.deps, ...words);

  it('usage mistakes exit 2 and name what is wrong', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['org'], /^error: unknown command "org": run "npm run admin -- --help" for the list\n$/],
      [['org', 'frob'], /^error: unknown command "org frob"/],
      [['org', 'create'], /^error: missing NAME\nusage: org create NAME --owner EMAIL \[--json\]/],
      [['org', 'create', 'x'], /^error: --owner EMAIL /],
      [['org', 'create', 'bad name!', '--owner', 'a@b.example'], /^error: NAME must be letters/],
      [['org', 'add-member', 'o', 'a@b.example', '--role', 'king'], /^error: --role /],
      [['org', 'list', '--owner', 'x'], /^error: unknown option --owner\n/],
      [['billing', 'set', 'o', 'paused'], /^error: status /],
      [['keys', 'revoke'], /^error: missing KEY_ID/],
    ];
    for (const [words, stderr] of cases) {
      const result = await admin(...words);
      expect(result.code, words.join(' ')).toBe(EXIT.USAGE);
      expect(result.stdout, words.join(' ')).toBe('');
      expect(result.stderr, words.join(' ')).toMatch(stderr);
    }
  });

  it('runs against the core: text and --json output, core errors exit 1', async () => {
    const org = `inproc-${Date.now().toString(36)}`;
    const created = await admin('org', 'create', org, '--owner', `owner-${org}@example.com`, '--json');
    expect(created.code).toBe(EXIT.OK);
    expect(JSON.parse(created.stdout)).toMatchObject({ name: org, owner: `owner-${org}@example.com` });
    expect(await admin('org', 'create', org, '--owner', `owner-${org}@example.com`)).toEqual({
      code: EXIT.FAILED,
      stdout: '',
      stderr: 'error: Organization already exists\n',
    });
    const member = `member-${org}@example.com`;
    expect((await admin('org', 'add-member', org, member, '--role', 'admin')).stdout).toBe(
      `${member} is now admin of ${org} (new account, not yet verified)\n`,
    );
    expect((await admin('billing', 'set', org, 'suspended')).stdout).toBe(`Billing for ${org} is now suspended\n`);
    const listed = JSON.parse((await admin('org', 'list', '--json')).stdout).find((o: { name: string }) => o.name === org);
    expect(listed).toMatchObject({ name: org, plan: 'free', status: 'suspended', members: 2 });
    expect(await admin('billing', 'set', 'no-such-org-x', 'active')).toEqual({ code: EXIT.FAILED, stdout: '', stderr: 'error: Organization not found\n' });
    expect((await admin('keys', 'list', '--org', org)).stdout).toBe('(none)\n');
    expect(await admin('keys', 'revoke', '00000000-0000-4000-8000-000000000000')).toEqual({
      code: EXIT.FAILED,
      stdout: '',
      stderr: 'error: API key not found\n',
    });
  });
});

describe('one error mapping for every door', () => {
  const program: Program<Output> = { commands: [], invocation: 'x', helpHint: 'type "help"', log: pino({ level: 'silent' }) };
  const report = (err: unknown) => {
    const io = buffers();
    const code = reportFailure(program, null, io, err);
    return { code, stderr: io.err.join('') };
  };

  it('every core error: exit 1 on the command line, its status and message over HTTP', () => {
    for (const code of Object.keys(ERRORS) as ErrorCode[]) {
      const err = new AppError(code, { detail: 'why' });
      expect(report(err), code).toEqual({ code: EXIT.FAILED, stderr: `error: ${ERRORS[code].message} (why)\n` });

      let status = 0;
      let headers: Record<string, string> = {};
      let body = '';
      const res = {
        writeHead(s: number, h: Record<string, string>) {
          status = s;
          headers = h;
        },
        end(b: string) {
          body = b;
        },
      } as unknown as ServerResponse;
      sendError(res, err);
      expect(status, code).toBe(ERRORS[code].status);
      expect(JSON.parse(body), code).toEqual({ success: false, error: ERRORS[code].message, detail: 'why' });
      expect(headers['content-type']).toBe('application/json; charset=utf-8');
    }
  });

  it('a usage error exits 2; a lost database reads as unavailable; anything else as internal, never its own text', () => {
    const usage = report(new UsageError('bad flag'));
    expect(usage.code).toBe(EXIT.USAGE);
    expect(usage.stderr).toMatch(/^error: bad flag\n\nusage: x COMMAND \[OPTIONS\]\n/);
    expect(report(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }))).toEqual({
      code: EXIT.FAILED,
      stderr: `error: ${ERRORS.UNAVAILABLE.message}\n`,
    });
    expect(report(new Error('secret driver detail: alice@example.com'))).toEqual({ code: EXIT.FAILED, stderr: `error: ${ERRORS.INTERNAL.message}\n` });
    expect(report(new AppError('RATE_LIMITED', { retryAfterSeconds: 7 }))).toEqual({ code: EXIT.FAILED, stderr: `error: ${ERRORS.RATE_LIMITED.message}\n` });
  });
});
