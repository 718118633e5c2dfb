import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parsePublicKeyBlob, parsePublicKeyLine } from '../../src/core/ssh-public-key.js';
import { parseDuration, formatDuration } from '../../src/core/duration.js';
import { makeKey } from '../support/keys.js';
import { REFUSAL, UNSAFE_CHARS } from '../support/unsafe-chars.js';

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

/** An SSH wire-format string: uint32 length, then the bytes. */
function sshString(data: Buffer | string): Buffer {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

/** A positive integer as an SSH mpint: big-endian, a leading zero byte only when the top bit is set. */
function mpint(n: bigint): Buffer {
  if (n === 0n) return Buffer.alloc(0);
  const hex = n.toString(16);
  const bytes = Buffer.from(hex.length % 2 ? `0${hex}` : hex, 'hex');
  return bytes[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes;
}

/** A random odd number of exactly `bits` bits: parsing looks at the shape, not at primality. */
function randomModulus(bits: number): bigint {
  const bytes = randomBytes(Math.ceil(bits / 8));
  const spare = bytes.length * 8 - bits;
  bytes[0] = (bytes[0]! & (0xff >> spare)) | (0x80 >> spare);
  bytes[bytes.length - 1]! |= 1;
  return BigInt(`0x${bytes.toString('hex')}`);
}

/** `ssh-rsa BASE64` with the exponent and modulus given as numbers or as raw mpint bytes. */
function rsaLine(e: bigint | Buffer, n: bigint | Buffer): string {
  const blob = Buffer.concat([
    sshString('ssh-rsa'),
    sshString(Buffer.isBuffer(e) ? e : mpint(e)),
    sshString(Buffer.isBuffer(n) ? n : mpint(n)),
  ]);
  return `ssh-rsa ${blob.toString('base64')} built@test`;
}

function reasonOf(line: string): string {
  const parsed = parsePublicKeyLine(line);
  return parsed.ok ? `accepted (${parsed.key.bits} bits)` : parsed.reason;
}

describe('RSA keys: size, exponent and encoding', () => {
  const n2048 = randomModulus(2048);

  it.each([2048, 3072, 4096, 8191, 8192])('accepts a %i-bit modulus with e = 65537', (bits) => {
    expect(reasonOf(rsaLine(65537n, randomModulus(bits)))).toBe(`accepted (${bits} bits)`);
  });

  it.each([8193, 8200, 16384])('refuses a %i-bit modulus', (bits) => {
    expect(reasonOf(rsaLine(65537n, randomModulus(bits)))).toBe(`RSA keys larger than 8192 bits are not accepted (this one has ${bits})`);
  });

  it.each([
    ['1', 1n],
    ['2 (even)', 2n],
    ['65536 (even)', 65536n],
    ['2^32 + 1', 2n ** 32n + 1n],
    ['2^32 + 65537', 2n ** 32n + 65537n],
    ['2^64 + 1', 2n ** 64n + 1n],
    ['n itself', n2048],
  ])('refuses the public exponent %s', (_name, e) => {
    expect(reasonOf(rsaLine(e, n2048))).toBe('RSA public exponent must be odd and between 3 and 2^32-1');
  });

  it.each([
    ['3', 3n],
    ['17', 17n],
    ['65537', 65537n],
    ['2^32 - 1', 2n ** 32n - 1n],
  ])('accepts the public exponent %s', (_name, e) => {
    expect(reasonOf(rsaLine(e, n2048))).toBe('accepted (2048 bits)');
  });

  it('refuses an even modulus', () => {
    expect(reasonOf(rsaLine(65537n, n2048 - 1n))).toBe('RSA modulus must be odd');
  });

  it('refuses integers that are not minimally encoded or negative: one key, one blob', () => {
    const n = mpint(n2048); // 257 bytes: a zero byte, then a byte with the top bit set
    const cases: Array<[string, Buffer, Buffer, string]> = [
      ['e padded with a zero byte', Buffer.from([0, 1, 0, 1]), n, 'RSA public exponent is not a minimally encoded positive integer'],
      ['e negative', Buffer.from([0x81]), n, 'RSA public exponent is not a minimally encoded positive integer'],
      ['n padded with a second zero byte', mpint(65537n), Buffer.concat([Buffer.from([0]), n]), 'RSA modulus is not a minimally encoded positive integer'],
      ['n negative (no sign byte)', mpint(65537n), n.subarray(1), 'RSA modulus is not a minimally encoded positive integer'],
    ];
    for (const [name, e, modulus, reason] of cases) expect(reasonOf(rsaLine(e, modulus)), name).toBe(reason);
  });

  it('the same rules apply to a blob offered over SSH', () => {
    const blob = Buffer.from(rsaLine(2n ** 32n + 1n, n2048).split(' ')[1]!, 'base64');
    expect(parsePublicKeyBlob(blob)).toEqual({ ok: false, reason: 'RSA public exponent must be odd and between 3 and 2^32-1' });
  });
});

describe('ECDSA keys: the point must be on the curve', () => {
  const P521 = 2n ** 521n - 1n;

  /** The key line with its point replaced (the point is the last string of the blob). */
  function withPoint(line: string, change: (point: Buffer) => Buffer): string {
    const [type, encoded] = line.split(' ');
    const blob = Buffer.from(encoded!, 'base64');
    const typeLength = blob.readUInt32BE(0);
    const curveEnd = 4 + typeLength + 4 + blob.readUInt32BE(4 + typeLength);
    const point = change(Buffer.from(blob.subarray(curveEnd + 4)));
    return `${type} ${Buffer.concat([blob.subarray(0, curveEnd), sshString(point)]).toString('base64')}`;
  }

  it.each([256, 384, 521] as const)('refuses a nistp%i point off the curve, accepts the real one', (bits) => {
    const real = makeKey('ecdsa', bits).publicKey;
    expect(parsePublicKeyLine(real).ok).toBe(true);
    const offCurve = withPoint(real, (point) => {
      point[point.length - 1]! ^= 1; // y + 1 or y - 1: no longer on the curve
      return point;
    });
    expect(reasonOf(offCurve)).toBe(`ECDSA public key is not a point on nistp${bits}`);
    const zero = withPoint(real, (point) => Buffer.concat([Buffer.from([4]), Buffer.alloc(point.length - 1)]));
    expect(reasonOf(zero)).toBe(`ECDSA public key is not a point on nistp${bits}`);
  });

  it('refuses a nistp521 coordinate written as x + p (the same point, a second blob)', () => {
    const real = makeKey('ecdsa', 521).publicKey;
    const aliased = withPoint(real, (point) => {
      const x = BigInt(`0x${point.subarray(1, 67).toString('hex')}`);
      return Buffer.concat([Buffer.from([4]), Buffer.from((x + P521).toString(16).padStart(132, '0'), 'hex'), point.subarray(67)]);
    });
    expect(reasonOf(aliased)).toBe('ECDSA public key is not a point on nistp521');
  });
});

describe('key comments', () => {
  const ed = makeKey('ed25519').publicKey.split(' ').slice(0, 2).join(' ');

  it.each(UNSAFE_CHARS)('refuses a comment with $what', ({ char, codePoint }) => {
    expect(parsePublicKeyLine(`${ed} me${char}@laptop`)).toEqual({ ok: false, reason: `comment ${REFUSAL} (${codePoint})` });
  });

  it('keeps ordinary Unicode comments, and cuts long ones on a character boundary', () => {
    const parsed = parsePublicKeyLine(`${ed} José’s 東京 laptop 🚀`);
    expect(parsed.ok && parsed.key.comment).toBe('José’s 東京 laptop 🚀');
    const long = parsePublicKeyLine(`${ed} ${'a'.repeat(199)}🚀tail`);
    expect(long.ok && long.key.comment).toBe(`${'a'.repeat(199)}🚀`);
  });

  it('a bad key is reported before its comment', () => {
    expect(reasonOf(`${rsaLine(1n, randomModulus(2048))} \u202e`)).toBe('RSA public exponent must be odd and between 3 and 2^32-1');
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
