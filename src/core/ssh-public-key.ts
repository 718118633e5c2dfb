import { createPublicKey, hash, type KeyObject } from 'node:crypto';
import { unsafeTextProblem } from './text.js';

/** A parsed, normalised SSH public key. Identity is the wire blob; the comment is kept but never matched. */
export type PublicKey = {
  type: string;
  /** base64 of the wire-format blob, as in a `.pub` line. */
  blob: string;
  /** `SHA256:...` exactly as `ssh-keygen -l` prints it. */
  fingerprint: string;
  comment: string;
  bits: number;
  /** Security keys (FIDO, `sk-*`) only: the application the credential was made for, normally `ssh:`. */
  application?: string;
};

export type ParseResult = { ok: true; key: PublicKey } | { ok: false; reason: string };

const MIN_RSA_BITS = 2048;
const MAX_RSA_BITS = 8192;
/** Public exponents accepted: odd, 3 <= e < 2^32 (what OpenSSH and every sane generator make: 65537). */
const MIN_RSA_EXPONENT = 3n;
const RSA_EXPONENT_LIMIT = 2n ** 32n;
const MAX_COMMENT_LENGTH = 200;
const ECDSA_CURVES: Record<string, { curve: string; jwkCurve: string; pointBytes: number; bits: number }> = {
  'ecdsa-sha2-nistp256': { curve: 'nistp256', jwkCurve: 'P-256', pointBytes: 65, bits: 256 },
  'ecdsa-sha2-nistp384': { curve: 'nistp384', jwkCurve: 'P-384', pointBytes: 97, bits: 384 },
  'ecdsa-sha2-nistp521': { curve: 'nistp521', jwkCurve: 'P-521', pointBytes: 133, bits: 521 },
};
const SUPPORTED =
  'ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa (2048 to 8192 bits), or a security key: sk-ssh-ed25519@openssh.com or sk-ecdsa-sha2-nistp256@openssh.com';
export const SK_ED25519 = 'sk-ssh-ed25519@openssh.com';
export const SK_ECDSA_P256 = 'sk-ecdsa-sha2-nistp256@openssh.com';

/** A security-key (FIDO) type; null (no SSH key at all) is not one. */
export function isSecurityKeyType(type: string | null): boolean {
  return type === SK_ED25519 || type === SK_ECDSA_P256;
}
const MAX_APPLICATION_LENGTH = 256;

export function fingerprintOf(blob: Buffer): string {
  return `SHA256:${hash('sha256', blob, 'base64').replace(/=+$/, '')}`;
}

export function formatPublicKey(key: Pick<PublicKey, 'type' | 'blob'>): string {
  return `${key.type} ${key.blob}`;
}

/** Parses one line of a `.pub` file: `TYPE BASE64 [comment]`. */
export function parsePublicKeyLine(line: string): ParseResult {
  const text = line.trim();
  if (text.includes('\n') || text.includes('\r')) return fail('must be a single line');
  const [type = '', encoded = '', ...commentParts] = text.split(/[ \t]+/);
  if (!type || !encoded) return fail('expected "TYPE BASE64 [comment]", as in a .pub file');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded) || encoded.length % 4 !== 0) return fail('key data is not valid base64');
  const blob = Buffer.from(encoded, 'base64');
  if (blob.toString('base64') !== encoded) return fail('key data is not valid base64');
  const comment = commentParts.join(' ');
  const parsed = parsePublicKeyBlob(blob, shortComment(comment));
  if (parsed.ok && parsed.key.type !== type) return fail(`key type "${type}" does not match the key data ("${parsed.key.type}")`);
  // Stored and shown to people: refused, not cleaned, so what is kept is what was sent.
  const problem = parsed.ok ? unsafeTextProblem(comment) : null;
  if (problem) return fail(`comment ${problem}`);
  return parsed;
}

