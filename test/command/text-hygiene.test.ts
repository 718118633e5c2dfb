import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/command/framework.js';
import { resolveSshIdentity, type Identity } from '../../src/core/index.js';
import { escapeForTerminal, formatTable } from '../../src/text/table.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { startTestCore, type TestCore } from '../support/core.js';
import { runAdmin, runSshLine } from '../support/in-process.js';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { escaped, RAW_UNSAFE, REFUSAL, UNSAFE_CHARS } from '../support/unsafe-chars.js';

// Every stored human string (label, org name, note, key comment) refuses control, bidi,
// invisible (format, default-ignorable), blank, private-use and noncharacter code points and
// broken UTF-16, at every door; and whatever is already stored reaches a terminal escaped.

const NEW_CLASSES = UNSAFE_CHARS.filter((c) => !c.isC0);

describe('over HTTP: a 400 whose detail names the field and the character', () => {
  let t: TestApp;
  const key = makeKey('ed25519', undefined, 'hygiene@host');
  const email = uniqueEmail('hygiene');
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t?.close();
  });

  type Case = {
    field: string;
    path: string;
    error: string;
    body(char: string): Record<string, unknown>;
    chars: typeof UNSAFE_CHARS;
    detail(codePoint: string): string;
  };
  const CASES: Case[] = [
    {
      field: 'label',
      path: '/api/shell-auth/api-keys',
      error: 'Invalid request',
      body: (char) => ({ email, ssh_public_key: key.publicKey, label: `my-${char}laptop` }),
      chars: UNSAFE_CHARS,
      detail: (cp) => `label: ${REFUSAL} (${cp})`,
    },
    {
      field: 'org_name',
      path: '/api/shell-auth/api-keys',
      error: 'Invalid request',
      body: (char) => ({ email, ssh_public_key: key.publicKey, label: 'my-laptop', org_name: `acme${char}corp` }),
      chars: UNSAFE_CHARS,
      detail: (cp) => `org_name: ${REFUSAL} (${cp})`,
    },
    {
      // The note keeps turning C0 controls into spaces (clients send hostnames); the rest is refused.
      field: 'body',
      path: '/api/shell-auth',
      error: 'Invalid email or SSH key format',
      body: (char) => ({ email, ssh_public_key: key.publicKey, body: `vers login from ${char}laptop` }),
      chars: NEW_CLASSES,
      detail: (cp) => `body: ${REFUSAL} (${cp})`,
    },
    {
      field: 'ssh_public_key (comment)',
      path: '/api/shell-auth/verify-public-key',
      error: 'Invalid email or SSH key format',
      body: (char) => ({ ssh_public_key: `${key.publicKey.split(' ').slice(0, 2).join(' ')} me${char}@laptop` }),
      chars: UNSAFE_CHARS,
      detail: (cp) => `ssh_public_key: comment ${REFUSAL} (${cp})`,
    },
  ];

  for (const c of CASES) {
    describe(c.field, () => {
      it.each(c.chars)('refuses $what', async ({ char, codePoint }) => {
        const res = await t.post(c.path, c.body(char));
        expect(res.status, res.text).toBe(400);
        expect(res.body).toEqual({ success: false, error: c.error, detail: c.detail(codePoint) });
      });
    });
  }

  it('the note still turns control characters and newlines into spaces', async () => {
    const noteEmail = uniqueEmail('hygiene-note');
    const res = await t.post('/api/shell-auth', {
      email: noteEmail,
      ssh_public_key: makeKey().publicKey,
      body: 'vers login\r\nfrom\u001bhost\u007fname',
    });
    expect(res.status, res.text).toBe(200);
    const mail = await t.smtp.waitForMail(noteEmail);
    expect(mail.text).toContain('vers login from host name');
  });
});

