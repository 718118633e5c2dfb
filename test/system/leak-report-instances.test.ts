import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { confirmForm, tokenOf } from '../support/app.js';
import { freshPostgresUrl } from '../support/database.js';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { killSpawnedServices, listeningOf, outputMatching, spawnService } from '../support/service.js';
import { startSmtpServer, type SmtpServer } from '../support/smtp.js';

// A leak reported to one instance reaches every instance's whoami cache at once (NOTIFY on the
// revocation's commit): two spawned instances on one Postgres, API_KEY_CACHE_TTL at its default
// (30 s), a P-256 key pair made here standing in for GitHub's.

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-leaks-'));
const github = (() => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return { identifier: randomBytes(32).toString('hex'), privateKey, publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
})();
const keysFile = path.join(work, 'secret_scanning.json');
fs.writeFileSync(keysFile, JSON.stringify({ public_keys: [{ key_identifier: github.identifier, key: github.publicPem, is_current: true }] }));

let smtp: SmtpServer;
let databaseUrl: string;
beforeAll(async () => {
  smtp = await startSmtpServer();
  databaseUrl = await freshPostgresUrl();
});
afterAll(async () => {
  killSpawnedServices();
  await smtp?.close();
  fs.rmSync(work, { recursive: true, force: true });
});

const serviceEnv = (extra: Record<string, string> = {}) => ({
  DATABASE_URL: databaseUrl,
  SMTP_URL: smtp.url,
  SECRET_SCANNING_KEYS_FILE: keysFile,
  MAIL_PER_IP_HOURLY: '0',
  HTTP_LOOKUPS_PER_MINUTE: '0',
  ...extra,
});

const postJson = (url: string, body: unknown) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
const whoamiStatus = async (base: string, apiKey: string) => (await fetch(`${base}/api/whoami`, { headers: { authorization: `Bearer ${apiKey}` } })).status;

describe('a leak reported to one instance', () => {
  it('is a 401 on the other instance within a second (its whoami cache told by NOTIFY), and the owner is emailed where it was found', async () => {
    const [first, second] = [spawnService(serviceEnv()), spawnService(serviceEnv({ METRICS_PORT: '0' }))];
    const [one, two] = await Promise.all([listeningOf(first), listeningOf(second)]);
    // Logged after the listening lines: wait for it too.
    const metricsUrl = (await outputMatching(second, /"url":"(http:\/\/[^"]+)".*"msg":"metrics listening"/))[1]!;
    const cacheHits = async () => {
      const text = await (await fetch(metricsUrl)).text();
      return Number(/^shell_auth_api_key_lookups_total\{source="cache"\} (\d+)$/m.exec(text)![1]);
    };

    // An account and a key, over HTTP on the first instance: email, click, mint.
    const email = uniqueEmail('leak');
    const pair = { email, ssh_public_key: makeKey().publicKey };
    expect((await postJson(`${one.httpUrl}/api/shell-auth`, pair)).status).toBe(200);
    const token = tokenOf((await smtp.waitForMail(email)).link!);
    expect((await fetch(`${one.httpUrl}/shell-auth/verify`, confirmForm(token))).status).toBe(200);
    const minted = await postJson(`${one.httpUrl}/api/shell-auth/api-keys`, { ...pair, label: 'ci-deploy-key' });
    expect(minted.status).toBe(200);
    const { api_key: apiKey } = (await minted.json()) as { api_key: string };

    // The second instance has checked it: cached there for API_KEY_CACHE_TTL (30 s) from now.
    expect(await whoamiStatus(two.httpUrl, apiKey)).toBe(200);
    const hitsBefore = await cacheHits();
    expect(await whoamiStatus(two.httpUrl, apiKey)).toBe(200);
    expect(await cacheHits()).toBe(hitsBefore + 1); // answered from its cache, not the database

    const url = 'https://github.com/octo/deploy/blob/0c5b9e1/.github/workflows/ci.yml';
    const body = JSON.stringify([{ token: apiKey, type: 'shell_auth_api_key', url, source: 'commit' }]);
    const signature = sign('sha256', Buffer.from(body), { key: github.privateKey, dsaEncoding: 'der' }).toString('base64');
    const reportedAt = performance.now();
    const answer = await fetch(`${one.httpUrl}/api/secret-scanning/github`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'github-public-key-identifier': github.identifier, 'github-public-key-signature': signature },
      body,
    });
    const answeredAt = performance.now();
    expect(answer.status).toBe(200);
    expect(await answer.json()).toEqual([{ token_raw: apiKey, token_type: 'shell_auth_api_key', label: 'true_positive' }]);

    // As fast as the second instance answers: the first 401 is the moment its cache let go.
    let status = 200;
    let polls = 0;
    while (status !== 401 && performance.now() - reportedAt < 5_000) {
      status = await whoamiStatus(two.httpUrl, apiKey);
      polls++;
    }
    const refusedAt = performance.now();
    const fromReport = refusedAt - reportedAt;
    console.log(
      `leak report to 401 on the second instance: ${fromReport.toFixed(1)} ms from sending the report ` +
        `(${(refusedAt - answeredAt).toFixed(1)} ms after its answer; ${polls} whoami polls)`,
    );
    expect(status).toBe(401);
    expect(fromReport).toBeLessThan(1_000);

    const notice = await smtp.waitForMail(email);
    expect(notice.subject).toBe('API key found in public and revoked: "ci-deploy-key"');
    expect(notice.text).toContain(`Where it was found: ${url}`);
    expect(first.output() + second.output()).not.toContain(apiKey);
  });
});

describe('SECRET_SCANNING_KEYS_FILE that cannot be used', () => {
  const startupError = async (file: string) => {
    const service = spawnService(serviceEnv({ SECRET_SCANNING_KEYS_FILE: file }));
    expect(await service.exited).toBe(1);
    const output = service.output();
    // pino's error and fatal levels: a configuration mistake is no crash with a stack.
    expect(output.split('\n').filter((line) => /"level":(5|6)\d/.test(line))).toEqual([]);
    return output.split('\n').filter((line) => line.startsWith('shell-auth:'));
  };

  it('stops start-up with one line saying what is wrong: missing, not JSON, not GitHub format, not a P-256 key', async () => {
    const missing = path.join(work, 'missing.json');
    expect(await startupError(missing)).toEqual([`shell-auth: could not start: SECRET_SCANNING_KEYS_FILE=${missing}: cannot read it (ENOENT)`]);

    const notJson = path.join(work, 'not.json');
    fs.writeFileSync(notJson, '<html>rate limited</html>');
    expect((await startupError(notJson))[0]).toMatch(new RegExp(`^shell-auth: could not start: SECRET_SCANNING_KEYS_FILE=${notJson}: not JSON \\(`));

    const noKeys = path.join(work, 'no-keys.json');
    fs.writeFileSync(noKeys, JSON.stringify({ public_keys: [] }));
    expect(await startupError(noKeys)).toEqual([
      `shell-auth: could not start: SECRET_SCANNING_KEYS_FILE=${noKeys}: not GitHub's {"public_keys": [{"key_identifier", "key"}]}: public_keys: lists no key`,
    ]);

    const rsa = path.join(work, 'rsa.json');
    const rsaPem = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    fs.writeFileSync(rsa, JSON.stringify({ public_keys: [{ key_identifier: 'abc123', key: rsaPem, is_current: true }] }));
    expect(await startupError(rsa)).toEqual([`shell-auth: could not start: SECRET_SCANNING_KEYS_FILE=${rsa}: key abc123: not an ECDSA P-256 key (rsa)`]);
  });
});