/** Parses an SSH wire-format public key blob (what an SSH client offers during auth). */
export function parsePublicKeyBlob(blob: Buffer, comment = ''): ParseResult {
  const reader = new WireReader(blob);
  const type = reader.string()?.toString('latin1');
  if (!type) return fail('key data is truncated');
  let bits: number;
  let application: string | undefined;
  if (type === 'ssh-ed25519') {
    const point = reader.string();
    if (!point || point.length !== 32) return fail('ed25519 key must be 32 bytes');
    bits = 256;
  } else if (type === SK_ED25519) {
    const point = reader.string();
    if (!point || point.length !== 32) return fail('ed25519 key must be 32 bytes');
    application = applicationOf(reader.string());
    if (application === undefined) return fail(APPLICATION_PROBLEM);
    bits = 256;
  } else if (type === SK_ECDSA_P256) {
    const curve = reader.string()?.toString('latin1');
    const point = reader.string();
    if (curve !== 'nistp256') return fail(`curve does not match ${type}`);
    if (!point || point.length !== 65 || point[0] !== 0x04) return fail('ECDSA point is malformed');
    if (!isPointOnCurve(point, 'P-256')) return fail('ECDSA public key is not a point on nistp256');
    application = applicationOf(reader.string());
    if (application === undefined) return fail(APPLICATION_PROBLEM);
    bits = 256;
  } else if (type in ECDSA_CURVES) {
    const spec = ECDSA_CURVES[type]!;
    const curve = reader.string()?.toString('latin1');
    const point = reader.string();
    if (curve !== spec.curve) return fail(`curve does not match ${type}`);
    if (!point || point.length !== spec.pointBytes || point[0] !== 0x04) return fail('ECDSA point is malformed');
    if (!isPointOnCurve(point, spec.jwkCurve)) return fail(`ECDSA public key is not a point on ${spec.curve}`);
    bits = spec.bits;
  } else if (type === 'ssh-rsa') {
    const exponent = reader.string();
    const modulus = reader.string();
    if (!exponent || !modulus || exponent.length === 0) return fail('RSA key is truncated');
    // One key, one blob: a padded or negative integer would give the same key a second identity.
    if (!isMinimalPositiveMpint(exponent)) return fail('RSA public exponent is not a minimally encoded positive integer');
    if (!isMinimalPositiveMpint(modulus)) return fail('RSA modulus is not a minimally encoded positive integer');
    const e = BigInt(`0x${exponent.toString('hex')}`);
    if (e < MIN_RSA_EXPONENT || e >= RSA_EXPONENT_LIMIT || e % 2n === 0n) {
      return fail('RSA public exponent must be odd and between 3 and 2^32-1');
    }
    bits = bitLength(modulus);
    if (bits < MIN_RSA_BITS) return fail(`RSA keys must be at least ${MIN_RSA_BITS} bits (this one has ${bits})`);
    if (bits > MAX_RSA_BITS) return fail(`RSA keys larger than ${MAX_RSA_BITS} bits are not accepted (this one has ${bits})`);
    if ((modulus[modulus.length - 1]! & 1) === 0) return fail('RSA modulus must be odd');
  } else if (type.includes('-cert-')) {
    return fail(`certificates (${type}) are not accepted; give the plain public key`);
  } else {
    return fail(`key type "${type}" is not supported; use ${SUPPORTED}`);
  }
  if (!reader.atEnd()) return fail('key data has trailing bytes');
  const key: PublicKey = { type, blob: blob.toString('base64'), fingerprint: fingerprintOf(blob), comment: comment.trim(), bits };
  if (application !== undefined) key.application = application;
  return { ok: true, key };
}

const APPLICATION_PROBLEM = `security key's application must start with "ssh:" and be at most ${MAX_APPLICATION_LENGTH} printable ASCII characters`;

/** A security key's application string: "ssh:" and what follows (as ssh-keygen requires), printable ASCII. */
function applicationOf(raw: Buffer | null): string | undefined {
  if (!raw || raw.length > MAX_APPLICATION_LENGTH || !raw.toString('latin1').startsWith('ssh:')) return undefined;
  for (const byte of raw) if (byte < 0x20 || byte > 0x7e) return undefined;
  return raw.toString('latin1');
}

/** The key's type as people read it: FIDO ones say they are a security key. */
export function describeKeyType(type: string): string {
  return isSecurityKeyType(type) ? `${type}, a security key` : type;
}

