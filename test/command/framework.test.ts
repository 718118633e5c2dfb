import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_COMMANDS, adminContext } from '../../src/admin/commands.js';
import { EXIT, failure, runCommand, type Command, type Output, type Program } from '../../src/command/framework.js';
import { resolveSshIdentity, type CoreDeps, type Identity } from '../../src/core/index.js';
import { commandNameOfLine, COMMANDS, runCommandLine } from '../../src/ssh/commands/index.js';
import { buffers, runAdmin, sshContext, type Captured } from '../support/in-process.js';
import { publicKeyOf, startTestCore, type TestCore } from '../support/core.js';
import { makeKey, uniqueEmail } from '../support/keys.js';

// The command model's own contract: a command returns a result, and runCommand prints it the one
// way for every command of every program: --json, notes on stderr, exit codes, and the name of
// what ran (for the access log and metrics).

const log = pino({ level: 'silent' });

describe('runCommand prints what a command returns', () => {
  const seen: Array<Record<string, unknown>> = [];
  const command = (name: string, run: Command<Output>['run']): Command<Output> => ({
    name,
    summary: name,
    usage: `${name} [--json]`,
    options: { flag: { type: 'boolean' } },
    positionals: { min: 0, max: 1, names: '' },
    run,
  });
  const program: Program<Output> = {
    commands: [
      command('show', async () => ({ data: { shown: true }, text: 'for people\n', note: 'a note\n', advice: 'what next\n' })),
      command('quiet', async () => ({ data: undefined, text: '' })),
      command('fail', async () => failure('it did not work\n')),
      command('odd', async () => ({ data: 'odd', text: 'odd\n', exit: 3 })),
      command('args', async (_ctx, args) => {
        seen.push(args.values);
        return { data: null, text: '' };
      }),
    ],
    invocation: 'prog',
    helpHint: 'run "prog --help" for the list',
    log,
  };
  async function run(...words: string[]): Promise<Captured & { command: string }> {
    const io = buffers();
    const { code, command: name } = await runCommand(program, words, io);
    return { code, command: name, stdout: io.out.join(''), stderr: io.err.join('') };
  }

  it('text on stdout, then the note and the advice on stderr, exit 0', async () => {
    expect(await run('show')).toEqual({ code: EXIT.OK, command: 'show', stdout: 'for people\n', stderr: 'a note\nwhat next\n' });
  });

  it('--json: the data as JSON on stdout, the note still on stderr, the advice (for people) not', async () => {
    expect(await run('show', '--json')).toEqual({ code: EXIT.OK, command: 'show', stdout: '{\n  "shown": true\n}\n', stderr: 'a note\n' });
    expect(await run('odd', '--json')).toEqual({ code: 3, command: 'odd', stdout: '"odd"\n', stderr: '' });
  });

  it('no data and no text print nothing; a failure prints its reason and exits 1, with or without --json', async () => {
    for (const json of [[], ['--json']]) {
      expect(await run('quiet', ...json)).toEqual({ code: EXIT.OK, command: 'quiet', stdout: '', stderr: '' });
      expect(await run('fail', ...json)).toEqual({ code: EXIT.FAILED, command: 'fail', stdout: '', stderr: 'it did not work\n' });
    }
    expect(await run('odd')).toEqual({ code: 3, command: 'odd', stdout: 'odd\n', stderr: '' });
  });

  it('--json and --help are handled once, for every command: commands never see them', async () => {
    seen.length = 0;
    await run('args', '--json', '--flag');
    expect(seen).toEqual([{ flag: true }]);
    expect(await run('args', '--help', '--json')).toEqual({ code: EXIT.OK, command: 'args', stdout: 'usage: args [--json]\n', stderr: '' });
    expect(seen).toHaveLength(1);
    expect((await run('args', '--json=yes')).stderr).toBe('error: --json takes no value\nusage: args [--json]\n');
    expect((await run('args', '--json', '--json')).stderr).toBe('error: --json given more than once\nusage: args [--json]\n');
  });

  it('says what ran as the access log names it: the command, help, none or unknown', async () => {
    const names: Array<[string[], string, number]> = [
      [['show'], 'show', EXIT.OK],
      [['--', 'show'], 'show', EXIT.OK],
      [['show', '--bogus'], 'show', EXIT.USAGE],
      [['--help'], 'help', EXIT.OK],
      [['-h'], 'help', EXIT.OK],
      [[], 'none', EXIT.USAGE],
      [[''], 'none', EXIT.USAGE],
      [['shwo', 'secret'], 'unknown', EXIT.USAGE],
    ];
    for (const [words, command, code] of names) {
      expect(await run(...words), words.join(' ')).toMatchObject({ command, code });
    }
  });
});

