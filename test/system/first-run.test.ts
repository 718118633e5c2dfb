import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApp, type App } from '../../src/process/app.js';
import { loadConfig } from '../../src/config/config.js';
import { createLogger } from '../../src/observability/log.js';
import { openTestDatabase } from '../support/database.js';
import { confirmForm, startTestApp, tokenOf, type TestApp } from '../support/app.js';
import { makeKey, uniqueEmail, type TestKey } from '../support/keys.js';
import { openssh } from '../support/ssh.js';

// What a new user and an operator meet first (issue 17): a confirmed link opened again, the
// development outbox, the email's wording, the root page, HTTP_TRUST_WINDOW=0, and the audit of a
// signed request. Real SMTP, real HTTP, the real OpenSSH client and ssh-keygen.

const README = fs.readFileSync(path.resolve(import.meta.dirname, '..', '..', 'README.md'), 'utf8');

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

/** The page's words, without its style sheet and tags, as a person reads them. */
const textOf = (html: string) => html.replace(/<style>[\s\S]*?<\/style>/g, '').replace(/<[^>]+>/g, '').replace(/\s+/g, ' ');

/** `ssh-keygen -Y sign` over a fresh challenge: the README's recipe for a signed request. */
async function proofFor(base: TestApp, key: TestKey): Promise<{ challenge: string; ssh_signature: string }> {
  const issued = await base.post('/api/shell-auth/challenge', { ssh_public_key: key.publicKey });
  expect(issued.status).toBe(200);
  const signature = execFileSync('ssh-keygen', ['-Y', 'sign', '-n', issued.body.namespace, '-f', key.privateKeyPath], {
    input: issued.body.message,
    stdio: ['pipe', 'pipe', 'ignore'],
  }).toString();
  return { challenge: issued.body.challenge, ssh_signature: signature };
}

describe('a confirmed link opened again', () => {
  it('says it was already confirmed, when, and that nothing more is needed (GET and a second Confirm); a cancelled one keeps its message', async () => {
    const email = uniqueEmail('again');
    const key = makeKey();
    expect((await t.post('/api/shell-auth', { email, ssh_public_key: key.publicKey })).status).toBe(200);
    const token = tokenOf((await t.smtp.waitForMail(email)).link!);
    expect((await t.request('/shell-auth/verify', confirmForm(token))).status).toBe(200);
    const row = await t.app.deps.db.selectFrom('verification_requests').select('consumed_at').where('email', '=', email).executeTakeFirstOrThrow();
    const when = new Date(row.consumed_at!).toUTCString().replace(/GMT$/, 'UTC');

    for (const again of [await t.request(`/shell-auth/verify?token=${token}`), await t.request('/shell-auth/verify', confirmForm(token))]) {
      expect(again.status).toBe(410); // the link itself is spent
      const text = textOf(again.text);
      expect(text).toContain('Already confirmed');
      expect(text).toContain(`This link was already confirmed, on ${when} (less than a minute ago): the key ${key.fingerprint} was linked to ${email} then.`);
      expect(text).toContain('Nothing more is needed: you can close this page.');
      expect(text).not.toContain('Start again');
      expect(again.text).not.toContain('<form');
    }

    const cancelledEmail = uniqueEmail('cancelled');
    expect((await t.post('/api/shell-auth', { email: cancelledEmail, ssh_public_key: makeKey().publicKey })).status).toBe(200);
    const cancelToken = tokenOf((await t.smtp.waitForMail(cancelledEmail)).link!);
    const cancel = { ...confirmForm(cancelToken), body: new URLSearchParams({ token: cancelToken, answer: 'cancel' }).toString() };
    expect((await t.request('/shell-auth/verify', cancel)).status).toBe(200);
    const reopened = await t.request(`/shell-auth/verify?token=${cancelToken}`);
    expect(reopened.status).toBe(410);
    expect(textOf(reopened.text)).toContain('Request cancelled');
    expect(textOf(reopened.text)).toContain('This verification request was cancelled.');
    expect(reopened.text).not.toContain('Already confirmed');
  });
});

