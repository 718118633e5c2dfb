import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { verifySshsig } from '../../src/core/sshsig.js';
import { publicKeyOf } from '../support/core.js';
import { makeKey, type TestKey } from '../support/keys.js';

// SSHSIG checked against signatures made by the real `ssh-keygen -Y sign`, from key files and
// through a real ssh-agent, and against everything a client could get wrong.

const NAMESPACE = 'shell-auth@test';
const MESSAGE = 'shell-auth challenge 1234 for auth.example.com until 2026-11-27T17:00:00Z\n';

/** `ssh-keygen -Y sign` over `message`, as a user runs it: the armored signature it prints. */
function sign(key: TestKey, message: string, options: { namespace?: string; hash?: 'sha256' | 'sha512'; env?: NodeJS.ProcessEnv; keyArg?: string } = {}): string {
  const args = ['-Y', 'sign', '-n', options.namespace ?? NAMESPACE, '-f', options.keyArg ?? key.privateKeyPath];
  if (options.hash) args.push('-O', `hashalg=${options.hash}`);
  return execFileSync('ssh-keygen', args, { input: message, env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'ignore'] }).toString();
}

const check = (key: TestKey, armored: string, message = MESSAGE, namespace = NAMESPACE) =>
  verifySshsig(armored, { key: publicKeyOf(key.publicKey), namespace, message });

const KEYS = {
  ed25519: makeKey('ed25519'),
  'ecdsa P-256': makeKey('ecdsa', 256),
  'ecdsa P-384': makeKey('ecdsa', 384),
  'ecdsa P-521': makeKey('ecdsa', 521),
  'rsa 3072': makeKey('rsa', 3072),
};

describe('signatures made by ssh-keygen -Y sign verify', () => {
  for (const [name, key] of Object.entries(KEYS)) {
    it(name, () => {
      expect(check(key, sign(key, MESSAGE))).toEqual({ ok: true, hash: 'sha512' });
      expect(check(key, sign(key, MESSAGE, { hash: 'sha256' }))).toEqual({ ok: true, hash: 'sha256' });
    });
  }
});

describe('and nothing else does', () => {
  const key = KEYS.ed25519;
  const good = sign(key, MESSAGE);

  it('another message, another key, another namespace', () => {
    expect(check(key, good, `${MESSAGE}x`)).toMatchObject({ ok: false, failure: 'bad_signature' });
    expect(check(KEYS['ecdsa P-256'], good)).toMatchObject({ ok: false, failure: 'wrong_key' });
    expect(check(key, sign(key, MESSAGE, { namespace: 'git' }))).toMatchObject({
      ok: false,
      failure: 'wrong_namespace',
      reason: `ssh_signature namespace must be "${NAMESPACE}" (ssh-keygen -Y sign -n ${NAMESPACE})`,
    });
    // A signature by key B, claimed for key A: the key inside the signature decides.
    expect(check(key, sign(KEYS['rsa 3072'], MESSAGE))).toMatchObject({ ok: false, failure: 'wrong_key' });
  });

  it('armor cut short, altered, or not armor at all', () => {
    const lines = good.trim().split('\n');
    expect(check(key, lines.slice(0, -2).concat(lines.at(-1)!).join('\n'))).toMatchObject({ ok: false, failure: 'malformed' });
    expect(check(key, lines.slice(0, -1).join('\n'))).toMatchObject({ ok: false, failure: 'malformed' });
    expect(check(key, 'hello')).toMatchObject({ ok: false, failure: 'malformed' });
    expect(check(key, `${good}\n${good}`)).toMatchObject({ ok: false, failure: 'malformed' });
    // One base64 character changed somewhere in the signature bytes (the end of the blob).
    const body = lines.slice(1, -1).join('');
    const at = body.length - 10;
    const flipped = body.slice(0, at) + (body[at] === 'A' ? 'B' : 'A') + body.slice(at + 1);
    const altered = [lines[0], flipped, lines.at(-1)].join('\n');
    expect(check(key, altered)).toMatchObject({ ok: false });
    expect(check(key, good.replace(/\n/g, '\r\n'))).toEqual({ ok: true, hash: 'sha512' }); // a Windows paste is fine
  });

  it('SHA-1 "ssh-rsa" signatures are refused', () => {
    // ssh-keygen no longer makes them; forge the algorithm name into an RSA signature's blob.
    const rsa = KEYS['rsa 3072'];
    const armored = sign(rsa, MESSAGE);
    const lines = armored.trim().split('\n');
    const blob = Buffer.from(lines.slice(1, -1).join(''), 'base64');
    const name = Buffer.from('rsa-sha2-512');
    const at = blob.lastIndexOf(name);
    const forged = Buffer.concat([blob.subarray(0, at - 8), u32(blob.readUInt32BE(at - 8) - 5), u32(7), Buffer.from('ssh-rsa'), blob.subarray(at + name.length)]);
    const result = check(rsa, `-----BEGIN SSH SIGNATURE-----\n${forged.toString('base64')}\n-----END SSH SIGNATURE-----\n`);
    expect(result).toMatchObject({ ok: false, failure: 'sha1_rsa' });
  });

  it('never throws, whatever it is given (fuzzed)', () => {
    const body = good.trim().split('\n').slice(1, -1).join('');
    const blob = Buffer.from(body, 'base64');
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.uint8Array({ maxLength: 600 }).map((bytes) => `-----BEGIN SSH SIGNATURE-----\n${Buffer.from(bytes).toString('base64')}\n-----END SSH SIGNATURE-----`),
          // The real blob with a few bytes changed, cut or extended: the parser's edges.
          fc.tuple(fc.nat(blob.length), fc.integer({ min: 0, max: 255 }), fc.nat(blob.length + 8)).map(([at, value, cut]) => {
            const copy = Buffer.from(blob);
            copy[at % copy.length] = value;
            const shaped = cut <= copy.length ? copy.subarray(0, cut) : Buffer.concat([copy, Buffer.alloc(cut - copy.length)]);
            return `-----BEGIN SSH SIGNATURE-----\n${shaped.toString('base64')}\n-----END SSH SIGNATURE-----`;
          }),
        ),
        (armored) => {
          const result = check(key, armored);
          expect(result.ok === false || armored.includes(body)).toBe(true);
        },
      ),
      { numRuns: 2_000, seed: 0x55_5169 },
    );
  });
});

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

describe('through a real ssh-agent', () => {
  const agentDir = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-agent-'));
  const socket = path.join(agentDir, 'agent.sock');
  const agent = spawn('ssh-agent', ['-D', '-a', socket], { stdio: 'ignore' });
  afterAll(() => {
    agent.kill('SIGKILL');
    fs.rmSync(agentDir, { recursive: true, force: true });
  });

  it('ssh-keygen -Y sign -f key.pub with SSH_AUTH_SOCK: the private key stays in the agent', async () => {
    for (let i = 0; i < 100 && !fs.existsSync(socket); i++) await new Promise((resolve) => setTimeout(resolve, 20));
    const env = { ...process.env, SSH_AUTH_SOCK: socket };
    for (const key of [KEYS.ed25519, KEYS['ecdsa P-256'], KEYS['rsa 3072']]) {
      execFileSync('ssh-add', ['-q', key.privateKeyPath], { env, stdio: 'ignore' });
      const armored = sign(key, MESSAGE, { env, keyArg: key.publicKeyPath });
      expect(check(key, armored)).toMatchObject({ ok: true });
    }
  });
});
