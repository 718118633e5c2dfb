import fs from 'node:fs';
import ssh2, { type ParsedKey } from 'ssh2';
import { describe, expect, it } from 'vitest';
import { decideAuthentication, type AuthPolicy, type AuthRequest } from '../../src/ssh/authentication.js';
import { makeKey } from '../support/keys.js';

// The authentication decision, in-process: no socket, real keys and real signatures.

function parse(text: Buffer | string): ParsedKey {
  const parsed = ssh2.utils.parseKey(text);
  if (parsed instanceof Error || Array.isArray(parsed)) throw new Error('unreadable key');
  return parsed;
}

const policy: AuthPolicy = {
  maxAttempts: 6,
  mayVerify: () => true,
  verify(keyBlob, data, signature, hashAlgo) {
    return parse(keyBlob).verify(data, signature, hashAlgo) === true;
  },
  securityKeys: { requireUserVerification: false },
};

const victim = makeKey();
const attacker = makeKey();
const attackerPrivate = parse(fs.readFileSync(attacker.privateKeyPath));
const blobOf = (line: string) => Buffer.from(line.split(' ')[1]!, 'base64');
const sessionData = Buffer.from('session id + userauth request, as ssh2 passes it');

function signed(keyLine: string, signer: ParsedKey, extra: Partial<AuthRequest> = {}): AuthRequest {
  return {
    method: 'publickey',
    username: 'keys',
    keyBlob: blobOf(keyLine),
    signedData: sessionData,
    signature: signer.sign(sessionData) as Buffer,
    ...extra,
  };
}

describe('SSH authentication decision', () => {
  it('a key merely offered gets "key ok" and binds nothing; only the key whose signature verifies is the identity', () => {
    // The client asks about the victim's key (it has only the public half) ...
    const query = decideAuthentication({ method: 'publickey', username: 'keys', keyBlob: blobOf(victim.publicKey) }, 1, policy);
    expect(query).toEqual({ answer: 'key-ok' });
    // ... then signs with its own key: the identity is its own key, never the one offered first.
    const own = decideAuthentication(signed(attacker.publicKey, attackerPrivate), 2, policy);
    expect(own.answer).toBe('accept');
    expect(own.answer === 'accept' && own.key.fingerprint).toBe(attacker.fingerprint);
  });

  it("a signature by one key presented as another's is rejected", () => {
    expect(decideAuthentication(signed(victim.publicKey, attackerPrivate), 1, policy)).toEqual({ answer: 'reject', reason: 'bad_signature' });
  });

  it('a corrupted signature is rejected', () => {
    const request = signed(attacker.publicKey, attackerPrivate);
    request.signature = Buffer.from(request.signature!);
    request.signature[request.signature.length - 1]! ^= 1;
    expect(decideAuthentication(request, 1, policy)).toEqual({ answer: 'reject', reason: 'bad_signature' });
  });

  it('other methods and unreadable keys are rejected; any user name gets in (it is told which to use); the attempt after the limit hangs up', () => {
    const good = signed(attacker.publicKey, attackerPrivate);
    expect(decideAuthentication({ method: 'password', username: 'keys' }, 1, policy)).toEqual({ answer: 'reject', reason: 'method_refused' });
    expect(decideAuthentication({ ...good, username: 'root' }, 1, policy).answer).toBe('accept');
    expect(decideAuthentication({ ...good, keyBlob: Buffer.from('garbage') }, 1, policy)).toEqual({ answer: 'reject', reason: 'bad_key' });
    expect(decideAuthentication(good, 6, policy).answer).toBe('accept');
    expect(decideAuthentication(good, 7, policy)).toEqual({ answer: 'hang-up', reason: 'attempts' });
  });

  it('a signed request beyond the verification budget hangs up without verifying; a query costs nothing', () => {
    let verified = 0;
    const broke: AuthPolicy = { ...policy, mayVerify: () => false, verify: () => ++verified > 0 };
    expect(decideAuthentication(signed(attacker.publicKey, attackerPrivate), 1, broke)).toEqual({ answer: 'hang-up', reason: 'verify_budget' });
    expect(verified).toBe(0);
    expect(decideAuthentication({ method: 'publickey', username: 'keys', keyBlob: blobOf(victim.publicKey) }, 1, broke)).toEqual({ answer: 'key-ok' });
  });

  it('RSA: SHA-1 ("ssh-rsa") signatures are refused, rsa-sha2-256/512 accepted', () => {
    const rsa = makeKey('rsa', 2048);
    const signer = parse(fs.readFileSync(rsa.privateKeyPath));
    const withHash = (hashAlgo: string | undefined) =>
      decideAuthentication(
        { method: 'publickey', username: 'keys', keyBlob: blobOf(rsa.publicKey), signedData: sessionData, signature: signer.sign(sessionData, hashAlgo) as Buffer, hashAlgo },
        1,
        policy,
      ).answer;
    expect(withHash(undefined)).toBe('reject');
    expect(withHash('sha1')).toBe('reject');
    expect(withHash('sha256')).toBe('accept');
    expect(withHash('sha512')).toBe('accept');
  });
});
