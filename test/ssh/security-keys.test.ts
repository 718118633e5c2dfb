import { execFileSync } from 'node:child_process';
import { createHash, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePublicKeyBlob, parsePublicKeyLine, parseSkSignatureFromSsh2, verifySkSignature, verifySshsig, type PublicKey } from '../../src/core/index.js';
import { decideAuthentication, type AuthPolicy } from '../../src/ssh/authentication.js';
import { confirmForm, startTestApp, tokenOf, type TestApp } from '../support/app.js';
import { makeKey, makeSecurityKey, SK_DUMMY, uniqueEmail, type TestKey } from '../support/keys.js';
import { openssh } from '../support/ssh.js';

// Security keys (FIDO, PROTOCOL.u2f): first with keys and signatures made here (flags and
// counters the test chooses, forgeries), then end to end with the real OpenSSH binaries and
// OpenSSH's software authenticator (sk-dummy.so).

const wire = (value: Buffer | string) => {
  const bytes = typeof value === 'string' ? Buffer.from(value) : value;
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
};
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest();
const mpint = (bytes: Buffer) => {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  const digits = bytes.subarray(start);
  return digits[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), digits]) : digits;
};

type MadeKey = { type: 'ed25519' | 'ecdsa'; blob: Buffer; key: PublicKey; privateKey: KeyObject };

function madeKey(type: 'ed25519' | 'ecdsa', application = 'ssh:'): MadeKey {
  let blob: Buffer;
  let privateKey: KeyObject;
  if (type === 'ed25519') {
    const pair = generateKeyPairSync('ed25519');
    privateKey = pair.privateKey;
    const raw = Buffer.from(pair.publicKey.export({ format: 'jwk' }).x!, 'base64url');
    blob = Buffer.concat([wire('sk-ssh-ed25519@openssh.com'), wire(raw), wire(application)]);
  } else {
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    privateKey = pair.privateKey;
    const jwk = pair.publicKey.export({ format: 'jwk' });
    const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
    blob = Buffer.concat([wire('sk-ecdsa-sha2-nistp256@openssh.com'), wire('nistp256'), wire(point), wire(application)]);
  }
  const parsed = parsePublicKeyBlob(blob);
  if (!parsed.ok) throw new Error(parsed.reason);
  return { type, blob, key: parsed.key, privateKey };
}

/** What an authenticator returns for `message`, in the form ssh2 hands the server (inner length stripped). */
function skSign(made: MadeKey, message: Buffer, flags: number, counter: number): Buffer {
  const count = Buffer.alloc(4);
  count.writeUInt32BE(counter);
  const signed = Buffer.concat([sha256(Buffer.from(made.key.application!)), Buffer.from([flags]), count, sha256(message)]);
  if (made.type === 'ed25519') return Buffer.concat([sign(null, signed, made.privateKey), Buffer.from([flags]), count]);
  const p1363 = sign('sha256', signed, { key: made.privateKey, dsaEncoding: 'ieee-p1363' });
  return Buffer.concat([wire(mpint(p1363.subarray(0, 32))), wire(mpint(p1363.subarray(32))), Buffer.from([flags]), count]);
}

const policy = (requireUserVerification = false): AuthPolicy => ({
  maxAttempts: 6,
  mayVerify: () => true,
  verify: () => false, // every key here is a security key: ssh2's own verifier must never be asked
  securityKeys: { requireUserVerification },
});