describe('in-process doors: SSH exit 1, admin usage error', () => {
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

  const SSH_LINES: Array<[string, (char: string) => string]> = [
    ['create --label', (char) => `create --label 'my-${char}laptop'`],
    ['create --org', (char) => `create --label my-laptop --org 'acme${char}corp'`],
    ['list --org', (char) => `list --org 'acme${char}corp'`],
  ];
  for (const [what, line] of SSH_LINES) {
    it.each(UNSAFE_CHARS)(`ssh ${what} refuses $what as a usage error naming the flag`, async ({ char, codePoint }) => {
      const result = await runSshLine(core.deps, account, line(char));
      expect(result).toMatchObject({ code: EXIT.USAGE, stdout: '' });
      expect(result.stderr.startsWith(`error: ${what.split(' ')[1]} ${REFUSAL} (${codePoint})\nusage: `)).toBe(true);
    });
  }

  it('ssh create still takes ordinary text: accents, CJK, emoji (surrogate pairs), plain spaces', async () => {
    const result = await runSshLine(core.deps, account, `create --label 'José’s 東京 🚀 laptop' --json`);
    expect(result.code, result.stderr).toBe(EXIT.OK);
    const listed = JSON.parse((await runSshLine(core.deps, account, 'list --json')).stdout) as Array<{ id: string; label: string }>;
    expect(listed.find((k) => k.id === JSON.parse(result.stdout).api_key_id)?.label).toBe('José’s 東京 🚀 laptop');
  });

  const ADMIN_WORDS: Array<[string, string, (name: string) => string[]]> = [
    ['org create NAME', 'NAME', (name) => ['org', 'create', name, '--owner', 'owner@example.com']],
    ['org add-member ORG', 'ORG', (name) => ['org', 'add-member', name, 'member@example.com', '--role', 'member']],
    ['billing set ORG', 'ORG', (name) => ['billing', 'set', name, 'active']],
    ['keys list --org', '--org', (name) => ['keys', 'list', '--org', name]],
  ];
  for (const [what, argument, words] of ADMIN_WORDS) {
    it.each(UNSAFE_CHARS)(`admin ${what} refuses $what as a usage error naming ${argument}`, async ({ char, codePoint }) => {
      const result = await runAdmin(core.deps, ...words(`acme${char}corp`));
      expect(result.code).toBe(EXIT.USAGE);
      expect(result.stdout).toBe('');
      expect(result.stderr.split('\n')[0]).toBe(`error: ${argument} ${REFUSAL} (${codePoint})`);
    });
  }
});

