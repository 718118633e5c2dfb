import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import fs from 'node:fs/promises';
import type { Logger } from 'pino';
import { z } from 'zod';
import { describeIssues } from '../core/index.js';

/**
 * GitHub's secret scanning public keys (SECRET_SCANNING_KEYS_FILE), in the JSON GitHub publishes
 * at https://api.github.com/meta/public_keys/secret_scanning. A report names the key that signed
 * it (Github-Public-Key-Identifier); its signature (ECDSA P-256, SHA-256, DER, base64) is over
 * the raw body.
 */
const KeysFile = z.object({
  public_keys: z
    .array(
      z.object({
        key_identifier: z.string().min(1).max(256),
        key: z.string().min(1).max(16_384),
        is_current: z.boolean().optional(),
      }),
    )
    .min(1, 'lists no key')
    .max(1000),
});

/** A keys file that cannot be used: said in one line. */
export class SecretScanningKeysError extends Error {}

export type SecretScanningKeys = {
  /**
   * The key an identifier names, or null. An identifier not known yet makes it look at the file
   * again (cheaply: only if the file changed): GitHub adds keys, and an operator who refreshes the
   * file (a cron job) needs no restart.
   */
  keyFor(identifier: string): Promise<KeyObject | null>;
};

/** Reads and checks the file at start-up; any problem is a SecretScanningKeysError. */
export async function loadSecretScanningKeys(file: string, log: Pick<Logger, 'info' | 'warn'>): Promise<SecretScanningKeys> {
  let version = await versionOf(file);
  let keys = parseSecretScanningKeys(await readText(file));
  return {
    async keyFor(identifier) {
      const known = keys.get(identifier);
      if (known) return known;
      const now = await versionOf(file).catch(() => version);
      if (now === version) return null;
      version = now;
      try {
        keys = parseSecretScanningKeys(await readText(file));
        log.info({ keys: keys.size }, 'SECRET_SCANNING_KEYS_FILE changed: keys read again');
      } catch (err) {
        // The keys in force stay: a half-written or broken file must not switch the endpoint off.
        log.warn({ error: (err as Error).message }, 'SECRET_SCANNING_KEYS_FILE changed but cannot be used: keeping the keys read before');
      }
      return keys.get(identifier) ?? null;
    },
  };
}

/** The file's text as GitHub serves it: each key a P-256 public key (PEM, SPKI), by identifier. */
export function parseSecretScanningKeys(text: string): Map<string, KeyObject> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new SecretScanningKeysError(`not JSON (${(err as Error).message})`);
  }
  const parsed = KeysFile.safeParse(json);
  if (!parsed.success) {
    throw new SecretScanningKeysError(`not GitHub's {"public_keys": [{"key_identifier", "key"}]}: ${describeIssues(parsed.error)}`);
  }
  const keys = new Map<string, KeyObject>();
  for (const entry of parsed.data.public_keys) {
    let key: KeyObject;
    try {
      key = createPublicKey({ key: entry.key, format: 'pem' });
    } catch (err) {
      throw new SecretScanningKeysError(`key ${entry.key_identifier}: not a PEM public key (${(err as Error).message})`);
    }
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (key.asymmetricKeyType !== 'ec' || curve !== 'prime256v1') {
      throw new SecretScanningKeysError(`key ${entry.key_identifier}: not an ECDSA P-256 key (${key.asymmetricKeyType}${curve ? ` ${curve}` : ''})`);
    }
    keys.set(entry.key_identifier, key);
  }
  return keys;
}

/** Whether `signatureBase64` (DER, as GitHub sends it) is `key`'s ECDSA SHA-256 signature of exactly these bytes. */
export function signatureHolds(key: KeyObject, body: Buffer, signatureBase64: string): boolean {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(signatureBase64)) return false;
  try {
    return verify('sha256', body, { key, dsaEncoding: 'der' }, Buffer.from(signatureBase64, 'base64'));
  } catch {
    return false; // not DER at all
  }
}

async function readText(file: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new SecretScanningKeysError(`cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

/** What changes when the file is replaced or rewritten. */
async function versionOf(file: string): Promise<string> {
  try {
    const stat = await fs.stat(file);
    return `${stat.ino}:${stat.size}:${stat.mtimeMs}`;
  } catch (err) {
    throw new SecretScanningKeysError(`cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}