describe('the development outbox and the email', () => {
  let work: string;
  let app: App | undefined;
  afterAll(async () => {
    await app?.close();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it("the README's `tail -1 data/outbox/links.txt` prints the link, ready to open", async () => {
    const command = /`(tail -1 data\/outbox\/links\.txt)`/.exec(README)?.[1];
    expect(command).toBe('tail -1 data/outbox/links.txt');
    // As `npm start` runs with no SMTP_URL: DATA_DIR=./data, mail written to its outbox.
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-first-run-'));
    const config = loadConfig({
      HOST: '127.0.0.1',
      HTTP_PORT: '0',
      SSH_PORT: '0',
      DATA_DIR: path.join(work, 'data'),
      HOST_KEYS_DIR: path.join(work, 'host_keys'),
      LOG_LEVEL: 'warn',
    });
    const sink = new Writable({ write: (_chunk, _encoding, callback) => callback() });
    app = await startApp(config, createLogger(config.logLevel, sink), { database: await openTestDatabase() });
    app.deps.settings.publicUrl = app.httpUrl;
    for (const who of ['first', 'second']) {
      const res = await fetch(`${app.httpUrl}/api/shell-auth`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: uniqueEmail(who), ssh_public_key: makeKey().publicKey }),
      });
      expect(res.status).toBe(200);
    }
    const links = path.join(work, 'data', 'outbox', 'links.txt');
    for (let i = 0; i < 400 && !(fs.existsSync(links) && fs.readFileSync(links, 'utf8').split('\n').length > 2); i++) {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    const printed = execFileSync('bash', ['-c', command!], { cwd: work, encoding: 'utf8' });
    expect(printed).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/shell-auth\/verify\?token=[A-Za-z0-9_-]{43}\n$/);
    const page = await fetch(printed.trim());
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('Confirm your SSH key');
  });

  it('the email and the terminal give the link one lifetime, in the same words: 10 minutes', async () => {
    const email = uniqueEmail('wording');
    const key = makeKey();
    const login = openssh(t.app.sshPort, key.privateKeyPath, ['login', email]);
    const mail = await t.smtp.waitForMail(email);
    expect((await t.request('/shell-auth/verify', confirmForm(tokenOf(mail.link!)))).status).toBe(200);
    const { stderr } = await login;
    expect(stderr).toContain('(the link expires in 10 minutes;');
    expect(mail.text).toContain('To confirm, open this link within 10 minutes and press "Confirm":');
    expect(textOf(mail.html)).toContain('To confirm, open this link within 10 minutes and press “Confirm”');
  });
});

describe('GET /', () => {
  const browser = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8';

  it('a browser gets a page saying what this is, the SSH command (which works, as printed) and the API', async () => {
    const page = await t.request('/', { headers: { accept: browser } });
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-security-policy')).toContain("default-src 'none'");
    const text = textOf(page.text);
    expect(text).toContain('Turns an SSH key pair into an API key');
    expect(text).toContain(`${t.app.sshHint} login you@example.com`);
    expect(text).toContain(`${t.app.sshHint} create --label my-laptop`);
    expect(text).toContain(`${t.url}/api/shell-auth:`);
    expect(text).toContain(`${t.url}/api/shell-auth/api-keys`);

    // The command as the page prints it, run with the real OpenSSH client (asynchronously: the server is in this process).
    const printed = /<pre><code>(ssh [^<]*?) login you@example\.com/.exec(page.text)?.[1];
    expect(printed).toBe(t.app.sshHint);
    const key = makeKey();
    const options = ['-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-i', key.privateKeyPath];
    const help = await promisify(execFile)('ssh', [...options, ...printed!.split(' ').slice(1), 'help'], { encoding: 'utf8', timeout: 20_000 });
    expect(help.stdout).toContain('login');
  });

  it('curl (Accept: */*) gets the page; a client asking for JSON gets the JSON 404 of any unknown path, byte for byte', async () => {
    expect((await t.request('/', { headers: { accept: '*/*' } })).status).toBe(200);
    expect((await t.request('/')).status).toBe(200);
    const unknown = await t.request('/nothing-here', { headers: { accept: 'application/json' } });
    for (const accept of ['application/json', 'application/json, text/plain, */*', 'text/html;q=0.5, application/json']) {
      const json = await t.request('/', { headers: { accept } });
      expect(json.status, accept).toBe(404);
      expect(json.text).toBe('{"success":false,"error":"Not found"}');
      expect(json.text).toBe(unknown.text);
      expect(json.headers.get('content-type')).toBe('application/json; charset=utf-8');
    }
    // Naming HTML at least as high as JSON is a page.
    expect((await t.request('/', { headers: { accept: 'application/json, text/html' } })).status).toBe(200);
  });
});

