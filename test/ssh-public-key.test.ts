import { describe, expect, it } from 'vitest';
import { parsePublicKeyLine } from '../src/core/ssh-public-key.js';
import { parseDuration, formatDuration } from '../src/core/duration.js';
import { makeKey } from './support/keys.js';

describe('SSH public keys', () => {
  it.each([
    ['ed25519', undefined, 'ssh-ed25519', 256],
    ['ecdsa', 256, 'ecdsa-sha2-nistp256', 256],
    ['ecdsa', 384, 'ecdsa-sha2-nistp384', 384],
    ['ecdsa', 521, 'ecdsa-sha2-nistp521', 521],
    ['rsa', 2048, 'ssh-rsa', 2048],
    ['rsa', 3072, 'ssh-rsa', 3072],
  ] as const)('accepts %s %s with the fingerprint ssh-keygen prints', (type, bits, expectedType, expectedBits) => {
    const key = makeKey(type, bits, 'me@laptop with spaces');
    const parsed = parsePublicKeyLine(`  ${key.publicKey}\n`);
    expect(parsed).toEqual({
      ok: true,
      key: {
        type: expectedType,
        blob: key.publicKey.split(' ')[1],
        fingerprint: key.fingerprint,
        comment: 'me@laptop with spaces',
        bits: expectedBits,
      },
    });
  });

  it('rejects weak, unsupported and malformed keys with a reason', () => {
    const rsa1024 = makeKey('rsa', 1024).publicKey;
    const ed = makeKey().publicKey;
    const [, blob] = ed.split(' ');
    const cases: Array<[string, RegExp]> = [
      [rsa1024, /at least 2048 bits \(this one has 1024\)/],
      [`ssh-rsa ${blob}`, /does not match the key data/],
      [`ssh-ed25519 ${blob!.slice(0, -4)}`, /base64|truncated|32 bytes/],
      [`ssh-ed25519 ${Buffer.concat([Buffer.from(blob!, 'base64'), Buffer.from([0])]).toString('base64')}`, /trailing/],
      ['ssh-dss AAAAB3NzaC1kc3MAAACBAP', /base64|not supported/],
      [`ssh-dss ${Buffer.from('\x00\x00\x00\x07ssh-dss', 'latin1').toString('base64')}`, /not supported/],
      ['ssh-ed25519', /expected "TYPE BASE64/],
      ['', /expected "TYPE BASE64/],
      [`${ed}\nssh-ed25519 ${blob}`, /single line/],
    ];
    for (const [line, reason] of cases) {
      const parsed = parsePublicKeyLine(line);
      expect(parsed.ok, line).toBe(false);
      if (!parsed.ok) expect(parsed.reason).toMatch(reason);
    }
  });
});

describe('durations', () => {
  it.each([
    ['90s', 90_000],
    ['15m', 900_000],
    ['1h', 3_600_000],
    ['2w', 1_209_600_000],
    ['5d4h', 446_400_000],
    ['0', 0],
  ])('%s = %i ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(['', 'forever', '1x', '-5m', '1.5h', 'm', '10'])('rejects %j', (text) => {
    expect(parseDuration(text)).toBeNull();
  });

  it('formats', () => {
    expect(formatDuration(900_000)).toBe('15m');
    expect(formatDuration(90_061_000)).toBe('1d1h1m1s');
  });
});
