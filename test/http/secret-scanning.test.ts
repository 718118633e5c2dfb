import { generateKeyPairSync, randomBytes, randomUUID, sign, verify, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findUserByEmail, mintApiKey, parseApiKey, rotateApiKey } from '../../src/core/index.js';
import { checksumHex } from '../../src/core/secrets.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { makeKey, uniqueEmail } from '../support/keys.js';

// GitHub's secret scanning partner program: GitHub posts the tokens it found in public, signed
// with ECDSA P-256 over the raw body; we revoke ours and answer which were ours. A key pair made
// here stands in for GitHub's, its public key in a file in GitHub's own format.

const ENDPOINT = '/api/secret-scanning/github';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-scanning-'));
const keysFile = path.join(dir, 'secret_scanning.json');

type GithubKey = { identifier: string; privateKey: KeyObject; publicPem: string };
function githubKey(): GithubKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return { identifier: randomBytes(32).toString('hex'), privateKey, publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

/** Replaces the file at once (rename), as a cron job refreshing it should. */
function writeKeysFile(keys: GithubKey[], text?: string): void {
  const body = text ?? JSON.stringify({ public_keys: keys.map((k, i) => ({ key_identifier: k.identifier, key: k.publicPem, is_current: i === 0 })) });
  const temp = `${keysFile}.${randomUUID()}`;
  fs.writeFileSync(temp, body);
  fs.renameSync(temp, keysFile);
}

const signatureOf = (body: string, key: GithubKey) => sign('sha256', Buffer.from(body), { key: key.privateKey, dsaEncoding: 'der' }).toString('base64');

const github = githubKey();
let t: TestApp;
beforeAll(async () => {
  writeKeysFile([github]);
  t = await startTestApp({ SECRET_SCANNING_KEYS_FILE: keysFile });
});
afterAll(async () => {
  await t?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** POSTs `body` as GitHub does, signed by `signer` (GitHub's key by default), naming `identifier`. */
function report(body: string, options: { signer?: GithubKey; identifier?: string | null; signature?: string | null } = {}) {
  const signer = options.signer ?? github;
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const identifier = options.identifier === undefined ? signer.identifier : options.identifier;
  const signature = options.signature === undefined ? signatureOf(body, signer) : options.signature;
  if (identifier !== null) headers['github-public-key-identifier'] = identifier;
  if (signature !== null) headers['github-public-key-signature'] = signature;
  return t.request(ENDPOINT, { method: 'POST', headers, body });
}

const match = (token: string, url = 'https://github.com/octo/app/blob/5f1e2b9/.env', source = 'commit') => ({ token, type: 'shell_auth_api_key', url, source });

/** A user with a key minted over HTTP (email confirmation, then api-keys), and a way to mint more. */
async function userWithKey(local: string) {
  const email = uniqueEmail(local);
  const sshKey = makeKey();
  await t.verifyByEmail(email, sshKey.publicKey);
  const minted = await t.post('/api/shell-auth/api-keys', { email, ssh_public_key: sshKey.publicKey, label: `${local}-first` });
  expect(minted.status).toBe(200);
  const user = (await findUserByEmail(t.app.deps.db, email))!;
  const another = async (label: string) =>
    (await mintApiKey(t.app.deps, { user, sshKeyId: null, label, origin: { channel: 'ssh', ip: '127.0.0.1' } })).api_key;
  return { email, apiKey: minted.body.api_key as string, apiKeyId: minted.body.api_key_id as string, another };
}

const whoami = (apiKey: string) => t.request('/api/whoami', { headers: { authorization: `Bearer ${apiKey}` } });

/** The revocation notices `email` received (its verification mail aside), once the outbox is empty. */
async function revocationMailsTo(email: string) {
  await t.mailSettled();
  return t.smtp.mailsTo(email).filter((m) => /revoked/i.test(m.subject));
}

/** A token in our format with a valid checksum: `id` and 56 hex digits of our choosing. */
function wellFormed(id: string, random = randomBytes(28).toString('hex')): string {
  const body = id + random;
  return body + checksumHex(body);
}

describe('POST /api/secret-scanning/github', () => {
  it('a live key reported: revoked at once (whoami 401), true_positive, its creator emailed with where it was found, audited; anything else is false_positive', async () => {
    const owner = await userWithKey('leaked');
    const untouched = await owner.another('not-reported');
    expect((await whoami(owner.apiKey)).status).toBe(200);

    const wrongSecret = wellFormed(owner.apiKeyId); // our key's id, a valid checksum, not its secret
    const unknownKey = wellFormed(randomUUID());
    const badChecksum = owner.apiKey.slice(0, 92) + (owner.apiKey.endsWith('0') ? '1' : '0').padStart(8, '0');
    const matches = [match(owner.apiKey), match('NMIfyYncKcRALEXAMPLE'), match(unknownKey), match(wrongSecret), match(badChecksum)];
    // Pretty-printed, as bytes: what is verified is the body as sent, not a re-serialisation of it.
    const body = JSON.stringify(matches, null, 2);
    const answer = await report(body);
    expect(answer.status, answer.text).toBe(200);
    expect(answer.body).toEqual([
      { token_raw: owner.apiKey, token_type: 'shell_auth_api_key', label: 'true_positive' },
      { token_raw: 'NMIfyYncKcRALEXAMPLE', token_type: 'shell_auth_api_key', label: 'false_positive' },
      { token_raw: unknownKey, token_type: 'shell_auth_api_key', label: 'false_positive' },
      { token_raw: wrongSecret, token_type: 'shell_auth_api_key', label: 'false_positive' },
      { token_raw: badChecksum, token_type: 'shell_auth_api_key', label: 'false_positive' },
    ]);

    const after = await whoami(owner.apiKey);
    expect(after.status).toBe(401);
    expect(after.body).toEqual({ success: false, error: 'Invalid API key' });
    expect((await whoami(untouched)).status).toBe(200);

    const mails = await revocationMailsTo(owner.email);
    expect(mails).toHaveLength(1);
    expect(mails[0]!.subject).toBe(`API key found in public and revoked: "leaked-first"`);
    expect(mails[0]!.text).toContain(owner.apiKeyId);
    expect(mails[0]!.text).toContain('Where it was found: https://github.com/octo/app/blob/5f1e2b9/.env');
    expect(mails[0]!.text).toContain('Found in: commit (reported by GitHub secret scanning)');
    expect(mails[0]!.text).not.toContain(owner.apiKey); // never the secret

    const row = await t.app.deps.db.selectFrom('api_keys').select(['revoked_reason', 'revoked_by_user_id']).where('id', '=', owner.apiKeyId).executeTakeFirstOrThrow();
    expect(row).toEqual({ revoked_reason: 'leaked', revoked_by_user_id: null });
    const audit = t.app.deps.db.selectFrom('audit_events').select(['action', 'actor_user_id', 'channel', 'ip', 'details']);
    expect(await audit.where('action', '=', 'api_key.revoked').where('subject_id', '=', owner.apiKeyId).execute()).toEqual([
      {
        action: 'api_key.revoked',
        actor_user_id: null,
        channel: 'http',
        ip: '127.0.0.1',
        details: { label: 'leaked-first', reason: 'leaked', url: 'https://github.com/octo/app/blob/5f1e2b9/.env', source: 'commit', type: 'shell_auth_api_key' },
      },
    ]);
    // Only this file posts reports: the newest is this one.
    expect(await audit.where('action', '=', 'secret_scanning.reported').orderBy('created_at', 'desc').limit(1).execute()).toEqual([
      {
        action: 'secret_scanning.reported',
        actor_user_id: null,
        channel: 'http',
        ip: '127.0.0.1',
        details: { scanner: 'github', key_identifier: github.identifier, matches: 5, true_positives: 1, revoked: [owner.apiKeyId] },
      },
    ]);
    expect(t.logs.join('\n')).not.toContain(owner.apiKey);
  });

  it('several keys of one creator in one file: revoked together, one email naming them all', async () => {
    const owner = await userWithKey('batch');
    const second = await owner.another('batch-second');
    const answer = await report(JSON.stringify([match(owner.apiKey), match(second)]));
    expect(answer.body.map((r: { label: string }) => r.label)).toEqual(['true_positive', 'true_positive']);
    const mails = await revocationMailsTo(owner.email);
    expect(mails).toHaveLength(1);
    expect(mails[0]!.subject).toBe('API key found in public and revoked: "batch-first", "batch-second"');
  });

  it('a report received again (GitHub retrying, or a replay) gets the same answer and changes nothing; the same body with its signature re-encoded (s to n - s) too; a later report of the key finds it revoked: true_positive, no second email', async () => {
    const owner = await userWithKey('replay');
    const body = JSON.stringify([match(owner.apiKey)]);
    const signature = signatureOf(body, github);
    const first = await report(body, { signature });
    expect(first.body).toEqual([{ token_raw: owner.apiKey, token_type: 'shell_auth_api_key', label: 'true_positive' }]);

    const replayed = await report(body, { signature });
    expect(replayed.status).toBe(200);
    expect(replayed.body).toEqual(first.body);
    const reports = await t.app.deps.db.selectFrom('audit_events').select('details').where('action', '=', 'secret_scanning.reported').execute();
    // The replay was not processed: one report names the key.
    expect(reports.filter((r) => JSON.stringify(r.details).includes(owner.apiKeyId))).toHaveLength(1);

    // ECDSA's malleability: (r, n - s) verifies as well as (r, s). The replay memory is the body's.
    const malleated = malleate(signature);
    expect(malleated).not.toBe(signature);
    expect(verify('sha256', Buffer.from(body), { key: github.publicPem, dsaEncoding: 'der' }, Buffer.from(malleated, 'base64'))).toBe(true);
    const remalleated = await report(body, { signature: malleated });
    expect(remalleated.status).toBe(200);
    expect(remalleated.body).toEqual(first.body);

    // Another report (another place) of the same key: ours, already dead, nothing more to do.
    const again = await report(JSON.stringify([match(owner.apiKey, 'https://gist.github.com/octo/1', 'gist_content')]));
    expect(again.body).toEqual([{ token_raw: owner.apiKey, token_type: 'shell_auth_api_key', label: 'true_positive' }]);

    // A day later the report is forgotten: replayed then, it finds only a revoked key.
    let offsetMs = 25 * 3_600_000;
    t.app.deps.now = () => new Date(Date.now() + offsetMs);
    try {
      expect((await report(body, { signature })).body).toEqual([{ token_raw: owner.apiKey, token_type: 'shell_auth_api_key', label: 'true_positive' }]);
    } finally {
      offsetMs = 0;
      delete t.app.deps.now;
    }

    expect(await revocationMailsTo(owner.email)).toHaveLength(1);
    const revocations = await t.app.deps.db.selectFrom('audit_events').select('id').where('action', '=', 'api_key.revoked').where('subject_id', '=', owner.apiKeyId).execute();
    expect(revocations).toHaveLength(1);
  });

  it('keys made from a leaked key by self-rotation die with it, even after the leaked key expired; a rotation over SSH (a person who proved who they are) does not', async () => {
    const owner = await userWithKey('lineage');
    const rotateWith = async (apiKey: string) => {
      const answer = await t.request('/api/api-keys/rotate', { method: 'POST', headers: { authorization: `Bearer ${apiKey}` } });
      expect(answer.status, answer.text).toBe(200);
      return answer.body as { api_key: string; api_key_id: string };
    };
    // The leaked key renewed itself twice (as whoever found it could have): a line of three.
    const child = await rotateWith(owner.apiKey);
    const grandchild = await rotateWith(child.api_key);
    // Another key of the owner, rotated over SSH by the owner: its successor is the owner's own.
    const other = await owner.another('lineage-other');
    const user = (await findUserByEmail(t.app.deps.db, owner.email))!;
    const bySsh = await rotateApiKey(t.app.deps, { actor: user, keyId: parseApiKey(other)!.id, overlapMs: 0, origin: { channel: 'ssh', ip: '127.0.0.1' } });

    // The first key is reported once its overlap is long over: it is dead already, its line is not.
    let offsetMs = 2 * 3_600_000;
    t.app.deps.now = () => new Date(Date.now() + offsetMs);
    try {
      const answer = await report(JSON.stringify([match(owner.apiKey), match(other)]));
      expect(answer.body.map((r: { label: string }) => r.label)).toEqual(['true_positive', 'true_positive']);
      expect((await whoami(grandchild.api_key)).status).toBe(401);
      expect((await whoami(bySsh.api_key)).status).toBe(200);
    } finally {
      offsetMs = 0;
      delete t.app.deps.now;
    }
    const mails = await revocationMailsTo(owner.email);
    expect(mails).toHaveLength(1);
    expect(mails[0]!.text).toContain('Revoked with it, because whoever found it could have made them from it');
    expect(mails[0]!.text).toContain(grandchild.api_key_id);
    const row = await t.app.deps.db.selectFrom('api_keys').select(['revoked_reason']).where('id', '=', grandchild.api_key_id).executeTakeFirstOrThrow();
    expect(row.revoked_reason).toBe('leaked');
  });

  it('refused with 401 and nothing done: a signature by another key, a body changed after signing, an unknown key identifier, missing headers, a signature that is not one', async () => {
    const owner = await userWithKey('forged');
    const body = JSON.stringify([match(owner.apiKey)]);
    const signatureInvalid = { success: false, error: 'Github-Public-Key-Signature does not verify over the request body' };

    const impostor = githubKey();
    const forged = await report(body, { signer: impostor, identifier: github.identifier });
    expect(forged.status).toBe(401);
    expect(forged.body).toEqual(signatureInvalid);

    const changed = await report(body.replace('"commit"', '"content"'), { signature: signatureOf(body, github) });
    expect(changed.status).toBe(401);
    expect(changed.body).toEqual(signatureInvalid);

    const unknownKey = await report(body, { signer: impostor });
    expect(unknownKey.status).toBe(401);
    expect(unknownKey.body).toEqual({ success: false, error: 'Github-Public-Key-Identifier names no key in SECRET_SCANNING_KEYS_FILE' });

    const unsigned = { success: false, error: 'Unsigned report: send Github-Public-Key-Identifier and Github-Public-Key-Signature' };
    for (const headers of [{ signature: null }, { identifier: null }, { identifier: null, signature: null }]) {
      const answer = await report(body, headers);
      expect(answer.status).toBe(401);
      expect(answer.body).toEqual(unsigned);
    }
    for (const garbage of ['not base64!', 'AAAA', Buffer.from('x'.repeat(72)).toString('base64')]) {
      expect((await report(body, { signature: garbage })).body).toEqual(signatureInvalid);
    }

    expect((await whoami(owner.apiKey)).status).toBe(200);
    expect(await revocationMailsTo(owner.email)).toHaveLength(0);
  });

  it('bounded: more than 1000 matches, a body over 512 KB, or not an array of matches is 400', async () => {
    const tooMany = JSON.stringify(Array.from({ length: 1001 }, (_, i) => match(`token${i}`)));
    const many = await report(tooMany);
    expect(many.status).toBe(400);
    expect(many.body).toEqual({
      success: false,
      error: 'Invalid secret scanning report: expected a JSON array of {token, type, url, source}',
      detail: 'at most 1000 matches per report',
    });
    const thousand = await report(JSON.stringify(Array.from({ length: 1000 }, (_, i) => match(`token${i}`))));
    expect(thousand.status).toBe(200);
    expect(thousand.body).toHaveLength(1000);

    const huge = await report(JSON.stringify([match('x'.repeat(600 * 1024))]), { signature: 'AAAA' });
    expect(huge.status).toBe(400);
    expect(huge.body).toEqual({ success: false, error: 'Secret scanning report too large (limit 512 KB)' });

    const notArray = await report(JSON.stringify(match('token')));
    expect(notArray.status).toBe(400);
    expect(notArray.body.error).toBe('Invalid secret scanning report: expected a JSON array of {token, type, url, source}');
    const noToken = await report(JSON.stringify([{ type: 'x', url: '', source: 'content' }]));
    expect(noToken.body.detail).toBe('0.token: is required');
    const notJson = await report('[{"token":');
    expect(notJson.body).toEqual({ success: false, error: 'Invalid secret scanning report: expected a JSON array of {token, type, url, source}', detail: 'the body is not JSON' });
  });

  it('GitHub adds a key: the file replaced with it is read again, no restart; a broken file keeps the keys in force', async () => {
    const owner = await userWithKey('rotated');
    const next = githubKey();
    expect((await report('[]', { signer: next })).status).toBe(401); // not in the file yet
    writeKeysFile([next, github]);
    const withNewKey = await report(JSON.stringify([match(owner.apiKey)]), { signer: next });
    expect(withNewKey.status, withNewKey.text).toBe(200);
    expect(withNewKey.body[0].label).toBe('true_positive');

    writeKeysFile([], '{"public_keys": [');
    expect((await report('[]', { signer: githubKey() })).status).toBe(401);
    expect(t.logs.some((line) => line.includes('SECRET_SCANNING_KEYS_FILE changed but cannot be used'))).toBe(true);
    expect((await report('[]', { signer: next })).status).toBe(200);
    expect((await report('[ ]', { signer: github })).status).toBe(200);
    writeKeysFile([github]);
  });
});

describe('without SECRET_SCANNING_KEYS_FILE', () => {
  let off: TestApp;
  beforeAll(async () => {
    off = await startTestApp({}, { smtp: t.smtp });
  });
  afterAll(async () => {
    await off?.close();
  });

  it('the endpoint is off: the very 404 of a path that does not exist, for any method', async () => {
    const body = JSON.stringify([match('x')]);
    const headers = { 'content-type': 'application/json', 'github-public-key-identifier': github.identifier, 'github-public-key-signature': signatureOf(body, github) };
    const unknown = await off.request('/api/no-such-endpoint', { method: 'POST', headers, body });
    expect(unknown.status).toBe(404);
    for (const method of ['POST', 'GET']) {
      const answer = await off.request(ENDPOINT, { method, headers, ...(method === 'POST' ? { body } : {}) });
      expect(answer.status).toBe(404);
      expect(answer.text).toBe(unknown.text);
    }
  });
});

/** The same ECDSA signature, re-encoded with s replaced by n - s (P-256's group order n). */
function malleate(signatureBase64: string): string {
  const der = Buffer.from(signatureBase64, 'base64');
  const n = BigInt('0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551');
  let offset = 2;
  const readInt = () => {
    const length = der[offset + 1]!;
    const value = BigInt(`0x${der.subarray(offset + 2, offset + 2 + length).toString('hex')}`);
    offset += 2 + length;
    return value;
  };
  const r = readInt();
  const s = readInt();
  const encode = (value: bigint) => {
    let hex = value.toString(16);
    if (hex.length % 2) hex = `0${hex}`;
    if (parseInt(hex.slice(0, 2), 16) >= 0x80) hex = `00${hex}`;
    const bytes = Buffer.from(hex, 'hex');
    return Buffer.concat([Buffer.from([0x02, bytes.length]), bytes]);
  };
  const sequence = Buffer.concat([encode(r), encode(n - s)]);
  return Buffer.concat([Buffer.from([0x30, sequence.length]), sequence]).toString('base64');
}

describe('a sender that fails to sign', () => {
  let limited: TestApp;
  beforeAll(async () => {
    limited = await startTestApp({ SECRET_SCANNING_KEYS_FILE: keysFile, HTTP_LOOKUPS_PER_MINUTE: '3' });
  });
  afterAll(async () => {
    await limited?.close();
  });

  it('is answered 429 once its failures are over the lookup budget, before its body is read', async () => {
    const body = JSON.stringify([match('not-a-key')]);
    const send = (signature: string) =>
      limited.request(ENDPOINT, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'github-public-key-identifier': github.identifier, 'github-public-key-signature': signature },
        body,
      });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await send(signatureOf(`${body} `, github))).status);
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
    // Refused before verifying: even a good signature waits for the window to pass.
    expect((await send(signatureOf(body, github))).status).toBe(429);
  });
});