describe('HTTP_TRUST_WINDOW=0: the words and the behaviour agree', () => {
  it('no email window, so unsigned requests mint nothing; a signed request still mints; the log and the README say exactly that', async () => {
    const off = await startTestApp({ HTTP_TRUST_WINDOW: '0' }, { smtp: t.smtp });
    try {
      const line = off.logs.find((l) => l.includes('HTTP_TRUST_WINDOW=0'));
      expect(line).toBeDefined();
      expect(line).not.toContain('API key creation over HTTP is off');
      expect(line).toContain('unsigned HTTP requests mint no API keys');
      expect(line).toContain('requests signed with the key (challenge + ssh_signature) and the SSH door still do');

      const email = uniqueEmail('windowoff');
      const key = makeKey();
      await off.verifyByEmail(email, key.publicKey);
      const pair = { email, ssh_public_key: key.publicKey };
      // Unsigned: refused, with the same bytes as before this change.
      const unsigned = await off.post('/api/shell-auth/api-keys', { ...pair, label: 'unsigned-key' });
      expect(unsigned.status).toBe(401);
      expect(unsigned.body.error).toBe('API key creation over HTTP is disabled on this server: use the SSH door');
      expect((await off.post('/api/shell-auth/verify-key', pair)).status).toBe(401);
      // Signed: minted, and the key works.
      const signed = await off.post('/api/shell-auth/api-keys', { ...pair, label: 'signed-key', ...(await proofFor(off, key)) });
      expect(signed.status, signed.text).toBe(200);
      expect((await off.request('/api/whoami', { headers: { authorization: `Bearer ${signed.body.api_key}` } })).status).toBe(200);
    } finally {
      await off.close();
    }
    expect(README).not.toContain('turns HTTP minting off entirely');
    expect(README).toContain('`HTTP_TRUST_WINDOW=0` opens no window at all: unsigned HTTP requests never mint');
    expect(README).toContain('[signed request](#signed-requests-proof-of-possession-over-http) still mints');
  });
});

describe('the audit of a proof', () => {
  it('a signed POST /api/shell-auth that proves an HTTP-linked key records proof "sshsig"; an SSH login records "ssh"', async () => {
    const proofsOf = async (key: TestKey) => {
      const sshKey = await t.app.deps.db.selectFrom('ssh_keys').select('id').where('key_blob', '=', key.publicKey.split(' ')[1]!).executeTakeFirstOrThrow();
      const rows = await t.app.deps.db.selectFrom('audit_events').selectAll().where('action', '=', 'ssh_key.proven').where('subject_id', '=', sshKey.id).execute();
      return rows.map((row) => ({ channel: row.channel, proof: (typeof row.details === 'string' ? JSON.parse(row.details) : row.details).proof }));
    };

    const email = uniqueEmail('sshsig');
    const key = makeKey();
    await t.verifyByEmail(email, key.publicKey); // linked over HTTP: an inbox proven, not the key
    const signed = await t.post('/api/shell-auth', { email, ssh_public_key: key.publicKey, ...(await proofFor(t, key)) });
    expect(signed.status).toBe(200);
    expect(signed.body.already_verified).toBe(true);
    expect(await proofsOf(key)).toEqual([{ channel: 'http', proof: 'sshsig' }]);

    const viaSsh = uniqueEmail('sshproof');
    const sshKey = makeKey();
    await t.verifyByEmail(viaSsh, sshKey.publicKey);
    expect((await openssh(t.app.sshPort, sshKey.privateKeyPath, ['login', viaSsh])).code).toBe(0);
    expect(await proofsOf(sshKey)).toEqual([{ channel: 'ssh', proof: 'ssh' }]);
  });
});
