import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import ssh2 from 'ssh2';
import { fingerprintOf } from '../core/index.js';

const HOST_KEY_FILE = 'ssh_host_ed25519_key';

export type HostKey = { privateKey: Buffer; fingerprint: string; path: string; created: boolean };

/**
 * A fresh ed25519 pair in OpenSSH format. ssh2's generator writes a public key whose first byte
 * is zero with that byte dropped (about 1 key in 256), and then cannot read its own output: such
 * a key would stop the service from ever starting. Draw again until the key reads back.
 */
export function generateHostKeyPair(): { private: string; public: string } {
  for (let attempt = 0; attempt < 20; attempt++) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'shell-auth host key' });
    const parsed = ssh2.utils.parseKey(pair.private);
    if (!(parsed instanceof Error) && !Array.isArray(parsed)) return pair;
  }
  throw new Error('could not generate a readable ed25519 host key');
}

/**
 * Loads the ed25519 host key, generating it on first start. Written to a temporary file and
 * hard-linked into place, so instances starting together on one shared directory all end up
 * with the same key and never read a half-written file.
 */
export function loadOrCreateHostKey(dir: string): HostKey {
  const keyPath = path.join(dir, HOST_KEY_FILE);
  let created = false;
  if (!fs.existsSync(keyPath)) {
    fs.mkdirSync(dir, { recursive: true });
    const pair = generateHostKeyPair();
    // Random, not pid-based: containers sharing a volume all run as pid 1.
    const temp = `${keyPath}.tmp-${randomBytes(8).toString('hex')}`;
    fs.writeFileSync(temp, pair.private, { mode: 0o600, flag: 'wx' });
    try {
      fs.linkSync(temp, keyPath);
      fs.writeFileSync(`${keyPath}.pub`, `${pair.public}\n`, { mode: 0o644 });
      created = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err; // another instance won
    } finally {
      fs.rmSync(temp, { force: true });
    }
  }
  const privateKey = fs.readFileSync(keyPath);
  const parsed = ssh2.utils.parseKey(privateKey);
  if (parsed instanceof Error || Array.isArray(parsed)) {
    throw new Error(`host key ${keyPath} is not a readable OpenSSH private key`);
  }
  const mode = fs.statSync(keyPath).mode & 0o777;
  if (mode & 0o077) fs.chmodSync(keyPath, 0o600);
  return { privateKey, fingerprint: fingerprintOf(parsed.getPublicSSH()), path: keyPath, created };
}
