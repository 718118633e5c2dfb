import { KeyObject } from 'node:crypto';
import fs from 'node:fs';
import ssh2, { type ParsedKey } from 'ssh2';
import { describe, expect, it } from 'vitest';
import { decodedKeysApplied, DecodedKeyCache, withDecodedKeys } from '../../src/ssh/ssh2-tuning.js';
import { makeKey } from '../support/keys.js';

// The ssh2 workarounds rely on its internals. If an upgrade moves them, these fail (and the
// server logs a warning at start-up) instead of the speed-up silently disappearing.

function parse(text: Buffer | string): ParsedKey {
  const parsed = ssh2.utils.parseKey(text);
  if (parsed instanceof Error || Array.isArray(parsed)) throw new Error('unreadable key');
  return parsed;
}

function pemSlotValues(key: ParsedKey): unknown[] {
  return Object.getOwnPropertySymbols(key)
    .filter((s) => s.description === 'Private key PEM' || s.description === 'Public key PEM')
    .map((s) => (key as unknown as Record<symbol, unknown>)[s])
    .filter((value) => value !== null); // a public key's private slot is empty
}

describe('decoded keys', () => {
  for (const type of ['ed25519', 'ecdsa', 'rsa'] as const) {
    it(`${type}: every PEM slot holds a KeyObject after the swap, and ssh2 still signs and verifies with it`, () => {
      const key = makeKey(type);
      const privateKey = withDecodedKeys(parse(fs.readFileSync(key.privateKeyPath)));
      const publicKey = withDecodedKeys(parse(key.publicKey));
      const slots = [...pemSlotValues(privateKey), ...pemSlotValues(publicKey)];
      expect(slots.length).toBeGreaterThanOrEqual(3); // private + public of the pair, public of the .pub
      for (const slot of slots) expect(slot).toBeInstanceOf(KeyObject);
      expect(decodedKeysApplied(privateKey)).toBe(true);
      expect(decodedKeysApplied(publicKey)).toBe(true);

      const data = Buffer.from('data to sign');
      const hash = type === 'rsa' ? 'sha256' : undefined;
      const signature = privateKey.sign(data, hash);
      expect(signature).toBeInstanceOf(Buffer);
      expect(publicKey.verify(data, signature as Buffer, hash)).toBe(true);
      expect(publicKey.verify(Buffer.from('other data'), signature as Buffer, hash)).not.toBe(true);
    });
  }

  it('a key left as ssh2 parsed it is reported as not decoded', () => {
    expect(decodedKeysApplied(parse(makeKey().publicKey))).toBe(false);
  });

  it('the cache decodes each client key once and returns the same object', () => {
    const cache = new DecodedKeyCache(2);
    const blobOf = (line: string) => Buffer.from(line.split(' ')[1]!, 'base64');
    const a = blobOf(makeKey().publicKey);
    const first = cache.get(a);
    expect(first && decodedKeysApplied(first)).toBe(true);
    expect(cache.get(a)).toBe(first);
    cache.get(blobOf(makeKey().publicKey));
    cache.get(blobOf(makeKey().publicKey)); // evicts a (least recently used)
    expect(cache.get(a)).not.toBe(first);
    expect(cache.get(Buffer.from('not a key'))).toBeNull();
  });
});
