import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveSshIdentity } from '../../src/core/index.js';
import { publicKeyOf } from '../support/core.js';
import { confirmForm, startTestApp, tokenOf, type TestApp } from '../support/app.js';
import { makeKey, uniqueEmail, type TestKey } from '../support/keys.js';

// HTTP requests signed with the real `ssh-keygen -Y sign` over a server challenge: minting at any
// time, no window spent, no squatting; and every way a proof can be wrong, refused with the reason.

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp({ HTTP_TRUST_MINTS: '1' });
});
afterAll(async () => {
  await t?.close();
});

type Issued = { challenge: string; namespace: string; message: string; expires_at: string };

async function challengeFor(key: TestKey): Promise<Issued> {
  const res = await t.post('/api/shell-auth/challenge', { ssh_public_key: key.publicKey });
  expect(res.status).toBe(200);
  return res.body as Issued;
}

/** What a user runs: `jq -j .message | ssh-keygen -Y sign -n "$NAMESPACE" -f KEY`. */
function sign(signer: TestKey, message: string, namespace: string): string {
  return execFileSync('ssh-keygen', ['-Y', 'sign', '-n', namespace, '-f', signer.privateKeyPath], { input: message, stdio: ['pipe', 'pipe', 'ignore'] }).toString();
}

async function proofFor(key: TestKey, signer = key): Promise<{ challenge: string; ssh_signature: string }> {
  const issued = await challengeFor(key);
  return { challenge: issued.challenge, ssh_signature: sign(signer, issued.message, issued.namespace) };
}

/** A key linked to a fresh account by the ordinary HTTP email flow; its window is then spent. */
async function linkedOverHttp(): Promise<{ email: string; key: TestKey }> {
  const email = uniqueEmail('pop');
  const key = makeKey();
  await t.verifyByEmail(email, key.publicKey);
  expect((await t.post('/api/shell-auth/api-keys', { email, ssh_public_key: key.publicKey, label: 'spends-window' })).status).toBe(200);
  return { email, key };
}

describe('POST /api/shell-auth/challenge', () => {
  it('gives a random challenge bound to the key, for this service, two minutes long, stored only as a hash', async () => {
    const key = makeKey();
    const before = Date.now();
    const issued = await challengeFor(key);
    expect(issued.challenge).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(issued.namespace).toBe(`shell-auth@${new URL(t.url).host}`);
    expect(issued.message).toBe(
      `shell-auth proof of key possession\nservice: ${t.url}\nkey: ${key.fingerprint}\nchallenge: ${issued.challenge}\nexpires: ${issued.expires_at}`,
    );
    const ttl = new Date(issued.expires_at).getTime() - before;
    expect(ttl).toBeGreaterThan(115_000);
    expect(ttl).toBeLessThanOrEqual(121_000);
    const rows = await t.app.deps.db.selectFrom('ssh_challenges').selectAll().execute();
    expect(JSON.stringify(rows)).not.toContain(issued.challenge);
    expect((await challengeFor(key)).challenge).not.toBe(issued.challenge);
  });
});

describe('a signed request', () => {
  it('mints at any time for a key the account confirmed by email, without spending the window, and proves the key for SSH', async () => {
    const { email, key } = await linkedOverHttp();
    const pair = { email, ssh_public_key: key.publicKey };
    // Unsigned, the window is spent: 401, as before.
    expect((await t.post('/api/shell-auth/api-keys', { ...pair, label: 'unsigned' })).status).toBe(401);
    // Hours later, signed: fine, twice.
    t.app.deps.now = () => new Date(Date.now() + 5 * 3_600_000);
    try {
      for (const label of ['signed-one', 'signed-two']) {
        const minted = await t.post('/api/shell-auth/api-keys', { ...pair, label, ...(await proofFor(key)) });
        expect(minted.status, JSON.stringify(minted.body)).toBe(200);
        expect(minted.body.api_key).toMatch(/^[0-9a-f-]{100}$/);
      }
      const verified = await t.post('/api/shell-auth/verify-key', { ...pair, ...(await proofFor(key)) });
      expect(verified.body).toMatchObject({ verified: true, is_active: true });
      const lookup = await t.post('/api/shell-auth/verify-public-key', { ssh_public_key: key.publicKey, ...(await proofFor(key)) });
      expect(lookup.body).toMatchObject({ verified: true, count: 1, matches: [{ email }] });
      expect((await t.post('/api/shell-auth/verify-public-key', { ssh_public_key: key.publicKey })).status).toBe(404);
    } finally {
      delete t.app.deps.now;
    }
    // Proven like an SSH login: the key is an SSH identity now.
    const identity = await resolveSshIdentity(t.app.deps, publicKeyOf(key.publicKey));
    expect(identity).toMatchObject({ kind: 'account', user: { email } });
    const audit = await t.app.deps.db.selectFrom('audit_events').select(['action', 'details']).where('actor_user_id', '=', identity.kind === 'account' ? identity.user.id : '').execute();
    const proofs = audit.filter((a) => a.action === 'api_key.created').map((a) => (a.details as { proof: string }).proof);
    expect(proofs.sort()).toEqual(['email', 'sshsig', 'sshsig']);
    expect(audit.find((a) => a.action === 'ssh_key.proven')?.details).toMatchObject({ proof: 'sshsig' });
  });

  it('does not make a key nobody confirmed by email belong to anyone: possession is not an inbox', async () => {
    const key = makeKey();
    const res = await t.post('/api/shell-auth/api-keys', { email: uniqueEmail('nobody'), ssh_public_key: key.publicKey, label: 'squat-free', ...(await proofFor(key)) });
    expect(res.status).toBe(401);
    expect(res.body.error).toBe('Invalid or unverified SSH key');
  });

  it('takes back a key squatted over HTTP: one signed initiate and the holder\'s own email click, no SSH', async () => {
    const victimKey = makeKey();
    const mallory = uniqueEmail('mallory');
    await t.verifyByEmail(mallory, victimKey.publicKey); // Mallory only needed the public key
    const victim = uniqueEmail('victim');
    const started = await t.post('/api/shell-auth', { email: victim, ssh_public_key: victimKey.publicKey, ...(await proofFor(victimKey)) });
    expect(started.status).toBe(200);
    const mail = await t.smtp.waitForMail(victim);
    expect((await t.request('/shell-auth/verify', confirmForm(tokenOf(mail.link!)))).status).toBe(200);
    const identity = await resolveSshIdentity(t.app.deps, publicKeyOf(victimKey.publicKey));
    expect(identity).toMatchObject({ kind: 'account', user: { email: victim } });
    expect((await t.post('/api/shell-auth/verify-key', { email: mallory, ssh_public_key: victimKey.publicKey, ...(await proofFor(victimKey)) })).status).toBe(401);
  });
});