describe('output: rows stored before these rules reach the terminal escaped', () => {
  let core: TestCore;
  beforeAll(async () => {
    core = await startTestCore();
  });
  afterAll(async () => {
    await core?.close();
  });

  // Right-to-left override, an ANSI "clear screen", a C1 CSI and a zero-width space.
  const EVIL = '\u202e\u001b[2J\u009b\u200b';
  const SHOWN = String.raw`\u202e\u001b[2J\u009b\u200b`;

  it('list, orgs, whoami, create, revoke and the admin listings escape labels, org names and emails', async () => {
    const user = await core.verifiedUser();
    let account = await resolveSshIdentity(core.deps, user.publicKey);
    const created = await runSshLine(core.deps, account, 'create --label clean-label');
    expect(created.code, created.stderr).toBe(EXIT.OK);
    const keyId = created.stdout.slice(0, 36);

    // Written straight into the database, as an older version (or anything else) could have.
    const stamp = Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
    const label = `lbl${EVIL}${stamp}`;
    const orgName = `org${EVIL}${stamp}`;
    const email = `u${EVIL}${stamp}@example.com`;
    const key = await core.deps.db.selectFrom('api_keys').select('org_id').where('id', '=', keyId).executeTakeFirstOrThrow();
    await core.deps.db.updateTable('api_keys').set({ label }).where('id', '=', keyId).execute();
    await core.deps.db.updateTable('orgs').set({ name: orgName }).where('id', '=', key.org_id).execute();
    if (account.kind !== 'account') throw new Error('not an account');
    await core.deps.db.updateTable('users').set({ email }).where('id', '=', account.user.id).execute();
    account = await resolveSshIdentity(core.deps, user.publicKey);

    const shownLabel = `lbl${SHOWN}${stamp}`;
    const shownOrg = `org${SHOWN}${stamp}`;
    const shownEmail = `u${SHOWN}${stamp}@example.com`;
    const expectEscaped = (text: string, ...shown: string[]) => {
      expect(text).not.toMatch(RAW_UNSAFE);
      for (const s of shown) expect(text).toContain(s);
    };

    const list = await runSshLine(core.deps, account, 'list');
    expect(list.code).toBe(EXIT.OK);
    // The plain table cuts long cells (after escaping: an escape is never half shown raw); --wide shows them whole.
    expectEscaped(list.stdout);
    expectEscaped((await runSshLine(core.deps, account, 'list --wide')).stdout, shownLabel, shownOrg, shownEmail);
    const orgs = await runSshLine(core.deps, account, 'orgs');
    expectEscaped(orgs.stdout, shownOrg);
    const whoami = await runSshLine(core.deps, account, 'whoami');
    expectEscaped(whoami.stdout, `email:    ${shownEmail}\n`);
    const second = await runSshLine(core.deps, account, 'create --label second-key');
    expect(second.code, second.stderr).toBe(EXIT.OK);
    expectEscaped(second.stderr, `in org ${shownOrg} (`);

    // JSON stays as is: JSON escapes on its own.
    const listed = JSON.parse((await runSshLine(core.deps, account, 'list --json')).stdout) as Array<{ id: string; label: string; org_name: string }>;
    expect(listed.find((k) => k.id === keyId)).toMatchObject({ label, org_name: orgName });
    expect(JSON.parse((await runSshLine(core.deps, account, 'whoami --json')).stdout).email).toBe(email);

    const keysList = await runAdmin(core.deps, 'keys', 'list', '--wide');
    expect(keysList.code).toBe(EXIT.OK);
    expectEscaped(keysList.stdout, shownLabel, shownOrg, shownEmail);
    expectEscaped((await runAdmin(core.deps, 'keys', 'list')).stdout);
    const orgList = await runAdmin(core.deps, 'org', 'list');
    expectEscaped(orgList.stdout, shownOrg);
    const adminJson = JSON.parse((await runAdmin(core.deps, 'keys', 'list', '--json')).stdout) as Array<{ id: string; label: string }>;
    expect(adminJson.find((k) => k.id === keyId)?.label).toBe(label);

    const revoked = await runSshLine(core.deps, account, `revoke ${keyId}`);
    expect(revoked.code).toBe(EXIT.OK);
    expectEscaped(revoked.stdout, `(${shownLabel}) in org ${shownOrg}\n`);
    const secondId = second.stdout.slice(0, 36);
    const adminRevoked = await runAdmin(core.deps, 'keys', 'revoke', secondId);
    expect(adminRevoked.code).toBe(EXIT.OK);
    expectEscaped(adminRevoked.stdout, `in org ${shownOrg}\n`);
  });
});

describe('escapeForTerminal and formatTable', () => {
  it.each(UNSAFE_CHARS)('escapes $what as \\uXXXX', ({ char }) => {
    expect(escapeForTerminal(`a${char}b`)).toBe(`a${escaped(char)}b`);
    expect(formatTable(['H'], [[`a${char}b`]])).toBe(`H\na${escaped(char)}b`);
  });

  it('leaves ordinary text alone: accents, CJK, emoji (surrogate pairs), backslashes', () => {
    for (const text of ['José’s laptop', '東京オフィス', 'ci 🚀 runner', 'C:\\keys', 'tab-free text']) {
      expect(escapeForTerminal(text)).toBe(text);
    }
  });

  it('pads columns by the escaped width', () => {
    expect(formatTable(['A', 'B'], [['x\u202ey', '1'], ['long-cell', '2']])).toBe(
      ['A          B', 'x\\u202ey   1', 'long-cell  2'].join('\n'),
    );
  });
});
