import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-auth-keys-'));
let counter = 0;

export type TestKey = { publicKey: string; privateKeyPath: string; publicKeyPath: string; fingerprint: string };

/** A fresh key pair made by the real ssh-keygen. */
export function makeKey(type: 'ed25519' | 'rsa' | 'ecdsa' = 'ed25519', bits?: number, comment = 'test@host'): TestKey {
  const privateKeyPath = path.join(dir, `key${++counter}_${type}`);
  const args = ['-q', '-t', type, '-N', '', '-C', comment, '-f', privateKeyPath];
  if (bits) args.push('-b', String(bits));
  execFileSync('ssh-keygen', args);
  const publicKeyPath = `${privateKeyPath}.pub`;
  const fingerprint = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', publicKeyPath]).toString().split(' ')[1]!;
  return { publicKey: fs.readFileSync(publicKeyPath, 'utf8').trim(), privateKeyPath, publicKeyPath, fingerprint };
}

let emailCounter = 0;
/** A unique email, so test files can share one database without stepping on each other. */
export function uniqueEmail(local = 'user'): string {
  return `${local}${Date.now().toString(36)}${process.pid}x${++emailCounter}@example.com`;
}

/**
 * OpenSSH's software security key (Debian's openssh-tests package; `.ci/run` installs it): FIDO
 * keys made, used and signed with by the real OpenSSH binaries, no hardware.
 */
export const SK_DUMMY = ['/usr/lib/openssh/regress/misc/sk-dummy/sk-dummy.so'].find((p) => fs.existsSync(p)) ?? null;

/** A FIDO key on sk-dummy (`ssh-keygen -t ed25519-sk -w sk-dummy.so`); `options` are `-O` values such as `no-touch-required`. */
export function makeSecurityKey(type: 'ed25519-sk' | 'ecdsa-sk', options: string[] = []): TestKey {
  if (!SK_DUMMY) throw new Error('sk-dummy.so is not installed (apt-get install openssh-tests)');
  const privateKeyPath = path.join(dir, `key${++counter}_${type}`);
  execFileSync('ssh-keygen', ['-q', '-t', type, '-w', SK_DUMMY, '-N', '', '-C', 'fido@host', '-f', privateKeyPath, ...options.flatMap((o) => ['-O', o])]);
  const publicKeyPath = `${privateKeyPath}.pub`;
  const fingerprint = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', publicKeyPath]).toString().split(' ')[1]!;
  return { publicKey: fs.readFileSync(publicKeyPath, 'utf8').trim(), privateKeyPath, publicKeyPath, fingerprint };
}