describe('a proof that does not hold is a 401 saying why, never a 5xx', () => {
  let email: string;
  let key: TestKey;
  beforeAll(async () => {
    ({ email, key } = await linkedOverHttp());
  });
  const verifyKey = (fields: Record<string, unknown>) => t.post('/api/shell-auth/verify-key', { email, ssh_public_key: key.publicKey, ...fields });
  const detailOf = async (fields: Record<string, unknown>) => {
    const res = await verifyKey(fields);
    expect(res.status).toBe(401);
    expect(res.body.error).toBe('SSH signature proof not accepted');
    return res.body.detail as string;
  };

  it('replayed, expired, or another key\'s challenge', async () => {
    const proof = await proofFor(key);
    expect((await verifyKey(proof)).status).toBe(200);
    expect(await detailOf(proof)).toBe('challenge was already used: ask for a new one');

    const late = await proofFor(key);
    t.app.deps.now = () => new Date(Date.now() + 121_000);
    try {
      expect(await detailOf(late)).toBe('challenge expired: ask for a new one');
    } finally {
      delete t.app.deps.now;
    }
    const other = makeKey();
    expect(await detailOf(await proofFor(other))).toBe('challenge was issued for another key');
    expect(await detailOf({ challenge: 'A'.repeat(43), ssh_signature: proof.ssh_signature })).toBe('challenge is not one this server issued');
  });

  it('signed by another key, in another namespace, over another message, armor cut or missing', async () => {
    const other = makeKey();
    expect(await detailOf(await proofFor(key, other))).toBe('ssh_signature was made with another key than ssh_public_key');
    const issued = await challengeFor(key);
    expect(await detailOf({ challenge: issued.challenge, ssh_signature: sign(key, issued.message, 'git') })).toMatch(/^ssh_signature namespace must be "shell-auth@/);
    const again = await challengeFor(key);
    expect(await detailOf({ challenge: again.challenge, ssh_signature: sign(key, `${again.message} tampered`, again.namespace) })).toBe(
      'ssh_signature does not verify over this message with this key',
    );
    const cut = await challengeFor(key);
    const armored = sign(key, cut.message, cut.namespace);
    expect(await detailOf({ challenge: cut.challenge, ssh_signature: armored.slice(0, armored.length - 40) })).toMatch(/^ssh_signature not an armored SSH signature/);
    expect(await detailOf({ challenge: cut.challenge })).toBe('send both challenge and ssh_signature (from POST /api/shell-auth/challenge)');
    // The challenge survived the failures: a good signature still redeems it.
    expect((await verifyKey({ challenge: cut.challenge, ssh_signature: armored })).status).toBe(200);
  });

  it('whatever is sent as the signature, the answer is a 401 (fuzzed over HTTP)', async () => {
    const issued = await challengeFor(key);
    const good = sign(key, issued.message, issued.namespace);
    expect((await verifyKey({ challenge: issued.challenge, ssh_signature: `${good}x` })).status).toBe(401);
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.string({ maxLength: 300 }), fc.nat(good.length - 1).map((cut) => good.slice(0, cut) + good.slice(cut + 1))),
        async (ssh_signature) => {
          const res = await verifyKey({ challenge: issued.challenge, ssh_signature });
          // Never a 5xx; and only the good signature can pass (a dropped line break leaves it the same one).
          expect([200, 401]).toContain(res.status);
          if (res.status === 200) expect(ssh_signature.replace(/\s/g, '')).toBe(good.replace(/\s/g, ''));
        },
      ),
      { numRuns: 60, seed: 0x5165 },
    );
  });

  it('jq -r (a trailing newline) signs the same message', async () => {
    const issued = await challengeFor(key);
    expect((await verifyKey({ challenge: issued.challenge, ssh_signature: sign(key, `${issued.message}\n`, issued.namespace) })).status).toBe(200);
  });
});
