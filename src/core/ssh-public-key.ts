import { createHash } from 'node:crypto';
import { replaceControlChars, replaceLoneSurrogates } from './text.js';

/** A parsed, normalised SSH public key. Identity is the wire blob; the comment is kept but never matched. */
export type PublicKey = {
  type: string;
  /** base64 of the wire-format blob, as in a `.pub` line. */
  blob: string;
  /** `SHA256:...` exactly as `ssh-keygen -l` prints it. */
  fingerprint: string;
  comment: string;
  bits: number;
};

export type ParseResult = { ok: true; key: PublicKey } | { ok: false; reason: string };

const MIN_RSA_BITS = 2048;
const MAX_RSA_BITS = 16384;
const ECDSA_CURVES: Record<string, { curve: string; pointBytes: number; bits: number }> = {
  'ecdsa-sha2-nistp256': { curve: 'nistp256', pointBytes: 65, bits: 256 },
  'ecdsa-sha2-nistp384': { curve: 'nistp384', pointBytes: 97, bits: 384 },
  'ecdsa-sha2-nistp521': { curve: 'nistp521', pointBytes: 133, bits: 521 },
};
const SUPPORTED = 'ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa (>= 2048 bits)';

export function fingerprintOf(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
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
  const parsed = parsePublicKeyBlob(blob, safeComment(commentParts.join(' ')));
  if (parsed.ok && parsed.key.type !== type) return fail(`key type "${type}" does not match the key data ("${parsed.key.type}")`);
  return parsed;
}

/** Parses an SSH wire-format public key blob (what an SSH client offers during auth). */
export function parsePublicKeyBlob(blob: Buffer, comment = ''): ParseResult {
  const reader = new WireReader(blob);
  const type = reader.string()?.toString('latin1');
  if (!type) return fail('key data is truncated');
  let bits: number;
  if (type === 'ssh-ed25519') {
    const point = reader.string();
    if (!point || point.length !== 32) return fail('ed25519 key must be 32 bytes');
    bits = 256;
  } else if (type in ECDSA_CURVES) {
    const spec = ECDSA_CURVES[type]!;
    const curve = reader.string()?.toString('latin1');
    const point = reader.string();
    if (curve !== spec.curve) return fail(`curve does not match ${type}`);
    if (!point || point.length !== spec.pointBytes || point[0] !== 0x04) return fail('ECDSA point is malformed');
    bits = spec.bits;
  } else if (type === 'ssh-rsa') {
    const exponent = reader.string();
    const modulus = reader.string();
    if (!exponent || !modulus || exponent.length === 0) return fail('RSA key is truncated');
    bits = bitLength(modulus);
    if (bits < MIN_RSA_BITS) return fail(`RSA keys must be at least ${MIN_RSA_BITS} bits (this one has ${bits})`);
    if (bits > MAX_RSA_BITS) return fail(`RSA keys larger than ${MAX_RSA_BITS} bits are not accepted`);
  } else if (type.startsWith('sk-')) {
    return fail(`security-key (FIDO) keys (${type}) are not supported; use ${SUPPORTED}`);
  } else if (type.includes('-cert-')) {
    return fail(`certificates (${type}) are not accepted; give the plain public key`);
  } else {
    return fail(`key type "${type}" is not supported; use ${SUPPORTED}`);
  }
  if (!reader.atEnd()) return fail('key data has trailing bytes');
  return {
    ok: true,
    key: { type, blob: blob.toString('base64'), fingerprint: fingerprintOf(blob), comment: comment.trim(), bits },
  };
}

/** The comment is informational only: stored, shown, never matched. Keep it printable and short. */
function safeComment(comment: string): string {
  return replaceLoneSurrogates(replaceControlChars(comment, '')).slice(0, 200);
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

class WireReader {
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

  atEnd(): boolean {
    return this.offset === this.buf.length;
  }
}