describe('security-key signatures (PROTOCOL.u2f), made here', () => {
  for (const type of ['ed25519', 'ecdsa'] as const) {
    it(`${type}-sk: accepted with user presence, with its counter; refused without it, forged, or as another key`, () => {
      const made = madeKey(type);
      const data = Buffer.from('session id and userauth request');
      const request = (signature: Buffer, keyBlob = made.blob) => ({ method: 'publickey', username: 'keys', keyBlob, signature, signedData: data });

      const good = decideAuthentication(request(skSign(made, data, 0x01, 7)), 1, policy());
      expect(good).toEqual({ answer: 'accept', key: made.key, securityKeyCounter: 7 });
      expect(decideAuthentication(request(skSign(made, data, 0x00, 8)), 1, policy())).toEqual({ answer: 'reject', reason: 'sk_flags' });
      // User verification (PIN, biometric) only when the server asks for it.
      expect(decideAuthentication(request(skSign(made, data, 0x01, 9)), 1, policy(true))).toEqual({ answer: 'reject', reason: 'sk_flags' });
      expect(decideAuthentication(request(skSign(made, data, 0x05, 10)), 1, policy(true))).toMatchObject({ answer: 'accept', securityKeyCounter: 10 });

      // Forgeries: another message, flags or counter changed after signing, a flipped bit.
      expect(decideAuthentication({ ...request(skSign(made, data, 0x01, 11)), signedData: Buffer.from('another session') }, 1, policy())).toEqual({ answer: 'reject', reason: 'bad_signature' });
      const raised = skSign(made, data, 0x01, 12);
      raised[raised.length - 5] = 0x05;
      expect(decideAuthentication(request(raised), 1, policy(true))).toEqual({ answer: 'reject', reason: 'bad_signature' });
      const recounted = skSign(made, data, 0x01, 13);
      recounted[recounted.length - 1] = recounted[recounted.length - 1]! ^ 0xff;
      expect(decideAuthentication(request(recounted), 1, policy())).toEqual({ answer: 'reject', reason: 'bad_signature' });
      const flipped = skSign(made, data, 0x01, 14);
      flipped[3] = flipped[3]! ^ 0x01;
      expect(decideAuthentication(request(flipped), 1, policy())).toMatchObject({ answer: 'reject' });
      expect(decideAuthentication(request(Buffer.alloc(3)), 1, policy())).toEqual({ answer: 'reject', reason: 'bad_signature' });

      // The algorithm named by the client must be the key's (ssh2 strips a signature's name only then).
      expect(decideAuthentication({ ...request(skSign(made, data, 0x01, 17)), keyAlgorithm: 'ssh-ed25519' }, 1, policy())).toEqual({ answer: 'reject', reason: 'bad_signature' });
      // Offered-vs-signed: offer the victim's key, sign with one's own: the victim's key must verify.
      const victim = madeKey(type);
      expect(decideAuthentication({ method: 'publickey', username: 'keys', keyBlob: victim.blob }, 1, policy())).toEqual({ answer: 'key-ok' });
      expect(decideAuthentication(request(skSign(made, data, 0x01, 15), victim.blob), 2, policy())).toEqual({ answer: 'reject', reason: 'bad_signature' });
      // The application is part of what is signed: a key for "ssh:other" cannot pass as "ssh:".
      const otherApp = madeKey(type, 'ssh:other');
      const sig = skSign(otherApp, data, 0x01, 16);
      const asSsh = { ...otherApp.key, application: 'ssh:' };
      expect(verifySkSignature(asSsh, data, parseSkSignatureFromSsh2(asSsh.type, sig)!, { requireUserVerification: false })).toEqual({ ok: false, reason: 'bad_signature' });
    });
  }

  it('public keys: parsed with their application, refused with the reason when malformed; certificates stay refused', () => {
    const made = madeKey('ecdsa');
    expect(made.key).toMatchObject({ type: 'sk-ecdsa-sha2-nistp256@openssh.com', application: 'ssh:', bits: 256 });
    const line = (blob: Buffer, type = 'sk-ssh-ed25519@openssh.com') => parsePublicKeyLine(`${type} ${blob.toString('base64')}`);
    const ed = madeKey('ed25519').blob;
    const edHead = ed.subarray(0, ed.length - 8); // without its application
    expect(line(edHead)).toEqual({ ok: false, reason: expect.stringContaining('application') });
    expect(line(Buffer.concat([edHead, wire('')]))).toEqual({ ok: false, reason: expect.stringContaining('application') });
    expect(line(Buffer.concat([edHead, wire('ssh:\u0007')]))).toEqual({ ok: false, reason: expect.stringContaining('printable') });
    expect(line(Buffer.concat([edHead, wire('https://example.com')]))).toEqual({ ok: false, reason: expect.stringContaining('start with "ssh:"') });
    expect(line(Buffer.concat([edHead, wire('ssh:git')]))).toMatchObject({ ok: true, key: { application: 'ssh:git' } });
    expect(line(Buffer.concat([ed, Buffer.from([0])]))).toEqual({ ok: false, reason: 'key data has trailing bytes' });
    const wrongCurve = Buffer.concat([wire('sk-ecdsa-sha2-nistp256@openssh.com'), wire('nistp384'), made.blob.subarray(4 + 34 + 12)]);
    expect(line(wrongCurve, 'sk-ecdsa-sha2-nistp256@openssh.com')).toMatchObject({ ok: false });
    const cert = 'sk-ssh-ed25519-cert-v01@openssh.com';
    expect(parsePublicKeyLine(`${cert} ${Buffer.concat([wire(cert), wire('x')]).toString('base64')}`)).toEqual({
      ok: false,
      reason: `certificates (${cert}) are not accepted; give the plain public key`,
    });
  });
});

