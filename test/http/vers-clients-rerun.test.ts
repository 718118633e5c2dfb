import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeKey, uniqueEmail } from '../support/keys.js';
import { startTestApp, type TestApp } from '../support/app.js';

// Vers's own clients, run twice in a row with the same key: the second run needs a fresh email
// (the first mint spent the HTTP window), and the (email, key) pair's 60 s resend limit must not
// count the first run's link, which was confirmed. Both clients below make exactly the calls of
// the real ones, in the same order, with the same error handling: no retry on 429.

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

/**
 * `ensureVersApiKey` of github.com/hdresearch/pi-vers, src/core/shell-auth.ts (commit d25b9c8),
 * the helper other Vers tools reuse. Kept: its `post` (throws on any non-2xx with the body's
 * `error`), the order verify-public-key → initiate → poll verify-key → api-keys, the `.catch`es
 * on the lookup and the polls, the label "pi-vers". Left out: reading the key and email from
 * ~/.ssh and a prompt (passed in: its own `email` option), and writing ~/.vers.
 */
async function ensureVersApiKey(baseUrl: string, sshPublicKey: string, options: { email: string; pollIntervalMs: number; maxPollAttempts?: number }) {
  async function post<T>(path: string, body: Record<string, unknown>): Promise<T> {
    const response = await fetch(`${baseUrl}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    const text = await response.text();
    const payload = text ? JSON.parse(text) : {};
    if (!response.ok) {
      const detail = typeof payload === 'object' && payload !== null && 'error' in payload ? payload.error : text;
      throw new Error(detail || `Shell auth request failed (${response.status})`);
    }
    return payload as T;
  }
  type Match = { email: string; is_active?: boolean; public_key_verified?: boolean };
  const verified = await post<{ verified?: boolean; count?: number; matches?: Match[] }>('/api/shell-auth/verify-public-key', {
    ssh_public_key: sshPublicKey,
  }).catch(() => ({ verified: false, count: 0, matches: [] as Match[] }));
  let email = options.email;
  if (verified.verified && (verified.count || 0) > 0) {
    const active = verified.matches?.find((match) => match.is_active && match.public_key_verified) || verified.matches?.[0];
    email = active?.email || email;
  }
  if (!verified.verified || (verified.count || 0) === 0) {
    await post('/api/shell-auth', { email, ssh_public_key: sshPublicKey });
    const maxPollAttempts = options.maxPollAttempts ?? 100;
    let confirmed = false;
    for (let attempt = 0; attempt < maxPollAttempts; attempt += 1) {
      const poll = await post<{ verified?: boolean }>('/api/shell-auth/verify-key', { email, ssh_public_key: sshPublicKey }).catch(() => ({ verified: false }));
      if (poll.verified) {
        confirmed = true;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, options.pollIntervalMs));
    }
    if (!confirmed) throw new Error('Vers email verification timed out');
  }
  const apiKeyResponse = await post<{ api_key?: string; error?: string }>('/api/shell-auth/api-keys', { email, ssh_public_key: sshPublicKey, label: 'pi-vers' });
  if (!apiKeyResponse.api_key) throw new Error(apiKeyResponse.error || 'Vers shell auth did not return an API key');
  return { apiKey: apiKeyResponse.api_key, email, source: 'shell-auth' as const };
}

/**
 * `vers login --git`: `loginWithGit` in github.com/hdresearch/vers-cli cmd/login.go, with
 * internal/auth/shellauth.go (commit f7af8e8). Kept: shellAuthPost (any status but 200 is
 * `API error (STATUS): <error, else message, else body>`), initiate with the body
 * "vers login --git from HOST", already_verified → one verify-key, else polling every 3 s while
 * an error contains "401", the single org taken, the label "vers-cli-HOST", each step's error
 * wrapping. The git email and the key file are passed in; validateAPIKey lists VMs on the Vers
 * API, which this service is not: GET /api/whoami (the platform's check of a key) stands in.
 */
async function loginWithGit(baseUrl: string, email: string, sshPubKey: string): Promise<{ apiKey: string; orgName: string }> {
  class ApiError extends Error {}
  async function shellAuthPost<T>(path: string, body: unknown): Promise<T> {
    const resp = await fetch(baseUrl + path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    const respBody = await resp.text();
    if (resp.status !== 200) {
      let errResp: { error?: string; message?: string } | null = null;
      try {
        errResp = JSON.parse(respBody);
      } catch {
        errResp = null;
      }
      if (errResp && (errResp.error || errResp.message)) throw new ApiError(`API error (${resp.status}): ${errResp.error || errResp.message}`);
      throw new ApiError(`API error (${resp.status}): ${respBody}`);
    }
    return JSON.parse(respBody) as T;
  }
  type VerifyResponse = { verified: boolean; orgs: Array<{ org_id: string; name: string; role: string }> };
  const hostname = os.hostname();
  let initResp: { already_verified: boolean; is_new_user: boolean };
  try {
    initResp = await shellAuthPost('/api/shell-auth', { email, ssh_public_key: sshPubKey, body: `vers login --git from ${hostname}` });
  } catch (err) {
    throw new Error(`failed to initiate auth: ${(err as Error).message}`);
  }
  let verifyResp: VerifyResponse | null = null;
  if (initResp.already_verified) {
    try {
      verifyResp = await shellAuthPost<VerifyResponse>('/api/shell-auth/verify-key', { email, ssh_public_key: sshPubKey });
      if (!verifyResp.verified) throw new Error('expected key to be verified but it was not');
    } catch (err) {
      throw new Error(`failed to fetch org list: ${(err as Error).message}`);
    }
  } else {
    const deadline = Date.now() + 10 * 60_000;
    while (Date.now() < deadline) {
      let resp: VerifyResponse | null = null;
      try {
        resp = await shellAuthPost<VerifyResponse>('/api/shell-auth/verify-key', { email, ssh_public_key: sshPubKey });
      } catch (err) {
        // 401 means not yet verified — keep polling
        if (!(err as Error).message.includes('401')) throw err;
      }
      if (resp?.verified) {
        verifyResp = resp;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 3000));
    }
    if (!verifyResp) throw new Error('verification timed out after 10m0s — check your email and try again');
  }
  if (verifyResp.orgs.length === 0) throw new Error('no organizations found for this account');
  if (verifyResp.orgs.length > 1) throw new Error('this stand-in takes no input: one org expected');
  const orgName = verifyResp.orgs[0]!.name;
  let label = `vers-cli-${hostname}`;
  if (label.length < 5) label = 'vers-cli-key';
  let keyResp: { api_key: string; org_name: string };
  try {
    keyResp = await shellAuthPost('/api/shell-auth/api-keys', { email, ssh_public_key: sshPubKey, label, org_name: orgName });
  } catch (err) {
    throw new Error(`failed to create API key: ${(err as Error).message}`);
  }
  const valid = await fetch(`${baseUrl}/api/whoami`, { headers: { authorization: `Bearer ${keyResp.api_key}` } });
  if (valid.status !== 200) throw new Error('invalid API key - please check your key and try again');
  return { apiKey: keyResp.api_key, orgName: keyResp.org_name };
}

describe("Vers's real clients, run twice in a row with the same key", () => {
  it('pi-vers ensureVersApiKey: the second run gets a fresh email and a key (no 429 for the confirmed first link)', async () => {
    const email = uniqueEmail('pivers');
    const key = makeKey();
    const run = () => Promise.all([ensureVersApiKey(t.url, key.publicKey, { email, pollIntervalMs: 250 }), t.confirmMailTo(email)]);
    const [first] = await run();
    expect(first.apiKey).toMatch(/^[0-9a-f-]{36}[0-9a-f]{64}$/);
    // At once, as a person re-running a tool does: the first mint spent the window.
    const [second] = await run();
    expect(second.apiKey).toMatch(/^[0-9a-f-]{36}[0-9a-f]{64}$/);
    expect(second.apiKey).not.toBe(first.apiKey);
    expect(t.smtp.mailsTo(email)).toHaveLength(2);
  }, 60_000);

  it('vers-cli loginWithGit: a second `vers login --git` right away works too', async () => {
    const email = uniqueEmail('verscli');
    const key = makeKey();
    const run = () => Promise.all([loginWithGit(t.url, email, key.publicKey), t.confirmMailTo(email)]);
    const [first] = await run();
    expect(first.orgName).toBe(email.split('@')[0]);
    const [second] = await run();
    expect(second.orgName).toBe(first.orgName);
    expect(second.apiKey).not.toBe(first.apiKey);
    expect(t.smtp.mailsTo(email)).toHaveLength(2);
  }, 60_000);

  it('the resend limit still holds for links nobody confirmed, and the per-inbox limit counts confirmed ones', async () => {
    const email = uniqueEmail('resend');
    const key = makeKey();
    const pair = { email, ssh_public_key: key.publicKey };
    expect((await t.post('/api/shell-auth', pair)).status).toBe(200);
    const again = await t.post('/api/shell-auth', pair);
    expect(again.status).toBe(429);
    expect(Number(again.headers.get('retry-after'))).toBeGreaterThan(50);
    // The inbox's hourly ten: confirmed links count (each another key, so the pair limit is not in the way).
    const inbox = uniqueEmail('inbox');
    for (let i = 0; i < 10; i++) await t.verifyByEmail(inbox, makeKey().publicKey);
    expect((await t.post('/api/shell-auth', { email: inbox, ssh_public_key: makeKey().publicKey })).status).toBe(429);
  }, 60_000);
});