describe('runCommandLine (the SSH door) says what it ran', () => {
  // Parsing, help, whoami and the account gate need no database.
  const deps = { log } as unknown as CoreDeps;
  const identity: Identity = { kind: 'anonymous', key: publicKeyOf(makeKey().publicKey) };

  it('the command line as the access log and metrics name it, never more of it', async () => {
    const lines: Array<[string, { code: number; command: string }]> = [
      ['whoami', { code: EXIT.OK, command: 'whoami' }],
      ['-- whoami --json', { code: EXIT.OK, command: 'whoami' }],
      ['create --label abcde', { code: EXIT.FAILED, command: 'create' }],
      ['create --bogus', { code: EXIT.USAGE, command: 'create' }],
      ['help create', { code: EXIT.OK, command: 'help' }],
      ['-- --help', { code: EXIT.OK, command: 'help' }],
      ['', { code: EXIT.USAGE, command: 'none' }],
      ["''", { code: EXIT.USAGE, command: 'none' }],
      ['hunter2 --label x', { code: EXIT.USAGE, command: 'unknown' }],
      ['create "unterminated', { code: EXIT.USAGE, command: 'unknown' }],
    ];
    for (const [line, ran] of lines) {
      expect(await runCommandLine(line, sshContext(deps, identity, buffers())), line).toEqual(ran);
      // A line that cannot run (its key's identity unreadable: the database away) counts under the same name.
      expect(commandNameOfLine(line), line).toBe(ran.command);
    }
  });
});