describe.runIf(SK_DUMMY)('security keys end to end: OpenSSH 9 with sk-dummy.so', () => {
  let t: TestApp;
  let strict: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
    strict = await startTestApp({ SK_STRICT_COUNTER: 'true' }, { smtp: t.smtp });
  });
  afterAll(async () => {
    await strict?.close();
    await t?.close();
  });
  const sk = (app: TestApp, key: TestKey, ...args: string[]) =>
    openssh(app.app.sshPort, key.privateKeyPath, args, { extra: ['-o', `SecurityKeyProvider=${SK_DUMMY}`] });
  const pages: string[] = [];
  const login = async (app: TestApp, key: TestKey, email: string) => {
    const waiting = sk(app, key, 'login', email);
    const mail = await app.smtp.waitForMail(email);
    pages.push(mail.text, (await app.request(`/shell-auth/verify?token=${tokenOf(mail.link!)}`)).text);
    expect((await app.request('/shell-auth/verify', confirmForm(tokenOf(mail.link!)))).status).toBe(200);
    return waiting;
  };

  for (const type of ['ed25519-sk', 'ecdsa-sk'] as const) {
    it(`${type}: login then create, shown as a security key, fingerprinted as ssh-keygen -l prints it`, async () => {
      const key = makeSecurityKey(type);
      const parsed = parsePublicKeyLine(key.publicKey);
      expect(parsed.ok && parsed.key.fingerprint).toBe(key.fingerprint);
      const email = uniqueEmail('fido');
      pages.length = 0;
      expect((await login(t, key, email)).code).toBe(0);
      // The email and the confirm page say what kind of key is being linked.
      expect(pages).toHaveLength(2);
      for (const page of pages) expect(page).toContain(`${key.publicKey.split(' ')[0]}, a security key`);
      const whoami = await sk(t, key, 'whoami');
      expect(whoami.stdout).toContain(`key:      ${key.fingerprint} (${key.publicKey.split(' ')[0]}, a security key)`);
      expect(JSON.parse((await sk(t, key, 'whoami', '--json')).stdout)).toMatchObject({ email, security_key: true, verified: true });
      const created = await sk(t, key, 'create', '--label', 'from-a-security-key');
      expect(created.code).toBe(0);
      expect(created.stdout).toMatch(/^[0-9a-f-]{36}[0-9a-f]{64}\n$/);
      const listed = await sk(t, key, 'list', '--wide'); // VIA is one of --wide's columns
      expect(listed.stdout).toMatch(/from-a-security-key\s.*\sssh, security key\s/);
      expect(JSON.parse((await sk(t, key, 'list', '--json')).stdout)).toEqual([expect.objectContaining({ label: 'from-a-security-key', created_via: 'ssh', security_key: true })]);
      const row = await t.app.deps.db.selectFrom('ssh_keys').select(['sk_application', 'key_type']).where('fingerprint', '=', key.fingerprint).executeTakeFirstOrThrow();
      expect(row).toEqual({ sk_application: 'ssh:', key_type: key.publicKey.split(' ')[0] });
    });
  }

  it('a key made with no-touch-required signs without user presence: refused', async () => {
    const key = makeSecurityKey('ed25519-sk', ['no-touch-required']);
    const result = await sk(t, key, 'whoami');
    expect(result.code).toBe(255);
    expect(result.stderr).toContain('Permission denied (publickey)');
  });

  it('a counter that does not increase (sk-dummy always says 0x12345678) is audited; with SK_STRICT_COUNTER it is refused', async () => {
    for (const app of [t, strict]) {
      const key = makeSecurityKey('ed25519-sk');
      expect((await login(app, key, uniqueEmail('counter'))).code).toBe(0);
      const first = await sk(app, key, 'whoami'); // the first counter this account's key shows
      expect(first.code).toBe(0);
      const again = await sk(app, key, 'whoami');
      const audit = await app.app.deps.db
        .selectFrom('audit_events')
        .select(['action', 'details'])
        .where('action', '=', 'ssh_key.counter_not_increasing')
        .execute();
      const mine = audit.filter((a) => JSON.stringify(a.details).includes(key.fingerprint));
      expect(mine.length).toBeGreaterThanOrEqual(1);
      expect(mine[0]!.details).toMatchObject({ counter: 0x12345678, highest_seen: 0x12345678, refused: app === strict });
      if (app === strict) {
        expect(again.code).toBe(255);
        expect(again.stderr).toContain('Permission denied (publickey)');
      } else {
        expect(again.code).toBe(0);
      }
    }
  });

  it('SSHSIG with a security key: ssh-keygen -Y sign (SSH_SK_PROVIDER) proves the key over HTTP', async () => {
    const key = makeSecurityKey('ecdsa-sk');
    const email = uniqueEmail('fidohttp');
    await t.verifyByEmail(email, key.publicKey);
    const issued = await t.post('/api/shell-auth/challenge', { ssh_public_key: key.publicKey });
    expect(issued.status).toBe(200);
    const signature = execFileSync('ssh-keygen', ['-Y', 'sign', '-n', issued.body.namespace, '-f', key.privateKeyPath], {
      input: issued.body.message,
      env: { ...process.env, SSH_SK_PROVIDER: SK_DUMMY! },
      stdio: ['pipe', 'pipe', 'ignore'],
    }).toString();
    const parsed = parsePublicKeyLine(key.publicKey);
    if (!parsed.ok) throw new Error(parsed.reason);
    expect(verifySshsig(signature, { key: parsed.key, namespace: issued.body.namespace, message: issued.body.message })).toMatchObject({ ok: true, counter: 0x12345678 });
    const minted = await t.post('/api/shell-auth/api-keys', { email, ssh_public_key: key.publicKey, label: 'fido-over-http', challenge: issued.body.challenge, ssh_signature: signature });
    expect(minted.status).toBe(200);
    // The same signature for another key's claim, or replayed, is refused.
    const other = makeKey();
    expect(verifySshsig(signature, { key: parsePublicKeyLine(other.publicKey).ok ? (parsePublicKeyLine(other.publicKey) as { key: PublicKey }).key : parsed.key, namespace: issued.body.namespace, message: issued.body.message })).toMatchObject({ ok: false });
    const replayed = await t.post('/api/shell-auth/api-keys', { email, ssh_public_key: key.publicKey, label: 'fido-replayed', challenge: issued.body.challenge, ssh_signature: signature });
    expect(replayed.status).toBe(401);
  });

  it('a security-key SSHSIG made without touch is refused, saying so', async () => {
    const key = makeSecurityKey('ed25519-sk', ['no-touch-required']);
    const parsed = parsePublicKeyLine(key.publicKey);
    if (!parsed.ok) throw new Error(parsed.reason);
    const signature = execFileSync('ssh-keygen', ['-Y', 'sign', '-n', 'test-ns', '-f', key.privateKeyPath], {
      input: 'a message',
      env: { ...process.env, SSH_SK_PROVIDER: SK_DUMMY! },
      stdio: ['pipe', 'pipe', 'ignore'],
    }).toString();
    expect(verifySshsig(signature, { key: parsed.key, namespace: 'test-ns', message: 'a message' })).toMatchObject({ ok: false, failure: 'sk_flags', reason: expect.stringContaining('without touching') });
  });
});
