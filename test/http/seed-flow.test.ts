import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { startTestApp, type TestApp } from '../support/app.js';

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

it("the seed page's curl integration example works unchanged (real curl + jq), with a person clicking the email", async () => {
  const email = uniqueEmail('seed');
  const key = makeKey();
  const org = email.split('@')[0]!;
  const script = spawn('bash', [path.join(import.meta.dirname, '..', 'fixtures', 'seed-flow.sh')], {
    env: { PATH: process.env.PATH, BASE: t.url, EMAIL: email, PUBKEY: key.publicKey, ORG: org },
  });
  let stdout = '';
  let stderr = '';
  script.stdout.on('data', (d) => (stdout += d));
  script.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => script.on('close', resolve));

  // The person: reads the mail, opens the link, presses Confirm.
  await t.confirmMailTo(email);

  expect(await exited).toBe(0);
  expect(stderr).toBe('');
  expect(stdout).toContain('"is_new_user":true');
  expect(stdout).toContain('Verified!');
  expect(stdout).toContain(`"name":"${org}","role":"admin"`);
  const apiKey = /API key: (\S+)/.exec(stdout)?.[1];
  expect(apiKey).toMatch(/^[0-9a-f-]{36}[0-9a-f]{64}$/);
  const whoami = await t.request('/api/whoami', { headers: { authorization: `Bearer ${apiKey}` } });
  expect(whoami.status).toBe(200);
  expect(whoami.body.org_name).toBe(org);
});