/** The comment is informational only: stored, shown, never matched. Kept short (whole characters). */
function shortComment(comment: string): string {
  return comment.length <= MAX_COMMENT_LENGTH ? comment : Array.from(comment).slice(0, MAX_COMMENT_LENGTH).join('');
}

/**
 * An SSH mpint (RFC 4251 section 5) holding a positive number in as few bytes as possible: no
 * sign bit set, and a leading zero byte only where the next byte would otherwise set it.
 */
function isMinimalPositiveMpint(mpint: Buffer): boolean {
  if (mpint.length === 0) return false;
  if ((mpint[0]! & 0x80) !== 0) return false;
  if (mpint[0] === 0) return mpint.length > 1 && (mpint[1]! & 0x80) !== 0;
  return true;
}

/** Whether an uncompressed point (0x04 || X || Y) lies on the curve: OpenSSL checks it on import. */
function isPointOnCurve(point: Buffer, jwkCurve: string): boolean {
  const size = (point.length - 1) / 2;
  try {
    createPublicKey({
      key: {
        kty: 'EC',
        crv: jwkCurve,
        x: point.subarray(1, 1 + size).toString('base64url'),
        y: point.subarray(1 + size).toString('base64url'),
      },
      format: 'jwk',
    });
    return true;
  } catch {
    return false;
  }
}

function fail(reason: string): ParseResult {
  return { ok: false, reason };
}

function bitLength(mpint: Buffer): number {
  let i = 0;
  while (i < mpint.length && mpint[i] === 0) i++;
  if (i === mpint.length) return 0;
  return (mpint.length - i - 1) * 8 + (32 - Math.clz32(mpint[i]!));
}

/** The key as node:crypto's KeyObject, for verifying its signatures (the blob was validated by parsing). */
export function keyObjectOf(key: Pick<PublicKey, 'blob'>): KeyObject {
  const reader = new WireReader(Buffer.from(key.blob, 'base64'));
  const type = reader.string()?.toString('latin1') ?? '';
  if (type === 'ssh-ed25519' || type === SK_ED25519) {
    return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: reader.string()!.toString('base64url') }, format: 'jwk' });
  }
  const curve = ECDSA_CURVES[type === SK_ECDSA_P256 ? 'ecdsa-sha2-nistp256' : type];
  if (curve) {
    reader.string();
    const point = reader.string()!;
    const size = (point.length - 1) / 2;
    const coordinate = (from: number) => point.subarray(from, from + size).toString('base64url');
    return createPublicKey({ key: { kty: 'EC', crv: curve.jwkCurve, x: coordinate(1), y: coordinate(1 + size) }, format: 'jwk' });
  }
  if (type === 'ssh-rsa') {
    const unsigned = (mpint: Buffer) => (mpint[0] === 0 ? mpint.subarray(1) : mpint).toString('base64url');
    const e = reader.string()!;
    const n = reader.string()!;
    return createPublicKey({ key: { kty: 'RSA', e: unsigned(e), n: unsigned(n) }, format: 'jwk' });
  }
  throw new Error(`no key object for ${type}`);
}

/** SSH wire format (RFC 4251): length-prefixed strings, read without copying. */
export class WireReader {
  private offset = 0;
  constructor(private readonly buf: Buffer) {}

  string(): Buffer | null {
    if (this.offset + 4 > this.buf.length) return null;
    const length = this.buf.readUInt32BE(this.offset);
    const start = this.offset + 4;
    if (start + length > this.buf.length) return null;
    this.offset = start + length;
    return this.buf.subarray(start, start + length);
  }

  uint32(): number | null {
    if (this.offset + 4 > this.buf.length) return null;
    const value = this.buf.readUInt32BE(this.offset);
    this.offset += 4;
    return value;
  }

  bytes(length: number): Buffer | null {
    if (this.offset + length > this.buf.length) return null;
    const out = this.buf.subarray(this.offset, this.offset + length);
    this.offset += length;
    return out;
  }

  atEnd(): boolean {
    return this.offset === this.buf.length;
  }

  /** Bytes read so far. */
  position(): number {
    return this.offset;
  }
}

/** An SSH wire-format string: uint32 length, then the bytes. */
export function wireString(value: Buffer | string): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value) : value;
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}