describe('on a real core', () => {
  let core: TestCore;
  let account: Identity;
  let email: string;
  beforeAll(async () => {
    core = await startTestCore();
    const user = await core.verifiedUser();
    email = user.email;
    account = await resolveSshIdentity(core.deps, user.publicKey);
  });
  afterAll(async () => {
    await core?.close();
  });

  describe('contexts: one factory per door, never changed', () => {
    it('an SSH context is frozen; reading the identity returns it afresh and leaves the context as it was', async () => {
      const user = await core.verifiedUser();
      const before: Identity = { kind: 'anonymous', key: user.publicKey };
      const ctx = sshContext(core.deps, before, buffers());
      expect(Object.isFrozen(ctx)).toBe(true);
      expect(ctx.inShell).toBe(false);
      expect(() => Object.assign(ctx, { identity: null })).toThrow(TypeError);
      expect((await ctx.readIdentity()).kind).toBe('account');
      expect(ctx.identity).toBe(before);
    });

    it('an admin context is frozen', () => {
      expect(Object.isFrozen(adminContext(core.deps, buffers()))).toBe(true);
    });
  });

  describe('--json for every command of both programs', () => {
    async function ssh(identity: Identity, line: string): Promise<Captured> {
      const io = buffers();
      const { code } = await runCommandLine(line, sshContext(core.deps, identity, io));
      return { code, stdout: io.out.join(''), stderr: io.err.join('') };
    }
    /** Exit 0 with one JSON value alone on stdout. */
    function jsonOf(result: Captured): unknown {
      expect(result.code, result.stderr).toBe(EXIT.OK);
      return JSON.parse(result.stdout);
    }

    it('every SSH command prints JSON with --json', async () => {
      const created = jsonOf(await ssh(account, 'create --label framework-json --json')) as { api_key_id: string };
      const orgs = jsonOf(await ssh(account, 'orgs --json'));
      const defaults = { max_ttl_seconds: null, permissions: null, require_security_key: false, http_minting: 'window', members_mint: true };
      expect(orgs).toEqual([{ org_id: expect.any(String), name: expect.any(String), role: expect.any(String), policy: defaults }]);
      const checks: Array<[string, (result: Captured) => void]> = [
        ['list --json', (r) => expect(jsonOf(r)).toEqual([expect.objectContaining({ id: created.api_key_id, state: 'active' })])],
        [`rotate ${created.api_key_id} --json`, (r) => expect(jsonOf(r)).toMatchObject({ success: true, replaces: created.api_key_id })],
        [`revoke ${created.api_key_id} --json`, (r) => expect(jsonOf(r)).toMatchObject({ success: true, id: created.api_key_id })],
        ['whoami --json', (r) => expect(jsonOf(r)).toMatchObject({ email, verified: true })],
        ['audit --json', (r) => expect(jsonOf(r)).toEqual(expect.arrayContaining([expect.objectContaining({ action: 'api_key.created', key_id: created.api_key_id })]))],
        [`login ${email} --json`, (r) => expect(jsonOf(r)).toEqual({ email, fingerprint: account.key.fingerprint, verified: true, orgs })],
        ['help --json', (r) => expect(jsonOf(r)).toEqual(COMMANDS.map((c) => ({ name: c.name, summary: c.summary })))],
        ['help create --json', (r) => expect(jsonOf(r)).toMatchObject({ name: 'create', usage: expect.stringMatching(/^create --label LABEL/) })],
        ['policy --json', (r) => expect(jsonOf(r)).toEqual({ org_id: expect.any(String), org_name: expect.any(String), ...defaults, managers: [email], role: 'admin' })],
        ['policy set max-ttl 30d --json', (r) => expect(jsonOf(r)).toMatchObject({ setting: 'max-ttl', old: 'none', new: '30d', changed: true, max_ttl_seconds: 30 * 86_400 })],
      ];
      for (const [line, check] of checks) check(await ssh(account, line));
      const covered = ['create', 'orgs', ...checks.map(([line]) => commandNameOfLine(line))];
      expect(COMMANDS.map((c) => c.name).filter((name) => !covered.includes(name))).toEqual([]);
    });

    it('a failure with --json prints nothing on stdout and says why on stderr, as without it', async () => {
      const anonymous: Identity = { kind: 'anonymous', key: publicKeyOf(makeKey().publicKey) };
      for (const line of ['create --label abcde', 'list', 'orgs']) {
        const plain = await ssh(anonymous, line);
        expect(plain.code, line).toBe(EXIT.FAILED);
        expect(await ssh(anonymous, `${line} --json`), line).toEqual({ ...plain, stdout: '' });
      }
      expect(await ssh(account, 'revoke no-such-key --json')).toEqual({
        code: EXIT.FAILED,
        stdout: '',
        stderr: 'error: no API key "no-such-key" that you can see (see "list")\n',
      });
      // whoami's advice to link the key is for a person: JSON says `verified: false` instead.
      const whoami = await ssh(anonymous, 'whoami');
      expect(whoami.stderr).toContain('is not linked to an account yet');
      expect(await ssh(anonymous, 'whoami --json')).toMatchObject({ code: EXIT.OK, stderr: '' });
    });

    it('every admin command prints JSON with --json; a core error prints nothing on stdout', async () => {
      const org = `json-${Date.now().toString(36)}`;
      const member = uniqueEmail('json-member');
      const minted = jsonOf(await ssh(account, 'create --label admin-json --json')) as { api_key_id: string; org_name: string };
      const checks: Array<[string[], (result: Captured) => void]> = [
        [['org', 'create', org, '--owner', uniqueEmail('json-owner')], (r) => expect(jsonOf(r)).toMatchObject({ name: org })],
        [['org', 'add-member', org, member, '--role', 'member'], (r) => expect(jsonOf(r)).toMatchObject({ org_name: org, email: member, role: 'member' })],
        [['org', 'remove-member', org, member], (r) => expect(jsonOf(r)).toMatchObject({ org_name: org, email: member, keys_revoked: 0 })],
        [['org', 'list'], (r) => expect(jsonOf(r)).toEqual(expect.arrayContaining([expect.objectContaining({ name: org, members: 1 })]))],
        [['org', 'policy', org], (r) => expect(jsonOf(r)).toMatchObject({ org_name: org, http_minting: 'window', members_mint: true })],
        [['org', 'policy', org, 'members-mint', 'false'], (r) => expect(jsonOf(r)).toMatchObject({ org_name: org, setting: 'members-mint', old: 'true', new: 'false', members_mint: false })],
        [['billing', 'set', org, 'suspended'], (r) => expect(jsonOf(r)).toMatchObject({ name: org, status: 'suspended' })],
        [['keys', 'list', '--org', minted.org_name], (r) => expect(jsonOf(r)).toEqual(expect.arrayContaining([expect.objectContaining({ id: minted.api_key_id })]))],
        [['keys', 'revoke', minted.api_key_id], (r) => expect(jsonOf(r)).toMatchObject({ id: minted.api_key_id })],
        [['audit', '--org', org], (r) => expect(jsonOf(r)).toEqual(expect.arrayContaining([expect.objectContaining({ action: 'org.created' })]))],
      ];
      for (const [words, check] of checks) check(await runAdmin(core.deps, ...words, '--json'));
      const covered = (name: string) => checks.some(([words]) => words.join(' ').startsWith(`${name} `) || words.join(' ') === name);
      expect(ADMIN_COMMANDS.map((c) => c.name).filter((name) => !covered(name))).toEqual([]);

      expect(await runAdmin(core.deps, 'billing', 'set', 'no-such-org-json', 'active', '--json')).toEqual({
        code: EXIT.FAILED,
        stdout: '',
        stderr: 'error: Organization not found\n',
      });
    });
  });
});
